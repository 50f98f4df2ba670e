/*
 * ratelimit.c - token buckets keyed by a string (a user, a client address),
 * in this process's memory.
 *
 * Each key has a bucket of `burst` tokens refilled at `rate` tokens per
 * second; a request takes one, and with none left it is refused and told
 * when the next one will be there. A key seen for the first time starts
 * with a full bucket, so forgetting a key can only ever be generous: the
 * table holds at most max_keys keys and, when full, forgets the one used
 * least recently (a doubly-linked LRU list beside a chained hash table).
 * Every operation is O(1).
 *
 * Limits are per gateway: N gateways behind a balancer allow up to N times
 * the rate. Called by api.c on the gateway's one thread; not thread-safe.
 */
#include "gateway/gateway.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct s_entry {
    struct s_entry *chain;            /* next in the hash bucket */
    struct s_entry *newer, *older;    /* LRU list */
    double tokens;
    int64_t last_ms;
    uint32_t hash;
    char key[];
} s_entry_t;

struct ratelimit {
    double rate;  /* tokens per millisecond */
    double burst;
    size_t max_keys, nkeys;
    size_t nbuckets; /* a power of two */
    s_entry_t **buckets;
    s_entry_t *newest, *oldest;
};

static uint32_t s_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

ratelimit_t *ratelimit_new(double rate, double burst, size_t max_keys)
{
    assert(rate > 0 && burst >= 1 && max_keys > 0);
    ratelimit_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->rate = rate / 1000.0;
    self->burst = burst;
    self->max_keys = max_keys;
    self->nbuckets = 16;
    while (self->nbuckets < max_keys)
        self->nbuckets *= 2;
    self->buckets = calloc(self->nbuckets, sizeof *self->buckets);
    if (!self->buckets) {
        free(self);
        return NULL;
    }
    return self;
}

void ratelimit_destroy(ratelimit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ratelimit_t *self = *self_p;
    for (s_entry_t *e = self->newest, *next; e; e = next) {
        next = e->older;
        free(e);
    }
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static void s_unlink_lru(ratelimit_t *self, s_entry_t *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        self->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        self->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void s_push_newest(ratelimit_t *self, s_entry_t *e)
{
    e->older = self->newest;
    e->newer = NULL;
    if (self->newest)
        self->newest->newer = e;
    self->newest = e;
    if (!self->oldest)
        self->oldest = e;
}

static void s_evict_oldest(ratelimit_t *self)
{
    s_entry_t *e = self->oldest;
    s_entry_t **pp = &self->buckets[e->hash & (self->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    s_unlink_lru(self, e);
    free(e);
    self->nkeys--;
}

static s_entry_t *s_find_or_add(ratelimit_t *self, const char *key, int64_t now_ms)
{
    uint32_t h = s_hash(key);
    s_entry_t **head = &self->buckets[h & (self->nbuckets - 1)];
    for (s_entry_t *e = *head; e; e = e->chain)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    if (self->nkeys == self->max_keys)
        s_evict_oldest(self);
    size_t n = strlen(key) + 1;
    s_entry_t *e = malloc(sizeof *e + n);
    if (!e)
        return NULL;
    memcpy(e->key, key, n);
    e->hash = h;
    e->tokens = self->burst;
    e->last_ms = now_ms;
    e->chain = *head;
    *head = e;
    s_push_newest(self, e);
    self->nkeys++;
    return e;
}

int ratelimit_take(ratelimit_t *self, const char *key, int64_t now_ms)
{
    s_entry_t *e = s_find_or_add(self, key, now_ms);
    if (!e)
        return 0; /* out of memory: fail open rather than refuse everyone */
    s_unlink_lru(self, e);
    s_push_newest(self, e);
    if (now_ms > e->last_ms) {
        e->tokens += (double)(now_ms - e->last_ms) * self->rate;
        if (e->tokens > self->burst)
            e->tokens = self->burst;
        e->last_ms = now_ms;
    }
    if (e->tokens >= 1.0) {
        e->tokens -= 1.0;
        return 0;
    }
    double wait_s = (1.0 - e->tokens) / self->rate / 1000.0;
    int secs = (int)ceil(wait_s);
    return secs < 1 ? 1 : secs;
}

size_t ratelimit_size(const ratelimit_t *self)
{
    return self->nkeys;
}
