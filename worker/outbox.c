/*
 * outbox.c - FINISHED messages a master has not acknowledged yet.
 *
 * A master answers ACK {job_id, attempt} once it has persisted a FINISHED.
 * Until then the worker keeps a copy and resends it: at each of the next
 * two heartbeats to the master the job came from, then to every master
 * (the dispatching one may be dead; whichever holds the job's partition
 * records it, the others ignore it), backing off from one heartbeat period
 * to every 5 s. After give_up_ms an entry is dropped and counted, as is
 * the oldest entry when the outbox holds more than max_entries or
 * max_bytes; a master that never ACKs therefore costs bounded memory and
 * traffic. Resending is safe: masters never let a duplicate FINISHED
 * change a job.
 */
#include "worker/worker.h"

#include "common/log.h"

#include <stdlib.h>
#include <string.h>

/* Resends go to the dispatching master this many times, then to every
 * master (the partition may have moved); the gap between resends doubles
 * up to MAX_INTERVAL_MS, short enough that a job's end reaches a new
 * partition holder within seconds of a takeover. */
#define DIRECT_RESENDS 2
#define MAX_INTERVAL_MS 5000

typedef struct {
    char key[PROTO_ID_MAX + 16]; /* "<attempt>#<job_id>" */
    proto_msg_t msg;             /* owns error and output */
    int master, resends;
    int64_t first_mono, next_mono;
    size_t bytes;
    void *handle; /* in the list */
} entry_t;

struct outbox {
    zlistx_t *list; /* entry_t*, oldest first, owns */
    zhashx_t *index; /* key -> entry_t*, borrowed */
    size_t max_entries, max_bytes, bytes;
    int64_t give_up_ms, period_ms;
    uint64_t dropped, expired;
};

static void s_entry_destroy(void **item)
{
    entry_t *e = *item;
    if (!e)
        return;
    proto_msg_reset(&e->msg);
    free(e);
    *item = NULL;
}

outbox_t *outbox_new(size_t max_entries, size_t max_bytes, int64_t give_up_ms, int64_t period_ms)
{
    outbox_t *self = calloc(1, sizeof *self);
    self->list = zlistx_new();
    zlistx_set_destructor(self->list, s_entry_destroy);
    self->index = zhashx_new();
    self->max_entries = max_entries;
    self->max_bytes = max_bytes;
    self->give_up_ms = give_up_ms;
    self->period_ms = period_ms;
    return self;
}

void outbox_destroy(outbox_t **self_p)
{
    outbox_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->index);
    zlistx_destroy(&self->list);
    free(self);
    *self_p = NULL;
}

static void s_key(char *key, size_t size, const char *job_id, int attempt)
{
    snprintf(key, size, "%d#%s", attempt, job_id);
}

static void s_remove(outbox_t *self, entry_t *e)
{
    zhashx_delete(self->index, e->key);
    self->bytes -= e->bytes;
    zlistx_delete(self->list, e->handle);
}

void outbox_add(outbox_t *self, const proto_msg_t *finished, int master, int64_t now)
{
    entry_t *e = calloc(1, sizeof *e);
    s_key(e->key, sizeof e->key, finished->job_id, finished->attempt);
    entry_t *old = zhashx_lookup(self->index, e->key);
    if (old)
        s_remove(self, old);
    e->msg = *finished;
    e->msg.parameters = NULL;
    e->msg.running = NULL;
    e->msg.nrunning = 0;
    e->msg.error = finished->error ? strdup(finished->error) : NULL;
    e->msg.output = finished->output ? strdup(finished->output) : NULL;
    e->master = master;
    e->first_mono = now;
    e->bytes = sizeof *e + (e->msg.error ? strlen(e->msg.error) : 0) +
               (e->msg.output ? strlen(e->msg.output) : 0);
    e->handle = zlistx_add_end(self->list, e);
    zhashx_insert(self->index, e->key, e);
    self->bytes += e->bytes;
    e->next_mono = now + self->period_ms;
    while (zlistx_size(self->list) > self->max_entries || self->bytes > self->max_bytes) {
        entry_t *oldest = zlistx_first(self->list);
        self->dropped++;
        log_warn("unacknowledged FINISHED dropped: outbox full", "job=%s attempt=%d dropped_total=%llu",
                 oldest->msg.job_id, oldest->msg.attempt, (unsigned long long)self->dropped);
        s_remove(self, oldest);
    }
}

static entry_t *s_find(outbox_t *self, const char *job_id, int attempt)
{
    char key[PROTO_ID_MAX + 16];
    s_key(key, sizeof key, job_id, attempt);
    return zhashx_lookup(self->index, key);
}

int outbox_ack(outbox_t *self, const char *job_id, int attempt)
{
    entry_t *e = s_find(self, job_id, attempt);
    if (!e)
        return 0;
    s_remove(self, e);
    return 1;
}

proto_msg_t *outbox_find(outbox_t *self, const char *job_id, int attempt)
{
    entry_t *e = s_find(self, job_id, attempt);
    return e ? &e->msg : NULL;
}

/* Time between resend k and k+1. */
static int64_t s_interval(int k, int64_t period_ms)
{
    if (k <= DIRECT_RESENDS)
        return period_ms;
    int shift = k - DIRECT_RESENDS;
    if (shift > 16)
        shift = 16;
    int64_t ms = period_ms << shift;
    return ms < MAX_INTERVAL_MS ? ms : MAX_INTERVAL_MS;
}

void outbox_resend(outbox_t *self, int64_t now, outbox_send_fn *send, void *ctx)
{
    int64_t period_ms = self->period_ms;
    zlistx_t *expired = zlistx_new();
    for (entry_t *e = zlistx_first(self->list); e; e = zlistx_next(self->list)) {
        if (now - e->first_mono >= self->give_up_ms) {
            zlistx_add_end(expired, e);
            continue;
        }
        /* Heartbeats are period_ms apart: a quarter of slack keeps the
         * resends on consecutive heartbeats despite jitter. */
        if (e->next_mono - period_ms / 4 > now)
            continue;
        e->resends++;
        send(ctx, e->resends <= DIRECT_RESENDS ? e->master : -1, &e->msg);
        e->next_mono = now + s_interval(e->resends, period_ms);
    }
    for (entry_t *e = zlistx_first(expired); e; e = zlistx_next(expired)) {
        self->expired++;
        log_warn("FINISHED never acknowledged; no longer resent",
                 "job=%s attempt=%d resends=%d expired_total=%llu", e->msg.job_id, e->msg.attempt,
                 e->resends, (unsigned long long)self->expired);
        s_remove(self, e);
    }
    zlistx_destroy(&expired);
}

int outbox_job_ids(outbox_t *self, char **ids, int max)
{
    int n = 0;
    for (entry_t *e = zlistx_first(self->list); e && n < max; e = zlistx_next(self->list))
        ids[n++] = e->msg.job_id;
    return n;
}

size_t outbox_size(const outbox_t *self)
{
    return zlistx_size(self->list);
}

uint64_t outbox_dropped(const outbox_t *self)
{
    return self->dropped;
}

uint64_t outbox_expired(const outbox_t *self)
{
    return self->expired;
}
