/*
 * test_worker_config.c - the worker config file: handlers, limits, labels,
 * ${VAR} in headers, and the errors a bad file gives.
 *
 * Links with test_worker_tail.c, which brings worker/tail.c.
 */
#include "tests/unit/test.h"

#include "../../worker/builtin.c"
#include "../../worker/wconfig.c"

static const char *s_good =
    "{\"task_types\": {"
    "  \"backup\": {\"handler\": \"exec\", \"argv\": [\"/usr/local/bin/backup\", \"--full\"],"
    "             \"cwd\": \"/\", \"env_allow\": [\"PATH\", \"HOME\"], \"max_concurrent\": 2,"
    "             \"timeout\": 3600},"
    "  \"call_engine\": {\"handler\": \"http\", \"url\": \"http://127.0.0.1:9000/run\","
    "             \"headers\": {\"Authorization\": \"Bearer ${SKED_UNIT_TOKEN}\"},"
    "             \"timeout\": 0.5, \"max_concurrent\": 10},"
    "  \"noop\": {\"handler\": \"noop\"},"
    "  \"wait\": {\"handler\": \"sleep\", \"timeout\": 2}},"
    " \"labels\": {\"region\": \"eu\", \"gpu\": \"true\"}, \"slots\": 16, \"kill_grace_ms\": 250}";

TEST(worker_config_parses_handlers_and_limits)
{
    setenv("SKED_UNIT_TOKEN", "t0k", 1);
    err_t err = {0};
    wconfig_t *w = wconfig_parse(s_good, "/etc/sked/worker.json", &err);
    CHECK(w != NULL);
    if (!w) {
        printf("# %s\n", err.msg);
        return;
    }
    CHECK_INT(w->ntypes, 4);
    CHECK_INT(w->slots, 16);
    CHECK_INT(w->kill_grace_ms, 250);
    CHECK_STR(w->labels, "region=eu,gpu=true");
    tasktype_t *b = wconfig_find(w, "backup");
    CHECK(b && b->kind == HANDLER_EXEC);
    CHECK_STR(b->argv[0], "/usr/local/bin/backup");
    CHECK_STR(b->argv[1], "--full");
    CHECK(b->argv[2] == NULL);
    CHECK_STR(b->cwd, "/");
    CHECK_STR(b->env_allow[1], "HOME");
    CHECK_INT(b->max_concurrent, 2);
    CHECK_INT(b->timeout_ms, 3600000);
    tasktype_t *h = wconfig_find(w, "call_engine");
    CHECK(h && h->kind == HANDLER_HTTP);
    CHECK_STR(h->url, "http://127.0.0.1:9000/run");
    CHECK_STR(h->headers[0], "Authorization: Bearer t0k");
    CHECK_INT(h->timeout_ms, 500);
    tasktype_t *s = wconfig_find(w, "wait");
    CHECK(s && s->kind == HANDLER_BUILTIN);
    CHECK_STR(s->builtin, "sleep");
    CHECK(wconfig_find(w, "nope") == NULL);
    wconfig_destroy(&w);
    CHECK(w == NULL);
}

TEST(worker_config_builtins_default)
{
    err_t err = {0};
    wconfig_t *w = wconfig_builtins("noop,sleep,noop", &err);
    CHECK(w != NULL);
    CHECK_INT(w->ntypes, 2);
    CHECK_INT(w->kill_grace_ms, -1);
    CHECK(w->labels[0] == '\0');
    CHECK_STR(w->types[1].builtin, "sleep");
    wconfig_destroy(&w);
    CHECK(wconfig_builtins("noop,backup", &err) == NULL);
    CHECK(strstr(err.msg, "'backup'") != NULL);
}

static void s_bad(const char *text, const char *want)
{
    err_t err = {0};
    wconfig_t *w = wconfig_parse(text, "/x/w.json", &err);
    CHECK(w == NULL);
    wconfig_destroy(&w);
    if (!strstr(err.msg, "'/x/w.json'") || !strstr(err.msg, want)) {
        char m[800];
        snprintf(m, sizeof m, "error for %.200s: want \"%s\", got \"%s\"", text, want, err.msg);
        test_fail(__FILE__, __LINE__, m);
    }
}

TEST(worker_config_errors_name_the_file_and_key)
{
    unsetenv("SKED_UNIT_UNSET");
    s_bad("[1]", "must be a JSON object");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"noop\"}}, \"a\": 1, \"a\": 2}", "line 1");
    s_bad("{}", "task_types: required");
    s_bad("{\"task_types\": {\"a\": 1}}", "task_types.a: must be an object");
    s_bad("{\"task_types\": {\"a\": {}}}", "task_types.a.handler: required");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"exec\", \"argv\": [\"\"]}}}", "task_types.a.argv");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"exec\", \"argv\": [\"x\", 1]}}}", "entry 1");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"exec\", \"argv\": [\"x\"], \"cwd\": \"rel\"}}}",
          "task_types.a.cwd: must be an absolute path");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"exec\", \"argv\": [\"x\"], \"env_allow\": [\"A=B\"]}}}",
          "task_types.a.env_allow");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"exec\", \"argv\": [\"x\"], \"url\": \"http://h\"}}}",
          "task_types.a.url: unknown key for handler exec");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"http\"}}}", "task_types.a.url: required");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"http\", \"url\": \"http://h\", \"headers\": "
          "{\"X\": \"${SKED_UNIT_UNSET}\"}}}}",
          "task_types.a.headers.X: environment variable 'SKED_UNIT_UNSET' is not set");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"http\", \"url\": \"http://h\", \"headers\": "
          "{\"Bad Name\": \"v\"}}}}", "not a valid header name");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"noop\", \"timeout\": 0}}}", "task_types.a.timeout");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"noop\", \"max_concurrent\": 1.5}}}",
          "task_types.a.max_concurrent");
    s_bad("{\"task_types\": {\"a,b\": {\"handler\": \"noop\"}}}", "task_types.a,b");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"noop\"}}, \"labels\": {\"k\": 1}}", "labels.k");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"noop\"}}, \"slots\": 0}", "slots");
    s_bad("{\"task_types\": {\"a\": {\"handler\": \"noop\"}}, \"kill_grace_ms\": -1}", "kill_grace_ms");
}

TEST(worker_config_expands_variables_in_headers)
{
    setenv("SKED_UNIT_A", "1", 1);
    setenv("SKED_UNIT_B", "two", 1);
    err_t err = {0};
    wconfig_t *w = wconfig_parse(
        "{\"task_types\": {\"h\": {\"handler\": \"http\", \"url\": \"https://h/\", \"headers\": "
        "{\"X\": \"${SKED_UNIT_A}-${SKED_UNIT_B}$ {x} $\"}}}}", "p", &err);
    CHECK(w != NULL);
    if (w)
        CHECK_STR(w->types[0].headers[0], "X: 1-two$ {x} $");
    wconfig_destroy(&w);
}

TEST(worker_config_reads_files)
{
    err_t err = {0};
    CHECK(wconfig_load("/nonexistent/sked-worker.json", &err) == NULL);
    CHECK(strstr(err.msg, "cannot read worker config '/nonexistent/sked-worker.json'") != NULL);
}
