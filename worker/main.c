/*
 * main.c - sked-worker: connects to every master, runs jobs, streams status.
 *
 * One DEALER socket per master endpoint, so status for a job goes back on
 * the connection it came from. HELLO on start, HEARTBEAT every
 * SKED_HEARTBEAT_MS (and at once when the credit or the task types with
 * room change) with free slots, task types, labels and running job ids;
 * STARTED, OUTPUT and FINISHED per job; CANCEL and ACK from masters. A
 * FINISHED stays in the outbox until ACKed (outbox.c). SIGTERM drains: BYE
 * to every master, wait for running jobs (and ACKs, from masters that
 * send them) up to SKED_DRAIN_TIMEOUT_MS, then end what still runs.
 *
 * Signals only write a byte to a pipe that the zmq_poll loop watches
 * (SIGCHLD included: exec jobs are reaped by jobs.c). The worker needs no
 * store access.
 */
#include "worker/worker.h"

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_MASTERS 32
#define OUTBOX_MAX_ENTRIES 10000
#define OUTBOX_MAX_BYTES (64u << 20)
#define OUTBOX_GIVE_UP_MS (10 * 60 * 1000)

static volatile sig_atomic_t s_stop, s_child;
static int s_wake[2] = {-1, -1};

static void s_on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGCHLD)
        s_child = 1;
    else
        s_stop = 1;
    if (s_wake[1] >= 0) {
        ssize_t n = write(s_wake[1], "", 1);
        (void)n;
    }
    errno = saved;
}

typedef struct {
    const config_t *cfg;
    wconfig_t *wcfg;
    zsock_t *socks[MAX_MASTERS];
    int nsocks;
    int acks[MAX_MASTERS]; /* this master has sent ACKs: it implements them */
    int64_t echo[MAX_MASTERS]; /* token of the last PING from this master */
    jobs_t *jobs;
    outbox_t *outbox;
    uint64_t seq;
    int slots, kill_grace_ms;
    zmq_pollitem_t *items; /* the loop's poll set, rebuilt each turn */
    size_t nitems_cap;
    char advertised[512]; /* task types of the last HELLO/HEARTBEAT */
    int advertised_free;
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

/* Worker metrics (docs/OBSERVABILITY.md); registered at start. */
static metric_t *s_m_finished, *s_m_duration, *s_m_slots, *s_m_type_slots, *s_m_unacked,
    *s_m_dropped, *s_m_refused;

static void s_metrics_init(void)
{
    s_m_finished = metrics_counter("sked_worker_jobs_finished_total",
                                   "Jobs this worker ended, by task type and status.",
                                   "task_type,status");
    s_m_duration = metrics_histogram("sked_worker_job_duration_seconds",
                                     "Run time of jobs on this worker, by task type.", "task_type",
                                     metrics_seconds_buckets, METRICS_SECONDS_NBUCKETS);
    s_m_slots = metrics_gauge("sked_worker_slots", "This worker's job slots by state.", "state");
    s_m_type_slots = metrics_gauge("sked_worker_task_slots",
                                   "This worker's slots by task type and state: used (running), "
                                   "free (jobs of the type it could start now).",
                                   "task_type,state");
    s_m_unacked = metrics_gauge("sked_worker_finished_unacknowledged",
                                "FINISHED messages kept until a master acknowledges them.", "");
    s_m_dropped = metrics_gauge("sked_worker_malformed_messages_dropped",
                                "Malformed ZeroMQ messages dropped since start.", "");
    s_m_refused = metrics_counter("sked_worker_jobs_refused_total",
                                  "JOBs refused for want of a free slot (sent back to their "
                                  "master as REFUSED).",
                                  "task_type");
}

static void s_metrics_update(worker_t *w)
{
    const char *free_l[] = {"free"}, *used_l[] = {"used"};
    int free_slots = jobs_free_slots(w->jobs);
    metric_set(s_m_slots, free_l, free_slots);
    metric_set(s_m_slots, used_l, w->slots - free_slots);
    for (int i = 0; i < w->wcfg->ntypes; i++) {
        const tasktype_t *t = &w->wcfg->types[i];
        int room = t->max_concurrent > 0 ? t->max_concurrent - t->running : free_slots;
        metric_set(s_m_type_slots, (const char *[]){t->name, "used"}, t->running);
        metric_set(s_m_type_slots, (const char *[]){t->name, "free"},
                   room < free_slots ? (room > 0 ? room : 0) : free_slots);
    }
    metric_set(s_m_unacked, NULL, (double)outbox_size(w->outbox));
    metric_set(s_m_dropped, NULL, (double)proto_dropped);
}

/* jobs.c's and outbox.c's way out; a FINISHED is also kept until ACKed. */
static void s_send_job_msg(void *ctx, int master, proto_msg_t *msg)
{
    worker_t *w = ctx;
    s_send(w, master, msg);
    if (msg->type == PROTO_FINISHED) {
        outbox_add(w->outbox, msg, master, clock_mono_ms());
        const char *labels[] = {msg->task_type[0] ? msg->task_type : "unknown", msg->status};
        metric_inc(s_m_finished, labels, 1);
        metric_observe(s_m_duration, labels, (double)msg->duration_ms / 1000.0);
        s_metrics_update(w);
    }
}

static void s_send_resend(void *ctx, int master, proto_msg_t *msg)
{
    worker_t *w = ctx;
    if (master >= 0) {
        s_send(w, master, msg);
        return;
    }
    for (int i = 0; i < w->nsocks; i++)
        s_send(w, i, msg);
}

/* The credit a HELLO, HEARTBEAT, BYE or REFUSED carries, into msg. */
static void s_credit(worker_t *w, proto_msg_t *msg)
{
    msg->slots = w->slots;
    msg->free_slots = s_stop ? 0 : jobs_free_slots(w->jobs);
    jobs_advertise(w->jobs, msg->task_types, sizeof msg->task_types);
}

/* Sends HELLO, HEARTBEAT or BYE to master `only`, or to all of them (-1). */
static void s_announce_to(worker_t *w, proto_type_t type, int only)
{
    proto_msg_t credit = {0};
    s_credit(w, &credit);
    snprintf(w->advertised, sizeof w->advertised, "%s", credit.task_types);
    w->advertised_free = credit.free_slots;
    s_metrics_update(w);
    char *ids[PROTO_MAX_RUNNING + 1];
    /* A job whose FINISHED is not acknowledged yet is still ours to report:
     * listed as running, a master taking its partition over adopts it and
     * records the resent FINISHED instead of declaring it lost. BYE, sent
     * in place of HEARTBEAT while draining, lists them too: a takeover
     * during a drain must find the jobs still running here. */
    int listed = type != PROTO_HELLO, n = 0;
    if (listed) {
        n = jobs_running_ids(w->jobs, ids, PROTO_MAX_RUNNING);
        n += outbox_job_ids(w->outbox, ids + n, PROTO_MAX_RUNNING - n);
    }
    ids[n] = NULL;
    for (int i = 0; i < w->nsocks; i++) {
        if (only >= 0 && i != only)
            continue;
        proto_msg_t msg = {.type = type, .slots = credit.slots, .free_slots = credit.free_slots,
                           .echo = w->echo[i]};
        snprintf(msg.task_types, sizeof msg.task_types, "%s", credit.task_types);
        snprintf(msg.labels, sizeof msg.labels, "%s", w->wcfg->labels);
        jobs_serves(w->jobs, msg.serves, sizeof msg.serves);
        if (listed) {
            msg.running = ids;
            msg.nrunning = n;
        }
        s_send(w, i, &msg);
    }
}

/* Tells the master that sent it that a JOB found no room here, with what
 * room there is: it was not taken, and the master sends it elsewhere. */
static void s_refuse(worker_t *w, int master, const proto_msg_t *job)
{
    proto_msg_t msg = {.type = PROTO_REFUSED, .attempt = job->attempt};
    s_credit(w, &msg);
    snprintf(msg.job_id, sizeof msg.job_id, "%s", job->job_id);
    snprintf(msg.trigger_id, sizeof msg.trigger_id, "%s", job->trigger_id);
    snprintf(msg.task_type, sizeof msg.task_type, "%s", job->task_type);
    s_send(w, master, &msg);
    metric_inc(s_m_refused, (const char *[]){job->task_type}, 1);
}

static void s_announce(worker_t *w, proto_type_t type)
{
    s_announce_to(w, type, -1);
}

/* True if what masters were last told no longer holds: a task type
 * filled up or got room, or the worker filled up or got room. */
static int s_credit_changed(worker_t *w)
{
    char now[sizeof w->advertised];
    jobs_advertise(w->jobs, now, sizeof now);
    int free_slots = jobs_free_slots(w->jobs);
    return strcmp(now, w->advertised) != 0 || (free_slots > 0) != (w->advertised_free > 0);
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
        /* An attempt that ran here and whose FINISHED no master has
         * acknowledged yet: a master that took the partition over before
         * hearing from this worker sends it again as never started. It is
         * not run twice; its FINISHED answers the JOB. */
        proto_msg_t *done = outbox_find(w->outbox, msg.job_id, msg.attempt);
        if (done) {
            log_info("JOB for an attempt that already ran here; its FINISHED sent again",
                     "job=%s attempt=%d", msg.job_id, msg.attempt);
            s_send(w, master, done);
        } else if (!jobs_accept(w->jobs, master, &msg)) {
            s_refuse(w, master, &msg);
        }
    } else if (msg.type == PROTO_PING) {
        /* A master taking partitions over asks what runs here: the answer
         * it waits for is one written after the question reached us, so
         * the list in it includes every JOB received before. */
        w->echo[master] = msg.token;
        s_announce_to(w, s_stop ? PROTO_BYE : PROTO_HEARTBEAT, master);
    } else if (msg.type == PROTO_CANCEL) {
        int found = jobs_cancel(w->jobs, msg.job_id, msg.attempt, msg.reason);
        log_info("cancel received", "job=%s attempt=%d reason=%s found=%d", msg.job_id,
                 msg.attempt, msg.reason[0] ? msg.reason : "cancelled", found);
    } else if (msg.type == PROTO_ACK) {
        w->acks[master] = 1;
        if (!outbox_ack(w->outbox, msg.job_id, msg.attempt))
            log_debug("ACK for nothing waiting", "job=%s attempt=%d", msg.job_id, msg.attempt);
    } else {
        proto_dropped++;
        log_warn("unexpected message type from a master", "type=%s", proto_type_name(msg.type));
    }
    proto_msg_reset(&msg);
    zmsg_destroy(&z);
}

/* While draining: FINISHED messages a master that ACKs may still ACK. */
static int s_awaiting_acks(const worker_t *w)
{
    if (outbox_size(w->outbox) == 0)
        return 0;
    for (int i = 0; i < w->nsocks; i++)
        if (w->acks[i])
            return 1;
    return 0;
}

/* Polls the masters, the signal pipe and the jobs' fds for up to wait ms
 * and handles what is ready. */
static void s_poll(worker_t *w, int64_t wait)
{
    size_t need = (size_t)(w->nsocks + 1 + jobs_nitems(w->jobs));
    if (need > w->nitems_cap) {
        w->nitems_cap = need * 2;
        free(w->items);
        w->items = malloc(w->nitems_cap * sizeof *w->items);
    }
    zmq_pollitem_t *items = w->items;
    size_t cap = w->nitems_cap;
    int n = 0;
    for (int i = 0; i < w->nsocks; i++)
        items[n++] = (zmq_pollitem_t){zsock_resolve(w->socks[i]), 0, ZMQ_POLLIN, 0};
    items[n++] = (zmq_pollitem_t){NULL, s_wake[0], ZMQ_POLLIN, 0};
    int njobs = jobs_pollitems(w->jobs, items + n, (int)(cap - (size_t)n));
    if (zmq_poll(items, n + njobs, (long)wait) < 0) {
        if (errno != EINTR)
            log_warn("zmq_poll failed", "reason=\"%s\"", zmq_strerror(errno));
        return;
    }
    if (items[w->nsocks].revents) {
        char buf[64];
        while (read(s_wake[0], buf, sizeof buf) > 0)
            ;
    }
    for (int i = 0; i < w->nsocks; i++)
        for (int k = 0; k < 1000 && (zsock_events(w->socks[i]) & ZMQ_POLLIN); k++)
            s_on_message(w, i);
    jobs_on_events(w->jobs, items + n, njobs);
}

static void s_loop(worker_t *w)
{
    int64_t next_hb = 0, drain_until = 0, hard_stop = 0;
    int draining = 0, forced = 0;
    for (;;) {
        if (s_stop && !draining) {
            draining = 1;
            drain_until = clock_mono_ms() + w->cfg->drain_timeout_ms;
            s_announce(w, PROTO_BYE);
            log_info("draining", "running=%zu queued=%zu", jobs_running(w->jobs),
                     jobs_queued(w->jobs));
        }
        if (s_child) {
            s_child = 0;
            jobs_child_exited(w->jobs);
        }
        int64_t next = jobs_advance(w->jobs);
        int64_t mono = clock_mono_ms();
        if (draining) {
            int idle = jobs_running(w->jobs) == 0 && jobs_queued(w->jobs) == 0;
            if (idle && (forced || !s_awaiting_acks(w) || mono >= drain_until))
                break;
            if (!forced && mono >= drain_until) {
                log_warn("drain timeout: ending the jobs still here", "running=%zu queued=%zu",
                         jobs_running(w->jobs), jobs_queued(w->jobs));
                jobs_shutdown(w->jobs);
                forced = 1;
                hard_stop = mono + w->kill_grace_ms + 2000;
                continue;
            }
            if (forced && mono >= hard_stop) {
                log_warn("processes did not exit after SIGKILL; leaving", "running=%zu",
                         jobs_running(w->jobs));
                break;
            }
        }
        if (mono >= next_hb) {
            s_announce(w, draining ? PROTO_BYE : PROTO_HEARTBEAT);
            outbox_resend(w->outbox, mono, s_send_resend, w);
            jobs_child_exited(w->jobs); /* in case a SIGCHLD was missed */
            next_hb = mono + w->cfg->heartbeat_ms;
        } else if (!draining && s_credit_changed(w)) {
            s_announce(w, PROTO_HEARTBEAT);
        }
        int64_t until = next_hb < next ? next_hb : next;
        if (draining && !forced && drain_until < until)
            until = drain_until;
        if (forced && hard_stop < until)
            until = hard_stop;
        int64_t wait = until - clock_mono_ms();
        s_poll(w, wait < 0 ? 0 : wait);
    }
}

/* The kill grace period: SKED_KILL_GRACE_MS, else the file's, else 5 s. */
static int s_kill_grace(const config_t *cfg, const wconfig_t *wcfg, int *out, err_t *err)
{
    const char *v = cfg->kill_grace_ms;
    *out = wcfg->kill_grace_ms >= 0 ? wcfg->kill_grace_ms : 5000;
    if (!*v)
        return 0;
    char *end;
    errno = 0;
    long ms = strtol(v, &end, 10);
    if (errno || end == v || *end || ms < 0 || ms > 3600000)
        return err_set(err, ERR_INVALID,
                       "invalid SKED_KILL_GRACE_MS '%.40s': a number of ms from 0 to 3600000", v);
    *out = (int)ms;
    return 0;
}

static wconfig_t *s_load_types(const config_t *cfg, err_t *err)
{
    const char *path = cfg->worker_config;
    if (!*path)
        return wconfig_builtins(cfg->task_types, err);
    if (getenv("SKED_TASK_TYPES"))
        log_warn("SKED_TASK_TYPES ignored: the worker config file lists the task types",
                 "config=%s", path);
    return wconfig_load(path, err);
}

static int s_connect(worker_t *w)
{
    char list[sizeof w->cfg->masters];
    snprintf(list, sizeof list, "%s", w->cfg->masters);
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!*ep)
            continue;
        if (w->nsocks == MAX_MASTERS) {
            log_error("too many masters", "max=%d", MAX_MASTERS);
            return -1;
        }
        zsock_t *s = zsock_new(ZMQ_DEALER);
        zsock_set_linger(s, 1000);
        zsock_set_sndhwm(s, 100000);
        /* A connection silent for three heartbeats is dropped and made
         * again, and a connect that gets no answer is given up after one
         * heartbeat and retried: after a network cut heals, the worker is
         * back within about a heartbeat, instead of waiting out TCP's
         * retransmission backoff (seconds to minutes). The peer is told
         * the same timeout (TTL), so the master drops its side too. */
        int hb = w->cfg->heartbeat_ms;
        zsock_set_heartbeat_ivl(s, hb);
        zsock_set_heartbeat_timeout(s, 3 * hb);
        zsock_set_heartbeat_ttl(s, 3 * hb);
        zsock_set_connect_timeout(s, hb);
        if (zsock_connect(s, "%s", ep) < 0) {
            log_error("cannot connect to master", "endpoint=%s", ep);
            zsock_destroy(&s);
            return -1;
        }
        w->socks[w->nsocks++] = s;
    }
    if (w->nsocks == 0) {
        log_error("no masters configured", "hint=\"set SKED_MASTERS\"");
        return -1;
    }
    return 0;
}

static int s_uses_http(const wconfig_t *wcfg)
{
    for (int i = 0; i < wcfg->ntypes; i++)
        if (wcfg->types[i].kind == HANDLER_HTTP)
            return 1;
    return 0;
}

static void s_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void s_teardown(worker_t *w, int http)
{
    jobs_destroy(&w->jobs);
    if (outbox_size(w->outbox) || outbox_dropped(w->outbox) || outbox_expired(w->outbox))
        log_info("outbox", "unacknowledged=%zu dropped=%llu expired=%llu", outbox_size(w->outbox),
                 (unsigned long long)outbox_dropped(w->outbox),
                 (unsigned long long)outbox_expired(w->outbox));
    outbox_destroy(&w->outbox);
    for (int i = 0; i < w->nsocks; i++)
        zsock_destroy(&w->socks[i]);
    free(w->items);
    wconfig_destroy(&w->wcfg);
    if (http)
        curl_global_cleanup();
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
    worker_t w = {.cfg = &cfg};
    if (!(w.wcfg = s_load_types(&cfg, &err)) || s_kill_grace(&cfg, w.wcfg, &w.kill_grace_ms, &err) < 0) {
        log_error("cannot start", "reason=\"%s\"", err.msg);
        wconfig_destroy(&w.wcfg);
        return 2;
    }
    w.slots = getenv("SKED_WORKER_SLOTS") || !w.wcfg->slots ? cfg.worker_slots : w.wcfg->slots;
    int http = s_uses_http(w.wcfg);
    if (http && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        log_error("cannot start", "reason=\"libcurl initialisation failed\"");
        wconfig_destroy(&w.wcfg);
        return 2;
    }
    zsys_init();
    zsys_handler_set(NULL);
    if (pipe(s_wake) < 0) {
        log_error("cannot start", "reason=\"pipe: %s\"", strerror(errno));
        return 2;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(s_wake[i], F_SETFL, fcntl(s_wake[i], F_GETFL) | O_NONBLOCK);
        fcntl(s_wake[i], F_SETFD, FD_CLOEXEC);
    }
    s_signals();
    w.jobs = jobs_new(w.wcfg, w.slots, w.kill_grace_ms, s_send_job_msg, &w);
    w.outbox = outbox_new(OUTBOX_MAX_ENTRIES, OUTBOX_MAX_BYTES, OUTBOX_GIVE_UP_MS, cfg.heartbeat_ms);
    if (s_connect(&w) < 0) {
        s_teardown(&w, http);
        return 2;
    }
    char types[512];
    jobs_advertise(w.jobs, types, sizeof types);
    log_info("worker started", "masters=%s slots=%d task_types=%s labels=%s config=%s",
             cfg.masters, w.slots, types, w.wcfg->labels[0] ? w.wcfg->labels : "-",
             w.wcfg->path[0] ? w.wcfg->path : "-");
    s_metrics_init();
    s_metrics_update(&w);
    if (cfg.metrics_addr[0] && metrics_serve(cfg.metrics_addr, &err) < 0) {
        log_error("cannot serve metrics", "addr=%s reason=\"%s\"", cfg.metrics_addr, err.msg);
        s_teardown(&w, http);
        return 1;
    }
    s_announce(&w, PROTO_HELLO);
    s_loop(&w);
    metrics_stop();
    log_info("worker stopped", "running=%zu unacknowledged=%zu", jobs_running(w.jobs),
             outbox_size(w.outbox));
    s_teardown(&w, http);
    metrics_reset_all();
    close(s_wake[0]);
    close(s_wake[1]);
    return 0;
}
