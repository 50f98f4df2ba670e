/*
 * locks.c - the lock endpoints' store side: listing every lease chain's
 * head, and named locks for external coordination (LockAcquisitionRequest).
 *
 * A named lock is a lease of common/lease.c on resource "named/<name>":
 * a chain of epoch documents `named/<name>#k` in `locks`, claimed by
 * inserting the next epoch once the head is absent, expired or released
 * (store rule 1: the unique _id admits one contender, so two gateways
 * racing for one lock cannot both win). The epoch is the fencing token
 * handed to the client. Only the holder's owner string ever updates an
 * epoch document (renewal, release), by _id (store rules 2 and 3).
 *
 * Gateways are stateless, so every call starts from scratch: the head is
 * found by one query on `resource` (newest epoch first), then lease.c
 * probes forward by _id for anything newer and contends or renews.
 * Acquiring a lock its owner already holds renews it: expires_at becomes
 * now + ttl, the epoch stays. Release sets expires_at to now.
 *
 * Listing and the head query read secondary fields; they are admin
 * operations, off every hot path.
 */
#include "gateway/gateway.h"

#include "common/clock.h"
#include "common/lease.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_PREFIX "named/"
#define LOCK_MAX_TTL_S 86400

int locks_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > LOCK_NAME_MAX || !isalnum((unsigned char)name[0]))
        return 0;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.:-", *p))
            return 0;
    return 1;
}

/* 1 if s[0..n) holds no control character (NUL included). */
static int s_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static void s_err(json_t *errors, const char *type, const char *field, const char *msg)
{
    json_t *loc = json_pack("[s]", "body");
    if (field)
        json_array_append_new(loc, json_string(field));
    json_array_append_new(errors, json_pack("{s:s, s:o, s:s}", "type", type, "loc", loc, "msg", msg));
}

json_t *locks_check_request(json_t *body, const char *default_owner, lock_request_t *out)
{
    json_t *errors = json_array();
    memset(out, 0, sizeof *out);
    if (!json_is_object(body)) {
        s_err(errors, "model_attributes_type", NULL, "input should be a valid object");
        return errors;
    }
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val)
    {
        if (strcmp(key, "name") && strcmp(key, "ttl_seconds") && strcmp(key, "owner")) {
            char field[128];
            snprintf(field, sizeof field, "%.120s", key);
            s_err(errors, "extra_forbidden", field, "extra fields not permitted");
        }
    }
    json_t *name = json_object_get(body, "name");
    if (!name || json_is_null(name))
        s_err(errors, "missing", "name", "field required");
    else if (!json_is_string(name))
        s_err(errors, "string_type", "name", "input should be a valid string");
    else if (json_string_length(name) != strlen(json_string_value(name)) ||
             !locks_name_valid(json_string_value(name)))
        s_err(errors, "string_pattern_mismatch", "name",
              "1 to 64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit");
    else
        snprintf(out->name, sizeof out->name, "%s", json_string_value(name));
    json_t *ttl = json_object_get(body, "ttl_seconds");
    if (!ttl || json_is_null(ttl))
        s_err(errors, "missing", "ttl_seconds", "field required");
    else if (!json_is_integer(ttl))
        s_err(errors, "int_type", "ttl_seconds", "input should be a valid integer");
    else if (json_integer_value(ttl) < 1 || json_integer_value(ttl) > LOCK_MAX_TTL_S)
        s_err(errors, "value_error", "ttl_seconds", "must be between 1 and 86400");
    else
        out->ttl_s = (int)json_integer_value(ttl);
    json_t *owner = json_object_get(body, "owner");
    if (owner && !json_is_null(owner)) {
        size_t n = json_string_length(owner);
        if (!json_is_string(owner))
            s_err(errors, "string_type", "owner", "input should be a valid string");
        else if (n == 0 || n >= sizeof out->owner || !s_printable(json_string_value(owner), n))
            s_err(errors, "string_length", "owner",
                  "must be 1 to 255 bytes without control characters");
        else
            snprintf(out->owner, sizeof out->owner, "%s", json_string_value(owner));
    } else {
        snprintf(out->owner, sizeof out->owner, "%s", default_owner);
    }
    if (json_array_size(errors) > 0)
        return errors;
    json_decref(errors);
    return NULL;
}

static void s_set_time(json_t *obj, const char *key, int64_t ms)
{
    char buf[40];
    if (ms <= 0) {
        json_object_set_new(obj, key, json_null());
        return;
    }
    clock_format_iso(ms, buf, sizeof buf);
    json_object_set_new(obj, key, json_string(buf));
}

/* An epoch document as the API shows it. */
static json_t *s_render(const bson_t *doc, int64_t now)
{
    const char *res = bj_get_str(doc, "resource", "");
    const char *slash = strchr(res, '/');
    int64_t expires = bj_get_date(doc, "expires_at", 0);
    json_t *out = json_object();
    json_object_set_new(out, "resource", json_string(res));
    json_object_set_new(out, "type", slash ? json_stringn(res, (size_t)(slash - res))
                                           : json_string("other"));
    json_object_set_new(out, "name", json_string(slash ? slash + 1 : res));
    json_object_set_new(out, "epoch", json_integer(bj_get_int(doc, "epoch", 0)));
    json_object_set_new(out, "owner", json_string(bj_get_str(doc, "owner", "")));
    s_set_time(out, "acquired_at", bj_get_date(doc, "acquired_at", 0));
    s_set_time(out, "expires_at", expires);
    s_set_time(out, "released_at", bj_get_date(doc, "released_at", 0));
    json_object_set_new(out, "held", json_boolean(expires > now));
    return out;
}

/* Reads epoch `epoch` of resource; 1 found, 0 absent, <0 error. */
static int s_read_epoch(store_t *store, const char *resource, int64_t epoch, bson_t *out,
                        err_t *err)
{
    char id[128];
    snprintf(id, sizeof id, "%s#%lld", resource, (long long)epoch);
    return store_get_by_id(store, "locks", id, out, err);
}

/* Finds the head of resource's chain: the newest epoch a query finds,
 * then probes forward by _id (an epoch inserted meanwhile). Returns 1 with
 * the head in *doc (and its epoch in *epoch), 0 if the chain is empty,
 * <0 on error. */
static int s_head(store_t *store, const char *resource, bson_t *doc, int64_t *epoch, err_t *err)
{
    bson_t *filter = BCON_NEW("resource", BCON_UTF8(resource), "kind", BCON_UTF8("lease"));
    bson_t *opts = BCON_NEW("sort", "{", "epoch", BCON_INT32(-1), "}", "limit", BCON_INT64(1),
                            "projection", "{", "epoch", BCON_INT32(1), "}");
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(store, "locks"), filter, opts, NULL);
    const bson_t *found;
    *epoch = 0;
    if (mongoc_cursor_next(cur, &found))
        *epoch = bj_get_int(found, "epoch", 0);
    bson_error_t berr;
    int rc = mongoc_cursor_error(cur, &berr) ? store_error(&berr, "find lock head", err) : 0;
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    if (rc < 0)
        return rc;
    int have = 0;
    for (;;) {
        bson_t next;
        rc = s_read_epoch(store, resource, *epoch + 1, &next, err);
        if (rc < 0) {
            if (have)
                bson_destroy(doc);
            return rc;
        }
        if (rc == 0)
            break;
        if (have)
            bson_destroy(doc);
        bson_steal(doc, &next);
        have = 1;
        ++*epoch;
    }
    if (have || *epoch == 0)
        return have;
    rc = s_read_epoch(store, resource, *epoch, doc, err);
    return rc;
}

static int s_live(const bson_t *doc)
{
    return bj_get_date(doc, "expires_at", 0) > clock_wall_ms();
}

/* Renders the current head of resource into *out (NULL if none). */
static int s_render_head(store_t *store, const char *resource, json_t **out, err_t *err)
{
    bson_t head;
    int64_t epoch;
    int rc = s_head(store, resource, &head, &epoch, err);
    *out = NULL;
    if (rc == 1) {
        *out = s_render(&head, clock_wall_ms());
        bson_destroy(&head);
    }
    return rc < 0 ? rc : 0;
}

/* Renews lease L (epoch L->epoch, live and owned by owner per head).
 * Returns 1 renewed, 0 fenced off meanwhile, <0 error. */
static int s_renew(store_t *store, lease_t *L, const bson_t *head, const char *owner, int ttl_ms,
                   err_t *err)
{
    /* lease.c renews only before its holder's deadline; a stateless holder's
     * deadline is the expiry stored in the head it has just read. */
    L->held = 1;
    L->valid_until = clock_mono_ms() + (bj_get_date(head, "expires_at", 0) - clock_wall_ms());
    return lease_tick(store, L, owner, ttl_ms, err);
}

int locks_acquire(store_t *store, const lock_request_t *req, json_t **out, err_t *err)
{
    char resource[96];
    snprintf(resource, sizeof resource, LOCK_PREFIX "%s", req->name);
    lease_t L;
    lease_init(&L, resource);
    bson_t head;
    *out = NULL;
    int rc = s_head(store, resource, &head, &L.epoch, err);
    if (rc < 0)
        return rc;
    int have = rc == 1;
    int ours = have && s_live(&head) && strcmp(bj_get_str(&head, "owner", ""), req->owner) == 0;
    int ttl_ms = req->ttl_s * 1000, renewed = 0;
    if (ours)
        renewed = rc = s_renew(store, &L, &head, req->owner, ttl_ms, err);
    /* Not ours, or it lapsed or was fenced off while being renewed: contend
     * like anyone else (lease.c probes past the epoch it knows). */
    if (!ours || rc == 0)
        rc = lease_tick(store, &L, req->owner, ttl_ms, err);
    if (have)
        bson_destroy(&head);
    if (rc < 0)
        return rc;
    int result = rc == 0 ? LOCK_HELD : renewed == 1 ? LOCK_RENEWED : LOCK_CREATED;
    if (result == LOCK_HELD) {
        rc = s_render_head(store, resource, out, err);
    } else {
        rc = s_read_epoch(store, resource, L.epoch, &head, err);
        if (rc == 1) {
            *out = s_render(&head, clock_wall_ms());
            bson_destroy(&head);
        }
    }
    if (rc < 0)
        return rc;
    return result;
}

int locks_release(store_t *store, const char *name, const char *owner, int64_t epoch,
                  json_t **holder, err_t *err)
{
    char resource[96];
    snprintf(resource, sizeof resource, LOCK_PREFIX "%s", name);
    *holder = NULL;
    bson_t head;
    int64_t head_epoch;
    int rc = s_head(store, resource, &head, &head_epoch, err);
    if (rc <= 0)
        return rc < 0 ? rc : ERR_NOTFOUND;
    if (!s_live(&head)) {
        rc = ERR_NOTFOUND;
    } else if (strcmp(bj_get_str(&head, "owner", ""), owner) != 0 ||
               (epoch > 0 && epoch != head_epoch)) {
        *holder = s_render(&head, clock_wall_ms());
        rc = ERR_CONFLICT;
    } else {
        lease_t L;
        lease_init(&L, resource);
        L.epoch = head_epoch;
        L.held = 1;
        rc = lease_release(store, &L, err);
    }
    bson_destroy(&head);
    return rc;
}

/* Sort order of the listing: partitions by number, then other types by
 * type and name. */
static int s_cmp(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const char *tx = json_string_value(json_object_get(x, "type"));
    const char *ty = json_string_value(json_object_get(y, "type"));
    int px = strcmp(tx, "partition") == 0, py = strcmp(ty, "partition") == 0;
    if (px != py)
        return py - px;
    int c = strcmp(tx, ty);
    if (c)
        return c;
    const char *nx = json_string_value(json_object_get(x, "name"));
    const char *ny = json_string_value(json_object_get(y, "name"));
    if (px) {
        long lx = strtol(nx, NULL, 10), ly = strtol(ny, NULL, 10);
        if (lx != ly)
            return lx < ly ? -1 : 1;
    }
    return strcmp(nx, ny);
}

int locks_list(store_t *store, json_t **out, err_t *err)
{
    bson_t *filter = BCON_NEW("kind", BCON_UTF8("lease"));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(store, "locks"), filter, NULL, NULL);
    json_t *heads = json_object(); /* resource -> rendered head */
    int64_t now = clock_wall_ms();
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc)) {
        const char *res = bj_get_str(doc, "resource", "");
        json_t *seen = json_object_get(heads, res);
        if (!seen || json_integer_value(json_object_get(seen, "epoch")) < bj_get_int(doc, "epoch", 0))
            json_object_set_new(heads, res, s_render(doc, now));
    }
    bson_error_t berr;
    int rc = mongoc_cursor_error(cur, &berr) ? store_error(&berr, "list locks", err) : 0;
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    size_t n = json_object_size(heads), i = 0;
    json_t **sorted = calloc(n ? n : 1, sizeof *sorted);
    if (rc == 0 && !sorted)
        rc = err_set(err, ERR_SYS, "cannot list locks: out of memory");
    if (rc < 0) {
        free(sorted);
        json_decref(heads);
        return rc;
    }
    const char *key;
    json_t *val;
    json_object_foreach(heads, key, val) sorted[i++] = val;
    qsort(sorted, n, sizeof *sorted, s_cmp);
    json_t *items = json_array();
    for (i = 0; i < n; i++)
        json_array_append(items, sorted[i]);
    free(sorted);
    json_decref(heads);
    *out = json_pack("{s:o, s:I}", "items", items, "total", (json_int_t)n);
    return 0;
}
