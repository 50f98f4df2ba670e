/*
 * metrics.c - the process-wide Prometheus registry and its text rendering;
 * see metrics.h.
 *
 * Layout: s_reg holds the metrics in registration order and the overflow
 * counter apart from them. A metric holds its series in creation order in
 * an array; a series is one allocation: the struct, then (histograms) the
 * per-bucket counts, then the label value pointers and their strings.
 *
 * Invariants:
 * - Everything in s_reg, and every metric and series, is read or written
 *   only with s_reg.mu held.
 * - A metric holds at most limit + 1 series: limit ordinary ones and at
 *   most one whose values are all "other" made when the limit was reached
 *   (a combination that is all "other" anyway is that same series).
 * - Histogram bucket counts are stored per bucket (not cumulative); the
 *   last one counts observations above every bound (+Inf). count is their
 *   sum.
 * - Stored label values are already cut to METRICS_MAX_VALUE_LEN; lookups
 *   cut the caller's values the same way before comparing.
 *
 * Hot path: metric_inc/set/observe run on event-loop threads for every job,
 * message or request; they lock, find the series by a linear scan with a
 * hash pre-check (a metric has at most a few hundred series), and unlock.
 * Rendering runs on the scrape thread, a few times a minute.
 */
#include "common/metrics.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;

static const char *const s_type_names[] = {"counter", "gauge", "histogram"};

#define S_MAX_LABELS 16
#define S_OVERFLOW_NAME "sked_metrics_overflow_total"
#define S_OVERFLOW_HELP                                                                      \
    "Updates that went to a metric's overflow series (label values \"other\") because it "  \
    "already had its maximum number of series."

const double metrics_seconds_buckets[METRICS_SECONDS_NBUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1,     2.5,    5,     10,   30,    60,   300, 900, 3600,
};

typedef struct {
    uint32_t hash;
    double value;       /* counter, gauge */
    double sum;         /* histogram */
    uint64_t count;     /* histogram */
    uint64_t *buckets;  /* histogram: nbuckets + 1 counts, inside this allocation */
    char **values;      /* nlabels strings, inside this allocation */
} s_series_t;

struct metric {
    s_type_t type;
    char *name;
    char *help;
    int nlabels;
    char **labels;
    int nbuckets;
    double *bounds;
    char (*les)[32]; /* bounds as le label values */
    int limit;
    int has_other; /* the series whose values are all "other" exists */
    s_series_t **series;
    int nseries, cap;
};

static struct {
    pthread_mutex_t mu;
    metric_t **metrics;
    int n, cap;
    metric_t *overflow; /* sked_metrics_overflow_total, rendered last */
} s_reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* --- names --- */

static inline int s_is_name(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static inline int s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The names a metric takes: its sample names on the wire and its family
 * name (a counter's without _total, as OpenMetrics parsers see it). */
static inline int s_taken_names(s_type_t type, const char *name, char out[4][160])
{
    int n = 0;
    snprintf(out[n++], sizeof out[0], "%s", name);
    if (type == S_COUNTER)
        snprintf(out[n++], sizeof out[0], "%.*s", (int)(strlen(name) - strlen("_total")), name);
    if (type == S_HISTOGRAM) {
        snprintf(out[n++], sizeof out[0], "%s_bucket", name);
        snprintf(out[n++], sizeof out[0], "%s_sum", name);
        snprintf(out[n++], sizeof out[0], "%s_count", name);
    }
    return n;
}

/* Whether a metric (type, name) would take a name that m takes. */
static inline int s_collides(const metric_t *m, s_type_t type, const char *name)
{
    char a[4][160], b[4][160];
    int na = s_taken_names(type, name, a), nb = s_taken_names(m->type, m->name, b);
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (strcmp(a[i], b[j]) == 0)
                return 1;
    return 0;
}

/* Whether labels, "a,b,c" or "", is a list of at most S_MAX_LABELS valid,
 * distinct label names for a metric of type. */
static inline int s_labels_ok(const char *labels, s_type_t type)
{
    const char *names[S_MAX_LABELS];
    size_t lens[S_MAX_LABELS];
    int n = 0;
    for (const char *p = labels; *labels;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == S_MAX_LABELS || !s_is_name(p, len) || (len >= 2 && p[0] == '_' && p[1] == '_') ||
            (type == S_HISTOGRAM && len == 2 && memcmp(p, "le", 2) == 0))
            return 0;
        for (int i = 0; i < n; i++)
            if (lens[i] == len && memcmp(names[i], p, len) == 0)
                return 0;
        names[n] = p;
        lens[n++] = len;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 1;
}

/* Splits copy, a checked "a,b,c" or "", in place; returns the count. */
static int s_split_labels(char *copy, char *out[S_MAX_LABELS])
{
    int n = 0;
    for (char *p = copy; *copy;) {
        char *comma = strchr(p, ',');
        out[n++] = p;
        if (!comma)
            break;
        *comma = '\0';
        p = comma + 1;
    }
    return n;
}

/* --- series --- */

/* Length of value as stored: cut to METRICS_MAX_VALUE_LEN bytes, not inside
 * a UTF-8 sequence. */
static size_t s_value_len(const char *v)
{
    size_t n = strnlen(v, METRICS_MAX_VALUE_LEN + 1);
    if (n <= METRICS_MAX_VALUE_LEN)
        return n;
    n = METRICS_MAX_VALUE_LEN;
    while (n > 0 && ((unsigned char)v[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static uint32_t s_hash(const char *const *values, int n)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) {
        size_t len = s_value_len(values[i]);
        for (size_t k = 0; k < len; k++) {
            h ^= (unsigned char)values[i][k];
            h *= 16777619u;
        }
        h ^= 0xff; /* separator: no byte of a C string */
        h *= 16777619u;
    }
    return h;
}

static int s_same_values(const s_series_t *s, const char *const *values, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len = s_value_len(values[i]);
        if (strncmp(s->values[i], values[i], len) != 0 || s->values[i][len] != '\0')
            return 0;
    }
    return 1;
}

static s_series_t *s_find(const metric_t *m, const char *const *values, uint32_t hash)
{
    for (int i = 0; i < m->nseries; i++) {
        s_series_t *s = m->series[i];
        if (s->hash == hash && s_same_values(s, values, m->nlabels))
            return s;
    }
    return NULL;
}

/* Creates a series for values and appends it to m; NULL when out of memory. */
static s_series_t *s_series_new(metric_t *m, const char *const *values, uint32_t hash)
{
    if (m->nseries == m->cap) {
        int cap = m->cap ? m->cap * 2 : 4;
        s_series_t **v = realloc(m->series, (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        m->series = v;
        m->cap = cap;
    }
    size_t nb = m->type == S_HISTOGRAM ? (size_t)m->nbuckets + 1 : 0;
    size_t size = sizeof(s_series_t) + nb * sizeof(uint64_t) + (size_t)m->nlabels * sizeof(char *);
    for (int i = 0; i < m->nlabels; i++)
        size += s_value_len(values[i]) + 1;
    s_series_t *s = calloc(1, size);
    if (!s)
        return NULL;
    s->hash = hash;
    s->buckets = (uint64_t *)(s + 1);
    s->values = (char **)(s->buckets + nb);
    char *p = (char *)(s->values + m->nlabels);
    for (int i = 0; i < m->nlabels; i++) {
        size_t len = s_value_len(values[i]);
        memcpy(p, values[i], len);
        p[len] = '\0';
        s->values[i] = p;
        p += len + 1;
    }
    m->series[m->nseries++] = s;
    return s;
}

static void s_inc_overflow(const char *name);

/* Finds or creates the series of values in m, or the overflow series when m
 * is full; NULL when out of memory. */
static s_series_t *s_series(metric_t *m, const char *const *values)
{
    static const char *const others[S_MAX_LABELS] = {
        "other", "other", "other", "other", "other", "other", "other", "other",
        "other", "other", "other", "other", "other", "other", "other", "other",
    };
    assert(m->nlabels == 0 || values);
    for (int i = 0; i < m->nlabels; i++)
        assert(values[i] && "label value must not be NULL");
    uint32_t hash = s_hash(values, m->nlabels);
    s_series_t *s = s_find(m, values, hash);
    if (s)
        return s;
    int all_other = m->nlabels > 0;
    for (int i = 0; i < m->nlabels && all_other; i++)
        all_other = strcmp(values[i], "other") == 0;
    if (!all_other && m->nseries - m->has_other >= m->limit) {
        s_inc_overflow(m->name);
        values = others;
        hash = s_hash(others, m->nlabels);
        s = s_find(m, others, hash);
        if (s)
            return s;
        all_other = 1;
    }
    s = s_series_new(m, values, hash);
    if (s && all_other)
        m->has_other = 1;
    return s;
}

static void s_fmt_double(double v, char *buf, size_t size);

/* --- registration --- */

static void s_metric_free(metric_t *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nseries; i++)
        free(m->series[i]);
    free(m->series);
    free(m->name);
    free(m->help);
    free(m->labels);
    free(m->bounds);
    free(m->les);
    free(m);
}

/* Builds a metric from checked arguments; NULL when out of memory. */
static metric_t *s_metric_new(s_type_t type, const char *name, const char *help,
                              char *const *labels, int nlabels, const double *bounds,
                              int nbuckets)
{
    metric_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->type = type;
    m->limit = METRICS_MAX_SERIES;
    m->nlabels = nlabels;
    m->nbuckets = type == S_HISTOGRAM ? nbuckets : 0;
    m->name = strdup(name);
    m->help = strdup(help);
    size_t size = (size_t)nlabels * sizeof(char *);
    for (int i = 0; i < nlabels; i++)
        size += strlen(labels[i]) + 1;
    m->labels = malloc(size ? size : 1);
    m->bounds = malloc(m->nbuckets ? (size_t)m->nbuckets * sizeof(double) : 1);
    m->les = malloc(m->nbuckets ? (size_t)m->nbuckets * sizeof *m->les : 1);
    if (!m->name || !m->help || !m->labels || !m->bounds || !m->les)
        goto out_free;
    char *p = (char *)(m->labels + nlabels);
    for (int i = 0; i < nlabels; i++) {
        m->labels[i] = p;
        p = stpcpy(p, labels[i]) + 1;
    }
    for (int i = 0; i < m->nbuckets; i++) {
        m->bounds[i] = bounds[i];
        s_fmt_double(bounds[i], m->les[i], sizeof m->les[i]);
    }
    if (nlabels == 0 && !s_series_new(m, NULL, s_hash(NULL, 0)))
        goto out_free;
    return m;

out_free:
    s_metric_free(m);
    return NULL;
}

/* Creates the overflow counter if missing; 0, or -1 when out of memory. */
static int s_init(void)
{
    if (s_reg.overflow)
        return 0;
    char label[] = "metric", *labels[1] = {label};
    s_reg.overflow = s_metric_new(S_COUNTER, S_OVERFLOW_NAME, S_OVERFLOW_HELP, labels, 1, NULL, 0);
    if (!s_reg.overflow)
        return -1;
    s_reg.overflow->limit = 1 << 30; /* one series per metric: never overflows itself */
    return 0;
}

static void s_inc_overflow(const char *name)
{
    const char *values[1] = {name};
    metric_t *o = s_reg.overflow;
    uint32_t hash = s_hash(values, 1);
    s_series_t *s = s_find(o, values, hash);
    if (!s)
        s = s_series_new(o, values, hash);
    if (s)
        s->value += 1;
}

/* Asserts that an existing metric has the definition asked for again. */
static void s_check_same(const metric_t *m, s_type_t type, char *const *labels, int nlabels,
                         const double *bounds, int nbuckets)
{
    assert(m->type == type && "metric registered again with another type");
    assert(m->nlabels == nlabels && "metric registered again with other labels");
    for (int i = 0; i < nlabels; i++)
        assert(strcmp(m->labels[i], labels[i]) == 0 && "metric registered again with other labels");
    assert(m->nbuckets == (type == S_HISTOGRAM ? nbuckets : 0) &&
           "metric registered again with other buckets");
    for (int i = 0; i < m->nbuckets; i++)
        assert(m->bounds[i] == bounds[i] && "metric registered again with other buckets");
    (void)m, (void)type, (void)labels, (void)nlabels, (void)bounds, (void)nbuckets;
}

static metric_t *s_register(s_type_t type, const char *name, const char *help, const char *labels,
                            const double *bounds, int nbuckets)
{
    assert(name && help && labels);
    assert(strlen(name) <= 120 && s_is_name(name, strlen(name)) &&
           "metric name must match [a-zA-Z_][a-zA-Z0-9_]*");
    assert(!(name[0] == '_' && name[1] == '_') && "metric names starting __ are reserved");
    assert((type == S_COUNTER) == s_ends_with(name, "_total") &&
           "counter names, and only they, end in _total");
    assert(s_labels_ok(labels, type) &&
           "label names must match [a-zA-Z_][a-zA-Z0-9_]*, differ, not start with __, be at "
           "most 16, and a histogram's may not be le");
    assert(nbuckets >= 0 && (nbuckets == 0 || bounds));
    for (int i = 0; i < nbuckets; i++)
        assert(isfinite(bounds[i]) && (i == 0 || bounds[i] > bounds[i - 1]) &&
               "buckets must be finite and strictly increasing");

    char *copy = strdup(labels), *names[S_MAX_LABELS];
    if (!copy)
        return NULL;
    int nlabels = s_split_labels(copy, names);
    metric_t *m = NULL;
    pthread_mutex_lock(&s_reg.mu);
    if (s_init() != 0)
        goto out_unlock;
    for (int i = -1; i < s_reg.n; i++) {
        metric_t *old = i < 0 ? s_reg.overflow : s_reg.metrics[i];
        if (strcmp(old->name, name) == 0) {
            s_check_same(old, type, names, nlabels, bounds, nbuckets);
            m = old;
            goto out_unlock;
        }
        assert(!s_collides(old, type, name) && "metric's names clash with another metric's");
    }
    if (s_reg.n == s_reg.cap) {
        int cap = s_reg.cap ? s_reg.cap * 2 : 16;
        metric_t **v = realloc(s_reg.metrics, (size_t)cap * sizeof *v);
        if (!v)
            goto out_unlock;
        s_reg.metrics = v;
        s_reg.cap = cap;
    }
    m = s_metric_new(type, name, help, names, nlabels, bounds, nbuckets);
    if (m)
        s_reg.metrics[s_reg.n++] = m;
out_unlock:
    pthread_mutex_unlock(&s_reg.mu);
    free(copy);
    return m;
}

metric_t *metrics_counter(const char *name, const char *help, const char *labels)
{
    return s_register(S_COUNTER, name, help, labels, NULL, 0);
}

metric_t *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return s_register(S_GAUGE, name, help, labels, NULL, 0);
}

metric_t *metrics_histogram(const char *name, const char *help, const char *labels,
                            const double *buckets, int nbuckets)
{
    return s_register(S_HISTOGRAM, name, help, labels, buckets, nbuckets);
}

void metric_set_limit(metric_t *m, int max_series)
{
    assert(max_series >= 1);
    if (!m)
        return;
    pthread_mutex_lock(&s_reg.mu);
    m->limit = max_series;
    pthread_mutex_unlock(&s_reg.mu);
}

/* --- updates --- */

void metric_inc(metric_t *m, const char *const *values, double v)
{
    if (!m)
        return;
    assert(m->type != S_HISTOGRAM && "metric_inc on a histogram");
    assert(isfinite(v) && (m->type == S_GAUGE || v >= 0) && "counters only go up");
    pthread_mutex_lock(&s_reg.mu);
    s_series_t *s = s_series(m, values);
    if (s)
        s->value += v;
    pthread_mutex_unlock(&s_reg.mu);
}

void metric_set(metric_t *m, const char *const *values, double v)
{
    if (!m)
        return;
    assert(m->type == S_GAUGE && "metric_set on a counter or histogram");
    pthread_mutex_lock(&s_reg.mu);
    s_series_t *s = s_series(m, values);
    if (s)
        s->value = v;
    pthread_mutex_unlock(&s_reg.mu);
}

void metric_observe(metric_t *m, const char *const *values, double v)
{
    if (!m)
        return;
    assert(m->type == S_HISTOGRAM && "metric_observe on a counter or gauge");
    assert(!isnan(v) && "observed NaN");
    int b = 0;
    while (b < m->nbuckets && !(v <= m->bounds[b]))
        b++;
    pthread_mutex_lock(&s_reg.mu);
    s_series_t *s = s_series(m, values);
    if (s) {
        s->buckets[b]++;
        s->count++;
        s->sum += v;
    }
    pthread_mutex_unlock(&s_reg.mu);
}

double metric_value(metric_t *m, const char *const *values)
{
    if (!m)
        return 0;
    assert(m->nlabels == 0 || values);
    pthread_mutex_lock(&s_reg.mu);
    s_series_t *s = s_find(m, values, s_hash(values, m->nlabels));
    double v = !s ? 0 : m->type == S_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&s_reg.mu);
    return v;
}

/* --- rendering --- */

typedef struct {
    char *p;
    size_t len, cap;
    int failed; /* out of memory: the text is incomplete */
} s_buf_t;

static int s_reserve(s_buf_t *b, size_t n)
{
    if (b->failed)
        return -1;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void s_put(s_buf_t *b, const char *s, size_t n)
{
    if (s_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void s_puts(s_buf_t *b, const char *s)
{
    s_put(b, s, strlen(s));
}

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms,
 * no surrogates, at most U+10FFFF) at p[0..n), or 0 if there is none. */
static size_t s_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Appends s escaped: backslash and newline always, double quote in label
 * values (quote set); bytes that are not UTF-8 become U+FFFD. */
static void s_put_escaped(s_buf_t *b, const char *s, int quote)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n > 0) {
        size_t run = 0, len;
        while (run < n && p[run] != '\\' && p[run] != '\n' && !(quote && p[run] == '"') &&
               (len = s_utf8_seq(p + run, n - run)) > 0)
            run += len;
        s_put(b, (const char *)p, run);
        p += run;
        n -= run;
        if (n == 0)
            break;
        if (*p == '\\')
            s_puts(b, "\\\\");
        else if (*p == '\n')
            s_puts(b, "\\n");
        else if (*p == '"')
            s_puts(b, "\\\"");
        else
            s_puts(b, "\xef\xbf\xbd");
        p++;
        n--;
    }
}

/* Writes v in decimal; snprintf's cost shows when rendering thousands of
 * bucket counts while holding the registry mutex. */
static void s_fmt_int(int64_t v, char *buf, size_t size)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[n++] = '-';
    size_t k = 0;
    while (n > 0 && k + 1 < size)
        buf[k++] = tmp[--n];
    buf[k] = '\0';
}

/* Formats v as Prometheus parses it: NaN, +Inf, -Inf, integers without an
 * exponent, others in the fewest digits that read back as v. */
static void s_fmt_double(double v, char *buf, size_t size)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        snprintf(buf, size, "0"); /* not "-0" */
    } else if (v == floor(v) && fabs(v) < 9007199254740992.0) { /* 2^53: exact in int64 */
        s_fmt_int((int64_t)v, buf, size);
    } else if (v == floor(v) && fabs(v) < 1e17) {
        snprintf(buf, size, "%.0f", v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, size, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
}

/* Appends {a="x",b="y"[,le="..."]} for s, or nothing without labels or le. */
static void s_put_labels(s_buf_t *b, const metric_t *m, const s_series_t *s, const char *le)
{
    if (m->nlabels == 0 && !le)
        return;
    s_puts(b, "{");
    for (int i = 0; i < m->nlabels; i++) {
        if (i)
            s_puts(b, ",");
        s_puts(b, m->labels[i]);
        s_puts(b, "=\"");
        s_put_escaped(b, s->values[i], 1);
        s_puts(b, "\"");
    }
    if (le) {
        s_puts(b, m->nlabels ? ",le=\"" : "le=\"");
        s_puts(b, le);
        s_puts(b, "\"");
    }
    s_puts(b, "}");
}

/* Appends one sample line: name+suffix, labels, value. */
static void s_put_sample(s_buf_t *b, const metric_t *m, const char *suffix, const s_series_t *s,
                         const char *le, double v)
{
    char num[40];
    s_fmt_double(v, num, sizeof num);
    s_puts(b, m->name);
    s_puts(b, suffix);
    s_put_labels(b, m, s, le);
    s_puts(b, " ");
    s_puts(b, num);
    s_puts(b, "\n");
}

static void s_render_metric(s_buf_t *b, const metric_t *m)
{
    s_puts(b, "# HELP ");
    s_puts(b, m->name);
    s_puts(b, " ");
    s_put_escaped(b, m->help, 0);
    s_puts(b, "\n# TYPE ");
    s_puts(b, m->name);
    s_puts(b, " ");
    s_puts(b, s_type_names[m->type]);
    s_puts(b, "\n");
    for (int i = 0; i < m->nseries; i++) {
        const s_series_t *s = m->series[i];
        if (m->type != S_HISTOGRAM) {
            s_put_sample(b, m, "", s, NULL, s->value);
            continue;
        }
        uint64_t cum = 0;
        for (int k = 0; k < m->nbuckets; k++) {
            cum += s->buckets[k];
            s_put_sample(b, m, "_bucket", s, m->les[k], (double)cum);
        }
        s_put_sample(b, m, "_bucket", s, "+Inf", (double)s->count);
        s_put_sample(b, m, "_sum", s, NULL, s->sum);
        s_put_sample(b, m, "_count", s, NULL, (double)s->count);
    }
}

char *metrics_render(void)
{
    s_buf_t b = {0};
    s_reserve(&b, 0);
    pthread_mutex_lock(&s_reg.mu);
    if (s_init() != 0)
        b.failed = 1;
    for (int i = 0; i < s_reg.n && !b.failed; i++)
        s_render_metric(&b, s_reg.metrics[i]);
    if (!b.failed)
        s_render_metric(&b, s_reg.overflow);
    pthread_mutex_unlock(&s_reg.mu);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

void metrics_reset_all(void)
{
    pthread_mutex_lock(&s_reg.mu);
    for (int i = 0; i < s_reg.n; i++)
        s_metric_free(s_reg.metrics[i]);
    free(s_reg.metrics);
    s_metric_free(s_reg.overflow);
    s_reg.metrics = NULL;
    s_reg.n = s_reg.cap = 0;
    s_reg.overflow = NULL;
    pthread_mutex_unlock(&s_reg.mu);
}
