/*
 * tz.h - time zones read from the operating system's TZif files.
 *
 * Hand-written rather than taken from a library on purpose:
 *  - sked must follow the zoneinfo the OS ships and updates (Debian's
 *    tzdata package), so a zone changed by a government is picked up by a
 *    package upgrade; Debian bookworm's ICU carries its own, frozen 2022e
 *    data, which already disagrees with tzdata (e.g. Mexico, Greenland).
 *  - glibc's localtime_r() answers only for the process-global TZ, and
 *    switching TZ (setenv + tzset) in a multi-threaded master that
 *    evaluates schedules in many zones at once is neither safe nor fast.
 *
 * A zone is the parsed TZif v1/v2/v3/v4 file (64-bit section when present)
 * plus its POSIX TZ footer rule (e.g. "EST5EDT,M3.2.0,M11.1.0"), which
 * gives the transitions after the last one listed in the file.
 *
 * Times are seconds since the Unix epoch. "Local seconds" are wall-clock
 * seconds counted as if the wall clock were UTC: local = utc + offset.
 * Instants further than TZ_LIMIT_SECS (about 34,800 years) from the epoch
 * are treated as if at that limit. Everything here is thread-safe; the only
 * mutable state is the zone cache behind tz_get().
 */
#ifndef SKED_TZ_H
#define SKED_TZ_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tz tz_t;

/* Instants beyond +-TZ_LIMIT_SECS are clamped. */
#define TZ_LIMIT_SECS (INT64_C(1) << 40)
/* No UTC offset accepted from a file or rule is larger than this. */
#define TZ_MAX_OFFSET (26 * 3600)

/* A maximal run of UTC instants [start, end) with one offset. start is
 * INT64_MIN when nothing precedes it, end INT64_MAX when nothing follows;
 * prev_offset / next_offset are the offsets just before start / at end
 * (equal to offset when there is no such transition). */
typedef struct {
    int64_t start;
    int64_t end;
    int offset;
    int prev_offset;
    int next_offset;
    int is_dst;
} tz_span_t;

/* Broken-down civil (proleptic Gregorian) time; mon 1-12, mday 1-31,
 * wday 0-6 with 0 = Sunday, yday 0-365. */
typedef struct {
    int64_t year;
    int mon, mday, hour, min, sec, wday, yday;
} tz_civil_t;

/* The zone NAME (e.g. "Europe/London"), loaded from $SKED_ZONEINFO_DIR or
 * /usr/share/zoneinfo on first use and cached for the life of the process
 * (until tz_cache_clear()). "UTC" and "Etc/UTC" work without any file.
 * Returns a borrowed pointer, or NULL with ERR_INVALID in err for an
 * unknown or unsafe name ("unknown time zone 'X'") or a malformed file. */
const tz_t *tz_get(const char *name, err_t *err);

/* Frees every cached zone; pointers from tz_get() become invalid. Call at
 * exit so leak checkers stay quiet. */
void tz_cache_clear(void);

/* Parses TZif data (a file's bytes) into a new zone owned by the caller.
 * Never reads outside data[0..len). NULL with ERR_INVALID on bad input. */
tz_t *tz_new_from_tzif(const char *name, const void *data, size_t len, err_t *err);

/* Frees a zone from tz_new_from_tzif(); NULL-safe, sets *self_p = NULL.
 * Never pass a zone from tz_get(). */
void tz_destroy(tz_t **self_p);

/* The name the zone was asked for; borrowed, can't fail. */
const char *tz_name(const tz_t *tz);

/* UTC offset in seconds (east positive) at UTC instant t_secs; sets
 * *is_dst (if not NULL) to 1 in daylight-saving time. Can't fail. */
int tz_offset_at(const tz_t *tz, int64_t t_secs, int *is_dst);

/* Abbreviation in force at t_secs ("EST", "+1030"); borrowed from the
 * zone, can't fail. */
const char *tz_abbrev_at(const tz_t *tz, int64_t t_secs);

/* The constant-offset span containing t_secs. Can't fail. */
void tz_span_at(const tz_t *tz, int64_t t_secs, tz_span_t *out);

/* The UTC instants whose wall-clock time is local_secs, earliest first:
 * returns 0 when the wall time is skipped (spring-forward gap), 1 normally,
 * 2 when it repeats (fall-back overlap). ERR_INVALID if local_secs is
 * beyond +-TZ_LIMIT_SECS. */
int tz_local_to_utc(const tz_t *tz, int64_t local_secs, int64_t out[2]);

/* For a wall time inside a spring-forward gap: sets *utc to the
 * transition instant, the first valid instant after the gap, and returns
 * 0; ERR_NOTFOUND if local_secs is not in a gap. */
int tz_gap_end(const tz_t *tz, int64_t local_secs, int64_t *utc);

/* Civil date arithmetic, no time zone involved (usable on local seconds). */
void tz_civil_from_secs(int64_t secs, tz_civil_t *out);
int64_t tz_secs_from_civil(int64_t year, int mon, int mday, int hour, int min, int sec);
int64_t tz_days_from_civil(int64_t year, int mon, int mday);

#endif
