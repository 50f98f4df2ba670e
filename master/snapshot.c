/*
 * snapshot.c - a partition's schedule handed from one holder to the next
 * without reading every trigger.
 *
 * Reading a partition's triggers and states is two full scans on FerretDB
 * (about 0.1 ms a document): 210-276 s for a master of 1,000,000 triggers
 * to come back after a restart (docs/BENCHMARKS.md). So a master holding
 * at least SKED_SNAPSHOT_MIN triggers writes each partition's schedule,
 * its records as they are in memory (sched_pack), to `snapshots`: chunks
 * `snapshot/<p>#<epoch>.<seq>/<i>` of at most SNAPSHOT_CHUNK raw bytes,
 * compressed (zlib), chunk 0 last with the header; then the epoch's
 * pointer `snapshot/<p>#<epoch>` names it, and the chunks it replaces are
 * deleted. Only the epoch's holder writes them (store rules 1 and 2). It
 * writes a final one when it gives the partition up gracefully (SIGTERM,
 * handing it to a new member): nothing of the partition fires after it,
 * so it is exact. And a periodic one every SKED_SNAPSHOT_EVERY_S, one
 * partition a tick (snapshot_tick): what its successor has if it dies.
 *
 * The master that takes the lease at epoch k + 1 restores the partition
 * from epoch k's newest snapshot, and only k's: nobody else held the
 * partition in between. From a periodic one, a trigger whose next fire
 * was due before now + the claim-ahead may have fired since and is read
 * again by `_id` with its state; past SNAPSHOT_STALE_MIN such triggers
 * (and an eighth of the partition) the full load costs less and is made.
 * No snapshot, one of another format or one older than
 * SNAPSHOT_MAX_AGE_MS means a full load, as before. What changed since is
 * read from the gateways' change windows (common/store.h): every trigger
 * a gateway noted from SNAPSHOT_MARGIN_MS before the snapshot on is
 * re-read by `_id` (sched_reload), as a NOTIFY would. The margin covers a
 * gateway's clock ahead of or behind the master's and a NOTIFY still in
 * flight when the snapshot was taken; a trigger written to the store
 * without a gateway (an import) is found by the next reconcile pass, as
 * a lost NOTIFY is. The snapshot is deleted once read.
 *
 * The records are the master's own: their schedules are the bytes of
 * this build's parsed cron, so each snapshot carries a probe expression
 * parsed by its writer, and a reader whose parse of it differs (another
 * build's layout) loads in full.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/cron.h"
#include "common/log.h"
#include "common/schedule.h"

#include <string.h>
#include <zlib.h>

#define SNAPSHOT_COLL "snapshots"
#define SNAPSHOT_FORMAT 1
#define SNAPSHOT_CHUNK (8 << 20)
#define SNAPSHOT_MARGIN_MS 120000
#define SNAPSHOT_MAX_AGE_MS (STORE_CHANGES_KEEP_MS - 2 * SNAPSHOT_MARGIN_MS)
#define SNAPSHOT_PROBE "7 */5 1-3,20 2,8 1-5"
/* A periodic snapshot is not used if more of its triggers than this
 * (and than an eighth of them) may have fired since it: each is read
 * again by `_id`, and past that the full load costs less. */
#define SNAPSHOT_STALE_MIN 256
/* Change windows are dropped this often (snapshot_tick), the first time
 * this long after start (not in the tick that gains the partitions). */
#define CHANGES_DROP_EVERY_MS 600000
#define CHANGES_DROP_FIRST_MS 10000

/* This master's own snapshot of a partition: the newest it wrote. */
typedef struct {
    int64_t epoch; /* the lease epoch it was written in */
    int seq;       /* its number in that epoch, from 1; 0: none */
    int chunks;
    int64_t due;   /* monotonic ms the next periodic one is due; 0: at once */
} own_t;

struct snapshots {
    own_t *own;     /* per partition */
    int turn;       /* the partition looked at first by the next periodic snapshot */
    int64_t drop_next;
};

snapshots_t *snapshots_new(int partitions)
{
    snapshots_t *self = calloc(1, sizeof *self);
    self->own = calloc((size_t)partitions, sizeof *self->own);
    return self;
}

void snapshots_destroy(snapshots_t **self_p)
{
    if (*self_p) {
        free((*self_p)->own);
        free(*self_p);
        *self_p = NULL;
    }
}

/* This build's parse of the probe expression. */
static void s_probe(unsigned char out[CRON_SIZE])
{
    _Alignas(int64_t) unsigned char mem[CRON_SIZE] = {0};
    err_t err = {0};
    cron_parse_into(mem, SNAPSHOT_PROBE, &err);
    memcpy(out, mem, CRON_SIZE);
}

/* The pointer to epoch's newest snapshot of p, and that snapshot's chunks. */
static void s_pointer_id(int p, int64_t epoch, char *out, size_t size)
{
    snprintf(out, size, "snapshot/%d#%lld", p, (long long)epoch);
}

static void s_chunk_id(int p, int64_t epoch, int seq, int i, char *out, size_t size)
{
    snprintf(out, size, "snapshot/%d#%lld.%d/%d", p, (long long)epoch, seq, i);
}

/* Deletes chunks [0, chunks) of snapshot (p, epoch, seq), and then its
 * pointer if `pointer`; logs what it cannot. */
static void s_delete(master_t *m, int p, int64_t epoch, int seq, int chunks, int pointer)
{
    size_t n = (size_t)chunks + (pointer != 0);
    char(*id)[96] = malloc(n * sizeof *id);
    const char **ids = calloc(n, sizeof *ids);
    for (size_t k = 0; k < n; k++) { /* in order, ordered bulks: the pointer after its chunks */
        if (k < (size_t)chunks)
            s_chunk_id(p, epoch, seq, (int)k, id[k], sizeof id[k]);
        else
            s_pointer_id(p, epoch, id[k], sizeof id[k]);
        ids[k] = id[k];
    }
    bson_error_t berr;
    size_t done = store_delete_by_ids(m->store, SNAPSHOT_COLL, ids, n, &berr);
    if (done < n)
        log_warn("cannot delete snapshot", "id=%s reason=\"%s\"", id[done], berr.message);
    free(ids);
    free(id);
}

/* Inserts chunk i of a snapshot (its header with it if i is 0). */
static int s_insert_chunk(master_t *m, const char *id, int p, int64_t epoch, const uint8_t *raw,
                          size_t len, const bson_t *header, err_t *err)
{
    uLongf zlen = compressBound((uLong)len);
    Bytef *z = malloc(zlen);
    if (compress2(z, &zlen, raw, (uLong)len, 1) != Z_OK) {
        free(z);
        return err_set(err, ERR_SYS, "cannot compress snapshot");
    }
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", id);
    BCON_APPEND(&doc, "partition", BCON_INT32(p), "epoch", BCON_INT64(epoch), "size",
                BCON_INT64((int64_t)len));
    BSON_APPEND_BINARY(&doc, "data", BSON_SUBTYPE_BINARY, z, (uint32_t)zlen);
    if (header)
        bson_concat(&doc, header);
    free(z);
    bson_error_t berr;
    int rc = 0;
    if (!mongoc_collection_insert_one(store_coll(m->store, SNAPSHOT_COLL), &doc, NULL, NULL,
                                      &berr))
        rc = store_error(&berr, "write snapshot", err);
    bson_destroy(&doc);
    return rc;
}

/* Points epoch's pointer of p at snapshot seq (written whole). */
static int s_point(master_t *m, int p, int64_t epoch, int seq, int chunks, int final,
                   int64_t taken_at, err_t *err)
{
    char id[96];
    s_pointer_id(p, epoch, id, sizeof id);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "partition", BCON_INT32(p), "epoch",
                           BCON_INT64(epoch), "seq", BCON_INT32(seq), "chunks", BCON_INT32(chunks),
                           "final", BCON_BOOL(final), "taken_at", BCON_DATE_TIME(taken_at));
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t berr;
    int rc = 0;
    if (!mongoc_collection_replace_one(store_coll(m->store, SNAPSHOT_COLL), filter, doc, opts,
                                       NULL, &berr))
        rc = store_error(&berr, "write snapshot pointer", err);
    bson_destroy(opts);
    bson_destroy(doc);
    bson_destroy(filter);
    return rc;
}

/* Writes p's records, packed, as snapshot (epoch, seq): chunk 0, with
 * the header, last. *chunks: how many. */
static int s_write(master_t *m, int p, int64_t epoch, int seq, int final, int64_t taken_at,
                   size_t *count, size_t *bytes, int *chunks, err_t *err)
{
    zchunk_t *records = zchunk_new(NULL, 1 << 16);
    bson_t header = BSON_INITIALIZER, confs;
    BSON_APPEND_ARRAY_BEGIN(&header, "confs", &confs);
    *count = sched_pack(m->sched, p, records, &confs);
    bson_append_array_end(&header, &confs);
    unsigned char probe[CRON_SIZE];
    s_probe(probe);
    const uint8_t *raw = zchunk_data(records);
    size_t len = *bytes = zchunk_size(records);
    int n = (int)((len + SNAPSHOT_CHUNK - 1) / SNAPSHOT_CHUNK);
    *chunks = n = n ? n : 1;
    BCON_APPEND(&header, "format", BCON_INT32(SNAPSHOT_FORMAT), "taken_at",
                BCON_DATE_TIME(taken_at), "final", BCON_BOOL(final), "triggers",
                BCON_INT64((int64_t)*count), "chunks", BCON_INT32(n), "raw", BCON_INT64((int64_t)len));
    BSON_APPEND_BINARY(&header, "probe", BSON_SUBTYPE_BINARY, probe, CRON_SIZE);
    int rc = 0, i;
    for (i = n - 1; i >= 0 && rc == 0; i--) {
        size_t at = (size_t)i * SNAPSHOT_CHUNK;
        size_t size = len - at < SNAPSHOT_CHUNK ? len - at : SNAPSHOT_CHUNK;
        char id[96];
        s_chunk_id(p, epoch, seq, i, id, sizeof id);
        partitions_alive(m);
        rc = s_insert_chunk(m, id, p, epoch, raw + at, size, i == 0 ? &header : NULL, err);
    }
    if (rc < 0 && i + 2 < n) /* the chunks written before the failure */
        s_delete(m, p, epoch, seq, n, 0);
    bson_destroy(&header);
    zchunk_destroy(&records);
    return rc;
}

int snapshot_save(master_t *m, int p, int final)
{
    if (sched_size(m->sched) < (size_t)m->cfg->snapshot_min || !partitions_owned(m, p))
        return 0;
    own_t *own = &m->snaps->own[p];
    int64_t t0 = clock_mono_ms(), epoch = m->leases[p].epoch, taken_at = clock_wall_ms();
    if (own->epoch != epoch)
        *own = (own_t){.epoch = epoch, .due = own->due};
    int seq = own->seq + 1, chunks = 0;
    size_t count = 0, bytes = 0;
    err_t err = {0};
    int rc = s_write(m, p, epoch, seq, final, taken_at, &count, &bytes, &chunks, &err);
    if (rc == 0)
        rc = s_point(m, p, epoch, seq, chunks, final, taken_at, &err);
    if (rc < 0) {
        log_warn("cannot write snapshot", "partition=%d final=%d reason=\"%s\"", p, final, err.msg);
        return rc;
    }
    if (own->seq) /* the one it replaces */
        s_delete(m, p, epoch, own->seq, own->chunks, 0);
    own->seq = seq;
    own->chunks = chunks;
    master_trim(); /* the records, packed and compressed: megabytes */
    log_debug("snapshot written", "partition=%d epoch=%lld seq=%d final=%d triggers=%zu bytes=%zu ms=%lld",
              p, (long long)epoch, seq, final, count, bytes, (long long)(clock_mono_ms() - t0));
    return 0;
}

/* The binary `data` of doc uncompressed into out[0..size); 0 or -1. */
static int s_inflate(const bson_t *doc, uint8_t *out, size_t size)
{
    bson_iter_t it;
    bson_subtype_t sub;
    uint32_t zlen;
    const uint8_t *z;
    if (!bson_iter_init_find(&it, doc, "data") || !BSON_ITER_HOLDS_BINARY(&it))
        return -1;
    bson_iter_binary(&it, &sub, &zlen, &z);
    uLongf got = (uLongf)size;
    return uncompress(out, &got, z, zlen) == Z_OK && got == size ? 0 : -1;
}

/* The previous epoch's snapshot of a partition just gained, as its
 * pointer and header say. */
typedef struct {
    int p;
    int64_t epoch;
    int seq, chunks, final;
    int64_t taken_at;
} found_t;

/* Reads the chunks of snapshot f after chunk 0 (`head`) into one buffer,
 * the caller's; NULL with err if any is missing or malformed. */
static uint8_t *s_read_records(master_t *m, const found_t *f, const bson_t *head, size_t *len,
                               err_t *err)
{
    int64_t raw = bj_get_int(head, "raw", -1);
    uint8_t *buf = NULL;
    if (bj_get_int(head, "chunks", 0) != f->chunks || raw < 0 ||
        raw > (int64_t)f->chunks * SNAPSHOT_CHUNK || !(buf = malloc(raw ? (size_t)raw : 1))) {
        err_set(err, ERR_INVALID, "malformed snapshot header");
        return NULL;
    }
    for (int i = 0; i < f->chunks; i++) {
        bson_t doc;
        char id[96];
        s_chunk_id(f->p, f->epoch, f->seq, i, id, sizeof id);
        int have = i == 0 ? 1 : store_get_by_id(m->store, SNAPSHOT_COLL, id, &doc, err);
        const bson_t *d = i == 0 ? head : &doc;
        int64_t at = (int64_t)i * SNAPSHOT_CHUNK, size = bj_get_int(d, "size", -1);
        int ok = have == 1 && size >= 0 && at + size <= raw &&
                 (i < f->chunks - 1 ? size == SNAPSHOT_CHUNK : at + size == raw) &&
                 s_inflate(d, buf + at, (size_t)size) == 0;
        if (have == 1 && i > 0)
            bson_destroy(&doc);
        if (!ok) {
            if (have >= 0)
                err_set(err, ERR_INVALID, "snapshot chunk %d missing or malformed", i);
            free(buf);
            return NULL;
        }
        partitions_alive(m);
    }
    *len = (size_t)raw;
    return buf;
}

/* Why snapshot f (header `head`) cannot be used, or NULL. */
static const char *s_unusable(const found_t *f, const bson_t *head)
{
    unsigned char probe[CRON_SIZE];
    s_probe(probe);
    bson_iter_t it;
    bson_subtype_t sub;
    uint32_t plen = 0;
    const uint8_t *pdata = NULL;
    if (bson_iter_init_find(&it, head, "probe") && BSON_ITER_HOLDS_BINARY(&it))
        bson_iter_binary(&it, &sub, &plen, &pdata);
    if (bj_get_int(head, "format", 0) != SNAPSHOT_FORMAT || plen != CRON_SIZE ||
        memcmp(pdata, probe, CRON_SIZE) != 0)
        return "written by another build";
    if (clock_wall_ms() - f->taken_at > SNAPSHOT_MAX_AGE_MS)
        return "older than the change windows kept";
    if (!bson_iter_init_find(&it, head, "confs") || !BSON_ITER_HOLDS_ARRAY(&it))
        return "malformed snapshot header";
    return NULL;
}

/* Schedules snapshot f's triggers (its header `head`); the stale ones
 * (a periodic snapshot's that may have fired since) go to `stale`.
 * Returns how many were scheduled, or -1 with *why (nothing scheduled). */
static long s_unpack(master_t *m, const found_t *f, const bson_t *head, zlistx_t *stale,
                     const char **why, err_t *err)
{
    size_t len = 0;
    uint8_t *records = s_read_records(m, f, head, &len, err);
    if (!records) {
        *why = err->msg;
        return -1;
    }
    bson_iter_t it;
    uint32_t clen;
    const uint8_t *cdata;
    bson_t confs;
    long n = -1;
    bson_iter_init_find(&it, head, "confs"); /* an array: s_unusable */
    bson_iter_array(&it, &clen, &cdata);
    /* Fires claimed ahead by the dead holder after a periodic snapshot:
     * those of triggers due before now + SKED_FIRE_AHEAD_MS. */
    int64_t before = clock_wall_ms() + m->cfg->fire_ahead_ms + 1000;
    if (bson_init_static(&confs, cdata, clen))
        n = sched_unpack(m->sched, f->p, &confs, records, len, before, f->final ? NULL : stale);
    free(records);
    size_t k = zlistx_size(stale);
    if (n >= 0 && k > SNAPSHOT_STALE_MIN && k > (size_t)(n + (long)k) / 8) {
        *why = "too many of its triggers may have fired since it was taken";
        n = -1;
    } else if (n < 0) {
        *why = "malformed records";
    }
    if (n < 0) {
        sched_drop(m->sched, f->p);
        zlistx_purge(stale);
    }
    return n;
}

/* Restores partition p from its previous epoch's snapshot if there is a
 * usable one: the triggers scheduled (>= 0; the ids of those to read
 * again appended to reread), or -1 (nothing scheduled: load in full).
 * The snapshot is deleted either way: only the holder of the epoch after
 * its own could use it, and that is this master now. */
static long s_restore_one(master_t *m, int p, int64_t *taken_at, zhashx_t *reread)
{
    found_t f = {.p = p, .epoch = m->leases[p].epoch - 1};
    char id[96];
    bson_t ptr, head;
    err_t err = {0};
    s_pointer_id(p, f.epoch, id, sizeof id);
    if (f.epoch < 1 || store_get_by_id(m->store, SNAPSHOT_COLL, id, &ptr, &err) != 1)
        return -1;
    f.seq = (int)bj_get_int(&ptr, "seq", 0);
    int64_t chunks = bj_get_int(&ptr, "chunks", 0);
    f.chunks = chunks < 1 ? 1 : chunks > 4096 ? 4096 : (int)chunks;
    bson_iter_t it;
    f.final = bson_iter_init_find(&it, &ptr, "final") && bson_iter_as_bool(&it);
    f.taken_at = *taken_at = bj_get_date(&ptr, "taken_at", 0);
    bson_destroy(&ptr);
    long n = -1;
    const char *why = "its header is missing";
    zlistx_t *stale = zlistx_new();
    zlistx_set_duplicator(stale, (zlistx_duplicator_fn *)strdup);
    zlistx_set_destructor(stale, (zlistx_destructor_fn *)zstr_free);
    s_chunk_id(p, f.epoch, f.seq, 0, id, sizeof id);
    if (store_get_by_id(m->store, SNAPSHOT_COLL, id, &head, &err) == 1) {
        if (!(why = s_unusable(&f, &head)))
            n = s_unpack(m, &f, &head, stale, &why, &err);
        bson_destroy(&head);
    }
    if (n < 0)
        log_warn("snapshot not used; loading in full", "partition=%d epoch=%lld final=%d reason=\"%s\"",
                 p, (long long)f.epoch, f.final, why);
    for (const char *sid = zlistx_first(stale); sid; sid = zlistx_next(stale))
        zhashx_insert(reread, sid, (void *)1);
    zlistx_destroy(&stale);
    s_delete(m, p, f.epoch, f.seq, f.chunks, 1);
    return n;
}

/* Adds to ids the triggers of parts[0..n) noted in the change windows
 * from `since` on (wall ms); 0 or -1 (a window unreadable). */
static int s_read_changes(master_t *m, const int *parts, int n, int64_t since, zhashx_t *ids)
{
    bson_t *filter = bson_new();
    bj_append_in_int32(filter, "partition", parts, n);
    bson_t *opts = BCON_NEW("projection", "{", "trigger_id", BCON_INT32(1), "}");
    int64_t until = clock_wall_ms() + SNAPSHOT_MARGIN_MS;
    int rc = 0;
    for (int64_t w = since / STORE_CHANGES_WINDOW_MS * STORE_CHANGES_WINDOW_MS; rc == 0 && w <= until;
         w += STORE_CHANGES_WINDOW_MS) {
        char name[64];
        store_changes_name(w, name, sizeof name);
        mongoc_collection_t *coll = store_coll_new(m->store, name);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc)) {
            const char *id = bj_get_str(doc, "trigger_id", NULL);
            if (id && strlen(id) < 64)
                zhashx_insert(ids, id, (void *)1);
        }
        bson_error_t berr;
        if (mongoc_cursor_error(cur, &berr)) {
            log_warn("cannot read trigger changes", "window=%s reason=\"%s\"", name, berr.message);
            rc = -1;
        }
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
        partitions_alive(m);
    }
    bson_destroy(opts);
    bson_destroy(filter);
    return rc;
}

int snapshot_restore(master_t *m, int *parts, int *n)
{
    int64_t t0 = clock_mono_ms(), since = INT64_MAX;
    int restored[*n], nr = 0, rest = 0;
    long triggers = 0;
    zhashx_t *ids = zhashx_new(); /* triggers to read again by `_id` */
    for (int i = 0, np = *n; i < np; i++) {
        int64_t taken_at = 0;
        long got = s_restore_one(m, parts[i], &taken_at, ids);
        if (got < 0) {
            parts[rest++] = parts[i];
            continue;
        }
        restored[nr++] = parts[i];
        triggers += got;
        since = taken_at < since ? taken_at : since;
    }
    *n = rest;
    size_t stale = zhashx_size(ids);
    if (nr > 0 && s_read_changes(m, restored, nr, since - SNAPSHOT_MARGIN_MS, ids) < 0) {
        for (int i = 0; i < nr; i++) { /* changes unknown: as if never restored */
            sched_drop(m->sched, restored[i]);
            parts[(*n)++] = restored[i];
        }
        nr = 0;
    }
    size_t changed = zhashx_size(ids) - stale;
    for (void *v = nr ? zhashx_first(ids) : NULL; v; v = zhashx_next(ids))
        sched_reload(m->sched, zhashx_cursor(ids));
    zhashx_destroy(&ids);
    if (nr == 0)
        return 0;
    master_trim(); /* each partition's records, freed between the triggers they became */
    log_info("partitions restored from snapshots",
             "count=%d triggers=%ld stale=%zu changes=%zu ms=%lld", nr, triggers, stale, changed,
             (long long)(clock_mono_ms() - t0));
    return nr;
}

void snapshot_tick(master_t *m)
{
    snapshots_t *self = m->snaps;
    int64_t now = clock_mono_ms();
    int every = m->cfg->snapshot_every_s;
    /* The periodic snapshot of one held partition that is due, taking
     * them in turn (the first due each time starved the others when
     * they were due faster than one a tick). */
    int np = m->cfg->partitions;
    for (int i = 0; every > 0 && i < np; i++) {
        int p = (self->turn + i) % np;
        own_t *own = &self->own[p];
        if (!partitions_owned(m, p) || m->loading[p] || m->handing[p] || now < own->due)
            continue;
        own->due = now + (int64_t)every * 1000;
        self->turn = (p + 1) % np;
        if (snapshot_save(m, p, 0) == 0)
            break;
    }
    if (now < self->drop_next)
        return;
    int first = self->drop_next == 0;
    self->drop_next = now + (first ? CHANGES_DROP_FIRST_MS : CHANGES_DROP_EVERY_MS);
    if (first)
        return;
    err_t err = {0};
    int dropped = store_drop_changes_before(m->store, clock_wall_ms() - STORE_CHANGES_KEEP_MS, &err);
    if (dropped < 0)
        log_warn("cannot drop old trigger change windows", "reason=\"%s\"", err.msg);
    else if (dropped > 0)
        log_debug("old trigger change windows dropped", "count=%d", dropped);
}
