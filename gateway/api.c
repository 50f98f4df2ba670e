/*
 * api.c - the REST API under /api/scheduler: routing, authentication,
 * handlers and error responses.
 *
 * Every endpoint but health needs "Authorization: Bearer <JWT>"; the
 * token's sub owns what it creates, and only admins see other users'
 * triggers (others get 404, which reveals nothing). Errors use FastAPI's
 * shape: {"detail": "..."} or {"detail": [{type, loc, msg}, ...]}.
 * Paths are accepted with and without a trailing slash.
 */
#include "gateway/gateway.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/schedule.h"

#include <stdlib.h>
#include <string.h>

#define PREFIX "/api/scheduler"
#define MAX_SEGS 8

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

static int s_method(const ctx_t *c, const char *m)
{
    return c->req->method_len == strlen(m) && memcmp(c->req->method, m, c->req->method_len) == 0;
}

/* Value of ?name= in the query string as an integer within bounds. Returns
 * 0 (and *out = def) if absent, -1 if not a valid number. */
static int s_query_int(const ctx_t *c, const char *name, long def, long min, long max, long *out)
{
    *out = def;
    const char *q = c->req->query, *end = q + c->req->query_len;
    size_t n = strlen(name);
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) > n && memcmp(q, name, n) == 0 && q[n] == '=') {
            char buf[32];
            size_t len = (size_t)(stop - q) - n - 1;
            if (len == 0 || len >= sizeof buf)
                return -1;
            memcpy(buf, q + n + 1, len);
            buf[len] = '\0';
            char *e;
            long v = strtol(buf, &e, 10);
            if (*e || v < min || v > max)
                return -1;
            *out = v;
            return 1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
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
        return 0;
    log_info("request rejected", "reason=%s remote=%s", token_reason_name(r), c->req->remote_addr);
    http_resp_add_header(c->resp, "WWW-Authenticate", "Bearer");
    s_detail(c->resp, 401, err.msg);
    return -1;
}

/* Reads one document by _id; 1 found (copied to out), 0 absent, <0 error. */
static int s_get(gateway_t *gw, const char *coll, const char *id, bson_t *out, err_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(gw->store, coll), filter, NULL, NULL);
    const bson_t *doc;
    int rc = 0;
    if (mongoc_cursor_next(cur, &doc)) {
        bson_copy_to(doc, out);
        rc = 1;
    }
    bson_error_t berr;
    if (mongoc_cursor_error(cur, &berr))
        rc = store_error(&berr, "read", err);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    return rc;
}

/* Loads a trigger the caller may see; answers 404/503 itself on failure. */
static int s_load_trigger(ctx_t *c, const char *id, bson_t *doc)
{
    err_t err = {0};
    int rc = strlen(id) < 64 ? s_get(c->gw, "triggers", id, doc, &err) : 0;
    if (rc < 0) {
        s_store_error(c->resp, &err);
        return -1;
    }
    if (rc == 1 && (c->user.is_admin || strcmp(bj_get_str(doc, "owner", ""), c->user.sub) == 0))
        return 0;
    if (rc == 1)
        bson_destroy(doc);
    s_detail(c->resp, 404, "trigger not found");
    return -1;
}

static void s_respond_trigger(ctx_t *c, int status, const bson_t *doc)
{
    bson_t state;
    err_t err = {0};
    int have = s_get(c->gw, "trigger_state", bj_get_str(doc, "_id", ""), &state, &err) == 1;
    s_json(c->resp, status, trigger_to_response(doc, have ? &state : NULL));
    if (have)
        bson_destroy(&state);
}

static void s_create_trigger(ctx_t *c)
{
    json_error_t jerr;
    json_t *body = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        s_json(c->resp, 400,
               json_pack("{s:[{s:s, s:[s], s:s, s:i, s:i}]}", "detail", "type", "json_invalid",
                         "loc", "body", "msg", msg, "line", jerr.line, "column", jerr.column));
        return;
    }
    int64_t now = clock_wall_ms();
    json_t *errors = NULL;
    bson_t *doc = trigger_from_request(body, c->gw->cfg->partitions, now, &errors);
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
    gateway_notify(c->gw, id, "upsert");
    s_json(c->resp, 201, trigger_to_response(&full, NULL));
    bson_destroy(&full);
}

/* Runs a paginated find and renders {items, total, page, page_size}. */
static void s_page(ctx_t *c, const char *coll, bson_t *filter, const char *sort_key,
                   json_t *(*render)(const bson_t *), json_t *extra)
{
    long page, size;
    if (s_query_int(c, "page", 1, 1, 1000000, &page) < 0 ||
        s_query_int(c, "page_size", 20, 1, 100, &size) < 0) {
        json_decref(extra);
        s_json(c->resp, 422,
               json_pack("{s:[{s:s, s:[s], s:s}]}", "detail", "type", "value_error", "loc",
                         "query", "msg", "page must be >= 1 and page_size within 1-100"));
        return;
    }
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
    bson_t *opts = BCON_NEW("sort", "{", sort_key, BCON_INT32(-1), "}", "skip",
                            BCON_INT64((page - 1) * size), "limit", BCON_INT64(size));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    json_t *items = json_array();
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc))
        json_array_append_new(items, render(doc));
    int failed = mongoc_cursor_error(cur, &berr);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    if (failed) {
        store_error(&berr, "list", &err);
        json_decref(items);
        json_decref(extra);
        s_store_error(c->resp, &err);
        return;
    }
    json_t *out = extra ? extra : json_object();
    json_object_set_new(out, "items", items);
    json_object_set_new(out, "total", json_integer(total));
    json_object_set_new(out, "page", json_integer(page));
    json_object_set_new(out, "page_size", json_integer(size));
    s_json(c->resp, 200, out);
}

static json_t *s_render_trigger(const bson_t *doc)
{
    return trigger_to_response(doc, NULL);
}

static void s_list_triggers(ctx_t *c)
{
    bson_t *filter = c->user.is_admin ? bson_new() : BCON_NEW("owner", BCON_UTF8(c->user.sub));
    s_page(c, "triggers", filter, "created_at", s_render_trigger, NULL);
    bson_destroy(filter);
}

static void s_history(ctx_t *c, const char *id)
{
    bson_t doc;
    if (s_load_trigger(c, id, &doc) < 0)
        return;
    bson_destroy(&doc);
    bson_t *filter = BCON_NEW("trigger_id", BCON_UTF8(id));
    s_page(c, "jobs", filter, "scheduled_for", job_to_response,
           json_pack("{s:s}", "trigger_id", id));
    bson_destroy(filter);
}

static void s_get_job(ctx_t *c, const char *id)
{
    bson_t doc;
    err_t err = {0};
    int rc = strlen(id) < 200 ? s_get(c->gw, "jobs", id, &doc, &err) : 0;
    if (rc < 0) {
        s_store_error(c->resp, &err);
        return;
    }
    if (rc == 1 && !c->user.is_admin && strcmp(bj_get_str(&doc, "owner", ""), c->user.sub) != 0) {
        bson_destroy(&doc);
        rc = 0;
    }
    if (rc == 0) {
        s_detail(c->resp, 404, "job not found");
        return;
    }
    s_json(c->resp, 200, job_to_response(&doc));
    bson_destroy(&doc);
}

static void s_health(ctx_t *c)
{
    err_t err = {0};
    int64_t t0 = clock_mono_ms();
    int store_ok = store_ping(c->gw->store, &err) == 0;
    int64_t latency = clock_mono_ms() - t0;
    json_t *masters = json_array(), *workers = json_object();
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
    const char *status = !store_ok ? "unhealthy" : json_array_size(reasons) ? "degraded" : "healthy";
    json_t *wlist = json_array();
    const char *k;
    json_t *w;
    json_object_foreach(workers, k, w) json_array_append(wlist, w);
    json_decref(workers);
    char now[40];
    clock_format_iso(clock_wall_ms(), now, sizeof now);
    s_json(c->resp, store_ok ? 200 : 503,
           json_pack("{s:s, s:o, s:{s:b, s:I}, s:o, s:o, s:{s:i, s:i}, s:s}", "status", status,
                     "reasons", reasons, "store", "reachable", store_ok, "latency_ms",
                     (json_int_t)latency, "masters", masters, "workers", wlist, "partitions",
                     "total", c->gw->cfg->partitions, "covered", covered, "checked_at", now));
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

void api_handle(void *arg, const http_req_t *req, http_resp_t *resp)
{
    ctx_t c = {.gw = arg, .req = req, .resp = resp};
    char buf[1024];
    if (s_split(&c, buf, sizeof buf) < 0) {
        s_detail(resp, 404, "Not Found");
        return;
    }
    if (s_is(&c, 1, "health", NULL)) {
        if (!s_method(&c, "GET"))
            s_detail(resp, 405, "Method Not Allowed");
        else
            s_health(&c);
        return;
    }
    int known = s_is(&c, 1, "triggers", NULL) || s_is(&c, 2, "triggers", NULL) ||
                s_is(&c, 3, "triggers", "history") || s_is(&c, 2, "jobs", NULL);
    if (!known) {
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
    } else if (s_is(&c, 3, "triggers", "history") && s_method(&c, "GET"))
        s_history(&c, c.segs[1]);
    else if (s_is(&c, 2, "jobs", NULL) && s_method(&c, "GET"))
        s_get_job(&c, c.segs[1]);
    else
        s_detail(resp, 405, "Method Not Allowed");
}
