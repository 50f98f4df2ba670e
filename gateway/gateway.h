/*
 * gateway.h - the gateway's parts.
 *
 *   main.c     configuration, the HTTP server, `token`
 *   notify.c   NOTIFY messages to masters
 *   api.c      routing, authentication, the REST handlers
 *   trigger.c  validation of trigger requests, documents and responses
 */
#ifndef SKED_GATEWAY_H
#define SKED_GATEWAY_H

#include "common/config.h"
#include "common/store.h"
#include "common/token.h"
#include "gateway/http.h"

#include <czmq.h>
#include <jansson.h>

#define GATEWAY_MAX_MASTERS 32

typedef struct {
    const config_t *cfg;
    store_t *store;
    token_verifier_t *verifier;
    zsock_t *notify[GATEWAY_MAX_MASTERS];
    int nnotify;
    uint64_t seq;
} gateway_t;

/* api.c: the HTTP handler (arg is the gateway_t). */
void api_handle(void *arg, const http_req_t *req, http_resp_t *resp);

/* notify.c: connects a DEALER to each master in SKED_MASTERS; -1 on a bad list. */
int gateway_connect_masters(gateway_t *gw);
/* Tells every master that a trigger changed; never blocks. */
void gateway_notify(gateway_t *gw, const char *trigger_id, const char *op);

/* trigger.c */

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

#endif
