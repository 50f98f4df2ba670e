/*
 * test_worker_jobenv.c - an exec job's environment: SKED_* variables, the
 * parameters as SKED_PARAM_*, and nothing else but the allow-list.
 */
#include "tests/unit/test.h"

#include "../../worker/jobenv.c"

static const char *s_get(char **env, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; env[i]; i++)
        if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
            return env[i] + n + 1;
    return NULL;
}

TEST(worker_jobenv_param_names)
{
    char out[64];
    jobenv_param_name("retries", out, sizeof out);
    CHECK_STR(out, "SKED_PARAM_RETRIES");
    jobenv_param_name("max-items.v2", out, sizeof out);
    CHECK_STR(out, "SKED_PARAM_MAX_ITEMS_V2");
    jobenv_param_name("caf\xc3\xa9", out, sizeof out);
    CHECK_STR(out, "SKED_PARAM_CAF__");
    jobenv_param_name("a-very-long-parameter-name-that-does-not-fit", out, 20);
    CHECK_STR(out, "SKED_PARAM_A_VERY_L");
}

TEST(worker_jobenv_builds_the_environment)
{
    run_t r = {.attempt = 2, .scheduled_for = 1700000000123};
    snprintf(r.job_id, sizeof r.job_id, "t1@1700000000123");
    snprintf(r.trigger_id, sizeof r.trigger_id, "t1");
    snprintf(r.task_type, sizeof r.task_type, "backup");
    r.parameters = "{\"path\": \"/srv; rm -rf /\", \"n\": 3, \"deep\": {\"a\": [true]}, "
                   "\"a-b\": \"first\", \"a_b\": \"second\", \"SKED_JOB_ID\": \"x\"}";
    char *allow[] = {"PATH", "HOME", "MISSING", "SKED_PARAM_N", NULL};
    char *environ_in[] = {"PATH=/bin", "HOME=/root", "SECRET=s", "PATHX=no",
                          "SKED_PARAM_N=from-worker", NULL};
    char **env = jobenv_build(&r, allow, environ_in);
    CHECK_STR(s_get(env, "SKED_JOB_ID"), "t1@1700000000123");
    CHECK_STR(s_get(env, "SKED_ATTEMPT"), "2");
    CHECK_STR(s_get(env, "SKED_TRIGGER_ID"), "t1");
    CHECK_STR(s_get(env, "SKED_TASK_TYPE"), "backup");
    CHECK_STR(s_get(env, "SKED_SCHEDULED_FOR"), "2023-11-14T22:13:20.123Z");
    CHECK_STR(s_get(env, "SKED_PARAM_PATH"), "/srv; rm -rf /");
    CHECK_STR(s_get(env, "SKED_PARAM_N"), "3");
    CHECK_STR(s_get(env, "SKED_PARAM_DEEP"), "{\"a\":[true]}");
    CHECK_STR(s_get(env, "SKED_PARAM_A_B"), "first");
    CHECK_STR(s_get(env, "SKED_PARAM_SKED_JOB_ID"), "x");
    CHECK_STR(s_get(env, "PATH"), "/bin");
    CHECK_STR(s_get(env, "HOME"), "/root");
    CHECK(s_get(env, "SECRET") == NULL);
    CHECK(s_get(env, "PATHX") == NULL);
    CHECK(s_get(env, "MISSING") == NULL);
    int n = 0;
    while (env[n])
        n++;
    CHECK_INT(n, 12); /* SKED_PARAM_N is the job's, not the allowed one */
    jobenv_free(&env);
    CHECK(env == NULL);
}

TEST(worker_jobenv_leaves_out_values_execve_would_refuse)
{
    run_t r = {.attempt = 1};
    size_t n = 200 * 1024;
    char *params = malloc(n + 64);
    int k = snprintf(params, n + 64, "{\"big\": \"");
    memset(params + k, 'x', n);
    snprintf(params + k + n, 64, "\", \"small\": \"s\"}");
    r.parameters = params;
    char **env = jobenv_build(&r, NULL, NULL);
    CHECK(s_get(env, "SKED_PARAM_BIG") == NULL);
    CHECK_STR(s_get(env, "SKED_PARAM_SMALL"), "s");
    jobenv_free(&env);
    free(params);
}
