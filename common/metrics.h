/*
 * metrics.h - Prometheus counters, gauges and histograms in one process-wide
 * registry, rendered as the text exposition format 0.0.4.
 *
 * Hand-written rather than taken from a library: Debian bookworm packages
 * no C client (prometheus-client-c / libprom is not packaged; prometheus-cpp
 * is C++ and its pull module brings its own civetweb server), and what sked
 * needs is small: processes that update metrics from one event-loop thread
 * while a separate scrape thread renders them, a hard bound on the number
 * of series, and a text format that is simple and stable.
 *
 * Model:
 *  - A metric (family) has a name, a help text, a type and a fixed list of
 *    label names, all given at registration; names follow Prometheus
 *    conventions (checked: [a-zA-Z_][a-zA-Z0-9_]*, counters end in _total,
 *    label names do not start with "__", histograms have no "le" label).
 *    Unit suffixes (_seconds, _bytes) are the caller's convention.
 *    Registering a name twice with the same type, labels and buckets returns
 *    the same metric; with anything else, with a malformed name, or with a
 *    name that clashes with another metric's samples (a gauge "x_count"
 *    next to a histogram "x"), it is an assert (API misuse).
 *  - Label values are given at update time, one per label name, in order.
 *    Each distinct combination is a series, created on first update. A
 *    metric without labels has its one series from registration, so it
 *    shows 0 before its first update.
 *  - Bounded cardinality: a metric holds at most METRICS_MAX_SERIES series
 *    (metric_set_limit changes that). Updates for a new combination beyond
 *    it go to one overflow series whose label values are all "other", and
 *    sked_metrics_overflow_total{metric="<name>"} counts them. Label values
 *    longer than METRICS_MAX_VALUE_LEN bytes are cut (at a character
 *    boundary) so that outside input cannot grow memory. Label values should
 *    still come from small known sets (task type yes, trigger id no).
 *  - Rendering sorts nothing: metrics in registration order, series in
 *    creation order, sked_metrics_overflow_total last. Help texts and label
 *    values are escaped, and bytes that are not UTF-8 are shown as U+FFFD
 *    so one bad value cannot make a whole scrape unparseable.
 *
 * Threads: any function may be called from any thread (metrics_serve and
 * metrics_stop from one thread at a time); one mutex guards the registry
 * (updates are a short critical section; rendering holds it while
 * formatting). Metric handles stay valid until metrics_reset_all().
 * A forked child must not touch metrics before it execs: the scrape thread
 * may have held the mutex at the fork.
 * Numbers are printed with the C locale's '.' (sked never calls setlocale).
 *
 * Callers: masters, workers and the gateway register their metrics at
 * start and update them from their loops; the gateway renders them on its
 * own HTTP port, masters and workers through metrics_serve().
 */
#ifndef SKED_METRICS_H
#define SKED_METRICS_H

#include "common/err.h"

/* Series per metric before updates go to the overflow series. */
#define METRICS_MAX_SERIES 256
/* Longest label value kept, in bytes. */
#define METRICS_MAX_VALUE_LEN 128
/* Content-Type of metrics_render()'s text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct metric metric_t;

/* Default histogram buckets for durations in seconds, 1 ms to 1 h. */
#define METRICS_SECONDS_NBUCKETS 18
extern const double metrics_seconds_buckets[METRICS_SECONDS_NBUCKETS];

/* Registers (or finds) a counter; labels is a comma list of label names
 * ("task_type,status") or "" for none; strings are copied. Returns NULL only
 * when out of memory; every update function ignores a NULL metric, so
 * callers need not check. */
metric_t *metrics_counter(const char *name, const char *help, const char *labels);

/* Registers (or finds) a gauge; as metrics_counter. */
metric_t *metrics_gauge(const char *name, const char *help, const char *labels);

/* Registers (or finds) a histogram with nbuckets finite, strictly increasing
 * upper bounds (copied; +Inf is implicit; 0 buckets means +Inf only); as
 * metrics_counter. Durations are observed in seconds. */
metric_t *metrics_histogram(const char *name, const char *help, const char *labels,
                            const double *buckets, int nbuckets);

/* Sets the most series m may hold (>= 1) before overflowing; series already
 * there stay. Default METRICS_MAX_SERIES. */
void metric_set_limit(metric_t *m, int max_series);

/*
 * Updates. values holds one string per label name, in registration order
 * (borrowed; copied when a series is created), or NULL for a metric without
 * labels. None can fail: if a new series cannot be allocated the update is
 * dropped.
 */

/* Adds v to a counter (v finite and >= 0) or a gauge (any finite v). */
void metric_inc(metric_t *m, const char *const *values, double v);

/* Sets a gauge to v (NaN and infinities allowed). */
void metric_set(metric_t *m, const char *const *values, double v);

/* Records v (not NaN) in a histogram. */
void metric_observe(metric_t *m, const char *const *values, double v);

/* Returns the current value of a counter's or gauge's series, the count of a
 * histogram's series, or 0 if the series does not exist. For tests and for
 * code that reports what it exports; does not create the series. */
double metric_value(metric_t *m, const char *const *values);

/* Returns every metric in the text exposition format 0.0.4, malloc'd (the
 * caller frees it), or NULL when out of memory. */
char *metrics_render(void);

/* Frees every metric and series; handles obtained before are invalid after.
 * For tests and for a clean exit (after metrics_stop()). Can't fail. */
void metrics_reset_all(void);

/*
 * Scrape server (common/metrics_http.c, on common/http.h's h2o server).
 * Masters and workers use it; the gateway serves metrics_render() on its
 * own port instead. Do not use it in a process that runs another h2o
 * server on a different thread.
 */

/* Starts a thread serving GET (and HEAD) /metrics on addr, "host:port"
 * (port 0 picks a free port, see metrics_serve_port); other paths get 404,
 * other methods on /metrics 405. Returns 0 once it listens, or a negative
 * ERR_* code and fills err: ERR_INVALID for an address that does not parse
 * or resolve, ERR_SYS if it cannot be bound or the thread cannot start.
 * Only one server at a time:
 * calling it while one runs is an assert. */
int metrics_serve(const char *addr, err_t *err);

/* The bound TCP port of the running scrape server, 0 if none. Can't fail. */
int metrics_serve_port(void);

/* Stops the scrape server (in-flight scrapes finish) and joins its thread;
 * returns within about 200 ms unless a scrape is in flight. Does nothing if
 * none runs. Can't fail. */
void metrics_stop(void);

#endif
