/*
 * alert.c - outbound webhooks of a master, POSTed as JSON without ever
 * blocking the master loop:
 *
 * - cluster alerts to SKED_ALERT_URL: job_failed (a job ended failed,
 *   timed_out or lost with no retry left), fire_lag_high (fires have started
 *   more than SKED_ALERT_LAG_MS late since a fire scheduled at least
 *   SKED_ALERT_LAG_FOR_MS ago; at most one a minute), partitions_unowned / partitions_owned (partitions without a
 *   live master for SKED_ALERT_UNOWNED_MS, and when that ends) and, when
 *   SKED_ALERT_EVENTS lists it, fire_skipped;
 * - a trigger's own `notifications`: on failure (after the last retry), on
 *   success, on a skipped fire, to each webhook that asked for the event.
 *   Every delivery, delivered or given up, is recorded on the job's
 *   `notifications` array with its attempts.
 *
 * docs/OBSERVABILITY.md has the payloads.
 *
 * Invariants:
 * - Nothing here waits. Transfers run on one curl multi handle driven by
 *   the master loop: alert_pollitems() adds curl's sockets to its zmq_poll,
 *   alert_next_ms() bounds its wait by curl's timeout and the next retry,
 *   alert_tick() calls curl_multi_perform() and harvests what finished.
 * - At most ALERT_QUEUE_MAX events are kept (waiting or in flight); one more
 *   is dropped, counted and, for a notification, recorded on its job. At
 *   most ALERT_INFLIGHT transfers run at once, each bounded by
 *   ALERT_TIMEOUT_MS, so a webhook that hangs only delays deliveries.
 * - A delivery that fails (transport error or a non-2xx answer) is retried
 *   with doubling backoff: alerts after 0.5, 1, 2 s, 4 attempts in all;
 *   notifications after SKED_NOTIFY_BACKOFF_MS (capped at 60 s),
 *   SKED_NOTIFY_TRIES attempts. Delivery is at least once while the master
 *   that saw the event lives; receivers deduplicate on X-Sked-Delivery.
 *
 * - libcurl is loaded (dlopen) on the first delivery, not linked: a master
 *   that sends no webhook does not map it and the libraries it brings
 *   (TLS, LDAP, SSH, RTMP, Kerberos: 3.7 MiB of RSS an idle master paid,
 *   docs/BENCHMARKS.md). Every curl call goes through `lib`. A libcurl that
 *   cannot be loaded is logged once and its events are dropped as a full
 *   queue drops them (counted; a notification's drop recorded on its job).
 *
 * Called by main.c (lifecycle, loop), dispatch.c (job ends, fire lag),
 * sched.c (skipped fires) and partitions.c (unowned partitions), all on the
 * master thread.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <string.h>
#include <sys/select.h>

#define LIBCURL_SONAME "libcurl.so.4"

/* The libcurl calls alert.c makes, resolved when it is loaded (s_lib). */
static struct {
    int state; /* 0: not tried; 1: loaded and initialised; -1: cannot be */
    void *handle;
    CURLcode (*global_init)(long flags);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *c, CURLoption opt, ...);
    CURLcode (*easy_getinfo)(CURL *c, CURLINFO info, ...);
    const char *(*easy_strerror)(CURLcode rc);
    void (*easy_cleanup)(CURL *c);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_add_handle)(CURLM *m, CURL *c);
    CURLMcode (*multi_remove_handle)(CURLM *m, CURL *c);
    CURLMcode (*multi_perform)(CURLM *m, int *running);
    CURLMsg *(*multi_info_read)(CURLM *m, int *left);
    CURLMcode (*multi_fdset)(CURLM *m, fd_set *r, fd_set *w, fd_set *x, int *maxfd);
    CURLMcode (*multi_timeout)(CURLM *m, long *ms);
    CURLMcode (*multi_cleanup)(CURLM *m);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
} lib;

/* Sets the function pointer at fn_p to the symbol `name`; -1 if missing. */
static int s_sym(const char *name, void *fn_p, size_t size)
{
    void *p = dlsym(lib.handle, name);
    if (!p)
        return -1;
    memcpy(fn_p, &p, size); /* a function pointer from dlsym, as POSIX allows */
    return 0;
}

#define LIB_SYM(f) s_sym("curl_" #f, &lib.f, sizeof lib.f)

/* Loads and initialises libcurl once; 0 when it can be used. */
static int s_lib(void)
{
    if (lib.state)
        return lib.state > 0 ? 0 : -1;
    lib.state = -1;
    lib.handle = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib.handle) {
        log_error("webhooks cannot be sent", "reason=\"cannot load %s: %s\"", LIBCURL_SONAME,
                  dlerror());
        return -1;
    }
    if (LIB_SYM(global_init) || LIB_SYM(global_cleanup) || LIB_SYM(easy_init) ||
        LIB_SYM(easy_setopt) || LIB_SYM(easy_getinfo) || LIB_SYM(easy_strerror) ||
        LIB_SYM(easy_cleanup) || LIB_SYM(multi_init) || LIB_SYM(multi_add_handle) ||
        LIB_SYM(multi_remove_handle) || LIB_SYM(multi_perform) || LIB_SYM(multi_info_read) ||
        LIB_SYM(multi_fdset) || LIB_SYM(multi_timeout) || LIB_SYM(multi_cleanup) ||
        LIB_SYM(slist_append) || LIB_SYM(slist_free_all)) {
        log_error("webhooks cannot be sent", "reason=\"%s lacks a function: %s\"", LIBCURL_SONAME,
                  dlerror());
        return -1;
    }
    if (lib.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("webhooks cannot be sent", "reason=\"curl_global_init failed\"");
        return -1;
    }
    lib.state = 1;
    log_debug("libcurl loaded for webhooks", "lib=%s", LIBCURL_SONAME);
    return 0;
}

enum {
    ALERT_QUEUE_MAX = 1024,   /* events kept, waiting or in flight */
    ALERT_INFLIGHT = 8,       /* transfers at once */
    ALERT_TRIES = 4,          /* delivery attempts of a cluster alert */
    ALERT_BACKOFF_MS = 500,   /* before an alert's first retry; doubles */
    NOTIFY_BACKOFF_CAP_MS = 60000,
    ALERT_CONNECT_MS = 3000,  /* connect timeout of a delivery */
    ALERT_TIMEOUT_MS = 10000, /* whole-transfer timeout of a delivery */
    LAG_ALERT_PERIOD_MS = 60000,
    OUTPUT_TAIL_MAX = 4096,   /* bytes of output in a notification */
};

enum { EV_JOB_FAILED = 1, EV_FIRE_LAG = 2, EV_FIRE_SKIPPED = 4, EV_UNOWNED = 8 };

typedef struct {
    char *body;
    char kind[24];
    char *url;                     /* NULL: SKED_ALERT_URL */
    struct curl_slist *headers;    /* owned; NULL: the alert headers */
    int tries, max_tries;          /* attempts made, allowed */
    int64_t backoff_ms, due;       /* first retry delay; monotonic ms of the next attempt */
    CURL *easy;                    /* set while in flight */
    char errbuf[CURL_ERROR_SIZE];
    /* notifications only: where the delivery is recorded */
    char job_id[PROTO_ID_MAX];
    char event[16];
    int hook;
    json_t *attempts;
} event_t;

struct alert {
    master_t *m;
    const config_t *cfg;
    CURLM *multi;               /* NULL until the first delivery (s_ready) */
    struct curl_slist *headers; /* the alert headers; built with multi */
    int events; /* EV_* enabled; 0 without SKED_ALERT_URL */
    event_t *q[ALERT_QUEUE_MAX];
    int n, inflight;
    int64_t last_lag_alert; /* monotonic ms, 0 = never */
    int64_t lag_high_since; /* wall ms: scheduled time of the first late fire, 0 = none */
    int64_t unowned_since;  /* monotonic ms, 0 = every partition owned */
    int unowned_alerted;
};

/* Checks SKED_ALERT_HEADERS: "Name: value" items separated by newlines,
 * ';' or a literal "\n". With `add`, also adds them to a->headers. */
static int s_parse_headers(alert_t *a, const char *spec, int add, err_t *err)
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
            return err_set(err, ERR_INVALID, "invalid SKED_ALERT_HEADERS item '%s': use 'Name: value'", h);
        if (!add)
            continue;
        struct curl_slist *l = lib.slist_append(a->headers, h);
        if (!l)
            return err_set(err, ERR_SYS, "cannot set alert headers: out of memory");
        a->headers = l;
    }
    return 0;
}

static int s_parse_events(alert_t *a, const char *list, err_t *err)
{
    static const struct {
        const char *name;
        int bit;
    } names[] = {{"job_failed", EV_JOB_FAILED},
                 {"fire_lag_high", EV_FIRE_LAG},
                 {"fire_skipped", EV_FIRE_SKIPPED},
                 {"partitions_unowned", EV_UNOWNED}};
    char buf[sizeof a->cfg->alert_events];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *e = strtok_r(buf, ", ", &save); e; e = strtok_r(NULL, ", ", &save)) {
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] && strcmp(e, names[i].name) != 0)
            i++;
        if (i == sizeof names / sizeof names[0])
            return err_set(err, ERR_INVALID,
                           "invalid SKED_ALERT_EVENTS item '%s': use job_failed, fire_lag_high, "
                           "fire_skipped or partitions_unowned",
                           e);
        a->events |= names[i].bit;
    }
    return 0;
}

alert_t *alert_new(master_t *m, err_t *err)
{
    const config_t *cfg = m->cfg;
    if (cfg->alert_url[0] && strncmp(cfg->alert_url, "http://", 7) != 0 &&
        strncmp(cfg->alert_url, "https://", 8) != 0) {
        err_set(err, ERR_INVALID, "invalid SKED_ALERT_URL '%s': use an http or https URL",
                cfg->alert_url);
        return NULL;
    }
    alert_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_SYS, "cannot set up webhooks: out of memory");
        return NULL;
    }
    a->m = m;
    a->cfg = cfg;
    if (s_parse_headers(a, cfg->alert_headers, 0, err) < 0 ||
        s_parse_events(a, cfg->alert_events, err) < 0) {
        alert_destroy(&a);
        return NULL;
    }
    if (!cfg->alert_url[0])
        a->events = 0;
    return a;
}

/* Loads libcurl and sets up the multi handle and the alert headers, once;
 * 0 when deliveries can be made. */
static int s_ready(alert_t *a)
{
    if (a->multi)
        return 0;
    if (s_lib() < 0)
        return -1;
    err_t err = {0};
    a->headers = lib.slist_append(NULL, "Content-Type: application/json");
    if (!a->headers || s_parse_headers(a, a->cfg->alert_headers, 1, &err) < 0 ||
        !(a->multi = lib.multi_init())) {
        log_error("webhooks cannot be sent", "reason=\"cannot set up curl: out of memory\"");
        lib.slist_free_all(a->headers);
        a->headers = NULL;
        return -1;
    }
    return 0;
}

static void s_event_free(alert_t *a, event_t *e)
{
    if (e->easy) {
        lib.multi_remove_handle(a->multi, e->easy);
        lib.easy_cleanup(e->easy);
        a->inflight--;
    }
    if (e->headers)
        lib.slist_free_all(e->headers);
    json_decref(e->attempts);
    free(e->url);
    free(e->body);
    free(e);
}

void alert_destroy(alert_t **self_p)
{
    alert_t *a = *self_p;
    if (!a)
        return;
    if (a->n)
        log_warn("webhook deliveries not made at exit", "count=%d", a->n);
    for (int i = 0; i < a->n; i++)
        s_event_free(a, a->q[i]);
    if (a->multi)
        lib.multi_cleanup(a->multi);
    if (a->headers)
        lib.slist_free_all(a->headers);
    free(a);
    *self_p = NULL;
    if (lib.state > 0) {
        lib.global_cleanup();
        lib.state = 0; /* kept mapped: dlclose gains nothing at exit */
    }
}

/* Records a notification's delivery on its job: one $push by _id, written
 * by the master that holds the job (store rule 2), through its status
 * writer (a refusal is logged there as "cannot save job statuses"). */
static void s_record(alert_t *a, event_t *e, const char *status)
{
    if (!e->job_id[0] || !a->m->store || !a->m->disp || !a->m->writer)
        return;
    json_t *rec = json_pack("{s:i, s:s, s:s, s:s, s:O}", "hook", e->hook, "url", e->url, "event",
                            e->event, "status", status, "attempts", e->attempts);
    bson_t *update = bson_new(), push;
    BSON_APPEND_DOCUMENT_BEGIN(update, "$push", &push);
    bj_append(&push, "notifications", rec);
    bson_append_document_end(update, &push);
    json_decref(rec);
    /* The last delivery about the job clears its mark (a master that takes
     * the partition over delivers what is still marked: dispatch_recover). */
    int others = 0;
    for (int i = 0; i < a->n; i++)
        others += a->q[i] != e && strcmp(a->q[i]->job_id, e->job_id) == 0;
    if (!others)
        BCON_APPEND(update, "$unset", "{", "notify_pending", BCON_UTF8(""), "}");
    /* Behind the job's outcome, by the status writer: one writer per job. */
    dispatch_write_job(a->m->disp, e->job_id, update, "record_notification");
    stats_notification(e->event, status);
}

/* Queues an event (taking e) unless the queue is full. Returns 1 if
 * queued, 0 if dropped. */
static int s_push(alert_t *a, event_t *e)
{
    int full = a->n == ALERT_QUEUE_MAX;
    if (full || s_ready(a) < 0) {
        log_warn("webhook event dropped", "event=%s job=%s queued=%d reason=\"%s\"", e->kind,
                 e->job_id[0] ? e->job_id : "-", a->n, full ? "queue full" : "no libcurl");
        if (e->job_id[0]) {
            json_array_append_new(e->attempts,
                                  json_pack("{s:n, s:s}", "http_status", "error",
                                            full ? "dropped: too many deliveries waiting"
                                                 : "dropped: libcurl cannot be loaded"));
            s_record(a, e, "dropped");
        } else {
            stats_alert_dropped();
        }
        s_event_free(a, e);
        return 0;
    }
    e->due = clock_mono_ms();
    a->q[a->n++] = e;
    stats_alerts_queued((size_t)a->n);
    return 1;
}

/* Stamps a payload with this master and the time; returns its text. */
static char *s_dump(alert_t *a, json_t *ev)
{
    char at[40];
    clock_format_iso(clock_wall_ms(), at, sizeof at);
    json_object_set_new(ev, "master", json_string(a->cfg->node_id));
    json_object_set_new(ev, "at", json_string(at));
    char *body = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    return body;
}

/* Queues a cluster alert to SKED_ALERT_URL (taking the JSON object). */
static void s_enqueue(alert_t *a, json_t *ev)
{
    event_t *e = calloc(1, sizeof *e);
    if (e) {
        snprintf(e->kind, sizeof e->kind, "%s", json_string_value(json_object_get(ev, "event")));
        e->body = s_dump(a, ev);
    } else {
        json_decref(ev);
    }
    if (!e || !e->body) {
        free(e);
        stats_alert_dropped();
        return;
    }
    e->max_tries = ALERT_TRIES;
    e->backoff_ms = ALERT_BACKOFF_MS;
    s_push(a, e);
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
    if (!self || !(self->events & EV_FIRE_LAG) || self->cfg->alert_lag_ms <= 0)
        return;
    if (lag_ms <= self->cfg->alert_lag_ms) {
        self->lag_high_since = 0;
        return;
    }
    /* Fires have been late since the scheduled time of the first late one
     * in this streak; an on-time start ends the streak. */
    if (!self->lag_high_since || job->scheduled_for < self->lag_high_since)
        self->lag_high_since = job->scheduled_for;
    int64_t high_for = clock_wall_ms() - self->lag_high_since, now = clock_mono_ms();
    if (high_for < self->cfg->alert_lag_for_ms)
        return;
    if (self->last_lag_alert && now - self->last_lag_alert < LAG_ALERT_PERIOD_MS)
        return;
    self->last_lag_alert = now;
    json_t *ev = json_pack("{s:s, s:I, s:i, s:I, s:s, s:s, s:s}", "event", "fire_lag_high",
                           "lag_ms", (json_int_t)lag_ms, "threshold_ms", self->cfg->alert_lag_ms,
                           "late_for_ms", (json_int_t)high_for, "job_id", job->id, "trigger_id",
                           job->trigger_id, "task_type", job->task_type);
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

void alert_unowned(alert_t *self, const int *parts, int n)
{
    if (!self || !(self->events & EV_UNOWNED))
        return;
    int64_t now = clock_mono_ms();
    if (n == 0) {
        if (self->unowned_alerted)
            s_enqueue(self, json_pack("{s:s}", "event", "partitions_owned"));
        self->unowned_since = 0;
        self->unowned_alerted = 0;
        return;
    }
    if (!self->unowned_since)
        self->unowned_since = now;
    if (self->unowned_alerted || now - self->unowned_since < self->cfg->alert_unowned_ms)
        return;
    self->unowned_alerted = 1;
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, json_integer(parts[i]));
    log_warn("partitions have no live master", "count=%d for_ms=%lld", n,
             (long long)(now - self->unowned_since));
    s_enqueue(self, json_pack("{s:s, s:o, s:i, s:I}", "event", "partitions_unowned", "partitions",
                              list, "partitions_total", self->cfg->partitions, "unowned_for_ms",
                              (json_int_t)(now - self->unowned_since)));
}

/* ---- a trigger's notifications ------------------------------------------ */

/* The payload POSTed to a trigger's webhooks. */
static json_t *s_notice_json(const notice_t *n, const char *trigger_name)
{
    static const struct {
        const char *event, *name;
    } names[] = {{"failure", "job_failed"}, {"success", "job_succeeded"}, {"skipped", "job_skipped"}};
    const char *name = "job_finished";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(n->event, names[i].event) == 0)
            name = names[i].name;
    char sf[40];
    clock_format_iso(n->scheduled_for, sf, sizeof sf);
    const char *out = n->output;
    size_t len = out ? strlen(out) : 0;
    if (len > OUTPUT_TAIL_MAX) { /* the tail, starting on a UTF-8 lead byte */
        out += len - OUTPUT_TAIL_MAX;
        while (((unsigned char)*out & 0xC0) == 0x80)
            out++;
    }
    json_t *job = json_object();
    json_object_set_new(job, "id", json_string(n->job_id));
    json_object_set_new(job, "status", json_string(n->status));
    json_object_set_new(job, "attempt", json_integer(n->attempt));
    json_object_set_new(job, "task_type", json_string(n->task_type));
    json_object_set_new(job, "scheduled_for", json_string(sf));
    json_object_set_new(job, "worker_id", s_str_or_null(n->worker_id));
    json_object_set_new(job, "error", s_str_or_null(n->error));
    json_object_set_new(job, "skip_reason", s_str_or_null(n->skip_reason));
    json_object_set_new(job, "output_tail", out ? json_string(out) : json_null());
    json_t *ev = json_object();
    json_object_set_new(ev, "event", json_string(name));
    json_object_set_new(ev, "trigger", json_pack("{s:s, s:o}", "id", n->trigger_id, "name",
                                                 s_str_or_null(trigger_name)));
    json_object_set_new(ev, "job", job);
    if (n->skipped > 1)
        json_object_set_new(ev, "skipped_count", json_integer(n->skipped));
    return ev;
}

/* True if the hook's events list has `event`. */
static int s_wants(json_t *hook, const char *event)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(hook, "events"), i, e) if (json_is_string(e) &&
                                                                  strcmp(json_string_value(e),
                                                                         event) == 0) return 1;
    return 0;
}

int alert_hooks_want(const char *notify, const char *event)
{
    if (!notify)
        return 0;
    json_t *cfg = json_loads(notify, 0, NULL);
    size_t i;
    json_t *hook;
    int want = 0;
    json_array_foreach(json_object_get(cfg, "hooks"), i, hook) want |= s_wants(hook, event);
    json_decref(cfg);
    return want;
}

/* True if a delivery of (job, event, hook) is queued already. */
static int s_queued(const alert_t *a, const char *job_id, const char *event, int hook)
{
    for (int i = 0; i < a->n; i++)
        if (a->q[i]->hook == hook && strcmp(a->q[i]->job_id, job_id) == 0 &&
            strcmp(a->q[i]->event, event) == 0)
            return 1;
    return 0;
}

int alert_notify(alert_t *self, const notice_t *n)
{
    int queued = 0;
    if (!self || !n->notify)
        return 0;
    json_t *cfg = json_loads(n->notify, 0, NULL);
    json_t *hooks = json_object_get(cfg, "hooks");
    const char *tname = json_string_value(json_object_get(cfg, "trigger_name"));
    char *body = NULL;
    size_t i;
    json_t *hook;
    json_array_foreach(hooks, i, hook)
    {
        const char *url = json_string_value(json_object_get(hook, "url"));
        if (!url || !s_wants(hook, n->event) || (i < 32 && (n->done_hooks >> i & 1)))
            continue;
        if (s_queued(self, n->job_id, n->event, (int)i)) { /* on its way already */
            queued++;
            continue;
        }
        if (!body) {
            body = s_dump(self, s_notice_json(n, tname));
            if (!body)
                break;
        }
        event_t *e = calloc(1, sizeof *e);
        if (!e)
            break;
        snprintf(e->kind, sizeof e->kind, "notify_%s", n->event);
        snprintf(e->job_id, sizeof e->job_id, "%s", n->job_id);
        snprintf(e->event, sizeof e->event, "%s", n->event);
        e->hook = (int)i;
        e->url = strdup(url);
        e->body = strdup(body);
        e->attempts = json_array();
        e->max_tries = self->cfg->notify_tries < 1 ? 1 : self->cfg->notify_tries;
        e->backoff_ms = self->cfg->notify_backoff_ms;
        char h[PROTO_ID_MAX + 64];
        snprintf(h, sizeof h, "X-Sked-Delivery: %s/%s/%d", n->job_id, n->event, (int)i);
        /* Without libcurl, s_push drops it and records the drop. */
        int ready = s_ready(self) == 0;
        if (ready) {
            e->headers = lib.slist_append(NULL, "Content-Type: application/json");
            e->headers = lib.slist_append(e->headers, h);
        }
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(hook, "headers"), k, v)
        {
            char line[1200];
            if (ready && json_is_string(v) &&
                snprintf(line, sizeof line, "%s: %s", k, json_string_value(v)) < (int)sizeof line)
                e->headers = lib.slist_append(e->headers, line);
        }
        if (!e->url || !e->body || (ready && !e->headers)) {
            s_event_free(self, e);
            break;
        }
        queued += s_push(self, e);
    }
    free(body);
    json_decref(cfg);
    return queued;
}

/* ---- deliveries ----------------------------------------------------------- */

static size_t s_discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

/* Starts a delivery attempt of e; on failure to start, schedules a retry. */
static void s_start(alert_t *a, event_t *e)
{
    CURL *c = lib.easy_init();
    if (!c) {
        e->due = clock_mono_ms() + ALERT_BACKOFF_MS;
        return;
    }
    e->errbuf[0] = '\0';
    lib.easy_setopt(c, CURLOPT_URL, e->url ? e->url : a->cfg->alert_url);
    lib.easy_setopt(c, CURLOPT_POSTFIELDS, e->body);
    lib.easy_setopt(c, CURLOPT_HTTPHEADER, e->headers ? e->headers : a->headers);
    lib.easy_setopt(c, CURLOPT_USERAGENT, "sked-master");
    lib.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    lib.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    lib.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ALERT_CONNECT_MS);
    lib.easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ALERT_TIMEOUT_MS);
    lib.easy_setopt(c, CURLOPT_WRITEFUNCTION, s_discard);
    lib.easy_setopt(c, CURLOPT_ERRORBUFFER, e->errbuf);
    lib.easy_setopt(c, CURLOPT_PRIVATE, e);
    if (lib.multi_add_handle(a->multi, c) != CURLM_OK) {
        lib.easy_cleanup(c);
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
    lib.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    int ok = rc == CURLE_OK && status >= 200 && status < 300;
    char why[CURL_ERROR_SIZE + 32] = "";
    if (!ok && rc == CURLE_OK)
        snprintf(why, sizeof why, "HTTP status %ld", status);
    else if (!ok)
        snprintf(why, sizeof why, "%s", e->errbuf[0] ? e->errbuf : lib.easy_strerror(rc));
    if (e->attempts) {
        char at[40];
        clock_format_iso(clock_wall_ms(), at, sizeof at);
        json_array_append_new(e->attempts,
                              json_pack("{s:s, s:o, s:o}", "at", at, "http_status",
                                        rc == CURLE_OK ? json_integer(status) : json_null(),
                                        "error", ok ? json_null() : json_string(why)));
    } else {
        stats_alert_sent(ok ? "ok" : rc == CURLE_OK ? "http_error" : "transport_error");
    }
    if (ok) {
        log_debug("webhook delivered", "event=%s tries=%d", e->kind, e->tries);
        s_record(a, e, "delivered");
        s_remove_at(a, i);
        return;
    }
    lib.multi_remove_handle(a->multi, c);
    lib.easy_cleanup(c);
    e->easy = NULL;
    a->inflight--;
    if (e->tries >= e->max_tries) {
        log_warn("webhook not delivered; given up", "event=%s job=%s tries=%d reason=\"%s\"",
                 e->kind, e->job_id[0] ? e->job_id : "-", e->tries, why);
        if (e->job_id[0])
            s_record(a, e, "failed");
        else
            stats_alert_given_up();
        s_remove_at(a, i);
        return;
    }
    int shift = e->tries - 1 < 20 ? e->tries - 1 : 20;
    int64_t delay = e->backoff_ms << shift;
    if (e->job_id[0] && delay > NOTIFY_BACKOFF_CAP_MS)
        delay = NOTIFY_BACKOFF_CAP_MS;
    log_info("webhook delivery failed; will retry", "event=%s tries=%d delay_ms=%lld reason=\"%s\"",
             e->kind, e->tries, (long long)delay, why);
    e->due = clock_mono_ms() + delay;
}

/* True while the status writer still holds an update of e's job (its
 * outcome): the notification waits for it, so that a receiver that reads
 * the job back finds it as the notification says. The writer's eventfd
 * wakes the loop when it is written. */
static int s_job_unwritten(const alert_t *a, const event_t *e)
{
    return e->job_id[0] && a->m->disp && dispatch_updating(a->m->disp, e->job_id);
}

void alert_tick(alert_t *self)
{
    if (!self || !self->multi) /* no event was ever queued */
        return;
    int running = 0;
    if (self->inflight)
        lib.multi_perform(self->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = lib.multi_info_read(self->multi, &left)))
        if (msg->msg == CURLMSG_DONE)
            s_done(self, msg->easy_handle, msg->data.result);
    int64_t now = clock_mono_ms();
    int started = 0;
    for (int i = 0; i < self->n && self->inflight < ALERT_INFLIGHT; i++)
        if (!self->q[i]->easy && self->q[i]->due <= now && !s_job_unwritten(self, self->q[i])) {
            s_start(self, self->q[i]);
            started = 1;
        }
    if (started)
        lib.multi_perform(self->multi, &running);
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
    if (lib.multi_fdset(self->multi, &r, &w, &x, &maxfd) != CURLM_OK)
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
        lib.multi_timeout(self->multi, &t);
        /* -1 with transfers running: curl has no socket to show (resolving);
         * look again soon. */
        wait = t < 0 ? 50 : t;
    }
    if (self->inflight < ALERT_INFLIGHT)
        for (int i = 0; i < self->n; i++)
            if (!self->q[i]->easy && !s_job_unwritten(self, self->q[i])) {
                int64_t left = self->q[i]->due - now;
                if (left < wait)
                    wait = left < 0 ? 0 : left;
            }
    return wait;
}
