/*
 * cron.h - cron expressions and their next fire time in a time zone.
 *
 * Hand-written rather than taken from a library because sked promises
 * things no library we looked at does all of:
 *  - exact Vixie cron semantics, including the day-of-month / day-of-week
 *    OR rule, plus an optional leading seconds field;
 *  - errors precise enough to show a user as-is, naming the field and the
 *    problem ("day-of-month: 32 is out of range 1-31"), and rejection of
 *    expressions that can never fire ("0 0 30 2 *");
 *  - an explicit, per-job policy for wall times that daylight-saving
 *    changes skip or repeat, with the outcome flagged on each fire;
 *  - a small fixed footprint (a master holds up to 1,000,000 schedules):
 *    a cron_t is six bitmasks and a flags byte, sizeof(cron_t) == 32.
 *
 * Syntax is documented in docs/CRON.md. A cron_t is immutable after
 * cron_new(), so one may be shared between threads.
 */
#ifndef SKED_CRON_H
#define SKED_CRON_H

#include "common/err.h"
#include "common/tz.h"

#include <stdint.h>

typedef struct cron cron_t;

/* What to do with a wall time skipped by a spring-forward change. */
typedef enum {
    CRON_GAP_FIRE_AFTER = 0, /* fire once at the first instant after the gap */
    CRON_GAP_SKIP = 1,       /* do not fire */
} cron_gap_t;

/* What to do with a wall time repeated by a fall-back change. */
typedef enum {
    CRON_OVERLAP_FIRST = 0, /* fire at the first occurrence only */
    CRON_OVERLAP_BOTH = 1,  /* fire at both occurrences */
} cron_overlap_t;

typedef struct {
    cron_gap_t gap;
    cron_overlap_t overlap;
} cron_dst_policy_t;

#define CRON_DST_POLICY_DEFAULT ((cron_dst_policy_t){CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST})

/* cron_fire_t.flags */
enum {
    CRON_FIRE_GAP_SHIFTED = 1 << 0,    /* wall time was skipped; fired after the gap */
    CRON_FIRE_OVERLAP_SECOND = 1 << 1, /* second occurrence of a repeated wall time */
};

typedef struct {
    int64_t at_ms;      /* the instant, UTC ms since the epoch */
    int64_t local_secs; /* wall-clock time at that instant, seconds as if UTC */
    int utc_offset;     /* seconds east of UTC at that instant */
    int flags;          /* CRON_FIRE_* */
} cron_fire_t;

/* How far cron_next() searches before giving up with ERR_NOTFOUND. The
 * rarest valid expressions, a Feb 29 that must also be a given weekday
 * (day-of-week written as a '*' step, so both day fields apply), recur at
 * most every 40 years, so every valid expression is found. */
#define CRON_SEARCH_YEARS 50

/* Parses expr (5 fields, 6 with leading seconds, or a @macro). Returns a
 * new cron_t owned by the caller, or NULL with ERR_INVALID and a message
 * naming the field and problem in err (the expression is not repeated). */
cron_t *cron_new(const char *expr, err_t *err);

/* The size of a cron_t, for one kept inside a caller's own allocation. */
#define CRON_SIZE 32

/* As cron_new(), into caller memory `mem` of CRON_SIZE bytes aligned for
 * a uint64_t (a master keeps each trigger's cron inside the trigger's
 * record: a separate allocation costs 48 bytes a trigger). Returns mem as
 * a cron_t, not to be given to cron_destroy(), or NULL with err set. */
cron_t *cron_parse_into(void *mem, const char *expr, err_t *err);

/* Frees a cron_t; NULL-safe, sets *self_p = NULL. */
void cron_destroy(cron_t **self_p);

/* The first fire instant strictly after after_ms, evaluated on the wall
 * clock of tz under policy pol. Returns 0 and fills *out; ERR_NOTFOUND if
 * nothing fires within CRON_SEARCH_YEARS or before the end of year 9999
 * (otherwise possible only when the DST policy skips every match);
 * ERR_INVALID if after_ms is outside the years 1-9999. Never loops: a
 * field-wise search over constant-offset spans. */
int cron_next(const cron_t *c, const tz_t *tz, cron_dst_policy_t pol, int64_t after_ms,
              cron_fire_t *out);

/* 1 if the wall-clock time local_secs matches every field, else 0. */
int cron_matches(const cron_t *c, int64_t local_secs);

/* Parses policy names: gap "fire_after" | "skip", overlap "first" | "both";
 * a NULL name keeps the default. Returns 0, or ERR_INVALID with a message. */
int cron_dst_policy_parse(const char *gap, const char *overlap, cron_dst_policy_t *out,
                          err_t *err);

/* The names cron_dst_policy_parse() accepts; static strings, can't fail. */
const char *cron_gap_name(cron_gap_t gap);
const char *cron_overlap_name(cron_overlap_t overlap);

#endif
