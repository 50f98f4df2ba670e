/*
 * builtin.c - the built-in task types, for tests and benchmarks.
 *
 *   noop   succeeds at once
 *   sleep  succeeds after parameters.seconds (default 1, at most 86400)
 *   echo   succeeds at once; its output is the parameters as JSON
 *   fail   fails at once with exit code 1 and parameters.message
 *
 * A max_execution_time shorter than a sleep ends it as timed_out.
 */
#include "worker/worker.h"

#include <jansson.h>
#include <string.h>

static const char *s_names[] = {"noop", "sleep", "echo", "fail"};

int builtin_known(const char *name)
{
    for (size_t i = 0; i < sizeof s_names / sizeof s_names[0]; i++)
        if (strcmp(name, s_names[i]) == 0)
            return 1;
    return 0;
}

static void s_finish(run_t *run, const char *status, int exit_code, const char *error,
                     const char *output)
{
    run->finished = 1;
    snprintf(run->status, sizeof run->status, "%s", status);
    run->exit_code = exit_code;
    run->error = error ? strdup(error) : NULL;
    run->output = output ? strdup(output) : NULL;
}

int builtin_start(run_t *run, int64_t now_mono)
{
    json_t *params = json_loads(run->parameters ? run->parameters : "{}", 0, NULL);
    int rc = 0;
    if (strcmp(run->task_type, "noop") == 0) {
        s_finish(run, "succeeded", 0, NULL, NULL);
    } else if (strcmp(run->task_type, "echo") == 0) {
        s_finish(run, "succeeded", 0, NULL, run->parameters ? run->parameters : "{}");
    } else if (strcmp(run->task_type, "fail") == 0) {
        const char *m = json_string_value(json_object_get(params, "message"));
        s_finish(run, "failed", 1, m ? m : "fail task requested", NULL);
    } else if (strcmp(run->task_type, "sleep") == 0) {
        json_t *s = json_object_get(params, "seconds");
        double secs = json_is_number(s) ? json_number_value(s) : 1.0;
        if (secs < 0 || secs > 86400) {
            s_finish(run, "failed", 2, "sleep: parameters.seconds must be within 0-86400", NULL);
        } else {
            double limit = run->max_execution_time > 0 ? run->max_execution_time : secs;
            run->done_at_mono = now_mono + (int64_t)((secs < limit ? secs : limit) * 1000);
        }
    } else {
        rc = ERR_INVALID;
    }
    json_decref(params);
    return rc;
}

void builtin_complete(run_t *run, int64_t now_mono)
{
    (void)now_mono;
    json_t *params = json_loads(run->parameters ? run->parameters : "{}", 0, NULL);
    json_t *s = json_object_get(params, "seconds");
    double secs = json_is_number(s) ? json_number_value(s) : 1.0;
    json_decref(params);
    if (run->max_execution_time > 0 && secs > run->max_execution_time)
        s_finish(run, "timed_out", -1, "max_execution_time exceeded", NULL);
    else
        s_finish(run, "succeeded", 0, NULL, NULL);
}

void run_destroy(run_t **run_p)
{
    run_t *run = *run_p;
    if (!run)
        return;
    free(run->parameters);
    free(run->error);
    free(run->output);
    free(run);
    *run_p = NULL;
}
