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
};

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
    size_t saved = store_update_by_ids(w->store, "jobs", ids, updates, n, &matched, &berr);
    stats_store_op(batch[0].op, zclock_usecs() - t0, saved < n);
    pthread_mutex_unlock(&w->m->write_mu);
    for (size_t i = 0; i < saved; i++)
        batch[sent[i]].saved = 1;
    if (saved == n)
        return 0;
    log_warn("cannot save job statuses", "op=%s jobs=%zu saved=%zu reason=\"%s\"", batch[0].op, n,
             saved, berr.message);
    return -1;
}

static void *s_run(void *arg)
{
    writer_t *w = arg;
    wr_item_t batch[STORE_BULK_MAX];
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (!w->n) {
            pthread_cond_wait(&w->work, &w->mu);
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
    while ((w->n || w->inflight) && !w->stop)
        pthread_cond_wait(&w->room, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

int writer_fd(const writer_t *self)
{
    return self->efd;
}
