/*
 * scan.c - the takeover scan, read off the loop thread.
 *
 * A master that gains partitions reads their jobs that are not final
 * (and the final ones whose notifications were not all delivered) to take
 * them over (dispatch.c, "takeover"). On FerretDB that read decodes every
 * job in the store, whatever the filter: 3.5-5.5 s with 25,000 jobs, at
 * 1,000 fires a second (docs/BENCHMARKS.md). Read by the loop it held the
 * gained partitions' fires for that long after their leases moved, and
 * gave the loop only a turn a cursor batch. This thread reads them with a
 * store connection of its own (a mongoc client is one thread's) and
 * hands the documents to the loop, which takes them over
 * (dispatch_scan_poll); meanwhile the loop goes on, and the gained
 * partitions' triggers that allow overlapping runs fire (the jobs they
 * claim are left out of the takeover: dispatch_claimed).
 *
 * The thread reads only: the outcomes recorded and not folded yet
 * (`job_results`, their ids), then the jobs, keeping those without a
 * record. Everything else, lease checks included, is the loop's.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* On FerretDB one round trip of the scan reads every job until it has
 * a batch to answer: with few live jobs among many, nearly all of them,
 * which at about 40,000 jobs outlasted the driver's usual 10 s (the read
 * failed, and nothing was taken over). Only the gained partitions' jobs
 * and NOTIFYs wait on this thread's round trips, and a master's exit
 * (it joins the thread): 30 s. */
#define SCAN_SOCKET_TIMEOUT_MS 30000

struct scan {
    pthread_t thread;
    int started;
    char *uri;
    int *parts;
    int n;
    zlistx_t *docs;      /* bson_t* of the jobs to take over, owns */
    size_t read;         /* jobs read */
    int failed;          /* the store could not say: nothing is taken over */
    int64_t began, took; /* monotonic ms */
    atomic_int stop;
    atomic_int done;
};

static void s_doc_free(void **item)
{
    bson_t *doc = *item;
    bson_destroy(doc);
    *item = NULL;
}

static int s_stopping(scan_t *s)
{
    return atomic_load(&s->stop) || master_stopping();
}

/* The ids of the scanned partitions' jobs with an outcome record not
 * folded yet (their writer had not been idle since), as a set; NULL if
 * the store cannot say. */
static zhashx_t *s_recorded(scan_t *s, store_t *store)
{
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", s->parts, s->n);
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(store, STORE_RESULTS), filter, opts, NULL);
    zhashx_t *ids = zhashx_new();
    const bson_t *doc;
    while (!s_stopping(s) && mongoc_cursor_next(cur, &doc)) {
        const char *id = bj_get_str(doc, "_id", NULL);
        if (id)
            zhashx_update(ids, id, (void *)1);
    }
    bson_error_t berr;
    if (mongoc_cursor_error(cur, &berr)) {
        log_warn("cannot read recorded outcomes to take over; the next gain retries",
                 "reason=\"%s\"", berr.message);
        zhashx_destroy(&ids);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    return ids;
}

static void s_read(scan_t *s, store_t *store)
{
    zhashx_t *ended = s_recorded(s, store);
    if (!ended) {
        s->failed = 1;
        return;
    }
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", s->parts, s->n);
    /* Non-final jobs, and final ones whose notifications were not all
     * delivered (their master died first). */
    bson_t or, alt;
    BSON_APPEND_ARRAY_BEGIN(filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &alt);
    job_live_append(&alt, "status", "$in");
    bson_append_document_end(&or, &alt);
    BCON_APPEND(&or, "1", "{", "notify_pending", BCON_BOOL(true), "}");
    bson_append_array_end(filter, &or);
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(store, "jobs"), filter, NULL, NULL);
    const bson_t *doc;
    while (!s_stopping(s) && mongoc_cursor_next(cur, &doc)) {
        s->read++;
        const char *id = bj_get_str(doc, "_id", NULL);
        if (id && !zhashx_lookup(ended, id)) /* recorded: final */
            zlistx_add_end(s->docs, bson_copy(doc));
    }
    bson_error_t berr;
    if (mongoc_cursor_error(cur, &berr)) {
        log_warn("cannot scan jobs to take over; the next gain retries", "reason=\"%s\"",
                 berr.message);
        s->failed = 1;
    }
    if (s_stopping(s))
        s->failed = 1; /* what is not taken over waits for the next owner */
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    zhashx_destroy(&ended);
}

static void *s_run(void *arg)
{
    scan_t *s = arg;
    err_t err = {0};
    store_t *store = store_new_patient(s->uri, SCAN_SOCKET_TIMEOUT_MS, &err);
    if (store) {
        s_read(s, store);
        store_destroy(&store);
    } else {
        log_warn("cannot connect for the takeover scan; the next gain retries", "reason=\"%s\"",
                 err.msg);
        s->failed = 1;
    }
    s->took = clock_mono_ms() - s->began;
    atomic_store(&s->done, 1);
    return NULL;
}

scan_t *scan_start(const char *uri, const int *parts, int n)
{
    scan_t *s = calloc(1, sizeof *s);
    s->uri = strdup(uri);
    s->parts = malloc((size_t)n * sizeof *s->parts);
    memcpy(s->parts, parts, (size_t)n * sizeof *s->parts);
    s->n = n;
    s->docs = zlistx_new();
    zlistx_set_destructor(s->docs, s_doc_free);
    s->began = clock_mono_ms();
    if (pthread_create(&s->thread, NULL, s_run, s) == 0) {
        s->started = 1;
    } else {
        log_warn("cannot start the takeover scan's thread; the loop reads", "partitions=%d", n);
        s_run(s);
    }
    return s;
}

int scan_done(const scan_t *self)
{
    return atomic_load(&((scan_t *)self)->done);
}

zlistx_t *scan_finish(scan_t **self_p, size_t *read, int64_t *took)
{
    scan_t *s = *self_p;
    if (!s)
        return NULL;
    atomic_store(&s->stop, 1);
    if (s->started)
        pthread_join(s->thread, NULL);
    zlistx_t *docs = s->failed ? NULL : s->docs;
    if (s->failed)
        zlistx_destroy(&s->docs);
    if (read)
        *read = s->read;
    if (took)
        *took = s->took;
    free(s->parts);
    free(s->uri);
    free(s);
    *self_p = NULL;
    return docs;
}
