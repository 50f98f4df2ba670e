/*
 * master.h - the parts of a master and how they reach each other.
 *
 *   partitions.c  leases on trigger partitions, membership, rebalancing
 *   sched.c       triggers of held partitions in a min-heap; fires them
 *   dispatch.c    workers, credit, the pending queue, job status, retries
 *                 and timeouts
 *   stats.c       Prometheus metrics (names, labels, updates)
 *   alert.c       cluster alerts and triggers' notifications POSTed to
 *                 webhooks (curl multi), deliveries recorded on jobs
 *   prune.c       job retention (SKED_JOB_RETENTION_S)
 *   writer.c      job status updates, written by a thread of their own
 *   scan.c        the takeover scan of gained partitions' jobs, read by a
 *                 thread of its own
 *   main.c        configuration, the ZeroMQ loop, signals, metrics server
 *
 * Everything runs on one thread, the loop, with synchronous store calls,
 * but for three threads, each with a store connection of its own: the
 * lease keeper (partitions.c), that renews the leases held while the loop
 * shows signs of life, so that a loop held up in one slow store call does
 * not lose them; the status writer (writer.c), that writes the outcomes
 * the loop hands it, so that the loop reads the next worker messages and
 * claims the next fires meanwhile; and, while partitions are taken over,
 * the takeover scan (scan.c), that reads their jobs while the loop fires.
 */
#ifndef SKED_MASTER_H
#define SKED_MASTER_H

#include "common/config.h"
#include "common/lease.h"
#include "common/store.h"
#include "proto/proto.h"

#include <czmq.h>
#include <pthread.h>

typedef struct sched sched_t;
typedef struct dispatch dispatch_t;
typedef struct alert alert_t;
typedef struct keeper keeper_t;
typedef struct writer writer_t;
typedef struct snapshots snapshots_t;

typedef struct {
    const config_t *cfg;
    store_t *store;
    zsock_t *router;
    lease_t *leases; /* cfg->partitions of them, index = partition; written under the keeper's lock */
    keeper_t *keeper; /* the thread that renews them (partitions.c) */
    writer_t *writer; /* the thread that writes job status updates (writer.c) */
    pthread_mutex_t write_mu; /* one store write of this master's at a time: the loop's or the writer's */
    int write_want;           /* the loop waits for write_mu (atomic): the writer lets it go first */
    int64_t *handing; /* per partition: monotonic ms since it is being given back, 0 = not */
    char *lapsed;     /* per partition: lease found lost by the keeper, to forget (its lock) */
    char *loading;    /* per partition: gained, LOAD_TRIGGERS then LOAD_SCAN (partitions_may_fire) */
    int64_t joined;   /* monotonic ms of its first member document; 0 before (partitions_tick) */
    int64_t retake_at; /* wall ms the first lease contended for and not taken expires; 0 none (partitions_tick) */
    int taking;       /* partitions_tick is contending, loading, taking over: turns (master_turn) */
    int turning;      /* inside master_turn */
    zlistx_t *later;  /* NOTIFYs for partitions being loaded, handled once the load is over */
    sched_t *sched;
    snapshots_t *snaps; /* this master's own snapshots, per partition (snapshot.c) */
    dispatch_t *disp;
    alert_t *alert; /* NULL: alerts off */
    zlistx_t *waiting; /* worker status messages (packed) not handled yet, arrival order (main.c) */
    zhashx_t *ends_waiting; /* "<job id>#<attempt>" of the FINISHED in waiting -> count */
    uint64_t rx;       /* messages received so far; the one being handled is number rx_now */
    uint64_t rx_now;
} master_t;

/* m->loading[p]: a gained partition's triggers are being read (nothing of
 * it runs), then its jobs are being scanned to be taken over (its
 * triggers that allow overlapping runs fire; reports and NOTIFYs wait). */
enum { LOAD_TRIGGERS = 1, LOAD_SCAN = 2 };

/* execution_config.retry_policy of a trigger, defaults filled in. */
typedef struct {
    int max_retries;      /* retries after the first attempt, 0-100 */
    double initial_delay; /* seconds before the first retry */
    double multiplier;    /* backoff factor per attempt, >= 1 */
    double max_delay;     /* seconds, cap on any delay */
    int jitter;           /* full jitter: uniform in [0, delay] */
} retry_policy_t;

#define RETRY_POLICY_DEFAULT ((retry_policy_t){0, 1.0, 2.0, 300.0, 1})

/* What to do with a fire while the trigger's previous job is not final. */
typedef enum {
    OVERLAP_FORBID = 0, /* skip the new fire (recorded as skipped) */
    OVERLAP_ALLOW,      /* run both */
    OVERLAP_REPLACE,    /* cancel the running one, run the new one */
    OVERLAP_BUFFER_ONE, /* hold one fire until the running one ends; skip further ones */
} overlap_t;

/* A job ready to go to a worker; owned by dispatch once submitted. */
typedef struct {
    char id[PROTO_ID_MAX];
    char trigger_id[64];
    char task_type[64];
    int partition;
    int attempt;
    int priority;
    int64_t scheduled_for;
    int max_execution_time; /* seconds, 0 = none */
    retry_policy_t retry;
    char labels[256];  /* required worker labels, "k=v,k2=v2" */
    int slot;          /* 1 + index of the cluster-wide slot held for its task type's limit; 0 none */
    char *parameters; /* JSON object text, owned */
    char *notify;     /* the trigger's notifications as {"trigger_name", "hooks"} text, owned; NULL none */
} job_t;

/* An event a trigger's notification webhooks may have asked for. */
typedef struct {
    const char *event; /* "failure" (no retry left), "success", "skipped" */
    const char *job_id, *trigger_id, *task_type;
    const char *notify; /* job_t.notify of the trigger */
    const char *status; /* the job's final status */
    int attempt;
    int64_t scheduled_for;
    const char *worker_id, *error, *output, *skip_reason; /* may be NULL */
    long skipped; /* fires a "skipped" notice stands for (> 1: misfires recorded at once) */
    unsigned done_hooks; /* bit i: hook i already has a delivery record for this event */
} notice_t;

/* main.c */
/* True while a FINISHED for (job_id, attempt) waits its turn in m->waiting:
 * the attempt has ended, whatever else says otherwise meanwhile. */
int master_end_waiting(master_t *m, const char *job_id, int attempt);
/* True once SIGTERM or SIGINT came: the loop ends at its next turn, and a
 * long read on the loop thread stops early (partitions_keep_reading). */
int master_stopping(void);
/* One turn of the loop from inside partitions_tick's contention for
 * partitions or the load of those gained (between two of their round
 * trips): what has arrived is handled and the due fires of the
 * partitions held before are made, so that a load of minutes holds
 * neither. Does nothing elsewhere. */
void master_turn(master_t *m);
/* Handles the NOTIFYs kept while their partitions loaded (m->later). */
void master_loaded(master_t *m);
/* Gives the process's free heap pages back to the system: after a load,
 * a restore or a snapshot written, megabytes were freed below memory
 * still in use, and glibc keeps such pages unless asked (11 MiB at
 * 100,000 triggers after a load; 3-4 MiB a master at 1,000,000 after the
 * snapshots: docs/BENCHMARKS.md). Does nothing without glibc. */
void master_trim(void);

/* partitions.c */
/* Sets up the leases (their chains' heads are read by the loop's first
 * tick, lease_scan) and starts the keeper thread. Returns 0, or -1 if
 * the keeper cannot start (the master cannot run without it). */
int partitions_init(master_t *m, err_t *err);
/* Stops the keeper thread and frees what partitions_init made. */
void partitions_destroy(master_t *m);
/* Acquires/releases leases and refreshes this master's member document;
 * loads and drops partitions in the scheduler. */
void partitions_tick(master_t *m);
/* Forgets the partitions whose leases the keeper found lost and returns
 * how many; tells the keeper the loop is alive. */
int partitions_forget_lost(master_t *m);
/* Tells the keeper the loop is alive: it renews the leases only while the
 * loop was last alive within a lease TTL. Called each turn of the loop
 * and between two round trips of a long read. */
void partitions_alive(master_t *m);
/* Documents a long read on the loop thread reads between two signs of
 * life (partitions_keep_reading); also the batch such a read asks for, so
 * that a round trip returns in time for the next. */
#define LEASE_KEEP_EVERY 256
/* Counts a document of such a read (a load, a prune pass: each a full
 * scan on FerretDB) in *read, and every
 * LEASE_KEEP_EVERY of them tells the keeper the loop is alive and gives
 * the loop a turn (master_turn). Returns 1 if the read is to stop there
 * because the master is stopping (a load of 1,000,000 triggers takes
 * minutes), else 0. */
int partitions_keep_reading(master_t *m, size_t *read);
/* True while this master may fire and write for partition p. */
int partitions_owned(const master_t *m, int p);
/* Milliseconds until a dead master's lease that the last tick could not
 * take yet expires (and a little more), or -1: the loop ticks again then
 * rather than up to a heartbeat later. */
int64_t partitions_retake_in(const master_t *m);
/* The takeover scan of the partitions gained is over (dispatch_scan_poll):
 * they are no longer loading, and the NOTIFYs kept meanwhile are handled. */
void partitions_scanned(master_t *m);
void partitions_release_all(master_t *m);

/* writer.c */
/* A job document update handed to the status writer, and handed back
 * with `saved` set once written (or not). */
typedef struct {
    char id[PROTO_ID_MAX]; /* the job's _id */
    int attempt;
    int partition;         /* written only while its lease is valid here */
    const char *op;        /* the store op it counts as (a static string) */
    bson_t *update;        /* the writer's once handed over */
    int record;            /* update is an outcome record for job_results */
    zframe_t *identity;    /* a FINISHED's sender, to acknowledge; NULL: none */
    int saved;
} wr_item_t;
/* Starts the writer thread with a store connection of its own. */
writer_t *writer_new(master_t *m, err_t *err);
/* Stops it; what it had not written is handed back unsaved, and freed. */
void writer_destroy(writer_t **self_p);
/* Queues items[0..n) in order; waits while the queue is full. */
void writer_put(writer_t *self, wr_item_t *items, size_t n);
/* Takes up to max items written or refused, in order; the caller owns
 * their identity frames. */
size_t writer_take(writer_t *self, wr_item_t *out, size_t max);
/* The loop's store writes (claims, states, its own job updates) and the
 * writer's bulks take turns (write_mu), the loop's first: on FerretDB/
 * SQLite two writes of one master at once made each slower (the store
 * has one writer; the loser sleeps in SQLite's busy handler), which cost
 * more than writing off the loop saved (docs/BENCHMARKS.md). */
void master_write_begin(master_t *m);
void master_write_end(master_t *m);
/* Waits until everything handed over is written or refused. */
void writer_settle(writer_t *self);
/* Readable while items wait to be taken (the loop polls it). */
int writer_fd(const writer_t *self);

/* scan.c */
typedef struct scan scan_t;
/* Starts reading, on a thread with a store connection to uri of its own,
 * the jobs of partitions parts[0..n) to take over (on the calling thread
 * if no thread can start). */
scan_t *scan_start(const char *uri, const int *parts, int n);
/* True once the read is over. */
int scan_done(const scan_t *self);
/* Stops the read if it is not over, and frees the scan. Returns the
 * documents read (bson_t*, the caller's), or NULL if the store could not
 * say or the read stopped early; *read: jobs read, *took: its ms. */
zlistx_t *scan_finish(scan_t **self_p, size_t *read, int64_t *took);

/* sched.c */
sched_t *sched_new(master_t *m);
void sched_destroy(sched_t **self_p);
/* Loads the active triggers of the given partitions. */
int sched_load(sched_t *self, const int *parts, int n, err_t *err);
void sched_drop(sched_t *self, int partition);
/* Appends the triggers of `partition` scheduled here to `records`,
 * packed, and the settings they share to `confs` (a BSON array, one
 * document each); returns how many (master/snapshot.c). */
size_t sched_pack(sched_t *self, int partition, zchunk_t *records, bson_t *confs);
/* Schedules the triggers sched_pack packed (of a partition just gained,
 * its lease held), as a load would, but those whose next fire is before
 * stale_before: their ids go to `stale` (a zlistx of strings; NULL: none
 * is stale). Returns how many were scheduled, or -1 if the records are
 * malformed (some may be scheduled: sched_drop them). */
long sched_unpack(sched_t *self, int partition, const bson_t *confs, const uint8_t *data,
                  size_t len, int64_t stale_before, zlistx_t *stale);
/* Begins a reconcile pass over the given partitions (unless one is
 * running): their triggers are re-read a batch at a time by
 * sched_reconcile_step, and those not found at its end leave. */
void sched_reconcile(sched_t *self, const int *parts, int n);
/* Reads on in the reconcile pass until the monotonic time `until` (and
 * at most RECONCILE_STEP_MS and one store round trip). While `busy`
 * (fires due, worker messages waiting) a pass younger than
 * RECONCILE_PATIENCE_MS waits. */
void sched_reconcile_step(sched_t *self, int64_t until, int busy);
/* True while a reconcile pass is under way. */
int sched_reconciling(const sched_t *self);
/* Re-reads one trigger after a gateway's NOTIFY (if its partition is ours). */
void sched_reload(sched_t *self, const char *trigger_id);
/* Wall ms of the earliest fire, or INT64_MAX. */
int64_t sched_next_due(const sched_t *self);
/* Fires what is due at or before now (wall ms), batch after batch until
 * none is left or the monotonic time `until` has passed (one batch at
 * least). */
void sched_fire_due(sched_t *self, int64_t now, int64_t until);
/* Saves the trigger states left to save (of partition p, or all with -1)
 * that have waited at least min_age ms, by store calls of up to 64
 * states, while the monotonic time is before `until` (and one call past
 * it if a state has waited 2 x SCHED_SAVE_BUSY_MS). Fires mark their
 * triggers' states to save; a trigger that fires again before its state
 * is saved is saved once for both. Returns how many are left to save. */
size_t sched_save_states(sched_t *self, int partition, int64_t min_age, int64_t until);
/* How long a state waits to be saved while the master is busy (fires due,
 * worker messages waiting), at least: on a store slower than the fires,
 * saving each trigger at most this often leaves the store to claims and
 * status writes. Idle, a state waits SKED_STATE_SAVE_MS. A stale state
 * costs the next owner refused claims only. */
#define SCHED_SAVE_BUSY_MS 5000
/* True if a fire is due and less than SCHED_ON_TIME_MS late. */
int sched_on_time_due(const sched_t *self);
/* Fires what is due if sched_on_time_due: lets an on-time fire go between
 * two pieces of other work (worker messages), until `until`. A fire
 * already later than that waits for the loop's turn: under overload,
 * fires do not starve worker messages. */
void sched_fire_on_time(sched_t *self, int64_t until);
#define SCHED_ON_TIME_MS 250
/* A manual run the gateway inserted (NOTIFY op "run"): dispatched under
 * the trigger's policies, or regardless of them when forced. */
void sched_run_manual(sched_t *self, const char *trigger_id, const char *job_id);
/* Fills a recovered job's policy fields (retry, labels, priority, limits)
 * from its trigger if the trigger is scheduled here; 0 or -1 if unknown. */
int sched_fill_job(sched_t *self, job_t *job);
size_t sched_size(const sched_t *self);
/* The last fire of a trigger scheduled here that is persisted in its state
 * (saved or loaded by this master; 0 none yet), or -1 if not scheduled here. */
int64_t sched_saved_last_fire(sched_t *self, const char *trigger_id);
/* The notifications (job_t.notify text) of a trigger scheduled here, or NULL. */
const char *sched_trigger_notify(sched_t *self, const char *trigger_id);

/* dispatch.c */
/* True for a job status that is not final: queued, running, retrying. */
int job_status_live(const char *status);
/* Appends `key: {op: ["queued", "running", "retrying"]}` (op "$in" or
 * "$nin") to filter. */
void job_live_append(bson_t *filter, const char *key, const char *op);
/* A job document's `parameters` as compact JSON text (the caller's), or NULL. */
char *job_parameters_json(const bson_t *doc);
dispatch_t *dispatch_new(master_t *m);
void dispatch_destroy(dispatch_t **self_p);
/* Takes ownership of *job (sets it to NULL) and sends it when a worker with
 * credit serves its task type. */
void dispatch_submit(dispatch_t *self, job_t **job);
/* Non-final jobs of a trigger that this master is running, retrying or
 * holding; what overlap policies look at. */
int dispatch_active(dispatch_t *self, const char *trigger_id);
/* buffer_one: keeps *job (taking it, sets NULL) until the trigger has no
 * active job. Returns 0, or -1 (job untouched) if one is already held. */
int dispatch_buffer(dispatch_t *self, job_t **job);
/* True if the job is running here or being taken over. */
int dispatch_active_job(dispatch_t *self, const char *job_id);
/* True if buffer_one already holds a fire for the trigger. */
int dispatch_has_buffered(dispatch_t *self, const char *trigger_id);
/* replace: cancels the trigger's active jobs (CANCEL to running ones). */
/* Jobs sent to workers that have not reported them started yet (fires
 * claimed ahead, held until their time, among them), in one partition or
 * (partition -1) in all. */
size_t dispatch_unstarted_in(dispatch_t *self, int partition);
/* Jobs sent ahead of their time that have not ended yet. */
size_t dispatch_ahead_open(dispatch_t *self);
/* 1 if fires of p (0 <= p < partitions) may be claimed at monotonic time
 * mono: its lease is valid, it is not being given back (its fires claimed
 * ahead still starting) nor loaded, and, while its takeover scan runs,
 * the trigger allows overlapping runs (`overlap_ok`): the jobs another
 * policy looks at are not known before the scan's end. */
int partitions_may_fire(const master_t *m, int p, int64_t mono, int overlap_ok);
/* 1 if p is gained and still being loaded or taken over: its NOTIFYs and
 * the reports of jobs it did not claim itself wait for the end of that. */
int partitions_loading(const master_t *m, int p);
void dispatch_cancel_trigger(dispatch_t *self, const char *trigger_id, const char *reason);
/* Withdraws the trigger's fires claimed ahead whose time is after `after`
 * (ms) and that keep() (if given) does not keep: a job not yet sent is
 * deleted at once; a worker holding one gets CANCEL, and the job is
 * deleted when the worker answers it never started it. */
void dispatch_withdraw(dispatch_t *self, const char *trigger_id, int64_t after,
                       int (*keep)(void *arg, int64_t scheduled_for), void *arg);
/* Cancels one job: CANCEL to its worker if it runs, else recorded
 * cancelled (only by the holder of its partition). */
void dispatch_cancel_job(dispatch_t *self, const char *job_id);
/* Forgets queued, buffered and retry-waiting jobs of a partition given up
 * (they stay queued/retrying in the store for the next owner). */
void dispatch_drop_partition(dispatch_t *self, int partition);
/* Takes over the non-final jobs of newly gained partitions: starts the
 * takeover scan (scan.c); once it is over (dispatch_scan_poll) adopts the
 * jobs a worker reports running, and after SKED_WORKER_TIMEOUT_MS queues
 * the rest, declares the running ones nobody reports lost, and re-arms
 * retries. */
void dispatch_recover(dispatch_t *self, const int *parts, int n);
/* A job document this master just wrote (a fire claimed, a skip
 * recorded): if a takeover scan runs for its partition, the job is ours,
 * not to be taken over. */
void dispatch_claimed(dispatch_t *self, const bson_t *doc);
/* Takes over what the takeover scan read once it is over (then calls
 * partitions_scanned). Returns 1 while a scan is under way, else 0. */
int dispatch_scan_poll(dispatch_t *self);
/* The workers other live masters list in their member documents, as read
 * at each heartbeat: a takeover places the jobs no worker reports only
 * once each of them has been heard from (or after three worker timeouts). */
void dispatch_listed_reset(dispatch_t *self);
void dispatch_listed_worker(dispatch_t *self, const char *node_id);
/* Handles a worker message; identity is the ROUTER routing frame. */
void dispatch_on_message(dispatch_t *self, zframe_t *identity, proto_msg_t *msg);
/* Hands the FINISHED outcomes handled since the last call to the status
 * writer (group commit, off the loop); the loop calls it when it has
 * drained what arrived. */
void dispatch_flush(dispatch_t *self);
/* Acknowledges the FINISHEDs the status writer has written (the loop
 * calls it when writer_fd is readable). */
void dispatch_collect(dispatch_t *self);
/* Waits until every update handed over is written, then collects: called
 * before the loop writes or reads a job the writer holds an update of,
 * before a takeover scan, and before a partition's lease is given up, so
 * that the store sees one writer per job, in order. */
void dispatch_settle(dispatch_t *self);
/* Hands an update of a job (e.g. a notification's delivery record) to the
 * status writer, behind the job's outcome; counted as store op `op`. */
void dispatch_write_job(dispatch_t *self, const char *job_id, bson_t *update, const char *op);
/* True while an update of job_id is batched or with the status writer. */
int dispatch_updating(const dispatch_t *self, const char *job_id);
/* Sends what can be sent and retries that are due; expires silent workers
 * and running jobs past max_execution_time + grace. */
void dispatch_tick(dispatch_t *self);
/* Sends pending jobs to workers with credit, nothing else: the fires a
 * loop turn claimed go out before its state saves. */
void dispatch_pump(dispatch_t *self);
/* dispatch_tick's part that a turn inside a load takes (master_turn):
 * lost workers, retries and deadlines due, jobs sent; not the placing of
 * jobs taken over, which waits for the takeover scan's end. */
void dispatch_turn(dispatch_t *self);
/* True if dispatch_tick left due work (STARTED writes) for the next loop
 * turn: the loop then does not wait. */
int dispatch_busy(const dispatch_t *self);
/* Milliseconds until dispatch_tick has a retry or a timeout to act on:
 * 0 if one is overdue, INT64_MAX if none. */
int64_t dispatch_next_timer(const dispatch_t *self);
/* Delay in ms before the retry that follows `attempt` (>= 1):
 * min(max_delay, initial_delay * multiplier^(attempt-1)), and with jitter a
 * uniform draw in [0, that] made from `rnd` (a uniform value in [0, 1)). */
int64_t retry_delay_ms(const retry_policy_t *policy, int attempt, double rnd);
/* JSON array text of connected workers, for the member document (caller frees). */
json_t *dispatch_workers_json(const dispatch_t *self);
/* JSON array of task types that have pending jobs but no connected worker
 * that runs them at all (the caller's). */
json_t *dispatch_unserved_json(dispatch_t *self);
/* Largest fire lag (scheduled_for to first STARTED, ms) seen in the last
 * one to two minutes; 0 if none. */
int64_t dispatch_recent_lag(dispatch_t *self);
size_t dispatch_pending(const dispatch_t *self);
void job_destroy(job_t **job_p);

/* stats.c: metrics updates; none can fail. Durations in ms (store: us). */
void stats_init(void);
void stats_fire_lag(int64_t ms);
void stats_claim_lag(int64_t ms);
void stats_job_duration(const char *task_type, int64_t ms);
/* A job reached a final status (no retry left) on this master. */
void stats_job_finished(const char *task_type, const char *status);
void stats_job_retried(const char *task_type);
void stats_job_lost(const char *task_type);
/* A worker refused a JOB (no room); it was queued again. */
void stats_job_refused(const char *task_type);
void stats_fires_skipped(const char *reason, size_t n);
/* One store operation ("insert_job", "update_job", ...) that took usecs. */
void stats_store_op(const char *op, int64_t usecs, int failed);
/* A reconcile pass ended (complete, or broken off) after reading read_ms. */
void stats_reconcile(int64_t read_ms, int complete);
/* Leases held now, and gained / lost since the last call. */
void stats_leases(int held, int gained, int lost);
/* Pending queue, workers' free and used slots, workers; also exports
 * proto_dropped. */
void stats_dispatch(size_t pending, long free_slots, long used_slots, size_t workers,
                    int buffered);
void stats_alert_sent(const char *result);
void stats_alert_dropped(void);
void stats_alert_given_up(void);
void stats_alerts_queued(size_t n);
/* A trigger notification's delivery ended: delivered, failed, dropped. */
void stats_notification(const char *event, const char *result);
void stats_jobs_pruned(int64_t n);
/* Worker status messages received and not yet handled (main.c). */
void stats_status_waiting(size_t n);
/* Job status updates queued for the status writer (writer.c; its thread). */
void stats_status_writes(size_t n);
/* A FINISHED resend found its attempt's FINISHED waiting already: dropped. */
void stats_status_resend_dropped(void);
/* A worker's status about a job of a partition not held here, ignored. */
void stats_status_not_held(void);
void stats_results_folded(int64_t n);
void stats_results_waiting(size_t n);
void stats_states_unsaved(size_t n);

/* snapshot.c: a partition's schedule handed to its next holder. */
snapshots_t *snapshots_new(int partitions);
void snapshots_destroy(snapshots_t **self_p);
/* Writes partition p's snapshot if this master holds SKED_SNAPSHOT_MIN
 * triggers: `final` before its lease is released gracefully (nothing of
 * it fires after), else one of those taken every SKED_SNAPSHOT_EVERY_S
 * (snapshot_tick). 0 or a negative code (logged). */
int snapshot_save(master_t *m, int p, int final);
/* Restores the partitions of parts[0..*n) (just gained) that their
 * previous holder left a snapshot of, with the changes noted since;
 * leaves the others, to load in full, in parts[0..*n). Returns how many
 * were restored. */
int snapshot_restore(master_t *m, int *parts, int *n);
/* Takes the periodic snapshot of one held partition whose turn it is,
 * and drops the change windows past STORE_CHANGES_KEEP_MS every few
 * minutes. */
void snapshot_tick(master_t *m);

/* prune.c: deletes final jobs past SKED_JOB_RETENTION_S in the partitions
 * held here, one batch per pass; *next_mono is when the next pass is due. */
void prune_tick(master_t *m, int64_t *next_mono);

/* alert.c: cluster alerts (with SKED_ALERT_URL set) and triggers'
 * notification webhooks. NULL with err on bad settings. Every other
 * function accepts NULL (webhooks off) and never blocks. */
alert_t *alert_new(master_t *m, err_t *err);
void alert_destroy(alert_t **self_p);
/* A job ended `status` (failed, timed_out, lost) with no retry left. */
void alert_job_failed(alert_t *self, const job_t *job, const char *status, const char *error,
                      const char *worker_id);
/* A job's first attempt started lag_ms after its time; alerts above
 * SKED_ALERT_LAG_MS, at most once a minute. */
void alert_fire_lag(alert_t *self, const job_t *job, int64_t lag_ms);
/* A fire was skipped (only if SKED_ALERT_EVENTS has fire_skipped). */
void alert_fire_skipped(alert_t *self, const char *job_id, const char *trigger_id,
                        const char *task_type, int64_t scheduled_for, const char *reason);
/* Partitions no live master holds now (n = 0: all held); alerts when that
 * lasts SKED_ALERT_UNOWNED_MS, and again when it ends. */
void alert_unowned(alert_t *self, const int *parts, int n);
/* Queues a POST to each of the trigger's webhooks that asked for
 * n->event (but those in n->done_hooks); each delivery's outcome is
 * recorded on the job. Returns how many are queued (also those that
 * already were). */
int alert_notify(alert_t *self, const notice_t *n);
/* True if some hook of a job_t.notify text asks for `event`. Pure. */
int alert_hooks_want(const char *notify, const char *event);
/* The loop's share: curl's sockets for zmq_poll (at most max), the ms the
 * loop may sleep (INT64_MAX: no limit), and the work after the poll. */
int alert_pollitems(alert_t *self, zmq_pollitem_t *items, int max);
int64_t alert_next_ms(const alert_t *self);
void alert_tick(alert_t *self);

#endif
