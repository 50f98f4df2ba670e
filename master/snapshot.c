/*
 * snapshot.c - a partition's schedule handed from one holder to the next
 * without reading every trigger.
 *
 * Reading a partition's triggers and states is two full scans on FerretDB
 * (about 0.1 ms a document): 210-276 s for a master of 1,000,000 triggers
 * to come back after a restart (docs/BENCHMARKS.md). So a master that gives
 * a partition up gracefully (SIGTERM, or handing it to a new member) and
 * holds at least SKED_SNAPSHOT_MIN triggers first writes the partition's
 * schedule, as its records are in memory, to `snapshots`: documents
 * `partition/<p>#<epoch>/<i>`, each at most SNAPSHOT_CHUNK raw bytes
 * compressed (zlib), chunk 0 last and carrying the header. Inserts only,
 * by the epoch's holder (store rules 1 and 2).
 *
 * The master that takes the lease at epoch k + 1 restores the partition
 * from the snapshot of epoch k, and only of k: nobody else held the
 * partition in between, and k's holder fired nothing after writing it,
 * so every state in it is exact. A snapshot of an older epoch, a missing
 * one (the holder died: kill -9, a lapsed lease), one of another format
 * or one older than SNAPSHOT_MAX_AGE_MS means a full load, as before.
 * What changed since is read from the gateways' change windows
 * (common/store.h): every trigger a gateway noted from SNAPSHOT_MARGIN_MS
 * before the snapshot on is re-read by `_id` (sched_reload), as a NOTIFY
 * would. The margin covers a gateway's clock ahead of or behind the
 * master's and a NOTIFY still in flight when the snapshot was taken; a
 * trigger written to the store without a gateway (an import) is found
 * by the next reconcile pass, as a lost NOTIFY is. The snapshot is
 * deleted once restored.
 *
 * The records are the master's own (sched_pack): their schedules are
 * the bytes of this build's parsed cron, so each snapshot carries a
 * probe expression parsed by its writer, and a reader whose parse of it
 * differs (another build's layout) loads in full.
 */
#include "master/master.h"

#include "common/clock.h"
#include "common/cron.h"
#include "common/log.h"
#include "common/schedule.h"

#include <string.h>
#include <zlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define SNAPSHOT_COLL "snapshots"
#define SNAPSHOT_FORMAT 1
#define SNAPSHOT_CHUNK (8 << 20)
#define SNAPSHOT_MARGIN_MS 120000
#define SNAPSHOT_MAX_AGE_MS (STORE_CHANGES_KEEP_MS - 2 * SNAPSHOT_MARGIN_MS)
#define SNAPSHOT_PROBE "7 */5 1-3,20 2,8 1-5"
/* Change windows are dropped this often (snapshot_tick), the first time
 * this long after start (not in the tick that gains the partitions). */
#define CHANGES_DROP_EVERY_MS 600000
#define CHANGES_DROP_FIRST_MS 10000

/* This build's parse of the probe expression. */
static void s_probe(unsigned char out[CRON_SIZE])
{
    _Alignas(int64_t) unsigned char mem[CRON_SIZE] = {0};
    err_t err = {0};
    cron_parse_into(mem, SNAPSHOT_PROBE, &err);
    memcpy(out, mem, CRON_SIZE);
}

static void s_chunk_id(int p, int64_t epoch, int i, char *out, size_t size)
{
    snprintf(out, size, "partition/%d#%lld/%d", p, (long long)epoch, i);
}

/* Inserts chunk i of the snapshot (its header with it if i is 0). */
static int s_insert_chunk(master_t *m, int p, int64_t epoch, int i, const uint8_t *raw,
                          size_t len, const bson_t *header, err_t *err)
{
    uLongf zlen = compressBound((uLong)len);
    Bytef *z = malloc(zlen);
    if (compress2(z, &zlen, raw, (uLong)len, 1) != Z_OK) {
        free(z);
        return err_set(err, ERR_SYS, "cannot compress snapshot");
    }
    char id[96];
    s_chunk_id(p, epoch, i, id, sizeof id);
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

int snapshot_save(master_t *m, int p)
{
    if (sched_size(m->sched) < (size_t)m->cfg->snapshot_min || !partitions_owned(m, p))
        return 0;
    int64_t t0 = clock_mono_ms(), epoch = m->leases[p].epoch;
    zchunk_t *records = zchunk_new(NULL, 1 << 16);
    bson_t header = BSON_INITIALIZER, confs;
    BSON_APPEND_ARRAY_BEGIN(&header, "confs", &confs);
    size_t n = sched_pack(m->sched, p, records, &confs);
    bson_append_array_end(&header, &confs);
    unsigned char probe[CRON_SIZE];
    s_probe(probe);
    const uint8_t *raw = zchunk_data(records);
    size_t len = zchunk_size(records);
    int chunks = (int)((len + SNAPSHOT_CHUNK - 1) / SNAPSHOT_CHUNK);
    chunks = chunks ? chunks : 1;
    BCON_APPEND(&header, "format", BCON_INT32(SNAPSHOT_FORMAT), "taken_at",
                BCON_DATE_TIME(clock_wall_ms()), "triggers", BCON_INT64((int64_t)n), "chunks",
                BCON_INT32(chunks), "raw", BCON_INT64((int64_t)len));
    BSON_APPEND_BINARY(&header, "probe", BSON_SUBTYPE_BINARY, probe, CRON_SIZE);
    err_t err = {0};
    int rc = 0;
    for (int i = chunks - 1; i >= 0 && rc == 0; i--) { /* the header last: a reader finds all or none */
        size_t at = (size_t)i * SNAPSHOT_CHUNK, size = len - at < SNAPSHOT_CHUNK ? len - at : SNAPSHOT_CHUNK;
        partitions_alive(m);
        rc = s_insert_chunk(m, p, epoch, i, raw + at, size, i == 0 ? &header : NULL, &err);
    }
    if (rc < 0)
        log_warn("cannot write snapshot; the next holder loads in full", "partition=%d reason=\"%s\"",
                 p, err.msg);
    else
        log_debug("snapshot written", "partition=%d epoch=%lld triggers=%zu bytes=%zu ms=%lld", p,
                  (long long)epoch, n, len, (long long)(clock_mono_ms() - t0));
    bson_destroy(&header);
    zchunk_destroy(&records);
    return rc;
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

/* Reads the snapshot chunks 1.. of (p, epoch) after chunk 0 (`head`)
 * into one buffer, the caller's; NULL with err if any is missing or
 * malformed. */
static uint8_t *s_read_records(master_t *m, int p, int64_t epoch, const bson_t *head,
                               size_t *len, err_t *err)
{
    int chunks = (int)bj_get_int(head, "chunks", 0);
    int64_t raw = bj_get_int(head, "raw", -1);
    uint8_t *buf = NULL;
    if (chunks < 1 || chunks > 4096 || raw < 0 || raw > (int64_t)chunks * SNAPSHOT_CHUNK ||
        !(buf = malloc(raw ? (size_t)raw : 1))) {
        err_set(err, ERR_INVALID, "malformed snapshot header");
        return NULL;
    }
    for (int i = 0; i < chunks; i++) {
        bson_t doc;
        char id[96];
        s_chunk_id(p, epoch, i, id, sizeof id);
        int have = i == 0 ? 1 : store_get_by_id(m->store, SNAPSHOT_COLL, id, &doc, err);
        const bson_t *d = i == 0 ? head : &doc;
        int64_t at = (int64_t)i * SNAPSHOT_CHUNK, size = bj_get_int(d, "size", -1);
        int ok = have == 1 && size >= 0 && at + size <= raw &&
                 (i < chunks - 1 ? size == SNAPSHOT_CHUNK : at + size == raw) &&
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

/* Restores partition p from its previous epoch's snapshot if there is a
 * usable one: the triggers restored (>= 0), or -1 (nothing scheduled:
 * load in full). *taken_at: when it was written; *chunks: its documents
 * to delete (0: none found). */
static long s_restore_one(master_t *m, int p, int64_t *taken_at, int *chunks)
{
    int64_t epoch = m->leases[p].epoch - 1;
    char id[96];
    s_chunk_id(p, epoch, 0, id, sizeof id);
    bson_t head;
    err_t err = {0};
    *chunks = 0;
    if (epoch < 1 || store_get_by_id(m->store, SNAPSHOT_COLL, id, &head, &err) != 1)
        return -1;
    unsigned char probe[CRON_SIZE];
    s_probe(probe);
    bson_iter_t it, confs;
    bson_subtype_t sub;
    uint32_t plen = 0;
    const uint8_t *pdata = NULL;
    if (bson_iter_init_find(&it, &head, "probe") && BSON_ITER_HOLDS_BINARY(&it))
        bson_iter_binary(&it, &sub, &plen, &pdata);
    *taken_at = bj_get_date(&head, "taken_at", 0);
    int64_t nchunks = bj_get_int(&head, "chunks", 1);
    *chunks = nchunks < 1 ? 1 : nchunks > 4096 ? 4096 : (int)nchunks;
    long n = -1;
    const char *why = NULL;
    if (bj_get_int(&head, "format", 0) != SNAPSHOT_FORMAT || plen != CRON_SIZE ||
        memcmp(pdata, probe, CRON_SIZE) != 0)
        why = "written by another build";
    else if (clock_wall_ms() - *taken_at > SNAPSHOT_MAX_AGE_MS)
        why = "older than the change windows kept";
    else if (!bson_iter_init_find(&it, &head, "confs") || !BSON_ITER_HOLDS_ARRAY(&it) ||
             !bson_iter_recurse(&it, &confs))
        why = "malformed snapshot header";
    size_t len = 0;
    uint8_t *records = why ? NULL : s_read_records(m, p, epoch, &head, &len, &err);
    if (records) {
        uint32_t clen;
        const uint8_t *cdata;
        bson_t cdoc;
        bson_iter_array(&it, &clen, &cdata);
        if (bson_init_static(&cdoc, cdata, clen))
            n = sched_unpack(m->sched, p, &cdoc, records, len);
        if (n < 0) {
            sched_drop(m->sched, p);
            why = "malformed records";
        }
        free(records);
    } else if (!why) {
        why = err.msg;
    }
    if (why)
        log_warn("snapshot not used; loading in full", "partition=%d epoch=%lld reason=\"%s\"", p,
                 (long long)epoch, why);
    bson_destroy(&head);
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

/* Deletes the snapshot of partition p's previous epoch, restored or not:
 * only the holder of the epoch after it could use it, and that is this
 * master now. The header first, so that no reader finds a header without
 * its chunks. */
static void s_delete(master_t *m, int p, int chunks)
{
    for (int k = 0; k < chunks; k++) {
        char id[96];
        s_chunk_id(p, m->leases[p].epoch - 1, k, id, sizeof id);
        const char *ids[] = {id};
        bson_error_t berr;
        if (store_delete_by_ids(m->store, SNAPSHOT_COLL, ids, 1, &berr) != 1)
            log_warn("cannot delete snapshot", "id=%s reason=\"%s\"", id, berr.message);
    }
}

int snapshot_restore(master_t *m, int *parts, int *n)
{
    int64_t t0 = clock_mono_ms(), since = INT64_MAX;
    int restored[*n], chunks[*n], nr = 0, rest = 0;
    long triggers = 0;
    for (int i = 0, np = *n; i < np; i++) {
        int64_t taken_at = 0;
        long got = s_restore_one(m, parts[i], &taken_at, &chunks[i]);
        if (chunks[i])
            s_delete(m, parts[i], chunks[i]);
        if (got < 0) {
            parts[rest++] = parts[i];
            continue;
        }
        restored[nr++] = parts[i];
        triggers += got;
        since = taken_at < since ? taken_at : since;
    }
    *n = rest;
    if (nr == 0)
        return 0;
    zhashx_t *ids = zhashx_new();
    if (s_read_changes(m, restored, nr, since - SNAPSHOT_MARGIN_MS, ids) < 0) {
        for (int i = 0; i < nr; i++) { /* changes unknown: as if never restored */
            sched_drop(m->sched, restored[i]);
            parts[(*n)++] = restored[i];
        }
        zhashx_destroy(&ids);
        return 0;
    }
    size_t changed = zhashx_size(ids);
    for (void *v = zhashx_first(ids); v; v = zhashx_next(ids))
        sched_reload(m->sched, zhashx_cursor(ids));
    zhashx_destroy(&ids);
#ifdef __GLIBC__
    /* Each partition's records were read whole and freed between the
     * triggers they became: glibc keeps those pages unless asked (as
     * after a load, sched_load). */
    malloc_trim(0);
#endif
    log_info("partitions restored from snapshots", "count=%d triggers=%ld changes=%zu ms=%lld", nr,
             triggers, changed, (long long)(clock_mono_ms() - t0));
    return nr;
}

void snapshot_tick(master_t *m, int64_t *next_mono)
{
    int64_t now = clock_mono_ms();
    if (now < *next_mono)
        return;
    int first = *next_mono == 0;
    *next_mono = now + (first ? CHANGES_DROP_FIRST_MS : CHANGES_DROP_EVERY_MS);
    if (first)
        return;
    err_t err = {0};
    int dropped = store_drop_changes_before(m->store, clock_wall_ms() - STORE_CHANGES_KEEP_MS, &err);
    if (dropped < 0)
        log_warn("cannot drop old trigger change windows", "reason=\"%s\"", err.msg);
    else if (dropped > 0)
        log_debug("old trigger change windows dropped", "count=%d", dropped);
}
