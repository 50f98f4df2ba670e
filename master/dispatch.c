/*
 * dispatch.c - workers, their credit, the pending queue, job status,
 * retries and timeouts.
 *
 * Credit-based (zguide's load-balancing broker): a worker reports its free
 * slots in HELLO and every HEARTBEAT; the master sends a job only to a
 * worker serving the task type with credit left, choosing the one with the
 * most. Jobs nobody can take stay pending (status "queued" or "retrying"
 * in the store), neither lost nor failed. A worker refuses a JOB it has
 * no room for (REFUSED: several masters may spend one worker's credit);
 * the job goes back to the pending queue, its attempt unchanged.
 *
 * A job sent to a worker is a flight (one per job id; it holds the job's
 * current attempt). An attempt ends with FINISHED, when its worker goes
 * silent ("lost"), or when no FINISHED came within max_execution_time +
 * TIMEOUT_GRACE_MS of STARTED ("timed_out": the worker hangs). An attempt
 * that ended failed, timed_out or lost is retried under the trigger's
 * retry_policy: the job document (one per fire, G1) goes to "retrying"
 * with the next attempt number and run_at, the finished attempt is pushed
 * onto its `attempts` array, and the next attempt waits in a min-heap of
 * timers (monotonic ms) until it is due, then joins the pending queue.
 * The same heap holds the running flights' deadlines.
 *
 * Status is persisted by _id, and every update's filter also requires a
 * non-final status and `attempt <= the message's attempt`: a duplicate or
 * a stale attempt's STARTED/FINISHED never moves a job out of a final
 * state nor overwrites a newer attempt.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/heap.h"
#include "common/log.h"
#include "common/schedule.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* A running attempt with max_execution_time that has not FINISHED this
 * long after it should have is declared timed_out by the master. */
#define TIMEOUT_GRACE_MS 5000

/* No retry waits longer than a year, whatever the policy says. */
#define MAX_RETRY_DELAY_S (365.0 * 86400)

typedef struct {
    char key[64]; /* hex of the ROUTER identity */
    zframe_t *identity;
    char node_id[PROTO_ID_MAX];
    char task_types[512]; /* types with a free slot now */
    char serves[512];     /* every type it runs (empty from older workers) */
    char labels[512];
    int slots, credit, inflight;
    uint64_t credit_rx; /* arrival number of the message that set credit */
    int64_t last_seen;
    int64_t echo;      /* token of the last PING it answered */
    int64_t pinged_at; /* monotonic ms of the last PING sent to it */
    int draining;
    int clash_logged; /* "two workers share a node id" said for this entry */
    zhashx_t *listed; /* job ids its last HELLO/HEARTBEAT/BYE listed (a set) */
    int unconfirmed;  /* flights moved here unlisted, waiting for a later listing (s_confirm) */
} worker_t;

typedef struct flight flight_t;

/* An entry of the timer heap: a retry waiting for its time (job set, owned)
 * or a running flight's deadline (flight set; embedded in that flight). */
typedef struct {
    heap_node_t hn; /* first: key = when it is due, monotonic ms */
    job_t *job;
    flight_t *flight;
} due_t;

struct flight {
    char id[PROTO_ID_MAX]; /* the job's, also its key in flights */
    job_t *job;
    char worker_key[64];
    char worker_id[PROTO_ID_MAX];
    int64_t sent_at;    /* monotonic ms */
    int64_t started_at; /* wall ms from STARTED, 0 = not started */
    due_t deadline;     /* in the heap once started, if the job has a limit */
    int started_unsaved; /* STARTED not yet persisted (deferred, or the store away) */
    int64_t started_due; /* monotonic ms from which a deferred STARTED is written */
    char *tail;         /* live output so far, last OUTPUT_TAIL_MAX bytes */
    size_t tail_len;
    int64_t tail_saved; /* monotonic ms of the last output_tail write */
    int withdrawn;      /* claimed ahead, its trigger changed: CANCEL sent (dispatch_withdraw) */
    int ahead;          /* sent before its time (claimed ahead), held by the worker until then */
    int64_t moved_unlisted; /* monotonic ms it moved to its worker's new connection unlisted; 0 = no */
};

/* Live output kept per running attempt and written to the job document
 * (`output_tail`) at most every OUTPUT_SAVE_MS: a store write per chunk
 * would cost more than the output is worth while a job runs. */
#define OUTPUT_TAIL_MAX (64 * 1024)
#define OUTPUT_SAVE_MS 2000

/* FINISHED messages persisted lately, remembered so that a worker's
 * resends of one (it resends until the ACK reaches it, and a backlog of
 * slow status writes delays ACKs) are acknowledged without another store
 * write. The oldest is forgotten first. */
#define RECENT_FINAL_MAX 16384

/* How long a STARTED waits before it is written (see s_on_started). */
#define STARTED_DEFER_MS 1000
/* A loop turn spends at most about this long writing deferred STARTEDs
 * (in bulks by `_id`); the rest go next turn, right after. One by one and
 * all at once, 5,000 jobs started together held a master's loop past its
 * leases' deadline. */
#define STARTED_BUDGET_MS 20

/* The most job updates handed to the status writer together
 * (dispatch_flush): one store command's worth (it writes them in ordered
 * bulks of that size, off the loop: writer.c). */
#define BATCH_MAX STORE_BULK_MAX

/* The longest a takeover waits for workers to answer its PING, in worker
 * timeouts (s_workers_heard). */
#define RECOVER_WAIT_TIMEOUTS 6

struct dispatch {
    master_t *m;
    zhashx_t *workers; /* key -> worker_t*, owns */
    zlistx_t *pending; /* job_t*, owns */
    zhashx_t *flights; /* job id -> flight_t*, owns */
    heap_t heap;       /* of due_t by hn.key; owns retry entries */
    zhashx_t *active;     /* trigger id -> count of its non-final jobs here (as intptr_t) */
    zhashx_t *buffered;   /* trigger id -> job_t* held by buffer_one, owns */
    zhashx_t *recovering; /* job id -> rec_t*: taken over, not yet placed, owns */
    zhashx_t *recent;     /* "job id#attempt" of FINISHED persisted lately -> (void *)1 */
    char **recent_ring;   /* RECENT_FINAL_MAX keys of recent, oldest at recent_next */
    size_t recent_next;
    int64_t recover_until; /* monotonic ms when unclaimed recovered jobs are placed */
    int64_t recover_started; /* monotonic ms the last takeover scan began */
    int64_t recover_token;   /* the PING every worker must answer before placing */
    zhashx_t *listed;      /* node ids of workers other live masters list (values unused) */
    int64_t last_expire;   /* monotonic ms of the last worker expiry check */
    int unsaved;           /* flights whose STARTED is not persisted yet */
    int64_t lag_max[2];    /* largest fire lag (ms) in this and the previous minute */
    int64_t lag_minute;    /* monotonic minute lag_max[0] belongs to */
    int64_t unsaved_retry; /* monotonic ms of the next attempt to persist them */
    int unsaved_more;      /* some are due and were left for the next turn */
    struct {
        char type[64];
        int limit;
        int64_t retry_at; /* monotonic ms: at capacity, try again then */
    } limits[32];          /* SKED_TASK_LIMITS */
    int nlimits;
    uint64_t seq;
    uint64_t rng;
    wr_item_t batch[BATCH_MAX]; /* job updates not yet handed to the writer (dispatch_flush) */
    int nbatch;
    zhashx_t *writing;  /* "job id#attempt" of FINISHEDs batched or with the writer -> count (intptr_t) */
    zhashx_t *updating; /* job id of each update batched or with the writer -> count (intptr_t) */
    zframe_t *batching; /* while a FINISHED is handled: its sender, and */
    int batched;        /* whether its write joined the batch */
    scan_t *scan;       /* the takeover scan under way, or NULL */
    zhashx_t *claimed;  /* ids of the jobs written here in partitions it scans (values unused) */
};

/* A job taken over from the store after gaining its partition. */
typedef struct {
    job_t *job;
    char status[16];    /* queued, running, retrying */
    int64_t started_at; /* wall ms */
    int64_t run_at;     /* wall ms, for retrying */
} rec_t;

/* How an attempt ended, as written to the job and its `attempts` array. */
typedef struct {
    const char *status;
    const char *worker_id;
    int64_t started_at, finished_at; /* wall ms, 0 = unknown */
    int has_exit_code, exit_code;
    int64_t duration_ms; /* < 0 = unknown */
    const char *error, *output; /* may be NULL */
} outcome_t;

void job_destroy(job_t **job_p)
{
    job_t *job = *job_p;
    if (job) {
        free(job->parameters);
        free(job->notify);
        free(job);
        *job_p = NULL;
    }
}

static void s_worker_free(void **item)
{
    worker_t *w = *item;
    if (w) {
        zframe_destroy(&w->identity);
        zhashx_destroy(&w->listed);
        free(w);
        *item = NULL;
    }
}

/* Only through s_flight_done, which takes the deadline out of the heap. */
static void s_flight_free(void **item)
{
    flight_t *f = *item;
    if (f) {
        job_destroy(&f->job);
        free(f->tail);
        free(f);
        *item = NULL;
    }
}

static void s_job_free(void **item)
{
    job_destroy((job_t **)item);
}

static void s_rec_free(void **item)
{
    rec_t *r = *item;
    if (r) {
        job_destroy(&r->job);
        free(r);
        *item = NULL;
    }
}

/* ---- per-trigger activity (overlap policies) ---------------------------- */

int dispatch_active(dispatch_t *self, const char *trigger_id)
{
    return (int)(intptr_t)zhashx_lookup(self->active, trigger_id);
}

/* Adds delta to key's count in h (intptr_t values); 0 removes it. */
static void s_count(zhashx_t *h, const char *key, intptr_t delta)
{
    intptr_t n = (intptr_t)zhashx_lookup(h, key) + delta;
    if (n > 0)
        zhashx_update(h, key, (void *)n);
    else
        zhashx_delete(h, key);
}

/* Pending order: higher priority first (zlistx sorts ascending). */
static int s_cmp_priority(const void *a, const void *b)
{
    int pa = ((const job_t *)a)->priority, pb = ((const job_t *)b)->priority;
    return pa > pb ? -1 : pa < pb ? 1 : 0;
}

/* Queues a job by priority; FIFO among equals (insertion from the end
 * stops after the last item that sorts at or before it). */
static void s_pending_add(dispatch_t *d, job_t *job)
{
    zlistx_insert(d->pending, job, false);
}

/* A job is final as far as this master goes: it is forgotten, and a fire
 * that buffer_one held for its trigger is released. */
static void s_job_final(dispatch_t *d, job_t **job_p)
{
    job_t *job = *job_p;
    if (!job)
        return;
    char trig[64];
    snprintf(trig, sizeof trig, "%s", job->trigger_id);
    job_destroy(job_p);
    s_count(d->active, trig, -1);
    job_t *held = dispatch_active(d, trig) == 0 ? zhashx_lookup(d->buffered, trig) : NULL;
    if (held) {
        zhashx_delete(d->buffered, trig);
        s_count(d->active, trig, 1);
        s_pending_add(d, held);
        log_info("buffered fire released", "job=%s", held->id);
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

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
    zlistx_set_comparator(d->pending, s_cmp_priority);
    d->active = zhashx_new();
    d->buffered = zhashx_new(); /* no destructor: jobs leave it to run */
    d->recovering = zhashx_new();
    d->recent = zhashx_new();
    d->recent_ring = calloc(RECENT_FINAL_MAX, sizeof *d->recent_ring);
    d->listed = zhashx_new();
    zhashx_set_destructor(d->recovering, s_rec_free);
    d->rng = (uint64_t)zclock_usecs() ^ ((uint64_t)(uintptr_t)d << 16);
    d->writing = zhashx_new();
    d->updating = zhashx_new();
    d->claimed = zhashx_new();
    char list[sizeof m->cfg->task_limits];
    snprintf(list, sizeof list, "%s", m->cfg->task_limits);
    for (char *save = NULL, *kv = strtok_r(list, ",", &save); kv && d->nlimits < 32;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        int n = eq ? atoi(eq + 1) : 0;
        if (!eq || n < 1 || eq - kv >= 64) {
            log_warn("ignoring SKED_TASK_LIMITS entry", "entry=%s", kv);
            continue;
        }
        snprintf(d->limits[d->nlimits].type, 64, "%.*s", (int)(eq - kv), kv);
        d->limits[d->nlimits++].limit = n;
    }
    return d;
}

void dispatch_destroy(dispatch_t **self_p)
{
    dispatch_t *d = *self_p;
    if (!d)
        return;
    for (size_t i = 0; i < d->heap.n; i++) {
        due_t *e = (due_t *)d->heap.v[i];
        if (e->job) { /* a retry entry: ours; deadlines live in flights */
            job_destroy(&e->job);
            free(e);
        }
    }
    heap_free(&d->heap);
    zhashx_destroy(&d->workers);
    zhashx_destroy(&d->flights);
    zlistx_destroy(&d->pending);
    zhashx_destroy(&d->active);
    for (job_t *job = zhashx_first(d->buffered); job; job = zhashx_next(d->buffered))
        job_destroy(&job);
    zhashx_destroy(&d->buffered);
    zhashx_destroy(&d->recovering);
    zhashx_destroy(&d->recent);
    for (size_t i = 0; i < RECENT_FINAL_MAX; i++)
        free(d->recent_ring[i]);
    free(d->recent_ring);
    zhashx_destroy(&d->listed);
    for (int i = 0; i < d->nbatch; i++) { /* not sent: the workers resend them */
        bson_destroy(d->batch[i].update);
        zframe_destroy(&d->batch[i].identity);
    }
    zhashx_destroy(&d->writing);
    zhashx_destroy(&d->updating);
    zlistx_t *scanned = scan_finish(&d->scan, NULL, NULL); /* stopped: taken over by no one */
    zlistx_destroy(&scanned);
    zhashx_destroy(&d->claimed);
    free(d);
    *self_p = NULL;
}

size_t dispatch_pending(const dispatch_t *self)
{
    return zlistx_size(self->pending);
}

void dispatch_submit(dispatch_t *self, job_t **job)
{
    s_count(self->active, (*job)->trigger_id, 1);
    s_pending_add(self, *job);
    *job = NULL;
}

size_t dispatch_unstarted_in(dispatch_t *self, int partition)
{
    size_t n = 0;
    for (flight_t *f = zhashx_first(self->flights); f; f = zhashx_next(self->flights))
        n += !f->started_at && !f->withdrawn && (partition < 0 || f->job->partition == partition);
    return n;
}

size_t dispatch_ahead_open(dispatch_t *self)
{
    size_t n = 0;
    for (flight_t *f = zhashx_first(self->flights); f; f = zhashx_next(self->flights))
        n += f->ahead && !f->withdrawn;
    return n;
}

int dispatch_active_job(dispatch_t *self, const char *job_id)
{
    return zhashx_lookup(self->flights, job_id) || zhashx_lookup(self->recovering, job_id);
}

int dispatch_has_buffered(dispatch_t *self, const char *trigger_id)
{
    return zhashx_lookup(self->buffered, trigger_id) != NULL;
}

int dispatch_buffer(dispatch_t *self, job_t **job)
{
    if (zhashx_lookup(self->buffered, (*job)->trigger_id))
        return -1;
    zhashx_insert(self->buffered, (*job)->trigger_id, *job);
    *job = NULL;
    return 0;
}

int64_t dispatch_next_timer(const dispatch_t *self)
{
    const heap_node_t *top = heap_top(&self->heap);
    if (!top)
        return INT64_MAX;
    int64_t left = top->key - clock_mono_ms();
    return left < 0 ? 0 : left;
}

/* ---- retry policy ------------------------------------------------------- */

int64_t retry_delay_ms(const retry_policy_t *policy, int attempt, double rnd)
{
    double delay = policy->initial_delay * pow(policy->multiplier, attempt > 1 ? attempt - 1 : 0);
    if (!(delay <= policy->max_delay)) /* also catches inf and nan */
        delay = policy->max_delay;
    if (!(delay >= 0))
        delay = 0;
    if (delay > MAX_RETRY_DELAY_S) /* the store may hold anything; keep the cast defined */
        delay = MAX_RETRY_DELAY_S;
    if (policy->jitter)
        delay *= rnd < 0 ? 0 : rnd > 1 ? 1 : rnd;
    return (int64_t)(delay * 1000.0 + 0.5);
}

/* Uniform in [0, 1) (splitmix64; jitter needs spread, not secrecy). */
static double s_random(dispatch_t *d)
{
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static int s_retryable(const char *status)
{
    return strcmp(status, "failed") == 0 || strcmp(status, "timed_out") == 0 ||
           strcmp(status, "lost") == 0;
}

/* ---- store -------------------------------------------------------------- */

static const char *const s_live[] = {"queued", "running", "retrying"};

int job_status_live(const char *status)
{
    for (size_t i = 0; i < sizeof s_live / sizeof s_live[0]; i++)
        if (strcmp(status, s_live[i]) == 0)
            return 1;
    return 0;
}

void job_live_append(bson_t *filter, const char *key, const char *op)
{
    bson_t cond, arr;
    BSON_APPEND_DOCUMENT_BEGIN(filter, key, &cond);
    BSON_APPEND_ARRAY_BEGIN(&cond, op, &arr);
    for (size_t i = 0; i < sizeof s_live / sizeof s_live[0]; i++) {
        char k[8];
        snprintf(k, sizeof k, "%zu", i);
        BSON_APPEND_UTF8(&arr, k, s_live[i]);
    }
    bson_append_array_end(&cond, &arr);
    bson_append_document_end(filter, &cond);
}

/* Writes updates[i] to job ids[i] in ordered bulks (store op `op`), on
 * the loop, in its turn (master_write_begin). Returns how many were
 * applied before the first failure (n if none). */
static size_t s_write_jobs(dispatch_t *d, const char *op, const char *const *ids,
                           bson_t *const *updates, size_t n)
{
    bson_error_t berr = {0};
    int64_t matched = 0, t0 = zclock_usecs();
    master_write_begin(d->m);
    size_t done = store_update_by_ids(d->m->store, "jobs", ids, updates, n, &matched, &berr);
    master_write_end(d->m);
    stats_store_op(op, zclock_usecs() - t0, done < n);
    if (done < n)
        log_warn("cannot save job statuses", "jobs=%zu saved=%zu reason=\"%s\"", n, done,
                 berr.message);
    return done;
}

/* For a guarded write: 1 if the job exists, is not final and is not past
 * `attempt`; 0 if not (nothing to write); ERR_RETRY if the store is away. */
static int s_guard_holds(dispatch_t *d, const char *job_id, int attempt)
{
    bson_t job;
    err_t err = {0};
    int rc = store_get_job(d->m->store, job_id, &job, &err);
    if (rc < 0) {
        log_warn("cannot read job status", "job=%s reason=\"%s\"", job_id, err.msg);
        return ERR_RETRY;
    }
    if (rc == 0)
        return 0;
    int holds = job_status_live(bj_get_str(&job, "status", "")) &&
                bj_get_int(&job, "attempt", 1) <= attempt;
    bson_destroy(&job);
    return holds;
}

/* A job's partition, from the trigger id its _id begins with ("<trigger>@<ms>"). */
static int s_job_partition(const dispatch_t *d, const char *job_id)
{
    char trig[64];
    snprintf(trig, sizeof trig, "%.*s", (int)strcspn(job_id, "@"), job_id);
    return sched_partition(trig, d->m->cfg->partitions);
}

/* "job id#attempt": the key of an attempt's FINISHED in d->recent and d->writing. */
static void s_recent_key(char *buf, size_t size, const char *job_id, int attempt)
{
    snprintf(buf, size, "%s#%d", job_id, attempt);
}

/* Waits for the status writer if it has, or is about to get, an update of
 * job_id: the loop's own write or read of that job comes after it. */
static void s_settle_job(dispatch_t *d, const char *job_id)
{
    if (dispatch_updating(d, job_id))
        dispatch_settle(d);
}

/* Adds an update of job_id to the batch for the status writer (handed
 * over when full, and at the end of each pass over worker messages);
 * identity: the FINISHED's sender to acknowledge once it is written. */
static void s_batch(dispatch_t *d, const char *job_id, int attempt, bson_t *update,
                    const char *op, zframe_t *identity, int record)
{
    wr_item_t *b = &d->batch[d->nbatch++];
    *b = (wr_item_t){.attempt = attempt, .op = op, .update = update, .identity = identity,
                     .partition = s_job_partition(d, job_id), .record = record};
    snprintf(b->id, sizeof b->id, "%s", job_id);
    s_count(d->updating, job_id, 1);
    if (identity) { /* a FINISHED's: a resend of it is answered by this one's ACK */
        char key[PROTO_ID_MAX + 16];
        s_recent_key(key, sizeof key, job_id, attempt);
        s_count(d->writing, key, 1);
    }
    if (d->nbatch == BATCH_MAX)
        dispatch_flush(d);
}

int dispatch_updating(const dispatch_t *self, const char *job_id)
{
    return zhashx_lookup(self->updating, job_id) != NULL;
}

void dispatch_write_job(dispatch_t *self, const char *job_id, bson_t *update, const char *op)
{
    s_batch(self, job_id, 0, update, op, NULL, 0);
}

/* Applies `update` to a job; takes ownership of update.
 *
 * Every write is by `_id` alone: FerretDB pushes down only that filter,
 * and on anything more decodes every job of the collection in Go (170 ms
 * against 37 ms per update at 600 jobs, without the `_id` index;
 * docs/BENCHMARKS.md). A job this master tracks in memory (a flight, a
 * queued or waiting job) has been checked in memory: the holder of its
 * partition is its only writer (store rule 2). A write about a job not in
 * memory (a worker's report after a restart or takeover, a cancel of a
 * job never loaded) is `guarded`: the job is read by `_id` first, and the
 * write applies only while it is not final and not past `attempt`; the
 * same single writer makes that read-then-write safe.
 *
 * record: a final outcome's record (store_job_overlay) to insert into
 * job_results instead, written by the status writer; NULL for an update.
 * Either is consumed. */
static int s_write_job(dispatch_t *d, const char *job_id, int attempt, bson_t *update,
                       int guarded, bson_t *record)
{
    if (guarded) {
        s_settle_job(d, job_id); /* a write handed over may be about this job */
        int holds = s_guard_holds(d, job_id, attempt);
        if (holds <= 0) {
            bson_destroy(update);
            if (record)
                bson_destroy(record);
            return holds;
        }
    }
    if (d->batching) { /* a FINISHED's: the status writer writes it */
        int rec = record != NULL;
        s_batch(d, job_id, attempt, rec ? record : update, rec ? "record_jobs" : "update_jobs",
                zframe_dup(d->batching), rec);
        if (rec)
            bson_destroy(update);
        d->batched = 1;
        return 0;
    }
    if (record)
        bson_destroy(record);
    s_settle_job(d, job_id); /* the store sees a job's writes in the order they were made */
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(job_id));
    bson_error_t berr;
    int rc = 0;
    int64_t t0 = zclock_usecs();
    master_write_begin(d->m);
    bool ok = mongoc_collection_update_one(store_coll(d->m->store, "jobs"), filter, update, NULL,
                                           NULL, &berr);
    master_write_end(d->m);
    stats_store_op("update_job", zclock_usecs() - t0, !ok);
    if (!ok) {
        log_warn("cannot save job status", "job=%s attempt=%d reason=\"%s\"", job_id, attempt,
                 berr.message);
        rc = ERR_RETRY;
    }
    bson_destroy(filter);
    bson_destroy(update);
    return rc;
}

static int s_update_job(dispatch_t *d, const char *job_id, int attempt, bson_t *update, int guarded)
{
    return s_write_job(d, job_id, attempt, update, guarded, NULL);
}

static void s_append_time(bson_t *b, const char *key, int64_t ms)
{
    if (ms)
        BSON_APPEND_DATE_TIME(b, key, ms);
    else
        BSON_APPEND_NULL(b, key);
}

static void s_append_str(bson_t *b, const char *key, const char *s)
{
    if (s)
        BSON_APPEND_UTF8(b, key, s);
    else
        BSON_APPEND_NULL(b, key);
}

/* The `attempts` entry of an ended attempt; unknowns are null. */
static void s_append_attempt(bson_t *entry, int attempt, const outcome_t *o)
{
    BSON_APPEND_INT32(entry, "attempt", attempt);
    BSON_APPEND_UTF8(entry, "status", o->status);
    s_append_str(entry, "worker_id", o->worker_id);
    s_append_time(entry, "started_at", o->started_at);
    s_append_time(entry, "finished_at", o->finished_at);
    if (o->duration_ms >= 0)
        BSON_APPEND_INT64(entry, "duration_ms", o->duration_ms);
    else
        BSON_APPEND_NULL(entry, "duration_ms");
    if (o->has_exit_code)
        BSON_APPEND_INT32(entry, "exit_code", o->exit_code);
    else
        BSON_APPEND_NULL(entry, "exit_code");
    s_append_str(entry, "error", o->error);
}

/* Records the end of `attempt`: the attempt goes onto `attempts`; the job
 * becomes `o->status`, or "retrying" attempt+1 at wall time retry_at when
 * retry_at is non-zero. The top-level worker_id, started_at, finished_at,
 * duration_ms and result keep describing the attempt that ended until the
 * next one starts. `guarded`: as for s_update_job. */
static int s_save_outcome(dispatch_t *d, const char *job_id, int attempt, const outcome_t *o,
                          int64_t retry_at, int notify, int guarded)
{
    bson_t *update = bson_new(), set, result, push, entry;
    BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    if (notify) /* a notification goes out: marked until its delivery is recorded */
        BSON_APPEND_BOOL(&set, "notify_pending", true);
    BSON_APPEND_UTF8(&set, "status", retry_at ? "retrying" : o->status);
    BSON_APPEND_INT32(&set, "attempt", retry_at ? attempt + 1 : attempt);
    if (retry_at)
        BSON_APPEND_DATE_TIME(&set, "run_at", retry_at);
    BSON_APPEND_DATE_TIME(&set, "finished_at", o->finished_at);
    if (o->worker_id)
        BSON_APPEND_UTF8(&set, "worker_id", o->worker_id);
    if (o->started_at)
        BSON_APPEND_DATE_TIME(&set, "started_at", o->started_at);
    if (o->duration_ms >= 0)
        BSON_APPEND_INT64(&set, "duration_ms", o->duration_ms);
    BSON_APPEND_DOCUMENT_BEGIN(&set, "result", &result);
    if (o->has_exit_code)
        BSON_APPEND_INT32(&result, "exit_code", o->exit_code);
    else
        BSON_APPEND_NULL(&result, "exit_code");
    if (o->error)
        BSON_APPEND_UTF8(&result, "error", o->error);
    if (o->output)
        BSON_APPEND_UTF8(&result, "output", o->output);
    bson_append_document_end(&set, &result);
    bson_append_document_end(update, &set);
    BSON_APPEND_DOCUMENT_BEGIN(update, "$push", &push);
    BSON_APPEND_DOCUMENT_BEGIN(&push, "attempts", &entry);
    s_append_attempt(&entry, attempt, o);
    bson_append_document_end(&push, &entry);
    bson_append_document_end(update, &push);
    /* A FINISHED's final outcome with nothing to deliver is the job's last
     * write: a record of its own (an insert, a tenth of an update's cost),
     * which this master's writer folds into the job when idle. */
    bson_t *record = NULL;
    if (!retry_at && !notify && d->batching) {
        record = BCON_NEW("_id", BCON_UTF8(job_id), "partition",
                          BCON_INT32(s_job_partition(d, job_id)), "recorded_at",
                          BCON_DATE_TIME(clock_wall_ms()));
        bson_iter_t it, sub;
        if (bson_iter_init_find(&it, update, "$set"))
            bson_append_iter(record, "set", -1, &it);
        if (bson_iter_init_find(&it, update, "$push") && bson_iter_recurse(&it, &sub) &&
            bson_iter_next(&sub))
            bson_append_iter(record, "push", -1, &sub);
    }
    return s_write_job(d, job_id, attempt, update, guarded, record);
}

/* ---- flights ------------------------------------------------------------ */

static int s_owned(const dispatch_t *d, const job_t *job)
{
    return partitions_owned(d->m, job->partition);
}

/* Forgets a flight: its deadline, its worker's in-flight count, and its
 * job unless the caller detached it (f->job = NULL) for a retry. */
/* ---- cluster-wide task-type limits ---------------------------------------
 * A task type limited to N holds N slot documents `slot/<type>/<k>` in
 * `locks`, each claimed by insert (the one atomic write) with the job that
 * holds it, and deleted when that job's attempt ends. A slot whose job is
 * final or gone (its master died) is reclaimed by whoever needs one. */

static int s_limit_of(dispatch_t *d, const char *type)
{
    for (int i = 0; i < d->nlimits; i++)
        if (strcmp(d->limits[i].type, type) == 0)
            return i;
    return -1;
}

static void s_slot_id(char *buf, size_t size, const char *type, int k)
{
    snprintf(buf, size, "slot/%s/%d", type, k);
}

/* True if the job a slot names has ended (or its document is gone). */
static int s_slot_stale(dispatch_t *d, const char *job_id)
{
    return s_guard_holds(d, job_id, INT_MAX) == 0;
}

/* Claims a slot for the job if its type is limited. 1 ok (or unlimited),
 * 0 at capacity (try later). */
static int s_acquire_slot(dispatch_t *d, job_t *job)
{
    int li = s_limit_of(d, job->task_type);
    if (li < 0 || job->slot)
        return 1;
    int64_t now = clock_mono_ms();
    if (now < d->limits[li].retry_at)
        return 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < d->limits[li].limit; k++) {
            char id[128];
            s_slot_id(id, sizeof id, job->task_type, k);
            bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "kind", BCON_UTF8("slot"), "task_type",
                                   BCON_UTF8(job->task_type), "job_id", BCON_UTF8(job->id),
                                   "master", BCON_UTF8(d->m->cfg->node_id), "at",
                                   BCON_DATE_TIME(clock_wall_ms()));
            bool ok = mongoc_collection_insert_one(store_coll(d->m->store, "locks"), doc, NULL,
                                                   NULL, NULL);
            bson_destroy(doc);
            if (ok) {
                job->slot = k + 1;
                return 1;
            }
            if (pass == 0)
                continue;
            /* Second pass: is this slot ours already, or stale? */
            bson_t held;
            if (store_get_by_id(d->m->store, "locks", id, &held, NULL) != 1)
                continue;
            const char *holder = bj_get_str(&held, "job_id", "");
            if (strcmp(holder, job->id) == 0) {
                bson_destroy(&held);
                job->slot = k + 1;
                return 1;
            }
            if (s_slot_stale(d, holder)) {
                bson_t *filter = BCON_NEW("_id", BCON_UTF8(id), "job_id", BCON_UTF8(holder));
                mongoc_collection_delete_one(store_coll(d->m->store, "locks"), filter, NULL, NULL,
                                             NULL);
                bson_destroy(filter);
                log_info("stale task-type slot reclaimed", "slot=%s job=%s", id, holder);
            }
            bson_destroy(&held);
        }
    }
    /* At capacity: look again after a random pause, so that masters
     * competing for the type's slots take turns rather than one of them
     * always winning the slot it has just freed. */
    d->limits[li].retry_at = now + 200 + (int64_t)(s_random(d) * 500);
    return 0;
}

static void s_release_slot(dispatch_t *d, job_t *job)
{
    if (!job || !job->slot)
        return;
    char id[128];
    s_slot_id(id, sizeof id, job->task_type, job->slot - 1);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id), "job_id", BCON_UTF8(job->id));
    mongoc_collection_delete_one(store_coll(d->m->store, "locks"), filter, NULL, NULL, NULL);
    bson_destroy(filter);
    job->slot = 0;
    int li = s_limit_of(d, job->task_type);
    if (li >= 0) /* a slot is free: we wait as long as the others do, so the */
        d->limits[li].retry_at = /* master that freed it has no head start */
            clock_mono_ms() + 200 + (int64_t)(s_random(d) * 500);
}

static void s_flight_done(dispatch_t *d, flight_t *f)
{
    s_release_slot(d, f->job);
    if (f->started_unsaved) {
        f->started_unsaved = 0;
        d->unsaved--;
    }
    heap_remove(&d->heap, &f->deadline.hn);
    worker_t *w = zhashx_lookup(d->workers, f->worker_key);
    if (w && w->inflight > 0)
        w->inflight--;
    char id[PROTO_ID_MAX];
    snprintf(id, sizeof id, "%s", f->id);
    zhashx_delete(d->flights, id);
}

/* Forgets a flight whose job is final here. */
static void s_flight_finish(dispatch_t *d, flight_t *f)
{
    job_t *job = f->job;
    s_release_slot(d, job);
    f->job = NULL;
    s_flight_done(d, f);
    s_job_final(d, &job);
}

/* Ends the flight's current attempt with outcome o: saves it, and if the
 * retry policy allows, schedules the next attempt. Consumes the flight. */
static int s_end_attempt(dispatch_t *d, flight_t *f, const outcome_t *o)
{
    job_t *job = f->job;
    int retry = s_retryable(o->status) && job->attempt <= job->retry.max_retries;
    int64_t delay = retry ? retry_delay_ms(&job->retry, job->attempt, s_random(d)) : 0;
    int failed = s_retryable(o->status);
    const char *event = retry                                  ? NULL
                        : failed                               ? "failure"
                        : strcmp(o->status, "succeeded") == 0 ? "success"
                                                               : NULL;
    /* Queued before the outcome is saved, which marks the job while a
     * notice is on its way; deliveries only start in alert_tick, after. */
    int notify = 0;
    if (event) {
        notice_t n = {.event = event, .job_id = job->id, .trigger_id = job->trigger_id,
                      .task_type = job->task_type, .notify = job->notify, .status = o->status,
                      .attempt = job->attempt, .scheduled_for = job->scheduled_for,
                      .worker_id = o->worker_id, .error = o->error, .output = o->output};
        notify = alert_notify(d->m->alert, &n) > 0;
    }
    int rc = s_save_outcome(d, job->id, job->attempt, o, retry ? clock_wall_ms() + delay : 0,
                            notify, 0);
    if (!retry) {
        stats_job_finished(job->task_type, o->status);
        if (failed)
            alert_job_failed(d->m->alert, job, o->status, o->error, o->worker_id);
        s_flight_finish(d, f);
        return rc;
    }
    stats_job_retried(job->task_type);
    log_info("job will be retried", "job=%s attempt=%d status=%s next_attempt=%d delay_ms=%lld",
             job->id, job->attempt, o->status, job->attempt + 1, (long long)delay);
    s_release_slot(d, job);
    f->job = NULL; /* the retry takes the job over */
    s_flight_done(d, f);
    job->attempt++;
    due_t *e = calloc(1, sizeof *e);
    e->job = job;
    e->hn.key = clock_mono_ms() + delay;
    heap_push(&d->heap, &e->hn);
    return rc;
}

/* True if `item` is an element of the comma list `list`. */
static int s_in_list(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, item, n) == 0)
            return 1;
        p += len + (p[len] == ',');
    }
    return 0;
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

/* True if every "k=v" of the comma list `required` is among w's labels. */
static int s_has_labels(const worker_t *w, const char *required)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", required);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        size_t n = strlen(kv);
        int found = 0;
        for (const char *p = w->labels; *p && !found;) {
            size_t len = strcspn(p, ",");
            found = len == n && strncmp(p, kv, n) == 0;
            p += len + (p[len] == ',');
        }
        if (!found)
            return 0;
    }
    return 1;
}

static worker_t *s_pick(dispatch_t *d, const job_t *job)
{
    worker_t *best = NULL;
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (!w->draining && w->credit > 0 && s_serves(w, job->task_type) &&
            (!job->labels[0] || s_has_labels(w, job->labels)) &&
            (!best || w->credit > best->credit))
            best = w;
    return best;
}

static int s_send(dispatch_t *d, worker_t *w, const job_t *job)
{
    proto_msg_t msg = {.type = PROTO_JOB, .seq = ++d->seq, .attempt = job->attempt,
                       .scheduled_for = job->scheduled_for,
                       .max_execution_time = job->max_execution_time};
    if (job->scheduled_for > clock_wall_ms()) /* claimed ahead: started on time */
        msg.start_at = job->scheduled_for;
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

/* True while some worker can take a job. */
static int s_credit_left(dispatch_t *d)
{
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (!w->draining && w->credit > 0)
            return 1;
    return 0;
}

static void s_pump(dispatch_t *d)
{
    /* Walk the queue oldest first, taking out the jobs sent: order is kept
     * and a task type nobody serves blocks no other. The walk ends when no
     * worker has credit left. It is the master's hottest path: called for
     * every worker message, it once rotated the whole queue each time
     * (25,000 pending jobs when 50,000 came due at once kept the masters'
     * CPU busy with the rotation). */
    const job_t *unserved = NULL; /* the last job no worker could take */
    for (job_t *job = zlistx_first(d->pending); job && s_credit_left(d);
         job = zlistx_next(d->pending)) {
        if (unserved && strcmp(job->task_type, unserved->task_type) == 0 &&
            strcmp(job->labels, unserved->labels) == 0)
            continue; /* credit only shrinks during a walk: nobody takes it either */
        worker_t *w = s_pick(d, job);
        if (!w)
            unserved = job;
        if (w && !s_acquire_slot(d, job))
            w = NULL; /* its task type is at its cluster-wide limit */
        if (w && s_send(d, w, job) < 0) {
            s_release_slot(d, job);
            log_warn("worker unreachable; dropping it", "worker=%s", w->node_id);
            w->credit = 0;
            w->last_seen = INT64_MIN / 2; /* expires on the next tick */
            w = NULL;
        }
        if (!w)
            continue;
        zlistx_detach_cur(d->pending);
        flight_t *old = zhashx_lookup(d->flights, job->id);
        if (old) /* cannot happen: an attempt's flight ends before its retry */
            s_flight_done(d, old);
        flight_t *f = calloc(1, sizeof *f);
        snprintf(f->id, sizeof f->id, "%s", job->id);
        f->job = job;
        f->sent_at = clock_mono_ms();
        f->deadline.hn.idx = HEAP_NONE;
        f->deadline.flight = f;
        snprintf(f->worker_key, sizeof f->worker_key, "%s", w->key);
        snprintf(f->worker_id, sizeof f->worker_id, "%s", w->node_id);
        f->ahead = job->scheduled_for > clock_wall_ms();
        zhashx_update(d->flights, job->id, f);
        w->credit--;
        w->inflight++;
        log_debug("job dispatched", "job=%s attempt=%d worker=%s", job->id, job->attempt,
                  w->node_id);
    }
}

/* ---- worker messages ---------------------------------------------------- */

static worker_t *s_worker_by_identity(dispatch_t *d, zframe_t *identity)
{
    char *hex = zframe_strhex(identity);
    worker_t *w = zhashx_lookup(d->workers, hex);
    free(hex);
    return w;
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
        w->listed = zhashx_new();
        zhashx_insert(d->workers, key, w);
        log_info("worker connected", "worker=%s task_types=%s slots=%d", msg->node_id,
                 msg->task_types, msg->slots);
    }
    if (w)
        w->last_seen = clock_mono_ms();
    return w;
}

/* The credit a HELLO, HEARTBEAT or REFUSED reports replaces what was
 * counted; a FINISHED handled later gives none back for a slot it
 * already counted free (s_on_status). */
static void s_take_credit(dispatch_t *d, worker_t *w, const proto_msg_t *msg)
{
    snprintf(w->task_types, sizeof w->task_types, "%s", msg->task_types);
    w->slots = msg->slots;
    w->credit = msg->free_slots;
    w->credit_rx = d->m->rx_now;
}

/* The STARTED write: the new attempt's own fields replace the last
 * attempt's outcome. */
static bson_t *s_started_update(int64_t at, const char *worker_id, int attempt)
{
    return BCON_NEW("$set", "{", "status", BCON_UTF8("running"), "started_at", BCON_DATE_TIME(at),
                    "worker_id", BCON_UTF8(worker_id), "attempt", BCON_INT32(attempt), "}",
                    "$unset", "{", "finished_at", BCON_UTF8(""), "duration_ms", BCON_UTF8(""),
                    "result", BCON_UTF8(""), "}");
}

static void s_on_started(dispatch_t *d, flight_t *f, const proto_msg_t *msg)
{
    log_info("job started", "job=%s attempt=%d worker=%s", msg->job_id, msg->attempt,
             msg->node_id);
    if (!f || f->started_at) { /* not a flight of ours, or a repeat: written as it comes */
        s_update_job(d, msg->job_id, msg->attempt,
                     s_started_update(msg->at, msg->node_id, msg->attempt), !f);
        return;
    }
    /* Group commit: the write waits STARTED_DEFER_MS, and a FINISHED that
     * comes first carries the start in the one final write, so a short job
     * costs one status update instead of two. A master that dies meanwhile
     * loses nothing: the worker reports the job running to the next owner
     * and FINISHED carries started_at. */
    f->started_unsaved = 1;
    f->started_due = clock_mono_ms() + STARTED_DEFER_MS;
    d->unsaved++;
    if (msg->attempt == 1) { /* fire lag: the job's time to its first start */
        int64_t lag = msg->at - f->job->scheduled_for;
        dispatch_recent_lag(d);
        if (lag > d->lag_max[0])
            d->lag_max[0] = lag;
        stats_fire_lag(lag < 0 ? 0 : lag);
        alert_fire_lag(d->m->alert, f->job, lag);
    }
    f->started_at = msg->at;
    snprintf(f->worker_id, sizeof f->worker_id, "%s", msg->node_id);
    if (f->job->max_execution_time > 0) {
        f->deadline.hn.key =
            clock_mono_ms() + (int64_t)f->job->max_execution_time * 1000 + TIMEOUT_GRACE_MS;
        heap_push(&d->heap, &f->deadline.hn);
    }
}

/* Tells the worker its FINISHED is persisted, so it stops resending it. */
static void s_ack(dispatch_t *d, zframe_t *identity, const char *job_id, int attempt)
{
    proto_msg_t ack = {.type = PROTO_ACK, .seq = ++d->seq, .attempt = attempt};
    snprintf(ack.node_id, sizeof ack.node_id, "%s", d->m->cfg->node_id);
    snprintf(ack.job_id, sizeof ack.job_id, "%s", job_id);
    zmsg_t *z = proto_encode(&ack, NULL);
    if (!z)
        return;
    zmsg_pushmem(z, zframe_data(identity), zframe_size(identity));
    if (zmsg_send(&z, d->m->router) < 0)
        zmsg_destroy(&z);
}

/* Deletes the job document of a withdrawn fire, by its _id alone: the
 * partition holder is its one writer. */
static void s_delete_withdrawn(dispatch_t *d, const job_t *job)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(job->id));
    bson_error_t berr;
    int64_t t0 = zclock_usecs();
    bool ok = mongoc_collection_delete_one(store_coll(d->m->store, "jobs"), filter, NULL, NULL,
                                           &berr);
    stats_store_op("withdraw_job", zclock_usecs() - t0, !ok);
    if (ok)
        log_info("fire withdrawn: its trigger changed before its time", "job=%s", job->id);
    else /* it stays queued: the takeover scan or a retry runs it */
        log_warn("cannot delete a withdrawn fire", "job=%s reason=\"%s\"", job->id, berr.message);
    bson_destroy(filter);
}

static int s_on_finished(dispatch_t *d, flight_t *f, const proto_msg_t *msg)
{
    outcome_t o = {.status = msg->status, .worker_id = msg->node_id,
                   .started_at = f ? f->started_at : 0, .finished_at = msg->at,
                   .has_exit_code = 1, .exit_code = msg->exit_code,
                   .duration_ms = msg->duration_ms, .error = msg->error, .output = msg->output};
    /* A STARTED this master did not record (its partition was elsewhere
     * then, or the store away): FINISHED tells when the attempt began. */
    if (!o.started_at)
        o.started_at = msg->started_at > 0 ? msg->started_at
                       : msg->duration_ms > 0 ? msg->at - msg->duration_ms
                                              : 0;
    log_info("job finished", "job=%s attempt=%d status=%s worker=%s", msg->job_id, msg->attempt,
             msg->status, msg->node_id);
    if (f && f->withdrawn && !msg->started_at && strcmp(msg->status, "cancelled") == 0) {
        s_delete_withdrawn(d, f->job); /* the worker never started it */
        s_flight_finish(d, f);
        return 0;
    }
    if (f) {
        stats_job_duration(f->job->task_type, msg->duration_ms);
        return s_end_attempt(d, f, &o);
    }
    /* not ours in memory (e.g. sent before a restart): record, no retry */
    return s_save_outcome(d, msg->job_id, msg->attempt, &o, 0, 0, 1);
}

/* A worker had no room for a JOB: stale credit, or credit another master
 * spent as well (each master sees a worker's whole credit). The attempt
 * never began, so no retry is spent: the job goes back to the head of
 * its priority in the pending queue, for whichever worker has room, and
 * the worker's credit is what it says it has now. */
static void s_on_refused(dispatch_t *d, worker_t *w, const proto_msg_t *msg)
{
    s_take_credit(d, w, msg);
    flight_t *f = zhashx_lookup(d->flights, msg->job_id);
    if (!f || f->job->attempt != msg->attempt || f->started_at ||
        strcmp(f->worker_key, w->key) != 0)
        return; /* not sent there by this master, or a stale attempt's */
    stats_job_refused(f->job->task_type);
    /* A withdrawn fire (its trigger changed meanwhile) goes; a job of a
     * partition no longer held here is its new owner's to send. */
    if (f->withdrawn || !s_owned(d, f->job)) {
        if (f->withdrawn)
            s_delete_withdrawn(d, f->job);
        s_flight_finish(d, f);
        return;
    }
    job_t *job = f->job;
    f->job = NULL; /* the queue takes the job over, its task-type slot too */
    s_flight_done(d, f);
    log_info("job refused by a worker with no room; queued again", "job=%s attempt=%d worker=%s",
             job->id, job->attempt, w->node_id);
    zlistx_insert(d->pending, job, true); /* first among its priority: it was sent first */
}

/* A FINISHED is persisted: remembered, and its worker told. */
static void s_persisted(dispatch_t *d, zframe_t *identity, const char *job_id, int attempt)
{
    char key[PROTO_ID_MAX + 16];
    s_recent_key(key, sizeof key, job_id, attempt);
    s_ack(d, identity, job_id, attempt);
    if (zhashx_lookup(d->recent, key))
        return;
    char **slot = &d->recent_ring[d->recent_next];
    if (*slot) {
        zhashx_delete(d->recent, *slot);
        free(*slot);
    }
    *slot = strdup(key);
    zhashx_insert(d->recent, key, (void *)1);
    d->recent_next = (d->recent_next + 1) % RECENT_FINAL_MAX;
}

static void s_on_status(dispatch_t *d, zframe_t *identity, const proto_msg_t *msg)
{
    flight_t *f = zhashx_lookup(d->flights, msg->job_id);
    if (f && f->job->attempt != msg->attempt)
        f = NULL; /* a stale attempt's message */
    if (!f && msg->type == PROTO_FINISHED) {
        char key[PROTO_ID_MAX + 16];
        s_recent_key(key, sizeof key, msg->job_id, msg->attempt);
        if (zhashx_lookup(d->recent, key)) { /* a resend of one persisted here */
            s_ack(d, identity, msg->job_id, msg->attempt);
            return;
        }
        if (zhashx_lookup(d->writing, key)) /* a resend of one batched or with the writer: */
            return;                         /* that one's ACK answers both */
    }
    /* The job's partition is in its id; only its holder writes. */
    int p = s_job_partition(d, msg->job_id);
    if (partitions_loading(d->m, p) && !zhashx_lookup(d->claimed, msg->job_id)) {
        /* Gained and being taken over: not acknowledged, the worker sends
         * it again and the takeover's end finds it (a job recorded ended
         * here might be read `running` by the scan, then declared lost).
         * A job claimed here meanwhile is ours: the scan leaves it out. */
        log_debug("status for a partition being loaded; it waits", "job=%s", msg->job_id);
        return;
    }
    if (!partitions_owned(d->m, p)) {
        /* Not acknowledged: the worker resends it, to every master in the
         * end, and the partition's holder records it. Counted, not logged
         * above debug: behind a slow store every late ACK brings one to
         * each master (14,000 lines a minute at 1,000 fires a second). */
        log_debug("status for a partition not held here; ignored", "job=%s", msg->job_id);
        stats_status_not_held();
        if (f && msg->type == PROTO_FINISHED)
            s_flight_finish(d, f);
        return;
    }
    if (!f) { /* a job taken over from the store that a worker finishes */
        rec_t *r = zhashx_lookup(d->recovering, msg->job_id);
        if (r && r->job->attempt == msg->attempt && msg->type == PROTO_FINISHED) {
            r->job->partition = p;
            flight_t *nf = calloc(1, sizeof *nf);
            snprintf(nf->id, sizeof nf->id, "%s", msg->job_id);
            nf->job = r->job;
            r->job = NULL;
            nf->deadline.hn.idx = HEAP_NONE;
            nf->deadline.flight = nf;
            nf->started_at = r->started_at;
            zhashx_delete(d->recovering, msg->job_id);
            zhashx_update(d->flights, nf->id, nf);
            f = nf;
        }
    }
    if (msg->type == PROTO_STARTED) {
        s_on_started(d, f, msg);
        return;
    }
    /* The slot is free again: give the credit back now rather than at the
     * next heartbeat, so a waiting job starts at once; unless a heartbeat
     * that came after this FINISHED (it waited its turn) counted the slot
     * free already. */
    worker_t *w = zframe_size(identity) ? s_worker_by_identity(d, identity) : NULL;
    if (w && f && strcmp(f->worker_key, w->key) == 0 && w->credit < w->slots &&
        d->m->rx_now > w->credit_rx)
        w->credit++;
    /* Its write joins the batch (group commit); the ACK goes once the
     * batch is persisted. A FINISHED that needed no write (a withdrawn
     * fire's) or was written on its own is acknowledged now. */
    d->batching = identity;
    d->batched = 0;
    int rc = s_on_finished(d, f, msg);
    d->batching = NULL;
    if (rc == 0 && !d->batched)
        s_persisted(d, identity, msg->job_id, msg->attempt);
}

/* Hands the batched updates to the status writer, which writes them in
 * order off the loop; their FINISHEDs are acknowledged once written
 * (dispatch_collect). */
void dispatch_flush(dispatch_t *self)
{
    dispatch_t *d = self;
    if (!d->nbatch)
        return;
    int n = d->nbatch;
    d->nbatch = 0;
    writer_put(d->m->writer, d->batch, (size_t)n);
}

void dispatch_collect(dispatch_t *self)
{
    dispatch_t *d = self;
    wr_item_t done[64];
    size_t n;
    while ((n = writer_take(d->m->writer, done, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            wr_item_t *b = &done[i];
            s_count(d->updating, b->id, -1);
            if (!b->identity)
                continue;
            char key[PROTO_ID_MAX + 16];
            s_recent_key(key, sizeof key, b->id, b->attempt);
            s_count(d->writing, key, -1);
            if (b->saved) /* else not acknowledged: its worker resends it */
                s_persisted(d, b->identity, b->id, b->attempt);
            zframe_destroy(&b->identity);
        }
    }
}

void dispatch_settle(dispatch_t *self)
{
    dispatch_flush(self);
    writer_settle(self->m->writer);
    dispatch_collect(self);
}

/* ---- takeover ------------------------------------------------------------ */

static void s_abandon(dispatch_t *d, flight_t *f, const char *status, const char *error);

/* Makes a flight of a recovered job on worker w (NULL: no worker). */
static flight_t *s_flight_from_rec(dispatch_t *d, rec_t *r, worker_t *w)
{
    flight_t *f = calloc(1, sizeof *f);
    snprintf(f->id, sizeof f->id, "%s", r->job->id);
    f->job = r->job;
    r->job = NULL;
    f->sent_at = clock_mono_ms();
    f->started_at = r->started_at;
    f->deadline.hn.idx = HEAP_NONE;
    f->deadline.flight = f;
    if (w) {
        snprintf(f->worker_key, sizeof f->worker_key, "%s", w->key);
        snprintf(f->worker_id, sizeof f->worker_id, "%s", w->node_id);
        w->inflight++;
    }
    if (f->job->max_execution_time > 0 && f->started_at) {
        int64_t left = f->started_at + (int64_t)f->job->max_execution_time * 1000 +
                       TIMEOUT_GRACE_MS - clock_wall_ms();
        f->deadline.hn.key = clock_mono_ms() + (left > 0 ? left : 0);
        heap_push(&d->heap, &f->deadline.hn);
    }
    zhashx_update(d->flights, f->id, f);
    return f;
}

/* The jobs a worker lists as its own (HEARTBEAT, or BYE while it drains)
 * that we took over: they are alive (G5) and become flights on it. */
static void s_adopt(dispatch_t *d, worker_t *w, const proto_msg_t *msg)
{
    for (int i = 0; i < msg->nrunning; i++) {
        rec_t *r = zhashx_lookup(d->recovering, msg->running[i]);
        if (!r)
            continue;
        flight_t *f = s_flight_from_rec(d, r, w);
        log_info("job adopted after takeover", "job=%s attempt=%d worker=%s", f->id,
                 f->job->attempt, w->node_id);
        zhashx_delete(d->recovering, f->id);
    }
}

void dispatch_listed_worker(dispatch_t *self, const char *node_id)
{
    if (node_id)
        zhashx_update(self->listed, node_id, (void *)"listed"); /* a set: the key is copied */
}

void dispatch_listed_reset(dispatch_t *self)
{
    zhashx_purge(self->listed);
}

/* Asks worker w to answer at once with what it runs (PING). */
static void s_ping(dispatch_t *d, worker_t *w, int64_t now)
{
    proto_msg_t msg = {.type = PROTO_PING, .seq = ++d->seq, .token = d->recover_token};
    snprintf(msg.node_id, sizeof msg.node_id, "%s", d->m->cfg->node_id);
    w->pinged_at = now;
    zmsg_t *z = proto_encode(&msg, NULL);
    if (!z)
        return;
    zmsg_pushmem(z, zframe_data(w->identity), zframe_size(w->identity));
    if (zmsg_send(&z, d->m->router) < 0) /* gone: its timeout removes it */
        zmsg_destroy(&z);
}

/* During a takeover wait, PINGs every worker that has not answered the
 * current one, at most once a heartbeat (a PING to a connection that is
 * coming back is lost). */
static void s_ping_unanswered(dispatch_t *d, int64_t now)
{
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (w->echo != d->recover_token && now - w->pinged_at >= d->m->cfg->heartbeat_ms)
            s_ping(d, w, now);
}

/* Appends `name` to the comma list in buf (as much as fits). */
static void s_list_add(char *buf, size_t size, size_t *len, const char *name)
{
    if (*len < size)
        *len += (size_t)snprintf(buf + *len, size - *len, "%s%s", *len ? "," : "", name);
}

/* True once every worker connected here, and every worker another live
 * master lists, has answered this takeover's PING; or after
 * RECOVER_WAIT_TIMEOUTS worker timeouts, whatever they did. A job the old
 * owner sent out may have run and finished already, its STARTED never
 * written (it is deferred) and its FINISHED still on the way. The answer
 * to a PING is written after the PING reached the worker, so it lists
 * every job the worker holds, runs or has an unacknowledged FINISHED for:
 * a message from before (queued in a connection that a network cut
 * held up) would not. A master that has just come back (an isolated host)
 * hears from workers late, and would otherwise queue such a job again. */
static int s_workers_heard(dispatch_t *d, int64_t now)
{
    char missing[256] = "";
    size_t len = 0;
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (w->echo != d->recover_token)
            s_list_add(missing, sizeof missing, &len, w->node_id[0] ? w->node_id : w->key);
    for (void *v = zhashx_first(d->listed); v; v = zhashx_next(d->listed)) {
        const char *node = zhashx_cursor(d->listed);
        int heard = 0;
        for (worker_t *w = zhashx_first(d->workers); w && !heard; w = zhashx_next(d->workers))
            heard = strcmp(w->node_id, node) == 0 && w->echo == d->recover_token;
        if (!heard)
            s_list_add(missing, sizeof missing, &len, node);
    }
    if (!missing[0])
        return 1;
    if (now < d->recover_started + RECOVER_WAIT_TIMEOUTS * (int64_t)d->m->cfg->worker_timeout_ms)
        return 0;
    log_warn("takeover stopped waiting for workers that did not answer; a job one of them "
             "holds may run twice",
             "workers=%s waited_ms=%lld", missing, (long long)(now - d->recover_started));
    return 1;
}

/* After the takeover wait: queued jobs are dispatched, running ones that
 * no worker reported are lost (and retried by policy), retries re-armed. */
static void s_place_recovered(dispatch_t *d)
{
    d->recover_until = 0;
    zlistx_t *ids = zhashx_keys(d->recovering);
    for (const char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        rec_t *r = zhashx_lookup(d->recovering, id);
        if (strcmp(r->status, "queued") == 0) {
            s_pending_add(d, r->job);
            r->job = NULL;
        } else if (strcmp(r->status, "running") == 0) {
            flight_t *f = s_flight_from_rec(d, r, NULL);
            s_abandon(d, f, "lost", "no worker reports it running after a takeover");
        } else {
            due_t *e = calloc(1, sizeof *e);
            int64_t left = r->run_at - clock_wall_ms();
            e->job = r->job;
            r->job = NULL;
            e->hn.key = clock_mono_ms() + (left > 0 ? left : 0);
            heap_push(&d->heap, &e->hn);
        }
        zhashx_delete(d->recovering, id);
    }
    zlistx_destroy(&ids);
}

/* Places the recovered jobs once the takeover wait is over. */
static void s_place_when_heard(dispatch_t *d, int64_t now)
{
    if (d->m->taking || d->scan)
        return; /* a takeover scan may be reading more of them: placed after it */
    if (now >= d->recover_until && s_workers_heard(d, now))
        s_place_recovered(d);
}

/* A final job still marked notify_pending (its master died before the
 * delivery was recorded): sends the notice again to the hooks that have no
 * record for the event yet, or clears the mark if nothing is left to send
 * (every hook has its record, or the trigger is gone, paused or asks for
 * other events now). */
static void s_renotify(dispatch_t *d, const bson_t *doc)
{
    const char *id = bj_get_str(doc, "_id", "");
    const char *status = bj_get_str(doc, "status", "");
    const char *event = strcmp(status, "succeeded") == 0 ? "success"
                        : strcmp(status, "skipped") == 0 ? "skipped"
                        : s_retryable(status)            ? "failure"
                                                         : NULL;
    json_t *all = bj_to_json(doc);
    unsigned done = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(all, "notifications"), i, rec)
    {
        json_int_t hook = json_integer_value(json_object_get(rec, "hook"));
        const char *ev = json_string_value(json_object_get(rec, "event"));
        if (event && ev && strcmp(ev, event) == 0 && hook >= 0 && hook < 32)
            done |= 1u << hook;
    }
    json_t *result = json_object_get(all, "result");
    const char *trig = bj_get_str(doc, "trigger_id", "");
    notice_t n = {.event = event, .job_id = id, .trigger_id = trig,
                  .task_type = bj_get_str(doc, "task_type", ""),
                  .notify = sched_trigger_notify(d->m->sched, trig), .status = status,
                  .attempt = (int)bj_get_int(doc, "attempt", 1),
                  .scheduled_for = bj_get_date(doc, "scheduled_for", 0),
                  .worker_id = bj_get_str(doc, "worker_id", NULL),
                  .error = json_string_value(json_object_get(result, "error")),
                  .output = json_string_value(json_object_get(result, "output")),
                  .skip_reason = bj_get_str(doc, "skip_reason", NULL), .skipped = 1,
                  .done_hooks = done};
    int queued = event ? alert_notify(d->m->alert, &n) : 0;
    json_decref(all);
    if (queued) {
        log_info("notification sent again after a takeover", "job=%s event=%s hooks=%d", id,
                 event, queued);
        return;
    }
    log_info("pending notification cleared", "job=%s", id);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *update = BCON_NEW("$unset", "{", "notify_pending", BCON_UTF8(""), "}");
    mongoc_collection_update_one(store_coll(d->m->store, "jobs"), filter, update, NULL, NULL, NULL);
    bson_destroy(filter);
    bson_destroy(update);
}

void dispatch_recover(dispatch_t *self, const int *parts, int n)
{
    if (n == 0 || self->scan)
        return;
    dispatch_settle(self); /* a job read here as running was not just written ended */
    zhashx_purge(self->claimed);
    self->scan = scan_start(self->m->cfg->mongo_uri, parts, n);
}

void dispatch_claimed(dispatch_t *self, const bson_t *doc)
{
    if (!self->scan) /* the fire path's usual case: nothing more to read */
        return;
    const char *id = bj_get_str(doc, "_id", NULL);
    if (id && partitions_loading(self->m, (int)bj_get_int(doc, "partition", -1)))
        zhashx_update(self->claimed, id, (void *)1);
}

char *job_parameters_json(const bson_t *doc)
{
    bson_iter_t it;
    uint32_t len;
    const uint8_t *data;
    bson_t sub;
    if (!bson_iter_init_find(&it, doc, "parameters") || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return NULL;
    bson_iter_document(&it, &len, &data);
    if (!bson_init_static(&sub, data, len))
        return NULL;
    json_t *j = bj_to_json(&sub);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

/* Takes over one job the scan read (a copy, not final, or with
 * notifications to send again). Returns 1 if it is now recovering. */
static int s_take_over(dispatch_t *self, const bson_t *doc)
{
    const char *id = bj_get_str(doc, "_id", NULL);
    if (!id || strlen(id) >= PROTO_ID_MAX || zhashx_lookup(self->flights, id) ||
        zhashx_lookup(self->recovering, id) || zhashx_lookup(self->claimed, id) ||
        !partitions_owned(self->m, (int)bj_get_int(doc, "partition", -1)))
        return 0;
    const char *status = bj_get_str(doc, "status", "queued");
    if (!job_status_live(status)) {
        s_renotify(self, doc);
        return 0;
    }
    rec_t *r = calloc(1, sizeof *r);
    job_t *job = r->job = calloc(1, sizeof *job);
    snprintf(job->id, sizeof job->id, "%s", id);
    snprintf(job->trigger_id, sizeof job->trigger_id, "%s", bj_get_str(doc, "trigger_id", ""));
    snprintf(job->task_type, sizeof job->task_type, "%s", bj_get_str(doc, "task_type", "noop"));
    job->partition = (int)bj_get_int(doc, "partition", 0);
    job->attempt = (int)bj_get_int(doc, "attempt", 1);
    job->scheduled_for = bj_get_date(doc, "scheduled_for", 0);
    job->retry = RETRY_POLICY_DEFAULT;
    sched_fill_job(self->m->sched, job);
    job->parameters = job_parameters_json(doc);
    snprintf(r->status, sizeof r->status, "%s", status);
    r->started_at = bj_get_date(doc, "started_at", 0);
    r->run_at = bj_get_date(doc, "run_at", 0);
    s_count(self->active, job->trigger_id, 1);
    zhashx_insert(self->recovering, id, r);
    return 1;
}

int dispatch_scan_poll(dispatch_t *self)
{
    if (!self->scan)
        return 0;
    if (!scan_done(self->scan))
        return 1;
    size_t read = 0;
    int64_t took = 0;
    zlistx_t *docs = scan_finish(&self->scan, &read, &took);
    int count = 0;
    for (bson_t *doc = docs ? zlistx_first(docs) : NULL; doc; doc = zlistx_next(docs))
        count += s_take_over(self, doc);
    zlistx_destroy(&docs);
    zhashx_purge(self->claimed);
    if (count) {
        /* Wait for every worker to have heartbeaten once with its running jobs. */
        self->recover_started = clock_mono_ms();
        self->recover_until = self->recover_started + self->m->cfg->worker_timeout_ms;
        self->recover_token = (int64_t)(s_random(self) * 4503599627370496.0) + 1;
        for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers))
            s_ping(self, w, self->recover_started);
        log_info("jobs taken over", "count=%d placing_in_ms=%d read=%zu scan_ms=%lld", count,
                 self->m->cfg->worker_timeout_ms, read, (long long)took);
    } else {
        log_info("takeover scan over", "read=%zu scan_ms=%lld", read, (long long)took);
    }
    partitions_scanned(self->m);
    return 0;
}

/* Sends CANCEL for a flight's attempt to its worker. */
static void s_cancel_flight(dispatch_t *d, flight_t *f, const char *reason)
{
    worker_t *w = zhashx_lookup(d->workers, f->worker_key);
    if (!w)
        return; /* no worker: its timeout or loss ends the attempt */
    proto_msg_t msg = {.type = PROTO_CANCEL, .seq = ++d->seq, .attempt = f->job->attempt};
    snprintf(msg.node_id, sizeof msg.node_id, "%s", d->m->cfg->node_id);
    snprintf(msg.job_id, sizeof msg.job_id, "%s", f->job->id);
    snprintf(msg.reason, sizeof msg.reason, "%s", reason);
    zmsg_t *z = proto_encode(&msg, NULL);
    if (!z)
        return;
    zmsg_pushmem(z, zframe_data(w->identity), zframe_size(w->identity));
    if (zmsg_send(&z, d->m->router) < 0)
        zmsg_destroy(&z);
    log_info("job cancel sent", "job=%s attempt=%d worker=%s reason=%s", f->job->id,
             f->job->attempt, w->node_id, reason);
}

/* Records a job that never reached a worker as cancelled and forgets it. */
static void s_cancel_waiting(dispatch_t *d, job_t **job_p, const char *reason)
{
    job_t *job = *job_p;
    outcome_t o = {.status = "cancelled", .finished_at = clock_wall_ms(), .duration_ms = -1,
                   .error = reason};
    s_save_outcome(d, job->id, job->attempt, &o, 0, 0, 0);
    stats_job_finished(job->task_type, "cancelled");
    s_job_final(d, job_p);
}

/* Detaches from the pending queue every job matching (trigger or partition). */
static zlistx_t *s_take_pending(dispatch_t *d, const char *trigger_id, int partition)
{
    zlistx_t *taken = zlistx_new();
    size_t n = zlistx_size(d->pending);
    for (size_t i = 0; i < n; i++) {
        job_t *job = zlistx_detach(d->pending, NULL);
        if ((trigger_id && strcmp(job->trigger_id, trigger_id) == 0) ||
            (!trigger_id && job->partition == partition))
            zlistx_add_end(taken, job);
        else
            zlistx_add_end(d->pending, job);
    }
    return taken;
}

/* Removes from the timer heap the retries matching (trigger or partition). */
static zlistx_t *s_take_retries(dispatch_t *d, const char *trigger_id, int partition)
{
    zlistx_t *taken = zlistx_new();
    for (size_t i = 0; i < d->heap.n;) {
        due_t *e = (due_t *)d->heap.v[i];
        if (e->job && ((trigger_id && strcmp(e->job->trigger_id, trigger_id) == 0) ||
                       (!trigger_id && e->job->partition == partition))) {
            heap_remove(&d->heap, &e->hn);
            zlistx_add_end(taken, e->job);
            free(e);
            i = 0; /* the heap moved; start over (rare, small) */
        } else {
            i++;
        }
    }
    return taken;
}

void dispatch_cancel_trigger(dispatch_t *self, const char *trigger_id, const char *reason)
{
    job_t *held = zhashx_lookup(self->buffered, trigger_id);
    if (held) {
        zhashx_delete(self->buffered, trigger_id);
        s_count(self->active, trigger_id, 1); /* s_cancel_waiting takes one off */
        s_cancel_waiting(self, &held, reason);
    }
    zlistx_t *lists[2] = {s_take_pending(self, trigger_id, -1), s_take_retries(self, trigger_id, -1)};
    for (int k = 0; k < 2; k++) {
        for (job_t *job = zlistx_first(lists[k]); job; job = zlistx_next(lists[k]))
            s_cancel_waiting(self, &job, reason);
        zlistx_destroy(&lists[k]);
    }
    for (flight_t *f = zhashx_first(self->flights); f; f = zhashx_next(self->flights))
        if (strcmp(f->job->trigger_id, trigger_id) == 0)
            s_cancel_flight(self, f, reason);
}

void dispatch_withdraw(dispatch_t *self, const char *trigger_id, int64_t after,
                       int (*keep)(void *arg, int64_t scheduled_for), void *arg)
{
    zlistx_t *taken = s_take_pending(self, trigger_id, -1);
    for (job_t *job = zlistx_first(taken); job; job = zlistx_next(taken)) {
        if (job->attempt == 1 && job->scheduled_for > after &&
            !(keep && keep(arg, job->scheduled_for))) {
            s_delete_withdrawn(self, job);
            job_t *gone = job;
            s_job_final(self, &gone);
        } else {
            s_pending_add(self, job);
        }
    }
    zlistx_destroy(&taken); /* every job went on or back */
    for (flight_t *f = zhashx_first(self->flights); f; f = zhashx_next(self->flights))
        if (!f->withdrawn && !f->started_at && f->job->attempt == 1 &&
            f->job->scheduled_for > after && strcmp(f->job->trigger_id, trigger_id) == 0 &&
            !(keep && keep(arg, f->job->scheduled_for))) {
            f->withdrawn = 1;
            s_cancel_flight(self, f, "withdrawn");
        }
}

void dispatch_cancel_job(dispatch_t *self, const char *job_id)
{
    flight_t *f = zhashx_lookup(self->flights, job_id);
    if (f) {
        s_cancel_flight(self, f, "cancelled");
        return;
    }
    rec_t *r = zhashx_lookup(self->recovering, job_id);
    if (r) {
        job_t *job = r->job;
        r->job = NULL;
        zhashx_delete(self->recovering, job_id);
        s_cancel_waiting(self, &job, "cancelled by request");
        return;
    }
    for (job_t *job = zhashx_first(self->buffered); job; job = zhashx_next(self->buffered))
        if (strcmp(job->id, job_id) == 0) {
            zhashx_delete(self->buffered, job->trigger_id);
            s_count(self->active, job->trigger_id, 1); /* s_cancel_waiting takes one off */
            s_cancel_waiting(self, &job, "cancelled by request");
            return;
        }
    char trig[64];
    snprintf(trig, sizeof trig, "%.*s", (int)strcspn(job_id, "@"), job_id);
    zlistx_t *lists[2] = {s_take_pending(self, trig, -1), s_take_retries(self, trig, -1)};
    int found = 0;
    for (int k = 0; k < 2; k++) {
        for (job_t *job = zlistx_first(lists[k]); job; job = zlistx_next(lists[k])) {
            if (strcmp(job->id, job_id) == 0) {
                s_cancel_waiting(self, &job, "cancelled by request");
                found = 1;
            } else if (k == 0) {
                s_pending_add(self, job); /* not this one: back in the queue */
            } else {
                due_t *e = calloc(1, sizeof *e);
                e->job = job;
                e->hn.key = clock_mono_ms();
                heap_push(&self->heap, &e->hn);
            }
        }
        zlistx_destroy(&lists[k]);
    }
    if (found || !partitions_owned(self->m, sched_partition(trig, self->m->cfg->partitions)))
        return;
    /* Not in memory here (e.g. queued while no master had seen it): record it. */
    outcome_t o = {.status = "cancelled", .finished_at = clock_wall_ms(), .duration_ms = -1,
                   .error = "cancelled by request"};
    bson_t doc;
    if (store_get_job(self->m->store, job_id, &doc, NULL) == 1) {
        s_save_outcome(self, job_id, (int)bj_get_int(&doc, "attempt", 1), &o, 0, 0, 1);
        bson_destroy(&doc);
    }
}

void dispatch_drop_partition(dispatch_t *self, int partition)
{
    zlistx_t *keys = zhashx_keys(self->buffered);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        job_t *job = zhashx_lookup(self->buffered, k);
        if (job->partition == partition) {
            zhashx_delete(self->buffered, k);
            job_destroy(&job);
        }
    }
    zlistx_destroy(&keys);
    zlistx_t *lists[2] = {s_take_pending(self, NULL, partition),
                          s_take_retries(self, NULL, partition)};
    for (int k = 0; k < 2; k++) {
        for (job_t *job = zlistx_first(lists[k]); job; job = zlistx_next(lists[k]))
            s_job_final(self, &job);
        zlistx_destroy(&lists[k]);
    }
    keys = zhashx_keys(self->recovering);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        rec_t *r = zhashx_lookup(self->recovering, k);
        if (r->job->partition == partition) {
            s_count(self->active, r->job->trigger_id, -1);
            zhashx_delete(self->recovering, k);
        }
    }
    zlistx_destroy(&keys);
}

/* Appends a live OUTPUT chunk to its attempt's tail; saves the tail to the
 * job document when the last save is old enough. */
static void s_on_output(dispatch_t *d, const proto_msg_t *msg)
{
    flight_t *f = zhashx_lookup(d->flights, msg->job_id);
    if (!f || f->job->attempt != msg->attempt || !msg->output || !s_owned(d, f->job))
        return;
    const char *chunk = msg->output;
    size_t n = strlen(chunk);
    if (n > OUTPUT_TAIL_MAX) {
        chunk += n - OUTPUT_TAIL_MAX;
        n = OUTPUT_TAIL_MAX;
    }
    if (!f->tail)
        f->tail = malloc(OUTPUT_TAIL_MAX + 1);
    if (f->tail_len + n > OUTPUT_TAIL_MAX) {
        size_t drop = f->tail_len + n - OUTPUT_TAIL_MAX;
        memmove(f->tail, f->tail + drop, f->tail_len - drop);
        f->tail_len -= drop;
    }
    memcpy(f->tail + f->tail_len, chunk, n);
    f->tail_len += n;
    f->tail[f->tail_len] = '\0';
    /* The cut may have split a UTF-8 sequence: start at a character. */
    size_t skip = 0;
    while (skip < f->tail_len && ((unsigned char)f->tail[skip] & 0xC0) == 0x80)
        skip++;
    if (skip) {
        memmove(f->tail, f->tail + skip, f->tail_len - skip + 1);
        f->tail_len -= skip;
    }
    int64_t now = clock_mono_ms();
    if (now - f->tail_saved < OUTPUT_SAVE_MS)
        return;
    f->tail_saved = now;
    bson_t *update = bson_new(), set;
    BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    bson_append_utf8(&set, "output_tail", -1, f->tail, -1);
    bson_append_document_end(update, &set);
    s_update_job(d, msg->job_id, msg->attempt, update, 0);
}

static void s_same_node(dispatch_t *d, worker_t *w, const proto_msg_t *msg);

/* Settles the flights that moved to `w` unlisted (s_worker_gone): one it
 * lists now, or that has started, is confirmed; one still missing from an
 * announcement a heartbeat after the move never reached the worker (the
 * old connection dropped it), and ends lost. */
static void s_confirm(dispatch_t *d, worker_t *w)
{
    int64_t now = clock_mono_ms();
    zlistx_t *lost = zlistx_new();
    w->unconfirmed = 0;
    for (flight_t *f = zhashx_first(d->flights); f; f = zhashx_next(d->flights)) {
        if (!f->moved_unlisted || strcmp(f->worker_key, w->key) != 0)
            continue;
        if (f->started_at || zhashx_lookup(w->listed, f->id))
            f->moved_unlisted = 0;
        else if (now - f->moved_unlisted >= d->m->cfg->heartbeat_ms)
            zlistx_add_end(lost, f);
        else
            w->unconfirmed++;
    }
    for (flight_t *f = zlistx_first(lost); f; f = zlistx_next(lost)) {
        f->moved_unlisted = 0;
        s_abandon(d, f, "lost", "worker reconnected without it");
    }
    zlistx_destroy(&lost);
}

/* Keeps the jobs a worker's announcement lists (HELLO lists none). */
static void s_listed(worker_t *w, const proto_msg_t *msg)
{
    zhashx_purge(w->listed);
    for (int i = 0; i < msg->nrunning; i++)
        zhashx_update(w->listed, msg->running[i], (void *)"listed"); /* a set: the key is copied */
}

void dispatch_on_message(dispatch_t *self, zframe_t *identity, proto_msg_t *msg)
{
    worker_t *w = s_worker(self, identity, msg);
    switch (msg->type) {
    case PROTO_HELLO:
    case PROTO_HEARTBEAT:
        snprintf(w->node_id, sizeof w->node_id, "%s", msg->node_id);
        s_take_credit(self, w, msg);
        snprintf(w->labels, sizeof w->labels, "%s", msg->labels);
        snprintf(w->serves, sizeof w->serves, "%s", msg->serves[0] ? msg->serves : msg->task_types);
        w->draining = 0;
        w->echo = msg->echo;
        s_listed(w, msg);
        s_same_node(self, w, msg);
        if (w->unconfirmed)
            s_confirm(self, w);
        s_adopt(self, w, msg);
        break;
    case PROTO_BYE:
        if (w) {
            w->draining = 1;
            w->echo = msg->echo;
            s_listed(w, msg);
            if (w->unconfirmed)
                s_confirm(self, w);
            log_info("worker draining", "worker=%s", w->node_id);
            s_adopt(self, w, msg);
        }
        break;
    case PROTO_STARTED:
    case PROTO_FINISHED:
        s_on_status(self, identity, msg);
        break;
    case PROTO_OUTPUT:
        s_on_output(self, msg);
        return;
    case PROTO_REFUSED:
        if (w)
            s_on_refused(self, w, msg);
        break;
    default:
        log_warn("unexpected message type from a worker", "type=%s", proto_type_name(msg->type));
        proto_dropped++;
        return;
    }
    if (self->recover_until && msg->echo == self->recover_token) /* maybe the last answer */
        s_place_when_heard(self, clock_mono_ms());
    s_pump(self);
}

/* ---- time --------------------------------------------------------------- */

/* Ends an attempt the master gave up on (lost worker, timeout). */
static void s_abandon(dispatch_t *d, flight_t *f, const char *status, const char *error)
{
    if (master_end_waiting(d->m, f->id, f->job->attempt)) {
        /* Its FINISHED came and waits its turn behind other status writes:
         * the attempt ended, and that message records how. */
        worker_t *w = zhashx_lookup(d->workers, f->worker_key);
        if (w && w->inflight > 0)
            w->inflight--;
        f->worker_key[0] = '\0';
        log_info("attempt not taken for lost: its FINISHED is waiting to be recorded",
                 "job=%s attempt=%d would_be=%s", f->id, f->job->attempt, status);
        return;
    }
    if (!s_owned(d, f->job)) {
        log_warn("job not recorded: its partition is no longer held here", "job=%s status=%s",
                 f->job->id, status);
        s_flight_finish(d, f);
        return;
    }
    int64_t now = clock_wall_ms();
    outcome_t o = {.status = status, .worker_id = f->worker_id, .started_at = f->started_at,
                   .finished_at = now, .duration_ms = f->started_at ? now - f->started_at : -1,
                   .error = error};
    log_warn(strcmp(status, "lost") == 0 ? "job lost" : "job timed out", "job=%s attempt=%d worker=%s",
             f->job->id, f->job->attempt, f->worker_id);
    if (strcmp(status, "lost") == 0)
        stats_job_lost(f->job->task_type);
    s_end_attempt(d, f, &o);
}

/* Forgets worker entry `old`. Its flights move to `heir` (the same node
 * under another connection), or, with no heir, end lost with `why`. A
 * flight the heir did not list may still be on its way: a worker that
 * stalled past the connection's heartbeat timeout announces itself on the
 * new connection before it reads what the old one had delivered. The
 * heir's later announcements settle it (s_confirm). */
static void s_worker_gone(dispatch_t *d, worker_t *old, worker_t *heir, const char *why)
{
    zlistx_t *mine = zlistx_new();
    for (flight_t *f = zhashx_first(d->flights); f; f = zhashx_next(d->flights))
        if (strcmp(f->worker_key, old->key) == 0)
            zlistx_add_end(mine, f);
    int64_t now = clock_mono_ms();
    for (flight_t *f = zlistx_first(mine); f; f = zlistx_next(mine)) {
        if (heir) {
            snprintf(f->worker_key, sizeof f->worker_key, "%s", heir->key);
            old->inflight--;
            heir->inflight++;
            if (zhashx_lookup(heir->listed, f->id)) {
                f->moved_unlisted = 0;
            } else {
                if (!f->moved_unlisted)
                    f->moved_unlisted = now;
                heir->unconfirmed++;
            }
        } else {
            s_abandon(d, f, "lost", why);
        }
    }
    zlistx_destroy(&mine);
    zhashx_delete(d->workers, old->key);
}

/* A worker node is known by its node id, a connection by its ZeroMQ
 * identity: a worker that reconnects (HEARTBEAT on a new connection) or
 * restarts (HELLO) shows up under a new identity. The entry of its old
 * connection goes at once, rather than lingering (draining, or holding
 * jobs) until it times out. Two live workers sharing a node id are a
 * misconfiguration: an old entry heard from within the last heartbeat is
 * kept, and the clash logged. */
static void s_same_node(dispatch_t *d, worker_t *w, const proto_msg_t *msg)
{
    int64_t now = clock_mono_ms();
    zlistx_t *old = zlistx_new();
    for (worker_t *o = zhashx_first(d->workers); o; o = zhashx_next(d->workers))
        if (o != w && strcmp(o->node_id, w->node_id) == 0)
            zlistx_add_end(old, o);
    for (worker_t *o = zlistx_first(old); o; o = zlistx_next(old)) {
        int64_t silent = now - o->last_seen;
        if (msg->type != PROTO_HELLO && silent < d->m->cfg->heartbeat_ms) {
            /* Once per entry: after a stall, an old connection's queued
             * messages and a new one's alternate, and would say it each time. */
            if (!w->clash_logged)
                log_warn("two workers share a node id; give each its own SKED_NODE_ID",
                         "worker=%s", w->node_id);
            w->clash_logged = 1;
            continue;
        }
        log_info(msg->type == PROTO_HELLO ? "worker restarted" : "worker reconnected",
                 "worker=%s inflight_before=%d silent_ms=%lld", o->node_id, o->inflight,
                 (long long)(o->last_seen < 0 ? -1 : silent)); /* -1: found unreachable */
        if (msg->type == PROTO_HELLO) /* a new process: what the old one held is gone */
            s_worker_gone(d, o, NULL, "worker restarted");
        else
            s_worker_gone(d, o, w, "worker reconnected without it");
    }
    zlistx_destroy(&old);
}

/* A worker silent past the timeout is gone: its jobs become lost. If this
 * master's own loop was what kept it from hearing (blocked in a store call
 * during an outage), the silence proves nothing: everyone gets a fresh
 * timeout instead. */
static void s_expire(dispatch_t *d, int64_t now)
{
    int64_t stalled = d->last_expire ? now - d->last_expire : 0;
    d->last_expire = now;
    if (stalled > d->m->cfg->worker_timeout_ms / 2) {
        /* The stall does not count as a worker's silence: shift every
         * worker's last sign of life by it (silence before and after the
         * stall still adds up, so a dead worker is dropped all the same). */
        log_warn("master loop stalled; the stall does not count against workers",
                 "stalled_ms=%lld", (long long)stalled);
        for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
            w->last_seen = w->last_seen + stalled > now ? now : w->last_seen + stalled;
        return;
    }
    zlistx_t *gone = zlistx_new();
    for (worker_t *w = zhashx_first(d->workers); w; w = zhashx_next(d->workers))
        if (now - w->last_seen > d->m->cfg->worker_timeout_ms)
            zlistx_add_end(gone, w);
    for (worker_t *w = zlistx_first(gone); w; w = zlistx_next(gone)) {
        /* An old connection of a node that is heard on another one (both
         * seemed alive at once after a stall, so neither replaced the
         * other): the jobs the live one lists move to it. */
        worker_t *heir = NULL;
        for (worker_t *o = zhashx_first(d->workers); o && !heir; o = zhashx_next(d->workers))
            if (o != w && strcmp(o->node_id, w->node_id) == 0 &&
                now - o->last_seen <= d->m->cfg->worker_timeout_ms)
                heir = o;
        log_warn("worker gone", "worker=%s inflight=%d other_connection=%s", w->node_id,
                 w->inflight, heir ? "live" : "none");
        s_worker_gone(d, w, heir, "worker stopped heartbeating");
    }
    zlistx_destroy(&gone);
}

/* Acts on the timers that are due: retries join the pending queue, running
 * attempts past their deadline time out. */
static void s_timers(dispatch_t *d, int64_t now)
{
    for (due_t *e; (e = heap_top(&d->heap)) && e->hn.key <= now;) {
        heap_remove(&d->heap, &e->hn);
        if (!e->job) {
            /* Tell the worker to stop it too (its process group is killed). */
            s_cancel_flight(d, e->flight, "timed_out");
            s_abandon(d, e->flight, "timed_out",
                      "no FINISHED within max_execution_time and grace; worker hung?");
            continue;
        }
        job_t *job = e->job;
        if (s_owned(d, job)) {
            log_debug("retry due", "job=%s attempt=%d", job->id, job->attempt);
            s_pending_add(d, job);
        } else if (d->m->leases[job->partition].held) {
            e->hn.key = now + 250; /* lease being renewed: look again shortly */
            heap_push(&d->heap, &e->hn);
            continue;
        } else {
            log_warn("retry not dispatched: partition no longer held here; job stays retrying",
                     "job=%s attempt=%d", job->id, job->attempt);
            s_job_final(d, &job);
        }
        free(e);
    }
}

/* Writes the STARTED of due[0..*n) in one bulk and empties it; -1 if the
 * store refused some (they are written again a second later). */
static int s_save_started(dispatch_t *d, flight_t **due, size_t *n)
{
    for (size_t i = 0; i < *n; i++) /* the store sees a job's writes in the order made */
        s_settle_job(d, due[i]->id);
    const char *ids[STORE_BULK_MAX] = {0};
    bson_t *updates[STORE_BULK_MAX] = {0};
    for (size_t i = 0; i < *n; i++) {
        ids[i] = due[i]->id;
        updates[i] = s_started_update(due[i]->started_at, due[i]->worker_id, due[i]->job->attempt);
    }
    size_t done = s_write_jobs(d, "update_started", ids, updates, *n);
    for (size_t i = 0; i < *n; i++) {
        bson_destroy(updates[i]);
        if (i < done) {
            due[i]->started_unsaved = 0;
            d->unsaved--;
        }
    }
    int rc = done < *n ? -1 : 0;
    if (rc < 0)
        d->unsaved_retry = clock_mono_ms() + 1000; /* still away */
    *n = 0;
    return rc;
}

/* Persists deferred STARTED updates once due, and those that failed while
 * the store was away (then every second until they are written), in
 * ordered bulks by `_id`. A flight of a partition no longer held is left
 * to its next owner. Stops when a fire falls due (and is not late
 * already) or after STARTED_BUDGET_MS, leaving the rest to the next loop
 * turn (dispatch_busy). */
static void s_save_unsaved(dispatch_t *d, int64_t now)
{
    d->unsaved_more = 0;
    if (!d->unsaved || now < d->unsaved_retry)
        return;
    int64_t until = clock_mono_ms() + STARTED_BUDGET_MS;
    flight_t *due[STORE_BULK_MAX];
    size_t n = 0;
    for (flight_t *f = zhashx_first(d->flights); f; f = zhashx_next(d->flights)) {
        if (!f->started_unsaved || now < f->started_due)
            continue;
        if (!s_owned(d, f->job)) { /* the partition's new holder learns it from the worker */
            f->started_unsaved = 0;
            d->unsaved--;
            continue;
        }
        if (sched_on_time_due(d->m->sched) || clock_mono_ms() >= until) {
            d->unsaved_more = 1; /* a fire is due, or the turn is over: next turn */
            return;
        }
        due[n++] = f;
        if (n == STORE_BULK_MAX && s_save_started(d, due, &n) < 0)
            return;
    }
    if (n)
        s_save_started(d, due, &n);
}

int dispatch_busy(const dispatch_t *self)
{
    return self->unsaved_more;
}

void dispatch_turn(dispatch_t *self)
{
    int64_t now = clock_mono_ms();
    s_expire(self, now);
    s_timers(self, now);
    s_pump(self);
}

void dispatch_pump(dispatch_t *self)
{
    s_pump(self);
}

void dispatch_tick(dispatch_t *self)
{
    int64_t now = clock_mono_ms();
    s_save_unsaved(self, now);
    s_expire(self, now);
    s_timers(self, now);
    if (self->recover_until) {
        s_ping_unanswered(self, now);
        s_place_when_heard(self, now);
    }
    s_pump(self);
    long free_slots = 0, used = 0;
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        int fr = w->credit < 0 ? 0 : w->credit > w->slots ? w->slots : w->credit;
        free_slots += fr;
        used += w->slots - fr;
    }
    stats_dispatch(zlistx_size(self->pending), free_slots, used, zhashx_size(self->workers),
                   self->unsaved);
}

int64_t dispatch_recent_lag(dispatch_t *self)
{
    int64_t minute = clock_mono_ms() / 60000;
    if (minute != self->lag_minute) {
        self->lag_max[1] = minute == self->lag_minute + 1 ? self->lag_max[0] : 0;
        self->lag_max[0] = 0;
        self->lag_minute = minute;
    }
    return self->lag_max[0] > self->lag_max[1] ? self->lag_max[0] : self->lag_max[1];
}

json_t *dispatch_unserved_json(dispatch_t *self)
{
    json_t *seen = json_object();
    for (job_t *job = zlistx_first(self->pending); job; job = zlistx_next(self->pending)) {
        if (json_object_get(seen, job->task_type))
            continue;
        int served = 0;
        for (worker_t *w = zhashx_first(self->workers); w && !served; w = zhashx_next(self->workers))
            served = s_in_list(w->serves, job->task_type);
        if (!served)
            json_object_set_new(seen, job->task_type, json_true());
    }
    json_t *arr = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(seen, k, v) json_array_append_new(arr, json_string(k));
    json_decref(seen);
    return arr;
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
