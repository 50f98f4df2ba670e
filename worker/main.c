/*
 * main.c - sked-worker: connects to every master, runs jobs, streams status.
 *
 * One DEALER socket per master endpoint, so status for a job goes back on
 * the connection it came from. HELLO on start, HEARTBEAT every
 * SKED_HEARTBEAT_MS with free slots and running job ids, STARTED and
 * FINISHED per job. Jobs beyond the free slots (several masters may spend
 * the same credit) wait in a local queue. SIGTERM drains: BYE to every
 * master, then exit once running jobs end or SKED_DRAIN_TIMEOUT_MS passes.
 * The worker needs no store access.
 */
#include "worker/worker.h"

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"

#include <signal.h>
#include <string.h>

#define MAX_MASTERS 32

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

typedef struct {
    const config_t *cfg;
    zsock_t *socks[MAX_MASTERS];
    int nsocks;
    zlistx_t *running; /* run_t*, owns */
    zlistx_t *queued;  /* run_t*, owns */
    uint64_t seq;
} worker_t;

static void s_send(worker_t *w, int master, proto_msg_t *msg)
{
    msg->seq = ++w->seq;
    snprintf(msg->node_id, sizeof msg->node_id, "%s", w->cfg->node_id);
    err_t err = {0};
    zmsg_t *z = proto_encode(msg, &err);
    if (!z) {
        log_error("cannot encode message", "type=%s reason=\"%s\"", proto_type_name(msg->type),
                  err.msg);
        return;
    }
    if (zmsg_send(&z, w->socks[master]) < 0) {
        log_warn("cannot send to master", "type=%s master=%d", proto_type_name(msg->type), master);
        zmsg_destroy(&z);
    }
}

static int s_free_slots(const worker_t *w)
{
    int used = (int)(zlistx_size(w->running) + zlistx_size(w->queued));
    return used >= w->cfg->worker_slots ? 0 : w->cfg->worker_slots - used;
}

static void s_announce(worker_t *w, proto_type_t type)
{
    for (int i = 0; i < w->nsocks; i++) {
        proto_msg_t msg = {.type = type, .slots = w->cfg->worker_slots,
                           .free_slots = s_stop ? 0 : s_free_slots(w)};
        snprintf(msg.task_types, sizeof msg.task_types, "%s", w->cfg->task_types);
        char *ids[PROTO_MAX_RUNNING + 1];
        int n = 0;
        if (type == PROTO_HEARTBEAT) {
            for (run_t *r = zlistx_first(w->running); r && n < PROTO_MAX_RUNNING;
                 r = zlistx_next(w->running))
                ids[n++] = r->job_id;
            ids[n] = NULL;
            msg.running = ids;
            msg.nrunning = n;
        }
        s_send(w, i, &msg);
    }
}

static void s_report_finished(worker_t *w, run_t *r)
{
    proto_msg_t msg = {.type = PROTO_FINISHED, .attempt = r->attempt, .at = clock_wall_ms(),
                       .exit_code = r->exit_code, .duration_ms = clock_mono_ms() - r->started_mono,
                       .error = r->error, .output = r->output};
    snprintf(msg.job_id, sizeof msg.job_id, "%s", r->job_id);
    snprintf(msg.trigger_id, sizeof msg.trigger_id, "%s", r->trigger_id);
    snprintf(msg.status, sizeof msg.status, "%s", r->status);
    s_send(w, r->master, &msg);
    log_info("job finished", "job=%s attempt=%d status=%s", r->job_id, r->attempt, r->status);
}

/* Starts a job: STARTED, then its handler. Takes ownership of run. */
static void s_start(worker_t *w, run_t *r)
{
    int64_t mono = clock_mono_ms();
    r->started_at = clock_wall_ms();
    r->started_mono = mono;
    proto_msg_t msg = {.type = PROTO_STARTED, .attempt = r->attempt, .at = r->started_at};
    snprintf(msg.job_id, sizeof msg.job_id, "%s", r->job_id);
    snprintf(msg.trigger_id, sizeof msg.trigger_id, "%s", r->trigger_id);
    s_send(w, r->master, &msg);
    log_info("job started", "job=%s attempt=%d task_type=%s", r->job_id, r->attempt, r->task_type);
    if (builtin_start(r, mono) < 0) {
        r->finished = 1;
        snprintf(r->status, sizeof r->status, "failed");
        r->exit_code = -1;
        char e[160];
        snprintf(e, sizeof e, "task type '%s' is not served by this worker", r->task_type);
        r->error = strdup(e);
    }
    if (r->finished) {
        s_report_finished(w, r);
        run_destroy(&r);
        return;
    }
    zlistx_add_end(w->running, r);
}

static void s_on_job(worker_t *w, int master, proto_msg_t *msg)
{
    run_t *r = calloc(1, sizeof *r);
    snprintf(r->job_id, sizeof r->job_id, "%s", msg->job_id);
    snprintf(r->trigger_id, sizeof r->trigger_id, "%s", msg->trigger_id);
    snprintf(r->task_type, sizeof r->task_type, "%s", msg->task_type);
    r->attempt = msg->attempt;
    r->master = master;
    r->max_execution_time = msg->max_execution_time;
    r->parameters = msg->parameters;
    msg->parameters = NULL;
    if ((int)zlistx_size(w->running) < w->cfg->worker_slots)
        s_start(w, r);
    else
        zlistx_add_end(w->queued, r);
}

static void s_on_message(worker_t *w, int master)
{
    zmsg_t *z = zmsg_recv(w->socks[master]);
    if (!z)
        return;
    proto_msg_t msg;
    err_t err = {0};
    if (proto_decode(z, &msg, &err) < 0) {
        proto_dropped++;
        log_warn("malformed message dropped", "reason=\"%s\" dropped_total=%llu", err.msg,
                 (unsigned long long)proto_dropped);
    } else if (msg.type == PROTO_JOB) {
        s_on_job(w, master, &msg);
    } else {
        proto_dropped++;
        log_warn("unexpected message type from a master", "type=%s", proto_type_name(msg.type));
    }
    proto_msg_reset(&msg);
    zmsg_destroy(&z);
}

/* Completes timed jobs that are due and starts queued ones; returns the
 * monotonic time of the next completion, or INT64_MAX. */
static int64_t s_advance(worker_t *w)
{
    int64_t mono = clock_mono_ms(), next = INT64_MAX;
    run_t *r = zlistx_first(w->running);
    while (r) {
        if (r->done_at_mono && r->done_at_mono <= mono) {
            builtin_complete(r, mono);
            s_report_finished(w, r);
            void *h = zlistx_cursor(w->running);
            zlistx_delete(w->running, h);
            r = zlistx_first(w->running); /* restart: delete moved the cursor */
            continue;
        }
        if (r->done_at_mono && r->done_at_mono < next)
            next = r->done_at_mono;
        r = zlistx_next(w->running);
    }
    while (zlistx_size(w->queued) && (int)zlistx_size(w->running) < w->cfg->worker_slots) {
        run_t *q = zlistx_detach(w->queued, NULL);
        s_start(w, q);
        next = mono;
    }
    return next;
}

static void s_run_destructor(void **item)
{
    run_destroy((run_t **)item);
}

static void s_loop(worker_t *w)
{
    zmq_pollitem_t items[MAX_MASTERS];
    for (int i = 0; i < w->nsocks; i++)
        items[i] = (zmq_pollitem_t){zsock_resolve(w->socks[i]), 0, ZMQ_POLLIN, 0};
    int64_t next_hb = 0, drain_until = 0;
    int draining = 0;
    for (;;) {
        if (s_stop && !draining) {
            draining = 1;
            drain_until = clock_mono_ms() + w->cfg->drain_timeout_ms;
            s_announce(w, PROTO_BYE);
            log_info("draining", "running=%zu queued=%zu", zlistx_size(w->running),
                     zlistx_size(w->queued));
        }
        int64_t next_done = s_advance(w);
        int64_t mono = clock_mono_ms();
        if (draining && ((zlistx_size(w->running) == 0 && zlistx_size(w->queued) == 0) ||
                         mono >= drain_until))
            break;
        if (mono >= next_hb) {
            s_announce(w, draining ? PROTO_BYE : PROTO_HEARTBEAT);
            next_hb = mono + w->cfg->heartbeat_ms;
        }
        int64_t wait = next_hb - mono;
        if (next_done - mono < wait)
            wait = next_done - mono;
        if (draining && drain_until - mono < wait)
            wait = drain_until - mono;
        if (wait < 0)
            wait = 0;
        if (zmq_poll(items, w->nsocks, (long)wait) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < w->nsocks; i++)
            for (int k = 0; k < 1000 && (zsock_events(w->socks[i]) & ZMQ_POLLIN); k++)
                s_on_message(w, i);
    }
}

int main(int argc, char **argv)
{
    config_t cfg;
    err_t err = {0};
    int rc = config_load(&cfg, CONFIG_ROLE_WORKER, "sked-worker", argc, argv, NULL, &err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "sked-worker: %s\n", err.msg);
        return rc < 0 ? 2 : 0;
    }
    config_init_log(&cfg, "worker");
    zsys_init();
    zsys_handler_set(NULL);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    signal(SIGPIPE, SIG_IGN);

    char types[sizeof cfg.task_types];
    snprintf(types, sizeof types, "%s", cfg.task_types);
    for (char *save = NULL, *t = strtok_r(types, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (!builtin_known(t)) {
            log_error("cannot serve task type", "task_type=%s reason=\"not a built-in (noop, sleep, echo, fail); configured handlers are not built yet\"", t);
            return 2;
        }
    worker_t w = {.cfg = &cfg};
    w.running = zlistx_new();
    zlistx_set_destructor(w.running, s_run_destructor);
    w.queued = zlistx_new();
    zlistx_set_destructor(w.queued, s_run_destructor);
    char list[sizeof cfg.masters];
    snprintf(list, sizeof list, "%s", cfg.masters);
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!*ep)
            continue;
        if (w.nsocks == MAX_MASTERS) {
            log_error("too many masters", "max=%d", MAX_MASTERS);
            return 2;
        }
        zsock_t *s = zsock_new(ZMQ_DEALER);
        zsock_set_linger(s, 1000);
        zsock_set_sndhwm(s, 100000);
        if (zsock_connect(s, "%s", ep) < 0) {
            log_error("cannot connect to master", "endpoint=%s", ep);
            zsock_destroy(&s);
            return 2;
        }
        w.socks[w.nsocks++] = s;
    }
    if (w.nsocks == 0) {
        log_error("no masters configured", "hint=\"set SKED_MASTERS\"");
        return 2;
    }
    log_info("worker started", "masters=%s slots=%d task_types=%s", cfg.masters, cfg.worker_slots,
             cfg.task_types);
    s_announce(&w, PROTO_HELLO);
    s_loop(&w);
    log_info("worker stopped", "running=%zu", zlistx_size(w.running));
    zlistx_destroy(&w.running);
    zlistx_destroy(&w.queued);
    for (int i = 0; i < w.nsocks; i++)
        zsock_destroy(&w.socks[i]);
    return 0;
}
