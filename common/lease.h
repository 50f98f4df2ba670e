/*
 * lease.h - TTL leases as chains of epoch documents (store rule 1).
 *
 * The lease on resource R at epoch k is the locks document `_id: "R#k"`
 * with owner and expires_at. Whoever sees epoch k expired inserts R#k+1;
 * the unique _id admits exactly one contender, on MongoDB and on servers
 * whose conditional updates are not atomic alike. Only the owner of an
 * epoch ever writes it (renewal, release). The epoch is the fencing token.
 *
 * A holder trusts its lease only until valid_until, a monotonic deadline
 * set from the moment it sent its last successful write minus a safety
 * margin, so it stops acting before any other process could see the lease
 * expire (G4). Expiry as seen by contenders is wall time in the store.
 */
#ifndef SKED_LEASE_H
#define SKED_LEASE_H

#include "common/store.h"

#include <stdint.h>

typedef struct {
    char resource[96];
    int64_t epoch;       /* newest epoch seen; ours when held */
    int held;
    int64_t valid_until; /* monotonic ms; act only before it. Read atomically by
                          * lease_valid: another thread may move it (an atomic
                          * store), as the master's lease keeper does */
    int64_t expires_at;  /* wall ms written in our epoch document */
    int64_t head_expires; /* wall ms another's unexpired head expires at, as the
                           * last lease_tick that did not take it read; 0 none */
} lease_t;

/* Starts with no knowledge of the chain. Can't fail. */
void lease_init(lease_t *lease, const char *resource);

/* Renews the lease if held, else takes it over if the current epoch is
 * absent or expired. Returns 1 if held afterwards, 0 if not, or a negative
 * code (ERR_RETRY: store unreachable; the lease keeps its old deadline). */
int lease_tick(store_t *store, lease_t *lease, const char *owner, int ttl_ms, err_t *err);

/* Renews the held leases leases[0..n) together: one update of their
 * epoch documents and one read for the epochs after them, where
 * lease_tick costs two store calls per lease (and on a loaded store each
 * call also waits its turn). rc[i] is what lease_tick would return. */
void lease_renew_many(store_t *store, lease_t **leases, size_t n, int ttl_ms, int *rc, err_t *err);

/* Gives a held lease up at once (expires_at = now), so another process can
 * take it without waiting for the TTL. The caller is its epoch's owner.
 * Returns 0 or a negative code. */
int lease_release(store_t *store, lease_t *lease, err_t *err);

/* True while the holder may act on the lease. */
int lease_valid(const lease_t *lease, int64_t now_mono);

/* Safety margin subtracted from the TTL for the holder's own deadline. */
int lease_margin_ms(int ttl_ms);

/* Reads the whole locks collection once and moves each lease's epoch to
 * the newest one stored for its resource (start-up: no probing from 1). */
int lease_scan(store_t *store, lease_t *leases, int n, err_t *err);

#endif
