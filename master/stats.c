/*
 * stats.c - the master's Prometheus metrics: their names, help texts and
 * labels in one place, and the calls that update them.
 *
 * Registered once by stats_init() at start (so every metric without labels
 * shows 0 from the first scrape), freed by metrics_reset_all() at exit.
 * Label values come from bounded sets only: task types (the metrics
 * library folds more than METRICS_MAX_SERIES combinations into "other"),
 * job statuses, skip reasons, store operations. Never trigger or job ids.
 *
 * Called from the master's one thread; the scrape thread of
 * metrics_serve() only renders.
 */
#include "master/master.h"

#include "common/metrics.h"

/* Fire lag buckets, seconds: sked aims at milliseconds, so finer at the
 * bottom than metrics_seconds_buckets. */
static const double s_lag_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,      2.5,   5,    10,    30,    60,  300};
/* Store round trips, seconds. */
static const double s_store_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,   0.25,   0.5,   1,    2.5, 5};
#define NB(a) ((int)(sizeof a / sizeof a[0]))

static struct {
    metric_t *fire_lag, *claim_lag, *duration, *finished, *retries, *skipped, *lost, *refused;
    metric_t *queue, *leases, *acquired, *lease_lost, *slots, *workers, *buffered;
    metric_t *store_errors, *store_seconds, *dropped;
    metric_t *alerts_sent, *alerts_dropped, *alerts_given_up, *alerts_queued, *notifications;
    metric_t *pruned, *waiting, *writes, *resends, *not_held, *unsaved, *folded, *unfolded;
    metric_t *recon_passes, *recon_seconds;
    uint64_t dropped_seen; /* proto_dropped already added to `dropped` */
} s;

void stats_init(void)
{
    s.fire_lag = metrics_histogram(
        "sked_fire_lag_seconds",
        "Time from a job's scheduled_for to its first attempt's STARTED (worker clock).", "",
        s_lag_buckets, NB(s_lag_buckets));
    s.claim_lag = metrics_histogram("sked_claim_lag_seconds",
                                    "Time from a fire's scheduled_for to its job being claimed.",
                                    "", s_lag_buckets, NB(s_lag_buckets));
    s.duration = metrics_histogram("sked_job_duration_seconds",
                                   "Duration of finished attempts reported by workers.",
                                   "task_type", metrics_seconds_buckets, METRICS_SECONDS_NBUCKETS);
    s.finished = metrics_counter("sked_jobs_finished_total",
                                 "Jobs that reached a final status here (no retry left).",
                                 "task_type,status");
    s.retries = metrics_counter("sked_job_retries_total",
                                "Attempts that ended failed, timed_out or lost and were retried.",
                                "task_type");
    s.skipped = metrics_counter("sked_fires_skipped_total",
                                "Fires recorded as skipped, by skip_reason.", "reason");
    s.lost = metrics_counter("sked_jobs_lost_total",
                             "Attempts declared lost (worker silent, or unreported after a takeover).",
                             "task_type");
    s.refused = metrics_counter("sked_jobs_refused_total",
                                "JOBs a worker refused for want of a free slot, queued again "
                                "(not an attempt: no retry is spent).",
                                "task_type");
    s.buffered = metrics_gauge("sked_status_updates_buffered",
                               "Job status updates waiting for the store to come back.", "");
    s.resends = metrics_counter("sked_status_resends_dropped_total",
                                "FINISHED resends dropped on arrival because the same attempt's "
                                "FINISHED was waiting its turn already.",
                                "");
    s.not_held = metrics_counter("sked_status_not_held_total",
                                 "Worker STARTED, OUTPUT and FINISHED messages about jobs of "
                                 "partitions this master does not hold, ignored (workers resend "
                                 "an unacknowledged FINISHED to every master; the holder records it).",
                                 "");
    s.folded = metrics_counter("sked_results_folded_total",
                               "Outcome records (job_results) folded into their jobs by the "
                               "status writer while idle, and deleted.",
                               "");
    s.unfolded = metrics_gauge("sked_results_unfolded",
                               "Outcome records this master's status writer remembers to fold "
                               "into their jobs (it folds while idle).",
                               "");
    s.waiting = metrics_gauge("sked_status_messages_waiting",
                              "Worker STARTED, OUTPUT and FINISHED messages received and not yet "
                              "handled (each may cost a store write).",
                              "");
    s.writes = metrics_gauge("sked_status_writes_queued",
                             "Job status updates handed to the status writer and not yet sent to "
                             "the store (their FINISHEDs are acknowledged once written).",
                             "");
    s.unsaved = metrics_gauge("sked_trigger_states_unsaved",
                              "Triggers that fired since their state was last saved (saves wait "
                              "their turn behind a slow store).",
                              "");
    s.recon_passes = metrics_counter("sked_reconcile_passes_total",
                                     "Reconcile passes over this master's triggers, by how they "
                                     "ended (complete, or broken off by a store error).",
                                     "result");
    s.recon_seconds = metrics_counter("sked_reconcile_read_seconds_total",
                                      "Time reconcile passes spent reading the store; the next "
                                      "pass waits 20 times its predecessor's.",
                                      "");
    s.queue = metrics_gauge("sked_queue_depth",
                            "Jobs due and waiting for a worker in this master's pending queue.", "");
    s.leases = metrics_gauge("sked_leases_held", "Partition leases this master holds.", "");
    s.acquired = metrics_counter("sked_lease_acquisitions_total",
                                 "Partition leases this master gained.", "");
    s.lease_lost = metrics_counter("sked_lease_losses_total",
                                   "Partition leases this master lost on renewal (fenced or expired).",
                                   "");
    s.slots = metrics_gauge("sked_worker_slots",
                            "Slots of the workers connected to this master, free or used.", "state");
    s.workers = metrics_gauge("sked_workers_connected", "Workers connected to this master.", "");
    s.store_errors = metrics_counter("sked_store_errors_total",
                                     "Failed store operations of the master, by operation.", "op");
    s.store_seconds = metrics_histogram("sked_store_operation_duration_seconds",
                                        "Duration of the master's store operations.", "op",
                                        s_store_buckets, NB(s_store_buckets));
    s.dropped = metrics_counter("sked_malformed_messages_dropped_total",
                                "ZeroMQ messages dropped as malformed or unexpected.", "");
    s.alerts_sent = metrics_counter("sked_alerts_sent_total",
                                    "Alert delivery attempts, by result (ok, http_error, "
                                    "transport_error).",
                                    "result");
    s.alerts_dropped = metrics_counter("sked_alerts_dropped_total",
                                       "Alert events dropped because the queue was full.", "");
    s.alerts_given_up = metrics_counter("sked_alerts_given_up_total",
                                        "Alert events not delivered after every retry.", "");
    s.alerts_queued = metrics_gauge("sked_alerts_queued",
                                    "Alerts and notifications waiting or being delivered.", "");
    s.notifications = metrics_counter("sked_notifications_total",
                                      "Trigger notification deliveries ended, by event (failure, "
                                      "success, skipped) and result (delivered, failed, dropped).",
                                      "event,result");
    s.pruned = metrics_counter("sked_jobs_pruned_total",
                               "Final jobs deleted past SKED_JOB_RETENTION_S.", "");
    metric_set(s.slots, (const char *[]){"free"}, 0);
    metric_set(s.slots, (const char *[]){"used"}, 0);
}

void stats_fire_lag(int64_t ms)
{
    metric_observe(s.fire_lag, NULL, ms / 1000.0);
}

void stats_claim_lag(int64_t ms)
{
    metric_observe(s.claim_lag, NULL, ms / 1000.0);
}

void stats_job_duration(const char *task_type, int64_t ms)
{
    if (ms >= 0)
        metric_observe(s.duration, (const char *[]){task_type}, ms / 1000.0);
}

void stats_job_finished(const char *task_type, const char *status)
{
    metric_inc(s.finished, (const char *[]){task_type, status}, 1);
}

void stats_job_retried(const char *task_type)
{
    metric_inc(s.retries, (const char *[]){task_type}, 1);
}

void stats_job_refused(const char *task_type)
{
    metric_inc(s.refused, (const char *[]){task_type}, 1);
}

void stats_job_lost(const char *task_type)
{
    metric_inc(s.lost, (const char *[]){task_type}, 1);
}

void stats_jobs_pruned(int64_t n)
{
    metric_inc(s.pruned, NULL, (double)n);
}

void stats_fires_skipped(const char *reason, size_t n)
{
    metric_inc(s.skipped, (const char *[]){reason}, (double)n);
}

void stats_store_op(const char *op, int64_t usecs, int failed)
{
    metric_observe(s.store_seconds, (const char *[]){op}, usecs / 1e6);
    if (failed)
        metric_inc(s.store_errors, (const char *[]){op}, 1);
}

void stats_reconcile(int64_t read_ms, int complete)
{
    metric_inc(s.recon_passes, (const char *[]){complete ? "complete" : "broken"}, 1);
    metric_inc(s.recon_seconds, NULL, read_ms / 1e3);
}

void stats_leases(int held, int gained, int lost)
{
    metric_set(s.leases, NULL, held);
    if (gained)
        metric_inc(s.acquired, NULL, gained);
    if (lost)
        metric_inc(s.lease_lost, NULL, lost);
}

void stats_dispatch(size_t pending, long free_slots, long used_slots, size_t workers,
                    int buffered)
{
    metric_set(s.buffered, NULL, buffered);
    metric_set(s.queue, NULL, (double)pending);
    metric_set(s.slots, (const char *[]){"free"}, (double)free_slots);
    metric_set(s.slots, (const char *[]){"used"}, (double)used_slots);
    metric_set(s.workers, NULL, (double)workers);
    if (proto_dropped > s.dropped_seen) {
        metric_inc(s.dropped, NULL, (double)(proto_dropped - s.dropped_seen));
        s.dropped_seen = proto_dropped;
    }
}

void stats_alert_sent(const char *result)
{
    metric_inc(s.alerts_sent, (const char *[]){result}, 1);
}

void stats_alert_dropped(void)
{
    metric_inc(s.alerts_dropped, NULL, 1);
}

void stats_alert_given_up(void)
{
    metric_inc(s.alerts_given_up, NULL, 1);
}

void stats_notification(const char *event, const char *result)
{
    metric_inc(s.notifications, (const char *[]){event, result}, 1);
}

void stats_alerts_queued(size_t n)
{
    metric_set(s.alerts_queued, NULL, (double)n);
}

void stats_status_waiting(size_t n)
{
    metric_set(s.waiting, NULL, (double)n);
}

void stats_status_writes(size_t n)
{
    metric_set(s.writes, NULL, (double)n);
}

void stats_status_resend_dropped(void)
{
    metric_inc(s.resends, NULL, 1);
}

void stats_status_not_held(void)
{
    metric_inc(s.not_held, NULL, 1);
}

void stats_results_folded(int64_t n)
{
    if (n > 0)
        metric_inc(s.folded, NULL, (double)n);
}

void stats_results_waiting(size_t n)
{
    metric_set(s.unfolded, NULL, (double)n);
}

void stats_states_unsaved(size_t n)
{
    metric_set(s.unsaved, NULL, (double)n);
}
