/*
 * gateway.h - the gateway's parts.
 *
 *   main.c     configuration, the HTTP server, `token`
 *   notify.c   NOTIFY messages to masters
 *   api.c      routing, authentication, the REST handlers
 *   trigger.c  validation of trigger requests, documents and responses
 *   locks.c    lease listing and named locks (LockAcquisitionRequest)
 *   ratelimit.c  per-user / per-address token buckets
 *   cors.c     CORS allow-list, preflight
 *   openapi.c  the OpenAPI document, as JSON and YAML
 */
#ifndef SKED_GATEWAY_H
#define SKED_GATEWAY_H

#include "common/config.h"
#include "common/store.h"
#include "common/token.h"
#include "common/http.h"

#include <czmq.h>
#include <jansson.h>

#define GATEWAY_MAX_MASTERS 32
#define GATEWAY_RATE_KEYS 10000 /* users and addresses a gateway rate-limits at once */

typedef struct ratelimit ratelimit_t;
typedef struct cors cors_t;
typedef struct openapi openapi_t;

typedef struct {
    const config_t *cfg;
    store_t *store;
    token_verifier_t *verifier;
    ratelimit_t *limits; /* NULL: no rate limits */
    cors_t *cors;
    openapi_t *openapi;
    zsock_t *notify[GATEWAY_MAX_MASTERS];
    int nnotify;
    uint64_t seq;
    /* metrics (api_metrics_init; NULL: not counted) */
    struct metric *m_requests, *m_duration, *m_jwt_rejections, *m_rate_limited;
} gateway_t;

/* api.c: the HTTP handler (arg is the gateway_t); also serves GET /metrics. */
void api_handle(void *arg, const http_req_t *req, http_resp_t *resp);
/* Registers the gateway's HTTP metrics in gw. Can't fail (a metric that
 * cannot be allocated is not counted). */
void api_metrics_init(gateway_t *gw);

/* notify.c: connects a DEALER to each master in SKED_MASTERS; -1 on a bad list. */
int gateway_connect_masters(gateway_t *gw);
/* Tells every master that a trigger changed; never blocks. */
void gateway_notify(gateway_t *gw, const char *trigger_id, const char *op);
/* As gateway_notify, naming a job too (op "run" or "cancel"). */
void gateway_notify_job(gateway_t *gw, const char *trigger_id, const char *job_id,
                        const char *op);

/* trigger.c */

#define TRIGGER_MAX_DEPTH 16                  /* levels of a free-form object, itself included */
#define TRIGGER_PARAMS_MAX_BYTES (192 * 1024) /* a job's parameters, compact JSON (fits a JOB) */
#define TRIGGER_LABELS_MAX 255                /* worker_labels as "k=v,..." (masters' bound) */
#define TRIGGER_FREEFORM_MAX_ERRORS 20        /* problems listed per free-form object */

/* Checks a free-form object a user gives (parameters, override_config):
 * objects and arrays nest at most TRIGGER_MAX_DEPTH levels, the object
 * itself being the first; no key is empty, starts with '$' or holds '.'
 * (the driver refuses to insert them), and no array holds an array
 * directly (FerretDB refuses it). Appends a
 * {type, loc, msg} to errors per problem (at most
 * TRIGGER_FREEFORM_MAX_ERRORS), loc being a copy of `loc` followed by the
 * path below value. */
void trigger_check_freeform(json_t *value, const json_t *loc, json_t *errors);

/* Appends an error at loc (copied) and returns -1 if params is longer than
 * TRIGGER_PARAMS_MAX_BYTES as compact JSON, else returns 0. */
int trigger_check_params_size(json_t *params, const json_t *loc, json_t *errors);

/* Validates a create (or PUT) request body. Returns a new trigger document
 * (the caller's, without _id/owner/partition/timestamps; an INTERVAL
 * without start_at first fires at now + interval) or NULL with *errors set
 * to a new JSON array of {type, loc, msg} entries. May normalise body. */
bson_t *trigger_from_request(json_t *body, int64_t now, json_t **errors);

/* The create request a PATCH describes: the stored trigger as a request
 * with the patch's top-level fields laid over it (a given trigger_config or
 * execution_config replaces the stored one whole). Returns a new object for
 * trigger_from_request(), or NULL with *errors (a new array) if the patch
 * is not an object or has unknown fields. patch is not modified. */
json_t *trigger_patch_request(const bson_t *stored, json_t *patch, json_t **errors);

/* The update ({$set, $inc: {version: 1}}, the caller's) that turns the
 * stored trigger into def (from trigger_from_request), or NULL if def
 * changes nothing. The stored schedule is kept when trigger_config is
 * unchanged and the trigger is not being resumed. */
bson_t *trigger_update(const bson_t *stored, const bson_t *def, int64_t now);

/* Renders a stored trigger (and its schedule state, may be NULL) as the
 * API's ScheduledTriggerResponse. */
json_t *trigger_to_response(const bson_t *doc, const bson_t *state);

/* Renders a job document as ScheduledJobResponse. */
json_t *job_to_response(const bson_t *doc);

/* First fire time of a trigger document after `after`, or -1 if none. */
int64_t trigger_next_fire(const bson_t *doc, int64_t after);

/* locks.c */

#define LOCK_NAME_MAX 64

typedef struct {
    char name[LOCK_NAME_MAX + 1];
    char owner[256];
    int ttl_s;
} lock_request_t;

enum { LOCK_HELD = 0, LOCK_CREATED = 1, LOCK_RENEWED = 2 };

/* 1 if name is a valid lock name (1-64 of [A-Za-z0-9_.:-], alphanumeric
 * first). */
int locks_name_valid(const char *name);

/* Checks a LockAcquisitionRequest body and fills *out (owner defaults to
 * default_owner). Returns NULL, or a new array of {type, loc, msg}. */
json_t *locks_check_request(json_t *body, const char *default_owner, lock_request_t *out);

/* Acquires named lock req->name for req->owner, or renews it if that owner
 * holds it. Returns LOCK_CREATED or LOCK_RENEWED with *out the lock, or
 * LOCK_HELD with *out its holder (may be NULL), or a negative code. *out is
 * the caller's. */
int locks_acquire(store_t *store, const lock_request_t *req, json_t **out, err_t *err);

/* Releases named lock name if owner holds it (and it is at epoch, when
 * epoch > 0). Returns 0; ERR_NOTFOUND if it is not held; ERR_CONFLICT if
 * someone else holds it (*holder, the caller's, describes it); or another
 * negative code. */
int locks_release(store_t *store, const char *name, const char *owner, int64_t epoch,
                  json_t **holder, err_t *err);

/* Renders the head epoch of every lease chain (partitions, named locks) as
 * {items, total} into *out (the caller's). Returns 0 or a negative code. */
int locks_list(store_t *store, json_t **out, err_t *err);

/* ratelimit.c: token buckets of `burst` tokens refilled at `rate` per
 * second, one per key, at most max_keys keys (least recently used ones are
 * forgotten). NULL if out of memory. */
ratelimit_t *ratelimit_new(double rate, double burst, size_t max_keys);
void ratelimit_destroy(ratelimit_t **self_p);
/* Takes a token from key's bucket at monotonic time now_ms. Returns 0 if
 * one was there, else the whole seconds (>= 1) until one will be. */
int ratelimit_take(ratelimit_t *self, const char *key, int64_t now_ms);
/* Keys remembered. Can't fail. */
size_t ratelimit_size(const ratelimit_t *self);

/* cors.c: list is SKED_CORS_ORIGINS. NULL with err on a bad entry. */
cors_t *cors_new(const char *list, err_t *err);
void cors_destroy(cors_t **self_p);
/* 1 if any origin is allowed. */
int cors_enabled(const cors_t *self);
/* 1 if req is a CORS preflight (OPTIONS with Origin and
 * Access-Control-Request-Method). */
int cors_is_preflight(const http_req_t *req);
/* Answers a preflight: 204 with the CORS headers, or 400 without them. */
void cors_preflight(const cors_t *self, const http_req_t *req, http_resp_t *resp);
/* Adds Access-Control-Allow-Origin (and friends) for an allowed Origin. */
void cors_apply(const cors_t *self, const http_req_t *req, http_resp_t *resp);

/* openapi.c: loads the document at path (see openapi.c for where a
 * relative path is looked for). A missing file is not an error: the
 * result then has no text. NULL with err if the file is not a JSON
 * object. */
openapi_t *openapi_load(const char *path, err_t *err);
void openapi_destroy(openapi_t **self_p);
/* The document as JSON or (yaml != 0) YAML, borrowed; NULL if none. */
const char *openapi_text(const openapi_t *self, int yaml, size_t *len);

#endif
