/*
 * store.c - mongoc client wrapper and BSON/JSON conversion; see store.h.
 *
 * Index creation goes through the createIndexes command so one code path
 * serves MongoDB and FerretDB; a server that refuses an index (FerretDB v1
 * has no TTL monitor) only costs garbage collection, never correctness.
 */
#include "common/store.h"

#include "common/clock.h"
#include "common/log.h"

#include <assert.h>
#include <string.h>
#include <time.h>

#define MAX_COLLS 16

struct store {
    mongoc_client_t *client;
    char db[64];
    struct {
        char name[32];
        mongoc_collection_t *coll;
    } colls[MAX_COLLS];
    int ncolls;
};

static int s_inited;

/* The driver's own messages go through our log instead of its default
 * handler's plain stderr lines, so that a JSON log stays one object per
 * line (it warns, for one, "Falling back to malloc for counters" when a
 * /dev/shm file of a dead process has the same pid). Its warnings and
 * errors are logged at warn, the rest at debug. */
static void s_driver_log(mongoc_log_level_t level, const char *domain, const char *message,
                         void *arg)
{
    (void)arg;
    if (level <= MONGOC_LOG_LEVEL_WARNING)
        log_warn("store driver", "domain=%s text=\"%s\"", domain, message);
    else
        log_debug("store driver", "domain=%s text=\"%s\"", domain, message);
}

store_t *store_new(const char *uri_text, err_t *err)
{
    return store_new_patient(uri_text, 10000, err);
}

store_t *store_new_patient(const char *uri_text, int socket_timeout_ms, err_t *err)
{
    if (!s_inited) {
        mongoc_log_set_handler(s_driver_log, NULL);
        mongoc_init();
        atexit(mongoc_cleanup);
        s_inited = 1;
    }
    bson_error_t berr;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_text, &berr);
    if (!uri) {
        err_set(err, ERR_INVALID, "cannot parse SKED_MONGO_URI: %s", berr.message);
        return NULL;
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 2000);
    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, socket_timeout_ms);
    /* Retry quickly after a failed selection instead of mongoc's 5 s cooldown. */
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTRYONCE))
        mongoc_uri_set_option_as_bool(uri, MONGOC_URI_SERVERSELECTIONTRYONCE, false);
    store_t *self = calloc(1, sizeof *self);
    const char *db = mongoc_uri_get_database(uri);
    snprintf(self->db, sizeof self->db, "%s", db && *db ? db : "sked");
    self->client = mongoc_client_new_from_uri_with_error(uri, &berr);
    mongoc_uri_destroy(uri);
    if (!self->client) {
        err_set(err, ERR_INVALID, "cannot create MongoDB client: %s", berr.message);
        free(self);
        return NULL;
    }
    mongoc_client_set_error_api(self->client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(self->client, "sked");
    return self;
}

void store_destroy(store_t **self_p)
{
    store_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->ncolls; i++)
        mongoc_collection_destroy(self->colls[i].coll);
    mongoc_client_destroy(self->client);
    free(self);
    *self_p = NULL;
}

mongoc_collection_t *store_coll(store_t *self, const char *name)
{
    for (int i = 0; i < self->ncolls; i++)
        if (strcmp(self->colls[i].name, name) == 0)
            return self->colls[i].coll;
    assert(self->ncolls < MAX_COLLS);
    int i = self->ncolls++;
    snprintf(self->colls[i].name, sizeof self->colls[i].name, "%s", name);
    self->colls[i].coll = mongoc_client_get_collection(self->client, self->db, name);
    return self->colls[i].coll;
}

mongoc_collection_t *store_coll_new(store_t *self, const char *name)
{
    return mongoc_client_get_collection(self->client, self->db, name);
}

int store_error(const bson_error_t *e, const char *what, err_t *err)
{
    int code = ERR_SYS;
    if (e->code == 11000 || e->code == 11001 || e->code == MONGOC_ERROR_DUPLICATE_KEY)
        code = ERR_CONFLICT;
    else if (e->domain == MONGOC_ERROR_SERVER_SELECTION || e->domain == MONGOC_ERROR_STREAM ||
             e->domain == MONGOC_ERROR_CLIENT)
        code = ERR_RETRY;
    return err_set(err, code, "cannot %s: %s", what, e->message);
}

int store_get_by_id(store_t *self, const char *coll, const char *id, bson_t *out, err_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(store_coll(self, coll), filter, opts, NULL);
    const bson_t *doc;
    int rc = 0;
    if (mongoc_cursor_next(cur, &doc)) {
        bson_copy_to(doc, out);
        rc = 1;
    }
    bson_error_t berr;
    if (mongoc_cursor_error(cur, &berr)) {
        if (rc == 1)
            bson_destroy(out);
        rc = store_error(&berr, "read by _id", err);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    bson_destroy(opts);
    return rc;
}

/* The index of an ordered bulk's first write error and whether it was a
 * duplicate key; -1 if the reply names none. */
static int64_t s_first_error(const bson_t *reply, int *dup)
{
    bson_iter_t it, first, field;
    *dup = 0;
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !bson_iter_recurse(&it, &first) ||
        !bson_iter_next(&first) || !BSON_ITER_HOLDS_DOCUMENT(&first))
        return -1;
    int64_t index = -1;
    bson_iter_t sub = first;
    if (bson_iter_recurse(&sub, &field) && bson_iter_find(&field, "code"))
        *dup = bson_iter_as_int64(&field) == 11000;
    if (bson_iter_recurse(&first, &field) && bson_iter_find(&field, "index"))
        index = bson_iter_as_int64(&field);
    return index;
}

/* Updates (updates non-NULL) or deletes the documents of coll with _id
 * ids[i], in order, STORE_BULK_MAX to an ordered bulk; returns how many
 * were done before the first failure (n if none). */
static size_t s_by_ids(store_t *self, const char *coll, const char *const *ids,
                       bson_t *const *updates, size_t n, int64_t *matched, bson_error_t *berr)
{
    for (size_t i = 0; i < n; i += STORE_BULK_MAX) {
        size_t k = n - i < STORE_BULK_MAX ? n - i : STORE_BULK_MAX, done = k;
        mongoc_bulk_operation_t *bulk =
            mongoc_collection_create_bulk_operation_with_opts(store_coll(self, coll), NULL);
        bool ok = true;
        for (size_t j = 0; j < k && ok; j++) {
            bson_t *filter = BCON_NEW("_id", BCON_UTF8(ids[i + j]));
            ok = updates ? mongoc_bulk_operation_update_one_with_opts(bulk, filter, updates[i + j],
                                                                       NULL, berr)
                         : mongoc_bulk_operation_remove_one_with_opts(bulk, filter, NULL, berr);
            bson_destroy(filter);
        }
        bson_t reply = BSON_INITIALIZER; /* execute replaces it; stays empty if not run */
        ok = ok && mongoc_bulk_operation_execute(bulk, &reply, berr);
        *matched += bj_get_int(&reply, "nMatched", 0);
        if (!ok) { /* an ordered bulk stops at its first error */
            int dup;
            int64_t at = s_first_error(&reply, &dup);
            done = at < 0 ? 0 : (size_t)at;
        }
        bson_destroy(&reply);
        mongoc_bulk_operation_destroy(bulk);
        if (done < k)
            return i + done;
    }
    return n;
}

size_t store_update_by_ids(store_t *self, const char *coll, const char *const *ids,
                           bson_t *const *updates, size_t n, int64_t *matched,
                           bson_error_t *berr)
{
    return s_by_ids(self, coll, ids, updates, n, matched, berr);
}

size_t store_delete_by_ids(store_t *self, const char *coll, const char *const *ids, size_t n,
                           bson_error_t *berr)
{
    int64_t matched = 0;
    return s_by_ids(self, coll, ids, NULL, n, &matched, berr);
}

size_t store_insert_new(store_t *self, const char *coll, bson_t *const *docs, size_t n,
                        bson_error_t *berr)
{
    size_t i = 0;
    while (i < n) {
        size_t k = n - i < STORE_BULK_MAX ? n - i : STORE_BULK_MAX, done = k;
        mongoc_bulk_operation_t *bulk =
            mongoc_collection_create_bulk_operation_with_opts(store_coll(self, coll), NULL);
        bool ok = true;
        for (size_t j = 0; j < k && ok; j++)
            ok = mongoc_bulk_operation_insert_with_opts(bulk, docs[i + j], NULL, berr);
        bson_t reply = BSON_INITIALIZER;
        ok = ok && mongoc_bulk_operation_execute(bulk, &reply, berr);
        if (!ok) { /* ordered: stops at its first error; a taken _id is no failure */
            int dup;
            int64_t at = s_first_error(&reply, &dup);
            done = at < 0 ? 0 : dup ? (size_t)at + 1 : (size_t)at;
            if (at < 0 || !dup)
                k = 0; /* a failure: stop after what went in */
        }
        bson_destroy(&reply);
        mongoc_bulk_operation_destroy(bulk);
        i += done;
        if (k == 0)
            return i;
    }
    return n;
}

void store_job_overlay(const bson_t *job, const bson_t *record, bson_t *out)
{
    bson_t set = BSON_INITIALIZER, push = BSON_INITIALIZER;
    bson_iter_t it;
    uint32_t len;
    const uint8_t *data;
    if (bson_iter_init_find(&it, record, "set") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_document(&it, &len, &data);
        bson_init_static(&set, data, len);
    }
    if (bson_iter_init_find(&it, record, "push") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_document(&it, &len, &data);
        bson_init_static(&push, data, len);
    }
    bson_init(out);
    bson_t attempts;
    int n = 0, have = 0;
    bson_iter_init(&it, job);
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        if (strcmp(key, "attempts") != 0 && !bson_has_field(&set, key))
            bson_append_iter(out, key, -1, &it);
    }
    bson_iter_init(&it, &set);
    while (bson_iter_next(&it))
        bson_append_iter(out, bson_iter_key(&it), -1, &it);
    BSON_APPEND_ARRAY_BEGIN(out, "attempts", &attempts);
    bson_iter_t arr, el;
    if (bson_iter_init_find(&arr, job, "attempts") && BSON_ITER_HOLDS_ARRAY(&arr) &&
        bson_iter_recurse(&arr, &el)) {
        while (bson_iter_next(&el)) {
            char k[16];
            snprintf(k, sizeof k, "%d", n++);
            bson_append_iter(&attempts, k, -1, &el);
            if (BSON_ITER_HOLDS_DOCUMENT(&el)) {
                bson_t entry;
                bson_iter_document(&el, &len, &data);
                have |= bson_init_static(&entry, data, len) && bson_equal(&entry, &push);
            }
        }
    }
    if (!have && !bson_empty(&push)) { /* folded already: it is there */
        char k[16];
        snprintf(k, sizeof k, "%d", n);
        BSON_APPEND_DOCUMENT(&attempts, k, &push);
    }
    bson_append_array_end(out, &attempts);
}

int store_get_job(store_t *self, const char *id, bson_t *out, err_t *err)
{
    bson_t job, record;
    int rc = store_get_by_id(self, "jobs", id, &job, err);
    if (rc != 1)
        return rc;
    int has = store_get_by_id(self, STORE_RESULTS, id, &record, err);
    if (has < 0) {
        bson_destroy(&job);
        return has;
    }
    if (has == 0) {
        bson_copy_to(&job, out);
        bson_destroy(&job);
        return 1;
    }
    store_job_overlay(&job, &record, out);
    bson_destroy(&job);
    bson_destroy(&record);
    return 1;
}

void store_changes_name(int64_t at_ms, char *out, size_t size)
{
    time_t secs = (time_t)(at_ms / STORE_CHANGES_WINDOW_MS * (STORE_CHANGES_WINDOW_MS / 1000));
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, size, STORE_CHANGES_PREFIX "%04d%02d%02d%02d%02d", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
}

int store_note_change(store_t *self, const char *trigger_id, int partition, err_t *err)
{
    int64_t now = clock_wall_ms();
    char coll[64];
    store_changes_name(now, coll, sizeof coll);
    bson_oid_t oid;
    bson_oid_init(&oid, NULL);
    bson_t *doc = BCON_NEW("_id", BCON_OID(&oid), "trigger_id", BCON_UTF8(trigger_id),
                           "partition", BCON_INT32(partition), "at", BCON_DATE_TIME(now));
    bson_error_t berr;
    int rc = 0;
    mongoc_collection_t *c = store_coll_new(self, coll);
    if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &berr))
        rc = store_error(&berr, "note trigger change", err);
    mongoc_collection_destroy(c);
    bson_destroy(doc);
    return rc;
}

int store_drop_changes_before(store_t *self, int64_t cutoff_ms, err_t *err)
{
    mongoc_database_t *db = mongoc_client_get_database(self->client, self->db);
    bson_error_t berr;
    char **names = mongoc_database_get_collection_names_with_opts(db, NULL, &berr);
    int n = 0;
    char last[64];
    /* a window's name sorts as its minute: those before the cutoff's go */
    store_changes_name(cutoff_ms - STORE_CHANGES_WINDOW_MS, last, sizeof last);
    for (char **name = names; name && *name && n >= 0; name++) {
        if (strncmp(*name, STORE_CHANGES_PREFIX, strlen(STORE_CHANGES_PREFIX)) != 0 ||
            strlen(*name) != strlen(last) || strcmp(*name, last) > 0)
            continue;
        mongoc_collection_t *c = mongoc_database_get_collection(db, *name);
        if (mongoc_collection_drop(c, &berr))
            n++;
        else if (!strstr(berr.message, "ns not found"))
            n = store_error(&berr, "drop trigger change window", err);
        mongoc_collection_destroy(c);
    }
    if (!names)
        n = store_error(&berr, "list collections", err);
    bson_strfreev(names);
    mongoc_database_destroy(db);
    return n;
}

int store_ping(store_t *self, err_t *err)
{
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_error_t berr;
    bool ok = mongoc_client_command_simple(self->client, "admin", cmd, NULL, NULL, &berr);
    bson_destroy(cmd);
    if (!ok)
        return store_error(&berr, "reach the store", err) == ERR_CONFLICT ? ERR_SYS : ERR_RETRY;
    return 0;
}

static void s_index(store_t *self, const char *coll, const char *name, bson_t *keys,
                    bool unique, int ttl)
{
    bson_t cmd, indexes, index;
    bson_init(&cmd);
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);
    BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &index);
    BSON_APPEND_DOCUMENT(&index, "key", keys);
    BSON_APPEND_UTF8(&index, "name", name);
    if (unique)
        BSON_APPEND_BOOL(&index, "unique", true);
    if (ttl >= 0)
        BSON_APPEND_INT32(&index, "expireAfterSeconds", ttl);
    bson_append_document_end(&indexes, &index);
    bson_append_array_end(&cmd, &indexes);
    bson_error_t berr;
    mongoc_database_t *db = mongoc_client_get_database(self->client, self->db);
    if (!mongoc_database_write_command_with_opts(db, &cmd, NULL, NULL, &berr))
        log_warn("index not created; continuing without it", "collection=%s index=%s reason=\"%s\"",
                 coll, name, berr.message);
    mongoc_database_destroy(db);
    bson_destroy(&cmd);
    bson_destroy(keys);
}

void store_ensure_indexes(store_t *self)
{
    s_index(self, "jobs", "trigger_scheduled", BCON_NEW("trigger_id", BCON_INT32(1),
                                                         "scheduled_for", BCON_INT32(1)),
            true, -1);
    s_index(self, "jobs", "status_run_at", BCON_NEW("status", BCON_INT32(1), "run_at", BCON_INT32(1)),
            false, -1);
    s_index(self, "jobs", "created_at", BCON_NEW("created_at", BCON_INT32(1)), false, -1);
    s_index(self, STORE_RESULTS, "partition", BCON_NEW("partition", BCON_INT32(1)), false, -1);
    s_index(self, "triggers", "owner_name", BCON_NEW("owner", BCON_INT32(1), "name", BCON_INT32(1)),
            true, -1);
    s_index(self, "triggers", "partition", BCON_NEW("partition", BCON_INT32(1)), false, -1);
    s_index(self, "trigger_state", "partition_next",
            BCON_NEW("partition", BCON_INT32(1), "next_fire_at", BCON_INT32(1)), false, -1);
    /* Lease epochs are kept (a chain must not lose its head); only documents
     * that carry gc_at (finished execution locks) are garbage-collected. */
    s_index(self, "locks", "gc_at_ttl", BCON_NEW("gc_at", BCON_INT32(1)), false, 0);
    s_index(self, "members", "expires_at_ttl", BCON_NEW("expires_at", BCON_INT32(1)), false, 3600);
    s_index(self, "audit", "at", BCON_NEW("at", BCON_INT32(1)), false, -1);
}

/* ---- BSON <-> JSON ---------------------------------------------------- */

static json_t *s_value_to_json(const bson_iter_t *it);

static json_t *s_doc_to_json(const uint8_t *data, uint32_t len, int array)
{
    bson_t sub;
    bson_iter_t it;
    json_t *out = array ? json_array() : json_object();
    if (!bson_init_static(&sub, data, len) || !bson_iter_init(&it, &sub))
        return out;
    while (bson_iter_next(&it)) {
        json_t *v = s_value_to_json(&it);
        if (array)
            json_array_append_new(out, v);
        else
            json_object_set_new(out, bson_iter_key(&it), v);
    }
    return out;
}

static json_t *s_value_to_json(const bson_iter_t *it)
{
    uint32_t len;
    const uint8_t *data;
    char buf[40];
    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8: {
        const char *s = bson_iter_utf8(it, &len);
        return json_stringn(s, len);
    }
    case BSON_TYPE_INT32:
        return json_integer(bson_iter_int32(it));
    case BSON_TYPE_INT64:
        return json_integer(bson_iter_int64(it));
    case BSON_TYPE_DOUBLE:
        return json_real(bson_iter_double(it));
    case BSON_TYPE_BOOL:
        return json_boolean(bson_iter_bool(it));
    case BSON_TYPE_DATE_TIME:
        clock_format_iso(bson_iter_date_time(it), buf, sizeof buf);
        return json_string(buf);
    case BSON_TYPE_OID:
        bson_oid_to_string(bson_iter_oid(it), buf);
        return json_string(buf);
    case BSON_TYPE_DOCUMENT:
        bson_iter_document(it, &len, &data);
        return s_doc_to_json(data, len, 0);
    case BSON_TYPE_ARRAY:
        bson_iter_array(it, &len, &data);
        return s_doc_to_json(data, len, 1);
    default:
        return json_null();
    }
}

json_t *bj_to_json(const bson_t *doc)
{
    return s_doc_to_json(bson_get_data(doc), doc->len, 0);
}

void bj_append(bson_t *dst, const char *key, const json_t *v)
{
    bson_t child;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *val;
        BSON_APPEND_DOCUMENT_BEGIN(dst, key, &child);
        json_object_foreach((json_t *)v, k, val) bj_append(&child, k, val);
        bson_append_document_end(dst, &child);
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *val;
        char idx[24];
        BSON_APPEND_ARRAY_BEGIN(dst, key, &child);
        json_array_foreach(v, i, val)
        {
            snprintf(idx, sizeof idx, "%zu", i);
            bj_append(&child, idx, val);
        }
        bson_append_array_end(dst, &child);
        break;
    }
    case JSON_STRING:
        bson_append_utf8(dst, key, -1, json_string_value(v), (int)json_string_length(v));
        break;
    case JSON_INTEGER:
        BSON_APPEND_INT64(dst, key, json_integer_value(v));
        break;
    case JSON_REAL:
        BSON_APPEND_DOUBLE(dst, key, json_real_value(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        BSON_APPEND_BOOL(dst, key, json_is_true(v));
        break;
    case JSON_NULL:
        BSON_APPEND_NULL(dst, key);
        break;
    }
}

static int s_find(const bson_t *doc, const char *dotted, bson_iter_t *out)
{
    bson_iter_t it;
    return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, dotted, out);
}

int64_t bj_get_int(const bson_t *doc, const char *dotted, int64_t def)
{
    bson_iter_t it;
    if (!s_find(doc, dotted, &it))
        return def;
    if (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_DOUBLE(&it))
        return bson_iter_as_int64(&it);
    return def;
}

int64_t bj_get_date(const bson_t *doc, const char *dotted, int64_t def)
{
    bson_iter_t it;
    if (!s_find(doc, dotted, &it))
        return def;
    if (BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return def;
}

const char *bj_get_str(const bson_t *doc, const char *dotted, const char *def)
{
    bson_iter_t it;
    if (!s_find(doc, dotted, &it) || !BSON_ITER_HOLDS_UTF8(&it))
        return def;
    return bson_iter_utf8(&it, NULL);
}

void bj_append_in_utf8(bson_t *filter, const char *key, const char *const *vals, size_t n)
{
    bson_t in, arr;
    BSON_APPEND_DOCUMENT_BEGIN(filter, key, &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < n; i++) {
        char k[24];
        snprintf(k, sizeof k, "%zu", i);
        BSON_APPEND_UTF8(&arr, k, vals[i]);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(filter, &in);
}

void bj_append_in_int32(bson_t *filter, const char *key, const int *vals, int n)
{
    bson_t in, arr;
    BSON_APPEND_DOCUMENT_BEGIN(filter, key, &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", i);
        BSON_APPEND_INT32(&arr, k, vals[i]);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(filter, &in);
}
