/*
 * trigger.c - trigger request validation (create, PUT and PATCH share it),
 * the stored trigger document, the update that changes it, and the JSON
 * responses for triggers and jobs.
 *
 * Validation collects every problem, each as {type, loc, msg} with loc the
 * field path (["body", "trigger_config", "interval"]), in the shape
 * FastAPI/pydantic clients already parse. Unknown fields are rejected
 * ("extra_forbidden") so that a misspelt option is an error, not a no-op.
 * Free-form objects (parameters here, override_config in api.c) are
 * bounded too: their depth, keys and arrays the store refuses, and a size
 * that fits a JOB message; worker_labels must be what masters can match.
 *
 * The stored document keeps the request's configs (normalised: defaults
 * filled in) plus a derived `schedule` sub-document that masters read
 * without re-parsing: {kind, first_fire_at, period_ms, end_at} for
 * INTERVAL, {kind, cron_expression, timezone, dst_gap, dst_overlap,
 * start_at, end_at} for CRON.
 *
 * Gateways are the only writers of a trigger definition. A change goes
 * through the same validator as a create (a PATCH is merged onto the
 * stored trigger first), bumps `version` (masters compare it) and sets
 * `updated_at`; the schedule is derived again, except that an unchanged
 * trigger_config keeps its stored schedule unless the trigger is being
 * resumed, so renaming an INTERVAL trigger does not move its grid while
 * resuming one does not replay the fires it missed.
 */
#include "gateway/gateway.h"

#include "common/clock.h"
#include "common/cron.h"
#include "common/schedule.h"
#include "common/tz.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    json_t *errors;
} vctx_t;

static json_t *s_loc(const char *path);
static void s_err_loc(json_t *errors, const char *type, json_t *loc, const char *msg);

/* Adds an error at a dotted path below "body". */
static void s_err(vctx_t *v, const char *type, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_err(vctx_t *v, const char *type, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_err_loc(v->errors, type, s_loc(path), msg);
}

/* The loc array of a dotted path below "body" (new reference). */
static json_t *s_loc(const char *path)
{
    json_t *loc = json_array();
    json_array_append_new(loc, json_string("body"));
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    /* An all-digit segment is an array index, an integer as in FastAPI. */
    for (char *save = NULL, *p = strtok_r(buf, ".", &save); p; p = strtok_r(NULL, ".", &save))
        json_array_append_new(loc, p[strspn(p, "0123456789")] == '\0' && strlen(p) < 10
                                       ? json_integer(atoi(p))
                                       : json_string(p));
    return loc;
}

/* Adds an error at loc (taken). */
static void s_err_loc(json_t *errors, const char *type, json_t *loc, const char *msg)
{
    json_array_append_new(errors,
                          json_pack("{s:s, s:o, s:s}", "type", type, "loc", loc, "msg", msg));
}

/* Adds an error at a user-given key below a dotted path; the key stays one
 * element of loc whatever it holds. */
static void s_err_key(vctx_t *v, const char *type, const char *path, const char *key,
                      const char *msg)
{
    json_t *loc = s_loc(path);
    json_array_append_new(loc, json_string(key));
    s_err_loc(v->errors, type, loc, msg);
}

static void s_no_extra(vctx_t *v, json_t *obj, const char *prefix, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(key, *a) == 0;
        if (!ok)
            s_err_key(v, "extra_forbidden", prefix, key, "extra fields not permitted");
    }
}

/* Optional string field; returns it, NULL if absent/null, errors otherwise. */
static const char *s_str(vctx_t *v, json_t *obj, const char *key, const char *path, size_t min,
                         size_t max, int required)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) {
        if (required)
            s_err(v, "missing", path, "field required");
        return NULL;
    }
    if (!json_is_string(j)) {
        s_err(v, "string_type", path, "input should be a valid string");
        return NULL;
    }
    size_t len = json_string_length(j);
    if (len < min || len > max) {
        s_err(v, "string_length", path, "string length must be between %zu and %zu", min, max);
        return NULL;
    }
    if (memchr(json_string_value(j), '\0', len)) {
        s_err(v, "string_type", path, "string must not contain NUL characters");
        return NULL;
    }
    return json_string_value(j);
}

/* Optional integer field within [min, max]; *out untouched if absent. */
static int s_int(vctx_t *v, json_t *obj, const char *key, const char *path, int64_t min,
                 int64_t max, int64_t *out)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_integer(j)) {
        s_err(v, "int_type", path, "input should be a valid integer");
        return -1;
    }
    int64_t n = json_integer_value(j);
    if (n < min || n > max) {
        s_err(v, "value_error", path, "must be between %lld and %lld", (long long)min,
              (long long)max);
        return -1;
    }
    *out = n;
    return 1;
}

static int s_number(vctx_t *v, json_t *obj, const char *key, const char *path, double min,
                    double max)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_number(j)) {
        s_err(v, "float_type", path, "input should be a valid number");
        return -1;
    }
    double d = json_number_value(j);
    if (d < min || d > max) {
        s_err(v, "value_error", path, "must be between %g and %g", min, max);
        return -1;
    }
    return 1;
}

/* Optional string field that must be one of `values` (NULL-terminated). */
static void s_enum(vctx_t *v, json_t *obj, const char *key, const char *path,
                   const char *const *values)
{
    const char *got = s_str(v, obj, key, path, 1, 32, 0);
    if (!got)
        return;
    char expected[256] = "";
    for (const char *const *e = values; *e; e++) {
        if (strcmp(got, *e) == 0)
            return;
        snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s'%s'",
                 e == values ? "" : ", ", *e);
    }
    s_err(v, "enum", path, "input should be one of %s", expected);
}

static int64_t s_time(vctx_t *v, json_t *obj, const char *key, const char *path)
{
    const char *s = s_str(v, obj, key, path, 1, 64, 0);
    int64_t ms;
    if (!s)
        return 0;
    if (clock_parse_iso(s, &ms) < 0) {
        s_err(v, "datetime_parsing", path,
              "must be an ISO-8601 date-time with a zone, e.g. 2026-01-01T02:00:00Z");
        return 0;
    }
    return ms;
}

static json_t *s_object(vctx_t *v, json_t *obj, const char *key, const char *path, int required)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) {
        if (required)
            s_err(v, "missing", path, "field required");
        return NULL;
    }
    if (!json_is_object(j)) {
        s_err(v, "dict_type", path, "input should be a valid object");
        return NULL;
    }
    return j;
}

static void s_check_retry(vctx_t *v, json_t *rp)
{
    static const char *const allowed[] = {"max_retries", "backoff_multiplier", "initial_delay",
                                          "max_delay", "jitter", NULL};
    int64_t n;
    s_no_extra(v, rp, "execution_config.retry_policy", allowed);
    s_int(v, rp, "max_retries", "execution_config.retry_policy.max_retries", 0, 100, &n);
    s_number(v, rp, "backoff_multiplier", "execution_config.retry_policy.backoff_multiplier", 1.0,
             100.0);
    s_number(v, rp, "initial_delay", "execution_config.retry_policy.initial_delay", 0, 86400);
    s_number(v, rp, "max_delay", "execution_config.retry_policy.max_delay", 0, 7 * 86400);
    json_t *j = json_object_get(rp, "jitter");
    if (j && !json_is_boolean(j))
        s_err(v, "bool_type", "execution_config.retry_policy.jitter", "input should be a valid boolean");
}

/* worker_labels: what masters match against a worker's labels, sent as
 * "k=v,..." (TRIGGER_LABELS_MAX bytes at most, or masters ignore them). */
static void s_check_labels(vctx_t *v, json_t *labels)
{
    static const char path[] = "execution_config.worker_labels";
    const char *k;
    json_t *val;
    size_t total = 0;
    json_object_foreach(labels, k, val)
    {
        size_t klen = strlen(k);
        int name_ok = klen >= 1 && klen <= 63;
        for (const char *p = k; *p && name_ok; p++)
            name_ok = isalnum((unsigned char)*p) || strchr("_-/", *p);
        if (!name_ok)
            s_err_key(v, "string_pattern_mismatch", path, k,
                      "a label name is 1-63 letters, digits, '_', '-' or '/'");
        if (!json_is_string(val)) {
            s_err_key(v, "string_type", path, k, "input should be a valid string");
            continue;
        }
        const char *s = json_string_value(val);
        size_t n = json_string_length(val), bad = 0;
        for (size_t i = 0; i < n; i++)
            bad |= s[i] == ',' || s[i] == '=' || (unsigned char)s[i] < 0x20;
        if (bad)
            s_err_key(v, "string_pattern_mismatch", path, k,
                      "must not contain ',', '=' or control characters");
        total += (total ? 1 : 0) + klen + 1 + n;
    }
    if (total > TRIGGER_LABELS_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "must be at most %d bytes written as k=v,k2=v2 (%zu given)",
                 TRIGGER_LABELS_MAX, total);
        s_err(v, "string_too_long", path, "%s", msg);
    }
}

/* Adds an error at loc + path[0..n) (copied). */
static void s_err_below(json_t *errors, const char *type, const json_t *loc, json_t *const *path,
                        size_t n, const char *msg)
{
    json_t *full = json_copy((json_t *)loc);
    for (size_t i = 0; i < n; i++)
        json_array_append(full, path[i]);
    s_err_loc(errors, type, full, msg);
}

typedef struct {
    json_t *errors;
    const json_t *loc;
    json_t *path[TRIGGER_MAX_DEPTH + 1]; /* keys (strings) and indexes (integers) */
    size_t nerr;
} freeform_t;

/* Walks value, a container at `depth` (1: the free-form object itself). */
static void s_freeform(freeform_t *f, json_t *value, int depth)
{
    char msg[96];
    if (depth > TRIGGER_MAX_DEPTH) {
        snprintf(msg, sizeof msg, "objects and arrays may nest at most %d levels deep",
                 TRIGGER_MAX_DEPTH);
        if (f->nerr++ < TRIGGER_FREEFORM_MAX_ERRORS)
            s_err_below(f->errors, "too_deep", f->loc, f->path, (size_t)depth - 1, msg);
        return;
    }
    const char *key;
    size_t i;
    json_t *child;
    if (json_is_object(value)) {
        json_object_foreach(value, key, child)
        {
            f->path[depth - 1] = json_string(key);
            int bad_key = key[0] == '\0' || key[0] == '$' || strchr(key, '.');
            if (bad_key && f->nerr++ < TRIGGER_FREEFORM_MAX_ERRORS)
                s_err_below(f->errors, "key_pattern_mismatch", f->loc, f->path, (size_t)depth,
                            "a key must not be empty, start with '$' or contain '.'");
            if (json_is_object(child) || json_is_array(child))
                s_freeform(f, child, depth + 1);
            json_decref(f->path[depth - 1]);
        }
    } else if (json_is_array(value)) {
        json_array_foreach(value, i, child)
        {
            if (!json_is_object(child) && !json_is_array(child))
                continue;
            f->path[depth - 1] = json_integer((json_int_t)i);
            if (json_is_array(child) && f->nerr++ < TRIGGER_FREEFORM_MAX_ERRORS)
                s_err_below(f->errors, "nested_array", f->loc, f->path, (size_t)depth,
                            "an array must not hold an array directly (the store refuses it): "
                            "wrap the inner one in an object");
            s_freeform(f, child, depth + 1);
            json_decref(f->path[depth - 1]);
        }
    }
}

void trigger_check_freeform(json_t *value, const json_t *loc, json_t *errors)
{
    freeform_t f = {.errors = errors, .loc = loc};
    s_freeform(&f, value, 1);
}

int trigger_check_params_size(json_t *params, const json_t *loc, json_t *errors)
{
    char *text = json_dumps(params, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = text ? strlen(text) : SIZE_MAX;
    free(text);
    if (n <= TRIGGER_PARAMS_MAX_BYTES)
        return 0;
    char msg[128];
    snprintf(msg, sizeof msg, "must be at most %d bytes as compact JSON", TRIGGER_PARAMS_MAX_BYTES);
    s_err_loc(errors, "too_long", json_copy((json_t *)loc), msg);
    return -1;
}

static void s_check_exec(vctx_t *v, json_t *ec)
{
    static const char *const allowed[] = {"task_type", "parameters", "max_execution_time",
                                          "retry_policy", "priority", "worker_labels",
                                          "overlap_policy", NULL};
    static const char *const overlaps[] = {"allow", "forbid", "replace", "buffer_one", NULL};
    s_no_extra(v, ec, "execution_config", allowed);
    s_enum(v, ec, "overlap_policy", "execution_config.overlap_policy", overlaps);
    const char *tt = s_str(v, ec, "task_type", "execution_config.task_type", 1, 63, 1);
    for (const char *p = tt; p && *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
            s_err(v, "string_pattern_mismatch", "execution_config.task_type",
                  "may contain only letters, digits, '_', '-' and '.'");
            break;
        }
    s_object(v, ec, "parameters", "execution_config.parameters", 0);
    int64_t n;
    s_int(v, ec, "max_execution_time", "execution_config.max_execution_time", 1, 7 * 86400, &n);
    s_int(v, ec, "priority", "execution_config.priority", -1000, 1000, &n);
    json_t *rp = s_object(v, ec, "retry_policy", "execution_config.retry_policy", 0);
    if (rp)
        s_check_retry(v, rp);
    json_t *labels = s_object(v, ec, "worker_labels", "execution_config.worker_labels", 0);
    if (labels)
        s_check_labels(v, labels);
    json_t *params = json_object_get(ec, "parameters");
    if (json_is_object(params)) {
        json_t *loc = s_loc("execution_config.parameters");
        trigger_check_freeform(params, loc, v->errors);
        trigger_check_params_size(params, loc, v->errors);
        json_decref(loc);
    }
}

/* Fills sched with the derived schedule of a CRON config. */
static void s_check_cron(vctx_t *v, json_t *tc, const char *expr, bson_t *sched)
{
    err_t err = {0};
    cron_t *c = cron_new(expr, &err);
    if (!c)
        s_err(v, "value_error", "trigger_config.cron_expression", "%s", err.msg);
    const char *zone = s_str(v, tc, "timezone", "trigger_config.timezone", 1, 64, 0);
    if (!zone)
        zone = "UTC";
    if (!tz_get(zone, &err))
        s_err(v, "value_error", "trigger_config.timezone", "%s", err.msg);
    const char *gap = "fire_after", *overlap = "first";
    json_t *dp = s_object(v, tc, "dst_policy", "trigger_config.dst_policy", 0);
    if (dp) {
        static const char *const allowed[] = {"gap", "overlap", NULL};
        s_no_extra(v, dp, "trigger_config.dst_policy", allowed);
        const char *g = s_str(v, dp, "gap", "trigger_config.dst_policy.gap", 1, 32, 0);
        const char *o = s_str(v, dp, "overlap", "trigger_config.dst_policy.overlap", 1, 32, 0);
        cron_dst_policy_t pol;
        if ((g || o) && cron_dst_policy_parse(g ? g : gap, o ? o : overlap, &pol, &err) < 0)
            s_err(v, "value_error", "trigger_config.dst_policy", "%s", err.msg);
        gap = g ? g : gap;
        overlap = o ? o : overlap;
    }
    cron_destroy(&c);
    BSON_APPEND_UTF8(sched, "kind", "cron");
    BSON_APPEND_UTF8(sched, "cron_expression", expr);
    BSON_APPEND_UTF8(sched, "timezone", zone);
    BSON_APPEND_UTF8(sched, "dst_gap", gap);
    BSON_APPEND_UTF8(sched, "dst_overlap", overlap);
    json_object_set_new(tc, "timezone", json_string(zone));
}

/* Validates trigger_config, infers the type, fills the schedule. Returns
 * the trigger type or NULL. */
static const char *s_check_config(vctx_t *v, json_t *tc, const char *given_type, int64_t now,
                                  bson_t *sched)
{
    static const char *const allowed[] = {"cron_expression", "timezone", "interval", "unit",
                                          "start_at", "end_at", "dst_policy", "event",
                                          "misfire_policy", "catchup_window", NULL};
    static const char *const misfires[] = {"fire_once", "fire_all", "skip", NULL};
    s_no_extra(v, tc, "trigger_config", allowed);
    s_enum(v, tc, "misfire_policy", "trigger_config.misfire_policy", misfires);
    int64_t window;
    s_int(v, tc, "catchup_window", "trigger_config.catchup_window", 0, 7 * 86400, &window);
    const char *expr = s_str(v, tc, "cron_expression", "trigger_config.cron_expression", 1, 256, 0);
    int has_interval = json_object_get(tc, "interval") != NULL;
    int has_event = json_object_get(tc, "event") != NULL;
    const char *type = expr ? "CRON" : has_interval ? "INTERVAL" : has_event ? "EVENT" : "MANUAL";
    if (expr && has_interval)
        s_err(v, "value_error", "trigger_config",
              "give either cron_expression or interval, not both");
    if (given_type && strcmp(given_type, type) != 0 &&
        !(json_object_get(tc, "cron_expression") && strcmp(given_type, "CRON") == 0))
        s_err(v, "value_error", "trigger_type",
              "trigger_type %s does not match trigger_config, which describes a %s trigger",
              given_type, type);
    int64_t start = s_time(v, tc, "start_at", "trigger_config.start_at");
    int64_t end = s_time(v, tc, "end_at", "trigger_config.end_at");
    if (start && end && end <= start)
        s_err(v, "value_error", "trigger_config.end_at", "must be after start_at");
    if (has_event) /* whatever the type: an unread event would be stored unchecked */
        s_err(v, "value_error", "trigger_config.event", "EVENT triggers are not supported yet");
    if (strcmp(type, "CRON") == 0 && expr)
        s_check_cron(v, tc, expr, sched);
    if (strcmp(type, "INTERVAL") == 0) {
        int64_t interval = 0;
        const char *unit = s_str(v, tc, "unit", "trigger_config.unit", 1, 16, 0);
        if (!unit)
            unit = "seconds";
        if (s_int(v, tc, "interval", "trigger_config.interval", 1, INT32_MAX, &interval) == 0 &&
            json_is_null(json_object_get(tc, "interval")))
            s_err(v, "missing", "trigger_config.interval", "field required");
        int64_t period = interval ? sched_interval_ms(interval, unit) : 0;
        if (sched_interval_ms(1, unit) < 0)
            s_err(v, "enum", "trigger_config.unit",
                  "input should be 'seconds', 'minutes', 'hours' or 'days'");
        else if (interval && period < 0)
            s_err(v, "value_error", "trigger_config.interval", "interval is too large");
        json_object_set_new(tc, "unit", json_string(unit));
        BSON_APPEND_UTF8(sched, "kind", "interval");
        BSON_APPEND_DATE_TIME(sched, "first_fire_at", start ? start : now + (period > 0 ? period : 0));
        BSON_APPEND_INT64(sched, "period_ms", period > 0 ? period : 0);
    } else if (start) {
        BSON_APPEND_DATE_TIME(sched, "start_at", start);
    }
    if (end)
        BSON_APPEND_DATE_TIME(sched, "end_at", end);
    return type;
}

/* notifications: at most MAX_HOOKS webhooks, each {url, events, headers}.
 * events defaults to ["failure"] and is filled in. */
enum { MAX_HOOKS = 5, MAX_HOOK_HEADERS = 10 };

static void s_check_hook(vctx_t *v, json_t *hook, int i)
{
    static const char *const allowed[] = {"url", "events", "headers", NULL};
    static const char *const events[] = {"failure", "success", "skipped", NULL};
    char path[64];
    snprintf(path, sizeof path, "notifications.%d", i);
    if (!json_is_object(hook)) {
        s_err(v, "dict_type", path, "input should be a valid object");
        return;
    }
    s_no_extra(v, hook, path, allowed);
    char p[96];
    snprintf(p, sizeof p, "%s.url", path);
    const char *url = s_str(v, hook, "url", p, 1, 2048, 1);
    if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        s_err(v, "url_scheme", p, "URL scheme should be 'http' or 'https'");
    else if (url && strcspn(url, " \t\r\n") != strlen(url))
        s_err(v, "url_parsing", p, "URL must not contain whitespace");
    snprintf(p, sizeof p, "%s.events", path);
    json_t *ev = json_object_get(hook, "events");
    if (!ev || json_is_null(ev)) {
        json_object_set_new(hook, "events", json_pack("[s]", "failure"));
    } else if (!json_is_array(ev) || json_array_size(ev) == 0 || json_array_size(ev) > 3) {
        s_err(v, "list_type", p, "input should be a list of 1 to 3 of 'failure', 'success', 'skipped'");
    } else {
        size_t k;
        json_t *e;
        json_array_foreach(ev, k, e)
        {
            int ok = 0;
            for (const char *const *x = events; *x && json_is_string(e); x++)
                ok |= strcmp(json_string_value(e), *x) == 0;
            char pe[128];
            snprintf(pe, sizeof pe, "%s.%zu", p, k);
            if (!ok)
                s_err(v, "enum", pe, "input should be 'failure', 'success' or 'skipped'");
            for (size_t j = 0; ok && j < k; j++)
                if (json_equal(json_array_get(ev, j), e))
                    s_err(v, "value_error", pe, "duplicate event");
        }
    }
    snprintf(p, sizeof p, "%s.headers", path);
    json_t *h = s_object(v, hook, "headers", p, 0);
    if (json_object_size(h) > MAX_HOOK_HEADERS)
        s_err(v, "too_long", p, "at most %d headers", MAX_HOOK_HEADERS);
    const char *k;
    json_t *val;
    json_object_foreach(h, k, val)
    {
        size_t n = strlen(k);
        int token = n > 0 && n <= 64;
        for (const char *c = k; *c && token; c++)
            token = isalnum((unsigned char)*c) || strchr("!#$%&'*+-.^_`|~", *c);
        if (!token || strcasecmp(k, "content-type") == 0 || strcasecmp(k, "content-length") == 0 ||
            strcasecmp(k, "host") == 0)
            s_err_key(v, "value_error", p, k,
                      "header name must be 1-64 token characters and not Content-Type, "
                      "Content-Length or Host");
        else if (!json_is_string(val) || json_string_length(val) > 1024 ||
                 strcspn(json_string_value(val), "\r\n") != json_string_length(val))
            s_err_key(v, "string_type", p, k,
                      "header value must be a string of at most 1024 characters without line "
                      "breaks");
    }
}

static void s_check_notifications(vctx_t *v, json_t *body)
{
    json_t *n = json_object_get(body, "notifications");
    if (!n || json_is_null(n)) {
        json_object_set_new(body, "notifications", json_array());
        return;
    }
    if (!json_is_array(n)) {
        s_err(v, "list_type", "notifications", "input should be a valid list");
        return;
    }
    if (json_array_size(n) > MAX_HOOKS) {
        s_err(v, "too_long", "notifications", "at most %d webhooks", MAX_HOOKS);
        return;
    }
    size_t i;
    json_t *hook;
    json_array_foreach(n, i, hook) s_check_hook(v, hook, (int)i);
}

/* Removes obj's members that are null (obj may be NULL or not an object). */
static void s_drop_nulls(json_t *obj)
{
    const char *key;
    json_t *val;
    void *tmp;
    json_object_foreach_safe(obj, tmp, key, val) if (json_is_null(val))
        json_object_del(obj, key);
}

bson_t *trigger_from_request(json_t *body, int64_t now, json_t **errors)
{
    vctx_t v = {json_array()};
    *errors = NULL;
    if (!json_is_object(body)) {
        s_err(&v, "model_attributes_type", "", "input should be a valid object");
        *errors = v.errors;
        return NULL;
    }
    static const char *const allowed[] = {"name",          "description",      "trigger_type",
                                          "trigger_config", "execution_config", "is_active",
                                          "notifications", NULL};
    s_no_extra(&v, body, "", allowed);
    const char *name = s_str(&v, body, "name", "name", 1, 200, 1);
    const char *desc = s_str(&v, body, "description", "description", 0, 2000, 0);
    const char *given = s_str(&v, body, "trigger_type", "trigger_type", 1, 16, 0);
    if (given && strcmp(given, "CRON") && strcmp(given, "INTERVAL") && strcmp(given, "MANUAL") &&
        strcmp(given, "EVENT")) {
        s_err(&v, "enum", "trigger_type", "input should be 'CRON', 'INTERVAL', 'MANUAL' or 'EVENT'");
        given = NULL;
    }
    json_t *active = json_object_get(body, "is_active");
    if (active && !json_is_boolean(active))
        s_err(&v, "bool_type", "is_active", "input should be a valid boolean");
    json_t *tc = s_object(&v, body, "trigger_config", "trigger_config", 1);
    json_t *ec = s_object(&v, body, "execution_config", "execution_config", 1);
    bson_t sched = BSON_INITIALIZER;
    const char *type = tc ? s_check_config(&v, tc, given, now, &sched) : NULL;
    if (ec)
        s_check_exec(&v, ec);
    s_check_notifications(&v, body);
    if (json_array_size(v.errors) > 0) {
        bson_destroy(&sched);
        *errors = v.errors;
        return NULL;
    }
    json_decref(v.errors);
    /* A null member is an absent one (validation saw it so): none is stored. */
    s_drop_nulls(json_object_get(tc, "dst_policy"));
    s_drop_nulls(json_object_get(ec, "retry_policy"));
    s_drop_nulls(tc);
    s_drop_nulls(ec);
    if (!json_object_get(ec, "parameters"))
        json_object_set_new(ec, "parameters", json_object());
    bson_t *doc = bson_new();
    BSON_APPEND_UTF8(doc, "name", name);
    BSON_APPEND_UTF8(doc, "description", desc ? desc : "");
    BSON_APPEND_UTF8(doc, "trigger_type", type);
    bj_append(doc, "trigger_config", tc);
    bj_append(doc, "execution_config", ec);
    bj_append(doc, "notifications", json_object_get(body, "notifications"));
    BSON_APPEND_DOCUMENT(doc, "schedule", &sched);
    BSON_APPEND_UTF8(doc, "status", active && json_is_false(active) ? "paused" : "active");
    BSON_APPEND_INT64(doc, "version", 1);
    bson_destroy(&sched);
    return doc;
}

json_t *trigger_patch_request(const bson_t *stored, json_t *patch, json_t **errors)
{
    vctx_t v = {json_array()};
    *errors = NULL;
    if (!json_is_object(patch))
        s_err(&v, "model_attributes_type", "", "input should be a valid object");
    else {
        static const char *const allowed[] = {"name",           "description",
                                              "trigger_type",   "trigger_config",
                                              "execution_config", "is_active",
                                              "notifications",  NULL};
        s_no_extra(&v, patch, "", allowed);
    }
    if (json_array_size(v.errors) > 0) {
        *errors = v.errors;
        return NULL;
    }
    json_decref(v.errors);
    /* trigger_type is left out: it is inferred again from the merged
     * trigger_config, which a patch may turn from INTERVAL into CRON. */
    json_t *all = bj_to_json(stored);
    json_t *req = json_object();
    static const char *const keep[] = {"name", "description", "trigger_config",
                                       "execution_config", "notifications", NULL};
    for (const char *const *k = keep; *k; k++) {
        json_t *val = json_object_get(all, *k);
        if (val)
            json_object_set(req, *k, val);
    }
    json_object_set_new(req, "is_active",
                        json_boolean(strcmp(bj_get_str(stored, "status", ""), "active") == 0));
    json_decref(all);
    /* A given object replaces the stored one as a whole (no deep merge):
     * the result is exactly what a create with that body would store. */
    json_t *copy = json_deep_copy(patch);
    json_object_update(req, copy);
    json_decref(copy);
    return req;
}

/* 1 if key holds equal values (or is absent) in both JSON objects. */
static int s_same(json_t *a, json_t *b, const char *key)
{
    json_t *x = json_object_get(a, key), *y = json_object_get(b, key);
    return (!x && !y) || (x && y && json_equal(x, y));
}

bson_t *trigger_update(const bson_t *stored, const bson_t *def, int64_t now)
{
    json_t *old = bj_to_json(stored), *new = bj_to_json(def);
    static const char *const fields[] = {"name",          "description", "trigger_type",
                                         "trigger_config", "execution_config", "status",
                                         "notifications", NULL};
    int changed = 0;
    for (const char *const *k = fields; *k; k++)
        changed |= !s_same(old, new, *k);
    int resumed = strcmp(bj_get_str(stored, "status", ""), "active") != 0 &&
                  strcmp(bj_get_str(def, "status", ""), "active") == 0;
    /* A resumed trigger starts its INTERVAL grid afresh rather than
     * catching up on what it missed while paused. */
    int keep_schedule = s_same(old, new, "trigger_config") && !resumed;
    json_decref(old);
    json_decref(new);
    if (!changed)
        return NULL;
    bson_t *update = bson_new(), set;
    bson_iter_t it, kept;
    BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    bson_iter_init(&it, def);
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        if (strcmp(key, "version") == 0)
            continue;
        if (strcmp(key, "schedule") == 0 && keep_schedule &&
            bson_iter_init_find(&kept, stored, "schedule"))
            bson_append_iter(&set, key, -1, &kept);
        else
            bson_append_iter(&set, key, -1, &it);
    }
    BSON_APPEND_DATE_TIME(&set, "updated_at", now);
    bson_append_document_end(update, &set);
    BCON_APPEND(update, "$inc", "{", "version", BCON_INT64(1), "}");
    return update;
}

int64_t trigger_next_fire(const bson_t *doc, int64_t after)
{
    const char *kind = bj_get_str(doc, "schedule.kind", "");
    int64_t end = bj_get_date(doc, "schedule.end_at", 0), next = -1;
    if (strcmp(kind, "interval") == 0) {
        int64_t period = bj_get_int(doc, "schedule.period_ms", 0);
        if (period > 0)
            next = sched_interval_next(bj_get_date(doc, "schedule.first_fire_at", 0), period, after);
    } else if (strcmp(kind, "cron") == 0) {
        err_t err = {0};
        cron_t *c = cron_new(bj_get_str(doc, "schedule.cron_expression", ""), &err);
        const tz_t *tz = tz_get(bj_get_str(doc, "schedule.timezone", "UTC"), &err);
        cron_dst_policy_t pol = CRON_DST_POLICY_DEFAULT;
        cron_dst_policy_parse(bj_get_str(doc, "schedule.dst_gap", "fire_after"),
                              bj_get_str(doc, "schedule.dst_overlap", "first"), &pol, &err);
        int64_t start = bj_get_date(doc, "schedule.start_at", 0);
        cron_fire_t f;
        if (c && tz && cron_next(c, tz, pol, start - 1 > after ? start - 1 : after, &f) == 0)
            next = f.at_ms;
        cron_destroy(&c);
    }
    return next >= 0 && end && next > end ? -1 : next;
}

static void s_set_time(json_t *obj, const char *key, int64_t ms)
{
    char buf[40];
    if (ms <= 0 || ms == INT64_MAX) {
        json_object_set_new(obj, key, json_null());
        return;
    }
    clock_format_iso(ms, buf, sizeof buf);
    json_object_set_new(obj, key, json_string(buf));
}

json_t *trigger_to_response(const bson_t *doc, const bson_t *state)
{
    json_t *all = bj_to_json(doc);
    json_t *out = json_object();
    json_object_set(out, "id", json_object_get(all, "_id"));
    static const char *const copy[] = {"name",       "description", "trigger_type",
                                       "trigger_config", "execution_config", "status",
                                       "owner",      "version",     "created_at",
                                       "updated_at", NULL};
    for (const char *const *k = copy; *k; k++) {
        json_t *val = json_object_get(all, *k);
        json_object_set(out, *k, val ? val : json_null());
    }
    json_t *hooks = json_object_get(all, "notifications"); /* absent on older triggers */
    json_object_set_new(out, "notifications", json_is_array(hooks) ? json_incref(hooks) : json_array());
    int active = strcmp(bj_get_str(doc, "status", ""), "active") == 0;
    json_object_set_new(out, "is_active", json_boolean(active));
    /* The master writes next_fire_at after it fires (SKED_STATE_SAVE_MS
     * later, or more when busy); a definition changed since then, or a
     * saved next fire that has passed, is stale, so it is derived from the
     * definition. */
    int64_t now = clock_wall_ms();
    int64_t next = state ? bj_get_date(state, "next_fire_at", 0) : 0;
    if (next < now /* none saved, or passed */ ||
        bj_get_date(state, "updated_at", 0) < bj_get_date(doc, "updated_at", 0))
        next = 0;
    if (!next && active)
        next = trigger_next_fire(doc, now);
    s_set_time(out, "next_fire_at", active ? next : 0);
    s_set_time(out, "last_fire_at", state ? bj_get_date(state, "last_fire_at", 0) : 0);
    json_decref(all);
    return out;
}

json_t *job_to_response(const bson_t *doc)
{
    json_t *all = bj_to_json(doc);
    json_t *out = json_object();
    json_object_set(out, "id", json_object_get(all, "_id"));
    static const char *const copy[] = {"trigger_id", "status", "attempt", "task_type", "kind",
                                       "scheduled_for", "created_at", "started_at", "finished_at",
                                       "worker_id", "duration_ms", "parameters", "result",
                                       "misfire", "dst", "skip_reason", "owner", "run_at", "attempts", "output_tail",
                                       "notifications", NULL};
    for (const char *const *k = copy; *k; k++) {
        json_t *val = json_object_get(all, *k);
        json_object_set(out, *k, val ? val : json_null());
    }
    if (!json_is_array(json_object_get(out, "notifications")))
        json_object_set_new(out, "notifications", json_array()); /* deliveries, if any */
    json_decref(all);
    return out;
}
