/*
 * tz.c - TZif reader and UTC <-> wall-clock conversion; see tz.h for why
 * this is hand-written instead of using ICU or the process-global TZ.
 *
 * A zone is a sorted table of transitions (UTC instants) each naming a
 * local time type (offset, DST flag, abbreviation), plus an optional POSIX
 * TZ rule that takes over at and after the last transition in the table
 * (the same choice glibc makes, so the two agree). Invariants after
 * parsing: at least one type; transitions strictly ascending; every type
 * index valid; every abbreviation NUL-terminated inside the zone; every
 * offset within +-TZ_MAX_OFFSET. Parsing bounds-checks each read against
 * the input length, so a malformed file is an error, never a crash.
 *
 * Hot path: tz_span_at(), called a few times per cron_next(). It is a
 * binary search in the table or, past it, a handful of rule evaluations.
 * Zones from tz_get() are immutable once cached; the cache is a list under
 * a mutex, searched by name.
 */
#include "common/tz.h"

#include "common/clock.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TZ_NAME_MAX 64
#define TZ_FILE_MAX (4 * 1024 * 1024)
#define TZ_ABBR_MAX 15

typedef struct {
    int32_t off;
    uint8_t is_dst;
    uint32_t abbr; /* index into tz->abbrs */
} s_type_t;

enum { S_WHEN_J1, S_WHEN_J0, S_WHEN_M };

/* One POSIX rule date: "Jn" (1-365, Feb 29 never counted), "n" (0-365),
 * or "Mm.w.d" (day d of week w of month m, w = 5 meaning last), with the
 * local time of day (may be negative or beyond 24 h). */
typedef struct {
    int kind;
    int m, w, d;
    int32_t secs;
} s_when_t;

typedef struct {
    int32_t std_off, dst_off;
    char std_abbr[TZ_ABBR_MAX + 1], dst_abbr[TZ_ABBR_MAX + 1];
    int has_dst;
    s_when_t start, end;
} s_rule_t;

struct tz {
    char name[TZ_NAME_MAX + 1];
    uint32_t n_trans, n_types, n_abbrs;
    int64_t *trans;
    uint8_t *trans_type;
    s_type_t *types;
    char *abbrs;
    int has_rule;
    s_rule_t rule;
    struct tz *next; /* cache list */
};

/* ---- civil dates ---------------------------------------------------- */

int64_t tz_days_from_civil(int64_t y, int m, int d)
{
    return clock_days_from_civil(y, m, d);
}

int64_t tz_secs_from_civil(int64_t year, int mon, int mday, int hour, int min, int sec)
{
    return tz_days_from_civil(year, mon, mday) * 86400 + hour * 3600 + min * 60 + sec;
}

static int64_t s_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int s_is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

void tz_civil_from_secs(int64_t secs, tz_civil_t *out)
{
    int64_t days = s_floor_div(secs, 86400);
    int64_t rem = secs - days * 86400;
    clock_civil_from_days(days, &out->year, &out->mon, &out->mday);
    out->hour = (int)(rem / 3600);
    out->min = (int)(rem / 60 % 60);
    out->sec = (int)(rem % 60);
    int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
    out->wday = (int)(w < 0 ? w + 7 : w);
    out->yday = (int)(days - tz_days_from_civil(out->year, 1, 1));
}

/* ---- POSIX TZ rule (the TZif footer) -------------------------------- */

static int s_parse_abbr(const char **pp, char *out)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while (*p && *p != '>') {
            if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-')
                return -1;
            if (n >= TZ_ABBR_MAX)
                return -1;
            out[n++] = *p++;
        }
        if (*p != '>')
            return -1;
        p++;
    } else {
        while (isalpha((unsigned char)*p)) {
            if (n >= TZ_ABBR_MAX)
                return -1;
            out[n++] = *p++;
        }
    }
    if (n == 0)
        return -1;
    out[n] = '\0';
    *pp = p;
    return 0;
}

/* [+-]h[hh][:mm[:ss]] with hours <= max_hours; sets seconds (signed). */
static int s_parse_hms(const char **pp, int max_hours, int32_t *out)
{
    const char *p = *pp;
    int sign = 1, h = 0, part[2] = {0, 0}, nd = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    while (isdigit((unsigned char)*p) && nd < 3) {
        h = h * 10 + (*p++ - '0');
        nd++;
    }
    if (nd == 0 || isdigit((unsigned char)*p) || h > max_hours)
        return -1;
    for (int i = 0; i < 2 && *p == ':'; i++) {
        p++;
        if (!isdigit((unsigned char)p[0]))
            return -1;
        part[i] = *p++ - '0';
        if (isdigit((unsigned char)*p))
            part[i] = part[i] * 10 + (*p++ - '0');
        if (part[i] > 59)
            return -1;
    }
    *out = sign * (h * 3600 + part[0] * 60 + part[1]);
    *pp = p;
    return 0;
}

static int s_parse_num(const char **pp, int lo, int hi, int *out)
{
    const char *p = *pp;
    int v = 0, nd = 0;
    while (isdigit((unsigned char)*p) && nd < 4) {
        v = v * 10 + (*p++ - '0');
        nd++;
    }
    if (nd == 0 || isdigit((unsigned char)*p) || v < lo || v > hi)
        return -1;
    *out = v;
    *pp = p;
    return 0;
}

static int s_parse_when(const char **pp, s_when_t *w)
{
    const char *p = *pp;
    memset(w, 0, sizeof *w);
    w->secs = 7200;
    if (*p == 'J') {
        p++;
        w->kind = S_WHEN_J1;
        if (s_parse_num(&p, 1, 365, &w->d))
            return -1;
    } else if (*p == 'M') {
        p++;
        w->kind = S_WHEN_M;
        if (s_parse_num(&p, 1, 12, &w->m) || *p++ != '.' || s_parse_num(&p, 1, 5, &w->w) ||
            *p++ != '.' || s_parse_num(&p, 0, 6, &w->d))
            return -1;
    } else {
        w->kind = S_WHEN_J0;
        if (s_parse_num(&p, 0, 365, &w->d))
            return -1;
    }
    if (*p == '/') {
        p++;
        if (s_parse_hms(&p, 167, &w->secs))
            return -1;
    }
    *pp = p;
    return 0;
}

/* Parses a whole POSIX TZ string such as "EST5EDT,M3.2.0,M11.1.0". */
static int s_parse_rule(const char *s, s_rule_t *r)
{
    const char *p = s;
    int32_t v;
    memset(r, 0, sizeof *r);
    if (s_parse_abbr(&p, r->std_abbr) || s_parse_hms(&p, 24, &v))
        return -1;
    r->std_off = -v;
    if (*p == '\0')
        return 0;
    if (s_parse_abbr(&p, r->dst_abbr))
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*p && *p != ',') {
        if (s_parse_hms(&p, 24, &v))
            return -1;
        r->dst_off = -v;
    }
    if (r->dst_off > TZ_MAX_OFFSET || r->dst_off < -TZ_MAX_OFFSET)
        return -1;
    if (*p == '\0') { /* no dates: glibc's default, the US rules */
        const char *start = "M3.2.0", *end = "M11.1.0";
        return s_parse_when(&start, &r->start) || s_parse_when(&end, &r->end) ? -1 : 0;
    }
    if (*p++ != ',' || s_parse_when(&p, &r->start) || *p++ != ',' || s_parse_when(&p, &r->end))
        return -1;
    return *p == '\0' ? 0 : -1;
}

/* Local seconds (as if UTC) at which rule date w falls in year y. */
static int64_t s_when_local(const s_when_t *w, int64_t y)
{
    int64_t day;
    if (w->kind == S_WHEN_J1) {
        day = tz_days_from_civil(y, 1, 1) + w->d - 1 + (w->d >= 60 && s_is_leap(y));
    } else if (w->kind == S_WHEN_J0) {
        day = tz_days_from_civil(y, 1, 1) + w->d;
    } else {
        static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int len = mdays[w->m - 1] + (w->m == 2 && s_is_leap(y));
        int64_t first = tz_days_from_civil(y, w->m, 1);
        int64_t wd = (first + 4) % 7;
        if (wd < 0)
            wd += 7;
        int d = (int)((w->d - wd + 7) % 7);
        for (int i = 1; i < w->w && d + 7 < len; i++)
            d += 7;
        day = first + d;
    }
    return day * 86400 + w->secs;
}

typedef struct {
    int64_t t;
    int is_dst;
} s_change_t;

#define S_RULE_YEARS 5

/* The rule's changes for the years around UTC instant t, sorted; on a tie
 * the change into DST sorts last so it wins (permanent-DST rules such as
 * "0/0,J365/25" stay in DST). */
static void s_rule_changes(const s_rule_t *r, int64_t t, s_change_t out[2 * S_RULE_YEARS])
{
    tz_civil_t c;
    tz_civil_from_secs(t, &c);
    int n = 0;
    for (int64_t y = c.year - 2; y <= c.year + 2; y++) {
        out[n].t = s_when_local(&r->start, y) - r->std_off;
        out[n++].is_dst = 1;
        out[n].t = s_when_local(&r->end, y) - r->dst_off;
        out[n++].is_dst = 0;
    }
    for (int i = 1; i < n; i++) {
        s_change_t x = out[i];
        int j = i - 1;
        while (j >= 0 && (out[j].t > x.t || (out[j].t == x.t && out[j].is_dst > x.is_dst))) {
            out[j + 1] = out[j];
            j--;
        }
        out[j + 1] = x;
    }
}

/* ---- lookups -------------------------------------------------------- */

typedef struct {
    int off;
    int is_dst;
    const char *abbr;
} s_state_t;

static int64_t s_clamp(int64_t t)
{
    return t > TZ_LIMIT_SECS ? TZ_LIMIT_SECS : t < -TZ_LIMIT_SECS ? -TZ_LIMIT_SECS : t;
}

static int s_in_rule(const tz_t *tz, int64_t t)
{
    return tz->has_rule && (tz->n_trans == 0 || t >= tz->trans[tz->n_trans - 1]);
}

/* Largest k with trans[k] <= t, or -1. */
static int64_t s_find(const tz_t *tz, int64_t t)
{
    int64_t lo = 0, hi = (int64_t)tz->n_trans - 1, k = -1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t) {
            k = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return k;
}

static void s_type_state(const tz_t *tz, uint32_t i, s_state_t *st)
{
    st->off = tz->types[i].off;
    st->is_dst = tz->types[i].is_dst;
    st->abbr = tz->abbrs + tz->types[i].abbr;
}

static void s_rule_state(const tz_t *tz, int is_dst, s_state_t *st)
{
    st->is_dst = is_dst;
    st->off = is_dst ? tz->rule.dst_off : tz->rule.std_off;
    st->abbr = is_dst ? tz->rule.dst_abbr : tz->rule.std_abbr;
}

static void s_state_at(const tz_t *tz, int64_t t, s_state_t *st)
{
    t = s_clamp(t);
    if (s_in_rule(tz, t)) {
        int is_dst = 0;
        if (tz->rule.has_dst) {
            s_change_t ch[2 * S_RULE_YEARS];
            s_rule_changes(&tz->rule, t, ch);
            for (int i = 0; i < 2 * S_RULE_YEARS && ch[i].t <= t; i++)
                is_dst = ch[i].is_dst;
        }
        s_rule_state(tz, is_dst, st);
        return;
    }
    int64_t k = s_find(tz, t);
    s_type_state(tz, k < 0 ? 0 : tz->trans_type[k], st);
}

int tz_offset_at(const tz_t *tz, int64_t t_secs, int *is_dst)
{
    s_state_t st;
    s_state_at(tz, t_secs, &st);
    if (is_dst)
        *is_dst = st.is_dst;
    return st.off;
}

const char *tz_abbrev_at(const tz_t *tz, int64_t t_secs)
{
    s_state_t st;
    s_state_at(tz, t_secs, &st);
    return st.abbr;
}

const char *tz_name(const tz_t *tz)
{
    return tz->name;
}

/* Span for t at or after the last table transition, ruled by the footer. */
static void s_rule_span(const tz_t *tz, int64_t t, tz_span_t *out)
{
    s_state_t st;
    int64_t start = INT64_MIN;
    s_rule_state(tz, 0, &st);
    out->offset = out->prev_offset = out->next_offset = st.off;
    out->is_dst = 0;
    out->end = INT64_MAX;
    if (tz->rule.has_dst) {
        s_change_t ch[2 * S_RULE_YEARS];
        int n = 2 * S_RULE_YEARS, k = -1;
        s_rule_changes(&tz->rule, t, ch);
        while (k + 1 < n && ch[k + 1].t <= t)
            k++;
        if (k >= 0) {
            int j = k;
            start = ch[k].t;
            while (j >= 0 && ch[j].t == start)
                j--;
            s_rule_state(tz, ch[k].is_dst, &st);
            out->offset = st.off;
            out->is_dst = st.is_dst;
            s_rule_state(tz, j >= 0 ? ch[j].is_dst : ch[k].is_dst, &st);
            out->prev_offset = st.off;
        }
        if (k + 1 < n) {
            int j = k + 1;
            out->end = ch[j].t;
            while (j + 1 < n && ch[j + 1].t == out->end)
                j++;
            s_rule_state(tz, ch[j].is_dst, &st);
            out->next_offset = st.off;
        }
    }
    if (tz->n_trans > 0 && start < tz->trans[tz->n_trans - 1]) {
        /* the span began at the table's last transition */
        uint32_t n = tz->n_trans;
        start = tz->trans[n - 1];
        out->prev_offset = tz->types[n >= 2 ? tz->trans_type[n - 2] : 0].off;
    }
    out->start = start;
}

void tz_span_at(const tz_t *tz, int64_t t_secs, tz_span_t *out)
{
    int64_t t = s_clamp(t_secs);
    s_state_t st;
    if (s_in_rule(tz, t)) {
        s_rule_span(tz, t, out);
    } else {
        int64_t k = s_find(tz, t);
        s_type_state(tz, k < 0 ? 0 : tz->trans_type[k], &st);
        out->offset = st.off;
        out->is_dst = st.is_dst;
        out->start = k < 0 ? INT64_MIN : tz->trans[k];
        out->prev_offset = k <= 0 ? tz->types[0].off : tz->types[tz->trans_type[k - 1]].off;
        if (k < 0)
            out->prev_offset = st.off;
        if (k + 1 < (int64_t)tz->n_trans) {
            out->end = tz->trans[k + 1];
            s_state_at(tz, out->end, &st);
            out->next_offset = st.off;
        } else {
            out->end = INT64_MAX;
            out->next_offset = out->offset;
        }
    }
    if (t_secs > TZ_LIMIT_SECS) { /* constant beyond the limit */
        out->end = INT64_MAX;
        out->next_offset = out->offset;
    } else if (t_secs < -TZ_LIMIT_SECS) {
        out->start = INT64_MIN;
        out->prev_offset = out->offset;
        out->end = -TZ_LIMIT_SECS;
        s_state_at(tz, out->end, &st);
        out->next_offset = st.off;
    }
}

/* Calls fn for each span whose UTC range may hold an instant with wall
 * time local_secs, in order; stops when fn returns non-zero. */
static int s_each_span_near(const tz_t *tz, int64_t local_secs,
                            int (*fn)(const tz_span_t *, int64_t, void *), void *arg)
{
    int64_t u = local_secs - TZ_MAX_OFFSET - 1, last = local_secs + TZ_MAX_OFFSET + 1;
    for (int i = 0; i < 256; i++) { /* a zone never has 256 changes in 2 days */
        tz_span_t s;
        tz_span_at(tz, u, &s);
        if (fn(&s, local_secs, arg))
            return 1;
        if (s.end == INT64_MAX || s.end > last)
            break;
        u = s.end;
    }
    return 0;
}

typedef struct {
    int n;
    int64_t *out;
} s_match_t;

static int s_match_fn(const tz_span_t *s, int64_t local, void *arg)
{
    s_match_t *m = arg;
    int64_t cand = local - s->offset;
    if (cand >= s->start && cand < s->end) {
        if (m->n < 2)
            m->out[m->n] = cand;
        m->n++;
    }
    return 0;
}

int tz_local_to_utc(const tz_t *tz, int64_t local_secs, int64_t out[2])
{
    if (local_secs > TZ_LIMIT_SECS || local_secs < -TZ_LIMIT_SECS)
        return ERR_INVALID;
    s_match_t m = {0, out};
    s_each_span_near(tz, local_secs, s_match_fn, &m);
    return m.n > 2 ? 2 : m.n;
}

static int s_gap_fn(const tz_span_t *s, int64_t local, void *arg)
{
    if (s->end != INT64_MAX && s->next_offset > s->offset && local >= s->end + s->offset &&
        local < s->end + s->next_offset) {
        *(int64_t *)arg = s->end;
        return 1;
    }
    return 0;
}

int tz_gap_end(const tz_t *tz, int64_t local_secs, int64_t *utc)
{
    int64_t tmp[2];
    if (tz_local_to_utc(tz, local_secs, tmp) != 0)
        return ERR_NOTFOUND;
    return s_each_span_near(tz, local_secs, s_gap_fn, utc) ? 0 : ERR_NOTFOUND;
}

/* ---- TZif parsing --------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t left;
} s_cur_t;

typedef struct {
    int version;
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} s_hdr_t;

static const uint8_t *s_take(s_cur_t *c, uint64_t n)
{
    if (n > c->left)
        return NULL;
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= (size_t)n;
    return p;
}

static uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t s_be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)s_be32(p) << 32 | s_be32(p + 4));
}

static int s_parse_header(s_cur_t *c, s_hdr_t *h, const char **why)
{
    const uint8_t *p = s_take(c, 44);
    if (!p || memcmp(p, "TZif", 4) != 0) {
        *why = "not a TZif file";
        return -1;
    }
    h->version = p[4];
    if (h->version != 0 && h->version < '2') {
        *why = "unsupported TZif version";
        return -1;
    }
    h->isutcnt = s_be32(p + 20);
    h->isstdcnt = s_be32(p + 24);
    h->leapcnt = s_be32(p + 28);
    h->timecnt = s_be32(p + 32);
    h->typecnt = s_be32(p + 36);
    h->charcnt = s_be32(p + 40);
    if (h->typecnt == 0 || h->typecnt > 256 || h->charcnt == 0 ||
        (h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
        (h->isstdcnt != 0 && h->isstdcnt != h->typecnt)) {
        *why = "inconsistent TZif header counts";
        return -1;
    }
    return 0;
}

static uint64_t s_body_size(const s_hdr_t *h, int tsize)
{
    return (uint64_t)h->timecnt * (uint64_t)(tsize + 1) + (uint64_t)h->typecnt * 6 +
           h->charcnt + (uint64_t)h->leapcnt * (uint64_t)(tsize + 4) + h->isstdcnt +
           h->isutcnt;
}

/* Reads one data block (tsize = 4 or 8 byte times) into tz. */
static int s_parse_body(s_cur_t *c, const s_hdr_t *h, int tsize, tz_t *tz, const char **why)
{
    const uint8_t *times, *idx, *types, *chars;
    *why = "truncated TZif data";
    if (s_body_size(h, tsize) > c->left)
        return -1;
    times = s_take(c, (uint64_t)h->timecnt * (uint64_t)tsize);
    idx = s_take(c, h->timecnt);
    types = s_take(c, (uint64_t)h->typecnt * 6);
    chars = s_take(c, h->charcnt);
    s_take(c, (uint64_t)h->leapcnt * (uint64_t)(tsize + 4) + h->isstdcnt + h->isutcnt);
    tz->n_trans = h->timecnt;
    tz->n_types = h->typecnt;
    tz->n_abbrs = h->charcnt;
    tz->trans = malloc(sizeof *tz->trans * (h->timecnt ? h->timecnt : 1));
    tz->trans_type = malloc(h->timecnt ? h->timecnt : 1);
    tz->types = malloc(sizeof *tz->types * h->typecnt);
    tz->abbrs = malloc((size_t)h->charcnt + 1);
    if (!tz->trans || !tz->trans_type || !tz->types || !tz->abbrs) {
        *why = "out of memory";
        return -1;
    }
    *why = "malformed TZif data";
    for (uint32_t i = 0; i < h->timecnt; i++) {
        int64_t t = tsize == 8 ? s_be64(times + 8 * (size_t)i)
                               : (int64_t)(int32_t)s_be32(times + 4 * (size_t)i);
        if ((i > 0 && t <= tz->trans[i - 1]) || idx[i] >= h->typecnt)
            return -1;
        tz->trans[i] = t;
        tz->trans_type[i] = idx[i];
    }
    for (uint32_t i = 0; i < h->typecnt; i++) {
        const uint8_t *ty = types + 6 * (size_t)i;
        int32_t off = (int32_t)s_be32(ty);
        if (off > TZ_MAX_OFFSET || off < -TZ_MAX_OFFSET || ty[4] > 1 || ty[5] >= h->charcnt)
            return -1;
        tz->types[i].off = off;
        tz->types[i].is_dst = ty[4];
        tz->types[i].abbr = ty[5];
    }
    memcpy(tz->abbrs, chars, h->charcnt);
    tz->abbrs[h->charcnt] = '\0';
    return 0;
}

static void s_free_tables(tz_t *tz)
{
    free(tz->trans);
    free(tz->trans_type);
    free(tz->types);
    free(tz->abbrs);
    tz->trans = NULL;
    tz->trans_type = NULL;
    tz->types = NULL;
    tz->abbrs = NULL;
}

static int s_parse_footer(s_cur_t *c, tz_t *tz, const char **why)
{
    char buf[256];
    size_t n = 0;
    *why = "malformed TZif footer";
    if (c->left == 0 || c->p[0] != '\n')
        return -1;
    for (n = 1; n < c->left && n <= sizeof buf && c->p[n] != '\n'; n++)
        ;
    if (n >= c->left || n > sizeof buf - 1 || c->p[n] != '\n') /* too long, or unclosed */
        return -1;
    memcpy(buf, c->p + 1, n - 1);
    buf[n - 1] = '\0';
    if (buf[0] == '\0')
        return 0; /* empty footer: no rule */
    if (s_parse_rule(buf, &tz->rule)) {
        *why = "unsupported TZ rule in TZif footer";
        return -1;
    }
    tz->has_rule = 1;
    return 0;
}

static tz_t *s_alloc(const char *name)
{
    tz_t *tz = calloc(1, sizeof *tz);
    if (tz)
        snprintf(tz->name, sizeof tz->name, "%s", name);
    return tz;
}

tz_t *tz_new_from_tzif(const char *name, const void *data, size_t len, err_t *err)
{
    s_cur_t c = {data, len};
    s_hdr_t h;
    const char *why = "out of memory";
    tz_t *tz = s_alloc(name);
    if (!tz)
        goto fail;
    if (s_parse_header(&c, &h, &why))
        goto fail;
    if (h.version == 0) {
        if (s_parse_body(&c, &h, 4, tz, &why))
            goto fail;
        return tz;
    }
    why = "truncated TZif data";
    if (!s_take(&c, s_body_size(&h, 4)))
        goto fail;
    if (s_parse_header(&c, &h, &why) || s_parse_body(&c, &h, 8, tz, &why) ||
        s_parse_footer(&c, tz, &why))
        goto fail;
    return tz;
fail:
    tz_destroy(&tz);
    err_set(err, ERR_INVALID, "cannot load time zone '%.64s': %s", name, why);
    return NULL;
}

void tz_destroy(tz_t **self_p)
{
    if (self_p && *self_p) {
        s_free_tables(*self_p);
        free(*self_p);
        *self_p = NULL;
    }
}

static tz_t *s_new_utc(const char *name)
{
    tz_t *tz = s_alloc(name);
    if (!tz)
        return NULL;
    tz->n_types = 1;
    tz->n_abbrs = 3;
    tz->trans = NULL;
    tz->types = calloc(1, sizeof *tz->types);
    tz->abbrs = strdup("UTC");
    if (!tz->types || !tz->abbrs)
        tz_destroy(&tz);
    return tz;
}

/* ---- the cache ------------------------------------------------------ */

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static tz_t *s_cache;

static int s_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TZ_NAME_MAX || name[0] == '/' || strstr(name, ".."))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("_+-/", name[i]))
            return 0;
    return 1;
}

static tz_t *s_load(const char *name, err_t *err)
{
    const char *dir = getenv("SKED_ZONEINFO_DIR");
    char path[4096];
    struct stat stt;
    if (!dir || !*dir)
        dir = "/usr/share/zoneinfo";
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        goto unknown;
    if (fstat(fileno(f), &stt) != 0 || !S_ISREG(stt.st_mode) || stt.st_size > TZ_FILE_MAX) {
        fclose(f);
        goto unknown;
    }
    size_t size = (size_t)stt.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    size_t got = buf ? fread(buf, 1, size, f) : 0;
    fclose(f);
    if (!buf || got != size || size < 4 || memcmp(buf, "TZif", 4) != 0) {
        free(buf);
        goto unknown;
    }
    tz_t *tz = tz_new_from_tzif(name, buf, size, err);
    free(buf);
    return tz;
unknown:
    err_set(err, ERR_INVALID, "unknown time zone '%.64s'", name);
    return NULL;
}

const tz_t *tz_get(const char *name, err_t *err)
{
    if (!name || !s_name_ok(name)) {
        err_set(err, ERR_INVALID, "unknown time zone '%.64s'", name ? name : "");
        return NULL;
    }
    pthread_mutex_lock(&s_lock);
    tz_t *tz;
    for (tz = s_cache; tz; tz = tz->next)
        if (strcmp(tz->name, name) == 0)
            break;
    if (!tz) {
        if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0) {
            tz = s_new_utc(name);
            if (!tz)
                err_set(err, ERR_SYS, "cannot load time zone '%s': out of memory", name);
        } else {
            tz = s_load(name, err);
        }
        if (tz) {
            tz->next = s_cache;
            s_cache = tz;
        }
    }
    pthread_mutex_unlock(&s_lock);
    return tz;
}

void tz_cache_clear(void)
{
    pthread_mutex_lock(&s_lock);
    while (s_cache) {
        tz_t *next = s_cache->next;
        tz_destroy(&s_cache);
        s_cache = next;
    }
    pthread_mutex_unlock(&s_lock);
}
