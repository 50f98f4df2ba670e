/*
 * cron.c - cron expression parser and next-fire search; see cron.h for
 * why it is hand-written, docs/CRON.md for the syntax.
 *
 * A cron_t is one bitmask per field plus two Vixie flags recording whether
 * day-of-month / day-of-week were written starting with '*' (or '?'): if
 * either was, a day must match both fields, otherwise either one.
 *
 * cron_next() is hot (the master computes it for every schedule after
 * every fire). It walks the zone's constant-offset spans starting at the
 * search instant; inside a span, wall time is UTC plus a constant, so the
 * next matching wall time comes from a field-wise search on the bitmasks
 * (next set bit per month, day, hour, minute, second), never by stepping
 * minute by minute. A match that falls past the span's end is either in a
 * spring-forward gap (fired at the transition, or skipped, per policy) or
 * belongs to a later span. Wall times a fall-back repeats are recognised
 * by the span's previous offset and fired once or twice, per policy.
 */
#include "common/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { S_DOM_STAR = 1, S_DOW_STAR = 2 };

struct cron {
    uint64_t sec;  /* bits 0-59 */
    uint64_t min;  /* bits 0-59 */
    uint32_t hour; /* bits 0-23 */
    uint32_t dom;  /* bits 1-31 */
    uint16_t mon;  /* bits 1-12 */
    uint8_t dow;   /* bits 0-6, 0 = Sunday */
    uint8_t flags; /* S_DOM_STAR | S_DOW_STAR */
};

_Static_assert(sizeof(struct cron) == CRON_SIZE, "cron_t is meant to stay 32 bytes");

enum { F_SEC, F_MIN, F_HOUR, F_DOM, F_MON, F_DOW, F_COUNT };

typedef struct {
    const char *name;
    int lo, hi;
    const char *const *names; /* index 0 is value lo */
} s_field_t;

static const char *const s_month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                            "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const s_day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const s_field_t s_fields[F_COUNT] = {
    {"second", 0, 59, NULL},      {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},        {"day-of-month", 1, 31, NULL},
    {"month", 1, 12, s_month_names}, {"day-of-week", 0, 7, s_day_names},
};

static const int s_mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

/* Year 1 and year 9999 bounds of cron_next()'s after_ms. */
#define S_MIN_MS INT64_C(-62135596800000)
#define S_MAX_MS INT64_C(253402300799999)

/* ---- parsing -------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t n;
} s_tok_t;

/* Parses one value (number or name) of field f from tok[0..n). */
static int s_value(const s_field_t *f, const char *tok, size_t n, int *out, err_t *err)
{
    int len = n > 64 ? 64 : (int)n;
    if (n > 0 && isdigit((unsigned char)tok[0])) {
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)tok[i]))
                return err_set(err, ERR_INVALID, "%s: invalid value '%.*s'", f->name, len, tok);
            if (v < 1000000)
                v = v * 10 + (tok[i] - '0');
        }
        if (v < f->lo || v > f->hi)
            return err_set(err, ERR_INVALID, "%s: %.*s is out of range %d-%d", f->name, len, tok,
                           f->lo, f->hi);
        *out = (int)v;
        return 0;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (n == 3 && strncasecmp(tok, f->names[i], 3) == 0) {
            *out = f->lo + i;
            return 0;
        }
    }
    return err_set(err, ERR_INVALID, "%s: invalid value '%.*s'", f->name, len, tok);
}

/* Parses one list element ("*", "a", "a-b", with optional "/n") into mask. */
static int s_element(const s_field_t *f, int fi, const char *el, size_t n, uint64_t *mask,
                     err_t *err)
{
    const char *slash = memchr(el, '/', n);
    size_t base_n = slash ? (size_t)(slash - el) : n;
    int lo, hi, step = 1, is_all = 0, len = n > 64 ? 64 : (int)n;
    int top = fi == F_DOW ? 6 : f->hi; /* '*' and "a/n" stop at Saturday */
    if (base_n == 1 && (el[0] == '*' || (el[0] == '?' && (fi == F_DOM || fi == F_DOW)))) {
        lo = f->lo;
        hi = top;
        is_all = 1;
    } else {
        const char *dash = memchr(el, '-', base_n);
        size_t a_n = dash ? (size_t)(dash - el) : base_n;
        if (a_n == 0 || (dash && dash + 1 == el + base_n))
            return err_set(err, ERR_INVALID, "%s: invalid value '%.*s'", f->name, len, el);
        if (s_value(f, el, a_n, &lo, err))
            return ERR_INVALID;
        hi = lo;
        if (dash) {
            if (s_value(f, dash + 1, base_n - a_n - 1, &hi, err))
                return ERR_INVALID;
            if (fi == F_DOW && hi == 0 && lo > 0)
                hi = 7; /* FRI-SUN */
            if (hi < lo)
                return err_set(err, ERR_INVALID, "%s: range %.*s is reversed", f->name,
                               (int)(base_n > 64 ? 64 : base_n), el);
        } else if (slash) {
            hi = top < lo ? lo : top; /* "a/n" is a through the maximum */
        }
    }
    if (slash) {
        const char *s = slash + 1;
        size_t sn = n - base_n - 1;
        int span = (is_all ? top : f->hi) - f->lo + 1;
        long v = 0;
        if (sn == 0)
            return err_set(err, ERR_INVALID, "%s: missing step after '/'", f->name);
        for (size_t i = 0; i < sn; i++) {
            if (!isdigit((unsigned char)s[i]))
                return err_set(err, ERR_INVALID, "%s: invalid step '%.*s'", f->name,
                               (int)(sn > 64 ? 64 : sn), s);
            if (v < 1000000)
                v = v * 10 + (s[i] - '0');
        }
        if (v == 0)
            return err_set(err, ERR_INVALID, "%s: step must be positive", f->name);
        if (v > span)
            return err_set(err, ERR_INVALID, "%s: step %.*s is out of range 1-%d", f->name,
                           (int)(sn > 64 ? 64 : sn), s, span);
        step = (int)v;
    }
    for (int v = lo; v <= hi; v += step)
        *mask |= UINT64_C(1) << v;
    return 0;
}

/* Parses a whole field (comma-separated list). */
static int s_field(int fi, s_tok_t tok, uint64_t *mask, err_t *err)
{
    const s_field_t *f = &s_fields[fi];
    const char *p = tok.p, *end = tok.p + tok.n;
    *mask = 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *el_end = comma ? comma : end;
        if (el_end == p)
            return err_set(err, ERR_INVALID, "%s: empty list element", f->name);
        if (s_element(f, fi, p, (size_t)(el_end - p), mask, err))
            return ERR_INVALID;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (fi == F_DOW && (*mask & (UINT64_C(1) << 7)))
        *mask = (*mask | 1) & 0x7f; /* 7 is Sunday too */
    return 0;
}

static const struct {
    const char *name;
    const char *expr;
} s_macros[] = {
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static int s_split(const char *expr, s_tok_t *toks, int max)
{
    int n = 0;
    const char *p = expr;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            return n;
        const char *start = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (n < max)
            toks[n] = (s_tok_t){start, (size_t)(p - start)};
        n++;
    }
}

static int s_month_len(int64_t y, int m)
{
    return s_mdays[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
}

/* Appends the set bits lo..hi of mask as "a,b,c" to buf. */
static void s_list(uint64_t mask, int lo, int hi, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int v = lo; v <= hi && used < size; v++)
        if (mask & (UINT64_C(1) << v))
            used += (size_t)snprintf(buf + used, size - used, "%s%d", used ? "," : "", v);
}

/* With both day fields required, a day-of-month no chosen month has can
 * never fire ("0 0 30 2 *"); with either sufficing, day-of-week always can. */
static int s_check_can_fire(const cron_t *c, err_t *err)
{
    if (!(c->flags & S_DOW_STAR) || (c->flags & S_DOM_STAR))
        return 0;
    for (int m = 1; m <= 12; m++) {
        int len = m == 2 ? 29 : s_mdays[m - 1];
        if ((c->mon & (1u << m)) && (c->dom & (uint32_t)((UINT64_C(2) << len) - 2)))
            return 0;
    }
    char days[128], months[64];
    s_list(c->dom, 1, 31, days, sizeof days);
    s_list(c->mon, 1, 12, months, sizeof months);
    return err_set(err, ERR_INVALID, "expression can never fire: day-of-month %s does not occur in %s %s",
                   days, strchr(months, ',') ? "months" : "month", months);
}

static int s_parse(struct cron *c, const char *expr, err_t *err)
{
    s_tok_t toks[F_COUNT];
    uint64_t masks[F_COUNT];
    int n = s_split(expr ? expr : "", toks, F_COUNT);
    if (n >= 1 && toks[0].p[0] == '@') {
        int len = toks[0].n > 64 ? 64 : (int)toks[0].n;
        for (size_t i = 0; i < sizeof s_macros / sizeof s_macros[0]; i++) {
            if (toks[0].n == strlen(s_macros[i].name) &&
                strncasecmp(toks[0].p, s_macros[i].name, toks[0].n) == 0) {
                if (n > 1) {
                    err_set(err, ERR_INVALID, "unexpected field '%.*s' after macro '%.*s'",
                            (int)(toks[1].n > 64 ? 64 : toks[1].n), toks[1].p, len, toks[0].p);
                    return ERR_INVALID;
                }
                return s_parse(c, s_macros[i].expr, err);
            }
        }
        return err_set(err, ERR_INVALID, "unknown macro '%.*s'", len, toks[0].p);
    }
    if (n != 5 && n != 6)
        return err_set(err, ERR_INVALID, "expected 5 or 6 fields, got %d", n);
    int first = n == 5 ? F_MIN : F_SEC;
    masks[F_SEC] = 1; /* second 0 */
    for (int i = 0; i < n; i++)
        if (s_field(first + i, toks[i], &masks[first + i], err))
            return ERR_INVALID;
    memset(c, 0, sizeof *c);
    c->sec = masks[F_SEC];
    c->min = masks[F_MIN];
    c->hour = (uint32_t)masks[F_HOUR];
    c->dom = (uint32_t)masks[F_DOM];
    c->mon = (uint16_t)masks[F_MON];
    c->dow = (uint8_t)masks[F_DOW];
    char dom0 = toks[F_DOM - first].p[0], dow0 = toks[F_DOW - first].p[0];
    if (dom0 == '*' || dom0 == '?')
        c->flags |= S_DOM_STAR;
    if (dow0 == '*' || dow0 == '?')
        c->flags |= S_DOW_STAR;
    return s_check_can_fire(c, err) ? ERR_INVALID : 0;
}

cron_t *cron_new(const char *expr, err_t *err)
{
    cron_t *c = malloc(sizeof *c);
    if (!c) {
        err_set(err, ERR_SYS, "cannot parse cron expression: out of memory");
        return NULL;
    }
    if (s_parse(c, expr, err))
        cron_destroy(&c);
    return c;
}

cron_t *cron_parse_into(void *mem, const char *expr, err_t *err)
{
    return s_parse(mem, expr, err) ? NULL : mem;
}

void cron_destroy(cron_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

/* ---- matching ------------------------------------------------------- */

/* Bits 1..31: the days of month m of year y that match the day fields. */
static uint32_t s_day_mask(const cron_t *c, int64_t y, int m)
{
    int len = s_month_len(y, m);
    uint32_t valid = (uint32_t)((UINT64_C(2) << len) - 2);
    int64_t w = (tz_days_from_civil(y, m, 1) + 4) % 7; /* weekday of the 1st */
    if (w < 0)
        w += 7;
    uint32_t r = ((uint32_t)c->dow >> w | (uint32_t)c->dow << (7 - w)) & 0x7f;
    uint64_t rep = (uint64_t)r | (uint64_t)r << 7 | (uint64_t)r << 14 | (uint64_t)r << 21 |
                   (uint64_t)r << 28;
    uint32_t dow_days = (uint32_t)(rep << 1) & valid;
    uint32_t dom_days = c->dom & valid;
    return (c->flags & (S_DOM_STAR | S_DOW_STAR)) ? (dom_days & dow_days) : (dom_days | dow_days);
}

int cron_matches(const cron_t *c, int64_t local_secs)
{
    tz_civil_t t;
    tz_civil_from_secs(local_secs, &t);
    return (c->sec >> t.sec & 1) && (c->min >> t.min & 1) && (c->hour >> t.hour & 1) &&
           (c->mon >> t.mon & 1) && (s_day_mask(c, t.year, t.mon) >> t.mday & 1);
}

/* The first wall time >= from that matches c; -1 if it would be after
 * limit. Each pass either returns or moves to the next candidate of some
 * field, so the loop is bounded by the number of months before limit. */
static int s_next_local(const cron_t *c, int64_t from, int64_t limit, int64_t *out)
{
    tz_civil_t t, lim;
    tz_civil_from_secs(from, &t);
    tz_civil_from_secs(limit, &lim);
    int64_t y = t.year;
    int mo = t.mon, d = t.mday, h = t.hour, mi = t.min, s = t.sec;
    for (;;) {
        if (mo > 12) {
            y++;
            mo = 1;
        }
        if (y > lim.year)
            return -1;
        uint64_t bits = (uint64_t)c->mon & (~UINT64_C(0) << mo);
        if (!bits) {
            y++;
            mo = 1, d = 1, h = 0, mi = 0, s = 0;
            continue;
        }
        if (__builtin_ctzll(bits) != mo) {
            mo = __builtin_ctzll(bits);
            d = 1, h = 0, mi = 0, s = 0;
        }
        bits = (uint64_t)s_day_mask(c, y, mo) & (~UINT64_C(0) << d);
        if (!bits) {
            mo++;
            d = 1, h = 0, mi = 0, s = 0;
            continue;
        }
        if (__builtin_ctzll(bits) != d) {
            d = __builtin_ctzll(bits);
            h = 0, mi = 0, s = 0;
        }
        bits = (uint64_t)c->hour & (~UINT64_C(0) << h);
        if (!bits) {
            d++;
            h = 0, mi = 0, s = 0;
            continue;
        }
        if (__builtin_ctzll(bits) != h) {
            h = __builtin_ctzll(bits);
            mi = 0, s = 0;
        }
        bits = c->min & (~UINT64_C(0) << mi);
        if (!bits) {
            h++, mi = 0, s = 0; /* h == 24 finds no hour bit: next day */
            continue;
        }
        if (__builtin_ctzll(bits) != mi) {
            mi = __builtin_ctzll(bits);
            s = 0;
        }
        bits = c->sec & (~UINT64_C(0) << s);
        if (!bits) {
            mi++, s = 0; /* mi == 60 finds no minute bit: next hour */
            continue;
        }
        s = __builtin_ctzll(bits);
        *out = tz_secs_from_civil(y, mo, d, h, mi, s);
        return *out > limit ? -1 : 0;
    }
}

int cron_next(const cron_t *c, const tz_t *tz, cron_dst_policy_t pol, int64_t after_ms,
              cron_fire_t *out)
{
    if (after_ms < S_MIN_MS || after_ms > S_MAX_MS)
        return ERR_INVALID;
    int64_t after = after_ms >= 0 ? after_ms / 1000 : -((-after_ms + 999) / 1000);
    int64_t u = after + 1; /* fires are whole seconds, strictly after */
    int64_t limit = u + (int64_t)CRON_SEARCH_YEARS * 366 * 86400;
    if (limit > S_MAX_MS / 1000) /* nothing after year 9999 */
        limit = S_MAX_MS / 1000;
    for (int iter = 0; iter < 64 * CRON_SEARCH_YEARS; iter++) {
        tz_span_t sp;
        tz_span_at(tz, u, &sp);
        int64_t from = u + sp.offset, local;
        /* wall times below second_until already happened in the span before */
        int64_t second_until = sp.start != INT64_MIN && sp.prev_offset > sp.offset
                                   ? sp.start + sp.prev_offset
                                   : INT64_MIN;
        if (pol.overlap == CRON_OVERLAP_FIRST && from < second_until)
            from = second_until;
        if (s_next_local(c, from, limit, &local))
            return ERR_NOTFOUND;
        if (sp.end == INT64_MAX || local < sp.end + sp.offset) {
            out->at_ms = (local - sp.offset) * 1000;
            out->local_secs = local;
            out->utc_offset = sp.offset;
            out->flags = local < second_until ? CRON_FIRE_OVERLAP_SECOND : 0;
            return 0;
        }
        if (sp.next_offset > sp.offset && local < sp.end + sp.next_offset &&
            pol.gap == CRON_GAP_FIRE_AFTER) {
            /* skipped by spring-forward: fire once as the gap ends */
            out->at_ms = sp.end * 1000;
            out->local_secs = sp.end + sp.next_offset;
            out->utc_offset = sp.next_offset;
            out->flags = cron_matches(c, out->local_secs) ? 0 : CRON_FIRE_GAP_SHIFTED;
            return 0;
        }
        u = sp.end;
    }
    return ERR_NOTFOUND;
}

/* ---- DST policy names ----------------------------------------------- */

int cron_dst_policy_parse(const char *gap, const char *overlap, cron_dst_policy_t *out,
                          err_t *err)
{
    cron_dst_policy_t pol = CRON_DST_POLICY_DEFAULT;
    if (gap && strcmp(gap, "fire_after") == 0)
        pol.gap = CRON_GAP_FIRE_AFTER;
    else if (gap && strcmp(gap, "skip") == 0)
        pol.gap = CRON_GAP_SKIP;
    else if (gap)
        return err_set(err, ERR_INVALID,
                       "unknown dst gap policy '%.64s': expected fire_after or skip", gap);
    if (overlap && strcmp(overlap, "first") == 0)
        pol.overlap = CRON_OVERLAP_FIRST;
    else if (overlap && strcmp(overlap, "both") == 0)
        pol.overlap = CRON_OVERLAP_BOTH;
    else if (overlap)
        return err_set(err, ERR_INVALID,
                       "unknown dst overlap policy '%.64s': expected first or both", overlap);
    *out = pol;
    return 0;
}

const char *cron_gap_name(cron_gap_t gap)
{
    return gap == CRON_GAP_SKIP ? "skip" : "fire_after";
}

const char *cron_overlap_name(cron_overlap_t overlap)
{
    return overlap == CRON_OVERLAP_BOTH ? "both" : "first";
}
