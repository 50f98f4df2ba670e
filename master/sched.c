/*
 * sched.c - the master's in-memory schedule: the triggers of the partitions
 * it holds, in a binary min-heap keyed by the next time to look at them.
 *
 * MongoDB is the source of truth: triggers (written by gateways) and
 * trigger_state (next_fire_at, written only by the master holding the
 * partition). A fire is claimed by inserting its job document, whose _id
 * is derived from (trigger, scheduled_for), so even two masters that both
 * believe they hold a partition cannot fire the same time twice (G1).
 *
 * Hot path per fire: one job insert and one trigger_state update, both by
 * _id. Fires due together are claimed by one unordered insert_many and
 * sent to workers before their states are saved; states are saved by the
 * loop, grouped, SKED_STATE_SAVE_MS after the fire when it is idle and at
 * most every SCHED_SAVE_BUSY_MS per trigger when it is busy
 * (sched_save_states).
 *
 * Claim ahead, start on time: a trigger is looked at SKED_FIRE_AHEAD_MS
 * before its fire (its heap key is that look time, t->next_ms the fire's
 * time). Its job is claimed and sent then, with `start_at`, and the worker
 * holds it until its time, so the store's round trips and a busy master
 * are not in the fire's lag. A fire whose trigger still has a job active
 * and whose overlap policy is not `allow` is decided at its time instead,
 * as the policy asks. Loading (on gaining a
 * partition, and periodically to reconcile lost notifications) is a
 * batched secondary-field query; a partition handed over with a snapshot
 * comes back from its packed records instead (sched_pack, sched_unpack;
 * master/snapshot.c).
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/cron.h"
#include "common/heap.h"
#include "common/log.h"
#include "common/schedule.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A fire this late is a misfire, handled by the misfire policy. */
#define MISFIRE_GRACE_MS 1000

/* What a trigger's definition says besides when it fires and its
 * parameters: its execution settings, policies, bounds and zone.
 * Triggers that say the same share one counted copy (sched.confs,
 * s_conf_get): a record then carries 8 bytes of it instead of about 110
 * (docs/BENCHMARKS.md, 1,000,000 triggers). Parameters stay in the
 * record: where they differ, shared settings would not be shared. Never
 * changed once shared. */
typedef struct {
    const char *task_type; /* shared copies (sched.names), as labels */
    const char *owner;
    const char *labels;   /* execution_config.worker_labels as "k=v,...", shared (sched.names) */
    char *notify;         /* notifications, as job_t.notify; NULL: none */
    const tz_t *tz;       /* CRON: its zone; NULL otherwise */
    retry_policy_t retry;
    int64_t start_ms, end_ms; /* schedule.start_at, end_at; 0 = none */
    int64_t catchup_ms;   /* trigger_config.catchup_window */
    int max_execution_time;
    int priority;
    cron_dst_policy_t pol; /* CRON: its DST policy; the default otherwise */
    unsigned refs;        /* triggers that point to it */
    uint8_t overlap;      /* execution_config.overlap_policy: overlap_t */
    uint8_t misfire;      /* trigger_config.misfire_policy: MISFIRE_* */
} conf_t;

/* One per trigger scheduled here, so its size is the schedule's memory
 * (the scale workload: 1,000,000 triggers; docs/BENCHMARKS.md). Widest
 * fields first, no padding; what many triggers share is one copy each
 * (conf_t); the id is allocated to its length and is also the key in
 * sched.by_id. */
typedef struct {
    heap_node_t hn; /* first: key = when to look again at the trigger */
    unsigned gen;   /* the sched's generation when last read (loaded or reloaded) */
    int64_t version;
    union {
        struct {
            int64_t first_ms, period_ms;
        } iv; /* kind SCHED_INTERVAL */
        _Alignas(int64_t) unsigned char cron[CRON_SIZE]; /* kind SCHED_CRON: s_cron() */
    } u;
    int64_t next_ms;    /* next scheduled fire */
    int64_t saved_last; /* last_fire_at persisted in its state, 0 none */
    const conf_t *c;    /* its settings, shared; never NULL */
    char *parameters;   /* JSON text, or s_empty_params: often a trigger's own */
    uint16_t seen;      /* the reconcile pass that last found (or loaded) it */
    uint16_t batch;     /* the sched's batch it was last decided in */
    uint16_t partition; /* < cfg->partitions (s_upsert), at most 4096 (config.c) */
    unsigned next_flags : 2; /* CRON_FIRE_* of next_ms */
    unsigned ending : 1;     /* fired its last: leaves once its state is saved */
    unsigned kind : 2;       /* SCHED_NONE (nothing to schedule), SCHED_INTERVAL, SCHED_CRON */
    char id[];               /* the trigger's _id */
} trig_t;

/* 95 bytes before the id: with a 24-character id (the gateway's) a record
 * is a 120-byte allocation, a 128-byte chunk of glibc's (144 before the
 * narrowing of hn, seen, batch, partition and the flags: 16 MiB less at
 * 1,000,000 triggers; docs/BENCHMARKS.md). seen and batch wrap at 65536:
 * they are only compared for equality with the sched's counters, which
 * wrap with them (sched.pass, sched.batch say what a collision costs). */
_Static_assert(offsetof(trig_t, id) <= 95, "the trigger record grew past a 128-byte chunk");

/* A trigger whose state is still to be saved (sched.unsaved): kept apart
 * from its record, as few are at a time. */
typedef struct {
    trig_t *t;
    int64_t last;  /* last_fire_at to save: the newest fire claimed or recorded */
    int64_t since; /* monotonic ms it has been waiting since */
} unsaved_t;

enum { SCHED_NONE = 0, SCHED_INTERVAL, SCHED_CRON };

/* A CRON trigger's cron, kept in its record; NULL for any other kind. */
static const cron_t *s_cron(const trig_t *t)
{
    return t->kind == SCHED_CRON ? (const cron_t *)t->u.cron : NULL;
}

/* The parameters most triggers have: one copy for all of them. */
static char s_empty_params[] = "{}";

enum { MISFIRE_FIRE_ONCE = 0, MISFIRE_FIRE_ALL, MISFIRE_SKIP };

/* At most this many skipped fires are recorded one by one per misfire;
 * beyond it one log line tells how many more were skipped. */
#define MAX_SKIP_RECORDS 1000

/* One misfire's skip records, waiting in sched.skips for s_flush_skips.
 * A pass writes its records before any trigger leaves the schedule, so
 * the trigger is still there then. */
typedef struct {
    const trig_t *t;
    const char *reason;
    int64_t from; /* the first skipped fire */
    size_t first, n;
    long more;    /* skipped beyond MAX_SKIP_RECORDS, not recorded */
} skip_run_t;

/* The schedule's triggers by id: open addressing, linear probing, an
 * array of record pointers at most three quarters full (IDX_LOAD_NUM /
 * IDX_LOAD_DEN), keyed by each record's own id. Hand-written rather than
 * czmq's zhashx for memory: a zhashx entry is a 48-byte allocation plus
 * its bucket, about 60 bytes a trigger; this is 8 bytes a slot, 10.7-21 a
 * trigger (docs/BENCHMARKS.md, 1,000,000 triggers). Three quarters rather than
 * half: a third of 1,000,000 triggers then takes 2^19 slots, not 2^20 (4
 * MiB less in each of three masters), for about 8.5 slots looked at by a
 * search that misses instead of 2.5, on the paths by id only (a NOTIFY,
 * a worker's message, a load), never on a fire. */
#define IDX_LOAD_NUM 3
#define IDX_LOAD_DEN 4
typedef struct {
    trig_t **v;
    size_t cap, n; /* cap: a power of two, 0 before the first add */
} idx_t;

struct sched {
    master_t *m;
    idx_t by_id;     /* id -> trig_t*, owns */
    zhashx_t *unsaved; /* id -> unsaved_t*, owned */
    int64_t unsaved_oldest; /* no unsaved state is older (mono ms); INT64_MAX: none */
    heap_t heap;     /* of trig_t, by hn.key */
    unsigned gen;
    uint16_t batch;  /* sched_fire_due's batches, counted; wraps: a trigger last
                      * decided 65,536 batches ago then ends a batch early,
                      * and the next batch decides it */
    int64_t ahead;   /* SKED_FIRE_AHEAD_MS */
    bson_t **skips;  /* skip records of this pass's misfires, to insert */
    size_t nskips, skips_cap;
    skip_run_t *runs; /* which trigger each stretch of skips is of */
    size_t nruns, runs_cap;
    zhashx_t *names;        /* owner, task type or labels -> its one copy (char*, owned) */
    zhashx_t *confs;        /* conf_t -> itself, the one copy (owned by its triggers) */
    mongoc_cursor_t *recon; /* the reconcile pass's read of `triggers`; NULL between passes */
    char *recon_parts;      /* partitions the pass sweeps: held since it began, not reloaded */
    uint16_t pass;          /* reconcile passes begun; wraps: a complete pass
                             * finds or removes every trigger it sweeps, so
                             * only a trigger no pass completed over for
                             * 65,536 passes could be kept by one it should
                             * have been removed by (a NOTIFY removes it) */
    int64_t recon_began;    /* monotonic ms the pass began */
    int64_t recon_spent;    /* ms the pass has spent reading so far */
    int64_t recon_next;     /* monotonic ms before which no pass begins */
    char (*stale)[64];      /* ids the pass found new or changed, to read whole */
    size_t nstale;
    zhashx_t *ended;        /* id -> ended_t*: triggers here with nothing left to fire */
};

/* A trigger that reached its end (end_at, a one-off fired) keeps its
 * definition: the gateway owns that document. Remembered, with the version
 * it ended at, so that a reconcile pass does not take it for new and read
 * it whole again every time (it did, for every ended trigger, each pass). */
typedef struct {
    int64_t version;
    int partition;
    unsigned seen; /* the reconcile pass that last found it */
} ended_t;

/* A reconcile pass reads its triggers' ids and versions this many at a
 * time, and a loop turn spends at most one read and RECONCILE_STEP_MS on
 * it (sched_reconcile_step). */
#define RECONCILE_BATCH 256
#define RECONCILE_STEP_MS 20
/* While fires are due or worker messages wait, a pass waits for a quiet
 * turn, but no longer than this: then it goes on a batch a turn anyway. */
#define RECONCILE_PATIENCE_MS 10000
/* A pass begins no sooner than this many times its predecessor's reading
 * time after that one ended, so that passes take at most about 1/21 of
 * the loop's and the store's time however many triggers there are. On
 * FerretDB every pass is a full scan of `triggers` (whatever the
 * partitions) decoded by the store: each 10 s with 50,000 triggers, the
 * two masters' passes kept the store on both cores before a single job
 * was due. */
#define RECONCILE_SPACING 20

/* When to look at a trigger whose next fire is at fire_ms. */
static int64_t s_look_at(const sched_t *s, int64_t fire_ms)
{
    return fire_ms == INT64_MAX ? INT64_MAX : fire_ms - s->ahead;
}

/* ---- settings and triggers ------------------------------------------- */

/* FNV-1a, 64 bits, of n bytes on from h (start: FNV_OFFSET). */
#define FNV_OFFSET UINT64_C(14695981039346656037)
static uint64_t s_fnv(uint64_t h, const void *data, size_t n)
{
    for (const unsigned char *p = data, *end = p + n; p < end; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return h;
}

static uint64_t s_hash(const char *id)
{
    return s_fnv(FNV_OFFSET, id, strlen(id));
}

static int s_str_same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* zhashx hasher of sched.confs. The interned strings hash by address
 * (one copy each), the policy's doubles are only compared. */
static size_t s_conf_hash(const void *key)
{
    const conf_t *c = key;
    const int64_t f[] = {(intptr_t)c->task_type, (intptr_t)c->owner, (intptr_t)c->labels,
                         (intptr_t)c->tz, c->start_ms, c->end_ms, c->catchup_ms,
                         c->max_execution_time, c->priority, c->retry.max_retries,
                         c->retry.jitter, c->pol.gap, c->pol.overlap, c->overlap, c->misfire};
    uint64_t h = s_fnv(FNV_OFFSET, f, sizeof f);
    if (c->notify)
        h = s_fnv(h, c->notify, strlen(c->notify));
    return (size_t)h;
}

/* zhashx comparator of sched.confs: 0 if the same settings. */
static int s_conf_cmp(const void *a, const void *b)
{
    const conf_t *x = a, *y = b;
    const retry_policy_t *p = &x->retry, *q = &y->retry;
    int same = x->task_type == y->task_type && x->owner == y->owner && x->labels == y->labels &&
               x->tz == y->tz && x->start_ms == y->start_ms && x->end_ms == y->end_ms &&
               x->catchup_ms == y->catchup_ms && x->max_execution_time == y->max_execution_time &&
               x->priority == y->priority && x->pol.gap == y->pol.gap &&
               x->pol.overlap == y->pol.overlap && x->overlap == y->overlap &&
               x->misfire == y->misfire && p->max_retries == q->max_retries &&
               p->initial_delay == q->initial_delay && p->multiplier == q->multiplier &&
               p->max_delay == q->max_delay && p->jitter == q->jitter &&
               s_str_same(x->notify, y->notify);
    return !same;
}

/* The one copy of the settings *c (whose strings it takes over), counted
 * once more. Give it back with s_conf_put. */
static const conf_t *s_conf_get(sched_t *s, conf_t *c)
{
    conf_t *have = zhashx_lookup(s->confs, c);
    if (have) {
        free(c->notify);
    } else {
        have = malloc(sizeof *have);
        *have = *c;
        have->refs = 0;
        zhashx_insert(s->confs, have, have);
    }
    have->refs++;
    return have;
}

/* A trigger lets go of its settings; NULL-safe. The last one frees them. */
static void s_conf_put(sched_t *s, const conf_t *c)
{
    conf_t *own = (conf_t *)c;
    if (own && --own->refs == 0) {
        zhashx_delete(s->confs, own);
        free(own->notify);
        free(own);
    }
}

/* A new trigger record for id, zeroed; its settings (t->c) are set by
 * the caller before anything else reads it. */
static trig_t *s_trig_new(const char *id)
{
    size_t len = strlen(id);
    trig_t *t = calloc(1, offsetof(trig_t, id) + len + 1); /* not sizeof: its tail padding */
    memcpy(t->id, id, len + 1);
    t->hn.idx = HEAP_NONE;
    return t;
}

static void s_set_params(trig_t *t, char *json)
{
    if (t->parameters != s_empty_params)
        free(t->parameters);
    t->parameters = json;
    if (json && strcmp(json, s_empty_params) == 0) {
        free(json);
        t->parameters = s_empty_params;
    }
}

static void s_trig_free(sched_t *s, trig_t **t_p)
{
    if (*t_p) {
        s_conf_put(s, (*t_p)->c);
        s_set_params(*t_p, NULL);
        free(*t_p);
        *t_p = NULL;
    }
}

/* The slot that holds id, or the empty one where it would go. */
static size_t s_idx_slot(const idx_t *x, const char *id)
{
    size_t mask = x->cap - 1, i = (size_t)s_hash(id) & mask;
    while (x->v[i] && strcmp(x->v[i]->id, id) != 0)
        i = (i + 1) & mask;
    return i;
}

static trig_t *s_idx_find(const idx_t *x, const char *id)
{
    return x->cap ? x->v[s_idx_slot(x, id)] : NULL;
}

/* Adds t, whose id is not in x yet. */
static void s_idx_add(idx_t *x, trig_t *t)
{
    if (IDX_LOAD_DEN * (x->n + 1) > IDX_LOAD_NUM * x->cap) {
        trig_t **old = x->v;
        size_t old_cap = x->cap;
        x->cap = old_cap ? 2 * old_cap : 1024;
        x->v = calloc(x->cap, sizeof *x->v);
        if (!x->v)
            abort(); /* as czmq does on no memory */
        for (size_t i = 0; i < old_cap; i++)
            if (old[i])
                x->v[s_idx_slot(x, old[i]->id)] = old[i];
        free(old);
    }
    x->v[s_idx_slot(x, t->id)] = t;
    x->n++;
}

/* Takes t out (if it is in), shifting back the entries after it that
 * belong nearer their home slot, so that no probe sequence breaks. */
static void s_idx_remove(idx_t *x, const trig_t *t)
{
    if (!x->cap)
        return;
    size_t mask = x->cap - 1, i = s_idx_slot(x, t->id);
    if (x->v[i] != t)
        return;
    x->v[i] = NULL;
    x->n--;
    for (size_t j = (i + 1) & mask; x->v[j]; j = (j + 1) & mask) {
        size_t home = (size_t)s_hash(x->v[j]->id) & mask;
        /* v[j] may fill the hole at i unless its home is in (i, j] */
        int stays = i < j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            x->v[i] = x->v[j];
            x->v[j] = NULL;
            i = j;
        }
    }
}

static void s_remove(sched_t *s, trig_t *t)
{
    zhashx_delete(s->unsaved, t->id); /* not ours any more, or saved before */
    heap_remove(&s->heap, &t->hn);
    s_idx_remove(&s->by_id, t);
    s_trig_free(s, &t);
}

static void s_ended(sched_t *s, const char *id, int64_t version, int partition)
{
    ended_t *e = malloc(sizeof *e);
    *e = (ended_t){version, partition, s->pass};
    zhashx_update(s->ended, id, e);
}

/* Removes a trigger that has fired its last. */
static void s_end(sched_t *s, trig_t *t)
{
    s_ended(s, t->id, t->version, t->partition);
    s_remove(s, t);
}

static void s_item_free(void **item)
{
    free(*item);
    *item = NULL;
}

/* The one copy of an owner, task type or labels (cut to max - 1 bytes),
 * shared by every trigger that has it: a few distinct values among up to
 * millions of triggers, where a fixed field each was half of a trigger's
 * memory. Kept until the schedule goes. */
static const char *s_intern(sched_t *s, const char *str, size_t max)
{
    char key[256];
    snprintf(key, max < sizeof key ? max : sizeof key, "%s", str);
    char *have = zhashx_lookup(s->names, key);
    if (!have) {
        have = strdup(key);
        zhashx_insert(s->names, key, have);
    }
    return have;
}

sched_t *sched_new(master_t *m)
{
    sched_t *s = calloc(1, sizeof *s);
    s->m = m;
    s->ahead = m->cfg->fire_ahead_ms;
    s->unsaved = zhashx_new();
    s->unsaved_oldest = INT64_MAX;
    zhashx_set_key_duplicator(s->unsaved, NULL);
    zhashx_set_key_destructor(s->unsaved, NULL);
    zhashx_set_destructor(s->unsaved, s_item_free); /* an unsaved_t */
    s->names = zhashx_new();
    zhashx_set_destructor(s->names, s_item_free);
    s->confs = zhashx_new();
    zhashx_set_key_hasher(s->confs, s_conf_hash);
    zhashx_set_key_comparator(s->confs, s_conf_cmp);
    zhashx_set_key_duplicator(s->confs, NULL);
    zhashx_set_key_destructor(s->confs, NULL);
    s->ended = zhashx_new();
    zhashx_set_destructor(s->ended, s_item_free);
    s->recon_parts = calloc((size_t)m->cfg->partitions, 1);
    s->stale = calloc(RECONCILE_BATCH, sizeof *s->stale);
    return s;
}

void sched_destroy(sched_t **self_p)
{
    sched_t *s = *self_p;
    if (!s)
        return;
    for (size_t i = 0; i < s->nskips; i++) /* none: each pass writes its own */
        bson_destroy(s->skips[i]);
    free(s->skips);
    free(s->runs);
    mongoc_cursor_destroy(s->recon);
    free(s->recon_parts);
    free(s->stale);
    zhashx_destroy(&s->unsaved);
    for (size_t i = 0; i < s->by_id.cap; i++)
        s_trig_free(s, &s->by_id.v[i]);
    free(s->by_id.v);
    zhashx_destroy(&s->confs); /* empty: its settings went with the triggers */
    zhashx_destroy(&s->names); /* after the triggers that point into it */
    zhashx_destroy(&s->ended);
    heap_free(&s->heap);
    free(s);
    *self_p = NULL;
}

size_t sched_size(const sched_t *self)
{
    return self->heap.n;
}

int64_t sched_next_due(const sched_t *self)
{
    const heap_node_t *top = heap_top(&self->heap);
    return top ? top->key : INT64_MAX;
}

/* First scheduled fire strictly after `after`, or -1 if none remains
 * before end_at. Sets t->next_flags for CRON (DST shaping). */
static int64_t s_next_after(trig_t *t, int64_t after)
{
    int64_t next = -1;
    t->next_flags = 0;
    if (t->kind == SCHED_CRON) {
        cron_fire_t f;
        int64_t start = t->c->start_ms;
        int64_t from = start && start - 1 > after ? start - 1 : after;
        if (cron_next(s_cron(t), t->c->tz, t->c->pol, from, &f) == 0) {
            next = f.at_ms;
            t->next_flags = (uint8_t)f.flags;
        }
    } else if (t->kind == SCHED_INTERVAL) {
        next = sched_interval_next(t->u.iv.first_ms, t->u.iv.period_ms, after);
    }
    if (next >= 0 && t->c->end_ms && next > t->c->end_ms)
        return -1;
    return next;
}

/* A fire claimed ahead this soon stays when its trigger changes: its
 * worker may be starting it. */
#define WITHDRAW_MARGIN_MS 100

/* keep() of dispatch_withdraw: a fire time still on t's schedule. */
static int s_on_schedule(void *arg, int64_t sf)
{
    trig_t *t = arg;
    int flags = t->next_flags; /* s_next_after sets them: they are next_ms's */
    int on = s_next_after(t, sf - 1) == sf;
    t->next_flags = flags;
    return on;
}

/* A trigger changed (t: its new schedule) or left the schedule (t NULL):
 * the fires claimed ahead that it no longer makes are withdrawn. */
static void s_withdraw(sched_t *s, const char *trigger_id, trig_t *t)
{
    if (s->ahead > 0)
        dispatch_withdraw(s->m->disp, trigger_id, clock_wall_ms() + WITHDRAW_MARGIN_MS,
                          t ? s_on_schedule : NULL, t);
}

/* The latest scheduled fire at or before now, starting from a missed one
 * (misfire policy fire_once runs that one for all that were missed). */
static int64_t s_latest_missed(trig_t *t, int64_t missed, int64_t now)
{
    if (t->kind != SCHED_CRON) /* never past end_at: nothing is due after it */
        return sched_interval_prev(t->u.iv.first_ms, t->u.iv.period_ms,
                                   t->c->end_ms && t->c->end_ms < now ? t->c->end_ms : now);
    int64_t latest = missed;
    for (int i = 0; i < 100000; i++) {
        int64_t n = s_next_after(t, latest);
        if (n < 0 || n > now)
            break;
        latest = n;
    }
    return latest;
}

/* Reads the derived schedule of a trigger document into t (whose
 * settings are read already); 0, or -1 if there is nothing to schedule. */
static int s_read_schedule(trig_t *t, const bson_t *def)
{
    const char *kind = bj_get_str(def, "schedule.kind", "");
    memset(&t->u, 0, sizeof t->u);
    t->kind = SCHED_NONE;
    if (strcmp(kind, "interval") == 0) {
        t->u.iv.first_ms = bj_get_date(def, "schedule.first_fire_at", 0);
        t->u.iv.period_ms = bj_get_int(def, "schedule.period_ms", 0);
        if (t->u.iv.period_ms <= 0)
            return -1;
        t->kind = SCHED_INTERVAL;
        return 0;
    }
    if (strcmp(kind, "cron") != 0)
        return -1; /* MANUAL: nothing to schedule */
    err_t err = {0};
    const cron_t *cron =
        cron_parse_into(t->u.cron, bj_get_str(def, "schedule.cron_expression", ""), &err);
    if (cron && !t->c->tz) /* its settings have none: an unknown zone, and why */
        tz_get(bj_get_str(def, "schedule.timezone", "UTC"), &err);
    if (!cron || !t->c->tz) {
        log_warn("trigger has an unusable cron schedule", "trigger=%s reason=\"%s\"", t->id,
                 err.msg);
        return -1;
    }
    t->kind = SCHED_CRON;
    return 0;
}

/* A number at a dotted path (int32, int64 or double), else def. */
static double s_get_double(const bson_t *doc, const char *dotted, double def)
{
    bson_iter_t it, sub;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, dotted, &sub))
        return def;
    if (BSON_ITER_HOLDS_DOUBLE(&sub) || BSON_ITER_HOLDS_INT32(&sub) || BSON_ITER_HOLDS_INT64(&sub))
        return bson_iter_as_double(&sub);
    return def;
}

/* Reads execution_config.retry_policy; absent fields take the defaults,
 * out-of-range ones (the gateway validates, the store may hold anything)
 * are clamped. */
static void s_read_retry(retry_policy_t *rp, const bson_t *def)
{
    *rp = RETRY_POLICY_DEFAULT;
    rp->max_retries = (int)bj_get_int(def, "execution_config.retry_policy.max_retries", 0);
    rp->max_retries = rp->max_retries < 0 ? 0 : rp->max_retries > 100 ? 100 : rp->max_retries;
    rp->initial_delay = s_get_double(def, "execution_config.retry_policy.initial_delay", 1.0);
    rp->multiplier = s_get_double(def, "execution_config.retry_policy.backoff_multiplier", 2.0);
    rp->max_delay = s_get_double(def, "execution_config.retry_policy.max_delay", 300.0);
    if (!(rp->initial_delay >= 0))
        rp->initial_delay = 0;
    if (!(rp->multiplier >= 1))
        rp->multiplier = 1;
    if (!(rp->max_delay >= 0))
        rp->max_delay = 0;
    bson_iter_t it, sub;
    if (bson_iter_init(&it, def) &&
        bson_iter_find_descendant(&it, "execution_config.retry_policy.jitter", &sub) &&
        BSON_ITER_HOLDS_BOOL(&sub))
        rp->jitter = bson_iter_bool(&sub);
}

/* Reads labels, notifications, overlap and misfire policies (validated by
 * the gateway; anything unexpected falls back to the defaults). */
static void s_read_policies(sched_t *s, conf_t *c, const bson_t *def, const char *id)
{
    const char *ov = bj_get_str(def, "execution_config.overlap_policy", "forbid");
    c->overlap = strcmp(ov, "allow") == 0        ? OVERLAP_ALLOW
                 : strcmp(ov, "replace") == 0    ? OVERLAP_REPLACE
                 : strcmp(ov, "buffer_one") == 0 ? OVERLAP_BUFFER_ONE
                                                 : OVERLAP_FORBID;
    const char *mp = bj_get_str(def, "trigger_config.misfire_policy", "fire_once");
    c->misfire = strcmp(mp, "fire_all") == 0 ? MISFIRE_FIRE_ALL
                 : strcmp(mp, "skip") == 0   ? MISFIRE_SKIP
                                             : MISFIRE_FIRE_ONCE;
    c->catchup_ms = bj_get_int(def, "trigger_config.catchup_window", 3600) * 1000;
    char labels[sizeof ((job_t *)0)->labels] = "";
    bson_iter_t it, sub;
    if (bson_iter_init(&it, def) &&
        bson_iter_find_descendant(&it, "execution_config.worker_labels", &sub) &&
        BSON_ITER_HOLDS_DOCUMENT(&sub) && bson_iter_recurse(&sub, &it)) {
        size_t len = 0;
        while (bson_iter_next(&it) && BSON_ITER_HOLDS_UTF8(&it))
            len += (size_t)snprintf(labels + len, len < sizeof labels ? sizeof labels - len : 0,
                                    "%s%s=%s", len ? "," : "", bson_iter_key(&it),
                                    bson_iter_utf8(&it, NULL));
        if (len >= sizeof labels)
            log_warn("worker_labels too long; ignored", "trigger=%s", id);
        if (len >= sizeof labels)
            labels[0] = '\0';
    }
    c->labels = s_intern(s, labels, sizeof labels);
    c->notify = NULL;
    if (bson_iter_init_find(&it, def, "notifications") && BSON_ITER_HOLDS_ARRAY(&it)) {
        json_t *all = bj_to_json(def);
        json_t *hooks = json_object_get(all, "notifications");
        if (json_array_size(hooks) > 0) {
            json_t *n = json_pack("{s:s, s:O}", "trigger_name", bj_get_str(def, "name", ""),
                                  "hooks", hooks);
            c->notify = n ? json_dumps(n, JSON_COMPACT) : NULL;
            json_decref(n);
        }
        json_decref(all);
    }
}

/* Reads the settings of trigger `id` from its definition into *c (its
 * notifications owned by c, until s_conf_get takes them). */
static void s_read_conf(sched_t *s, conf_t *c, const bson_t *def, const char *id)
{
    memset(c, 0, sizeof *c);
    c->task_type = s_intern(s, bj_get_str(def, "execution_config.task_type", "noop"),
                            sizeof ((job_t *)0)->task_type);
    c->owner = s_intern(s, bj_get_str(def, "owner", ""), 256);
    c->max_execution_time = (int)bj_get_int(def, "execution_config.max_execution_time", 0);
    c->priority = (int)bj_get_int(def, "execution_config.priority", 0);
    s_read_retry(&c->retry, def);
    s_read_policies(s, c, def, id);
    c->start_ms = bj_get_date(def, "schedule.start_at", 0);
    c->end_ms = bj_get_date(def, "schedule.end_at", 0);
    c->pol = CRON_DST_POLICY_DEFAULT;
    if (strcmp(bj_get_str(def, "schedule.kind", ""), "cron") == 0) {
        err_t err = {0}; /* an unusable zone is told when the schedule is read */
        c->tz = tz_get(bj_get_str(def, "schedule.timezone", "UTC"), &err);
        cron_dst_policy_parse(bj_get_str(def, "schedule.dst_gap", "fire_after"),
                              bj_get_str(def, "schedule.dst_overlap", "first"), &c->pol, &err);
    }
}

/* Sets t's settings to those of def, shared. */
static void s_set_conf(sched_t *s, trig_t *t, const bson_t *def)
{
    conf_t c;
    s_read_conf(s, &c, def, t->id);
    const conf_t *old = t->c;
    t->c = s_conf_get(s, &c);
    s_conf_put(s, old);
}

/* A trigger's stored state (trigger_state) as a load keeps it until it
 * reads the trigger: three times and the id. A load reads all of its
 * partitions' states first, and a copy of each document cost about 350
 * bytes: 1,000,000 of them at once after a restart. */
typedef struct {
    int64_t next, last, updated; /* next_fire_at, last_fire_at, updated_at; 0: none */
    char id[];                   /* its key in the load's table */
} state_t;

static void s_read_state(state_t *st, const bson_t *doc)
{
    st->next = bj_get_date(doc, "next_fire_at", 0);
    st->last = bj_get_date(doc, "last_fire_at", 0);
    st->updated = bj_get_date(doc, "updated_at", 0);
}

/* Builds or refreshes a trigger from its definition and optional state.
 * Returns the trigger, or NULL if it has nothing left to fire. */
static trig_t *s_upsert(sched_t *s, const bson_t *def, const state_t *state)
{
    const char *id = bj_get_str(def, "_id", NULL);
    int64_t part = bj_get_int(def, "partition", 0); /* read by partition: one held here */
    if (!id || strlen(id) >= 64 || part < 0 || part >= s->m->cfg->partitions)
        return NULL;
    int64_t version = bj_get_int(def, "version", 0);
    trig_t *t = s_idx_find(&s->by_id, id);
    if (t && t->version == version) {
        t->gen = s->gen;
        t->seen = s->pass;
        return t;
    }
    int fresh = t == NULL;
    if (fresh)
        t = s_trig_new(id);
    t->gen = s->gen;
    t->seen = s->pass;
    t->version = version;
    t->partition = (uint16_t)part;
    s_set_conf(s, t, def);
    s_set_params(t, NULL);
    bson_iter_t it, sub;
    if (bson_iter_init(&it, def) && bson_iter_find_descendant(&it, "execution_config.parameters", &sub) &&
        BSON_ITER_HOLDS_DOCUMENT(&sub)) {
        uint32_t len;
        const uint8_t *data;
        bson_t doc;
        bson_iter_document(&sub, &len, &data);
        if (bson_init_static(&doc, data, len)) {
            json_t *j = bj_to_json(&doc);
            s_set_params(t, json_dumps(j, JSON_COMPACT));
            json_decref(j);
        }
    }
    int64_t stored_next = state ? state->next : 0;
    int64_t stored_last = state ? state->last : 0;
    if (stored_last > t->saved_last)
        t->saved_last = stored_last;
    int64_t def_updated = bj_get_date(def, "updated_at", 0);
    int64_t next = -1;
    if (s_read_schedule(t, def) == 0) {
        /* A stored next_fire_at written after the definition's last change
         * and still on its schedule wins. Otherwise the schedule starts
         * from the change: no catch-up for times before it (a past
         * start_at, a resume), nor a fire at a replaced cron time. */
        int current = stored_next > 0 && state->updated >= def_updated;
        int on_grid = t->kind == SCHED_CRON
                          ? 1
                          : stored_next >= t->u.iv.first_ms &&
                                (stored_next - t->u.iv.first_ms) % t->u.iv.period_ms == 0;
        /* Fires already made since the change are not made again. */
        int64_t last = current ? stored_last : 0;
        int64_t from = last > def_updated ? last : def_updated;
        if (current && (stored_next == INT64_MAX || (t->c->end_ms && stored_next > t->c->end_ms)))
            next = -1; /* it already reached its end_at */
        else if (current && on_grid)
            next = stored_next;
        else if (t->kind == SCHED_CRON)
            next = s_next_after(t, from);
        else
            next = s_next_after(t, t->u.iv.first_ms - 1 > from ? t->u.iv.first_ms - 1 : from);
    }
    if (next < 0) {
        s_ended(s, id, version, t->partition);
        if (!fresh) {
            s_withdraw(s, t->id, NULL);
            s_remove(s, t);
        }
        else
            s_trig_free(s, &t);
        return NULL;
    }
    zhashx_delete(s->ended, id);
    t->ending = 0; /* changed while its last state waited: it goes on */
    t->next_ms = next;
    t->hn.key = s_look_at(s, next);
    if (!fresh)
        s_withdraw(s, t->id, t); /* its definition changed */
    if (fresh)
        s_idx_add(&s->by_id, t);
    heap_remove(&s->heap, &t->hn); /* if there (one ending is not) */
    heap_push(&s->heap, &t->hn);
    return t;
}

/* Runs `filter` on coll, LEASE_KEEP_EVERY documents a round trip, and
 * calls fn for each document until fn returns non-zero (then ERR_RETRY). */
static int s_query(store_t *st, const char *coll, bson_t *filter,
                   int (*fn)(void *arg, const bson_t *doc), void *arg, err_t *err)
{
    bson_t *opts = BCON_NEW("batchSize", BCON_INT32(LEASE_KEEP_EVERY));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(st, coll), filter, opts, NULL);
    bson_destroy(opts);
    const bson_t *doc;
    int stopped = 0;
    while (!stopped && mongoc_cursor_next(cur, &doc))
        stopped = fn(arg, doc);
    bson_error_t berr;
    int rc = 0;
    if (stopped)
        rc = err_set(err, ERR_RETRY, "cannot load schedule: the master is stopping");
    else if (mongoc_cursor_error(cur, &berr))
        rc = store_error(&berr, "load schedule", err);
    mongoc_cursor_destroy(cur);
    return rc;
}

typedef struct {
    sched_t *s;
    zhashx_t *states;
    size_t n; /* documents read */
} load_ctx_t;

static int s_collect_state(void *arg, const bson_t *doc)
{
    load_ctx_t *ctx = arg;
    const char *id = bj_get_str(doc, "_id", NULL);
    if (id) {
        size_t len = strlen(id);
        state_t *st = malloc(offsetof(state_t, id) + len + 1);
        memcpy(st->id, id, len + 1);
        s_read_state(st, doc);
        if (zhashx_insert(ctx->states, st->id, st) != 0)
            free(st); /* the same _id twice: cannot be */
    }
    return partitions_keep_reading(ctx->s->m, &ctx->n);
}

static int s_collect_def(void *arg, const bson_t *doc)
{
    load_ctx_t *ctx = arg;
    const char *id = bj_get_str(doc, "_id", "");
    s_upsert(ctx->s, doc, zhashx_lookup(ctx->states, id));
    return partitions_keep_reading(ctx->s->m, &ctx->n);
}

/* The load's table of states, keyed by each one's own id. */
static zhashx_t *s_states_new(void)
{
    zhashx_t *states = zhashx_new();
    zhashx_set_key_duplicator(states, NULL);
    zhashx_set_key_destructor(states, NULL);
    zhashx_set_destructor(states, s_item_free);
    return states;
}

static bson_t *s_partition_filter(const int *parts, int n, int active_only)
{
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", parts, n);
    if (active_only)
        BSON_APPEND_UTF8(filter, "status", "active");
    return filter;
}

int sched_load(sched_t *self, const int *parts, int n, err_t *err)
{
    if (n == 0)
        return 0;
    zhashx_t *states = s_states_new();
    bson_t *sf = s_partition_filter(parts, n, 0), *df = s_partition_filter(parts, n, 1);
    unsigned gen = ++self->gen; /* a reload during the load (a turn) starts a later one */
    for (int i = 0; i < n; i++) /* read whole here: a running reconcile pass leaves them */
        self->recon_parts[parts[i]] = 0;
    load_ctx_t ctx = {self, states, 0};
    int rc = s_query(self->m->store, "trigger_state", sf, s_collect_state, &ctx, err);
    if (rc == 0)
        rc = s_query(self->m->store, "triggers", df, s_collect_def, &ctx, err);
    if (rc == 0) {
        /* Sweep: triggers of these partitions not read since the load
         * began are gone (deleted or paused) and leave the schedule. The
         * others are looked at when their fires are due again: a turn of
         * the loop during the load put those read before it 100 ms on
         * (sched_fire_due: a partition being loaded fires nothing), and
         * with a catch-up to make, the triggers read after the turn came
         * first, batch after batch, to their last missed fire, while those
         * waited (at 1,000 fires a second a survivor's last gained
         * triggers fired 0.8 s after its first: docs/BENCHMARKS.md). */
        char loaded[self->m->cfg->partitions];
        memset(loaded, 0, sizeof loaded);
        for (int i = 0; i < n; i++)
            loaded[parts[i]] = 1;
        zlistx_t *gone = zlistx_new();
        for (size_t k = 0; k < self->by_id.cap; k++) {
            trig_t *t = self->by_id.v[k]; /* empty slots are NULL */
            if (!t || !loaded[t->partition])
                continue;
            if ((int)(t->gen - gen) < 0) {
                zlistx_add_end(gone, t);
            } else if (t->hn.idx != HEAP_NONE) {
                t->hn.key = s_look_at(self, t->next_ms);
                heap_update(&self->heap, &t->hn);
            }
        }
        for (trig_t *t = zlistx_first(gone); t; t = zlistx_next(gone)) {
            s_withdraw(self, t->id, NULL);
            s_remove(self, t);
        }
        zlistx_destroy(&gone);
    }
    bson_destroy(sf);
    bson_destroy(df);
    zhashx_destroy(&states);
    master_trim(); /* the states, read first, freed below the records */
    return rc;
}

/* Forgets the ended triggers of `partition`, or (-1) those of the
 * reconcile pass's partitions that the pass did not find (deleted). */
static void s_forget_ended(sched_t *self, int partition)
{
    zlistx_t *gone = zlistx_new();
    for (ended_t *e = zhashx_first(self->ended); e; e = zhashx_next(self->ended))
        if (partition >= 0 ? e->partition == partition
                           : e->partition >= 0 && e->partition < self->m->cfg->partitions &&
                                 self->recon_parts[e->partition] && e->seen != self->pass)
            zlistx_add_end(gone, strdup(zhashx_cursor(self->ended)));
    zlistx_set_destructor(gone, s_item_free);
    for (const char *id = zlistx_first(gone); id; id = zlistx_next(gone))
        zhashx_delete(self->ended, id);
    zlistx_destroy(&gone);
}

void sched_drop(sched_t *self, int partition)
{
    s_forget_ended(self, partition);
    self->recon_parts[partition] = 0;
    zlistx_t *gone = zlistx_new();
    for (size_t k = 0; k < self->by_id.cap; k++) {
        trig_t *t = self->by_id.v[k];
        if (t && t->partition == partition)
            zlistx_add_end(gone, t);
    }
    for (trig_t *t = zlistx_first(gone); t; t = zlistx_next(gone))
        s_remove(self, t);
    zlistx_destroy(&gone);
}

/* ---- snapshot records (master/snapshot.c) ----------------------------- */

/* A packed trigger record's fixed part; the id (id_len bytes) and the
 * parameters (params_len bytes; 0: "{}") follow it. The schedule is the
 * record's own union, bytes as they are in memory: snapshot.c writes a
 * probe cron with each snapshot and restores only where this binary
 * parses it to the same bytes. */
typedef struct {
    int64_t version, next_ms, saved_last;
    uint32_t conf, params_len;
    uint16_t id_len;
    uint8_t kind, next_flags;
    _Alignas(int64_t) unsigned char u[sizeof ((trig_t *)0)->u];
} rec_t;

static void s_conf_to_bson(const conf_t *c, bson_t *out)
{
    BSON_APPEND_UTF8(out, "task_type", c->task_type);
    BSON_APPEND_UTF8(out, "owner", c->owner);
    BSON_APPEND_UTF8(out, "labels", c->labels);
    if (c->notify)
        BSON_APPEND_UTF8(out, "notify", c->notify);
    if (c->tz)
        BSON_APPEND_UTF8(out, "tz", tz_name(c->tz));
    BCON_APPEND(out, "max_retries", BCON_INT32(c->retry.max_retries), "initial_delay",
                BCON_DOUBLE(c->retry.initial_delay), "multiplier", BCON_DOUBLE(c->retry.multiplier),
                "max_delay", BCON_DOUBLE(c->retry.max_delay), "jitter", BCON_BOOL(c->retry.jitter),
                "start_ms", BCON_INT64(c->start_ms), "end_ms", BCON_INT64(c->end_ms), "catchup_ms",
                BCON_INT64(c->catchup_ms), "max_execution_time", BCON_INT32(c->max_execution_time),
                "priority", BCON_INT32(c->priority), "gap", BCON_INT32(c->pol.gap), "dst_overlap",
                BCON_INT32(c->pol.overlap), "overlap", BCON_INT32(c->overlap), "misfire",
                BCON_INT32(c->misfire));
}

/* Reads settings written by s_conf_to_bson into *c (its notify the
 * caller's); -1 if malformed (an unknown zone). */
static int s_conf_from_bson(sched_t *s, const bson_t *doc, conf_t *c)
{
    memset(c, 0, sizeof *c);
    c->task_type = s_intern(s, bj_get_str(doc, "task_type", "noop"), sizeof ((job_t *)0)->task_type);
    c->owner = s_intern(s, bj_get_str(doc, "owner", ""), 256);
    c->labels = s_intern(s, bj_get_str(doc, "labels", ""), sizeof ((job_t *)0)->labels);
    const char *notify = bj_get_str(doc, "notify", NULL), *tz = bj_get_str(doc, "tz", NULL);
    err_t err = {0};
    if (tz && !(c->tz = tz_get(tz, &err)))
        return -1;
    c->retry.max_retries = (int)bj_get_int(doc, "max_retries", 0);
    c->retry.initial_delay = s_get_double(doc, "initial_delay", 1.0);
    c->retry.multiplier = s_get_double(doc, "multiplier", 2.0);
    c->retry.max_delay = s_get_double(doc, "max_delay", 300.0);
    bson_iter_t it;
    c->retry.jitter = bson_iter_init_find(&it, doc, "jitter") && bson_iter_as_bool(&it);
    c->start_ms = bj_get_int(doc, "start_ms", 0);
    c->end_ms = bj_get_int(doc, "end_ms", 0);
    c->catchup_ms = bj_get_int(doc, "catchup_ms", 0);
    c->max_execution_time = (int)bj_get_int(doc, "max_execution_time", 0);
    c->priority = (int)bj_get_int(doc, "priority", 0);
    c->pol.gap = bj_get_int(doc, "gap", 0) ? CRON_GAP_SKIP : CRON_GAP_FIRE_AFTER;
    c->pol.overlap = bj_get_int(doc, "dst_overlap", 0) ? CRON_OVERLAP_BOTH : CRON_OVERLAP_FIRST;
    c->overlap = (uint8_t)bj_get_int(doc, "overlap", OVERLAP_FORBID);
    c->misfire = (uint8_t)bj_get_int(doc, "misfire", MISFIRE_FIRE_ONCE);
    c->notify = notify ? strdup(notify) : NULL;
    return c->overlap <= OVERLAP_BUFFER_ONE && c->misfire <= MISFIRE_SKIP ? 0 : -1;
}

static size_t s_ptr_hash(const void *key)
{
    return (size_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
}

static int s_ptr_cmp(const void *a, const void *b)
{
    return a != b;
}

size_t sched_pack(sched_t *self, int partition, zchunk_t *records, bson_t *confs)
{
    zhashx_t *index = zhashx_new(); /* conf_t* -> 1 + its index in confs */
    zhashx_set_key_hasher(index, s_ptr_hash);
    zhashx_set_key_comparator(index, s_ptr_cmp);
    zhashx_set_key_duplicator(index, NULL);
    zhashx_set_key_destructor(index, NULL);
    size_t n = 0, nconfs = 0;
    for (size_t k = 0; k < self->by_id.cap; k++) {
        const trig_t *t = self->by_id.v[k];
        if (!t || t->partition != partition || t->hn.idx == HEAP_NONE)
            continue; /* another's, or ending (its state says so) */
        uintptr_t at = (uintptr_t)zhashx_lookup(index, t->c);
        if (!at) {
            char key[24];
            snprintf(key, sizeof key, "%zu", nconfs);
            bson_t doc;
            BSON_APPEND_DOCUMENT_BEGIN(confs, key, &doc);
            s_conf_to_bson(t->c, &doc);
            bson_append_document_end(confs, &doc);
            at = ++nconfs;
            zhashx_insert(index, t->c, (void *)at);
        }
        rec_t r;
        memset(&r, 0, sizeof r); /* its padding too: the bytes are written as they are */
        r.version = t->version;
        r.next_ms = t->next_ms;
        r.saved_last = t->saved_last;
        r.conf = (uint32_t)(at - 1);
        r.id_len = (uint16_t)strlen(t->id);
        r.kind = t->kind;
        r.next_flags = t->next_flags;
        r.params_len = t->parameters == s_empty_params ? 0 : (uint32_t)strlen(t->parameters);
        memcpy(r.u, &t->u, sizeof r.u);
        zchunk_extend(records, &r, sizeof r);
        zchunk_extend(records, t->id, r.id_len);
        if (r.params_len)
            zchunk_extend(records, t->parameters, r.params_len);
        n++;
    }
    zhashx_destroy(&index);
    return n;
}

/* The settings a snapshot's triggers point to, read; NULL if any is
 * malformed. *n: how many. */
static conf_t *s_confs_read(sched_t *s, const bson_t *confs, size_t *n)
{
    *n = bson_count_keys(confs);
    conf_t *v = calloc(*n ? *n : 1, sizeof *v);
    bson_iter_t it;
    size_t i = 0;
    if (bson_iter_init(&it, confs))
        while (i < *n && bson_iter_next(&it) && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            uint32_t len;
            const uint8_t *data;
            bson_t doc;
            bson_iter_document(&it, &len, &data);
            if (!bson_init_static(&doc, data, len) || s_conf_from_bson(s, &doc, &v[i]) < 0)
                break;
            i++;
        }
    if (i == *n)
        return v;
    for (size_t k = 0; k <= i && k < *n; k++)
        free(v[k].notify);
    free(v);
    return NULL;
}

/* What sched_unpack reads records into. */
typedef struct {
    const conf_t *confs;
    size_t nconfs;
    int64_t stale_before;
    zlistx_t *stale;
} unpack_t;

/* The trigger of a packed record at data (len bytes left), scheduled (or
 * its id added to u->stale); the record's length, or 0 if malformed. */
static size_t s_unpack_one(sched_t *s, int partition, const unpack_t *u, const uint8_t *data,
                           size_t len)
{
    rec_t r;
    if (len < sizeof r)
        return 0;
    memcpy(&r, data, sizeof r);
    size_t size = sizeof r + r.id_len + r.params_len;
    char id[64];
    if (r.id_len == 0 || r.id_len >= sizeof id || size > len || r.conf >= u->nconfs ||
        r.kind > SCHED_CRON || r.kind == SCHED_NONE)
        return 0;
    memcpy(id, data + sizeof r, r.id_len);
    id[r.id_len] = '\0';
    if (sched_partition(id, s->m->cfg->partitions) != partition)
        return 0;
    if (s_idx_find(&s->by_id, id))
        return size; /* reloaded meanwhile (a NOTIFY): that copy is newer */
    if (r.next_ms < u->stale_before) {
        zlistx_add_end(u->stale, id);
        return size;
    }
    trig_t *t = s_trig_new(id);
    conf_t c = u->confs[r.conf];
    c.notify = c.notify ? strdup(c.notify) : NULL;
    t->c = s_conf_get(s, &c);
    t->parameters = s_empty_params;
    if (r.params_len)
        s_set_params(t, strndup((const char *)data + sizeof r + r.id_len, r.params_len));
    t->version = r.version;
    t->next_ms = r.next_ms;
    t->saved_last = r.saved_last;
    t->kind = r.kind;
    t->next_flags = r.next_flags;
    t->partition = (uint16_t)partition;
    t->gen = s->gen;
    t->seen = s->pass;
    memcpy(&t->u, r.u, sizeof r.u);
    t->hn.key = s_look_at(s, t->next_ms);
    s_idx_add(&s->by_id, t);
    heap_push(&s->heap, &t->hn);
    return size;
}

long sched_unpack(sched_t *self, int partition, const bson_t *confs, const uint8_t *data,
                  size_t len, int64_t stale_before, zlistx_t *stale)
{
    size_t nconfs;
    conf_t *v = s_confs_read(self, confs, &nconfs);
    if (!v)
        return -1;
    unpack_t u = {v, nconfs, stale ? stale_before : INT64_MIN, stale};
    size_t stale0 = stale ? zlistx_size(stale) : 0;
    self->recon_parts[partition] = 0; /* restored whole: a running reconcile pass leaves it */
    long n = 0;
    size_t at = 0, size = 1;
    while (at < len && (size = s_unpack_one(self, partition, &u, data + at, len - at))) {
        at += size;
        if (++n % 4096 == 0)
            partitions_alive(self->m);
    }
    for (size_t i = 0; i < nconfs; i++)
        free(v[i].notify);
    free(v);
    return size ? n - (long)(stale ? zlistx_size(stale) - stale0 : 0) : -1;
}

/* ---- reconcile -------------------------------------------------------- */

/* A NOTIFY can be lost (a gateway that dies after its write), so a master
 * re-reads its partitions' triggers now and then. A whole read is a full
 * scan on FerretDB (about 0.3 ms a document: 3.2 s for 10,000 triggers),
 * which on the loop thread held every fire that long. So a pass reads ids
 * and versions only, a batch per loop turn between fires, and reads whole
 * just the triggers it finds new or changed: those of a batch together,
 * by `_id` `$in` (every find is a scan there, so one per trigger would
 * cost a scan each). At its end, the triggers of the partitions it swept
 * that it did not find are gone (deleted or paused); one loaded or
 * reloaded meanwhile counts as found. */
void sched_reconcile(sched_t *self, const int *parts, int n)
{
    if (self->recon || n == 0 || clock_mono_ms() < self->recon_next)
        return; /* a pass still running is not restarted; nor one begun too soon */
    memset(self->recon_parts, 0, (size_t)self->m->cfg->partitions);
    for (int i = 0; i < n; i++)
        self->recon_parts[parts[i]] = 1;
    self->pass++;
    self->recon_began = clock_mono_ms();
    self->recon_spent = 0;
    bson_t *filter = s_partition_filter(parts, n, 1);
    bson_t *opts = BCON_NEW("projection", "{", "version", BCON_INT32(1), "partition", BCON_INT32(1),
                            "}", "batchSize", BCON_INT32(RECONCILE_BATCH));
    self->recon = mongoc_collection_find_with_opts(store_coll(self->m->store, "triggers"), filter,
                                                   opts, NULL);
    bson_destroy(filter);
    bson_destroy(opts);
}

int sched_reconciling(const sched_t *self)
{
    return self->recon != NULL;
}

static void s_reconcile_one(sched_t *self, const bson_t *doc)
{
    const char *id = bj_get_str(doc, "_id", NULL);
    int p = (int)bj_get_int(doc, "partition", -1);
    if (!id || p < 0 || p >= self->m->cfg->partitions || !self->recon_parts[p])
        return;
    trig_t *t = s_idx_find(&self->by_id, id);
    ended_t *e = t ? NULL : zhashx_lookup(self->ended, id);
    if (t && t->version == bj_get_int(doc, "version", 0))
        t->seen = self->pass;
    else if (e && e->version == bj_get_int(doc, "version", 0))
        e->seen = self->pass; /* ended here, and unchanged since */
    else if (strlen(id) < sizeof self->stale[0]) /* new or changed, and its NOTIFY never came */
        snprintf(self->stale[self->nstale++], sizeof self->stale[0], "%s", id);
}

/* Reads whole the triggers the pass found new or changed, with their
 * states, and schedules them as sched_load would. One that is no longer
 * active by now is not found, and leaves at the pass's end. */
static int s_reconcile_stale(sched_t *self)
{
    if (self->nstale == 0)
        return 0;
    const char *ids[RECONCILE_BATCH];
    for (size_t i = 0; i < self->nstale; i++)
        ids[i] = self->stale[i];
    zhashx_t *states = s_states_new();
    bson_t *sf = bson_new(), *df = bson_new();
    bj_append_in_utf8(sf, "_id", ids, self->nstale);
    bj_append_in_utf8(df, "_id", ids, self->nstale);
    BSON_APPEND_UTF8(df, "status", "active");
    load_ctx_t ctx = {self, states, 0};
    err_t err = {0};
    int rc = s_query(self->m->store, "trigger_state", sf, s_collect_state, &ctx, &err);
    if (rc == 0)
        rc = s_query(self->m->store, "triggers", df, s_collect_def, &ctx, &err);
    if (rc == 0)
        log_info("reconcile found triggers new or changed", "count=%zu", self->nstale);
    else
        log_warn("reconcile pass broken off; the next one starts over", "reason=\"%s\"", err.msg);
    bson_destroy(sf);
    bson_destroy(df);
    zhashx_destroy(&states);
    self->nstale = 0;
    return rc;
}

/* Ends the pass: if it read everything (`complete`, and the cursor
 * ended without an error), what it did not find leaves the schedule. */
static void s_reconcile_end(sched_t *self, int complete)
{
    bson_error_t berr;
    if (complete && mongoc_cursor_error(self->recon, &berr)) {
        log_warn("reconcile pass broken off; the next one starts over", "reason=\"%s\"",
                 berr.message);
        complete = 0;
    } else if (complete) {
        zlistx_t *gone = zlistx_new();
        for (size_t k = 0; k < self->by_id.cap; k++) {
            trig_t *t = self->by_id.v[k];
            if (t && self->recon_parts[t->partition] && t->seen != self->pass)
                zlistx_add_end(gone, t);
        }
        for (trig_t *t = zlistx_first(gone); t; t = zlistx_next(gone)) {
            log_info("trigger unscheduled", "trigger=%s reason=reconcile", t->id);
            s_withdraw(self, t->id, NULL);
            s_remove(self, t);
        }
        zlistx_destroy(&gone);
        s_forget_ended(self, -1); /* deleted since */
    }
    mongoc_cursor_destroy(self->recon);
    self->recon = NULL;
    int64_t now = clock_mono_ms();
    self->recon_next = now + RECONCILE_SPACING * self->recon_spent;
    stats_reconcile(self->recon_spent, complete);
    log_debug("reconcile pass ended", "complete=%d read_ms=%lld next_in_ms=%lld", complete,
              (long long)self->recon_spent, (long long)(self->recon_next - now));
}

/* One turn of the running pass: 1 if it read everything, -1 if it broke
 * off, 0 if it goes on next turn. */
static int s_reconcile_turn(sched_t *self, int64_t until)
{
    const bson_t *doc;
    do {
        if (!mongoc_cursor_next(self->recon, &doc))
            return s_reconcile_stale(self) == 0 ? 1 : -1;
        s_reconcile_one(self, doc);
        if (self->nstale == RECONCILE_BATCH && s_reconcile_stale(self) < 0)
            return -1;
    } while (clock_mono_ms() < until);
    return s_reconcile_stale(self) < 0 ? -1 : 0;
}

void sched_reconcile_step(sched_t *self, int64_t until, int busy)
{
    int64_t t0 = clock_mono_ms(), end = t0 + RECONCILE_STEP_MS;
    if (!self->recon || (busy && end - self->recon_began < RECONCILE_PATIENCE_MS))
        return;
    int rc = s_reconcile_turn(self, until < end ? until : end);
    self->recon_spent += clock_mono_ms() - t0;
    if (rc != 0)
        s_reconcile_end(self, rc > 0);
}

void sched_reload(sched_t *self, const char *trigger_id)
{
    int p = sched_partition(trigger_id, self->m->cfg->partitions);
    if (!partitions_owned(self->m, p))
        return;
    bson_t def, state;
    int have_def = store_get_by_id(self->m->store, "triggers", trigger_id, &def, NULL);
    if (have_def < 0)
        return; /* the periodic reconcile will catch up */
    trig_t *t = s_idx_find(&self->by_id, trigger_id);
    if (have_def == 0 || strcmp(bj_get_str(&def, "status", ""), "active") != 0) {
        s_withdraw(self, trigger_id, NULL);
        if (t)
            s_remove(self, t);
        if (have_def == 0) { /* deleted: its schedule state goes too */
            bson_t *filter = BCON_NEW("_id", BCON_UTF8(trigger_id));
            mongoc_collection_delete_one(store_coll(self->m->store, "trigger_state"), filter, NULL,
                                         NULL, NULL);
            bson_destroy(filter);
        }
        if (have_def)
            bson_destroy(&def);
        log_info("trigger unscheduled", "trigger=%s", trigger_id);
        return;
    }
    state_t st;
    int have_state = store_get_by_id(self->m->store, "trigger_state", trigger_id, &state, NULL);
    if (have_state == 1)
        s_read_state(&st, &state);
    self->gen++;
    if (t)
        t->gen = self->gen;
    t = s_upsert(self, &def, have_state == 1 ? &st : NULL);
    if (t) {
        char at[40];
        clock_format_iso(t->next_ms, at, sizeof at);
        log_info("trigger scheduled", "trigger=%s next_fire_at=%s", trigger_id, at);
    }
    bson_destroy(&def);
    if (have_state == 1)
        bson_destroy(&state);
}

/* ---- firing ----------------------------------------------------------- */

/* The job document of a fire: queued (to run) or skipped with a reason. */
static bson_t *s_job_doc(sched_t *s, const trig_t *t, int64_t sf, int misfire, int dst_flags,
                         const char *skip_reason, int notice)
{
    master_t *m = s->m;
    int64_t now = clock_wall_ms();
    char job_id[PROTO_ID_MAX];
    sched_job_id(job_id, sizeof job_id, t->id, sf);
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(job_id), "trigger_id", BCON_UTF8(t->id), "owner",
                           BCON_UTF8(t->c->owner), "partition", BCON_INT32(t->partition), "kind",
                           BCON_UTF8("scheduled"), "task_type", BCON_UTF8(t->c->task_type),
                           "scheduled_for", BCON_DATE_TIME(sf), "status",
                           BCON_UTF8(skip_reason ? "skipped" : "queued"), "attempt", BCON_INT32(1),
                           "created_at", BCON_DATE_TIME(now), "run_at", BCON_DATE_TIME(sf), "epoch",
                           BCON_INT64(m->leases[t->partition].epoch), "master",
                           BCON_UTF8(m->cfg->node_id), "misfire", BCON_BOOL(misfire));
    if (skip_reason) {
        BSON_APPEND_UTF8(doc, "skip_reason", skip_reason);
        BSON_APPEND_DATE_TIME(doc, "finished_at", now);
        /* A notice goes out about it: marked until delivered (or given up). */
        if (notice && alert_hooks_want(t->c->notify, "skipped"))
            BSON_APPEND_BOOL(doc, "notify_pending", true);
    }
    if (dst_flags & CRON_FIRE_GAP_SHIFTED)
        BSON_APPEND_UTF8(doc, "dst", "gap_shifted");
    else if (dst_flags & CRON_FIRE_OVERLAP_SECOND)
        BSON_APPEND_UTF8(doc, "dst", "overlap_second");
    if (t->parameters && !skip_reason) {
        json_t *p = json_loads(t->parameters, 0, NULL);
        if (p)
            bj_append(doc, "parameters", p);
        json_decref(p);
    }
    return doc;
}

/* Inserts docs[0..n) into coll in one unordered insert_many. st[i]: 1
 * inserted, 0 refused by _id (a job: already claimed, G1), -1 not written
 * (store error). Returns how many were inserted. */
static size_t s_insert_many(sched_t *s, const char *coll, bson_t **docs, size_t n, int *st,
                            const char *op, err_t *err)
{
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
    bson_t reply;
    bson_error_t berr;
    int64_t t0 = zclock_usecs();
    master_write_begin(s->m);
    bool ok = mongoc_collection_insert_many(store_coll(s->m->store, coll), (const bson_t **)docs,
                                            n, opts, &reply, &berr);
    master_write_end(s->m);
    for (size_t i = 0; i < n; i++)
        st[i] = 1;
    bson_iter_t it, arr;
    int per_doc = 0; /* the reply tells which documents were refused */
    if (!ok && bson_iter_init_find(&it, &reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        per_doc = 1;
        while (bson_iter_next(&arr)) {
            bson_t e;
            uint32_t len;
            const uint8_t *data;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
                continue;
            bson_iter_document(&arr, &len, &data);
            if (!bson_init_static(&e, data, len))
                continue;
            int64_t i = bj_get_int(&e, "index", -1);
            if (i >= 0 && (size_t)i < n)
                st[i] = bj_get_int(&e, "code", 0) == 11000 ? 0 : -1;
        }
    }
    if (!ok && !per_doc) /* no per-document answer: nothing is known written */
        for (size_t i = 0; i < n; i++)
            st[i] = -1;
    size_t inserted = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        inserted += st[i] == 1;
        failed += st[i] < 0;
    }
    stats_store_op(op, zclock_usecs() - t0, failed > 0);
    if (failed)
        store_error(&berr, coll, err);
    bson_destroy(&reply);
    bson_destroy(opts);
    return inserted;
}

/* Tells the trigger's webhooks that asked for it about skipped fires. */
static void s_notify_skipped(sched_t *s, const trig_t *t, int64_t sf, const char *reason,
                             long count)
{
    if (!t->c->notify)
        return;
    char job_id[PROTO_ID_MAX];
    sched_job_id(job_id, sizeof job_id, t->id, sf);
    notice_t n = {.event = "skipped", .job_id = job_id, .trigger_id = t->id,
                  .task_type = t->c->task_type, .notify = t->c->notify, .status = "skipped",
                  .attempt = 1, .scheduled_for = sf, .skip_reason = reason, .skipped = count};
    alert_notify(s->m->alert, &n);
}

/* Records the fires from `from` (a scheduled time) up to but not including
 * `until` as skipped: their documents join the pass's skip records, which
 * s_flush_skips writes in one unordered insert (already claimed ones are
 * refused by _id and ignored). Returns the first fire >= until, or -1. */
static int64_t s_record_skipped(sched_t *s, trig_t *t, int64_t from, int64_t until,
                                const char *reason)
{
    skip_run_t run = {.t = t, .reason = reason, .from = from, .first = s->nskips};
    int64_t sf = from;
    while (sf >= 0 && sf < until) {
        if (run.n < MAX_SKIP_RECORDS) {
            if (s->nskips == s->skips_cap) {
                s->skips_cap = s->skips_cap ? 2 * s->skips_cap : 256;
                s->skips = realloc(s->skips, s->skips_cap * sizeof *s->skips);
            }
            s->skips[s->nskips++] = s_job_doc(s, t, sf, 1, 0, reason, run.n == 0);
            run.n++;
        }
        else
            run.more++;
        sf = s_next_after(t, sf);
    }
    if (run.more)
        log_warn("more fires skipped than recorded one by one", "trigger=%s unrecorded=%ld reason=%s",
                 t->id, run.more, reason);
    if (run.n) {
        if (s->nruns == s->runs_cap) {
            s->runs_cap = s->runs_cap ? 2 * s->runs_cap : 64;
            s->runs = realloc(s->runs, s->runs_cap * sizeof *s->runs);
        }
        s->runs[s->nruns++] = run;
    }
    return sf;
}

/* The jobs just written (st[i] == 1) are this master's: a takeover scan
 * of their partitions leaves them out (dispatch_claimed). */
static void s_note_claims(sched_t *s, bson_t **docs, const int *st, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (st[i] == 1)
            dispatch_claimed(s->m->disp, docs[i]);
}

/* Writes the skip records gathered so far, one insert for all of them
 * (a misfire each, one by one, cost a master behind its fires one store
 * round trip per late trigger). */
static void s_flush_skips(sched_t *s)
{
    if (!s->nskips)
        return;
    int *st = malloc(s->nskips * sizeof *st);
    err_t err = {0};
    s_insert_many(s, "jobs", s->skips, s->nskips, st, "insert_skipped", &err);
    s_note_claims(s, s->skips, st, s->nskips);
    if (err.msg[0])
        log_warn("cannot record skipped fires", "fires=%zu reason=\"%s\"", s->nskips, err.msg);
    for (size_t r = 0; r < s->nruns; r++) {
        skip_run_t *run = &s->runs[r];
        size_t inserted = 0;
        for (size_t i = run->first; i < run->first + run->n; i++)
            inserted += st[i] == 1;
        /* Refused ones were claimed already (run, or recorded before). */
        if (inserted)
            stats_fires_skipped(run->reason, inserted);
        if (st[run->first] == 1) /* one notice for the lot, on the first one's job (marked) */
            s_notify_skipped(s, run->t, run->from, run->reason, (long)inserted + run->more);
        log_info("fires skipped", "trigger=%s count=%zu reason=%s", run->t->id, inserted,
                 run->reason);
    }
    for (size_t i = 0; i < s->nskips; i++)
        bson_destroy(s->skips[i]);
    free(st);
    s->nskips = s->nruns = 0;
}

/* A trigger's first state document, for an insert. */
static bson_t *s_state_doc(const trig_t *t, int64_t last_sf)
{
    return BCON_NEW("_id", BCON_UTF8(t->id), "partition", BCON_INT32(t->partition),
                    "next_fire_at", BCON_DATE_TIME(t->next_ms), "last_fire_at",
                    BCON_DATE_TIME(last_sf), "updated_at", BCON_DATE_TIME(clock_wall_ms()));
}

/* Saves t's state now, by one upsert. Returns 0 if written, else -1. */
static int s_save_state(sched_t *s, trig_t *t, int64_t last_sf)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(t->id));
    bson_t *update = BCON_NEW("$set", "{", "partition", BCON_INT32(t->partition), "next_fire_at",
                              BCON_DATE_TIME(t->next_ms), "last_fire_at", BCON_DATE_TIME(last_sf),
                              "updated_at", BCON_DATE_TIME(clock_wall_ms()), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t berr;
    int64_t t0 = zclock_usecs();
    master_write_begin(s->m);
    bool ok = mongoc_collection_update_one(store_coll(s->m->store, "trigger_state"), filter,
                                           update, opts, NULL, &berr);
    master_write_end(s->m);
    stats_store_op("save_state", zclock_usecs() - t0, !ok);
    if (ok && last_sf > t->saved_last && last_sf != INT64_MAX)
        t->saved_last = last_sf;
    if (!ok)
        log_warn("cannot save trigger state", "trigger=%s reason=\"%s\"", t->id, berr.message);
    bson_destroy(filter);
    bson_destroy(update);
    bson_destroy(opts);
    return ok ? 0 : -1;
}

/* Marks t's state to be saved with last_fire_at = last (the newest fire
 * claimed or recorded) and its next_fire_at as it will be then. */
static void s_unsaved(sched_t *s, trig_t *t, int64_t last)
{
    unsaved_t *u = zhashx_lookup(s->unsaved, t->id);
    if (!u) {
        u = malloc(sizeof *u);
        *u = (unsaved_t){t, last, clock_mono_ms()};
        zhashx_insert(s->unsaved, t->id, u);
        if (u->since < s->unsaved_oldest)
            s->unsaved_oldest = u->since;
    }
    if (last > u->last)
        u->last = last;
}

/* u's state is saved (u goes); a trigger that fired its last leaves now. */
static void s_saved(sched_t *s, unsaved_t *u)
{
    trig_t *t = u->t;
    zhashx_delete(s->unsaved, t->id);
    if (t->ending)
        s_end(s, t);
}

/* Saves the same fire times in the existing states of group[0..k), by
 * `_id` (store_update_by_ids). (An update_many by `_id` `$in` was one
 * round trip, but FerretDB pushes down only an `_id` equality and
 * decoded every state for it: 105 ms for 256 of 1,000.) Returns 0 if
 * every one was written, else -1 (the caller saves them one by one). */
static int s_save_group(sched_t *s, unsaved_t **group, size_t k)
{
    const char *ids[k];
    bson_t *same[k];
    int64_t last_sf = group[0]->last;
    bson_t *update = BCON_NEW("$set", "{", "next_fire_at", BCON_DATE_TIME(group[0]->t->next_ms),
                              "last_fire_at", BCON_DATE_TIME(last_sf), "updated_at",
                              BCON_DATE_TIME(clock_wall_ms()), "}");
    for (size_t i = 0; i < k; i++) {
        ids[i] = group[i]->t->id;
        same[i] = update;
    }
    bson_error_t berr = {0};
    int64_t matched = 0, t0 = zclock_usecs();
    master_write_begin(s->m);
    bool ok = store_update_by_ids(s->m->store, "trigger_state", ids, same, k, &matched, &berr) == k;
    master_write_end(s->m);
    bson_destroy(update);
    stats_store_op("save_states", zclock_usecs() - t0, !ok);
    if (!ok)
        log_warn("cannot save trigger states", "triggers=%zu reason=\"%s\"", k, berr.message);
    else if (matched != (int64_t)k) /* some state is gone: each one on its own */
        ok = false;
    if (ok)
        for (size_t i = 0; i < k; i++)
            if (last_sf > group[i]->t->saved_last)
                group[i]->t->saved_last = last_sf;
    return ok ? 0 : -1;
}

/* Applies the misfire policy to a late fire at t->next_ms. Returns the
 * scheduled time to run now, or -1 if nothing runs (policy skip, or all
 * missed fires were outside the catch-up window and none is due). */
static int64_t s_misfire(sched_t *s, trig_t *t, int64_t now)
{
    int64_t sf = t->next_ms;
    switch (t->c->misfire) {
    case MISFIRE_SKIP:
        t->next_ms = s_record_skipped(s, t, sf, now + 1, "misfire_skipped");
        return -1;
    case MISFIRE_FIRE_ALL: {
        /* Every missed fire within the window runs, oldest first; the loop
         * in sched_fire_due brings the next one round at once. */
        int64_t first = s_record_skipped(s, t, sf, now - t->c->catchup_ms,
                                         "misfire_outside_catchup_window");
        if (first < 0 || first > now) {
            t->next_ms = first;
            return -1;
        }
        return first;
    }
    default: { /* fire_once: one run, at the latest missed time */
        int64_t latest = s_latest_missed(t, sf, now);
        s_record_skipped(s, t, sf, latest, "misfire_coalesced");
        return latest;
    }
    }
}

/* Decides, by overlap policy, whether a fire runs now, waits (buffer_one)
 * or is skipped. Returns the skip reason or NULL; *buffer set for waiting. */
static const char *s_overlap(sched_t *s, const trig_t *t, int *buffer)
{
    *buffer = 0;
    if (dispatch_active(s->m->disp, t->id) == 0)
        return NULL;
    switch (t->c->overlap) {
    case OVERLAP_ALLOW:
        return NULL;
    case OVERLAP_REPLACE:
        dispatch_cancel_trigger(s->m->disp, t->id, "replaced");
        return NULL;
    case OVERLAP_BUFFER_ONE:
        if (dispatch_has_buffered(s->m->disp, t->id))
            return "overlap";
        *buffer = 1;
        return NULL;
    default:
        return "overlap";
    }
}

/* Gives job what a trigger's settings say of how its jobs run. */
static void s_job_settings(job_t *job, const conf_t *c)
{
    snprintf(job->labels, sizeof job->labels, "%s", c->labels);
    job->priority = c->priority;
    job->max_execution_time = c->max_execution_time;
    job->retry = c->retry;
    free(job->notify);
    job->notify = c->notify ? strdup(c->notify) : NULL;
}

static job_t *s_new_job(const trig_t *t, int64_t sf)
{
    job_t *job = calloc(1, sizeof *job);
    sched_job_id(job->id, sizeof job->id, t->id, sf);
    snprintf(job->trigger_id, sizeof job->trigger_id, "%s", t->id);
    snprintf(job->task_type, sizeof job->task_type, "%s", t->c->task_type);
    job->partition = t->partition;
    job->attempt = 1;
    job->scheduled_for = sf;
    job->parameters = t->parameters ? strdup(t->parameters) : NULL;
    s_job_settings(job, t->c);
    return job;
}

/* A due fire between its decision and its claim: sched_fire_due decides
 * a batch of fires, claims them in one insert, then dispatches them. */
typedef struct {
    trig_t *t;
    int64_t missed;     /* t->next_ms when it fell due */
    int missed_flags;   /* t->next_flags then */
    int64_t sf;         /* the scheduled time that runs */
    int64_t next;       /* the fire after it, -1 none */
    int misfire;
    int buffer;         /* buffer_one: held behind the running job */
    const char *skip;   /* recorded skipped (overlap), or NULL */
    bson_t *doc;        /* its job document */
} fire_t;

/* At most this many fires are claimed by one insert. */
#define FIRE_BATCH 256
/* Fewer triggers than this with the same fire times are saved one by one. */
#define SAVE_GROUP_MIN 8
/* At most this many states are saved by one store call: a group update
 * costs the store a pass per document (about 7 ms each at 1,000 states on
 * a loaded FerretDB/SQLite), and the loop waits for it. */
#define SAVE_CHUNK 64
/* A pass of sched_fire_due stops deciding fires past this many skip
 * records (one trigger's misfire may add up to MAX_SKIP_RECORDS). */
#define SKIPS_PER_PASS 1024

/* Decides what t's due fire does: the misfire policy, then the overlap
 * policy; moves t in the heap to its next fire. Returns 1 with *f filled
 * if a job document is to be claimed, 0 if nothing runs now. */
static int s_fire_decide(sched_t *s, trig_t *t, int64_t now, fire_t *f)
{
    int64_t missed = t->next_ms;
    int missed_flags = t->next_flags;
    if (now < missed && t->c->overlap != OVERLAP_ALLOW && dispatch_active(s->m->disp, t->id)) {
        t->hn.key = missed; /* its overlap policy decides at its time */
        heap_update(&s->heap, &t->hn);
        return 0;
    }
    int misfire = now - missed > MISFIRE_GRACE_MS;
    int dst_flags = misfire ? 0 : t->next_flags;
    int64_t sf = misfire ? s_misfire(s, t, now) : missed;
    if (sf < 0) { /* nothing runs now; t->next_ms was moved on */
        if (t->next_ms < 0) {
            t->next_ms = INT64_MAX;
            s_flush_skips(s); /* recorded before the state that says they were */
            s_save_state(s, t, missed);
            s_end(s, t);
            return 0;
        }
        t->hn.key = s_look_at(s, t->next_ms);
        s_unsaved(s, t, missed);
        heap_update(&s->heap, &t->hn);
        return 0;
    }
    *f = (fire_t){.t = t, .missed = missed, .missed_flags = missed_flags, .sf = sf,
                  .misfire = misfire};
    f->skip = s_overlap(s, t, &f->buffer);
    f->doc = s_job_doc(s, t, sf, misfire, dst_flags, f->skip, 1);
    f->next = s_next_after(t, sf);
    t->hn.key = f->next < 0 ? INT64_MAX : s_look_at(s, f->next); /* out of the way until claimed */
    heap_update(&s->heap, &t->hn);
    return 1;
}

/* After the claim: dispatches (or records the skip of) a claimed fire and
 * saves the trigger's state; a fire not written is looked at again soon. */
static void s_fire_done(sched_t *s, fire_t *f, int claimed, const err_t *err, int64_t now)
{
    trig_t *t = f->t;
    int64_t sf = f->sf;
    bson_destroy(f->doc);
    if (claimed < 0) {
        /* Store unreachable: try again shortly; the lease deadline stops
         * us if it stays away (G4, G6). */
        log_warn("cannot claim fire", "trigger=%s reason=\"%s\"", t->id, err->msg);
        t->next_ms = f->missed;
        t->next_flags = f->missed_flags;
        t->hn.key = now + 250;
        heap_update(&s->heap, &t->hn);
        return;
    }
    if (claimed && f->skip) {
        log_info("fire skipped", "trigger=%s scheduled_for=%lld reason=%s", t->id, (long long)sf,
                 f->skip);
        stats_fires_skipped(f->skip, 1);
        char job_id[PROTO_ID_MAX];
        sched_job_id(job_id, sizeof job_id, t->id, sf);
        alert_fire_skipped(s->m->alert, job_id, t->id, t->c->task_type, sf, f->skip);
        s_notify_skipped(s, t, sf, f->skip, 1);
    } else if (claimed) {
        int64_t lag = clock_wall_ms() - sf;
        stats_claim_lag(lag > 0 ? lag : 0); /* claimed ahead: none */
        job_t *job = s_new_job(t, sf);
        log_debug("fire claimed", "trigger=%s job=%s misfire=%d", t->id, job->id, f->misfire);
        if (f->buffer && dispatch_buffer(s->m->disp, &job) == 0)
            log_info("fire buffered behind the running job", "trigger=%s scheduled_for=%lld", t->id,
                     (long long)sf);
        else
            dispatch_submit(s->m->disp, &job);
    } else {
        log_info("fire already claimed elsewhere", "trigger=%s scheduled_for=%lld", t->id,
                 (long long)sf);
    }
    if (f->next < 0) { /* saved with the batch's states, then removed */
        t->next_ms = INT64_MAX;
        return;
    }
    t->next_ms = f->next; /* its heap key already is */
}

void sched_run_manual(sched_t *self, const char *trigger_id, const char *job_id)
{
    master_t *m = self->m;
    int p = sched_partition(trigger_id, m->cfg->partitions);
    if (!partitions_owned(m, p) || dispatch_active_job(m->disp, job_id))
        return;
    bson_t doc, def;
    if (store_get_job(m->store, job_id, &doc, NULL) != 1)
        return;
    if (strcmp(bj_get_str(&doc, "status", ""), "queued") != 0) {
        bson_destroy(&doc);
        return;
    }
    /* The trigger's policies: from the schedule, or (paused, not scheduled
     * here) from its definition. */
    trig_t *tmp = NULL, *t = s_idx_find(&self->by_id, trigger_id);
    if (!t) {
        t = tmp = s_trig_new(trigger_id);
        int have = store_get_by_id(m->store, "triggers", trigger_id, &def, NULL) == 1;
        if (!have)
            bson_init(&def); /* gone: the defaults */
        s_set_conf(self, t, &def);
        bson_destroy(&def);
    }
    job_t *job = calloc(1, sizeof *job);
    snprintf(job->id, sizeof job->id, "%s", job_id);
    snprintf(job->trigger_id, sizeof job->trigger_id, "%s", trigger_id);
    snprintf(job->task_type, sizeof job->task_type, "%s", bj_get_str(&doc, "task_type", "noop"));
    job->partition = p;
    job->attempt = 1;
    job->scheduled_for = bj_get_date(&doc, "scheduled_for", clock_wall_ms());
    s_job_settings(job, t->c);
    job->parameters = job_parameters_json(&doc);
    bson_iter_t it;
    int forced = 0;
    if (bson_iter_init_find(&it, &doc, "force_execution") && BSON_ITER_HOLDS_BOOL(&it))
        forced = bson_iter_bool(&it);
    bson_destroy(&doc);
    int buffer = 0;
    const char *skip = forced ? NULL : s_overlap(self, t, &buffer);
    if (skip) {
        /* The notice is queued first: the skip record marks the job while
         * it is on its way (deliveries start in alert_tick, after). */
        notice_t n = {.event = "skipped", .job_id = job_id, .trigger_id = trigger_id,
                      .task_type = job->task_type, .notify = job->notify, .status = "skipped",
                      .attempt = 1, .scheduled_for = job->scheduled_for, .skip_reason = skip,
                      .skipped = 1};
        int notify = alert_notify(m->alert, &n) > 0;
        bson_t *filter = BCON_NEW("_id", BCON_UTF8(job_id), "status", BCON_UTF8("queued"));
        bson_t *update = BCON_NEW("$set", "{", "status", BCON_UTF8("skipped"), "skip_reason",
                                  BCON_UTF8(skip), "finished_at", BCON_DATE_TIME(clock_wall_ms()),
                                  "notify_pending", BCON_BOOL(notify), "}");
        mongoc_collection_update_one(store_coll(m->store, "jobs"), filter, update, NULL, NULL,
                                     NULL);
        bson_destroy(filter);
        bson_destroy(update);
        log_info("manual run skipped", "job=%s reason=%s", job_id, skip);
        stats_fires_skipped(skip, 1);
        job_destroy(&job);
    } else if (buffer && dispatch_buffer(m->disp, &job) == 0) {
        log_info("manual run buffered behind the running job", "job=%s", job_id);
    } else {
        log_info("manual run queued", "job=%s force=%d", job_id, forced);
        dispatch_submit(m->disp, &job);
    }
    s_trig_free(self, &tmp);
}

int64_t sched_saved_last_fire(sched_t *self, const char *trigger_id)
{
    trig_t *t = s_idx_find(&self->by_id, trigger_id);
    return t ? t->saved_last : -1;
}

const char *sched_trigger_notify(sched_t *self, const char *trigger_id)
{
    trig_t *t = s_idx_find(&self->by_id, trigger_id);
    return t ? t->c->notify : NULL;
}

int sched_fill_job(sched_t *self, job_t *job)
{
    trig_t *t = s_idx_find(&self->by_id, job->trigger_id);
    if (!t)
        return -1;
    s_job_settings(job, t->c);
    return 0;
}

/* Unsaved states in the order they are saved in: first states (no stored
 * state yet) together, then by (last, next) fire times, so that triggers
 * on one grid come next to one another. */
static int s_cmp_unsaved(const void *a, const void *b)
{
    const unsaved_t *u = *(unsaved_t *const *)a, *v = *(unsaved_t *const *)b;
    const trig_t *x = u->t, *y = v->t;
    if ((x->saved_last == 0) != (y->saved_last == 0))
        return x->saved_last == 0 ? -1 : 1;
    if (x->saved_last == 0)
        return 0;
    if (u->last != v->last)
        return u->last < v->last ? -1 : 1;
    return (x->next_ms > y->next_ms) - (x->next_ms < y->next_ms);
}

/* First states, in one unordered insert_many (an insert finds its place
 * by the `_id` index; an upsert scans); what the insert did not write is
 * saved one by one. */
static void s_save_first(sched_t *s, unsaved_t **group, size_t k)
{
    bson_t *docs[SAVE_CHUNK];
    int ins[SAVE_CHUNK];
    for (size_t g = 0; g < k; g++)
        docs[g] = s_state_doc(group[g]->t, group[g]->last);
    err_t err = {0};
    s_insert_many(s, "trigger_state", docs, k, ins, "insert_states", &err);
    for (size_t g = 0; g < k; g++) {
        unsaved_t *u = group[g];
        if (ins[g] == 1) {
            u->t->saved_last = u->last;
            s_saved(s, u);
        } else if (s_save_state(s, u->t, u->last) == 0) { /* there was one after all */
            s_saved(s, u);
        }
        bson_destroy(docs[g]);
    }
}

size_t sched_save_states(sched_t *self, int partition, int64_t min_age, int64_t until)
{
    size_t n = zhashx_size(self->unsaved), k = 0;
    int64_t mono = clock_mono_ms();
    /* Called every turn of the loop: with states waiting SKED_STATE_SAVE_MS
     * (thousands at 1,000 fires a second), the table is walked only once
     * its oldest may be due. */
    if (n == 0 || mono - self->unsaved_oldest < min_age) {
        stats_states_unsaved(n);
        return n;
    }
    unsaved_t **all = malloc(n * sizeof *all);
    int overdue = 0; /* a state this old gets one store call even past `until` */
    self->unsaved_oldest = INT64_MAX; /* of those walked; a saved one leaves it older: one walk more */
    for (unsaved_t *u = zhashx_first(self->unsaved); u; u = zhashx_next(self->unsaved)) {
        if (u->since < self->unsaved_oldest)
            self->unsaved_oldest = u->since;
        if ((partition < 0 || u->t->partition == partition) && mono - u->since >= min_age &&
            lease_valid(&self->m->leases[u->t->partition], mono)) {
            all[k++] = u; /* a lapsed lease's are dropped with its partition */
            overdue |= mono - u->since >= 2 * SCHED_SAVE_BUSY_MS;
        }
    }
    qsort(all, k, sizeof *all, s_cmp_unsaved);
    for (size_t i = 0, j; i < k && (clock_mono_ms() < until || (i == 0 && overdue)); i = j) {
        for (j = i + 1; j < k && j - i < SAVE_CHUNK && s_cmp_unsaved(&all[i], &all[j]) == 0; j++)
            ;
        if (all[i]->t->saved_last == 0) {
            s_save_first(self, all + i, j - i);
        } else if (j - i >= SAVE_GROUP_MIN && s_save_group(self, all + i, j - i) == 0) {
            for (size_t g = i; g < j; g++)
                s_saved(self, all[g]);
        } else { /* one by one: each is a store call, so the tick is looked at */
            for (size_t g = i; g < j && (g == i || clock_mono_ms() < until); g++)
                if (s_save_state(self, all[g]->t, all[g]->last) == 0)
                    s_saved(self, all[g]);
        }
    }
    free(all);
    stats_states_unsaved(zhashx_size(self->unsaved));
    return zhashx_size(self->unsaved);
}

void sched_fire_due(sched_t *self, int64_t now, int64_t until)
{
    int64_t mono = clock_mono_ms();
    size_t decided = 0;
    for (;; now = clock_wall_ms(), mono = clock_mono_ms()) {
        /* Decide a batch: every due trigger once, by the clocks read again
         * for each batch (fires that fell due during a catch-up of many
         * batches join the next one). A fire_all catch-up
         * brings the same trigger round again, still due: it is set
         * aside until the batch is decided, and the next batch takes it,
         * so that the triggers due on time share each batch with those
         * catching up rather than waiting for the end of every catch-up
         * (a dead master's partitions, gained seconds late: at 1,000 fires
         * a second the survivors' own triggers fired nothing for 20 s). */
        fire_t fires[FIRE_BATCH];
        trig_t *aside[FIRE_BATCH];
        size_t n = 0, naside = 0;
        self->batch++;
        for (trig_t *t; n < FIRE_BATCH && (t = heap_top(&self->heap)) && t->hn.key <= now;) {
            /* A batch is cut short when a pass runs past `until` or has
             * many skip records to write: late triggers cost a record
             * each, and the tick waits. */
            if (decided && (self->nskips >= SKIPS_PER_PASS || clock_mono_ms() >= until))
                break;
            if (!partitions_may_fire(self->m, t->partition, mono, t->c->overlap == OVERLAP_ALLOW)) {
                t->hn.key = now + 100; /* not now: partitions_tick decides */
                heap_update(&self->heap, &t->hn);
                continue;
            }
            if (t->batch == self->batch) {
                if (naside == FIRE_BATCH)
                    break;
                heap_remove(&self->heap, &t->hn);
                aside[naside++] = t;
                continue;
            }
            t->batch = self->batch;
            decided++;
            n += (size_t)s_fire_decide(self, t, now, &fires[n]);
        }
        for (size_t i = 0; i < naside; i++)
            heap_push(&self->heap, &aside[i]->hn);
        s_flush_skips(self);
        if (n == 0)
            return;
        /* Claim them all in one insert, dispatch them, then save their
         * states (sched_save_states, from the loop): the store's round
         * trips come after the jobs are sent. */
        bson_t *docs[FIRE_BATCH];
        int st[FIRE_BATCH];
        for (size_t i = 0; i < n; i++)
            docs[i] = fires[i].doc;
        err_t err = {0};
        s_insert_many(self, "jobs", docs, n, st, "insert_job", &err);
        s_note_claims(self, docs, st, n);
        for (size_t i = 0; i < n; i++)
            s_fire_done(self, &fires[i], st[i], &err, now);
        /* This batch's jobs go to their workers now, not after the pass's
         * last batch: a catch-up's pass runs batch after batch until the
         * tick, and its first jobs waited for all of them (a dead master's
         * triggers, gained, started 0.35-1.1 s after their load). */
        dispatch_pump(self->m->disp);
        for (size_t i = 0; i < n; i++) {
            if (st[i] < 0)
                continue;
            if (fires[i].next >= 0) {
                s_unsaved(self, fires[i].t, fires[i].sf);
                continue;
            }
            /* Its last: its state is saved with the others' (a burst of
             * one-off triggers is saved in groups, not one by one on the
             * fire path), then it goes. */
            fires[i].t->ending = 1;
            heap_remove(&self->heap, &fires[i].t->hn);
            s_unsaved(self, fires[i].t, fires[i].sf);
            log_info("trigger reached end_at", "trigger=%s", fires[i].t->id);
        }
        /* A master behind its fires (a slow store) would otherwise stay
         * here batch after batch, its tick (membership, partitions) held
         * up: the rest waits for the next turn of the loop, after it. */
        if (clock_mono_ms() >= until)
            return;
    }
}

int sched_on_time_due(const sched_t *self)
{
    int64_t due = sched_next_due(self), now = clock_wall_ms();
    return due <= now && now - due < SCHED_ON_TIME_MS;
}

void sched_fire_on_time(sched_t *self, int64_t until)
{
    if (sched_on_time_due(self))
        sched_fire_due(self, clock_wall_ms(), until);
}
