/*
 * clock.h - wall and monotonic time in milliseconds, and ISO-8601 text.
 *
 * Wall time (ms since the Unix epoch, UTC) is what is stored and shown;
 * monotonic time is what deadlines that protect correctness (lease expiry,
 * heartbeat timeouts) are measured with, since wall time can jump.
 */
#ifndef SKED_CLOCK_H
#define SKED_CLOCK_H

#include <stddef.h>
#include <stdint.h>

int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (at least 32 bytes). */
void clock_format_iso(int64_t ms, char *buf, size_t size);

/* Parses an ISO-8601 date-time with a 'Z' or ±HH:MM offset (fractional
 * seconds optional); returns 0 and sets *ms, or -1 if malformed. */
int clock_parse_iso(const char *s, int64_t *ms);

/* Days since 1970-01-01 of a proleptic Gregorian date (any year), and
 * back; arithmetic only (Hinnant's days-from-civil). */
int64_t clock_days_from_civil(int64_t year, int mon, int mday);
void clock_civil_from_days(int64_t days, int64_t *year, int *mon, int *mday);

#endif
