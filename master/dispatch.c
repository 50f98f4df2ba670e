/*
 * dispatch.c - workers, their credit, the pending queue and job status.
 *
 * Credit-based (zguide's load-balancing broker): a worker reports its free
 * slots in HELLO and every HEARTBEAT; the master sends a job only to a
 * worker serving the task type with credit left, choosing the one with the
 * most. Jobs nobody can take stay pending (status "queued" in the store),
 * neither lost nor failed.
 *
 * Status from workers is persisted by _id on the job document; an update
 * never moves a job out of a final state, so duplicates are harmless.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/schedule.h"

#include <string.h>

typedef struct {
    char key[64]; /* hex of the ROUTER identity */
    zframe_t *identity;
    char node_id[PROTO_ID_MAX];
    char task_types[512];
    int slots, credit, inflight;
    int64_t last_seen;
    int draining;
} worker_t;

typedef struct {
    job_t *job;
    char worker_key[64];
    int64_t sent_at;
} flight_t;

struct dispatch {
    master_t *m;
    zhashx_t *workers; /* key -> worker_t*, owns */
    zlistx_t *pending; /* job_t*, owns */
    zhashx_t *flights; /* job id -> flight_t*, owns */
    uint64_t seq;
};

void job_destroy(job_t **job_p)
{
    job_t *job = *job_p;
    if (job) {
        free(job->parameters);
        free(job);
        *job_p = NULL;
    }
}

static void s_worker_free(void **item)
{
    worker_t *w = *item;
    if (w) {
        zframe_destroy(&w->identity);
        free(w);
        *item = NULL;
    }
}

static void s_flight_free(void **item)
{
    flight_t *f = *item;
    if (f) {
        job_destroy(&f->job);
        free(f);
        *item = NULL;
    }
}

static void s_job_free(void **item)
{
    job_destroy((job_t **)item);
}

dispatch_t *dispatch_new(master_t *m)
{
    dispatch_t *d = calloc(1, sizeof *d);
    d->m = m;
    d->workers = zhashx_new();
    zhashx_set_destructor(d->workers, s_worker_free);
    d->flights = zhashx_new();
    zhashx_set_destructor(d->flights, s_flight_free);
    d->pending = zlistx_new();
    zlistx_set_destructor(d->pending, s_job_free);
    return d;
}

void dispatch_destroy(dispatch_t **self_p)
{
    dispatch_t *d = *self_p;
    if (!d)
        return;
    zhashx_destroy(&d->workers);
    zhashx_destroy(&d->flights);
    zlistx_destroy(&d->pending);
    free(d);
    *self_p = NULL;
}

size_t dispatch_pending(const dispatch_t *self)
{
    return zlistx_size(self->pending);
}

void dispatch_submit(dispatch_t *self, job_t **job)
{
    zlistx_add_end(self->pending, *job);
    *job = NULL;
}

static int s_serves(const worker_t *w, const char *task_type)
{
    size_t n = strlen(task_type);
    for (const char *p = w->task_types; *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && strncmp(p, task_type, n) == 0)
            return 1;
        if (!c)
            break;
        p = c + 1;
    }
    return 0;
}

static worker_t *s_pick(dispatch_t *d, const char *task_type)
{
    worker_t *best = NULL;
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (!w->draining && w->credit > 0 && s_serves(w, task_type) &&
            (!best || w->credit > best->credit))
            best = w;
    return best;
}

/* Sets fields on a job document unless it is already final. */
static void s_update_job(dispatch_t *d, const char *job_id, bson_t *set)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(job_id), "status", "{", "$in", "[",
                              BCON_UTF8("queued"), BCON_UTF8("running"), "]", "}");
    bson_t update = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT(&update, "$set", set);
    bson_error_t berr;
    if (!mongoc_collection_update_one(store_coll(d->m->store, "jobs"), filter, &update, NULL, NULL,
                                      &berr))
        log_warn("cannot save job status", "job=%s reason=\"%s\"", job_id, berr.message);
    bson_destroy(filter);
    bson_destroy(&update);
    bson_destroy(set);
}

static int s_send(dispatch_t *d, worker_t *w, const job_t *job)
{
    proto_msg_t msg = {.type = PROTO_JOB, .seq = ++d->seq, .attempt = job->attempt,
                       .scheduled_for = job->scheduled_for,
                       .max_execution_time = job->max_execution_time};
    snprintf(msg.node_id, sizeof msg.node_id, "%s", d->m->cfg->node_id);
    snprintf(msg.job_id, sizeof msg.job_id, "%s", job->id);
    snprintf(msg.trigger_id, sizeof msg.trigger_id, "%s", job->trigger_id);
    snprintf(msg.task_type, sizeof msg.task_type, "%s", job->task_type);
    msg.parameters = job->parameters;
    err_t err = {0};
    zmsg_t *z = proto_encode(&msg, &err);
    if (!z) {
        log_error("cannot encode job", "job=%s reason=\"%s\"", job->id, err.msg);
        return -1;
    }
    zmsg_pushmem(z, zframe_data(w->identity), zframe_size(w->identity));
    if (zmsg_send(&z, d->m->router) < 0) {
        zmsg_destroy(&z);
        return -1;
    }
    return 0;
}

static void s_pump(dispatch_t *d)
{
    /* Rotate the queue once: each job is either sent or put back at the
     * end, so order is kept and a task type nobody serves blocks no other. */
    size_t n = zlistx_size(d->pending);
    for (size_t i = 0; i < n; i++) {
        job_t *job = zlistx_detach(d->pending, NULL);
        worker_t *w = s_pick(d, job->task_type);
        if (w && s_send(d, w, job) < 0) {
            log_warn("worker unreachable; dropping it", "worker=%s", w->node_id);
            w->credit = 0;
            w->last_seen = INT64_MIN / 2; /* expires on the next tick */
            w = NULL;
        }
        if (!w) {
            zlistx_add_end(d->pending, job);
            continue;
        }
        flight_t *f = calloc(1, sizeof *f);
        f->job = job;
        f->sent_at = clock_mono_ms();
        snprintf(f->worker_key, sizeof f->worker_key, "%s", w->key);
        zhashx_update(d->flights, job->id, f);
        w->credit--;
        w->inflight++;
        log_debug("job dispatched", "job=%s worker=%s", job->id, w->node_id);
    }
}

static worker_t *s_worker(dispatch_t *d, zframe_t *identity, const proto_msg_t *msg)
{
    char *hex = zframe_strhex(identity);
    char key[64];
    snprintf(key, sizeof key, "%s", hex);
    free(hex);
    worker_t *w = zhashx_lookup(d->workers, key);
    if (!w && (msg->type == PROTO_HELLO || msg->type == PROTO_HEARTBEAT)) {
        w = calloc(1, sizeof *w);
        snprintf(w->key, sizeof w->key, "%s", key);
        w->identity = zframe_dup(identity);
        zhashx_insert(d->workers, key, w);
        log_info("worker connected", "worker=%s task_types=%s slots=%d", msg->node_id,
                 msg->task_types, msg->slots);
    }
    if (w)
        w->last_seen = clock_mono_ms();
    return w;
}

static void s_on_status(dispatch_t *d, worker_t *w, const proto_msg_t *msg)
{
    flight_t *f = zhashx_lookup(d->flights, msg->job_id);
    if (f && f->job->attempt != msg->attempt)
        f = NULL; /* a stale attempt's message */
    /* The job's partition is in its id ("<trigger>@<ms>"); only its holder writes. */
    char trig[64];
    snprintf(trig, sizeof trig, "%.*s", (int)strcspn(msg->job_id, "@"), msg->job_id);
    if (!partitions_owned(d->m, sched_partition(trig, d->m->cfg->partitions))) {
        log_warn("status for a partition not held here; ignored", "job=%s", msg->job_id);
        return;
    }
    if (msg->type == PROTO_STARTED) {
        bson_t *set = BCON_NEW("status", BCON_UTF8("running"), "started_at", BCON_DATE_TIME(msg->at),
                               "worker_id", BCON_UTF8(msg->node_id), "attempt",
                               BCON_INT32(msg->attempt));
        s_update_job(d, msg->job_id, set);
        log_info("job started", "job=%s attempt=%d worker=%s", msg->job_id, msg->attempt,
                 msg->node_id);
        return;
    }
    bson_t *set = BCON_NEW("status", BCON_UTF8(msg->status), "finished_at", BCON_DATE_TIME(msg->at),
                           "worker_id", BCON_UTF8(msg->node_id), "attempt",
                           BCON_INT32(msg->attempt), "duration_ms", BCON_INT64(msg->duration_ms),
                           "result.exit_code", BCON_INT32(msg->exit_code));
    if (msg->error)
        BSON_APPEND_UTF8(set, "result.error", msg->error);
    if (msg->output)
        BSON_APPEND_UTF8(set, "result.output", msg->output);
    s_update_job(d, msg->job_id, set);
    log_info("job finished", "job=%s attempt=%d status=%s worker=%s", msg->job_id, msg->attempt,
             msg->status, msg->node_id);
    if (f) {
        if (w)
            w->inflight--;
        zhashx_delete(d->flights, msg->job_id);
    }
}

void dispatch_on_message(dispatch_t *self, zframe_t *identity, proto_msg_t *msg)
{
    worker_t *w = s_worker(self, identity, msg);
    switch (msg->type) {
    case PROTO_HELLO:
    case PROTO_HEARTBEAT:
        snprintf(w->node_id, sizeof w->node_id, "%s", msg->node_id);
        snprintf(w->task_types, sizeof w->task_types, "%s", msg->task_types);
        w->slots = msg->slots;
        w->credit = msg->free_slots;
        w->draining = 0;
        break;
    case PROTO_BYE:
        if (w) {
            w->draining = 1;
            log_info("worker draining", "worker=%s", w->node_id);
        }
        break;
    case PROTO_STARTED:
    case PROTO_FINISHED:
        s_on_status(self, w, msg);
        break;
    default:
        log_warn("unexpected message type from a worker", "type=%s", proto_type_name(msg->type));
        proto_dropped++;
        return;
    }
    s_pump(self);
}

/* A worker silent past the timeout is gone: its jobs become lost. */
static void s_expire(dispatch_t *d, int64_t now)
{
    zlistx_t *gone = zlistx_new();
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (now - w->last_seen > d->m->cfg->worker_timeout_ms)
            zlistx_add_end(gone, w);
    for (worker_t *w = zlistx_first(gone); w; w = zlistx_next(gone)) {
        log_warn("worker gone", "worker=%s inflight=%d", w->node_id, w->inflight);
        zlistx_t *lost = zlistx_new();
        for (flight_t *f = zhashx_first(d->flights); f; f = zhashx_next(d->flights))
            if (strcmp(f->worker_key, w->key) == 0)
                zlistx_add_end(lost, f->job->id);
        for (char *id = zlistx_first(lost); id; id = zlistx_next(lost)) {
            bson_t *set = BCON_NEW("status", BCON_UTF8("lost"), "finished_at",
                                   BCON_DATE_TIME(clock_wall_ms()), "result.error",
                                   BCON_UTF8("worker stopped heartbeating"));
            s_update_job(d, id, set);
            log_warn("job lost", "job=%s worker=%s", id, w->node_id);
            zhashx_delete(d->flights, id);
        }
        zlistx_destroy(&lost);
        zhashx_delete(d->workers, w->key);
    }
    zlistx_destroy(&gone);
}

void dispatch_tick(dispatch_t *self)
{
    s_expire(self, clock_mono_ms());
    s_pump(self);
}

json_t *dispatch_workers_json(const dispatch_t *self)
{
    json_t *arr = json_array();
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers))
        json_array_append_new(arr, json_pack("{s:s, s:s, s:i, s:i, s:i, s:b}", "node_id", w->node_id,
                                             "task_types", w->task_types, "slots", w->slots,
                                             "free_slots", w->credit < 0 ? 0 : w->credit,
                                             "inflight", w->inflight, "draining", w->draining));
    return arr;
}
