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
 * A record whose _id is taken was written before (a resend): saved.
 *
 * Folding: the writer remembers the records it wrote (up to FOLD_MAX)
 * and folds them into their jobs (the same update as before, with
 * $addToSet for the attempt so a fold repeated after a crash adds it
 * once), then deletes them, FOLD_BULK at a time by `_id` only (a read of
 * job_results by anything else decodes the whole collection on
 * FerretDB: 1.6 s a bulk in a run that read them so). It folds only
 * while otherwise idle: its queue empty and its own writes under
 * FOLD_LOAD_MS of the last second and of this one. Records it does not
 * remember (a dead master's in partitions gained, those past FOLD_MAX)
 * are read in one pass every FOLD_LOOK_MS while none are remembered. A
 * burst leaves records behind; readers lay them over their jobs
 * (store_get_job) until folded.
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

/* When folding runs (its queue empty): at full speed (about 500 records
 * a second) once it has written nothing for FOLD_QUIET_MS; a bulk every
 * FOLD_TRICKLE_MS (32 records a second) while it writes fewer than
 * FOLD_LOAD items a second; not at all above that, until half of
 * FOLD_MAX is remembered, past which it folds whatever the load.
 * Measured at 1,000 fires a second: folding whenever inserting took
 * under 100 ms a second took two masters' p99 from 13 to 421 ms; in the
 * failover benchmark, folding at full speed once a second went by
 * without writes (a survivor's takeover) slowed the survivors' loops
 * so their writers stayed idle and folding went on: one survivor fired
 * nothing for 20-30 s (14,670 fires not run in one run; none, all fired
 * again 19.2 s after the kill, with no folding during the run). */
#define FOLD_LOAD 200
#define FOLD_TRICKLE_MS 250
#define FOLD_QUIET_MS 10000
/* Records folded a bulk: about 12 ms of updates, 6 of deletes, holding
 * the master's turn to write (write_mu) that long. */
#define FOLD_BULK 8
/* Records remembered to fold (about 0.5 KiB each with its update; the
 * ring is allocated untouched, resident as it fills). */
#define FOLD_MAX 65536
/* How often records are looked for in the store while none are
 * remembered (partitions gained from a dead master). */
#define FOLD_LOOK_MS 10000

typedef struct {
    char id[PROTO_ID_MAX];
    int partition;
    bson_t *update; /* the record as the update of its job */
} fold_t;

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
    int settling;        /* writer_settle callers waiting: no fold starts */
    /* the writer thread's own: */
    int64_t load_sec;    /* the second (monotonic) load counts in */
    int64_t load, load_prev; /* items written: this second, the last */
    fold_t *folds;       /* ring of FOLD_MAX records to fold, from fold_head */
    size_t fold_head, nfolds;
    int fold_missed;     /* a record not remembered: look in the store */
    int64_t look_next;   /* monotonic ms of the next look */
    int64_t fold_after;  /* monotonic ms: the store failed, wait till then */
    int64_t fold_last;   /* monotonic ms of the last fold */
    int64_t wrote_at;    /* monotonic ms of the last queue write */
};

/* Counts n items written (0: brings the count to this second). */
static void s_load(writer_t *w, int64_t n)
{
    int64_t sec = clock_mono_ms() / 1000;
    if (sec != w->load_sec) {
        w->load_prev = sec == w->load_sec + 1 ? w->load : 0;
        w->load = 0;
        w->load_sec = sec;
    }
    w->load += n;
}

/* Remembers a record (an outcome record document) to fold. */
static void s_remember(writer_t *w, const char *id, int partition, const bson_t *record)
{
    if (w->nfolds == FOLD_MAX) {
        w->fold_missed = 1;
        return;
    }
    fold_t *f = &w->folds[(w->fold_head + w->nfolds++) % FOLD_MAX];
    snprintf(f->id, sizeof f->id, "%s", id);
    f->partition = partition;
    f->update = bson_new();
    bson_iter_t it;
    if (bson_iter_init_find(&it, record, "set"))
        bson_append_iter(f->update, "$set", -1, &it);
    if (bson_iter_init_find(&it, record, "push")) {
        bson_t add;
        BSON_APPEND_DOCUMENT_BEGIN(f->update, "$addToSet", &add);
        bson_append_iter(&add, "attempts", -1, &it);
        bson_append_document_end(f->update, &add);
    }
    stats_results_waiting(w->nfolds);
}

/* Forgets the first n remembered records. */
static void s_forget(writer_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bson_destroy(w->folds[w->fold_head].update);
        w->fold_head = (w->fold_head + 1) % FOLD_MAX;
        w->nfolds--;
    }
    stats_results_waiting(w->nfolds);
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
    s_load(w, (int64_t)n);
    w->wrote_at = clock_mono_ms();
    for (size_t i = 0; i < saved; i++) {
        wr_item_t *b = &batch[sent[i]];
        b->saved = 1;
        if (b->record)
            s_remember(w, b->id, b->partition, b->update);
    }
    if (saved == n)
        return 0;
    log_warn("cannot save job statuses", "op=%s jobs=%zu saved=%zu reason=\"%s\"", batch[0].op, n,
             saved, berr.message);
    return -1;
}

/* Reads the records of the partitions held here into the fold ring. */
static void s_look(writer_t *w)
{
    const master_t *m = w->m;
    int parts[m->cfg->partitions], np = 0;
    int64_t mono = clock_mono_ms();
    w->look_next = mono + FOLD_LOOK_MS;
    w->fold_missed = 0;
    for (int p = 0; p < m->cfg->partitions; p++)
        if (mono < __atomic_load_n(&m->leases[p].valid_until, __ATOMIC_ACQUIRE))
            parts[np++] = p;
    if (!np)
        return;
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", parts, np);
    int64_t t0 = zclock_usecs();
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(w->store, STORE_RESULTS), filter, NULL, NULL);
    const bson_t *doc;
    while (!w->fold_missed && mongoc_cursor_next(cur, &doc)) {
        const char *id = bj_get_str(doc, "_id", NULL);
        if (id && strlen(id) < PROTO_ID_MAX)
            s_remember(w, id, (int)bj_get_int(doc, "partition", -1), doc);
    }
    bson_error_t berr;
    int failed = mongoc_cursor_error(cur, &berr);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    stats_store_op("look_results", zclock_usecs() - t0, failed);
    if (failed) {
        log_warn("cannot read recorded outcomes to fold; later", "reason=\"%s\"", berr.message);
        w->look_next = mono + 1000;
    }
}

/* Folds the first FOLD_BULK remembered records of partitions still held
 * here into their jobs and deletes them (those of partitions gone are
 * forgotten: their new owner looks for them). */
static void s_fold(writer_t *w)
{
    const master_t *m = w->m;
    const char *ids[FOLD_BULK];
    bson_t *updates[FOLD_BULK];
    size_t k = w->nfolds < FOLD_BULK ? w->nfolds : FOLD_BULK, n = 0;
    while (__atomic_load_n(&m->write_want, __ATOMIC_ACQUIRE) > 0)
        usleep(200); /* the loop's write goes first */
    pthread_mutex_lock(&w->m->write_mu);
    int64_t mono = clock_mono_ms(), t0 = zclock_usecs();
    for (size_t i = 0; i < k; i++) {
        fold_t *f = &w->folds[(w->fold_head + i) % FOLD_MAX];
        if (f->partition >= 0 && f->partition < m->cfg->partitions &&
            mono < __atomic_load_n(&m->leases[f->partition].valid_until, __ATOMIC_ACQUIRE)) {
            ids[n] = f->id;
            updates[n++] = f->update;
        }
    }
    bson_error_t berr = {0};
    int64_t matched = 0;
    size_t folded = store_update_by_ids(w->store, "jobs", ids, updates, n, &matched, &berr);
    size_t deleted = folded ? store_delete_by_ids(w->store, STORE_RESULTS, ids, folded, &berr) : 0;
    pthread_mutex_unlock(&w->m->write_mu);
    int failed = folded < n || deleted < folded;
    stats_store_op("fold_results", zclock_usecs() - t0, failed);
    stats_results_folded((int64_t)deleted);
    if (failed) {
        log_warn("cannot fold recorded outcomes into their jobs; later",
                 "folded=%zu reason=\"%s\"", deleted, berr.message);
        w->fold_after = clock_mono_ms() + 1000;
        return; /* kept, folded again (a fold twice changes nothing) */
    }
    s_forget(w, k);
}

/* Waits for work; folds records meanwhile while it may (FOLD_LOAD).
 * Called and returns with w->mu held. */
static void s_idle(writer_t *w)
{
    if (w->settling) {
        pthread_cond_wait(&w->work, &w->mu);
        return;
    }
    int64_t now = clock_mono_ms();
    s_load(w, 0);
    int idle = now >= w->wrote_at + FOLD_QUIET_MS;
    int light = w->load < FOLD_LOAD && w->load_prev < FOLD_LOAD &&
                now >= w->fold_last + FOLD_TRICKLE_MS;
    int look = (idle || light) && !w->nfolds && (w->fold_missed || now >= w->look_next);
    int fold = w->nfolds && (idle || light || w->nfolds >= FOLD_MAX / 2);
    if (now < w->fold_after || (!look && !fold)) { /* wait for work meanwhile */
        int64_t until = now < w->fold_after ? w->fold_after : now + FOLD_TRICKLE_MS;
        int64_t wall = clock_wall_ms() + (until - now);
        struct timespec ts = {.tv_sec = wall / 1000, .tv_nsec = (wall % 1000) * 1000000};
        pthread_cond_timedwait(&w->work, &w->mu, &ts);
        return;
    }
    w->inflight = 1; /* writer_settle waits for a fold too (a release of its partition) */
    pthread_mutex_unlock(&w->mu);
    if (look)
        s_look(w);
    if (w->nfolds)
        s_fold(w);
    w->fold_last = clock_mono_ms();
    pthread_mutex_lock(&w->mu);
    w->inflight = 0;
    pthread_cond_broadcast(&w->room);
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
    w->folds = calloc(FOLD_MAX, sizeof *w->folds);
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
    if (w->folds)
        s_forget(w, w->nfolds);
    free(w->folds);
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
