/*
 * partitions.c - which partitions this master schedules.
 *
 * Each partition is a lease (common/lease.c). Masters publish a member
 * document (_id "master:<node>", written only by that master) with a
 * heartbeat; from the live members each computes its fair share,
 * ceil(partitions / live masters), releases leases above it and tries to
 * take free or expired ones below it. A new master thus gets its share
 * without restarting the others, and a dead master's partitions are taken
 * over once its leases expire.
 *
 * The leases held are renewed by the keeper, a thread with a store
 * connection of its own, not by the loop: a loop held up in one store call
 * longer than a lease's slack (a load's batch, a reconcile read, a status
 * write on a store far away or loaded) lost them all, and its partitions
 * moved. The keeper renews only while the loop was alive within the last
 * lease TTL, so that a loop stuck for good gives its partitions up as a
 * dead process does, at most one TTL later. Everything else about leases
 * (contending, releasing, forgetting those lost) stays on the loop. The
 * keeper's lock orders the two: the loop writes a lease under it, and a
 * release waits for a renewal in flight, so that a renewal never lands
 * after the release it would undo.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/log.h"

#include <pthread.h>
#include <string.h>

/* Every this many ticks, a reconcile pass re-reads the held partitions'
 * triggers (sched_reconcile), so that a lost NOTIFY delays a change but
 * never loses it. */
#define RECONCILE_TICKS 10

static int s_tick_count;

struct keeper {
    master_t *m;
    store_t *store;        /* its own connection: a mongoc client is one thread's */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;    /* m->leases and m->lapsed are written under it */
    pthread_cond_t cv;     /* wakes the keeper early (stop) and a release (renewal done) */
    int stop;
    int renewing;          /* a renewal is in flight (the lock is not held meanwhile) */
    int silent;            /* the keeper found the loop silent: logged once */
    int64_t alive;         /* monotonic ms of the loop's last sign of life (atomic) */
    lease_t *copy;         /* what a renewal works on, per due lease */
    lease_t **due;
    int *which, *rc;
};

/* Renews the held leases due (a third of the TTL since the last renewal)
 * on copies, with the lock released during the round trips, and writes
 * the outcome back to those still held at the same epoch: a renewal moves
 * valid_until forward; a lease found lost gets valid_until 0 (the loop
 * stops acting on it at once) and is marked in m->lapsed for the loop to
 * forget. Called with k->mu held. */
static void s_keeper_renew(keeper_t *k)
{
    master_t *m = k->m;
    int np = m->cfg->partitions, ttl = m->cfg->lease_ttl_ms;
    int64_t mono = clock_mono_ms();
    size_t n = 0;
    for (int p = 0; p < np; p++) {
        const lease_t *l = &m->leases[p];
        int64_t renewed = l->valid_until - ttl + lease_margin_ms(ttl);
        if (l->held && !m->lapsed[p] && mono - renewed >= ttl / 3) {
            k->copy[n] = *l;
            k->due[n] = &k->copy[n];
            k->which[n++] = p;
        }
    }
    if (!n)
        return;
    k->renewing = 1;
    pthread_mutex_unlock(&k->mu);
    err_t err = {0};
    lease_renew_many(k->store, k->due, n, ttl, k->rc, &err);
    pthread_mutex_lock(&k->mu);
    k->renewing = 0;
    pthread_cond_broadcast(&k->cv);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        lease_t *l = &m->leases[k->which[i]];
        if (!l->held || l->epoch != k->copy[i].epoch)
            continue; /* released or forgotten meanwhile */
        if (k->rc[i] == 1) {
            l->expires_at = k->copy[i].expires_at;
            __atomic_store_n(&l->valid_until, k->copy[i].valid_until, __ATOMIC_RELEASE);
        } else if (k->rc[i] == 0) {
            __atomic_store_n(&l->valid_until, 0, __ATOMIC_RELEASE);
            m->lapsed[k->which[i]] = 1;
        } else {
            failed++; /* the old deadline stands; tried again next look */
        }
    }
    if (failed)
        log_warn("cannot renew leases", "count=%d reason=\"%s\"", failed, err.msg);
}

static void *s_keeper_run(void *arg)
{
    keeper_t *k = arg;
    int ttl = k->m->cfg->lease_ttl_ms;
    int64_t period = ttl / 12 < 20 ? 20 : ttl / 12 > 1000 ? 1000 : ttl / 12;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + period * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&k->cv, &k->mu, &ts);
        if (k->stop)
            break;
        int64_t silent = clock_mono_ms() - __atomic_load_n(&k->alive, __ATOMIC_ACQUIRE);
        if (silent > ttl) {
            if (!k->silent)
                log_warn("loop silent for a lease TTL; its leases are left to lapse",
                         "silent_ms=%lld", (long long)silent);
            k->silent = 1;
            continue;
        }
        if (k->silent)
            log_info("loop alive again; leases still valid are renewed", "silent_ms=%lld",
                     (long long)silent);
        k->silent = 0;
        s_keeper_renew(k);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

int partitions_init(master_t *m, err_t *err)
{
    int n = m->cfg->partitions;
    m->leases = calloc((size_t)n, sizeof *m->leases);
    m->handing = calloc((size_t)n, sizeof *m->handing);
    m->lapsed = calloc((size_t)n, 1);
    m->loading = calloc((size_t)n, 1);
    for (int p = 0; p < n; p++) {
        char res[32];
        snprintf(res, sizeof res, "partition/%d", p);
        lease_init(&m->leases[p], res);
    }
    keeper_t *k = m->keeper = calloc(1, sizeof *k);
    k->m = m;
    k->alive = clock_mono_ms();
    k->copy = calloc((size_t)n, sizeof *k->copy);
    k->due = calloc((size_t)n, sizeof *k->due);
    k->which = calloc((size_t)n, sizeof *k->which);
    k->rc = calloc((size_t)n, sizeof *k->rc);
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &attr);
    pthread_condattr_destroy(&attr);
    if (!(k->store = store_new(m->cfg->mongo_uri, err)))
        return -1;
    if (pthread_create(&k->thread, NULL, s_keeper_run, k) != 0) {
        err_set(err, ERR_SYS, "cannot start the lease keeper thread");
        return -1;
    }
    k->started = 1;
    return 0;
}

void partitions_destroy(master_t *m)
{
    keeper_t *k = m->keeper;
    if (k) {
        if (k->started) {
            pthread_mutex_lock(&k->mu);
            k->stop = 1;
            pthread_cond_broadcast(&k->cv);
            pthread_mutex_unlock(&k->mu);
            pthread_join(k->thread, NULL);
        }
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        store_destroy(&k->store);
        free(k->copy);
        free(k->due);
        free(k->which);
        free(k->rc);
        free(k);
        m->keeper = NULL;
    }
    free(m->leases);
    free(m->handing);
    free(m->lapsed);
    free(m->loading);
}

void partitions_alive(master_t *m)
{
    __atomic_store_n(&m->keeper->alive, clock_mono_ms(), __ATOMIC_RELEASE);
}

/* Contends for partition p (not held, so the keeper leaves it alone) on a
 * copy, and writes the outcome back under the keeper's lock. */
static int s_lease_take(master_t *m, int p, err_t *err)
{
    keeper_t *k = m->keeper;
    pthread_mutex_lock(&k->mu);
    lease_t l = m->leases[p];
    pthread_mutex_unlock(&k->mu);
    int rc = lease_tick(m->store, &l, m->cfg->node_id, m->cfg->lease_ttl_ms, err);
    pthread_mutex_lock(&k->mu);
    m->leases[p] = l;
    pthread_mutex_unlock(&k->mu);
    return rc;
}

/* Gives up partition p's lease: no longer held for the keeper from here,
 * and written once a renewal in flight (of it, perhaps) has landed. */
static int s_lease_release(master_t *m, int p, err_t *err)
{
    keeper_t *k = m->keeper;
    dispatch_settle(m->disp); /* its jobs' outcomes written before its next owner reads them */
    pthread_mutex_lock(&k->mu);
    while (k->renewing)
        pthread_cond_wait(&k->cv, &k->mu);
    lease_t l = m->leases[p];
    m->leases[p].held = 0;
    pthread_mutex_unlock(&k->mu);
    return lease_release(m->store, &l, err);
}

/* Forgets a partition given up: its schedule and its waiting jobs. */
static void s_drop(master_t *m, int p)
{
    sched_drop(m->sched, p);
    dispatch_drop_partition(m->disp, p);
}

int partitions_may_fire(const master_t *m, int p, int64_t mono, int overlap_ok)
{
    return lease_valid(&m->leases[p], mono) && !m->handing[p] &&
           (!m->loading[p] || (m->loading[p] == LOAD_SCAN && overlap_ok));
}

void partitions_scanned(master_t *m)
{
    memset(m->loading, 0, (size_t)m->cfg->partitions);
    master_loaded(m);
}

/* How long after a lease's expiry the retake tick comes: the
 * store's and this master's clocks read the same (NTP), give or take. */
#define RETAKE_MARGIN_MS 50

int64_t partitions_retake_in(const master_t *m)
{
    if (!m->retake_at)
        return -1;
    int64_t in = m->retake_at + RETAKE_MARGIN_MS - clock_wall_ms();
    return in > 0 ? in : 0;
}

/* Partition p's lease, held by another, was not expired when read: the
 * tick comes again as it expires (partitions_retake_in) rather than up to
 * a heartbeat later. A live holder renews its lease long before. */
static void s_retake_at(master_t *m, int p)
{
    int64_t e = m->leases[p].head_expires;
    if (e && (!m->retake_at || e < m->retake_at))
        m->retake_at = e;
}

int partitions_loading(const master_t *m, int p)
{
    return p >= 0 && p < m->cfg->partitions && m->loading[p];
}

int partitions_owned(const master_t *m, int p)
{
    return p >= 0 && p < m->cfg->partitions && lease_valid(&m->leases[p], clock_mono_ms());
}

static int s_held(const master_t *m)
{
    int held = 0;
    for (int p = 0; p < m->cfg->partitions; p++)
        held += m->leases[p].held;
    return held;
}

/* Writes this master's member document and counts live masters (>= 1),
 * and in *fresh (>= 1) those of them whose heartbeat is fresh. Marks in
 * orphan[] (SKED_PARTITIONS entries) the partitions listed only by masters
 * whose heartbeat went stale (dead, or stalled). */
static int s_heartbeat(master_t *m, char *orphan, int *fresh_masters)
{
    int64_t now = clock_wall_ms();
    char id[160];
    snprintf(id, sizeof id, "master:%s", m->cfg->node_id);
    bson_t set = BSON_INITIALIZER, arr;
    BSON_APPEND_UTF8(&set, "role", "master");
    BSON_APPEND_UTF8(&set, "node_id", m->cfg->node_id);
    BSON_APPEND_UTF8(&set, "endpoint", m->cfg->master_bind);
    BSON_APPEND_ARRAY_BEGIN(&set, "partitions", &arr);
    for (int p = 0, i = 0; p < m->cfg->partitions; p++)
        if (m->leases[p].held) {
            char k[16];
            snprintf(k, sizeof k, "%d", i++);
            BSON_APPEND_INT32(&arr, k, p);
        }
    bson_append_array_end(&set, &arr);
    json_t *workers = dispatch_workers_json(m->disp);
    bj_append(&set, "workers", workers);
    json_decref(workers);
    BSON_APPEND_INT64(&set, "pending", (int64_t)dispatch_pending(m->disp));
    BSON_APPEND_INT64(&set, "fire_lag_ms", dispatch_recent_lag(m->disp));
    json_t *unserved = dispatch_unserved_json(m->disp);
    bj_append(&set, "unserved_task_types", unserved);
    json_decref(unserved);
    BSON_APPEND_INT64(&set, "scheduled_triggers", (int64_t)sched_size(m->sched));
    BSON_APPEND_DATE_TIME(&set, "heartbeat_at", now);
    /* Live for a lease TTL at least: a master whose loop stalls on a slow
     * store for a few heartbeats is not taken for dead (which would shift
     * every fair share and set all masters rebalancing), while a dead one
     * drops out about when its leases expire. */
    int64_t live_ms = 3 * (int64_t)m->cfg->heartbeat_ms + 1000;
    if (live_ms < m->cfg->lease_ttl_ms)
        live_ms = m->cfg->lease_ttl_ms;
    BSON_APPEND_DATE_TIME(&set, "expires_at", now + live_ms);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t update = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT(&update, "$set", &set);
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t berr;
    if (!mongoc_collection_update_one(store_coll(m->store, "members"), filter, &update, opts, NULL,
                                      &berr))
        log_warn("cannot write member heartbeat", "reason=\"%s\"", berr.message);
    bson_destroy(filter);
    bson_destroy(&update);
    bson_destroy(&set);
    bson_destroy(opts);

    /* Live masters, and the partitions none of them holds. The live master
     * with the lowest node id speaks for all in partitions_unowned alerts. */
    int live = 0, nfresh = 0, np = m->cfg->partitions, first = 1;
    char owned[np];
    memset(owned, 0, sizeof owned);
    bson_t *q = BCON_NEW("role", BCON_UTF8("master"), "expires_at", "{", "$gt",
                         BCON_DATE_TIME(now), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(store_coll(m->store, "members"), q, NULL,
                                                            NULL);
    const bson_t *doc;
    dispatch_listed_reset(m->disp);
    while (mongoc_cursor_next(cur, &doc)) {
        live++;
        if (strcmp(bj_get_str(doc, "node_id", ""), m->cfg->node_id) < 0)
            first = 0;
        /* Its partitions count as owned while its heartbeat is fresh (a
         * member stays live for a lease TTL, longer than that); a stale
         * member's are orphans, worth contending for at once. */
        int fresh = bj_get_date(doc, "heartbeat_at", 0) >=
                    now - (3 * (int64_t)m->cfg->heartbeat_ms + 1000);
        nfresh += fresh;
        bson_iter_t it, sub;
        if (bson_iter_init_find(&it, doc, "partitions") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &sub))
            while (bson_iter_next(&sub))
                if (BSON_ITER_HOLDS_INT32(&sub) && bson_iter_int32(&sub) >= 0 &&
                    bson_iter_int32(&sub) < np)
                    owned[bson_iter_int32(&sub)] |= fresh ? 1 : 2;
        /* The workers it sees, if it is another master and fresh. */
        if (fresh && strcmp(bj_get_str(doc, "node_id", ""), m->cfg->node_id) != 0 &&
            bson_iter_init_find(&it, doc, "workers") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &sub))
            while (bson_iter_next(&sub)) {
                bson_iter_t w;
                if (BSON_ITER_HOLDS_DOCUMENT(&sub) && bson_iter_recurse(&sub, &w) &&
                    bson_iter_find(&w, "node_id") && BSON_ITER_HOLDS_UTF8(&w))
                    dispatch_listed_worker(m->disp, bson_iter_utf8(&w, NULL));
            }
    }
    for (int p = 0; p < np; p++)
        orphan[p] = owned[p] == 2;
    bson_error_t cerr;
    if (!mongoc_cursor_error(cur, &cerr) && first) {
        int unowned[np], n = 0;
        for (int p = 0; p < np; p++)
            if (!(owned[p] & 1) && !m->leases[p].held)
                unowned[n++] = p;
        alert_unowned(m->alert, unowned, n);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(q);
    *fresh_masters = nfresh < 1 ? 1 : nfresh;
    return live < 1 ? 1 : live;
}

/* Contends for partition p (not held). Returns 1 if gained (appended to
 * gained), 0 if not, < 0 on a store error (logged). */
static int s_contend(master_t *m, int p, int *gained, int *ngained, err_t *err)
{
    /* Contending for many partitions on a slow store takes a while: the
     * loop takes a turn between two, and the keeper renews what is held. */
    partitions_alive(m);
    master_turn(m);
    int rc = s_lease_take(m, p, err);
    if (rc == 1) {
        gained[(*ngained)++] = p;
        m->loading[p] = LOAD_TRIGGERS; /* until loaded and taken over */
    } else if (rc == 0) {
        s_retake_at(m, p); /* held by another: a dead master's, if not renewed */
    } else {
        log_warn("cannot contend for lease", "resource=%s reason=\"%s\"", m->leases[p].resource,
                 err->msg);
    }
    return rc;
}

int partitions_keep_reading(master_t *m, size_t *read)
{
    if (++*read % LEASE_KEEP_EVERY == 0) {
        partitions_alive(m);
        master_turn(m);
    }
    return master_stopping();
}

/* Forgets the partitions whose leases the keeper found lost (it looks
 * whatever the loop is doing); one of them in gained[] is taken out (not
 * ours to recover). Returns how many. */
static int s_forget_lapsed(master_t *m, int *gained, int *ngained)
{
    keeper_t *k = m->keeper;
    int np = m->cfg->partitions, n = 0;
    char lost[np];
    pthread_mutex_lock(&k->mu);
    for (int p = 0; p < np; p++) {
        lost[p] = m->lapsed[p];
        if (lost[p]) {
            m->lapsed[p] = 0;
            m->leases[p].held = 0;
        }
    }
    pthread_mutex_unlock(&k->mu);
    for (int p = 0; p < np; p++) {
        if (!lost[p])
            continue;
        s_drop(m, p);
        n++;
        for (int i = 0; i < *ngained; i++)
            if (gained[i] == p)
                gained[i--] = gained[--*ngained];
    }
    return n;
}

int partitions_forget_lost(master_t *m)
{
    int none = 0;
    partitions_alive(m);
    return s_forget_lapsed(m, NULL, &none);
}

void partitions_tick(master_t *m)
{
    int np = m->cfg->partitions;
    m->retake_at = 0; /* set again below while a lease contended for is not expired yet */
    char orphan[np];
    int fresh;
    int live = s_heartbeat(m, orphan, &fresh);
    int target = (np + live - 1) / live;
    /* A master contends for the first time one heartbeat period after its
     * first member document, so that masters started together (a cluster
     * restarted) count each other and each takes its share. Contending at
     * once, the first to start counted itself alone, took what it could,
     * loaded it and gave most of it back: at 1,000,000 triggers over three
     * masters, 6 minutes more until all were loaded, and the memory of the
     * triggers given back kept (docs/BENCHMARKS.md). */
    int64_t mono = clock_mono_ms();
    if (!m->joined)
        m->joined = mono;
    if (mono - m->joined < m->cfg->heartbeat_ms) {
        log_debug("members counted before contending", "live=%d target=%d", live, target);
        return;
    }
    err_t err = {0};
    /* Lapsed ones are forgotten first (the keeper may have found some
     * since the last tick): a partition gained again below keeps what it
     * loads. */
    int gained[np], ngained = 0, nlost = partitions_forget_lost(m);
    if (dispatch_scan_poll(m->disp))
        return; /* a takeover scan is under way: no lease moves until it is over (seconds) */
    mono = clock_mono_ms();
    /* Above our share: give the highest partitions back, but not while a
     * stale master's partitions are being taken (the share changes when its
     * member document expires). A partition given back claims nothing more
     * and goes once the fires it claimed ahead have started on their
     * workers (at most SKED_FIRE_AHEAD_MS + 1 s): its next owner finds
     * them recorded, not `queued` (which it would run again if their
     * worker were slow to reach it). */
    int orphans = 0;
    for (int p = 0; p < np; p++)
        orphans += orphan[p];
    char give[np];
    memset(give, 0, sizeof give);
    for (int p = np - 1, held = s_held(m); !orphans && p >= 0 && held > target; p--)
        if (m->leases[p].held) {
            give[p] = 1;
            held--;
        }
    for (int p = 0; p < np; p++) {
        if (!give[p] || !m->leases[p].held) {
            m->handing[p] = 0;
            continue;
        }
        if (!m->handing[p])
            m->handing[p] = mono > 0 ? mono : 1;
        if (dispatch_unstarted_in(m->disp, p) > 0 &&
            mono - m->handing[p] <= m->cfg->fire_ahead_ms + 1000)
            continue; /* next tick */
        m->handing[p] = 0;
        sched_save_states(m->sched, p, 0, INT64_MAX); /* the next owner starts where we are */
        snapshot_save(m, p, 1);
        s_drop(m, p);
        s_lease_release(m, p, &err);
    }
    /* Below our share: try free or expired partitions, starting at an
     * offset of our own so that masters do not all contend for the same.
     * Contending, loading and taking over give the loop turns as they go
     * (master_turn): the partitions held before go on firing. */
    m->taking = 1;
    int held = s_held(m);
    int start = (int)(zclock_usecs() % (uint64_t)np);
    for (int i = 0, rc = 0; i < np && held < target && rc >= 0; i++) {
        int p = (start + i) % np;
        if (!m->leases[p].held && (rc = s_contend(m, p, gained, &ngained, &err)) == 1)
            held++;
    }
    /* Orphans, up to the share among the masters still fresh: a dead
     * master's partitions move as soon as their leases expire, not when
     * its member document does (the share above still counts it), and
     * are spread over the survivors at once. Taking every orphan it
     * could, the first survivor to contend took most of them and gave
     * some back a few seconds later: a second move, load and takeover
     * scan for those partitions (docs/BENCHMARKS.md). */
    int orphan_target = (np + fresh - 1) / fresh;
    for (int p = 0, rc = 0; p < np && held < orphan_target && rc >= 0; p++)
        if (orphan[p] && !m->leases[p].held && (rc = s_contend(m, p, gained, &ngained, &err)) == 1)
            held++;
    stats_leases(held, ngained, nlost);
    int load[np], nload = ngained;
    memcpy(load, gained, sizeof(int) * (size_t)ngained);
    if (nload)
        snapshot_restore(m, load, &nload);
    int loaded = nload ? sched_load(m->sched, load, nload, &err) : 0;
    /* Leases the keeper found lost while the load ran: forgotten now,
     * the load's triggers of theirs included. */
    int nlapsed = s_forget_lapsed(m, gained, &ngained);
    if (nlapsed)
        stats_leases(s_held(m), 0, nlapsed);
    if (loaded < 0) {
        log_warn("cannot load partitions; releasing them", "reason=\"%s\"", err.msg);
        for (int i = 0; i < ngained; i++) {
            s_drop(m, gained[i]);
            s_lease_release(m, gained[i], &err);
        }
        stats_leases(s_held(m), 0, 0);
    } else if (ngained) {
        log_info("partitions gained", "count=%d held=%d target=%d triggers=%zu", ngained, held,
                 target, sched_size(m->sched));
        for (int i = 0; i < ngained; i++)
            m->loading[gained[i]] = LOAD_SCAN;
        dispatch_recover(m->disp, gained, ngained);
    }
    m->taking = 0;
    if (!dispatch_scan_poll(m->disp))
        partitions_scanned(m);
    if (++s_tick_count % RECONCILE_TICKS == 0) {
        int all[np], n = 0;
        for (int p = 0; p < np; p++)
            if (m->leases[p].held)
                all[n++] = p;
        sched_reconcile(m->sched, all, n);
    }
}

void partitions_release_all(master_t *m)
{
    err_t err = {0};
    sched_save_states(m->sched, -1, 0, INT64_MAX);
    /* Each partition's final snapshot before its lease goes, until one
     * cannot be written: a store that fails one (gone, full) would make
     * the stop wait for each of the others' failures too. */
    int snapshots = 1;
    for (int p = 0; p < m->cfg->partitions; p++) {
        if (!m->leases[p].held)
            continue;
        if (snapshots && snapshot_save(m, p, 1) < 0)
            snapshots = 0;
        if (s_lease_release(m, p, &err) < 0)
            log_warn("cannot release lease", "resource=%s reason=\"%s\"", m->leases[p].resource,
                     err.msg);
    }
    char id[160];
    snprintf(id, sizeof id, "master:%s", m->cfg->node_id);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_collection_delete_one(store_coll(m->store, "members"), filter, NULL, NULL, NULL);
    bson_destroy(filter);
}
