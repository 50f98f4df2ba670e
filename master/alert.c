/*
 * alert.c - failure and performance alerts POSTed as JSON to a webhook
 * (SKED_ALERT_URL), without ever blocking the master loop.
 *
 * Events: job_failed (a job ended failed, timed_out or lost with no retry
 * left), fire_lag_high (a fire started more than SKED_ALERT_LAG_MS after its
 * time; at most one a minute) and, when SKED_ALERT_EVENTS lists it,
 * fire_skipped (a fire skipped by the overlap policy). docs/OBSERVABILITY.md
 * has the payloads.
 *
 * Invariants:
 * - Nothing here waits. Transfers run on one curl multi handle driven by
 *   the master loop: alert_pollitems() adds curl's sockets to its zmq_poll,
 *   alert_next_ms() bounds its wait by curl's timeout and the next retry,
 *   alert_tick() calls curl_multi_perform() and harvests what finished.
 * - At most ALERT_QUEUE_MAX events are kept (waiting or in flight); one more
 *   is dropped and counted. At most ALERT_INFLIGHT transfers run at once,
 *   each bounded by ALERT_TIMEOUT_MS, so a webhook that hangs only delays
 *   alerts.
 * - A delivery that fails (transport error or a non-2xx answer) is retried
 *   after 0.5, 1, 2 s; after ALERT_TRIES attempts the event is given up
 *   (logged and counted). Events are delivered at least once per master
 *   that records the failure, not exactly once.
 *
 * Called by main.c (lifecycle, loop), dispatch.c (job_failed, fire lag) and
 * sched.c (fire_skipped), all on the master thread.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"

#include <curl/curl.h>
#include <string.h>
#include <sys/select.h>

enum {
    ALERT_QUEUE_MAX = 256,   /* events kept, waiting or in flight */
    ALERT_INFLIGHT = 4,      /* transfers at once */
    ALERT_TRIES = 4,         /* delivery attempts per event */
    ALERT_BACKOFF_MS = 500,  /* before the first retry; doubles */
    ALERT_CONNECT_MS = 3000, /* connect timeout of a delivery */
    ALERT_TIMEOUT_MS = 10000, /* whole-transfer timeout of a delivery */
    LAG_ALERT_PERIOD_MS = 60000,
};

enum { EV_JOB_FAILED = 1, EV_FIRE_LAG = 2, EV_FIRE_SKIPPED = 4 };

typedef struct {
    char *body;
    char kind[24];
    int tries;    /* delivery attempts made */
    int64_t due;  /* monotonic ms of the next attempt */
    CURL *easy;   /* set while in flight */
    char errbuf[CURL_ERROR_SIZE];
} event_t;

struct alert {
    const config_t *cfg;
    CURLM *multi;
    struct curl_slist *headers;
    int events; /* EV_* enabled */
    event_t *q[ALERT_QUEUE_MAX];
    int n, inflight;
    int64_t last_lag_alert; /* monotonic ms, 0 = never */
};

/* Adds "Name: value" items separated by newlines, ';' or a literal "\n". */
static int s_parse_headers(alert_t *a, const char *spec, err_t *err)
{
    char buf[sizeof a->cfg->alert_headers];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *p = buf; (p = strstr(p, "\\n"));)
        memcpy(p, ";\n", 2);
    for (char *save = NULL, *h = strtok_r(buf, ";\r\n", &save); h;
         h = strtok_r(NULL, ";\r\n", &save)) {
        while (*h == ' ' || *h == '\t')
            h++;
        if (!*h)
            continue;
        char *colon = strchr(h, ':');
        if (!colon || colon == h || strcspn(h, " \t") < (size_t)(colon - h))
            return err_set(err, ERR_INVALID,
                           "invalid SKED_ALERT_HEADERS item '%s': use 'Name: value'", h);
        struct curl_slist *l = curl_slist_append(a->headers, h);
        if (!l)
            return err_set(err, ERR_SYS, "cannot set alert headers: out of memory");
        a->headers = l;
    }
    return 0;
}

static int s_parse_events(alert_t *a, const char *list, err_t *err)
{
    char buf[sizeof a->cfg->alert_events];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *e = strtok_r(buf, ", ", &save); e; e = strtok_r(NULL, ", ", &save)) {
        if (strcmp(e, "job_failed") == 0)
            a->events |= EV_JOB_FAILED;
        else if (strcmp(e, "fire_lag_high") == 0)
            a->events |= EV_FIRE_LAG;
        else if (strcmp(e, "fire_skipped") == 0)
            a->events |= EV_FIRE_SKIPPED;
        else
            return err_set(err, ERR_INVALID,
                           "invalid SKED_ALERT_EVENTS item '%s': use job_failed, fire_lag_high "
                           "or fire_skipped",
                           e);
    }
    return 0;
}

alert_t *alert_new(const config_t *cfg, err_t *err)
{
    if (strncmp(cfg->alert_url, "http://", 7) != 0 && strncmp(cfg->alert_url, "https://", 8) != 0) {
        err_set(err, ERR_INVALID, "invalid SKED_ALERT_URL '%s': use an http or https URL",
                cfg->alert_url);
        return NULL;
    }
    alert_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_SYS, "cannot set up alerts: out of memory");
        return NULL;
    }
    a->cfg = cfg;
    a->headers = curl_slist_append(NULL, "Content-Type: application/json");
    a->multi = curl_multi_init();
    if (!a->headers || !a->multi) {
        err_set(err, ERR_SYS, "cannot set up alerts: out of memory");
        alert_destroy(&a);
        return NULL;
    }
    if (s_parse_headers(a, cfg->alert_headers, err) < 0 ||
        s_parse_events(a, cfg->alert_events, err) < 0) {
        alert_destroy(&a);
        return NULL;
    }
    return a;
}

static void s_event_free(alert_t *a, event_t *e)
{
    if (e->easy) {
        curl_multi_remove_handle(a->multi, e->easy);
        curl_easy_cleanup(e->easy);
        a->inflight--;
    }
    free(e->body);
    free(e);
}

void alert_destroy(alert_t **self_p)
{
    alert_t *a = *self_p;
    if (!a)
        return;
    if (a->n)
        log_warn("alerts not delivered at exit", "count=%d", a->n);
    for (int i = 0; i < a->n; i++)
        s_event_free(a, a->q[i]);
    if (a->multi)
        curl_multi_cleanup(a->multi);
    curl_slist_free_all(a->headers);
    free(a);
    *self_p = NULL;
}

/* Queues an event (taking the JSON object) unless the queue is full. */
static void s_enqueue(alert_t *a, json_t *ev)
{
    char at[40];
    clock_format_iso(clock_wall_ms(), at, sizeof at);
    json_object_set_new(ev, "master", json_string(a->cfg->node_id));
    json_object_set_new(ev, "at", json_string(at));
    const char *kind = json_string_value(json_object_get(ev, "event"));
    if (a->n == ALERT_QUEUE_MAX) {
        log_warn("alert dropped: queue full", "event=%s queued=%d", kind, a->n);
        stats_alert_dropped();
        json_decref(ev);
        return;
    }
    event_t *e = calloc(1, sizeof *e);
    if (e)
        e->body = json_dumps(ev, JSON_COMPACT);
    if (!e || !e->body) {
        free(e);
        stats_alert_dropped();
        json_decref(ev);
        return;
    }
    snprintf(e->kind, sizeof e->kind, "%s", kind);
    json_decref(ev);
    e->due = clock_mono_ms();
    a->q[a->n++] = e;
    stats_alerts_queued((size_t)a->n);
}

static json_t *s_str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

void alert_job_failed(alert_t *self, const job_t *job, const char *status, const char *error,
                      const char *worker_id)
{
    if (!self || !(self->events & EV_JOB_FAILED))
        return;
    char sf[40];
    clock_format_iso(job->scheduled_for, sf, sizeof sf);
    json_t *ev = json_object();
    json_object_set_new(ev, "event", json_string("job_failed"));
    json_object_set_new(ev, "job_id", json_string(job->id));
    json_object_set_new(ev, "trigger_id", json_string(job->trigger_id));
    json_object_set_new(ev, "task_type", json_string(job->task_type));
    json_object_set_new(ev, "status", json_string(status));
    json_object_set_new(ev, "attempt", json_integer(job->attempt));
    json_object_set_new(ev, "error", s_str_or_null(error));
    json_object_set_new(ev, "worker_id", s_str_or_null(worker_id));
    json_object_set_new(ev, "scheduled_for", json_string(sf));
    s_enqueue(self, ev);
}

void alert_fire_lag(alert_t *self, const job_t *job, int64_t lag_ms)
{
    if (!self || !(self->events & EV_FIRE_LAG) || self->cfg->alert_lag_ms <= 0 ||
        lag_ms <= self->cfg->alert_lag_ms)
        return;
    int64_t now = clock_mono_ms();
    if (self->last_lag_alert && now - self->last_lag_alert < LAG_ALERT_PERIOD_MS)
        return;
    self->last_lag_alert = now;
    json_t *ev = json_pack("{s:s, s:I, s:i, s:s, s:s, s:s}", "event", "fire_lag_high", "lag_ms",
                           (json_int_t)lag_ms, "threshold_ms", self->cfg->alert_lag_ms, "job_id",
                           job->id, "trigger_id", job->trigger_id, "task_type", job->task_type);
    if (ev)
        s_enqueue(self, ev);
}

void alert_fire_skipped(alert_t *self, const char *job_id, const char *trigger_id,
                        const char *task_type, int64_t scheduled_for, const char *reason)
{
    if (!self || !(self->events & EV_FIRE_SKIPPED))
        return;
    char sf[40];
    clock_format_iso(scheduled_for, sf, sizeof sf);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "event", "fire_skipped", "job_id",
                           job_id, "trigger_id", trigger_id, "task_type", task_type,
                           "scheduled_for", sf, "reason", reason);
    if (ev)
        s_enqueue(self, ev);
}

static size_t s_discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

/* Starts a delivery attempt of e; on failure to start, schedules a retry. */
static void s_start(alert_t *a, event_t *e)
{
    CURL *c = curl_easy_init();
    if (!c) {
        e->due = clock_mono_ms() + ALERT_BACKOFF_MS;
        return;
    }
    e->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, a->cfg->alert_url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, e->body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, a->headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sked-master");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ALERT_CONNECT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ALERT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, e->errbuf);
    curl_easy_setopt(c, CURLOPT_PRIVATE, e);
    if (curl_multi_add_handle(a->multi, c) != CURLM_OK) {
        curl_easy_cleanup(c);
        e->due = clock_mono_ms() + ALERT_BACKOFF_MS;
        return;
    }
    e->easy = c;
    e->tries++;
    a->inflight++;
}

static void s_remove_at(alert_t *a, int i)
{
    s_event_free(a, a->q[i]);
    memmove(&a->q[i], &a->q[i + 1], (size_t)(a->n - i - 1) * sizeof a->q[0]);
    a->n--;
    stats_alerts_queued((size_t)a->n);
}

/* A delivery attempt ended: done, retried later, or given up. */
static void s_done(alert_t *a, CURL *c, CURLcode rc)
{
    int i = 0;
    while (i < a->n && a->q[i]->easy != c)
        i++;
    if (i == a->n)
        return;
    event_t *e = a->q[i];
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    int ok = rc == CURLE_OK && status >= 200 && status < 300;
    stats_alert_sent(ok ? "ok" : rc == CURLE_OK ? "http_error" : "transport_error");
    if (ok) {
        log_debug("alert delivered", "event=%s tries=%d", e->kind, e->tries);
        s_remove_at(a, i);
        return;
    }
    char why[CURL_ERROR_SIZE + 32];
    if (rc == CURLE_OK)
        snprintf(why, sizeof why, "HTTP status %ld", status);
    else
        snprintf(why, sizeof why, "%s", e->errbuf[0] ? e->errbuf : curl_easy_strerror(rc));
    curl_multi_remove_handle(a->multi, c);
    curl_easy_cleanup(c);
    e->easy = NULL;
    a->inflight--;
    if (e->tries >= ALERT_TRIES) {
        log_warn("alert not delivered; given up", "event=%s tries=%d reason=\"%s\"", e->kind,
                 e->tries, why);
        stats_alert_given_up();
        s_remove_at(a, i);
        return;
    }
    int64_t delay = (int64_t)ALERT_BACKOFF_MS << (e->tries - 1);
    log_info("alert delivery failed; will retry", "event=%s tries=%d delay_ms=%lld reason=\"%s\"",
             e->kind, e->tries, (long long)delay, why);
    e->due = clock_mono_ms() + delay;
}

void alert_tick(alert_t *self)
{
    if (!self)
        return;
    int running = 0;
    if (self->inflight)
        curl_multi_perform(self->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(self->multi, &left)))
        if (msg->msg == CURLMSG_DONE)
            s_done(self, msg->easy_handle, msg->data.result);
    int64_t now = clock_mono_ms();
    int started = 0;
    for (int i = 0; i < self->n && self->inflight < ALERT_INFLIGHT; i++)
        if (!self->q[i]->easy && self->q[i]->due <= now) {
            s_start(self, self->q[i]);
            started = 1;
        }
    if (started)
        curl_multi_perform(self->multi, &running);
}

int alert_pollitems(alert_t *self, zmq_pollitem_t *items, int max)
{
    if (!self || !self->inflight)
        return 0;
    fd_set r, w, x;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&x);
    int maxfd = -1, n = 0;
    if (curl_multi_fdset(self->multi, &r, &w, &x, &maxfd) != CURLM_OK)
        return 0;
    for (int fd = 0; fd <= maxfd && n < max; fd++) {
        short ev = (short)((FD_ISSET(fd, &r) ? ZMQ_POLLIN : 0) | (FD_ISSET(fd, &w) ? ZMQ_POLLOUT : 0) |
                           (FD_ISSET(fd, &x) ? ZMQ_POLLERR : 0));
        if (ev)
            items[n++] = (zmq_pollitem_t){NULL, fd, ev, 0};
    }
    return n;
}

int64_t alert_next_ms(const alert_t *self)
{
    if (!self || !self->n)
        return INT64_MAX;
    int64_t wait = INT64_MAX, now = clock_mono_ms();
    if (self->inflight) {
        long t = -1;
        curl_multi_timeout(self->multi, &t);
        /* -1 with transfers running: curl has no socket to show (resolving);
         * look again soon. */
        wait = t < 0 ? 50 : t;
    }
    if (self->inflight < ALERT_INFLIGHT)
        for (int i = 0; i < self->n; i++)
            if (!self->q[i]->easy) {
                int64_t left = self->q[i]->due - now;
                if (left < wait)
                    wait = left < 0 ? 0 : left;
            }
    return wait;
}
