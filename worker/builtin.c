/*
 * builtin.c - the built-in handlers, for tests and benchmarks, and the
 * run_t helpers every handler shares.
 *
 *   noop   succeeds at once
 *   sleep  succeeds after parameters.seconds (default 1, at most 86400)
 *   echo   succeeds at once; its output is the parameters as JSON
 *   fail   fails at once with exit code 1 and parameters.message
 *
 * Deadlines (max_execution_time, a type's timeout) are jobs.c's business:
 * a sleep longer than its deadline is ended there as timed_out.
 */
#include "worker/worker.h"

#include <jansson.h>
#include <stdarg.h>
#include <string.h>

static const char *s_names[] = {"noop", "sleep", "echo", "fail"};

int builtin_known(const char *name)
{
    for (size_t i = 0; i < sizeof s_names / sizeof s_names[0]; i++)
        if (strcmp(name, s_names[i]) == 0)
            return 1;
    return 0;
}

void run_set_outcome(run_t *run, const char *status, int exit_code, const char *error_fmt, ...)
{
    run->finished = 1;
    snprintf(run->status, sizeof run->status, "%s", status);
    run->exit_code = exit_code;
    free(run->error);
    run->error = NULL;
    if (error_fmt) {
        char buf[8192];
        va_list ap;
        va_start(ap, error_fmt);
        vsnprintf(buf, sizeof buf, error_fmt, ap);
        va_end(ap);
        run->error = strdup(buf);
    }
}

void run_set_ended(run_t *run, int exit_code)
{
    switch (run->ending) {
    case END_TIMEOUT:
        if (run->deadline_is_job)
            run_set_outcome(run, "timed_out", exit_code,
                            "timed out after %g s (max_execution_time)",
                            (double)(run->deadline_mono - run->started_mono) / 1000.0);
        else
            run_set_outcome(run, "timed_out", exit_code,
                            "timed out after %g s (timeout of task type '%s')",
                            (double)(run->deadline_mono - run->started_mono) / 1000.0,
                            run->task_type);
        break;
    case END_CANCEL:
        run_set_outcome(run, strcmp(run->end_reason, "timed_out") == 0 ? "timed_out" : "cancelled",
                        exit_code, "cancelled by a master (reason: %s)",
                        run->end_reason[0] ? run->end_reason : "cancelled");
        break;
    case END_SHUTDOWN:
    case END_NONE:
        run_set_outcome(run, "failed", exit_code, "worker shutting down");
        break;
    }
}

void builtin_start(run_t *run, const char *name, int64_t now_mono)
{
    json_t *params = json_loads(run->parameters ? run->parameters : "{}", 0, NULL);
    if (strcmp(name, "noop") == 0) {
        run_set_outcome(run, "succeeded", 0, NULL);
    } else if (strcmp(name, "echo") == 0) {
        run_set_outcome(run, "succeeded", 0, NULL);
        run->output = strdup(run->parameters ? run->parameters : "{}");
    } else if (strcmp(name, "fail") == 0) {
        const char *m = json_string_value(json_object_get(params, "message"));
        run_set_outcome(run, "failed", 1, "%s", m ? m : "fail task requested");
    } else if (strcmp(name, "sleep") == 0) {
        json_t *s = json_object_get(params, "seconds");
        double secs = json_is_number(s) ? json_number_value(s) : 1.0;
        if (secs < 0 || secs > 86400)
            run_set_outcome(run, "failed", 2, "sleep: parameters.seconds must be within 0-86400");
        else
            run->done_at_mono = now_mono + (int64_t)(secs * 1000);
    } else {
        run_set_outcome(run, "failed", -1, "unknown built-in handler '%s'", name);
    }
    json_decref(params);
}

void builtin_complete(run_t *run)
{
    run_set_outcome(run, "succeeded", 0, NULL);
}

void run_destroy(run_t **run_p)
{
    run_t *run = *run_p;
    if (!run)
        return;
    free(run->parameters);
    free(run->error);
    free(run->output);
    tail_destroy(&run->tail);
    free(run);
    *run_p = NULL;
}
