/*
 * test_metrics.c - the Prometheus registry: exact rendering of each type,
 * escaping, bucket cumulativity, overflow, reset, and the scrape server.
 *
 * metrics_sample renders a registry shaped like sked's and, when
 * SKED_METRICS_SAMPLE names a file, writes it there for
 * tests/integration/test_metrics_format.py to parse with a real parser.
 */
#include "tests/unit/test.h"

#include "common/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define OVERFLOW_FAMILY                                                                      \
    "# HELP sked_metrics_overflow_total Updates that went to a metric's overflow series "    \
    "(label values \"other\") because it already had its maximum number of series.\n"        \
    "# TYPE sked_metrics_overflow_total counter\n"

#define V(...) ((const char *const[]){__VA_ARGS__})

static void check_render(const char *want)
{
    char *got = metrics_render();
    CHECK_STR(got, want);
    free(got);
}

/* Number of lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            n++;
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return n;
}

TEST(metrics_empty)
{
    metrics_reset_all();
    check_render(OVERFLOW_FAMILY);
    metrics_reset_all();
}

TEST(metrics_counter_render)
{
    metrics_reset_all();
    metric_t *plain = metrics_counter("sked_fires_total", "Fires claimed.", "");
    metric_t *jobs =
        metrics_counter("sked_jobs_finished_total", "Jobs finished.", "task_type,status");
    metric_inc(plain, NULL, 1);
    metric_inc(plain, NULL, 2);
    metric_inc(jobs, V("noop", "succeeded"), 1);
    metric_inc(jobs, V("echo", "failed"), 1);
    metric_inc(jobs, V("noop", "succeeded"), 1);
    metric_inc(jobs, V("noop", "failed"), 0.5);
    check_render("# HELP sked_fires_total Fires claimed.\n"
                 "# TYPE sked_fires_total counter\n"
                 "sked_fires_total 3\n"
                 "# HELP sked_jobs_finished_total Jobs finished.\n"
                 "# TYPE sked_jobs_finished_total counter\n"
                 "sked_jobs_finished_total{task_type=\"noop\",status=\"succeeded\"} 2\n"
                 "sked_jobs_finished_total{task_type=\"echo\",status=\"failed\"} 1\n"
                 "sked_jobs_finished_total{task_type=\"noop\",status=\"failed\"} 0.5\n"
                 OVERFLOW_FAMILY);
    CHECK(metric_value(plain, NULL) == 3);
    CHECK(metric_value(jobs, V("noop", "succeeded")) == 2);
    CHECK(metric_value(jobs, V("sleep", "succeeded")) == 0);
    metrics_reset_all();
}

TEST(metrics_counter_unlabelled_starts_at_zero)
{
    metrics_reset_all();
    metrics_counter("sked_lost_jobs_total", "Jobs lost.", "");
    metrics_counter("sked_retries_total", "Retries.", "task_type");
    check_render("# HELP sked_lost_jobs_total Jobs lost.\n"
                 "# TYPE sked_lost_jobs_total counter\n"
                 "sked_lost_jobs_total 0\n"
                 "# HELP sked_retries_total Retries.\n"
                 "# TYPE sked_retries_total counter\n" OVERFLOW_FAMILY);
    metrics_reset_all();
}

TEST(metrics_gauge_render)
{
    metrics_reset_all();
    metric_t *depth = metrics_gauge("sked_queue_depth", "Due jobs not dispatched.", "");
    metric_t *slots = metrics_gauge("sked_worker_slots", "Worker slots.", "state");
    metric_set(depth, NULL, 7);
    metric_inc(depth, NULL, -10);
    metric_set(slots, V("free"), 0.25);
    metric_set(slots, V("used"), NAN);
    metric_set(slots, V("big"), INFINITY);
    metric_set(slots, V("small"), -INFINITY);
    metric_set(slots, V("third"), 1.0 / 3);
    metric_set(slots, V("huge"), 12345678901234567.0);
    metric_set(slots, V("huger"), 1e20);
    metric_set(slots, V("tiny"), 1e-9);
    metric_set(slots, V("negzero"), -0.0);
    check_render("# HELP sked_queue_depth Due jobs not dispatched.\n"
                 "# TYPE sked_queue_depth gauge\n"
                 "sked_queue_depth -3\n"
                 "# HELP sked_worker_slots Worker slots.\n"
                 "# TYPE sked_worker_slots gauge\n"
                 "sked_worker_slots{state=\"free\"} 0.25\n"
                 "sked_worker_slots{state=\"used\"} NaN\n"
                 "sked_worker_slots{state=\"big\"} +Inf\n"
                 "sked_worker_slots{state=\"small\"} -Inf\n"
                 "sked_worker_slots{state=\"third\"} 0.3333333333333333\n"
                 "sked_worker_slots{state=\"huge\"} 12345678901234568\n"
                 "sked_worker_slots{state=\"huger\"} 1e+20\n"
                 "sked_worker_slots{state=\"tiny\"} 1e-09\n"
                 "sked_worker_slots{state=\"negzero\"} 0\n" OVERFLOW_FAMILY);
    metrics_reset_all();
}

TEST(metrics_histogram_render)
{
    metrics_reset_all();
    const double b[] = {0.005, 0.1, 1, 2.5};
    metric_t *lag = metrics_histogram("sked_fire_lag_seconds", "Fire lag.", "", b, 4);
    metric_t *dur =
        metrics_histogram("sked_job_duration_seconds", "Job duration.", "task_type", b, 4);
    metric_observe(lag, NULL, 0.001);
    metric_observe(lag, NULL, 0.1); /* a bound is inclusive: le="0.1" */
    metric_observe(lag, NULL, 0.5);
    metric_observe(lag, NULL, 7);   /* above every bound: +Inf only */
    metric_observe(lag, NULL, -0.5); /* early (clock skew): lowest bucket */
    metric_observe(dur, V("sleep"), 2);
    check_render("# HELP sked_fire_lag_seconds Fire lag.\n"
                 "# TYPE sked_fire_lag_seconds histogram\n"
                 "sked_fire_lag_seconds_bucket{le=\"0.005\"} 2\n"
                 "sked_fire_lag_seconds_bucket{le=\"0.1\"} 3\n"
                 "sked_fire_lag_seconds_bucket{le=\"1\"} 4\n"
                 "sked_fire_lag_seconds_bucket{le=\"2.5\"} 4\n"
                 "sked_fire_lag_seconds_bucket{le=\"+Inf\"} 5\n"
                 "sked_fire_lag_seconds_sum 7.101\n"
                 "sked_fire_lag_seconds_count 5\n"
                 "# HELP sked_job_duration_seconds Job duration.\n"
                 "# TYPE sked_job_duration_seconds histogram\n"
                 "sked_job_duration_seconds_bucket{task_type=\"sleep\",le=\"0.005\"} 0\n"
                 "sked_job_duration_seconds_bucket{task_type=\"sleep\",le=\"0.1\"} 0\n"
                 "sked_job_duration_seconds_bucket{task_type=\"sleep\",le=\"1\"} 0\n"
                 "sked_job_duration_seconds_bucket{task_type=\"sleep\",le=\"2.5\"} 1\n"
                 "sked_job_duration_seconds_bucket{task_type=\"sleep\",le=\"+Inf\"} 1\n"
                 "sked_job_duration_seconds_sum{task_type=\"sleep\"} 2\n"
                 "sked_job_duration_seconds_count{task_type=\"sleep\"} 1\n" OVERFLOW_FAMILY);
    CHECK(metric_value(lag, NULL) == 5);
    metrics_reset_all();
}

TEST(metrics_histogram_cumulative)
{
    metrics_reset_all();
    metric_t *h = metrics_histogram("sked_store_op_seconds", "Store ops.", "op",
                                    metrics_seconds_buckets, METRICS_SECONDS_NBUCKETS);
    for (int i = 0; i < 1000; i++)
        metric_observe(h, V("find"), (double)(i % 97) * 0.05);
    char *text = metrics_render();
    CHECK(text != NULL);
    /* every bucket line, in order: counts never decrease, +Inf equals _count */
    long long prev = -1, last = -1;
    int lines = 0;
    for (const char *p = text; p && (p = strstr(p, "sked_store_op_seconds_bucket{")); p++) {
        const char *sp = strchr(p, ' ');
        long long n = strtoll(sp + 1, NULL, 10);
        CHECK(n >= prev);
        prev = last = n;
        lines++;
    }
    CHECK_INT(lines, METRICS_SECONDS_NBUCKETS + 1);
    CHECK_INT(last, 1000);
    CHECK(strstr(text, "sked_store_op_seconds_bucket{op=\"find\",le=\"+Inf\"} 1000\n") != NULL);
    CHECK(strstr(text, "sked_store_op_seconds_count{op=\"find\"} 1000\n") != NULL);
    /* 0, 0.05, ..., 0.25: 6 values of every 97 are <= 0.25 */
    CHECK(strstr(text, "sked_store_op_seconds_bucket{op=\"find\",le=\"0.25\"} 66\n") != NULL);
    free(text);
    metrics_reset_all();
}

TEST(metrics_histogram_no_buckets)
{
    metrics_reset_all();
    metric_t *h = metrics_histogram("sked_x_seconds", "X.", "", NULL, 0);
    metric_observe(h, NULL, 1.5);
    check_render("# HELP sked_x_seconds X.\n"
                 "# TYPE sked_x_seconds histogram\n"
                 "sked_x_seconds_bucket{le=\"+Inf\"} 1\n"
                 "sked_x_seconds_sum 1.5\n"
                 "sked_x_seconds_count 1\n" OVERFLOW_FAMILY);
    metrics_reset_all();
}

TEST(metrics_escaping)
{
    metrics_reset_all();
    metric_t *c = metrics_counter("sked_escape_total",
                                  "Help with \\ backslash,\nnewline and \"quotes\".", "v");
    metric_inc(c, V("a\\b"), 1);
    metric_inc(c, V("say \"hi\""), 1);
    metric_inc(c, V("two\nlines"), 1);
    metric_inc(c, V("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), 1); /* UTF-8 stays */
    metric_inc(c, V("bad\xff\xc3(\xed\xa0\x80!"), 1);                /* not UTF-8 */
    metric_inc(c, V(""), 1);
    check_render("# HELP sked_escape_total Help with \\\\ backslash,\\nnewline and \"quotes\".\n"
                 "# TYPE sked_escape_total counter\n"
                 "sked_escape_total{v=\"a\\\\b\"} 1\n"
                 "sked_escape_total{v=\"say \\\"hi\\\"\"} 1\n"
                 "sked_escape_total{v=\"two\\nlines\"} 1\n"
                 "sked_escape_total{v=\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"} 1\n"
                 "sked_escape_total{v=\"bad\xef\xbf\xbd\xef\xbf\xbd("
                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!\"} 1\n"
                 "sked_escape_total{v=\"\"} 1\n" OVERFLOW_FAMILY);
    metrics_reset_all();
}

TEST(metrics_long_value_is_cut)
{
    metrics_reset_all();
    metric_t *c = metrics_counter("sked_long_total", "Long.", "v");
    char a[400], b[400];
    memset(a, 'x', sizeof a - 1);
    a[sizeof a - 1] = '\0';
    memcpy(b, a, sizeof b);
    b[300] = 'y'; /* differs only after the cut: the same series */
    metric_inc(c, V(a), 1);
    metric_inc(c, V(b), 1);
    /* a 2-byte character across the cut is dropped whole */
    char u[200];
    memset(u, 'z', sizeof u - 1);
    u[sizeof u - 1] = '\0';
    u[METRICS_MAX_VALUE_LEN - 1] = '\xc3';
    u[METRICS_MAX_VALUE_LEN] = '\xa9';
    metric_inc(c, V(u), 1);
    char *text = metrics_render();
    char want[600];
    snprintf(want, sizeof want, "sked_long_total{v=\"%.*s\"} 2\n", METRICS_MAX_VALUE_LEN, a);
    CHECK(strstr(text, want) != NULL);
    snprintf(want, sizeof want, "sked_long_total{v=\"%.*s\"} 1\n", METRICS_MAX_VALUE_LEN - 1, u);
    CHECK(strstr(text, want) != NULL);
    CHECK_INT(count_lines(text, "sked_long_total{"), 2);
    CHECK(metric_value(c, V(b)) == 2);
    free(text);
    metrics_reset_all();
}

TEST(metrics_overflow)
{
    metrics_reset_all();
    metric_t *c = metrics_counter("sked_http_requests_total", "Requests.", "route,status");
    metric_set_limit(c, 2);
    metric_inc(c, V("/a", "200"), 1);
    metric_inc(c, V("/b", "200"), 1);
    metric_inc(c, V("/c", "200"), 1); /* full: overflow */
    metric_inc(c, V("/d", "404"), 3); /* full: overflow */
    metric_inc(c, V("/a", "200"), 1); /* existing series still count */
    metric_inc(c, V("other", "other"), 1); /* the overflow series itself */
    check_render("# HELP sked_http_requests_total Requests.\n"
                 "# TYPE sked_http_requests_total counter\n"
                 "sked_http_requests_total{route=\"/a\",status=\"200\"} 2\n"
                 "sked_http_requests_total{route=\"/b\",status=\"200\"} 1\n"
                 "sked_http_requests_total{route=\"other\",status=\"other\"} 5\n" OVERFLOW_FAMILY
                 "sked_metrics_overflow_total{metric=\"sked_http_requests_total\"} 2\n");
    metrics_reset_all();
}

TEST(metrics_overflow_default_limit)
{
    metrics_reset_all();
    metric_t *g = metrics_gauge("sked_slots", "Slots.", "task_type");
    metric_t *h = metrics_histogram("sked_dur_seconds", "Durations.", "task_type",
                                    metrics_seconds_buckets, METRICS_SECONDS_NBUCKETS);
    char name[32];
    for (int i = 0; i < METRICS_MAX_SERIES + 44; i++) {
        snprintf(name, sizeof name, "t%d", i);
        metric_set(g, V(name), i);
        metric_observe(h, V(name), 0.2);
    }
    char *text = metrics_render();
    CHECK_INT(count_lines(text, "sked_slots{"), METRICS_MAX_SERIES + 1);
    CHECK(strstr(text, "sked_slots{task_type=\"t255\"} 255\n") != NULL);
    CHECK(strstr(text, "sked_slots{task_type=\"t256\"}") == NULL);
    CHECK(strstr(text, "sked_slots{task_type=\"other\"} 299\n") != NULL); /* last value set */
    CHECK_INT(count_lines(text, "sked_dur_seconds_count{"), METRICS_MAX_SERIES + 1);
    CHECK(strstr(text, "sked_dur_seconds_count{task_type=\"other\"} 44\n") != NULL);
    CHECK(strstr(text, "sked_metrics_overflow_total{metric=\"sked_slots\"} 44\n") != NULL);
    CHECK(strstr(text, "sked_metrics_overflow_total{metric=\"sked_dur_seconds\"} 44\n") != NULL);
    free(text);
    metrics_reset_all();
}

TEST(metrics_register_again)
{
    metrics_reset_all();
    metric_t *a = metrics_counter("sked_a_total", "A.", "x,y");
    metric_t *b = metrics_counter("sked_a_total", "A again.", "x,y");
    CHECK(a != NULL);
    CHECK(a == b);
    const double bk[] = {1, 2};
    metric_t *h = metrics_histogram("sked_h_seconds", "H.", "", bk, 2);
    CHECK(h == metrics_histogram("sked_h_seconds", "H.", "", bk, 2));
    metric_inc(a, V("1", "2"), 1);
    metric_inc(b, V("1", "2"), 1);
    CHECK(metric_value(a, V("1", "2")) == 2);
    metrics_reset_all();
}

TEST(metrics_reset)
{
    metrics_reset_all();
    metric_t *c = metrics_counter("sked_r_total", "R.", "k");
    metric_set_limit(c, 1);
    metric_inc(c, V("a"), 1);
    metric_inc(c, V("b"), 1);
    metrics_reset_all();
    check_render(OVERFLOW_FAMILY);
    c = metrics_counter("sked_r_total", "R.", "k");
    metric_inc(c, V("a"), 1);
    check_render("# HELP sked_r_total R.\n"
                 "# TYPE sked_r_total counter\n"
                 "sked_r_total{k=\"a\"} 1\n" OVERFLOW_FAMILY);
    metrics_reset_all();
    metrics_reset_all(); /* twice is fine */
}

TEST(metrics_null_metric_is_ignored)
{
    metric_inc(NULL, NULL, 1);
    metric_set(NULL, NULL, 1);
    metric_observe(NULL, NULL, 1);
    CHECK(metric_value(NULL, NULL) == 0);
}

/* Runs misuse(arg) in a child; whether it died of an assert (SIGABRT). */
static int aborts(void (*misuse)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2); /* the assert message */
        metrics_reset_all();
        misuse();
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 0;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void bad_name(void) { metrics_gauge("sked-dashes", "X.", ""); }
static void bad_first_char(void) { metrics_gauge("1sked", "X.", ""); }
static void counter_without_total(void) { metrics_counter("sked_jobs", "X.", ""); }
static void gauge_with_total(void) { metrics_gauge("sked_jobs_total", "X.", ""); }
static void bad_label(void) { metrics_gauge("sked_g", "X.", "task type"); }
static void empty_label(void) { metrics_gauge("sked_g", "X.", "a,,b"); }
static void reserved_label(void) { metrics_gauge("sked_g", "X.", "__name"); }
static void duplicate_label(void) { metrics_gauge("sked_g", "X.", "a,b,a"); }
static void histogram_le(void) { metrics_histogram("sked_h_seconds", "X.", "le", NULL, 0); }
static void buckets_not_increasing(void)
{
    const double b[] = {1, 1};
    metrics_histogram("sked_h_seconds", "X.", "", b, 2);
}
static void buckets_infinite(void)
{
    const double b[] = {1, INFINITY};
    metrics_histogram("sked_h_seconds", "X.", "", b, 2);
}
static void again_other_labels(void)
{
    metrics_gauge("sked_g", "X.", "a");
    metrics_gauge("sked_g", "X.", "b");
}
static void again_other_type(void)
{
    metrics_gauge("sked_g", "X.", "");
    metrics_histogram("sked_g", "X.", "", NULL, 0);
}
static void clash_histogram_samples(void)
{
    metrics_histogram("sked_h", "X.", "", NULL, 0);
    metrics_gauge("sked_h_count", "X.", "");
}
static void clash_counter_family(void)
{
    metrics_counter("sked_jobs_total", "X.", "");
    metrics_gauge("sked_jobs", "X.", "");
}
static void counter_goes_down(void)
{
    metric_inc(metrics_counter("sked_c_total", "X.", ""), NULL, -1);
}
static void set_on_counter(void) { metric_set(metrics_counter("sked_c_total", "X.", ""), NULL, 1); }
static void observe_on_gauge(void) { metric_observe(metrics_gauge("sked_g", "X.", ""), NULL, 1); }
static void observe_nan(void)
{
    metric_observe(metrics_histogram("sked_h", "X.", "", NULL, 0), NULL, NAN);
}
static void missing_values(void)
{
    metric_inc(metrics_counter("sked_c_total", "X.", "a"), NULL, 1);
}
static void null_value(void)
{
    metric_inc(metrics_counter("sked_c_total", "X.", "a,b"), V("x", NULL), 1);
}
static void fine(void) { metric_inc(metrics_counter("sked_c_total", "X.", "a"), V("x"), 1); }

TEST(metrics_misuse_asserts)
{
    CHECK(!aborts(fine));
    CHECK(aborts(bad_name));
    CHECK(aborts(bad_first_char));
    CHECK(aborts(counter_without_total));
    CHECK(aborts(gauge_with_total));
    CHECK(aborts(bad_label));
    CHECK(aborts(empty_label));
    CHECK(aborts(reserved_label));
    CHECK(aborts(duplicate_label));
    CHECK(aborts(histogram_le));
    CHECK(aborts(buckets_not_increasing));
    CHECK(aborts(buckets_infinite));
    CHECK(aborts(again_other_labels));
    CHECK(aborts(again_other_type));
    CHECK(aborts(clash_histogram_samples));
    CHECK(aborts(clash_counter_family));
    CHECK(aborts(counter_goes_down));
    CHECK(aborts(set_on_counter));
    CHECK(aborts(observe_on_gauge));
    CHECK(aborts(observe_nan));
    CHECK(aborts(missing_values));
    CHECK(aborts(null_value));
}

static void *render_loop(void *arg)
{
    int *ok = arg;
    for (int i = 0; i < 100; i++) {
        char *text = metrics_render();
        *ok &= text != NULL && strstr(text, "# TYPE sked_metrics_overflow_total counter\n") != NULL;
        free(text);
    }
    return NULL;
}

TEST(metrics_render_while_updating)
{
    metrics_reset_all();
    metric_t *c = metrics_counter("sked_busy_total", "Busy.", "k");
    metric_t *h = metrics_histogram("sked_busy_seconds", "Busy.", "k", metrics_seconds_buckets,
                                    METRICS_SECONDS_NBUCKETS);
    int ok = 1;
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, render_loop, &ok), 0);
    char k[16];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "k%d", i % 300); /* overflows too */
        metric_inc(c, V(k), 1);
        metric_observe(h, V(k), i * 0.001);
        if (i % 1000 == 0) /* registration while rendering */
            metrics_gauge("sked_busy_gauge", "Busy.", "");
    }
    pthread_join(t, NULL);
    CHECK(ok);
    CHECK(metric_value(c, V("k0")) == 67);
    CHECK(metric_value(c, V("other")) == 20000 - (200 * 67 + 56 * 66));
    CHECK(metric_value(h, V("other")) == 20000 - (200 * 67 + 56 * 66));
    metrics_reset_all();
}

/* Sends request to 127.0.0.1:port and returns the whole answer, malloc'd. */
static char *http_get(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t len = strlen(request), cap = 65536, n = 0;
    if (write(fd, request, len) != (ssize_t)len) {
        close(fd);
        return NULL;
    }
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && n + 1 < cap && (r = read(fd, buf + n, cap - n - 1)) > 0)
        n += (size_t)r;
    close(fd);
    if (buf)
        buf[n] = '\0';
    return buf;
}

TEST(metrics_serve)
{
    metrics_reset_all();
    metric_t *c = metrics_counter("sked_served_total", "Served.", "");
    metric_inc(c, NULL, 42);
    err_t err = {0};
    CHECK_INT(metrics_serve_port(), 0);
    CHECK_INT(metrics_serve("127.0.0.1:0", &err), 0);
    int port = metrics_serve_port();
    CHECK(port > 0);

    char *r = http_get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(r && strncmp(r, "HTTP/1.1 200", 12) == 0);
    CHECK(r && strstr(r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    CHECK(r && strstr(r, "\r\n\r\n# HELP sked_served_total Served.\n"));
    CHECK(r && strstr(r, "\nsked_served_total 42\n"));
    free(r);

    r = http_get(port, "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(r && strncmp(r, "HTTP/1.1 404", 12) == 0);
    free(r);
    r = http_get(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                       "Connection: close\r\n\r\n");
    CHECK(r && strncmp(r, "HTTP/1.1 405", 12) == 0);
    CHECK(r && strstr(r, "\r\nAllow: GET, HEAD\r\n"));
    free(r);

    metrics_stop();
    CHECK_INT(metrics_serve_port(), 0);
    CHECK(http_get(port, "GET /metrics HTTP/1.0\r\n\r\n") == NULL); /* nothing listens */
    metrics_stop(); /* twice is fine */

    /* it can start again after a stop */
    CHECK_INT(metrics_serve("127.0.0.1:0", &err), 0);
    r = http_get(metrics_serve_port(), "GET /metrics HTTP/1.0\r\n\r\n");
    CHECK(r && strstr(r, "\nsked_served_total 42\n"));
    free(r);
    metrics_stop();
    metrics_reset_all();
}

TEST(metrics_serve_errors)
{
    err_t err = {0};
    CHECK_INT(metrics_serve("no-port", &err), ERR_INVALID);
    CHECK(strstr(err.msg, "'no-port'") != NULL);
    CHECK_INT(metrics_serve_port(), 0);

    /* a port already taken */
    CHECK_INT(metrics_serve("127.0.0.1:0", &err), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_serve_port());
    metrics_stop();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(addr + 10))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0);
    memset(&err, 0, sizeof err);
    CHECK_INT(metrics_serve(addr, &err), ERR_SYS);
    CHECK(strstr(err.msg, addr) != NULL);
    close(fd);
    metrics_reset_all();
}

/* A registry shaped like sked's, with every kind of sample and value. */
static void build_sample(void)
{
    metric_t *jobs = metrics_counter("sked_jobs_finished_total",
                                     "Jobs finished, by task type and status.", "task_type,status");
    metric_inc(jobs, V("noop", "succeeded"), 41);
    metric_inc(jobs, V("echo", "failed"), 2);
    metric_inc(jobs, V("sleep", "timed_out"), 1);

    metric_t *skipped =
        metrics_counter("sked_fires_skipped_total", "Fires skipped, by reason.", "reason");
    metric_inc(skipped, V("overlap"), 3);

    metric_t *lost =
        metrics_counter("sked_jobs_lost_total", "Jobs whose worker stopped heartbeating.", "");
    (void)lost; /* stays 0 */

    metric_t *depth = metrics_gauge("sked_queue_depth", "Jobs due and not yet dispatched.", "");
    metric_set(depth, NULL, 12);

    metric_t *slots =
        metrics_gauge("sked_worker_slots", "Worker slots by state.", "task_type,state");
    metric_set(slots, V("noop", "free"), 60);
    metric_set(slots, V("noop", "used"), 4);
    metric_set(slots, V("sleep", "ratio"), 0.125);
    metric_set(slots, V("sleep", "unknown"), NAN);
    metric_set(slots, V("sleep", "unbounded"), INFINITY);
    metric_set(slots, V("sleep", "negative"), -2.5);

    const double b[] = {0.001, 0.01, 0.1, 1, 10};
    metric_t *lag = metrics_histogram("sked_fire_lag_seconds",
                                      "Delay from scheduled_for to worker start.", "", b, 5);
    const double lags[] = {0.0004, 0.002, 0.003, 0.05, 0.5, 2, 20};
    for (size_t i = 0; i < sizeof lags / sizeof lags[0]; i++)
        metric_observe(lag, NULL, lags[i]);

    metric_t *dur =
        metrics_histogram("sked_job_duration_seconds", "Job duration by task type.", "task_type",
                          metrics_seconds_buckets, METRICS_SECONDS_NBUCKETS);
    metric_observe(dur, V("noop"), 0.0005);
    metric_observe(dur, V("sleep"), 1.5);
    metric_observe(dur, V("sleep"), 4000);

    metric_t *http =
        metrics_counter("sked_http_requests_total",
                        "HTTP requests by route, method and status.\nRoutes are templates, "
                        "never raw paths (\\ and newline in help are escaped).",
                        "route,method,status");
    metric_set_limit(http, 3);
    metric_inc(http, V("/api/scheduler/triggers/{id}", "GET", "200"), 10);
    metric_inc(http, V("/a \"quoted\" \\ back\\slash\nnewline", "GET", "404"), 1);
    metric_inc(http, V("caf\xc3\xa9 bad\xff", "GET", "200"), 1);
    metric_inc(http, V("/x", "GET", "200"), 1); /* over the limit */
    metric_inc(http, V("/y", "PUT", "500"), 1); /* over the limit */
}

TEST(metrics_sample)
{
    metrics_reset_all();
    build_sample();
    char *text = metrics_render();
    CHECK(text != NULL);
    CHECK(text && strstr(text, "sked_metrics_overflow_total{metric=\"sked_http_requests_total\"} "
                               "2\n"));
    CHECK(text && strstr(text, "sked_http_requests_total{route=\"other\",method=\"other\","
                               "status=\"other\"} 2\n"));
    const char *path = getenv("SKED_METRICS_SAMPLE");
    if (text && path && *path) {
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (f) {
            CHECK(fputs(text, f) >= 0);
            CHECK(fclose(f) == 0);
        }
    }
    free(text);
    metrics_reset_all();
}
