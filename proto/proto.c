/*
 * proto.c - encode/decode of sked's ZeroMQ messages; see proto.h.
 *
 * One table says, for every body field, its JSON type, where it lives in
 * proto_msg_t, and for which message types it is required or allowed.
 * Encode and decode both walk that table, so they cannot disagree.
 * Unknown body keys are ignored (additions within a version stay
 * compatible); known keys are checked strictly.
 */
#include "proto/proto.h"

#include <jansson.h>
#include <stddef.h>
#include <string.h>

uint64_t proto_dropped;

enum { K_STR, K_INT, K_I64, K_HEAP_STR, K_OBJ_TEXT, K_STR_ARRAY };

#define B(t) (1u << (t))
#define WORKER_HELLO (B(PROTO_HELLO) | B(PROTO_HEARTBEAT))
#define CREDIT (WORKER_HELLO | B(PROTO_REFUSED)) /* what a worker can take now */
#define JOBISH                                                                               \
    (B(PROTO_JOB) | B(PROTO_STARTED) | B(PROTO_FINISHED) | B(PROTO_CANCEL) | B(PROTO_ACK) |      \
     B(PROTO_OUTPUT) | B(PROTO_REFUSED))

typedef struct {
    const char *name;
    int kind;
    size_t off;
    size_t size;       /* char[] capacity for K_STR; max length for K_HEAP_STR */
    unsigned required; /* types that must carry it */
    unsigned allowed;  /* types that may carry it (required implies allowed) */
} field_t;

#define F(n, k, f, sz, req, allow) {n, k, offsetof(proto_msg_t, f), sz, req, (req) | (allow)}
#define ALL 0xffffu

static const field_t s_fields[] = {
    F("node_id", K_STR, node_id, PROTO_ID_MAX, ALL, 0),
    F("seq", K_I64, seq, 0, 0, ALL),
    F("slots", K_INT, slots, 0, CREDIT, 0),
    F("free_slots", K_INT, free_slots, 0, CREDIT, 0),
    F("task_types", K_STR, task_types, 512, CREDIT, 0),
    F("labels", K_STR, labels, 512, 0, WORKER_HELLO),
    F("serves", K_STR, serves, 512, 0, WORKER_HELLO),
    F("echo", K_I64, echo, 0, 0, WORKER_HELLO | B(PROTO_BYE)),
    F("token", K_I64, token, 0, B(PROTO_PING), 0),
    F("running", K_STR_ARRAY, running, PROTO_MAX_RUNNING, 0, B(PROTO_HEARTBEAT) | B(PROTO_BYE)),
    F("job_id", K_STR, job_id, PROTO_ID_MAX, JOBISH, B(PROTO_NOTIFY)),
    F("trigger_id", K_STR, trigger_id, 64, B(PROTO_JOB) | B(PROTO_NOTIFY), JOBISH),
    F("task_type", K_STR, task_type, 64, B(PROTO_JOB), JOBISH),
    F("attempt", K_INT, attempt, 0, JOBISH, 0),
    F("scheduled_for", K_I64, scheduled_for, 0, B(PROTO_JOB), JOBISH),
    F("at", K_I64, at, 0, B(PROTO_STARTED) | B(PROTO_FINISHED), 0),
    F("max_execution_time", K_INT, max_execution_time, 0, 0, B(PROTO_JOB)),
    F("start_at", K_I64, start_at, 0, 0, B(PROTO_JOB)),
    F("parameters", K_OBJ_TEXT, parameters, PROTO_MAX_BODY, B(PROTO_JOB), 0),
    F("status", K_STR, status, 16, B(PROTO_FINISHED), 0),
    F("exit_code", K_INT, exit_code, 0, 0, B(PROTO_FINISHED)),
    F("error", K_HEAP_STR, error, 8192, 0, B(PROTO_FINISHED)),
    F("output", K_HEAP_STR, output, 65536, B(PROTO_OUTPUT), B(PROTO_FINISHED)),
    F("reason", K_STR, reason, 64, 0, B(PROTO_CANCEL)),
    F("duration_ms", K_I64, duration_ms, 0, 0, B(PROTO_FINISHED)),
    F("started_at", K_I64, started_at, 0, 0, B(PROTO_FINISHED)),
    F("op", K_STR, op, 16, B(PROTO_NOTIFY), 0),
};
#define NFIELDS (sizeof s_fields / sizeof s_fields[0])

static const char *s_type_names[PROTO_TYPE_MAX] = {
    NULL, "HELLO", "HEARTBEAT", "JOB", "STARTED", "FINISHED", "NOTIFY", "BYE", "CANCEL", "ACK",
    "OUTPUT", "PING", "REFUSED",
};

const char *proto_type_name(proto_type_t type)
{
    return type > 0 && type < PROTO_TYPE_MAX ? s_type_names[type] : "?";
}

static int s_finished_status_ok(const char *s)
{
    return strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
           strcmp(s, "timed_out") == 0 || strcmp(s, "cancelled") == 0;
}

/* Field values that are "absent" are not encoded: empty strings, NULL
 * pointers, zero numbers that are optional. */
static int s_encode_field(json_t *body, const field_t *f, const proto_msg_t *m, int required,
                          err_t *err)
{
    const char *base = (const char *)m + f->off;
    json_t *v = NULL;
    switch (f->kind) {
    case K_STR:
        if (base[0] || required)
            v = json_string(base);
        break;
    case K_INT:
        if (*(const int *)base || required)
            v = json_integer(*(const int *)base);
        break;
    case K_I64:
        if (*(const int64_t *)base || required)
            v = json_integer(*(const int64_t *)base);
        break;
    case K_HEAP_STR: {
        const char *s = *(char *const *)base;
        if (s)
            v = json_stringn(s, strnlen(s, f->size));
        break;
    }
    case K_OBJ_TEXT: {
        const char *s = *(char *const *)base;
        v = s ? json_loads(s, JSON_REJECT_DUPLICATES, NULL) : json_object();
        if (!json_is_object(v)) {
            json_decref(v);
            return err_set(err, ERR_INVALID, "cannot encode field '%s': not a JSON object", f->name);
        }
        break;
    }
    case K_STR_ARRAY: {
        char *const *arr = *(char **const *)base;
        if (arr) {
            v = json_array();
            for (int i = 0; i < m->nrunning; i++)
                json_array_append_new(v, json_string(arr[i]));
        }
        break;
    }
    }
    if (!v) {
        if (required)
            return err_set(err, ERR_INVALID, "cannot encode %s: field '%s' missing",
                           proto_type_name(m->type), f->name);
        return 0;
    }
    json_object_set_new(body, f->name, v);
    return 0;
}

zmsg_t *proto_encode(const proto_msg_t *msg, err_t *err)
{
    if (msg->type <= 0 || msg->type >= PROTO_TYPE_MAX) {
        err_set(err, ERR_INVALID, "cannot encode message: unknown type %d", (int)msg->type);
        return NULL;
    }
    json_t *body = json_object();
    for (size_t i = 0; i < NFIELDS; i++) {
        const field_t *f = &s_fields[i];
        if (!(f->allowed & B(msg->type)))
            continue;
        if (s_encode_field(body, f, msg, (f->required & B(msg->type)) != 0, err) < 0) {
            json_decref(body);
            return NULL;
        }
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text || strlen(text) > PROTO_MAX_BODY) {
        err_set(err, ERR_INVALID, "cannot encode %s: body larger than %d bytes",
                proto_type_name(msg->type), PROTO_MAX_BODY);
        free(text);
        return NULL;
    }
    zmsg_t *z = zmsg_new();
    zmsg_addstr(z, PROTO_VERSION);
    zmsg_addstr(z, s_type_names[msg->type]);
    zmsg_addmem(z, text, strlen(text));
    free(text);
    return z;
}

static int s_decode_field(const field_t *f, json_t *v, proto_msg_t *m, err_t *err)
{
    char *base = (char *)m + f->off;
    switch (f->kind) {
    case K_STR: {
        if (!json_is_string(v))
            return err_set(err, ERR_INVALID, "field '%s' must be a string", f->name);
        size_t len = json_string_length(v);
        if (len >= f->size || memchr(json_string_value(v), '\0', len))
            return err_set(err, ERR_INVALID, "field '%s' too long or has NUL bytes", f->name);
        memcpy(base, json_string_value(v), len + 1);
        return 0;
    }
    case K_INT:
    case K_I64: {
        if (!json_is_integer(v))
            return err_set(err, ERR_INVALID, "field '%s' must be an integer", f->name);
        json_int_t n = json_integer_value(v);
        if (f->kind == K_INT) {
            if (n < -2147483647 || n > 2147483647)
                return err_set(err, ERR_INVALID, "field '%s' out of range", f->name);
            *(int *)base = (int)n;
        } else {
            *(int64_t *)base = (int64_t)n;
        }
        return 0;
    }
    case K_HEAP_STR:
        if (!json_is_string(v))
            return err_set(err, ERR_INVALID, "field '%s' must be a string", f->name);
        if (json_string_length(v) > f->size)
            return err_set(err, ERR_INVALID, "field '%s' longer than %zu bytes", f->name, f->size);
        *(char **)base = strndup(json_string_value(v), json_string_length(v));
        return 0;
    case K_OBJ_TEXT:
        if (!json_is_object(v))
            return err_set(err, ERR_INVALID, "field '%s' must be an object", f->name);
        *(char **)base = json_dumps(v, JSON_COMPACT);
        return 0;
    case K_STR_ARRAY: {
        if (!json_is_array(v) || json_array_size(v) > f->size)
            return err_set(err, ERR_INVALID, "field '%s' must be an array of at most %zu strings",
                           f->name, f->size);
        size_t n = json_array_size(v);
        char **arr = calloc(n + 1, sizeof *arr);
        *(char ***)base = arr;
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(v, i);
            if (!json_is_string(s) || json_string_length(s) >= PROTO_ID_MAX)
                return err_set(err, ERR_INVALID, "field '%s' must hold short strings", f->name);
            arr[i] = strdup(json_string_value(s));
            m->nrunning = (int)i + 1;
        }
        return 0;
    }
    }
    return ERR_INVALID;
}

static int s_decode_body(json_t *body, proto_msg_t *out, err_t *err)
{
    unsigned t = B(out->type);
    for (size_t i = 0; i < NFIELDS; i++) {
        const field_t *f = &s_fields[i];
        if (!(f->allowed & t))
            continue;
        json_t *v = json_object_get(body, f->name);
        if (!v) {
            if (f->required & t)
                return err_set(err, ERR_INVALID, "%s: required field '%s' missing",
                               proto_type_name(out->type), f->name);
            continue;
        }
        if (s_decode_field(f, v, out, err) < 0)
            return ERR_INVALID;
    }
    if (out->type == PROTO_FINISHED && !s_finished_status_ok(out->status))
        return err_set(err, ERR_INVALID, "FINISHED: invalid status '%s'", out->status);
    if ((t & JOBISH) && (out->attempt < 1 || out->job_id[0] == '\0'))
        return err_set(err, ERR_INVALID, "%s: attempt must be >= 1 and job_id non-empty",
                       proto_type_name(out->type));
    if ((t & WORKER_HELLO) && (out->slots < 0 || out->free_slots < 0))
        return err_set(err, ERR_INVALID, "%s: slots must not be negative",
                       proto_type_name(out->type));
    if (out->type == PROTO_PING && out->token == 0)
        return err_set(err, ERR_INVALID, "PING: token must not be 0");
    if (out->node_id[0] == '\0')
        return err_set(err, ERR_INVALID, "%s: node_id must not be empty", proto_type_name(out->type));
    return 0;
}

int proto_decode(zmsg_t *frames, proto_msg_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    if (zmsg_size(frames) != 3)
        return err_set(err, ERR_INVALID, "malformed message: %zu frames, expected 3",
                       zmsg_size(frames));
    zframe_t *ver = zmsg_first(frames);
    if (zframe_size(ver) != strlen(PROTO_VERSION) ||
        memcmp(zframe_data(ver), PROTO_VERSION, zframe_size(ver)) != 0)
        return err_set(err, ERR_INVALID, "malformed message: unknown protocol version");
    zframe_t *type = zmsg_next(frames);
    for (int t = 1; t < PROTO_TYPE_MAX; t++)
        if (zframe_size(type) == strlen(s_type_names[t]) &&
            memcmp(zframe_data(type), s_type_names[t], zframe_size(type)) == 0)
            out->type = (proto_type_t)t;
    if (!out->type)
        return err_set(err, ERR_INVALID, "malformed message: unknown type");
    zframe_t *bf = zmsg_next(frames);
    if (zframe_size(bf) > PROTO_MAX_BODY)
        return err_set(err, ERR_INVALID, "malformed %s: body larger than %d bytes",
                       s_type_names[out->type], PROTO_MAX_BODY);
    json_error_t jerr;
    json_t *body = json_loadb((const char *)zframe_data(bf), zframe_size(bf),
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return err_set(err, ERR_INVALID, "malformed %s: body is not a JSON object",
                       s_type_names[out->type]);
    }
    int rc = s_decode_body(body, out, err);
    json_decref(body);
    if (rc < 0)
        proto_msg_reset(out);
    return rc;
}

void proto_msg_reset(proto_msg_t *msg)
{
    if (!msg)
        return;
    free(msg->parameters);
    free(msg->error);
    free(msg->output);
    if (msg->running) {
        for (int i = 0; msg->running[i]; i++)
            free(msg->running[i]);
        free(msg->running);
    }
    memset(msg, 0, sizeof *msg);
}
