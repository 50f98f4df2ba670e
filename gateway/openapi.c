/*
 * openapi.c - the API's OpenAPI document, served at
 * /docs/openapi/scheduler_openapi.json and .yaml.
 *
 * The one source is docs/openapi/scheduler_openapi.json in the repository,
 * written by hand and kept true by tests/integration/test_gateway_openapi.py.
 * It is read once at start-up from SKED_OPENAPI_PATH: an absolute path as
 * given; a relative one against the working directory, then against the
 * binary's directory and up to three of its parents (so bin/sked-gateway and
 * build/asan/bin/sked-gateway both find the repository's copy from
 * anywhere). Loading at start-up rather than embedding keeps a rebuild from
 * being needed (or forgotten) after an edit of the document.
 *
 * The JSON is parsed (a broken document stops the gateway at start) and
 * rendered twice: JSON with two-space indents, and the same tree as YAML in
 * block style, every string and key double-quoted with JSON's escapes
 * (valid YAML 1.1 and 1.2), so that both answers describe one document.
 */
#include "gateway/gateway.h"

#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPENAPI_MAX_BYTES (4 * 1024 * 1024)

struct openapi {
    char *json;
    size_t json_len;
    char *yaml;
    size_t yaml_len;
    char path[PATH_MAX];
};

/* A growing string; on allocation failure it stays failed and empty. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} s_buf_t;

static void s_put(s_buf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void s_puts(s_buf_t *b, const char *s)
{
    s_put(b, s, strlen(s));
}

static void s_indent(s_buf_t *b, int n)
{
    static const char spaces[] = "                                                                ";
    while (n > 0) {
        int k = n < (int)sizeof spaces - 1 ? n : (int)sizeof spaces - 1;
        s_put(b, spaces, (size_t)k);
        n -= k;
    }
}

/* A scalar (or an empty object/array) as JSON, which YAML reads alike. */
static void s_scalar(s_buf_t *b, const json_t *v)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) {
        b->failed = 1;
        return;
    }
    s_puts(b, s);
    free(s);
}

static int s_is_block(const json_t *v)
{
    return (json_is_object(v) && json_object_size(v) > 0) ||
           (json_is_array(v) && json_array_size(v) > 0);
}

static void s_yaml_value(s_buf_t *b, const json_t *v, int indent, int inline_first);

/* A mapping; with inline_first the first key continues the current line
 * (after "- "). */
static void s_yaml_object(s_buf_t *b, const json_t *obj, int indent, int inline_first)
{
    const char *key;
    const json_t *val;
    int first = 1;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (!(first && inline_first))
            s_indent(b, indent);
        first = 0;
        json_t *k = json_string(key);
        s_scalar(b, k);
        json_decref(k);
        if (s_is_block(val)) {
            s_puts(b, ":\n");
            s_yaml_value(b, val, indent + 2, 0);
        } else {
            s_puts(b, ": ");
            s_scalar(b, val);
            s_puts(b, "\n");
        }
    }
}

static void s_yaml_array(s_buf_t *b, const json_t *arr, int indent)
{
    size_t i;
    const json_t *val;
    json_array_foreach(arr, i, val)
    {
        s_indent(b, indent);
        if (json_is_object(val) && json_object_size(val) > 0) {
            s_puts(b, "- ");
            s_yaml_object(b, val, indent + 2, 1);
        } else if (s_is_block(val)) {
            s_puts(b, "-\n");
            s_yaml_value(b, val, indent + 2, 0);
        } else {
            s_puts(b, "- ");
            s_scalar(b, val);
            s_puts(b, "\n");
        }
    }
}

static void s_yaml_value(s_buf_t *b, const json_t *v, int indent, int inline_first)
{
    if (json_is_object(v) && json_object_size(v) > 0)
        s_yaml_object(b, v, indent, inline_first);
    else if (json_is_array(v) && json_array_size(v) > 0)
        s_yaml_array(b, v, indent);
    else {
        s_scalar(b, v);
        s_puts(b, "\n");
    }
}

/* Finds path: as given if absolute or present from the working directory,
 * else next to the executable or in one of its three parent directories.
 * Returns 0 with the path in out, or -1. */
static int s_resolve(const char *path, char *out, size_t size)
{
    if (path[0] == '/' || access(path, R_OK) == 0) {
        snprintf(out, size, "%s", path);
        return access(path, R_OK) == 0 ? 0 : -1;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash)
            break;
        *slash = '\0';
        if ((size_t)snprintf(out, size, "%s/%s", exe, path) < size && access(out, R_OK) == 0)
            return 0;
    }
    return -1;
}

openapi_t *openapi_load(const char *path, err_t *err)
{
    openapi_t *self = calloc(1, sizeof *self);
    if (!self) {
        err_set(err, ERR_SYS, "cannot load OpenAPI document: out of memory");
        return NULL;
    }
    if (!path || !*path || s_resolve(path, self->path, sizeof self->path) < 0) {
        log_warn("OpenAPI document not found; /docs/openapi/ answers 503", "path=\"%s\"",
                 path ? path : "");
        return self;
    }
    json_error_t jerr;
    json_t *doc = json_load_file(self->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        err_set(err, ERR_INVALID, "cannot load OpenAPI document '%s': line %d column %d: %s",
                self->path, jerr.line, jerr.column, doc ? "not an object" : jerr.text);
        json_decref(doc);
        openapi_destroy(&self);
        return NULL;
    }
    self->json = json_dumps(doc, JSON_INDENT(2));
    s_buf_t yaml = {0};
    s_yaml_value(&yaml, doc, 0, 0);
    json_decref(doc);
    self->yaml = yaml.s;
    self->yaml_len = yaml.len;
    if (!self->json || yaml.failed || strlen(self->json) > OPENAPI_MAX_BYTES) {
        err_set(err, ERR_INVALID, "cannot load OpenAPI document '%s': too large or out of memory",
                self->path);
        openapi_destroy(&self);
        return NULL;
    }
    self->json_len = strlen(self->json);
    log_info("OpenAPI document loaded", "path=\"%s\" bytes=%zu", self->path, self->json_len);
    return self;
}

void openapi_destroy(openapi_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->json);
    free((*self_p)->yaml);
    free(*self_p);
    *self_p = NULL;
}

const char *openapi_text(const openapi_t *self, int yaml, size_t *len)
{
    const char *s = !self ? NULL : yaml ? self->yaml : self->json;
    *len = !s ? 0 : yaml ? self->yaml_len : self->json_len;
    return s;
}
