/*
 * api.c - the REST API under /api/scheduler: routing, authentication,
 * handlers and error responses.
 *
 * Every endpoint but health, /metrics and the OpenAPI document
 * (/docs/openapi/scheduler_openapi.json and .yaml) needs
 * "Authorization: Bearer <JWT>"; the token's sub owns what it creates, and
 * only admins see or change other users' triggers (others get 404, which
 * reveals nothing) and use the lock endpoints (others get 403). Requests
 * with a valid token are rate-limited per user, all others per client
 * address (429 with Retry-After). CORS preflights are answered before
 * routing; allowed origins get CORS headers on every answer. Errors use
 * FastAPI's shape: {"detail": "..."} or {"detail": [{type, loc, msg}, ...]}.
 * Paths are accepted with and without a trailing slash; query values are
 * form-urlencoded ('+' is a space, %XX a byte) and must decode to UTF-8
 * without NUL.
 *
 * Trigger changes (PUT, PATCH, pause, resume, DELETE) are single writes by
 * _id followed by a NOTIFY, so the owning master reschedules at once; it
 * tells versions apart by the `version` every change increments.
 *
 * GET /metrics (no token, limited per address like health) renders the
 * process's Prometheus metrics. Every request is counted by route
 * template (never by raw id: "/api/scheduler/triggers/{trigger_id}";
 * anything unrouted is "other"), method and status, and timed.
 */
#include "gateway/gateway.h"

#include "common/clock.h"
#include "common/cron.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/schedule.h"
#include "common/tz.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/api/scheduler"
#define MAX_SEGS 8
#define PREVIEW_DEFAULT_COUNT 5
#define PREVIEW_MAX_COUNT 100
#define LIST_MAX_PAGE_SIZE 100
#define LIST_NEXT_FIRE_MAX 10000 /* triggers sort=next_fire_at sorts in memory */

typedef struct {
    gateway_t *gw;
    const http_req_t *req;
    http_resp_t *resp;
    token_claims_t user;
    char *segs[MAX_SEGS]; /* path segments after /api/scheduler */
    int nsegs;
} ctx_t;

static void s_json(http_resp_t *resp, int status, json_t *body)
{
    resp->status = status;
    resp->body = json_dumps(body, JSON_COMPACT);
    resp->body_len = resp->body ? strlen(resp->body) : 0;
    json_decref(body);
}

static void s_detail(http_resp_t *resp, int status, const char *msg)
{
    s_json(resp, status, json_pack("{s:s}", "detail", msg));
}

static void s_store_error(http_resp_t *resp, const err_t *err)
{
    if (err->code == ERR_RETRY) {
        http_resp_add_header(resp, "Retry-After", "5");
        s_detail(resp, 503, "store unavailable: try again shortly");
    } else {
        log_error("store error", "reason=\"%s\"", err->msg);
        s_detail(resp, 500, "internal store error");
    }
}

/* Records a write in `audit`: who (sub, role, address), what (action and
 * resource), when, and the document before and after. Insert-only and
 * best effort: a failure is logged, never fails the request it records. */
static void s_audit(ctx_t *c, const char *action, const char *resource, const bson_t *before,
                    const bson_t *after)
{
    bson_oid_t oid;
    bson_oid_init(&oid, NULL);
    bson_t *doc = BCON_NEW("_id", BCON_OID(&oid), "at", BCON_DATE_TIME(clock_wall_ms()), "actor",
                           BCON_UTF8(c->user.sub), "role", BCON_UTF8(c->user.role), "remote",
                           BCON_UTF8(c->req->remote_addr ? c->req->remote_addr : ""), "action",
                           BCON_UTF8(action), "resource", BCON_UTF8(resource));
    if (before)
        BSON_APPEND_DOCUMENT(doc, "before", before);
    if (after)
        BSON_APPEND_DOCUMENT(doc, "after", after);
    bson_error_t berr;
    if (!mongoc_collection_insert_one(store_coll(c->gw->store, "audit"), doc, NULL, NULL, &berr))
        log_warn("cannot write audit record", "action=%s resource=%s reason=\"%s\"", action,
                 resource, berr.message);
    bson_destroy(doc);
}

static int s_method(const ctx_t *c, const char *m)
{
    return c->req->method_len == strlen(m) && memcmp(c->req->method, m, c->req->method_len) == 0;
}

static int s_hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes form-urlencoded text src[0..n) ('+' is a space, %XX a byte) into
 * out, NUL-terminated. Returns the decoded length; -1 for a malformed
 * escape, a NUL byte or a result that is not UTF-8; -2 if it does not fit
 * in size bytes. */
static long s_url_decode(const char *src, size_t n, char *out, size_t size)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)src[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%') {
            int hi = n - i >= 3 ? s_hex(src[i + 1]) : -1;
            int lo = n - i >= 3 ? s_hex(src[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0)
            return -1;
        if (len + 1 >= size)
            return -2;
        out[len++] = (char)ch;
    }
    out[len] = '\0';
    /* Decoded values end up in JSON responses and error messages, so they
     * must be UTF-8; jansson refuses to make a string of anything else. */
    json_t *probe = json_stringn(out, len);
    if (!probe)
        return -1;
    json_decref(probe);
    return (long)len;
}

/* Decodes the value of ?name= (the first one given) into out. Returns 1
 * found, 0 absent, -1 badly encoded, -2 longer than size - 1 bytes. */
static int s_query_get(const ctx_t *c, const char *name, char *out, size_t size)
{
    const char *q = c->req->query;
    if (!q)
        return 0;
    const char *end = q + c->req->query_len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *kend = eq ? eq : stop;
        char key[64];
        if (s_url_decode(q, (size_t)(kend - q), key, sizeof key) >= 0 && strcmp(key, name) == 0) {
            long n = 0;
            if (eq)
                n = s_url_decode(eq + 1, (size_t)(stop - eq - 1), out, size);
            else
                out[0] = '\0';
            return n < 0 ? (int)n : 1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* Parses a decimal integer within [min, max]; 0 or -1. */
static int s_parse_long(const char *s, long min, long max, long *out)
{
    if (!isdigit((unsigned char)s[0]) && !(s[0] == '-' && isdigit((unsigned char)s[1])))
        return -1;
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (*e || errno || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Value of ?name= in the query string as an integer within bounds. Returns
 * 0 (and *out = def) if absent, -1 if not a valid number. */
static int s_query_int(const ctx_t *c, const char *name, long def, long min, long max, long *out)
{
    char buf[32];
    *out = def;
    int rc = s_query_get(c, name, buf, sizeof buf);
    if (rc <= 0)
        return rc < 0 ? -1 : 0;
    return s_parse_long(buf, min, max, out) < 0 ? -1 : 1;
}

/* Adds a {type, loc: ["query", param], msg} entry to errors. */
static void s_query_err(json_t *errors, const char *param, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_query_err(json_t *errors, const char *param, const char *type, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    if (!m) /* a quoted value cut inside a UTF-8 sequence */
        m = json_string("invalid value");
    json_array_append_new(errors, json_pack("{s:s, s:[s, s], s:o}", "type", type, "loc", "query",
                                            param, "msg", m));
}

/* Reads query parameter name into buf, adding an entry to errors if it is
 * missing (and required), badly encoded or too long. Returns 1 present, 0
 * absent, -1 unusable. */
static int s_query_param(const ctx_t *c, json_t *errors, const char *name, char *buf, size_t size,
                         int required)
{
    int rc = s_query_get(c, name, buf, size);
    if (rc == 0 && required)
        s_query_err(errors, name, "missing", "field required");
    else if (rc == -1)
        s_query_err(errors, name, "value_error",
                    "invalid percent-encoding: use %%XX with two hex digits; the value must be "
                    "UTF-8 without NUL");
    else if (rc == -2)
        s_query_err(errors, name, "string_too_long", "must be at most %zu bytes", size - 1);
    return rc < 0 ? -1 : rc;
}

/* Takes a token from key's rate-limit bucket; without one answers 429
 * with Retry-After and returns -1. */
static int s_limit(ctx_t *c, const char *kind, const char *who)
{
    if (!c->gw->limits)
        return 0;
    char key[300];
    snprintf(key, sizeof key, "%s:%s", kind, who);
    int wait_s = ratelimit_take(c->gw->limits, key, clock_mono_ms());
    if (wait_s == 0)
        return 0;
    char secs[16], msg[96];
    snprintf(secs, sizeof secs, "%d", wait_s);
    snprintf(msg, sizeof msg, "rate limit exceeded: retry in %d s", wait_s);
    log_debug("request rate-limited", "%s=%s retry_after=%d", kind, who, wait_s);
    metric_inc(c->gw->m_rate_limited, (const char *[]){kind}, 1);
    http_resp_add_header(c->resp, "Retry-After", secs);
    s_detail(c->resp, 429, msg);
    return -1;
}

/* Requests without a valid token are limited per client address. */
static int s_limit_ip(ctx_t *c)
{
    return s_limit(c, "ip", c->req->remote_addr);
}

static int s_authenticate(ctx_t *c)
{
    size_t len = 0;
    const char *h = http_req_header(c->req, "authorization", &len);
    err_t err = {0};
    token_reason_t r;
    if (!h || len < 7 || strncasecmp(h, "Bearer ", 7) != 0) {
        r = TOKEN_MISSING;
        snprintf(err.msg, sizeof err.msg, "not authenticated: missing bearer token");
    } else {
        r = token_verify(c->gw->verifier, h + 7, len - 7, &c->user, &err);
    }
    if (r == TOKEN_OK)
        return s_limit(c, "user", c->user.sub);
    metric_inc(c->gw->m_jwt_rejections, (const char *[]){token_reason_name(r)}, 1);
    if (s_limit_ip(c) < 0)
        return -1;
    log_info("request rejected", "reason=%s remote=%s", token_reason_name(r), c->req->remote_addr);
    http_resp_add_header(c->resp, "WWW-Authenticate", "Bearer");
    s_detail(c->resp, 401, err.msg);
    return -1;
}

/* Loads a document of coll (by an _id shorter than max_id) that the
 * caller may see: its owner, or an admin. Answers 404 ("<what> not found")
 * or 503 itself and returns -1 on failure. */
static int s_load_owned(ctx_t *c, const char *coll, const char *what, size_t max_id,
                        const char *id, bson_t *doc)
{
    err_t err = {0};
    int rc = strlen(id) >= max_id        ? 0
             : strcmp(coll, "jobs") == 0 ? store_get_job(c->gw->store, id, doc, &err)
                                         : store_get_by_id(c->gw->store, coll, id, doc, &err);
    if (rc < 0) {
        s_store_error(c->resp, &err);
        return -1;
    }
    if (rc == 1 && (c->user.is_admin || strcmp(bj_get_str(doc, "owner", ""), c->user.sub) == 0))
        return 0;
    if (rc == 1)
        bson_destroy(doc);
    char msg[64];
    snprintf(msg, sizeof msg, "%s not found", what);
    s_detail(c->resp, 404, msg);
    return -1;
}

static int s_load_trigger(ctx_t *c, const char *id, bson_t *doc)
{
    return s_load_owned(c, "triggers", "trigger", 64, id, doc);
}

static void s_respond_trigger(ctx_t *c, int status, const bson_t *doc)
{
    bson_t state;
    err_t err = {0};
    int have = store_get_by_id(c->gw->store, "trigger_state", bj_get_str(doc, "_id", ""), &state, &err) == 1;
    s_json(c->resp, status, trigger_to_response(doc, have ? &state : NULL));
    if (have)
        bson_destroy(&state);
}

/* 1 if a Content-Type value names JSON: application/json or
 * application/<anything>+json, any parameters, but a charset only UTF-8. */
static int s_is_json_type(const char *v, size_t n)
{
    char buf[256];
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, v, n);
    buf[n] = '\0';
    char *save = NULL, *type = strtok_r(buf, ";", &save);
    type = type ? type + strspn(type, " \t") : "";
    size_t tlen = strcspn(type, " \t");
    if (type[tlen + strspn(type + tlen, " \t")] != '\0')
        return 0; /* "application/json x" */
    int json = (tlen == 16 && strncasecmp(type, "application/json", 16) == 0) ||
               (tlen > 17 && strncasecmp(type, "application/", 12) == 0 &&
                strncasecmp(type + tlen - 5, "+json", 5) == 0);
    for (char *p = strtok_r(NULL, ";", &save); json && p; p = strtok_r(NULL, ";", &save)) {
        p += strspn(p, " \t");
        if (strncasecmp(p, "charset", 7) != 0)
            continue;
        char *val = p + 7 + strspn(p + 7, " \t");
        if (*val++ != '=')
            return 0;
        val += strspn(val, " \t\"");
        size_t vlen = strcspn(val, " \t\"");
        json = (vlen == 5 && strncasecmp(val, "utf-8", 5) == 0) ||
               (vlen == 4 && strncasecmp(val, "utf8", 4) == 0);
    }
    return json;
}

/* Parses the request body as JSON. A body with a Content-Type that is not
 * JSON is answered 415; without one, the body is read as JSON anyway (as
 * FastAPI does). On failure answers itself (415, or 400 with the line and
 * column) and returns NULL. */
static json_t *s_body(ctx_t *c)
{
    size_t tlen = 0;
    const char *type = http_req_header(c->req, "content-type", &tlen);
    if (type && !s_is_json_type(type, tlen)) {
        static const char hint[] = "send the body as application/json";
        char msg[200];
        snprintf(msg, sizeof msg, "unsupported media type '%.*s': %s", (int)(tlen < 64 ? tlen : 64),
                 type, hint);
        json_t *m = json_string(msg); /* NULL if the type was cut inside a UTF-8 sequence */
        snprintf(msg, sizeof msg, "unsupported media type: %s", hint);
        s_json(c->resp, 415, json_pack("{s:o}", "detail", m ? m : json_string(msg)));
        return NULL;
    }
    json_error_t jerr;
    json_t *body = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (body)
        return body;
    char msg[300];
    snprintf(msg, sizeof msg, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
             jerr.text);
    s_json(c->resp, 400,
           json_pack("{s:[{s:s, s:[s], s:s, s:i, s:i}]}", "detail", "type", "json_invalid", "loc",
                     "body", "msg", msg, "line", jerr.line, "column", jerr.column));
    return NULL;
}

static void s_create_trigger(ctx_t *c)
{
    json_t *body = s_body(c);
    if (!body)
        return;
    int64_t now = clock_wall_ms();
    json_t *errors = NULL;
    bson_t *doc = trigger_from_request(body, now, &errors);
    json_decref(body);
    if (!doc) {
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
        return;
    }
    bson_oid_t oid;
    char id[25];
    bson_oid_init(&oid, NULL);
    bson_oid_to_string(&oid, id);
    bson_t full = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&full, "_id", id);
    BSON_APPEND_UTF8(&full, "owner", c->user.sub);
    BSON_APPEND_INT32(&full, "partition", sched_partition(id, c->gw->cfg->partitions));
    BSON_APPEND_DATE_TIME(&full, "created_at", now);
    BSON_APPEND_DATE_TIME(&full, "updated_at", now);
    bson_concat(&full, doc);
    bson_destroy(doc);
    bson_error_t berr;
    err_t err = {0};
    if (store_note_change(c->gw->store, id, sched_partition(id, c->gw->cfg->partitions), &err) < 0) {
        s_store_error(c->resp, &err);
        bson_destroy(&full);
        return;
    }
    if (!mongoc_collection_insert_one(store_coll(c->gw->store, "triggers"), &full, NULL, NULL,
                                      &berr)) {
        if (store_error(&berr, "create trigger", &err) == ERR_CONFLICT)
            s_detail(c->resp, 409, "a trigger with this name already exists");
        else
            s_store_error(c->resp, &err);
        bson_destroy(&full);
        return;
    }
    log_info("trigger created", "trigger=%s owner=%s type=%s", id, c->user.sub,
             bj_get_str(&full, "trigger_type", ""));
    s_audit(c, "trigger.create", id, NULL, &full);
    gateway_notify(c->gw, id, "upsert");
    s_json(c->resp, 201, trigger_to_response(&full, NULL));
    bson_destroy(&full);
}

/* 1 if owner has a trigger other than id called name, 0 if not, <0 on a
 * store error. Checked before a rename because FerretDB reports a unique
 * index violation on update as a generic error. */
static int s_name_taken(gateway_t *gw, const char *owner, const char *name, const char *id,
                        err_t *err)
{
    bson_t *filter = BCON_NEW("owner", BCON_UTF8(owner), "name", BCON_UTF8(name), "_id", "{",
                              "$ne", BCON_UTF8(id), "}");
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    bson_error_t berr;
    int64_t n = mongoc_collection_count_documents(store_coll(gw->store, "triggers"), filter, opts,
                                                  NULL, NULL, &berr);
    bson_destroy(filter);
    bson_destroy(opts);
    if (n < 0)
        return store_error(&berr, "check trigger name", err);
    return n > 0;
}

/* Applies update to trigger id and copies the result to out. Returns 1
 * done, 0 no such trigger (deleted meanwhile), <0 error (ERR_CONFLICT for
 * a name taken meanwhile). */
static int s_apply_update(gateway_t *gw, const char *id, const bson_t *update, bson_t *out,
                          err_t *err)
{
    bson_t *query = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_find_and_modify_opts_t *opts = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(opts, update);
    mongoc_find_and_modify_opts_set_flags(opts, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    bson_t reply;
    bson_error_t berr;
    bson_iter_t it;
    int rc = 0;
    if (!mongoc_collection_find_and_modify_with_opts(store_coll(gw->store, "triggers"), query, opts,
                                                     &reply, &berr)) {
        rc = store_error(&berr, "update trigger", err);
        /* MongoDB says E11000; FerretDB v1 passes SQLite's message on. */
        if (strstr(berr.message, "E11000") || strstr(berr.message, "UNIQUE constraint failed"))
            rc = err->code = ERR_CONFLICT;
    } else if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_t value;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&value, data, len)) {
            bson_copy_to(&value, out);
            rc = 1;
        }
    }
    bson_destroy(&reply);
    mongoc_find_and_modify_opts_destroy(opts);
    bson_destroy(query);
    return rc;
}

typedef enum { CHANGE_PUT, CHANGE_PATCH, CHANGE_PAUSE, CHANGE_RESUME } change_t;

/* The create request describing the trigger after the change, or NULL
 * with *errors. */
static json_t *s_change_request(const bson_t *stored, change_t how, json_t *body, json_t **errors)
{
    *errors = NULL;
    if (how == CHANGE_PUT)
        return json_incref(body);
    if (how == CHANGE_PATCH)
        return trigger_patch_request(stored, body, errors);
    json_t *patch = json_pack("{s:b}", "is_active", how == CHANGE_RESUME);
    json_t *req = trigger_patch_request(stored, patch, errors);
    json_decref(patch);
    return req;
}

/* Stores a validated change of a loaded trigger and answers it. */
static void s_store_change(ctx_t *c, const bson_t *stored, const bson_t *def, int64_t now)
{
    const char *id = bj_get_str(stored, "_id", "");
    const char *owner = bj_get_str(stored, "owner", "");
    const char *name = bj_get_str(def, "name", "");
    err_t err = {0};
    bson_t *update = trigger_update(stored, def, now);
    if (!update) { /* nothing changes: no new version, no NOTIFY */
        s_respond_trigger(c, 200, stored);
        return;
    }
    int rc = 0;
    if (strcmp(name, bj_get_str(stored, "name", "")) != 0)
        rc = s_name_taken(c->gw, owner, name, id, &err);
    bson_t after;
    if (rc == 0) /* noted first: a master restoring a snapshot reads it (store.h) */
        rc = store_note_change(c->gw->store, id, sched_partition(id, c->gw->cfg->partitions), &err);
    if (rc == 0)
        rc = s_apply_update(c->gw, id, update, &after, &err);
    else if (rc > 0)
        rc = ERR_CONFLICT;
    bson_destroy(update);
    if (rc == ERR_CONFLICT)
        s_detail(c->resp, 409, "a trigger with this name already exists");
    else if (rc < 0)
        s_store_error(c->resp, &err);
    else if (rc == 0)
        s_detail(c->resp, 404, "trigger not found");
    if (rc <= 0)
        return;
    log_info("trigger updated", "trigger=%s owner=%s by=%s version=%lld status=%s", id, owner,
             c->user.sub, (long long)bj_get_int(&after, "version", 0),
             bj_get_str(&after, "status", ""));
    s_audit(c, "trigger.update", id, stored, &after);
    gateway_notify(c->gw, id, "upsert");
    s_respond_trigger(c, 200, &after);
    bson_destroy(&after);
}

/* PUT, PATCH, pause and resume: validate the trigger as it would be after
 * the change with the create validator, then store it. */
static void s_change_trigger(ctx_t *c, const char *id, change_t how)
{
    json_t *body = NULL, *errors = NULL;
    if ((how == CHANGE_PUT || how == CHANGE_PATCH) && !(body = s_body(c)))
        return;
    bson_t stored;
    if (s_load_trigger(c, id, &stored) < 0) {
        json_decref(body);
        return;
    }
    int64_t now = clock_wall_ms();
    json_t *req = s_change_request(&stored, how, body, &errors);
    bson_t *def = req ? trigger_from_request(req, now, &errors) : NULL;
    if (def)
        s_store_change(c, &stored, def, now);
    else
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
    bson_destroy(def);
    json_decref(req);
    json_decref(body);
    bson_destroy(&stored);
}

/* DELETE: removes the definition; the owning master drops it on NOTIFY
 * (or its next reconcile). Jobs stay as history. */
static void s_delete_trigger(ctx_t *c, const char *id)
{
    bson_t stored;
    if (s_load_trigger(c, id, &stored) < 0)
        return;
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t reply;
    bson_error_t berr;
    err_t err = {0};
    if (store_note_change(c->gw->store, id, sched_partition(id, c->gw->cfg->partitions), &err) < 0) {
        bson_init(&reply);
        s_store_error(c->resp, &err);
    } else if (!mongoc_collection_delete_one(store_coll(c->gw->store, "triggers"), filter, NULL,
                                             &reply, &berr)) {
        store_error(&berr, "delete trigger", &err);
        s_store_error(c->resp, &err);
    } else if (bj_get_int(&reply, "deletedCount", 0) == 0) {
        s_detail(c->resp, 404, "trigger not found");
    } else {
        log_info("trigger deleted", "trigger=%s owner=%s by=%s", id,
                 bj_get_str(&stored, "owner", ""), c->user.sub);
        s_audit(c, "trigger.delete", id, &stored, NULL);
        gateway_notify(c->gw, id, "delete");
        c->resp->status = 204;
    }
    bson_destroy(&reply);
    bson_destroy(filter);
    bson_destroy(&stored);
}

/* One preview item: the instant, its wall-clock time with offset, DST flag. */
static json_t *s_fire_json(const cron_fire_t *f)
{
    char at[48], local[64], offs[16];
    int off = f->utc_offset < 0 ? -f->utc_offset : f->utc_offset;
    char sign = f->utc_offset < 0 ? '-' : '+';
    tz_civil_t t;
    clock_format_iso(f->at_ms, at, sizeof at);
    tz_civil_from_secs(f->local_secs, &t);
    if (off % 60) /* only in local mean time, before standard zones */
        snprintf(offs, sizeof offs, "%c%02d:%02d:%02d", sign, off / 3600, off / 60 % 60, off % 60);
    else
        snprintf(offs, sizeof offs, "%c%02d:%02d", sign, off / 3600, off / 60 % 60);
    snprintf(local, sizeof local, "%04lld-%02d-%02dT%02d:%02d:%02d%s", (long long)t.year, t.mon,
             t.mday, t.hour, t.min, t.sec, offs);
    const char *dst = f->flags & CRON_FIRE_GAP_SHIFTED      ? "gap_shifted"
                      : f->flags & CRON_FIRE_OVERLAP_SECOND ? "overlap_second"
                                                            : NULL;
    return json_pack("{s:s, s:s, s:i, s:s?}", "at", at, "local", local, "utc_offset",
                     f->utc_offset, "dst", dst);
}

typedef struct {
    char expr[257], zone[65], from[65], count[16], gap[33], overlap[33];
    cron_t *cron;
    const tz_t *tz;
    cron_dst_policy_t pol;
    int64_t from_ms;
    long n;
} preview_t;

/* Reads and checks the preview's query parameters, adding every problem
 * to errors. */
static void s_preview_args(const ctx_t *c, preview_t *p, json_t *errors)
{
    err_t err = {0};
    cron_dst_policy_t pol;
    int re = s_query_param(c, errors, "expression", p->expr, sizeof p->expr, 1);
    int rz = s_query_param(c, errors, "timezone", p->zone, sizeof p->zone, 0);
    int rf = s_query_param(c, errors, "from", p->from, sizeof p->from, 0);
    int rn = s_query_param(c, errors, "count", p->count, sizeof p->count, 0);
    int rg = s_query_param(c, errors, "dst_gap", p->gap, sizeof p->gap, 0);
    int ro = s_query_param(c, errors, "dst_overlap", p->overlap, sizeof p->overlap, 0);
    if (re == 1 && !(p->cron = cron_new(p->expr, &err)))
        s_query_err(errors, "expression", "value_error", "%s", err.msg);
    if (rz == 0)
        snprintf(p->zone, sizeof p->zone, "UTC");
    if (rz >= 0 && !(p->tz = tz_get(p->zone, &err)))
        s_query_err(errors, "timezone", "value_error", "%s", err.msg);
    p->from_ms = clock_wall_ms();
    if (rf == 1 && clock_parse_iso(p->from, &p->from_ms) < 0)
        s_query_err(errors, "from", "datetime_parsing",
                    "must be an ISO-8601 date-time with a zone, e.g. 2026-03-08T00:00:00Z "
                    "(a '+' in an offset must be sent as %%2B)");
    p->n = PREVIEW_DEFAULT_COUNT;
    if (rn == 1 && s_parse_long(p->count, 1, PREVIEW_MAX_COUNT, &p->n) < 0)
        s_query_err(errors, "count", "value_error", "must be an integer between 1 and %d",
                    PREVIEW_MAX_COUNT);
    if (rg == 1 && cron_dst_policy_parse(p->gap, NULL, &pol, &err) < 0)
        s_query_err(errors, "dst_gap", "value_error", "%s", err.msg);
    if (ro == 1 && cron_dst_policy_parse(NULL, p->overlap, &pol, &err) < 0)
        s_query_err(errors, "dst_overlap", "value_error", "%s", err.msg);
    p->pol = CRON_DST_POLICY_DEFAULT;
    if (json_array_size(errors) == 0)
        cron_dst_policy_parse(rg == 1 ? p->gap : NULL, ro == 1 ? p->overlap : NULL, &p->pol, &err);
}

/* GET /cron/preview: the next fire instants of an expression, computed by
 * the engine the masters use. Fewer than count items means nothing else
 * fires within the engine's search horizon. */
static void s_cron_preview(ctx_t *c)
{
    preview_t p = {0};
    json_t *errors = json_array(), *items = json_array();
    s_preview_args(c, &p, errors);
    int64_t after = p.from_ms;
    for (long i = 0; json_array_size(errors) == 0 && i < p.n; i++) {
        cron_fire_t f;
        int rc = cron_next(p.cron, p.tz, p.pol, after, &f);
        if (rc == ERR_INVALID && i == 0)
            s_query_err(errors, "from", "value_error", "must be within the years 1-9999");
        if (rc != 0)
            break;
        json_array_append_new(items, s_fire_json(&f));
        after = f.at_ms;
    }
    if (json_array_size(errors) > 0) {
        json_decref(items);
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
    } else {
        json_decref(errors);
        s_json(c->resp, 200,
               json_pack("{s:s, s:s, s:o}", "expression", p.expr, "timezone", p.zone, "items",
                         items));
    }
    cron_destroy(&p.cron);
}

/* Page and page size of a listing. */
typedef struct {
    long page, size;
} paging_t;

/* Reads ?page= and ?page_size=, adding an error for each bad one. */
static void s_paging(const ctx_t *c, json_t *errors, paging_t *pg)
{
    if (s_query_int(c, "page", 1, 1, 1000000, &pg->page) < 0)
        s_query_err(errors, "page", "value_error", "must be an integer between 1 and 1000000");
    if (s_query_int(c, "page_size", 20, 1, LIST_MAX_PAGE_SIZE, &pg->size) < 0)
        s_query_err(errors, "page_size", "value_error", "must be an integer between 1 and %d",
                    LIST_MAX_PAGE_SIZE);
}

/* Answers {items, total, page, page_size}, added to extra if not NULL. */
static void s_page_out(ctx_t *c, const paging_t *pg, json_t *items, int64_t total, json_t *extra)
{
    json_t *out = extra ? extra : json_object();
    json_object_set_new(out, "items", items);
    json_object_set_new(out, "total", json_integer(total));
    json_object_set_new(out, "page", json_integer(pg->page));
    json_object_set_new(out, "page_size", json_integer(pg->size));
    s_json(c->resp, 200, out);
}

/* 1 if the status of a job (its outcome record laid over) is one the
 * filter's `status` asks for, or the filter asks for none. */
static int s_status_wanted(const bson_t *filter, const bson_t *job)
{
    bson_iter_t it, arr;
    if (!bson_iter_init(&it, filter) || !bson_iter_find_descendant(&it, "status.$in", &arr))
        return 1;
    const char *status = bj_get_str(job, "status", "");
    if (!BSON_ITER_HOLDS_ARRAY(&arr) || !bson_iter_recurse(&arr, &it))
        return 1;
    while (bson_iter_next(&it))
        if (BSON_ITER_HOLDS_UTF8(&it) && strcmp(bson_iter_utf8(&it, NULL), status) == 0)
            return 1;
    return 0;
}

/* Renders a listed job with its outcome record, if one waits to be
 * folded, laid over it; NULL if that takes it out of the filter's
 * statuses (the store matched what it had before the record). */
static json_t *s_render_job(ctx_t *c, const bson_t *filter, const bson_t *doc, int *failed)
{
    bson_t record, view;
    err_t err = {0};
    int rc = store_get_by_id(c->gw->store, STORE_RESULTS, bj_get_str(doc, "_id", ""), &record, &err);
    if (rc < 0)
        *failed = 1;
    if (rc != 1)
        return job_to_response(doc);
    store_job_overlay(doc, &record, &view);
    json_t *out = s_status_wanted(filter, &view) ? job_to_response(&view) : NULL;
    bson_destroy(&view);
    bson_destroy(&record);
    return out;
}

/* Runs a paginated, sorted find and renders {items, total, page, page_size}. */
static void s_page(ctx_t *c, const char *coll, const bson_t *filter, const bson_t *sort,
                   const paging_t *pg, json_t *(*render)(const bson_t *), json_t *extra)
{
    mongoc_collection_t *col = store_coll(c->gw->store, coll);
    bson_error_t berr;
    err_t err = {0};
    int64_t total = mongoc_collection_count_documents(col, filter, NULL, NULL, NULL, &berr);
    if (total < 0) {
        store_error(&berr, "count", &err);
        json_decref(extra);
        s_store_error(c->resp, &err);
        return;
    }
    bson_t *opts = BCON_NEW("sort", BCON_DOCUMENT(sort), "skip",
                            BCON_INT64((pg->page - 1) * pg->size), "limit", BCON_INT64(pg->size));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    json_t *items = json_array();
    const bson_t *doc;
    int jobs = strcmp(coll, "jobs") == 0, lost = 0;
    while (mongoc_cursor_next(cur, &doc)) {
        json_t *item = jobs ? s_render_job(c, filter, doc, &lost) : render(doc);
        if (item)
            json_array_append_new(items, item);
    }
    int failed = mongoc_cursor_error(cur, &berr);
    if (lost && !failed) {
        failed = 1;
        bson_set_error(&berr, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET, "%s",
                       "outcome records unreadable");
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    if (failed) {
        store_error(&berr, "list", &err);
        json_decref(items);
        json_decref(extra);
        s_store_error(c->resp, &err);
        return;
    }
    s_page_out(c, pg, items, total, extra);
}

static json_t *s_render_trigger(const bson_t *doc)
{
    return trigger_to_response(doc, NULL);
}

typedef enum { SORT_CREATED_AT, SORT_NAME, SORT_NEXT_FIRE_AT } list_sort_t;

/* TriggerListParams, as far as they are not turned into the filter. */
typedef struct {
    paging_t pg;
    list_sort_t sort;
    int desc;
} list_params_t;

/* Writes a regular expression matching s literally (metacharacters
 * escaped) into out, which has room for twice s plus one. */
static void s_regex_literal(const char *s, char *out)
{
    for (; *s; s++) {
        if (strchr("\\^$.|?*+()[]{}", *s))
            *out++ = '\\';
        *out++ = *s;
    }
    *out = '\0';
}

/* 1 if s is one of the NULL-terminated words. */
static int s_one_of(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcmp(s, *words) == 0)
            return 1;
    return 0;
}

/* Reads GET /triggers' filters into filter (which already scopes to the
 * caller) and its paging and sort into p, adding every problem to errors. */
static void s_list_params(const ctx_t *c, json_t *errors, list_params_t *p, bson_t *filter)
{
    static const char *const statuses[] = {"active", "paused", NULL};
    static const char *const types[] = {"CRON", "INTERVAL", "MANUAL", "EVENT", NULL};
    static const char *const sorts[] = {"created_at", "name", "next_fire_at", NULL};
    static const char *const orders[] = {"asc", "desc", NULL};
    char status[64], type[64], task[64], name[201], sort[64], order[64];
    s_paging(c, errors, &p->pg);
    if (s_query_param(c, errors, "status", status, sizeof status, 0) == 1) {
        if (s_one_of(status, statuses))
            BSON_APPEND_UTF8(filter, "status", status);
        else
            s_query_err(errors, "status", "enum", "input should be 'active' or 'paused'");
    }
    if (s_query_param(c, errors, "trigger_type", type, sizeof type, 0) == 1) {
        if (s_one_of(type, types))
            BSON_APPEND_UTF8(filter, "trigger_type", type);
        else
            s_query_err(errors, "trigger_type", "enum",
                        "input should be 'CRON', 'INTERVAL', 'MANUAL' or 'EVENT'");
    }
    if (s_query_param(c, errors, "task_type", task, sizeof task, 0) == 1) {
        size_t ok = strspn(task, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.");
        if (task[0] && task[ok] == '\0')
            BSON_APPEND_UTF8(filter, "execution_config.task_type", task);
        else
            s_query_err(errors, "task_type", "string_pattern_mismatch",
                        "1 to 63 letters, digits, '_', '-' or '.'");
    }
    if (s_query_param(c, errors, "name", name, sizeof name, 0) == 1) {
        char re[2 * sizeof name];
        s_regex_literal(name, re);
        if (name[0])
            BCON_APPEND(filter, "name", "{", "$regex", BCON_UTF8(re), "$options", BCON_UTF8("i"),
                        "}");
        else
            s_query_err(errors, "name", "string_too_short", "must not be empty");
    }
    p->sort = SORT_CREATED_AT;
    if (s_query_param(c, errors, "sort", sort, sizeof sort, 0) == 1) {
        if (!s_one_of(sort, sorts))
            s_query_err(errors, "sort", "enum",
                        "input should be 'created_at', 'name' or 'next_fire_at'");
        else
            p->sort = strcmp(sort, "name") == 0           ? SORT_NAME
                      : strcmp(sort, "next_fire_at") == 0 ? SORT_NEXT_FIRE_AT
                                                          : SORT_CREATED_AT;
    }
    /* Newest first by default; names and fire times soonest/alphabetical. */
    p->desc = p->sort == SORT_CREATED_AT;
    if (s_query_param(c, errors, "order", order, sizeof order, 0) == 1) {
        if (s_one_of(order, orders))
            p->desc = strcmp(order, "desc") == 0;
        else
            s_query_err(errors, "order", "enum", "input should be 'asc' or 'desc'");
    }
}

/* A trigger's sort key for sort=next_fire_at: its next fire time as the
 * listing shows it, or -1 when it has none (paused, ended, MANUAL). */
typedef struct {
    int64_t at;
    char id[32];
} next_fire_t;

static int s_next_fire_cmp(const next_fire_t *a, const next_fire_t *b, int desc)
{
    if ((a->at < 0) != (b->at < 0))
        return a->at < 0 ? 1 : -1; /* none last, in either order */
    if (a->at != b->at)
        return (a->at < b->at ? -1 : 1) * (desc ? -1 : 1);
    return strcmp(a->id, b->id) * (desc ? -1 : 1);
}

static int s_next_fire_asc(const void *a, const void *b)
{
    return s_next_fire_cmp(a, b, 0);
}

static int s_next_fire_desc(const void *a, const void *b)
{
    return s_next_fire_cmp(a, b, 1);
}

/* Reads the sort keys of every trigger filter matches into *out (the
 * caller frees it). Returns the count, -1 on a store error (answered), or
 * -2 when more than LIST_NEXT_FIRE_MAX match (not answered). */
static long s_next_fire_keys(ctx_t *c, const bson_t *filter, next_fire_t **out)
{
    bson_t *opts = BCON_NEW("projection", "{", "schedule", BCON_INT32(1), "status",
                            BCON_INT32(1), "}");
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(c->gw->store, "triggers"), filter, opts, NULL);
    next_fire_t *v = NULL;
    long n = 0, cap = 0;
    int64_t now = clock_wall_ms();
    const bson_t *doc;
    while (n >= 0 && mongoc_cursor_next(cur, &doc)) {
        if (n == LIST_NEXT_FIRE_MAX) {
            n = -2;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            next_fire_t *grown = realloc(v, (size_t)cap * sizeof *v);
            if (!grown) {
                n = -3;
                break;
            }
            v = grown;
        }
        int active = strcmp(bj_get_str(doc, "status", ""), "active") == 0;
        v[n].at = active ? trigger_next_fire(doc, now) : -1;
        snprintf(v[n].id, sizeof v[n].id, "%s", bj_get_str(doc, "_id", ""));
        n++;
    }
    bson_error_t berr;
    err_t err = {0};
    if (n >= 0 && mongoc_cursor_error(cur, &berr)) {
        store_error(&berr, "list triggers", &err);
        s_store_error(c->resp, &err);
        n = -1;
    } else if (n == -3) {
        s_detail(c->resp, 500, "out of memory");
        n = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    if (n < 0)
        free(v);
    else
        *out = v;
    return n;
}

/* GET /triggers?sort=next_fire_at: the next fire time is derived from each
 * definition (as the items show it), so the matching triggers are sorted
 * here, by _id within one time, and only the page's are then read whole. */
static void s_list_by_next_fire(ctx_t *c, const bson_t *filter, const list_params_t *p)
{
    next_fire_t *keys = NULL;
    long n = s_next_fire_keys(c, filter, &keys);
    if (n == -2) {
        json_t *errors = json_array();
        s_query_err(errors, "sort", "value_error",
                    "sort=next_fire_at is limited to %d matching triggers: narrow the listing "
                    "with filters or sort by created_at or name",
                    LIST_NEXT_FIRE_MAX);
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
        return;
    }
    if (n < 0)
        return;
    if (n > 1) /* keys is NULL when nothing matches, which qsort must not see */
        qsort(keys, (size_t)n, sizeof *keys, p->desc ? s_next_fire_desc : s_next_fire_asc);
    long first = (p->pg.page - 1) * p->pg.size;
    long last = first + p->pg.size < n ? first + p->pg.size : n;
    json_t *items = json_array();
    if (first < last) {
        bson_t q = BSON_INITIALIZER, in, ids;
        BSON_APPEND_DOCUMENT_BEGIN(&q, "_id", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &ids);
        for (long i = first; i < last; i++) {
            char k[24];
            snprintf(k, sizeof k, "%ld", i - first);
            BSON_APPEND_UTF8(&ids, k, keys[i].id);
        }
        bson_append_array_end(&in, &ids);
        bson_append_document_end(&q, &in);
        mongoc_cursor_t *cur =
            mongoc_collection_find_with_opts(store_coll(c->gw->store, "triggers"), &q, NULL, NULL);
        json_t *byid = json_object();
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc))
            json_object_set_new(byid, bj_get_str(doc, "_id", ""), s_render_trigger(doc));
        bson_error_t berr;
        err_t err = {0};
        int failed = mongoc_cursor_error(cur, &berr);
        mongoc_cursor_destroy(cur);
        bson_destroy(&q);
        for (long i = first; i < last && !failed; i++) {
            json_t *t = json_object_get(byid, keys[i].id);
            if (t) /* absent: deleted since the first read */
                json_array_append(items, t);
        }
        json_decref(byid);
        if (failed) {
            free(keys);
            json_decref(items);
            store_error(&berr, "list triggers", &err);
            s_store_error(c->resp, &err);
            return;
        }
    }
    free(keys);
    s_page_out(c, &p->pg, items, n, NULL);
}

/* GET /triggers with TriggerListParams. */
static void s_list_triggers(ctx_t *c)
{
    bson_t *filter = c->user.is_admin ? bson_new() : BCON_NEW("owner", BCON_UTF8(c->user.sub));
    json_t *errors = json_array();
    list_params_t p;
    s_list_params(c, errors, &p, filter);
    if (json_array_size(errors) > 0) {
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
        bson_destroy(filter);
        return;
    }
    json_decref(errors);
    if (p.sort == SORT_NEXT_FIRE_AT) {
        s_list_by_next_fire(c, filter, &p);
    } else {
        int dir = p.desc ? -1 : 1;
        bson_t *sort = BCON_NEW(p.sort == SORT_NAME ? "name" : "created_at", BCON_INT32(dir),
                                "_id", BCON_INT32(dir));
        s_page(c, "triggers", filter, sort, &p.pg, s_render_trigger, NULL);
        bson_destroy(sort);
    }
    bson_destroy(filter);
}

/* History filters: ?status= (one or a comma list of job statuses) and
 * ?from= / ?to= (ISO-8601), from <= scheduled_for < to. */
static void s_history_filters(const ctx_t *c, json_t *errors, bson_t *filter)
{
    static const char *const statuses[] = {"queued", "running", "retrying", "succeeded", "failed",
                                           "timed_out", "lost", "skipped", "cancelled", NULL};
    char status[256], from[65], to[65];
    if (s_query_param(c, errors, "status", status, sizeof status, 0) == 1) {
        bson_t in, arr;
        int i = 0, bad = 0;
        BSON_APPEND_DOCUMENT_BEGIN(filter, "status", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        for (char *save = NULL, *st = strtok_r(status, ",", &save); st;
             st = strtok_r(NULL, ",", &save)) {
            char k[24];
            snprintf(k, sizeof k, "%d", i++);
            BSON_APPEND_UTF8(&arr, k, st);
            bad |= !s_one_of(st, statuses);
        }
        bson_append_array_end(&in, &arr);
        bson_append_document_end(filter, &in);
        if (bad || i == 0)
            s_query_err(errors, "status", "enum",
                        "input should be one or a comma-separated list of 'queued', 'running', "
                        "'retrying', 'succeeded', 'failed', 'timed_out', 'lost', 'skipped', "
                        "'cancelled'");
    }
    int64_t from_ms = 0, to_ms = 0;
    int rf = s_query_param(c, errors, "from", from, sizeof from, 0);
    int rt = s_query_param(c, errors, "to", to, sizeof to, 0);
    if (rf == 1 && clock_parse_iso(from, &from_ms) < 0) {
        s_query_err(errors, "from", "datetime_parsing",
                    "must be an ISO-8601 date-time with a zone (a '+' must be sent as %%2B)");
        rf = -1;
    }
    if (rt == 1 && clock_parse_iso(to, &to_ms) < 0) {
        s_query_err(errors, "to", "datetime_parsing",
                    "must be an ISO-8601 date-time with a zone (a '+' must be sent as %%2B)");
        rt = -1;
    }
    if (rf == 1 && rt == 1 && to_ms <= from_ms)
        s_query_err(errors, "to", "value_error", "must be after from");
    if (rf == 1 || rt == 1) {
        bson_t range;
        BSON_APPEND_DOCUMENT_BEGIN(filter, "scheduled_for", &range);
        if (rf == 1)
            BSON_APPEND_DATE_TIME(&range, "$gte", from_ms);
        if (rt == 1)
            BSON_APPEND_DATE_TIME(&range, "$lt", to_ms);
        bson_append_document_end(filter, &range);
    }
}

static void s_history(ctx_t *c, const char *id)
{
    bson_t doc;
    if (s_load_trigger(c, id, &doc) < 0)
        return;
    bson_destroy(&doc);
    bson_t *filter = BCON_NEW("trigger_id", BCON_UTF8(id));
    json_t *errors = json_array();
    paging_t pg;
    s_paging(c, errors, &pg);
    s_history_filters(c, errors, filter);
    if (json_array_size(errors) > 0) {
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
    } else {
        json_decref(errors);
        bson_t *sort = BCON_NEW("scheduled_for", BCON_INT32(-1));
        s_page(c, "jobs", filter, sort, &pg, job_to_response,
               json_pack("{s:s}", "trigger_id", id));
        bson_destroy(sort);
    }
    bson_destroy(filter);
}

static int s_load_job(ctx_t *c, const char *id, bson_t *doc)
{
    return s_load_owned(c, "jobs", "job", 200, id, doc);
}

static void s_get_job(ctx_t *c, const char *id)
{
    bson_t doc;
    if (s_load_job(c, id, &doc) < 0)
        return;
    s_json(c->resp, 200, job_to_response(&doc));
    bson_destroy(&doc);
}

/* Adds a {type, loc: ["body", a, b?], msg} entry to errors. */
static void s_body_err(json_t *errors, const char *type, const char *a, const char *b,
                       const char *msg)
{
    json_t *loc = b ? json_pack("[s,s,s]", "body", a, b) : a ? json_pack("[s,s]", "body", a)
                                                            : json_pack("[s]", "body");
    json_array_append_new(errors,
                          json_pack("{s:s, s:o, s:s}", "type", type, "loc", loc, "msg", msg));
}

/* Checks an execute body ({"parameters": {"force_execution", "override_config"}}),
 * adding every problem to errors; *force and *override are borrowed from body. */
static void s_execute_args(json_t *body, json_t *errors, json_t **force, json_t **override)
{
    json_t *params = json_object_get(body, "parameters");
    *force = params ? json_object_get(params, "force_execution") : NULL;
    *override = params ? json_object_get(params, "override_config") : NULL;
    const char *key;
    json_t *val;
    if (!json_is_object(body))
        s_body_err(errors, "dict_type", NULL, NULL, "input should be a valid object");
    else
        json_object_foreach(body, key, val) if (strcmp(key, "parameters") != 0)
            s_body_err(errors, "extra_forbidden", key, NULL, "extra fields not permitted");
    if (params && !json_is_object(params))
        s_body_err(errors, "dict_type", "parameters", NULL, "input should be a valid object");
    else if (params)
        json_object_foreach(params, key, val) if (strcmp(key, "force_execution") != 0 &&
                                                  strcmp(key, "override_config") != 0)
            s_body_err(errors, "extra_forbidden", "parameters", key, "extra fields not permitted");
    if (*force && !json_is_boolean(*force))
        s_body_err(errors, "bool_type", "parameters", "force_execution",
                   "input should be a valid boolean");
    if (*override && !json_is_object(*override))
        s_body_err(errors, "dict_type", "parameters", "override_config",
                   "input should be a valid object");
    json_t *loc = json_pack("[s,s,s]", "body", "parameters", "override_config");
    if (json_is_object(*override))
        trigger_check_freeform(*override, loc, errors);
    json_decref(loc);
}

/* This run's parameters (new): the trigger's, with override_config laid
 * over them; NULL with an entry in errors if that is too large to send. */
static json_t *s_run_params(const bson_t *trig, json_t *override, json_t *errors)
{
    json_t *tdoc = bj_to_json(trig);
    json_t *ec = json_object_get(tdoc, "execution_config");
    json_t *run = json_deep_copy(json_object_get(ec, "parameters"));
    json_decref(tdoc);
    if (!json_is_object(run)) {
        json_decref(run);
        run = json_object();
    }
    if (override)
        json_object_update(run, override);
    json_t *loc = json_pack("[s,s,s]", "body", "parameters", "override_config");
    if (trigger_check_params_size(run, loc, errors) < 0) {
        json_decref(run);
        run = NULL;
    }
    json_decref(loc);
    return run;
}

/* Inserts the queued manual job of trigger id (loaded as trig) and answers 202. */
static void s_insert_run(ctx_t *c, const char *id, const bson_t *trig, json_t *run_params,
                         int forced)
{
    bson_oid_t oid;
    char oidhex[25], job_id[128];
    bson_oid_init(&oid, NULL);
    bson_oid_to_string(&oid, oidhex);
    snprintf(job_id, sizeof job_id, "%s@m%s", id, oidhex);
    int64_t now = clock_wall_ms();
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(job_id), "trigger_id", BCON_UTF8(id), "owner",
                           BCON_UTF8(bj_get_str(trig, "owner", "")), "partition",
                           BCON_INT32((int32_t)bj_get_int(trig, "partition", 0)), "kind",
                           BCON_UTF8("manual"), "task_type",
                           BCON_UTF8(bj_get_str(trig, "execution_config.task_type", "noop")),
                           "scheduled_for", BCON_DATE_TIME(now), "status", BCON_UTF8("queued"),
                           "attempt", BCON_INT32(1), "created_at", BCON_DATE_TIME(now), "run_at",
                           BCON_DATE_TIME(now), "force_execution", BCON_BOOL(forced),
                           "requested_by", BCON_UTF8(c->user.sub));
    bj_append(doc, "parameters", run_params);
    bson_error_t berr;
    err_t err = {0};
    if (!mongoc_collection_insert_one(store_coll(c->gw->store, "jobs"), doc, NULL, NULL, &berr)) {
        store_error(&berr, "insert manual job", &err);
        s_store_error(c->resp, &err);
    } else {
        gateway_notify_job(c->gw, id, job_id, "run");
        s_audit(c, "trigger.execute", job_id, NULL, doc);
        log_info("manual run requested", "trigger=%s job=%s force=%d user=%s", id, job_id, forced,
                 c->user.sub);
        char at[40];
        clock_format_iso(now, at, sizeof at);
        s_json(c->resp, 202,
               json_pack("{s:s, s:s, s:s, s:s, s:b, s:O, s:s}", "job_id", job_id, "trigger_id", id,
                         "status", "queued", "scheduled_for", at, "force_execution", forced,
                         "parameters", run_params, "message", "run requested"));
    }
    bson_destroy(doc);
}

/* POST /triggers/{id}/execute: a manual run. The gateway inserts the job
 * (claim by insert: `_id` "<trigger>@m<ObjectId>") as queued and tells the
 * masters; the partition's holder dispatches it under the trigger's
 * policies, or regardless of pause and overlap with force_execution. */
static void s_execute(ctx_t *c, const char *id)
{
    bson_t trig;
    if (s_load_trigger(c, id, &trig) < 0)
        return;
    json_t *body = c->req->body_len ? s_body(c) : json_object();
    if (!body)
        goto out_trig;
    json_t *errors = json_array(), *force, *override, *run_params = NULL;
    s_execute_args(body, errors, &force, &override);
    int forced = json_is_true(force);
    if (json_array_size(errors) > 0)
        goto out_invalid;
    if (!forced && strcmp(bj_get_str(&trig, "status", ""), "active") != 0) {
        s_detail(c->resp, 409,
                 "trigger is paused: set parameters.force_execution to run it anyway");
        goto out_errors;
    }
    if (!(run_params = s_run_params(&trig, override, errors)))
        goto out_invalid;
    s_insert_run(c, id, &trig, run_params, forced);
    json_decref(run_params);
    goto out_errors;
out_invalid:
    s_json(c->resp, 422, json_pack("{s:O}", "detail", errors));
out_errors:
    json_decref(errors);
    json_decref(body);
out_trig:
    bson_destroy(&trig);
}

/* POST /jobs/{id}/cancel: asks the partition's master to cancel a job
 * that is not final yet (CANCEL to its worker if it runs). */
static void s_cancel_job(ctx_t *c, const char *id)
{
    bson_t doc;
    if (s_load_job(c, id, &doc) < 0)
        return;
    const char *status = bj_get_str(&doc, "status", "");
    if (strcmp(status, "queued") != 0 && strcmp(status, "running") != 0 &&
        strcmp(status, "retrying") != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "job is already %s", status);
        s_detail(c->resp, 409, msg);
        bson_destroy(&doc);
        return;
    }
    gateway_notify_job(c->gw, bj_get_str(&doc, "trigger_id", ""), id, "cancel");
    s_audit(c, "job.cancel", id, &doc, NULL);
    log_info("job cancel requested", "job=%s user=%s", id, c->user.sub);
    s_json(c->resp, 202, json_pack("{s:s, s:s, s:s}", "job_id", id, "status", "cancelling",
                                   "message", "cancel requested"));
    bson_destroy(&doc);
}

static void s_health(ctx_t *c)
{
    err_t err = {0};
    int64_t t0 = clock_mono_ms();
    int store_ok = store_ping(c->gw->store, &err) == 0;
    int64_t latency = clock_mono_ms() - t0;
    json_t *masters = json_array(), *workers = json_object(), *unserved = json_object();
    json_int_t queue_depth = 0, fire_lag = 0;
    int covered = 0;
    if (store_ok) {
        bson_t *q = BCON_NEW("role", BCON_UTF8("master"), "expires_at", "{", "$gt",
                             BCON_DATE_TIME(clock_wall_ms()), "}");
        mongoc_cursor_t *cur =
            mongoc_collection_find_with_opts(store_coll(c->gw->store, "members"), q, NULL, NULL);
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc)) {
            json_t *m = bj_to_json(doc);
            json_t *parts = json_object_get(m, "partitions");
            covered += (int)json_array_size(parts);
            size_t i;
            json_t *w;
            json_array_foreach(json_object_get(m, "workers"), i, w)
                json_object_set(workers, json_string_value(json_object_get(w, "node_id")), w);
            queue_depth += json_integer_value(json_object_get(m, "pending"));
            if (json_integer_value(json_object_get(m, "fire_lag_ms")) > fire_lag)
                fire_lag = json_integer_value(json_object_get(m, "fire_lag_ms"));
            json_array_foreach(json_object_get(m, "unserved_task_types"), i, w)
                if (json_is_string(w))
                    json_object_set(unserved, json_string_value(w), json_true());
            json_array_append_new(masters,
                                  json_pack("{s:O, s:O, s:i, s:O, s:O}", "node_id",
                                            json_object_get(m, "node_id"), "endpoint",
                                            json_object_get(m, "endpoint"), "partitions",
                                            (int)json_array_size(parts), "heartbeat_at",
                                            json_object_get(m, "heartbeat_at"), "pending",
                                            json_object_get(m, "pending")));
            json_decref(m);
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(q);
    }
    json_t *reasons = json_array();
    if (!store_ok)
        json_array_append_new(reasons, json_string("store unreachable"));
    if (store_ok && json_array_size(masters) == 0)
        json_array_append_new(reasons, json_string("no master alive"));
    else if (store_ok && covered < c->gw->cfg->partitions)
        json_array_append_new(reasons, json_string("some partitions have no master"));
    if (store_ok && json_object_size(workers) == 0)
        json_array_append_new(reasons, json_string("no worker connected"));
    if (fire_lag > c->gw->cfg->health_lag_ms) {
        char msg[120];
        snprintf(msg, sizeof msg, "fire lag %lld ms in the last minute is above %d ms",
                 (long long)fire_lag, c->gw->cfg->health_lag_ms);
        json_array_append_new(reasons, json_string(msg));
    }
    json_t *ulist = json_array();
    const char *ut;
    json_t *uv;
    json_object_foreach(unserved, ut, uv) json_array_append_new(ulist, json_string(ut));
    json_decref(unserved);
    if (json_array_size(ulist)) {
        char msg[600] = "task types with queued jobs but no worker:";
        size_t ui;
        json_array_foreach(ulist, ui, uv)
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s %s", ui ? "," : "",
                     json_string_value(uv));
        json_array_append_new(reasons, json_string(msg));
    }
    const char *status = !store_ok ? "unhealthy" : json_array_size(reasons) ? "degraded" : "healthy";
    json_t *wlist = json_array();
    const char *k;
    json_t *w;
    json_object_foreach(workers, k, w) json_array_append(wlist, w);
    json_decref(workers);
    char now[40];
    clock_format_iso(clock_wall_ms(), now, sizeof now);
    s_json(c->resp, store_ok ? 200 : 503,
           json_pack("{s:s, s:o, s:{s:b, s:I}, s:o, s:o, s:o, s:I, s:I, s:{s:i, s:i}, s:s}",
                     "status", status, "reasons", reasons, "store", "reachable", store_ok,
                     "latency_ms", (json_int_t)latency, "masters", masters, "workers", wlist,
                     "unserved_task_types", ulist, "queue_depth", queue_depth, "fire_lag_ms",
                     fire_lag, "partitions", "total", c->gw->cfg->partitions, "covered",
                     covered, "checked_at", now));
}

/* Lock endpoints are for admins only. */
static int s_require_admin(ctx_t *c)
{
    if (c->user.is_admin)
        return 0;
    s_detail(c->resp, 403, "admin role required");
    return -1;
}

/* GET /locks: the head epoch of every lease chain. */
static void s_list_locks(ctx_t *c)
{
    json_t *out = NULL;
    err_t err = {0};
    if (locks_list(c->gw->store, &out, &err) < 0)
        s_store_error(c->resp, &err);
    else
        s_json(c->resp, 200, out);
}

/* 409 naming who holds a lock, with the holder as "lock". */
static void s_lock_conflict(ctx_t *c, const char *name, json_t *holder)
{
    char msg[640];
    const char *owner = json_string_value(json_object_get(holder, "owner"));
    const char *until = json_string_value(json_object_get(holder, "expires_at"));
    if (holder && owner && until)
        snprintf(msg, sizeof msg, "lock '%s' is held by '%.255s' until %s (epoch %lld)", name,
                 owner, until, (long long)json_integer_value(json_object_get(holder, "epoch")));
    else
        snprintf(msg, sizeof msg, "lock '%s' is held by someone else", name);
    json_t *m = json_string(msg);
    s_json(c->resp, 409, json_pack("{s:o, s:o*}", "detail", m ? m : json_string("lock is held"),
                                   "lock", holder));
}

/* POST /locks (LockAcquisitionRequest): 201 acquired, 200 renewed by its
 * owner, 409 held by another owner. */
static void s_acquire_lock(ctx_t *c)
{
    json_t *body = s_body(c);
    if (!body)
        return;
    lock_request_t r;
    json_t *errors = locks_check_request(body, c->user.sub, &r);
    json_decref(body);
    if (errors) {
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
        return;
    }
    json_t *lock = NULL;
    err_t err = {0};
    int rc = locks_acquire(c->gw->store, &r, &lock, &err);
    if (rc < 0) {
        json_decref(lock);
        s_store_error(c->resp, &err);
        return;
    }
    if (rc == LOCK_HELD) {
        s_lock_conflict(c, r.name, lock);
        return;
    }
    log_info(rc == LOCK_CREATED ? "lock acquired" : "lock renewed",
             "lock=%s owner=\"%s\" epoch=%lld ttl_s=%d by=%s", r.name, r.owner,
             (long long)json_integer_value(json_object_get(lock, "epoch")), r.ttl_s, c->user.sub);
    s_audit(c, rc == LOCK_CREATED ? "lock.acquire" : "lock.renew", r.name, NULL, NULL);
    if (!lock)
        s_detail(c->resp, 500, "lock vanished after it was taken");
    else
        s_json(c->resp, rc == LOCK_CREATED ? 201 : 200, lock);
}

/* DELETE /locks/{name}?owner=&epoch=: releases a lock the owner (default:
 * the caller) holds, at that epoch if given. */
static void s_release_lock(ctx_t *c, const char *name)
{
    char owner[256];
    long epoch = 0;
    json_t *errors = json_array();
    int ro = s_query_param(c, errors, "owner", owner, sizeof owner, 0);
    if (ro == 1 && !owner[0])
        s_query_err(errors, "owner", "string_too_short", "must not be empty");
    if (s_query_int(c, "epoch", 0, 1, LONG_MAX, &epoch) < 0)
        s_query_err(errors, "epoch", "value_error", "must be a positive integer");
    if (json_array_size(errors) > 0) {
        s_json(c->resp, 422, json_pack("{s:o}", "detail", errors));
        return;
    }
    json_decref(errors);
    if (ro != 1)
        snprintf(owner, sizeof owner, "%s", c->user.sub);
    json_t *holder = NULL;
    err_t err = {0};
    int rc = locks_name_valid(name) ? locks_release(c->gw->store, name, owner, epoch, &holder, &err)
                                    : ERR_NOTFOUND;
    if (rc == ERR_NOTFOUND) {
        s_detail(c->resp, 404, "lock not found or not held");
    } else if (rc == ERR_CONFLICT) {
        s_lock_conflict(c, name, holder);
        holder = NULL;
    } else if (rc < 0) {
        s_store_error(c->resp, &err);
    } else {
        log_info("lock released", "lock=%s owner=\"%s\" by=%s", name, owner, c->user.sub);
        s_audit(c, "lock.release", name, NULL, NULL);
        c->resp->status = 204;
    }
    json_decref(holder);
}

/* GET /docs/openapi/scheduler_openapi.json and .yaml, without a token.
 * Returns 1 if the path is one of them (answered), else 0. */
static int s_docs(ctx_t *c)
{
    static const char base[] = "/docs/openapi/scheduler_openapi.";
    const http_req_t *r = c->req;
    size_t n = sizeof base - 1;
    if (r->path_len != n + 4 || memcmp(r->path, base, n) != 0)
        return 0;
    int yaml = memcmp(r->path + n, "yaml", 4) == 0;
    if (!yaml && memcmp(r->path + n, "json", 4) != 0)
        return 0;
    if (s_limit_ip(c) < 0)
        return 1;
    size_t len = 0;
    const char *text = openapi_text(c->gw->openapi, yaml, &len);
    if (!s_method(c, "GET") && !s_method(c, "HEAD")) {
        s_detail(c->resp, 405, "Method Not Allowed");
    } else if (!text) {
        s_detail(c->resp, 503, "the OpenAPI document is not installed (see SKED_OPENAPI_PATH)");
    } else if ((c->resp->body = malloc(len ? len : 1))) {
        memcpy(c->resp->body, text, len);
        c->resp->body_len = len;
        c->resp->content_type = yaml ? "application/yaml" : "application/json";
    } else {
        s_detail(c->resp, 500, "out of memory");
    }
    return 1;
}

/* GET/HEAD /metrics without a token. Returns 1 if the path is it (answered). */
static int s_metrics(ctx_t *c)
{
    const http_req_t *r = c->req;
    if (r->path_len != 8 || memcmp(r->path, "/metrics", 8) != 0)
        return 0;
    if (s_limit_ip(c) < 0)
        return 1;
    http_resp_add_header(c->resp, "Cache-Control", "no-store");
    if (!s_method(c, "GET") && !s_method(c, "HEAD")) {
        http_resp_add_header(c->resp, "Allow", "GET, HEAD");
        s_detail(c->resp, 405, "Method Not Allowed");
    } else if ((c->resp->body = metrics_render())) {
        c->resp->body_len = strlen(c->resp->body);
        c->resp->content_type = METRICS_CONTENT_TYPE;
    } else {
        s_detail(c->resp, 500, "out of memory");
    }
    return 1;
}

/* Splits the path below PREFIX into segments; -1 if not under it. */
static int s_split(ctx_t *c, char *buf, size_t size)
{
    const http_req_t *r = c->req;
    size_t plen = strlen(PREFIX);
    if (r->path_len < plen || memcmp(r->path, PREFIX, plen) != 0 || r->path_len - plen >= size)
        return -1;
    memcpy(buf, r->path + plen, r->path_len - plen);
    buf[r->path_len - plen] = '\0';
    if (buf[0] != '\0' && buf[0] != '/')
        return -1;
    for (char *save = NULL, *p = strtok_r(buf, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
        if (c->nsegs == MAX_SEGS)
            return -1;
        c->segs[c->nsegs++] = p;
    }
    return 0;
}

static int s_is(const ctx_t *c, int n, const char *a, const char *b)
{
    return c->nsegs == n && (!a || strcmp(c->segs[0], a) == 0) &&
           (!b || (n > 2 && strcmp(c->segs[2], b) == 0));
}

/* The route template of a request, for metrics labels: a path of the
 * OpenAPI document, "/metrics", or "other". */
static const char *s_route_label(const http_req_t *req)
{
    static const char docs[] = "/docs/openapi/scheduler_openapi.";
    size_t nd = sizeof docs - 1;
    if (req->path_len == 8 && memcmp(req->path, "/metrics", 8) == 0)
        return "/metrics";
    if (req->path_len == nd + 4 && memcmp(req->path, docs, nd) == 0)
        return memcmp(req->path + nd, "json", 4) == 0   ? "/docs/openapi/scheduler_openapi.json"
               : memcmp(req->path + nd, "yaml", 4) == 0 ? "/docs/openapi/scheduler_openapi.yaml"
                                                        : "other";
    ctx_t c = {.req = req};
    char buf[1024];
    if (s_split(&c, buf, sizeof buf) < 0 || c.nsegs == 0)
        return "other";
    const char *a = c.segs[0], *b = c.nsegs > 1 ? c.segs[1] : "", *x = c.nsegs > 2 ? c.segs[2] : "";
    if (c.nsegs == 1)
        return strcmp(a, "triggers") == 0 ? PREFIX "/triggers/"
               : strcmp(a, "health") == 0 ? PREFIX "/health"
               : strcmp(a, "locks") == 0  ? PREFIX "/locks"
                                          : "other";
    if (c.nsegs == 2)
        return strcmp(a, "triggers") == 0                             ? PREFIX "/triggers/{trigger_id}"
               : strcmp(a, "jobs") == 0                               ? PREFIX "/jobs/{job_id}"
               : strcmp(a, "locks") == 0                              ? PREFIX "/locks/{name}"
               : strcmp(a, "cron") == 0 && strcmp(b, "preview") == 0 ? PREFIX "/cron/preview"
                                                                      : "other";
    if (c.nsegs == 3 && strcmp(a, "triggers") == 0) {
        static const char *const acts[] = {"pause", "resume", "history", "execute"};
        static const char *const labels[] = {
            PREFIX "/triggers/{trigger_id}/pause", PREFIX "/triggers/{trigger_id}/resume",
            PREFIX "/triggers/{trigger_id}/history", PREFIX "/triggers/{trigger_id}/execute"};
        for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
            if (strcmp(x, acts[i]) == 0)
                return labels[i];
    }
    if (c.nsegs == 3 && strcmp(a, "jobs") == 0 && strcmp(x, "cancel") == 0)
        return PREFIX "/jobs/{job_id}/cancel";
    return "other";
}

static const char *s_method_label(const http_req_t *req)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (req->method_len == strlen(known[i]) && memcmp(req->method, known[i], req->method_len) == 0)
            return known[i];
    return "other";
}

void api_metrics_init(gateway_t *gw)
{
    gw->m_requests = metrics_counter("sked_http_requests_total",
                                     "HTTP requests answered, by route template, method and status.",
                                     "route,method,status");
    metric_set_limit(gw->m_requests, 1024); /* 15 routes x 7 methods x a few statuses */
    gw->m_duration = metrics_histogram("sked_http_request_duration_seconds",
                                       "Time to handle an HTTP request, by route template and method.",
                                       "route,method", metrics_seconds_buckets,
                                       METRICS_SECONDS_NBUCKETS);
    gw->m_jwt_rejections = metrics_counter("sked_jwt_rejections_total",
                                           "Requests refused 401 for their token, by reason.",
                                           "reason");
    gw->m_rate_limited = metrics_counter("sked_rate_limited_total",
                                         "Requests refused 429 by the rate limit, by scope (user, ip).",
                                         "scope");
}

static void s_route(ctx_t *c);

void api_handle(void *arg, const http_req_t *req, http_resp_t *resp)
{
    gateway_t *gw = arg;
    int64_t t0 = zclock_usecs();
    ctx_t c = {.gw = gw, .req = req, .resp = resp};
    s_route(&c);
    const char *route = s_route_label(req), *method = s_method_label(req);
    char status[8];
    snprintf(status, sizeof status, "%d", resp->status >= 200 && resp->status <= 599 ? resp->status : 500);
    metric_inc(gw->m_requests, (const char *[]){route, method, status}, 1);
    metric_observe(gw->m_duration, (const char *[]){route, method}, (zclock_usecs() - t0) / 1e6);
}

/* Routes one request; c is zeroed but for gw, req and resp. */
static void s_route(ctx_t *cp)
{
    ctx_t c = *cp;
    const http_req_t *req = c.req;
    http_resp_t *resp = c.resp;
    char buf[1024];
    http_resp_add_header(resp, "X-Content-Type-Options", "nosniff");
    if (cors_is_preflight(req)) {
        if (s_limit_ip(&c) == 0)
            cors_preflight(c.gw->cors, req, resp);
        return;
    }
    cors_apply(c.gw->cors, req, resp);
    if (s_docs(&c) || s_metrics(&c))
        return;
    if (s_split(&c, buf, sizeof buf) < 0) {
        if (s_limit_ip(&c) == 0)
            s_detail(resp, 404, "Not Found");
        return;
    }
    http_resp_add_header(resp, "Cache-Control", "no-store");
    if (s_is(&c, 1, "health", NULL)) {
        if (s_limit_ip(&c) < 0)
            return;
        if (!s_method(&c, "GET"))
            s_detail(resp, 405, "Method Not Allowed");
        else
            s_health(&c);
        return;
    }
    int preview = c.nsegs == 2 && strcmp(c.segs[0], "cron") == 0 &&
                  strcmp(c.segs[1], "preview") == 0;
    int action = s_is(&c, 3, "triggers", "pause") || s_is(&c, 3, "triggers", "resume");
    int execute = s_is(&c, 3, "triggers", "execute");
    int cancel = s_is(&c, 3, "jobs", "cancel");
    int locks = s_is(&c, 1, "locks", NULL) || s_is(&c, 2, "locks", NULL);
    int known = s_is(&c, 1, "triggers", NULL) || s_is(&c, 2, "triggers", NULL) ||
                s_is(&c, 3, "triggers", "history") || action || s_is(&c, 2, "jobs", NULL) ||
                preview || locks || execute || cancel;
    if (!known) {
        if (s_limit_ip(&c) == 0)
            s_detail(resp, 404, "Not Found");
        return;
    }
    if (s_authenticate(&c) < 0)
        return;
    if (s_is(&c, 1, "triggers", NULL) && s_method(&c, "POST"))
        s_create_trigger(&c);
    else if (s_is(&c, 1, "triggers", NULL) && s_method(&c, "GET"))
        s_list_triggers(&c);
    else if (s_is(&c, 2, "triggers", NULL) && s_method(&c, "GET")) {
        bson_t doc;
        if (s_load_trigger(&c, c.segs[1], &doc) == 0) {
            s_respond_trigger(&c, 200, &doc);
            bson_destroy(&doc);
        }
    } else if (s_is(&c, 2, "triggers", NULL) && s_method(&c, "PUT"))
        s_change_trigger(&c, c.segs[1], CHANGE_PUT);
    else if (s_is(&c, 2, "triggers", NULL) && s_method(&c, "PATCH"))
        s_change_trigger(&c, c.segs[1], CHANGE_PATCH);
    else if (s_is(&c, 2, "triggers", NULL) && s_method(&c, "DELETE"))
        s_delete_trigger(&c, c.segs[1]);
    else if (action && s_method(&c, "POST"))
        s_change_trigger(&c, c.segs[1],
                         strcmp(c.segs[2], "pause") == 0 ? CHANGE_PAUSE : CHANGE_RESUME);
    else if (s_is(&c, 3, "triggers", "history") && s_method(&c, "GET"))
        s_history(&c, c.segs[1]);
    else if (s_is(&c, 2, "jobs", NULL) && s_method(&c, "GET"))
        s_get_job(&c, c.segs[1]);
    else if (execute && s_method(&c, "POST"))
        s_execute(&c, c.segs[1]);
    else if (cancel && s_method(&c, "POST"))
        s_cancel_job(&c, c.segs[1]);
    else if (preview && s_method(&c, "GET"))
        s_cron_preview(&c);
    else if (locks && s_require_admin(&c) < 0)
        return;
    else if (s_is(&c, 1, "locks", NULL) && s_method(&c, "GET"))
        s_list_locks(&c);
    else if (s_is(&c, 1, "locks", NULL) && s_method(&c, "POST"))
        s_acquire_lock(&c);
    else if (s_is(&c, 2, "locks", NULL) && s_method(&c, "DELETE"))
        s_release_lock(&c, c.segs[1]);
    else
        s_detail(resp, 405, "Method Not Allowed");
}
