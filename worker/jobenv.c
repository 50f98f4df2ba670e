/*
 * jobenv.c - the environment an exec job's process gets.
 *
 * Nothing of the worker's environment leaks in except the names the task
 * type allows. The job's own variables come first and win over allowed
 * ones of the same name:
 *
 *   SKED_JOB_ID, SKED_ATTEMPT, SKED_TRIGGER_ID, SKED_TASK_TYPE,
 *   SKED_SCHEDULED_FOR (ISO-8601 UTC), and SKED_PARAM_<NAME> for each
 *   top-level parameter: NAME upper-cased with every character other than
 *   a letter or digit turned into '_'; a string value as it is, any other
 *   value as its compact JSON text. When two keys map to one name, the
 *   first in the parameters object wins. A value too long for the kernel
 *   (a "K=V" string over 128 KiB would make execve fail) is left out: the
 *   process still has every parameter on stdin.
 *
 * Values are passed verbatim: they are never seen by a shell.
 */
#include "worker/worker.h"

#include "common/clock.h"
#include "common/log.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void jobenv_param_name(const char *key, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "SKED_PARAM_");
    for (const char *p = key; *p && n + 1 < size; p++) {
        unsigned char c = (unsigned char)*p;
        out[n++] = (char)(c < 0x80 && isalnum(c) ? toupper(c) : '_');
    }
    if (n < size)
        out[n] = '\0';
}

typedef struct {
    char **v;
    size_t n, cap;
    zhashx_t *names; /* what v holds, to keep the first of a name */
} env_t;

/* Linux's MAX_ARG_STRLEN: the longest "K=V" execve accepts, with its NUL. */
#define ENV_STRING_MAX (32 * 4096)

/* Adds name=value unless name is there already or it is too long. */
static void s_add(env_t *e, const char *name, const char *value)
{
    size_t len = strlen(name);
    if (len + strlen(value) + 2 > ENV_STRING_MAX) {
        log_warn("parameter too long for the environment; on stdin only", "name=%s", name);
        return;
    }
    if (zhashx_insert(e->names, name, (void *)1) != 0)
        return;
    if (e->n + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 16;
        e->v = realloc(e->v, e->cap * sizeof *e->v);
    }
    size_t size = len + strlen(value) + 2;
    char *kv = malloc(size);
    snprintf(kv, size, "%s=%s", name, value);
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
}

char **jobenv_build(const run_t *run, char *const *allow, char *const *environ_in)
{
    env_t e = {.names = zhashx_new()};
    char num[32], when[32];
    s_add(&e, "SKED_JOB_ID", run->job_id);
    snprintf(num, sizeof num, "%d", run->attempt);
    s_add(&e, "SKED_ATTEMPT", num);
    s_add(&e, "SKED_TRIGGER_ID", run->trigger_id);
    s_add(&e, "SKED_TASK_TYPE", run->task_type);
    clock_format_iso(run->scheduled_for, when, sizeof when);
    s_add(&e, "SKED_SCHEDULED_FOR", when);
    json_t *params = json_loads(run->parameters ? run->parameters : "{}", 0, NULL);
    const char *key;
    json_t *v;
    json_object_foreach(params, key, v)
    {
        char name[256];
        jobenv_param_name(key, name, sizeof name);
        if (json_is_string(v)) {
            s_add(&e, name, json_string_value(v));
        } else {
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            s_add(&e, name, text ? text : "");
            free(text);
        }
    }
    json_decref(params);
    for (size_t i = 0; allow && allow[i]; i++) {
        size_t len = strlen(allow[i]);
        for (size_t k = 0; environ_in && environ_in[k]; k++)
            if (strncmp(environ_in[k], allow[i], len) == 0 && environ_in[k][len] == '=') {
                s_add(&e, allow[i], environ_in[k] + len + 1);
                break;
            }
    }
    zhashx_destroy(&e.names);
    return e.v;
}

void jobenv_free(char ***env_p)
{
    char **env = *env_p;
    if (!env)
        return;
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(env);
    *env_p = NULL;
}
