/*
 * wconfig.c - the worker config file: which task types this worker
 * serves, with which handler and limits, and its labels.
 *
 * The file is one JSON object (see README, deploy/worker.conf.example):
 *
 *   {"task_types": {"<name>": {"handler": "exec"|"http"|"noop"|"sleep"|
 *                              "echo"|"fail", ...options}, ...},
 *    "labels": {"region": "eu"}, "slots": 64, "kill_grace_ms": 5000}
 *
 * Validation is strict, as the API's is: an unknown key, a key that does
 * not belong to the handler, a value of the wrong type or out of range is
 * a startup error naming the file and the key's path. ${VAR} in http
 * header values is expanded from the worker's environment here, once; an
 * unset variable is an error rather than an empty credential. Users named
 * by exec's `user` are resolved here too, so a typo fails at startup.
 */
#include "worker/worker.h"

#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *path;
    err_t *err;
} ctx_t;

static int s_fail(ctx_t *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets "invalid worker config 'path': key: why". */
static int s_fail(ctx_t *c, const char *key, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return err_set(c->err, ERR_INVALID, "invalid worker config '%.200s': %.120s: %s", c->path, key,
                   why);
}

static int s_name_ok(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
            return 0;
    return 1;
}

/* Fails unless every key of obj is in allowed (NULL-terminated). */
static int s_only(ctx_t *c, json_t *obj, const char *where, const char *const *allowed,
                  const char *what)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char key[400];
            snprintf(key, sizeof key, "%s%s%.100s", where, *where ? "." : "", k);
            return s_fail(c, key, "unknown key%s%s", what ? " for " : "", what ? what : "");
        }
    }
    return 0;
}

/* A NULL-terminated copy of an array of strings; NULL with an error if v
 * is not one (or has an empty or bad entry when name_chars is given). */
static char **s_strings(ctx_t *c, json_t *v, const char *key, int nonempty, const char *name_chars)
{
    if (!json_is_array(v) || (nonempty && json_array_size(v) == 0)) {
        s_fail(c, key, "must be a%s array of strings", nonempty ? " non-empty" : "n");
        return NULL;
    }
    size_t n = json_array_size(v);
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(v, i);
        const char *str = json_string_value(s);
        if (!str || strlen(str) != json_string_length(s) ||
            (name_chars && (!s_name_ok(str, 255, name_chars) || isdigit((unsigned char)*str))) ||
            (i == 0 && nonempty && !*str)) {
            s_fail(c, key, "entry %zu must be a%s string", i,
                   name_chars ? " variable name ([A-Za-z_][A-Za-z0-9_]*)" : " non-empty");
            for (size_t k = 0; k < i; k++)
                free(out[k]);
            free(out);
            return NULL;
        }
        out[i] = strdup(str);
    }
    return out;
}

static void s_free_strings(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Expands ${NAME} from the environment into a new string. */
static char *s_expand(ctx_t *c, const char *in, const char *key)
{
    size_t cap = strlen(in) + 1, len = 0;
    char *out = malloc(cap);
    for (const char *p = in; *p;) {
        const char *add = p;
        size_t n = 1;
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            char name[256];
            if (!end || end == p + 2 || (size_t)(end - p - 2) >= sizeof name) {
                s_fail(c, key, "'${' without a variable name and '}'");
                free(out);
                return NULL;
            }
            snprintf(name, sizeof name, "%.*s", (int)(end - p - 2), p + 2);
            add = getenv(name);
            if (!add) {
                s_fail(c, key, "environment variable '%s' is not set", name);
                free(out);
                return NULL;
            }
            n = strlen(add);
            p = end + 1;
        } else {
            p++;
        }
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            out = realloc(out, cap);
        }
        memcpy(out + len, add, n);
        len += n;
    }
    out[len] = '\0';
    return out;
}

static int s_user(ctx_t *c, tasktype_t *t, const char *user, const char *key)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    char *end;
    errno = 0;
    unsigned long id = strtoul(user, &end, 10);
    int rc = *user && !*end ? getpwuid_r((uid_t)id, &pw, buf, sizeof buf, &res)
                            : getpwnam_r(user, &pw, buf, sizeof buf, &res);
    if (rc != 0 || !res)
        return s_fail(c, key, "no such user '%s'", user);
    t->user = strdup(user);
    if (geteuid() != 0) {
        if (res->pw_uid != geteuid())
            log_warn("exec user ignored: the worker does not run as root", "task_type=%s user=%s",
                     t->name, user);
        return 0;
    }
    t->switch_user = 1;
    t->uid = res->pw_uid;
    t->gid = res->pw_gid;
    int n = 64;
    t->groups = malloc((size_t)n * sizeof *t->groups);
    if (getgrouplist(res->pw_name, res->pw_gid, t->groups, &n) < 0) {
        t->groups = realloc(t->groups, (size_t)n * sizeof *t->groups);
        if (getgrouplist(res->pw_name, res->pw_gid, t->groups, &n) < 0)
            n = 0;
    }
    t->ngroups = n;
    return 0;
}

static int s_exec(ctx_t *c, tasktype_t *t, json_t *def, const char *where)
{
    char key[400];
    snprintf(key, sizeof key, "%s.argv", where);
    json_t *v = json_object_get(def, "argv");
    if (!v)
        return s_fail(c, key, "required for handler exec");
    if (!(t->argv = s_strings(c, v, key, 1, NULL)))
        return ERR_INVALID;
    if (strchr(t->argv[0], '/') && access(t->argv[0], X_OK) != 0)
        log_warn("exec program not found or not executable (yet); its jobs will fail",
                 "task_type=%s program=%s", t->name, t->argv[0]);
    if ((v = json_object_get(def, "cwd"))) {
        snprintf(key, sizeof key, "%s.cwd", where);
        if (!json_is_string(v) || json_string_value(v)[0] != '/')
            return s_fail(c, key, "must be an absolute path");
        t->cwd = strdup(json_string_value(v));
    }
    if ((v = json_object_get(def, "env_allow"))) {
        snprintf(key, sizeof key, "%s.env_allow", where);
        if (!(t->env_allow = s_strings(c, v, key, 0, "_")))
            return ERR_INVALID;
    } else {
        t->env_allow = calloc(1, sizeof *t->env_allow);
    }
    if ((v = json_object_get(def, "user"))) {
        snprintf(key, sizeof key, "%s.user", where);
        if (!json_is_string(v) || !json_string_length(v))
            return s_fail(c, key, "must be a user name or id");
        return s_user(c, t, json_string_value(v), key);
    }
    return 0;
}

static int s_http(ctx_t *c, tasktype_t *t, json_t *def, const char *where)
{
    char key[400];
    snprintf(key, sizeof key, "%s.url", where);
    json_t *v = json_object_get(def, "url");
    const char *url = json_string_value(v);
    if (!url)
        return s_fail(c, key, "required for handler http (a string)");
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return s_fail(c, key, "must start with http:// or https://");
    t->url = strdup(url);
    json_t *h = json_object_get(def, "headers");
    snprintf(key, sizeof key, "%s.headers", where);
    if (h && !json_is_object(h))
        return s_fail(c, key, "must be an object of strings");
    t->headers = calloc(json_object_size(h) + 1, sizeof *t->headers);
    const char *name;
    int i = 0;
    json_object_foreach(h, name, v)
    {
        snprintf(key, sizeof key, "%s.headers.%.100s", where, name);
        if (!s_name_ok(name, 100, "-_!#$%&'*+.^`|~"))
            return s_fail(c, key, "not a valid header name");
        if (strcasecmp(name, "Content-Type") == 0)
            return s_fail(c, key, "is always application/json");
        if (!json_is_string(v))
            return s_fail(c, key, "must be a string");
        char *val = s_expand(c, json_string_value(v), key);
        if (!val)
            return ERR_INVALID;
        int bad = strpbrk(val, "\r\n") != NULL;
        if (!bad) {
            size_t n = strlen(name) + strlen(val) + 3;
            t->headers[i] = malloc(n);
            snprintf(t->headers[i++], n, "%s: %s", name, val);
        }
        free(val);
        if (bad)
            return s_fail(c, key, "must not contain line breaks");
    }
    return 0;
}

static int s_common(ctx_t *c, tasktype_t *t, json_t *def, const char *where)
{
    char key[400];
    json_t *v;
    if ((v = json_object_get(def, "max_concurrent"))) {
        snprintf(key, sizeof key, "%s.max_concurrent", where);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000)
            return s_fail(c, key, "must be an integer from 1 to 1000000");
        t->max_concurrent = (int)json_integer_value(v);
    }
    if ((v = json_object_get(def, "timeout"))) {
        snprintf(key, sizeof key, "%s.timeout", where);
        if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 31 * 86400)
            return s_fail(c, key, "must be a number of seconds, above 0 and at most 2678400");
        t->timeout_ms = (int64_t)(json_number_value(v) * 1000 + 0.5);
        if (t->timeout_ms < 1)
            t->timeout_ms = 1;
    }
    return 0;
}

static int s_type(ctx_t *c, tasktype_t *t, const char *name, json_t *def)
{
    static const char *const exec_keys[] = {"handler", "max_concurrent", "timeout", "argv",
                                            "cwd", "env_allow", "user", NULL};
    static const char *const http_keys[] = {"handler", "max_concurrent", "timeout", "url",
                                            "headers", NULL};
    static const char *const builtin_keys[] = {"handler", "max_concurrent", "timeout", NULL};
    char where[200], key[300];
    snprintf(where, sizeof where, "task_types.%.100s", name);
    if (!s_name_ok(name, 63, "_-."))
        return s_fail(c, where, "a task type name is 1-63 letters, digits, '_', '-' or '.'");
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!json_is_object(def))
        return s_fail(c, where, "must be an object");
    snprintf(key, sizeof key, "%s.handler", where);
    const char *h = json_string_value(json_object_get(def, "handler"));
    if (!h)
        return s_fail(c, key, "required: exec, http, noop, sleep, echo or fail");
    const char *const *keys;
    if (strcmp(h, "exec") == 0) {
        t->kind = HANDLER_EXEC;
        keys = exec_keys;
    } else if (strcmp(h, "http") == 0) {
        t->kind = HANDLER_HTTP;
        keys = http_keys;
    } else if (builtin_known(h)) {
        t->kind = HANDLER_BUILTIN;
        snprintf(t->builtin, sizeof t->builtin, "%s", h);
        keys = builtin_keys;
    } else {
        return s_fail(c, key, "unknown handler '%.40s': use exec, http, noop, sleep, echo or fail", h);
    }
    char what[40];
    snprintf(what, sizeof what, "handler %s", h);
    if (s_only(c, def, where, keys, what) < 0 || s_common(c, t, def, where) < 0)
        return ERR_INVALID;
    if (t->kind == HANDLER_EXEC)
        return s_exec(c, t, def, where);
    if (t->kind == HANDLER_HTTP)
        return s_http(c, t, def, where);
    return 0;
}

static int s_labels(ctx_t *c, wconfig_t *w, json_t *labels)
{
    if (!json_is_object(labels))
        return s_fail(c, "labels", "must be an object of strings");
    size_t len = 0;
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        char key[200];
        snprintf(key, sizeof key, "labels.%.100s", k);
        if (!s_name_ok(k, 63, "_-./"))
            return s_fail(c, key, "a label name is 1-63 letters, digits, '_', '-', '.' or '/'");
        const char *s = json_string_value(v);
        if (!s)
            return s_fail(c, key, "must be a string");
        for (const char *p = s; *p; p++)
            if (*p == ',' || *p == '=' || (unsigned char)*p < 0x20)
                return s_fail(c, key, "must not contain ',', '=' or control characters");
        int n = snprintf(w->labels + len, sizeof w->labels - len, "%s%s=%s", len ? "," : "", k, s);
        if (n < 0 || len + (size_t)n >= sizeof w->labels)
            return s_fail(c, "labels", "longer than %zu bytes as k=v,...", sizeof w->labels - 1);
        len += (size_t)n;
    }
    return 0;
}

/* The advertised list (comma-separated names) must fit a HELLO. */
static int s_check_list(ctx_t *c, const wconfig_t *w)
{
    size_t len = 0;
    for (int i = 0; i < w->ntypes; i++)
        len += strlen(w->types[i].name) + 1;
    if (len > sizeof ((proto_msg_t *)0)->task_types)
        return s_fail(c, "task_types", "the names take %zu bytes as a comma list; at most %zu",
                      len - 1, sizeof ((proto_msg_t *)0)->task_types - 1);
    return 0;
}

static int s_top(ctx_t *c, wconfig_t *w, json_t *root)
{
    static const char *const top[] = {"task_types", "labels", "slots", "kill_grace_ms", NULL};
    if (!json_is_object(root))
        return s_fail(c, "(top)", "must be a JSON object");
    if (s_only(c, root, "", top, NULL) < 0)
        return ERR_INVALID;
    json_t *types = json_object_get(root, "task_types");
    if (!json_is_object(types) || json_object_size(types) == 0)
        return s_fail(c, "task_types", "required: an object with at least one task type");
    w->types = calloc(json_object_size(types), sizeof *w->types);
    const char *name;
    json_t *def;
    json_object_foreach(types, name, def)
    {
        if (s_type(c, &w->types[w->ntypes++], name, def) < 0)
            return ERR_INVALID;
    }
    json_t *v;
    if ((v = json_object_get(root, "labels")) && s_labels(c, w, v) < 0)
        return ERR_INVALID;
    if ((v = json_object_get(root, "slots"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100000)
            return s_fail(c, "slots", "must be an integer from 1 to 100000");
        w->slots = (int)json_integer_value(v);
    }
    if ((v = json_object_get(root, "kill_grace_ms"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3600000)
            return s_fail(c, "kill_grace_ms", "must be an integer from 0 to 3600000");
        w->kill_grace_ms = (int)json_integer_value(v);
    }
    return s_check_list(c, w);
}

static wconfig_t *s_new(const char *path)
{
    wconfig_t *w = calloc(1, sizeof *w);
    w->kill_grace_ms = -1;
    snprintf(w->path, sizeof w->path, "%s", path ? path : "");
    return w;
}

static wconfig_t *s_from_json(json_t *root, const char *path, err_t *err)
{
    ctx_t c = {.path = path, .err = err};
    wconfig_t *w = s_new(path);
    int rc = s_top(&c, w, root);
    json_decref(root);
    if (rc < 0)
        wconfig_destroy(&w);
    return w;
}

wconfig_t *wconfig_parse(const char *text, const char *path, err_t *err)
{
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err_set(err, ERR_INVALID, "cannot parse worker config '%.200s' line %d column %d: %s", path,
                jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    return s_from_json(root, path, err);
}

wconfig_t *wconfig_load(const char *path, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set(err, ERR_INVALID, "cannot read worker config '%.200s': %s", path, strerror(errno));
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root) {
        err_set(err, ERR_INVALID, "cannot parse worker config '%.200s' line %d column %d: %s", path,
                jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    return s_from_json(root, path, err);
}

wconfig_t *wconfig_builtins(const char *list, err_t *err)
{
    wconfig_t *w = s_new(NULL);
    w->types = calloc(strlen(list) / 2 + 1, sizeof *w->types);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (!builtin_known(t)) {
            err_set(err, ERR_INVALID,
                    "cannot serve task type '%.64s' from SKED_TASK_TYPES: not a built-in (noop, "
                    "sleep, echo, fail); configure other handlers in SKED_WORKER_CONFIG", t);
            wconfig_destroy(&w);
            return NULL;
        }
        if (wconfig_find(w, t))
            continue;
        tasktype_t *tt = &w->types[w->ntypes++];
        snprintf(tt->name, sizeof tt->name, "%s", t);
        snprintf(tt->builtin, sizeof tt->builtin, "%s", t);
        tt->kind = HANDLER_BUILTIN;
    }
    return w;
}

tasktype_t *wconfig_find(const wconfig_t *self, const char *name)
{
    for (int i = 0; i < self->ntypes; i++)
        if (strcmp(self->types[i].name, name) == 0)
            return &self->types[i];
    return NULL;
}

void wconfig_destroy(wconfig_t **self_p)
{
    wconfig_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->ntypes; i++) {
        tasktype_t *t = &self->types[i];
        s_free_strings(t->argv);
        s_free_strings(t->env_allow);
        s_free_strings(t->headers);
        free(t->cwd);
        free(t->user);
        free(t->groups);
        free(t->url);
    }
    free(self->types);
    free(self);
    *self_p = NULL;
}
