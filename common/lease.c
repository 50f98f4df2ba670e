/*
 * lease.c - epoch-chain leases; see lease.h for the model.
 *
 * Per tick a non-holder reads the newest known epoch and probes the next
 * _id (the chain only grows), then inserts epoch+1 if the head is expired.
 * A holder renews its own epoch document and checks that no epoch+1 has
 * appeared (and that its own is still there); if not, it was fenced off
 * and stops at once. A master renews all its due leases together
 * (lease_renew_many): one update_many and one find by `_id` $in, whatever
 * their number.
 *
 * Every read and write is by `_id` alone. Epoch k's document is its
 * owner's (only the insert that won k knows it holds it), so a filter on
 * `owner` would add nothing but cost: FerretDB decodes every document of
 * the collection in Go for any filter other than `_id` alone.
 */
#include "common/lease.h"

#include "common/clock.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

void lease_init(lease_t *lease, const char *resource)
{
    memset(lease, 0, sizeof *lease);
    snprintf(lease->resource, sizeof lease->resource, "%s", resource);
}

int lease_margin_ms(int ttl_ms)
{
    int m = ttl_ms / 5;
    return m < 500 ? 500 : m;
}

int lease_valid(const lease_t *lease, int64_t now_mono)
{
    return lease->held && now_mono < __atomic_load_n(&lease->valid_until, __ATOMIC_ACQUIRE);
}

static void s_id(char *buf, size_t size, const lease_t *lease, int64_t epoch)
{
    snprintf(buf, size, "%s#%lld", lease->resource, (long long)epoch);
}

/* Reads epoch document `epoch`; 1 found (doc copied to *out), 0 absent. */
static int s_read(store_t *store, const lease_t *lease, int64_t epoch, bson_t *out, err_t *err)
{
    char id[128];
    s_id(id, sizeof id, lease, epoch);
    return store_get_by_id(store, "locks", id, out, err);
}

/* Finds the head of the chain from lease->epoch upwards. On return
 * lease->epoch is the head (0 if the chain is empty) and *head holds it. */
static int s_find_head(store_t *store, lease_t *lease, bson_t *head, int *have_head, err_t *err)
{
    *have_head = 0;
    if (lease->epoch > 0) {
        int rc = s_read(store, lease, lease->epoch, head, err);
        if (rc < 0)
            return rc;
        *have_head = rc;
    }
    for (;;) {
        bson_t next;
        bson_init(&next);
        int rc = s_read(store, lease, lease->epoch + 1, &next, err);
        if (rc <= 0) {
            bson_destroy(&next);
            return rc;
        }
        if (*have_head)
            bson_destroy(head);
        bson_steal(head, &next);
        *have_head = 1;
        lease->epoch++;
    }
}

static int s_insert(store_t *store, lease_t *lease, const char *owner, int ttl_ms, err_t *err)
{
    int64_t mono = clock_mono_ms(), now = clock_wall_ms();
    char id[128];
    s_id(id, sizeof id, lease, lease->epoch + 1);
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "kind", BCON_UTF8("lease"), "resource",
                           BCON_UTF8(lease->resource), "epoch", BCON_INT64(lease->epoch + 1),
                           "owner", BCON_UTF8(owner), "acquired_at", BCON_DATE_TIME(now),
                           "expires_at", BCON_DATE_TIME(now + ttl_ms));
    bson_error_t berr;
    bool ok = mongoc_collection_insert_one(store_coll(store, "locks"), doc, NULL, NULL, &berr);
    bson_destroy(doc);
    lease->epoch++;
    if (!ok) {
        int rc = store_error(&berr, "take lease", err);
        if (rc == ERR_CONFLICT)
            return 0; /* another contender's insert won this epoch */
        if (rc == ERR_RETRY)
            lease->epoch--; /* unknown outcome: the next probe will tell */
        return rc;
    }
    lease->held = 1;
    lease->expires_at = now + ttl_ms;
    lease->valid_until = mono + ttl_ms - lease_margin_ms(ttl_ms);
    log_info("lease acquired", "resource=%s epoch=%lld", lease->resource, (long long)lease->epoch);
    return 1;
}

void lease_renew_many(store_t *store, lease_t **leases, size_t n, int ttl_ms, int *rc, err_t *err)
{
    int64_t mono = clock_mono_ms(), now = clock_wall_ms();
    size_t live[n ? n : 1], k = 0;
    for (size_t i = 0; i < n; i++) {
        rc[i] = 0;
        if (mono < leases[i]->valid_until) {
            live[k++] = i;
            continue;
        }
        /* Too late to renew safely: someone may already see it expired. */
        leases[i]->held = 0;
        log_warn("lease lapsed before renewal", "resource=%s epoch=%lld", leases[i]->resource,
                 (long long)leases[i]->epoch);
    }
    if (k == 0)
        return;
    /* ids[j]: live lease j's epoch document; ids[k + j]: the epoch after it. */
    char(*ids)[128] = malloc(2 * k * sizeof *ids);
    const char **list = malloc(2 * k * sizeof *list);
    char *seen = calloc(2 * k, 1);
    for (size_t j = 0; j < k; j++) {
        const lease_t *l = leases[live[j]];
        s_id(ids[j], sizeof ids[j], l, l->epoch);
        s_id(ids[k + j], sizeof ids[k + j], l, l->epoch + 1);
        list[j] = ids[j];
        list[k + j] = ids[k + j];
    }
    bson_t *filter = bson_new();
    bj_append_in_utf8(filter, "_id", list, k);
    bson_t *update = BCON_NEW("$set", "{", "expires_at", BCON_DATE_TIME(now + ttl_ms),
                              "renewed_at", BCON_DATE_TIME(now), "}");
    bson_error_t berr;
    bool ok = mongoc_collection_update_many(store_coll(store, "locks"), filter, update, NULL,
                                            NULL, &berr);
    bson_destroy(filter);
    bson_destroy(update);
    if (ok) { /* ours still there, and nobody's after them? */
        filter = bson_new();
        bj_append_in_utf8(filter, "_id", list, 2 * k);
        bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");
        mongoc_cursor_t *cur =
            mongoc_collection_find_with_opts(store_coll(store, "locks"), filter, opts, NULL);
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc))
            for (size_t j = 0; j < 2 * k; j++)
                if (strcmp(bj_get_str(doc, "_id", ""), ids[j]) == 0)
                    seen[j] = 1;
        ok = !mongoc_cursor_error(cur, &berr);
        mongoc_cursor_destroy(cur);
        bson_destroy(filter);
        bson_destroy(opts);
    }
    int code = ok ? 0 : store_error(&berr, "renew lease", err);
    for (size_t j = 0; j < k; j++) {
        lease_t *lease = leases[live[j]];
        if (!ok) { /* unknown: the lease keeps its old deadline */
            rc[live[j]] = code;
        } else if (!seen[j] || seen[k + j]) {
            lease->held = 0;
            log_warn("lease lost to a newer epoch", "resource=%s epoch=%lld", lease->resource,
                     (long long)lease->epoch);
        } else {
            lease->expires_at = now + ttl_ms;
            lease->valid_until = mono + ttl_ms - lease_margin_ms(ttl_ms);
            rc[live[j]] = 1;
        }
    }
    free(seen);
    free(list);
    free(ids);
}

int lease_tick(store_t *store, lease_t *lease, const char *owner, int ttl_ms, err_t *err)
{
    if (lease->held) {
        int rc;
        lease_renew_many(store, &lease, 1, ttl_ms, &rc, err);
        return rc;
    }
    bson_t head;
    int have_head;
    bson_init(&head);
    int rc = s_find_head(store, lease, &head, &have_head, err);
    if (rc >= 0) {
        int64_t expires = have_head ? bj_get_date(&head, "expires_at", 0) : 0;
        int expired = !have_head || expires <= clock_wall_ms();
        lease->head_expires = expired ? 0 : expires;
        rc = expired ? s_insert(store, lease, owner, ttl_ms, err) : 0;
    }
    bson_destroy(&head);
    return rc;
}

int lease_release(store_t *store, lease_t *lease, err_t *err)
{
    if (!lease->held)
        return 0;
    lease->held = 0;
    char id[128];
    s_id(id, sizeof id, lease, lease->epoch);
    int64_t now = clock_wall_ms();
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *update = BCON_NEW("$set", "{", "expires_at", BCON_DATE_TIME(now), "released_at",
                              BCON_DATE_TIME(now), "}");
    bson_error_t berr;
    bool ok = mongoc_collection_update_one(store_coll(store, "locks"), filter, update, NULL, NULL,
                                           &berr);
    bson_destroy(filter);
    bson_destroy(update);
    if (!ok)
        return store_error(&berr, "release lease", err);
    log_info("lease released", "resource=%s epoch=%lld", lease->resource, (long long)lease->epoch);
    return 0;
}

int lease_scan(store_t *store, lease_t *leases, int n, err_t *err)
{
    bson_t *filter = BCON_NEW("kind", BCON_UTF8("lease"));
    bson_t *opts = BCON_NEW("projection", "{", "resource", BCON_INT32(1), "epoch", BCON_INT32(1),
                            "}");
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(store, "locks"), filter, opts, NULL);
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc)) {
        const char *res = bj_get_str(doc, "resource", "");
        int64_t epoch = bj_get_int(doc, "epoch", 0);
        for (int i = 0; i < n; i++)
            if (strcmp(leases[i].resource, res) == 0 && epoch > leases[i].epoch && !leases[i].held)
                leases[i].epoch = epoch;
    }
    bson_error_t berr;
    int rc = 0;
    if (mongoc_cursor_error(cur, &berr))
        rc = store_error(&berr, "scan leases", err);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    bson_destroy(opts);
    return rc;
}
