/*
 * writer.c - job document updates written off the loop thread.
 *
 * A FINISHED's outcome (and a notification's delivery record) is an
 * update of a job document by `_id`. On FerretDB each update costs
 * 1.5-2.5 ms of the store under load (docs/BENCHMARKS.md), and written
 * by the loop in bulks of 16 they held it 20-25 ms a bulk: at 500 fires a
 * second half of each master's loop time, during which the FINISHEDs of
 * the jobs before stayed unread, so the next fire of a trigger found its
 * previous job still active and was skipped by its overlap policy, and
 * claims waited. The loop now hands the updates over here and goes on;
 * this thread, with a store connection of its own (a mongoc client is
 * one thread's), writes them in order, in ordered bulks of up to
 * STORE_BULK_MAX, and hands each back marked saved or not, waking the
 * loop through an eventfd (it acknowledges the saved FINISHEDs then).
 *
 * Order: one thread writes in the order handed over, so two updates of
 * one job land in that order. A write or read the loop makes itself of a
 * job this queue holds an update of waits for the queue to empty first
 * (writer_settle, from dispatch.c), as do a takeover scan and the release
 * of a partition, so the store still sees one writer per document
 * (ARCHITECTURE.md, store rule 2).
 *
 * Fencing: an update is written only while its partition's lease is
 * still valid here when its bulk goes (the keeper's deadline, read
 * atomically); otherwise it is handed back unsaved, so a master that has
 * lost a partition never writes a job its new owner may be taking over.
 * An unsaved FINISHED is not acknowledged: its worker sends it again.
 *
 * A bulk the store refuses stops there (ordered) and everything queued
 * behind it is handed back unsaved without a round trip: the workers
 * resend, and the resends are written as jobs not in memory (guarded).
 * The queue holds WRITER_MAX updates; the loop waits for room beyond it,
 * as it waited for each bulk before.
 *
 * Outcome records: a final outcome with nothing left to deliver comes
 * as a record to insert into job_results (store.h) rather than an update:
 * on FerretDB 21,500 inserts a second against 1,100 updates
 * (docs/BENCHMARKS.md), which is what lets 1,000 fires a second through.
 * A record whose _id is taken was written before (a resend): saved. The
 * writer folds records into their jobs (the same update as before, with
 * $addToSet for the attempt so a fold repeated after a crash adds it
 * once) and deletes them, a bulk at a time, only while it is otherwise
 * idle: its queue empty and under FOLD_BUSY_MS of store time spent in
 * the current second. A burst leaves records behind; readers lay them
 * over their jobs (store_get_job) until folded.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* About 1.5 s of writes at the slowest measured cost: short enough that
 * an ACK reaches a worker before its second resend. */
#define WRITER_MAX 1024

/* Folding runs while the writer spent less than this much of the current
 * second in the store (its own writes and folds): at 1,000 outcomes a
 * second inserting takes about a quarter, so folding waits for the burst
 * to end; at 100 a second it keeps up. */
#define FOLD_BUSY_MS 300
/* How often records of partitions gained are looked for when none are
 * known to wait (a dead master's, taken over). */
#define FOLD_LOOK_MS 10000

struct writer {
    master_t *m;
    store_t *store;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work; /* items queued, or stop */
    pthread_cond_t room; /* items taken: room in the queue, or idle */
    int stop;
    wr_item_t *q;        /* ring of WRITER_MAX, queued items from head */
    size_t head, n;
    size_t inflight;     /* taken by the thread, being written */
    wr_item_t *done;     /* written or refused, for the loop, in order */
    size_t ndone, done_cap;
    int efd;             /* readable while done items wait */
    int64_t window;      /* the second (monotonic) busy_us counts in */
    int64_t busy_us;     /* store time spent in it */
    int64_t fold_next;   /* monotonic ms of the next look for records */
    int settling;        /* writer_settle callers waiting: no fold starts */
};

/* Counts store time spent; 1 while folding may go on this second. */
static int s_spent(writer_t *w, int64_t us)
{
    int64_t sec = clock_mono_ms() / 1000;
    if (sec != w->window) {
        w->window = sec;
        w->busy_us = 0;
    }
    w->busy_us += us;
    return w->busy_us < FOLD_BUSY_MS * 1000;
}

/* Hands items back to the loop; called with w->mu held. */
static void s_hand_back(writer_t *w, wr_item_t *items, size_t n)
{
    if (w->ndone + n > w->done_cap) {
        size_t cap = w->done_cap ? w->done_cap : 64;
        while (cap < w->ndone + n)
            cap *= 2;
        w->done = realloc(w->done, cap * sizeof *w->done);
        w->done_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        bson_destroy(items[i].update);
        items[i].update = NULL;
        w->done[w->ndone++] = items[i];
    }
    uint64_t one = 1;
    if (n && write(w->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("cannot wake the loop", "reason=\"%s\"", strerror(errno));
}

/* Takes up to STORE_BULK_MAX queued items of one op into batch; w->mu held. */
static size_t s_take(writer_t *w, wr_item_t *batch)
{
    size_t k = 0;
    while (k < STORE_BULK_MAX && w->n &&
           (k == 0 || strcmp(w->q[w->head].op, batch[0].op) == 0)) {
        batch[k++] = w->q[w->head];
        w->head = (w->head + 1) % WRITER_MAX;
        w->n--;
    }
    w->inflight = k;
    return k;
}

/* Writes batch[0..k) in order, those of partitions still held (looked at
 * once it is this master's turn to write); marks what is saved. Returns 0,
 * or -1 if the store refused one. */
static int s_write(writer_t *w, wr_item_t *batch, size_t k)
{
    const char *ids[STORE_BULK_MAX];
    bson_t *updates[STORE_BULK_MAX];
    size_t sent[STORE_BULK_MAX], n = 0;
    while (__atomic_load_n(&w->m->write_want, __ATOMIC_ACQUIRE) > 0)
        usleep(200); /* the loop's write goes first */
    pthread_mutex_lock(&w->m->write_mu);
    int64_t mono = clock_mono_ms();
    for (size_t i = 0; i < k; i++) {
        int p = batch[i].partition;
        batch[i].saved = 0;
        if (p < 0 || p >= w->m->cfg->partitions ||
            mono >= __atomic_load_n(&w->m->leases[p].valid_until, __ATOMIC_ACQUIRE))
            continue; /* no longer ours to write: left to the new owner */
        ids[n] = batch[i].id;
        updates[n] = batch[i].update;
        sent[n++] = i;
    }
    if (!n) {
        pthread_mutex_unlock(&w->m->write_mu);
        return 0;
    }
    bson_error_t berr = {0};
    int64_t matched = 0, t0 = zclock_usecs();
    size_t saved = batch[0].record
                       ? store_insert_new(w->store, STORE_RESULTS, updates, n, &berr)
                       : store_update_by_ids(w->store, "jobs", ids, updates, n, &matched, &berr);
    int64_t spent = zclock_usecs() - t0;
    stats_store_op(batch[0].op, spent, saved < n);
    pthread_mutex_unlock(&w->m->write_mu);
    s_spent(w, spent);
    if (batch[0].record && saved)
        w->fold_next = 0; /* records to fold */
    for (size_t i = 0; i < saved; i++)
        batch[sent[i]].saved = 1;
    if (saved == n)
        return 0;
    log_warn("cannot save job statuses", "op=%s jobs=%zu saved=%zu reason=\"%s\"", batch[0].op, n,
             saved, berr.message);
    return -1;
}

/* Folds up to STORE_BULK_MAX outcome records of partitions held here into
 * their jobs and deletes them. Returns how many were folded, -1 if the
 * store failed. */
static int s_fold(writer_t *w)
{
    const master_t *m = w->m;
    int parts[m->cfg->partitions], np = 0;
    int64_t mono = clock_mono_ms();
    for (int p = 0; p < m->cfg->partitions; p++)
        if (mono < __atomic_load_n(&m->leases[p].valid_until, __ATOMIC_ACQUIRE))
            parts[np++] = p;
    if (!np)
        return 0;
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", parts, np);
    bson_t *opts = BCON_NEW("limit", BCON_INT64(STORE_BULK_MAX));
    int64_t t0 = zclock_usecs();
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(w->store, STORE_RESULTS), filter, opts, NULL);
    char ids[STORE_BULK_MAX][PROTO_ID_MAX];
    const char *idp[STORE_BULK_MAX];
    bson_t *updates[STORE_BULK_MAX];
    int parts_of[STORE_BULK_MAX];
    size_t n = 0;
    const bson_t *doc;
    while (n < STORE_BULK_MAX && mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        const char *id = bj_get_str(doc, "_id", NULL);
        if (!id || strlen(id) >= PROTO_ID_MAX)
            continue;
        bson_t *u = bson_new();
        if (bson_iter_init_find(&it, doc, "set"))
            bson_append_iter(u, "$set", -1, &it);
        if (bson_iter_init_find(&it, doc, "push")) {
            bson_t add;
            BSON_APPEND_DOCUMENT_BEGIN(u, "$addToSet", &add);
            bson_append_iter(&add, "attempts", -1, &it);
            bson_append_document_end(u, &add);
        }
        snprintf(ids[n], sizeof ids[n], "%s", id);
        idp[n] = ids[n];
        parts_of[n] = (int)bj_get_int(doc, "partition", -1);
        updates[n++] = u;
    }
    bson_error_t berr = {0};
    int failed = mongoc_cursor_error(cur, &berr);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    size_t folded = 0;
    if (!failed && n) {
        while (__atomic_load_n(&w->m->write_want, __ATOMIC_ACQUIRE) > 0)
            usleep(200); /* the loop's write goes first */
        pthread_mutex_lock(&w->m->write_mu);
        mono = clock_mono_ms();
        size_t k = 0; /* those of partitions still held, at the front */
        for (size_t i = 0; i < n; i++) {
            int p = parts_of[i];
            if (p < 0 || p >= m->cfg->partitions ||
                mono >= __atomic_load_n(&m->leases[p].valid_until, __ATOMIC_ACQUIRE)) {
                bson_destroy(updates[i]);
                continue;
            }
            idp[k] = idp[i];
            updates[k++] = updates[i];
        }
        n = k;
        int64_t matched = 0;
        folded = store_update_by_ids(w->store, "jobs", idp, updates, n, &matched, &berr);
        failed = folded < n;
        if (folded) {
            bson_t *del = bson_new();
            bj_append_in_utf8(del, "_id", idp, folded);
            failed |= !mongoc_collection_delete_many(store_coll(w->store, STORE_RESULTS), del,
                                                     NULL, NULL, &berr);
            bson_destroy(del);
        }
        pthread_mutex_unlock(&w->m->write_mu);
    }
    for (size_t i = 0; i < n; i++)
        bson_destroy(updates[i]);
    int64_t spent = zclock_usecs() - t0;
    s_spent(w, spent);
    stats_store_op("fold_results", spent, failed);
    if (failed) {
        log_warn("cannot fold recorded outcomes into their jobs; later",
                 "folded=%zu reason=\"%s\"", folded, berr.message);
        return -1;
    }
    stats_results_folded((int64_t)folded);
    return (int)folded;
}

/* Waits for work; folds records meanwhile while it may. Called and
 * returns with w->mu held. */
static void s_idle(writer_t *w)
{
    int64_t now = clock_mono_ms();
    int may = s_spent(w, 0);
    if (w->settling) {
        pthread_cond_wait(&w->work, &w->mu);
        return;
    }
    if (w->fold_next > now || !may) {
        /* nothing known to fold, or the second's share spent: wait for
         * work, or for the next look (the next second if only spent) */
        int64_t until = may ? w->fold_next : (now / 1000 + 1) * 1000;
        int64_t wall = clock_wall_ms() + (until - now);
        struct timespec ts = {.tv_sec = wall / 1000, .tv_nsec = (wall % 1000) * 1000000};
        pthread_cond_timedwait(&w->work, &w->mu, &ts);
        return;
    }
    w->inflight = 1; /* writer_settle waits for a fold too (a release of its partition) */
    pthread_mutex_unlock(&w->mu);
    int folded = s_fold(w);
    pthread_mutex_lock(&w->mu);
    w->inflight = 0;
    pthread_cond_broadcast(&w->room);
    if (folded < STORE_BULK_MAX) /* all folded, or the store away: look again later */
        w->fold_next = clock_mono_ms() + (folded < 0 ? 1000 : FOLD_LOOK_MS);
}

static void *s_run(void *arg)
{
    writer_t *w = arg;
    wr_item_t batch[STORE_BULK_MAX];
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (!w->n) {
            s_idle(w);
            continue;
        }
        size_t k = s_take(w, batch);
        pthread_mutex_unlock(&w->mu);
        int failed = s_write(w, batch, k) < 0;
        pthread_mutex_lock(&w->mu);
        s_hand_back(w, batch, k);
        while (failed && w->n) /* an ordered bulk stops at a refusal: so do those behind it */
            s_hand_back(w, batch, s_take(w, batch));
        w->inflight = 0;
        stats_status_writes(w->n);
        pthread_cond_broadcast(&w->room);
    }
    while (w->n) /* stopping: not written, the workers resend them */
        s_hand_back(w, batch, s_take(w, batch));
    w->inflight = 0;
    pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

writer_t *writer_new(master_t *m, err_t *err)
{
    writer_t *w = calloc(1, sizeof *w);
    w->m = m;
    w->q = calloc(WRITER_MAX, sizeof *w->q);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->room, NULL);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        err_set(err, ERR_SYS, "cannot make the status writer's eventfd: %s", strerror(errno));
        writer_destroy(&w);
        return NULL;
    }
    if (!(w->store = store_new(m->cfg->mongo_uri, err))) {
        writer_destroy(&w);
        return NULL;
    }
    if (pthread_create(&w->thread, NULL, s_run, w) != 0) {
        err_set(err, ERR_SYS, "cannot start the status writer thread");
        writer_destroy(&w);
        return NULL;
    }
    w->started = 1;
    return w;
}

void writer_destroy(writer_t **self_p)
{
    writer_t *w = *self_p;
    if (!w)
        return;
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->work);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    for (size_t i = 0; i < w->n; i++) { /* never started: still queued */
        wr_item_t *it = &w->q[(w->head + i) % WRITER_MAX];
        bson_destroy(it->update);
        zframe_destroy(&it->identity);
    }
    for (size_t i = 0; i < w->ndone; i++)
        zframe_destroy(&w->done[i].identity);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->room);
    if (w->efd >= 0)
        close(w->efd);
    store_destroy(&w->store);
    free(w->q);
    free(w->done);
    free(w);
    *self_p = NULL;
}

void writer_put(writer_t *self, wr_item_t *items, size_t n)
{
    writer_t *w = self;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < n; i++) {
        while (w->n + w->inflight >= WRITER_MAX && !w->stop)
            pthread_cond_wait(&w->room, &w->mu); /* the store is behind: wait, as before */
        if (w->stop) { /* not written: the workers resend them */
            s_hand_back(w, &items[i], 1);
            continue;
        }
        w->q[(w->head + w->n) % WRITER_MAX] = items[i];
        w->n++;
    }
    stats_status_writes(w->n);
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

size_t writer_take(writer_t *self, wr_item_t *out, size_t max)
{
    writer_t *w = self;
    uint64_t v;
    if (read(w->efd, &v, sizeof v) < 0 && errno != EAGAIN)
        log_warn("cannot read the status writer's eventfd", "reason=\"%s\"", strerror(errno));
    pthread_mutex_lock(&w->mu);
    size_t n = w->ndone < max ? w->ndone : max;
    if (n) {
        memcpy(out, w->done, n * sizeof *out);
        memmove(w->done, w->done + n, (w->ndone - n) * sizeof *w->done);
        w->ndone -= n;
    }
    if (w->ndone) { /* more than max: stay readable for the rest */
        uint64_t one = 1;
        if (write(w->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_warn("cannot wake the loop", "reason=\"%s\"", strerror(errno));
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}

void writer_settle(writer_t *self)
{
    writer_t *w = self;
    pthread_mutex_lock(&w->mu);
    w->settling++;
    while ((w->n || w->inflight) && !w->stop)
        pthread_cond_wait(&w->room, &w->mu);
    if (--w->settling == 0)
        pthread_cond_signal(&w->work); /* folding may go on */
    pthread_mutex_unlock(&w->mu);
}

int writer_fd(const writer_t *self)
{
    return self->efd;
}
