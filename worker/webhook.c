/*
 * webhook.c - the http handler: POSTs a job as JSON with libcurl.
 *
 * The body is {"job_id", "attempt", "trigger_id", "task_type",
 * "parameters", "scheduled_for" (ISO-8601 UTC)} with the task type's
 * headers (${VAR} already expanded by wconfig.c). A 2xx status succeeds,
 * anything else fails; either way the status is the exit code and the
 * response body's last 64 KiB are the output. A transfer that cannot
 * complete (connection refused, TLS, DNS) fails with curl's message.
 *
 * Transfers share one multi handle driven by curl_multi_socket_action:
 * libcurl tells us (socket callback) which sockets to watch, they join the
 * worker's zmq_poll, and its timer callback sets when to call it back, so
 * an http job never blocks the loop. Deadlines are enforced by jobs.c,
 * which aborts the transfer; redirects are not followed and only http and
 * https are allowed.
 */
#include "worker/worker.h"

#include "common/clock.h"
#include "common/log.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    curl_socket_t fd;
    int what; /* CURL_POLL_IN, _OUT, _INOUT */
} sock_t;

struct webhook {
    CURLM *multi;
    sock_t *socks;
    int nsocks, capsocks;
    int64_t timer_mono; /* INT64_MAX = none */
};

/* run->http */
typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
} transfer_t;

static int s_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    webhook_t *self = userp;
    int i = 0;
    while (i < self->nsocks && self->socks[i].fd != fd)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < self->nsocks)
            self->socks[i] = self->socks[--self->nsocks];
        return 0;
    }
    if (i == self->nsocks) {
        if (self->nsocks == self->capsocks) {
            self->capsocks = self->capsocks ? self->capsocks * 2 : 8;
            self->socks = realloc(self->socks, (size_t)self->capsocks * sizeof *self->socks);
        }
        self->socks[self->nsocks++].fd = fd;
    }
    self->socks[i].what = what;
    return 0;
}

static int s_on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    webhook_t *self = userp;
    self->timer_mono = timeout_ms < 0 ? INT64_MAX : clock_mono_ms() + timeout_ms;
    return 0;
}

static size_t s_on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    run_t *run = userp;
    tail_append(run->tail, data, size * nmemb);
    return size * nmemb;
}

webhook_t *webhook_new(err_t *err)
{
    webhook_t *self = calloc(1, sizeof *self);
    self->multi = curl_multi_init();
    if (!self->multi) {
        free(self);
        err_set(err, ERR_SYS, "cannot create a libcurl multi handle");
        return NULL;
    }
    self->timer_mono = INT64_MAX;
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, s_on_socket);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, s_on_timer);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    return self;
}

static void s_transfer_free(webhook_t *self, run_t *run)
{
    transfer_t *t = run->http;
    if (!t)
        return;
    curl_multi_remove_handle(self->multi, t->easy);
    curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    free(t);
    run->http = NULL;
}

void webhook_destroy(webhook_t **self_p)
{
    webhook_t *self = *self_p;
    if (!self)
        return;
    curl_multi_cleanup(self->multi);
    free(self->socks);
    free(self);
    *self_p = NULL;
}

static char *s_body(const run_t *run)
{
    char when[32];
    clock_format_iso(run->scheduled_for, when, sizeof when);
    json_t *params = json_loads(run->parameters ? run->parameters : "{}", 0, NULL);
    if (!params)
        params = json_object();
    json_t *body = json_pack("{s:s, s:i, s:s, s:s, s:o, s:s}", "job_id", run->job_id, "attempt",
                             run->attempt, "trigger_id", run->trigger_id, "task_type",
                             run->task_type, "parameters", params, "scheduled_for", when);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

int webhook_start(webhook_t *self, run_t *run, err_t *err)
{
    const tasktype_t *tt = run->tt;
    char *body = s_body(run);
    transfer_t *t = calloc(1, sizeof *t);
    t->easy = curl_easy_init();
    if (!body || !t->easy) {
        free(body);
        if (t->easy)
            curl_easy_cleanup(t->easy);
        free(t);
        return err_set(err, ERR_SYS, "cannot prepare the request to '%.200s'", tt->url);
    }
    t->headers = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; tt->headers && tt->headers[i]; i++)
        t->headers = curl_slist_append(t->headers, tt->headers[i]);
    run->tail = tail_new(WORKER_OUTPUT_MAX);
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, tt->url);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sked-worker");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, run);
    curl_easy_setopt(e, CURLOPT_PRIVATE, run);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    free(body);
    run->http = t;
    CURLMcode mc = curl_multi_add_handle(self->multi, e);
    if (mc != CURLM_OK) {
        s_transfer_free(self, run);
        return err_set(err, ERR_SYS, "cannot start the request to '%.200s': %s", tt->url,
                       curl_multi_strerror(mc));
    }
    log_debug("http request started", "job=%s url=%s", run->job_id, tt->url);
    return 0;
}

void webhook_abort(webhook_t *self, run_t *run)
{
    if (self)
        s_transfer_free(self, run);
}

int webhook_nitems(const webhook_t *self)
{
    return self ? self->nsocks : 0;
}

int webhook_pollitems(webhook_t *self, zmq_pollitem_t *items, int max)
{
    int n = 0;
    for (int i = 0; self && i < self->nsocks && n < max; i++) {
        short ev = 0;
        if (self->socks[i].what & CURL_POLL_IN)
            ev |= ZMQ_POLLIN;
        if (self->socks[i].what & CURL_POLL_OUT)
            ev |= ZMQ_POLLOUT;
        items[n++] = (zmq_pollitem_t){NULL, self->socks[i].fd, ev, 0};
    }
    return n;
}

/* Records the outcome of every ended transfer (jobs.c reports it). */
static void s_collect(webhook_t *self)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(self->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        run_t *run = (run_t *)(void *)priv;
        CURLcode rc = m->data.result;
        long code = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        transfer_t *t = run->http;
        if (rc == CURLE_OK && code >= 200 && code <= 299)
            run_set_outcome(run, "succeeded", (int)code, NULL);
        else if (rc == CURLE_OK)
            run_set_outcome(run, "failed", (int)code, "HTTP status %ld from '%s'", code,
                            run->tt->url);
        else
            run_set_outcome(run, "failed", -1, "cannot POST to '%s': %s", run->tt->url,
                            t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
        s_transfer_free(self, run);
    }
}

void webhook_on_events(webhook_t *self, const zmq_pollitem_t *items, int n)
{
    if (!self)
        return;
    int running;
    for (int i = 0; i < n; i++) {
        if (!items[i].revents)
            continue;
        int mask = 0;
        if (items[i].revents & ZMQ_POLLIN)
            mask |= CURL_CSELECT_IN;
        if (items[i].revents & ZMQ_POLLOUT)
            mask |= CURL_CSELECT_OUT;
        if (items[i].revents & ZMQ_POLLERR)
            mask |= CURL_CSELECT_ERR;
        curl_multi_socket_action(self->multi, items[i].fd, mask, &running);
    }
    if (clock_mono_ms() >= self->timer_mono) {
        self->timer_mono = INT64_MAX;
        curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    s_collect(self);
}

int64_t webhook_next_timer(const webhook_t *self)
{
    return self ? self->timer_mono : INT64_MAX;
}
