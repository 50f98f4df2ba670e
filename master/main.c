/*
 * main.c - sked-master: configuration, the ZeroMQ loop, signals.
 *
 * One ROUTER socket (SKED_MASTER_BIND) carries workers' HELLO, HEARTBEAT,
 * STARTED, FINISHED and BYE, and gateways' NOTIFY. The loop sleeps until
 * the next fire, the next retry or job deadline, the next message or the
 * next housekeeping tick; alert deliveries (alert.c) share its poll.
 * With SKED_METRICS_ADDR set, a background thread serves GET /metrics.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/schedule.h"

#include <jansson.h>
#include <signal.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Sockets of alert deliveries polled with the ROUTER (alert.c runs at
 * most a few transfers). */
#define MAX_ALERT_FDS 16

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

int master_stopping(void)
{
    return s_stop;
}

void master_trim(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* Worker messages that may cost a store write wait their turn (s_drain);
 * at most this many, then reading stops and ZeroMQ queues the rest. */
#define WAITING_MAX 20000

/* A waiting message: routing id, version, type and body packed in one
 * allocation. Kept as received, each of its frames costs a czmq frame
 * (about 340 bytes) and pins the connection's 8 KiB read buffer; the
 * queue of a burst of 10,000 jobs' STARTED, FINISHED and their resends
 * was most of a master's peak heap. */
#define WAIT_FRAMES 4

typedef struct {
    uint64_t rx;          /* its number in arrival order */
    const char *end;      /* a FINISHED: "<job id>#<attempt>" (key of ends_waiting); else "" */
    size_t size[WAIT_FRAMES];
    unsigned char bytes[]; /* the frames back to back, then end's text */
} waiting_t;

/* The key of a FINISHED's attempt in m->ends_waiting: "" if the message
 * is something else or malformed (decoding drops it later). */
static void s_end_key(zmsg_t *z, char *key, size_t size)
{
    key[0] = '\0';
    zmsg_first(z);
    zmsg_next(z);
    zframe_t *type = zmsg_next(z), *body = zmsg_next(z);
    if (!type || !body || !zframe_streq(type, "FINISHED"))
        return;
    json_t *j = json_loadb((const char *)zframe_data(body), zframe_size(body), 0, NULL);
    const char *id = json_string_value(json_object_get(j, "job_id"));
    json_t *attempt = json_object_get(j, "attempt");
    if (id && strlen(id) < PROTO_ID_MAX && json_is_integer(attempt))
        snprintf(key, size, "%s#%lld", id, (long long)json_integer_value(attempt));
    json_decref(j);
}

static void s_end_count(master_t *m, const char *key, int by)
{
    if (!key[0])
        return;
    intptr_t n = (intptr_t)zhashx_lookup(m->ends_waiting, key) + by;
    if (n > 0)
        zhashx_update(m->ends_waiting, key, (void *)n);
    else
        zhashx_delete(m->ends_waiting, key);
}

static int s_end_waiting(master_t *m, const char *key)
{
    return key[0] && zhashx_lookup(m->ends_waiting, key) != NULL;
}

int master_end_waiting(master_t *m, const char *job_id, int attempt)
{
    char key[PROTO_ID_MAX + 16];
    snprintf(key, sizeof key, "%s#%d", job_id, attempt);
    return s_end_waiting(m, key);
}

static void s_item_free(void **item)
{
    free(*item);
    *item = NULL;
}

/* Packs z (consumed) with its end key. */
static waiting_t *s_pack(zmsg_t **z_p, uint64_t rx, const char *end)
{
    zmsg_t *z = *z_p;
    size_t total = 0, off = 0, elen = strlen(end);
    for (zframe_t *f = zmsg_first(z); f; f = zmsg_next(z))
        total += zframe_size(f);
    waiting_t *w = malloc(sizeof *w + total + elen + 1);
    w->rx = rx;
    int i = 0;
    for (zframe_t *f = zmsg_first(z); f; f = zmsg_next(z), i++) {
        w->size[i] = zframe_size(f);
        memcpy(w->bytes + off, zframe_data(f), w->size[i]);
        off += w->size[i];
    }
    memcpy(w->bytes + off, end, elen + 1);
    w->end = (const char *)w->bytes + off;
    zmsg_destroy(z_p);
    return w;
}

static zmsg_t *s_unpack(const waiting_t *w)
{
    zmsg_t *z = zmsg_new();
    size_t off = 0;
    for (int i = 0; i < WAIT_FRAMES; off += w->size[i++])
        zmsg_addmem(z, w->bytes + off, w->size[i]);
    return z;
}

/* A NOTIFY kept while its trigger's partition loads (m->later). */
typedef struct {
    char op[16];
    char trigger_id[64];
    char job_id[PROTO_ID_MAX];
} later_t;

/* A gateway's NOTIFY: a trigger changed, a job to run or to cancel. One
 * for a partition being loaded waits for the load's end: the load would
 * otherwise read the trigger after it and undo a change, and a job of the
 * partition is the takeover scan's until that is over. */
static void s_notify(master_t *m, const char *op, const char *trigger_id, const char *job_id)
{
    if (partitions_loading(m, sched_partition(trigger_id, m->cfg->partitions))) {
        later_t *l = calloc(1, sizeof *l);
        snprintf(l->op, sizeof l->op, "%s", op);
        snprintf(l->trigger_id, sizeof l->trigger_id, "%s", trigger_id);
        snprintf(l->job_id, sizeof l->job_id, "%s", job_id);
        zlistx_add_end(m->later, l);
    } else if (strcmp(op, "run") == 0 && job_id[0]) {
        sched_run_manual(m->sched, trigger_id, job_id);
    } else if (strcmp(op, "cancel") == 0 && job_id[0]) {
        dispatch_cancel_job(m->disp, job_id);
    } else {
        sched_reload(m->sched, trigger_id);
    }
}

void master_loaded(master_t *m)
{
    for (later_t *l; (l = zlistx_first(m->later));) {
        s_notify(m, l->op, l->trigger_id, l->job_id);
        zlistx_delete(m->later, zlistx_cursor(m->later));
    }
}

static void s_handle(master_t *m, zmsg_t *z, uint64_t rx)
{
    m->rx_now = rx;
    zframe_t *identity = zmsg_pop(z);
    proto_msg_t msg;
    err_t err = {0};
    if (!identity || proto_decode(z, &msg, &err) < 0) {
        proto_dropped++;
        log_warn("malformed message dropped", "reason=\"%s\" dropped_total=%llu", err.msg,
                 (unsigned long long)proto_dropped);
        zframe_destroy(&identity);
        return;
    }
    if (msg.type == PROTO_NOTIFY)
        s_notify(m, msg.op, msg.trigger_id, msg.job_id);
    else
        dispatch_on_message(m->disp, identity, &msg);
    proto_msg_reset(&msg);
    zframe_destroy(&identity);
}

/* True if the message (identity, version, type, body) waits its turn:
 * STARTED, OUTPUT and FINISHED, whose store writes take tens of ms each on
 * a loaded store, and a HELLO behind them (a restarted worker's HELLO ends
 * the old process's flights, so it must not overtake their reports). */
static int s_waits(master_t *m, zmsg_t *z)
{
    zmsg_first(z);
    zmsg_next(z);
    zframe_t *type = zmsg_next(z);
    if (!type || zmsg_size(z) != WAIT_FRAMES) /* else malformed: dropped at once */
        return 0;
    return zframe_streq(type, "STARTED") || zframe_streq(type, "OUTPUT") ||
           zframe_streq(type, "FINISHED") ||
           (zframe_streq(type, "HELLO") && zlistx_size(m->waiting) > 0);
}

/* Reads what has arrived and handles it, at most 1000 steps, until the
 * monotonic time `until`; with `fire`, an on-time fire goes between two.
 * Status messages wait in m->waiting, in arrival order, and are handled
 * one at a time whenever nothing new is to be read. So a HEARTBEAT's
 * credit reaches dispatch at once, even behind a burst of FINISHED
 * messages being recorded: the slots those jobs freed get new jobs while
 * their ends are written. */
static void s_drain(master_t *m, int64_t until, int fire)
{
    for (int i = 0; i < 1000; i++) {
        if (clock_mono_ms() >= until)
            break; /* the tick comes first: the rest waits a turn */
        zmsg_t *z = NULL;
        uint64_t rx = 0;
        if (zlistx_size(m->waiting) < WAITING_MAX && (zsock_events(m->router) & ZMQ_POLLIN)) {
            if (!(z = zmsg_recv(m->router)))
                break;
            rx = ++m->rx;
            if (s_waits(m, z)) {
                char end[PROTO_ID_MAX + 16];
                s_end_key(z, end, sizeof end);
                if (s_end_waiting(m, end)) {
                    /* A resend (workers resend FINISHED until ACKed) of one
                     * waiting already: that one's ACK answers both, and a
                     * worker whose ACK goes astray resends again. */
                    zmsg_destroy(&z);
                    stats_status_resend_dropped();
                    continue;
                }
                s_end_count(m, end, 1);
                zlistx_add_end(m->waiting, s_pack(&z, rx, end));
                continue;
            }
        } else if (zlistx_size(m->waiting)) {
            waiting_t *w = zlistx_first(m->waiting);
            z = s_unpack(w);
            rx = w->rx;
            s_end_count(m, w->end, -1);
            zlistx_delete(m->waiting, zlistx_cursor(m->waiting));
        } else {
            break;
        }
        if (fire)
            sched_fire_on_time(m->sched, until);
        s_handle(m, z, rx);
        zmsg_destroy(&z);
    }
    dispatch_flush(m->disp); /* the ends handled in this pass, to the status writer */
    dispatch_collect(m->disp); /* those it has written: acknowledged */
    stats_status_waiting(zlistx_size(m->waiting));
}

/* A turn inside a load takes at most this long: a load of 1,000,000
 * triggers has about 8,000 of them. */
#define TURN_MS 20

void master_turn(master_t *m)
{
    if (!m->taking || m->turning)
        return;
    m->turning = 1;
    int64_t until = clock_mono_ms() + TURN_MS;
    s_drain(m, until, 1);
    sched_fire_due(m->sched, clock_wall_ms(), until);
    dispatch_turn(m->disp);
    m->turning = 0;
}

static int s_run(master_t *m)
{
    const config_t *cfg = m->cfg;
    int tick_ms = cfg->heartbeat_ms < cfg->lease_ttl_ms / 3 ? cfg->heartbeat_ms
                                                            : cfg->lease_ttl_ms / 3;
    int64_t next_tick = 0, next_prune = 0;
    int scanned = 0;
    zmq_pollitem_t items[2 + MAX_ALERT_FDS] = {{zsock_resolve(m->router), 0, ZMQ_POLLIN, 0},
                                               {NULL, writer_fd(m->writer), ZMQ_POLLIN, 0}};
    while (!s_stop) {
        int64_t mono = clock_mono_ms();
        if (mono >= next_tick) {
            err_t err = {0};
            /* Nothing is held before the scan: the keeper leaves the leases alone. */
            if (!scanned && lease_scan(m->store, m->leases, cfg->partitions, &err) < 0)
                log_warn("store not reachable yet", "reason=\"%s\"", err.msg);
            else if (!scanned && (scanned = 1))
                store_ensure_indexes(m->store);
            if (scanned) {
                partitions_tick(m);
                prune_tick(m, &next_prune);
                snapshot_tick(m);
            }
            dispatch_tick(m->disp);
            int64_t retake = partitions_retake_in(m); /* a dead master's lease expiring */
            next_tick = clock_mono_ms() + (retake >= 0 && retake < tick_ms ? retake : tick_ms);
        }
        int64_t now = clock_wall_ms();
        int64_t wait = next_tick - clock_mono_ms();
        int64_t due = sched_next_due(m->sched);
        if (due != INT64_MAX && due - now < wait)
            wait = due - now;
        int64_t timer = dispatch_next_timer(m->disp); /* retries and job deadlines */
        if (timer < wait)
            wait = timer;
        int64_t alerts = alert_next_ms(m->alert); /* curl's timeouts, alert retries */
        if (alerts < wait)
            wait = alerts;
        if (wait < 0 || zlistx_size(m->waiting) || sched_reconciling(m->sched) ||
            dispatch_busy(m->disp))
            wait = 0;
        int nitems = 2 + alert_pollitems(m->alert, items + 2, MAX_ALERT_FDS);
        if (zmq_poll(items, nitems, (long)wait) < 0 && errno != EINTR)
            break;
        partitions_alive(m);
        dispatch_scan_poll(m->disp); /* a takeover scan over: what it read is taken over */
        /* Drain what arrived, bounded. A message may cost a store write
         * (tens of ms on a loaded FerretDB), so a fire that falls due
         * meanwhile goes first rather than after the whole batch (unless
         * fires are late already: then messages are not starved), and the
         * housekeeping tick (membership, partitions) is not held up by a backlog. */
        s_drain(m, next_tick, 1);
        sched_fire_due(m->sched, clock_wall_ms(), next_tick);
        dispatch_pump(m->disp); /* the fires just claimed go to their workers before any save */
        int64_t mono_now = clock_mono_ms(), look = sched_next_due(m->sched) - clock_wall_ms();
        int busy = zlistx_size(m->waiting) > 0 || look <= 0;
        /* Saves stop at the next look at the schedule or the tick: at
         * 1,000 fires a second saving a master's 500 states took 400-700
         * ms, longer than fires are claimed ahead. With a fire due, only
         * a state waiting 2 x SCHED_SAVE_BUSY_MS gets its store call. A
         * state waits SKED_STATE_SAVE_MS even when idle: saving each
         * 1-s trigger after each fire took most of the store's time at
         * 1,000 fires a second, and the claims queued behind the saves. */
        int64_t save_until = next_tick;
        int64_t save_age = m->cfg->state_save_ms;
        if (busy && save_age < SCHED_SAVE_BUSY_MS)
            save_age = SCHED_SAVE_BUSY_MS;
        if (look <= 0)
            save_until = mono_now;
        else if (look < next_tick - mono_now)
            save_until = mono_now + look;
        sched_save_states(m->sched, -1, save_age, save_until);
        sched_reconcile_step(m->sched, next_tick, busy);
        dispatch_tick(m->disp);
        alert_tick(m->alert);
    }
    return 0;
}

/* On the way out: fires claimed ahead wait on their workers for their
 * time. Their starts and ends are taken (at most SKED_FIRE_AHEAD_MS + 1 s)
 * before the leases go, so the next owner finds them recorded, not
 * `queued` and in the way of its overlap policy. A fire that started is
 * waited for too, until it ends or the bound passes: a short job's end
 * comes milliseconds after its start. No fire is claimed now. */
static void s_settle(master_t *m)
{
    int64_t until = clock_mono_ms() + m->cfg->fire_ahead_ms + 1000;
    zmq_pollitem_t item = {zsock_resolve(m->router), 0, ZMQ_POLLIN, 0};
    while (dispatch_ahead_open(m->disp) > 0 && clock_mono_ms() < until) {
        if (zmq_poll(&item, 1, 50) < 0 && errno != EINTR)
            break;
        s_drain(m, until, 0);
        partitions_forget_lost(m); /* the keeper renews; leases it found lost are forgotten */
    }
}

/* Frees what main made, whatever got made. */
void master_write_begin(master_t *m)
{
    __atomic_add_fetch(&m->write_want, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(&m->write_mu);
    __atomic_sub_fetch(&m->write_want, 1, __ATOMIC_ACQ_REL);
}

void master_write_end(master_t *m)
{
    pthread_mutex_unlock(&m->write_mu);
}

static void s_cleanup(master_t *m)
{
    writer_destroy(&m->writer); /* the threads first: they read the leases */
    partitions_destroy(m);
    sched_destroy(&m->sched);
    snapshots_destroy(&m->snaps);
    dispatch_destroy(&m->disp);
    zsock_destroy(&m->router);
    zlistx_destroy(&m->waiting);
    zlistx_destroy(&m->later);
    zhashx_destroy(&m->ends_waiting);
    store_destroy(&m->store);
    alert_destroy(&m->alert);
    metrics_stop();
    metrics_reset_all();
}

int main(int argc, char **argv)
{
    config_t cfg;
    err_t err = {0};
    int rc = config_load(&cfg, CONFIG_ROLE_MASTER, "sked-master", argc, argv, NULL, &err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "sked-master: %s\n", err.msg);
        return rc < 0 ? 2 : 0;
    }
    config_init_log(&cfg, "master");
    zsys_init();
    zsys_handler_set(NULL);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    signal(SIGPIPE, SIG_IGN);

    master_t m = {.cfg = &cfg};
    pthread_mutex_init(&m.write_mu, NULL);
    stats_init();
    if (!(m.alert = alert_new(&m, &err))) {
        log_error("cannot start", "reason=\"%s\"", err.msg);
        s_cleanup(&m);
        return 2;
    }
    if (cfg.metrics_addr[0] && metrics_serve(cfg.metrics_addr, &err) < 0) {
        log_error("cannot start", "reason=\"cannot serve metrics: %s\"", err.msg);
        s_cleanup(&m);
        return 1;
    }
    m.store = store_new(cfg.mongo_uri, &err);
    if (!m.store) {
        log_error("cannot start", "reason=\"%s\"", err.msg);
        s_cleanup(&m);
        return 1;
    }
    m.router = zsock_new(ZMQ_ROUTER);
    zsock_set_router_mandatory(m.router, 1);
    zsock_set_linger(m.router, 0);
    zsock_set_rcvhwm(m.router, 100000);
    zsock_set_sndhwm(m.router, 100000);
    if (zsock_bind(m.router, "%s", cfg.master_bind) < 0) {
        log_error("cannot bind", "endpoint=%s reason=\"%s\"", cfg.master_bind,
                  zmq_strerror(zmq_errno()));
        s_cleanup(&m);
        return 1;
    }
    m.waiting = zlistx_new();
    m.ends_waiting = zhashx_new();
    zlistx_set_destructor(m.waiting, s_item_free);
    m.later = zlistx_new();
    zlistx_set_destructor(m.later, s_item_free);
    m.sched = sched_new(&m);
    m.snaps = snapshots_new(cfg.partitions);
    m.disp = dispatch_new(&m);
    if (partitions_init(&m, &err) < 0 || !(m.writer = writer_new(&m, &err))) {
        log_error("cannot start", "reason=\"%s\"", err.msg);
        s_cleanup(&m);
        return 1;
    }
    log_info("master started", "bind=%s partitions=%d lease_ttl_ms=%d metrics=%s alerts=%s",
             cfg.master_bind, cfg.partitions, cfg.lease_ttl_ms,
             cfg.metrics_addr[0] ? cfg.metrics_addr : "off", cfg.alert_url[0] ? "on" : "off");
    s_run(&m);
    log_info("master stopping", "pending=%zu unstarted=%zu", dispatch_pending(m.disp),
             dispatch_unstarted_in(m.disp, -1));
    s_settle(&m);
    partitions_release_all(&m);
    s_cleanup(&m);
    return 0;
}
