/*
 * prune.c - job retention: final jobs older than SKED_JOB_RETENTION_S are
 * deleted by the master holding their partition.
 *
 * Operators expect history to be bounded (Kubernetes CronJob keeps a few
 * jobs per CronJob, Temporal a namespace's retention period); on the test
 * store it also bounds the cost of every status update, which FerretDB
 * pays in proportion to the jobs collection (docs/BENCHMARKS.md).
 *
 * A pass runs every tenth of the retention, between 1 s and 1 h (on
 * FerretDB even a pass that finds nothing scans every job: about 1 s a
 * pass in the 1,000-trigger benchmark), and a second after a pass that
 * found a full batch. A pass is one query for the candidates (final,
 * finished before the cutoff, no notice pending, in a partition held
 * here), read until PRUNE_BATCH of them may go, then one delete by their
 * `_id`s with the same conditions.
 * It stays off the fire path: a pass waits while an on-time fire is due.
 * The first pass comes a period after start, not in the tick that gains
 * the partitions (whose load and takeover scan are long already); a pass
 * tells the lease keeper the loop is alive as it reads, as a load does.
 *
 * G1 does not depend on the retention. A scheduled job is deleted only
 * once its trigger's persisted state has moved past it (scheduled_for
 * before the last fire this master saved or loaded), or when the trigger
 * is not scheduled here (paused, deleted, ended, manual): no master can
 * claim that (trigger, time) again, so its `_id` is not needed to refuse
 * it.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"

#include <string.h>

#define PRUNE_BATCH 500

/* Appends the conditions every pruned job meets: final, finished before
 * the cutoff, no notice pending. */
static void s_conditions(bson_t *filter, int64_t cutoff)
{
    job_live_append(filter, "status", "$nin");
    BCON_APPEND(filter, "finished_at", "{", "$lt", BCON_DATE_TIME(cutoff), "}", "notify_pending",
                "{", "$ne", BCON_BOOL(true), "}");
}

/* True if no master can claim this job's (trigger, time) again. */
static int s_unclaimable(master_t *m, const bson_t *doc)
{
    if (strcmp(bj_get_str(doc, "kind", ""), "scheduled") != 0)
        return 1; /* manual runs: their ids are not derived from a time */
    int64_t saved = sched_saved_last_fire(m->sched, bj_get_str(doc, "trigger_id", ""));
    return saved < 0 || bj_get_date(doc, "scheduled_for", INT64_MAX) < saved;
}

void prune_tick(master_t *m, int64_t *next_mono)
{
    const config_t *cfg = m->cfg;
    int64_t now = clock_mono_ms();
    if (cfg->job_retention_s <= 0 || now < *next_mono)
        return;
    int64_t period = (int64_t)cfg->job_retention_s * 100;
    int first = *next_mono == 0;
    *next_mono = now + (period < 1000 ? 1000 : period > 3600000 ? 3600000 : period);
    if (first)
        return; /* not in the tick that gains the partitions (and scans for them) */
    if (sched_on_time_due(m->sched))
        return; /* an on-time fire first; the pass comes round again */
    partitions_alive(m); /* the scan below may be long */
    int parts[cfg->partitions], n = 0;
    for (int p = 0; p < cfg->partitions; p++)
        if (partitions_owned(m, p))
            parts[n++] = p;
    if (n == 0)
        return;
    int64_t cutoff = clock_wall_ms() - (int64_t)cfg->job_retention_s * 1000;
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", parts, n);
    s_conditions(filter, cutoff);
    /* No limit: the jobs kept for G1 (each trigger's latest) may be more
     * than a batch, and must not hide the deletable ones behind them. */
    bson_t *opts = BCON_NEW("projection", "{", "_id",
                            BCON_INT32(1), "kind", BCON_INT32(1), "trigger_id", BCON_INT32(1),
                            "scheduled_for", BCON_INT32(1), "}");
    int64_t t0 = zclock_usecs();
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(m->store, "jobs"), filter, opts, NULL);
    bson_t *del = bson_new(), idf, ids;
    BSON_APPEND_DOCUMENT_BEGIN(del, "_id", &idf);
    BSON_APPEND_ARRAY_BEGIN(&idf, "$in", &ids);
    const bson_t *doc;
    int k = 0, kept = 0;
    size_t read = 0;
    while (k < PRUNE_BATCH && mongoc_cursor_next(cur, &doc)) {
        if (partitions_keep_reading(m, &read))
            break; /* stopping: deletes what it found so far */
        const char *id = bj_get_str(doc, "_id", NULL);
        if (!id)
            continue;
        if (!s_unclaimable(m, doc)) {
            kept++;
            continue;
        }
        char key[16];
        snprintf(key, sizeof key, "%d", k++);
        BSON_APPEND_UTF8(&ids, key, id);
    }
    bson_append_array_end(&idf, &ids);
    bson_append_document_end(del, &idf);
    bson_error_t berr;
    int failed = mongoc_cursor_error(cur, &berr);
    mongoc_cursor_destroy(cur);
    int64_t deleted = 0;
    if (!failed && k > 0) {
        s_conditions(del, cutoff);
        bson_t reply;
        failed = !mongoc_collection_delete_many(store_coll(m->store, "jobs"), del, NULL, &reply,
                                                &berr);
        deleted = failed ? 0 : bj_get_int(&reply, "deletedCount", 0);
        bson_destroy(&reply);
    }
    stats_store_op("prune_jobs", zclock_usecs() - t0, failed);
    if (!failed && k >= PRUNE_BATCH)
        *next_mono = now + 1000; /* more to delete: the next batch soon */
    if (failed)
        log_warn("cannot prune old jobs", "reason=\"%s\"", berr.message);
    else if (deleted || kept)
        log_info("old jobs pruned", "deleted=%lld kept_for_g1=%d retention_s=%d",
                 (long long)deleted, kept, cfg->job_retention_s);
    stats_jobs_pruned(deleted);
    bson_destroy(del);
    bson_destroy(opts);
    bson_destroy(filter);
}
