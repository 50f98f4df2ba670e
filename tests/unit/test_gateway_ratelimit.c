/*
 * test_gateway_ratelimit.c - the gateway's token buckets (refill, burst,
 * Retry-After, LRU bound) and the OpenAPI document's YAML rendering.
 */
#include "tests/unit/test.h"

#include "gateway/gateway.h"

#include <stdlib.h>
#include <unistd.h>

TEST(gateway_ratelimit_burst_and_refill)
{
    ratelimit_t *rl = ratelimit_new(2, 3, 100); /* 2/s, bursts of 3 */
    CHECK(rl != NULL);
    for (int i = 0; i < 3; i++)
        CHECK_INT(ratelimit_take(rl, "user:a", 1000), 0);
    CHECK_INT(ratelimit_take(rl, "user:a", 1000), 1); /* next token in 0.5 s: Retry-After 1 */
    CHECK_INT(ratelimit_take(rl, "user:b", 1000), 0); /* keys are independent */
    CHECK_INT(ratelimit_take(rl, "user:a", 1499), 1);
    CHECK_INT(ratelimit_take(rl, "user:a", 1500), 0);
    CHECK_INT(ratelimit_take(rl, "user:a", 1500), 1);
    /* A long pause refills to the burst, not beyond. */
    for (int i = 0; i < 3; i++)
        CHECK_INT(ratelimit_take(rl, "user:a", 100000), 0);
    CHECK(ratelimit_take(rl, "user:a", 100000) > 0);
    /* Time going backwards (it is monotonic, but) adds nothing. */
    CHECK(ratelimit_take(rl, "user:a", 50000) > 0);
    ratelimit_destroy(&rl);
    CHECK(rl == NULL);
    ratelimit_destroy(&rl);
}

TEST(gateway_ratelimit_retry_after_rounds_up)
{
    ratelimit_t *rl = ratelimit_new(0.1, 1, 10); /* a token every 10 s */
    CHECK_INT(ratelimit_take(rl, "ip:1.2.3.4", 0), 0);
    CHECK_INT(ratelimit_take(rl, "ip:1.2.3.4", 0), 10);
    CHECK_INT(ratelimit_take(rl, "ip:1.2.3.4", 2500), 8);
    ratelimit_destroy(&rl);
}

TEST(gateway_ratelimit_forgets_least_recently_used)
{
    ratelimit_t *rl = ratelimit_new(1, 1, 3);
    CHECK_INT(ratelimit_take(rl, "a", 0), 0);
    CHECK_INT(ratelimit_take(rl, "b", 0), 0);
    CHECK_INT(ratelimit_take(rl, "c", 0), 0);
    CHECK(ratelimit_take(rl, "a", 0) > 0); /* a is now the most recent */
    CHECK_INT(ratelimit_take(rl, "d", 0), 0); /* evicts b */
    CHECK_INT((long long)ratelimit_size(rl), 3);
    CHECK(ratelimit_take(rl, "a", 0) > 0);  /* still remembered */
    CHECK_INT(ratelimit_take(rl, "b", 0), 0); /* forgotten: a fresh bucket (evicts c) */
    CHECK(ratelimit_take(rl, "d", 0) > 0);
    CHECK_INT((long long)ratelimit_size(rl), 3);
    /* Many keys stay bounded. */
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ratelimit_take(rl, key, i);
    }
    CHECK_INT((long long)ratelimit_size(rl), 3);
    ratelimit_destroy(&rl);
}

TEST(gateway_openapi_yaml_rendering)
{
    char path[] = "/tmp/sked-openapi-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *doc = "{\"openapi\": \"3.1.0\", \"info\": {\"title\": \"a: \\\"b\\\"\\n\", \"x\": []},"
                      " \"list\": [1, {\"k\": true, \"m\": {}}, [null, 2.5]], \"200\": \"\"}";
    CHECK(write(fd, doc, strlen(doc)) == (ssize_t)strlen(doc));
    close(fd);
    err_t err = {0};
    openapi_t *o = openapi_load(path, &err);
    unlink(path);
    CHECK(o != NULL);
    size_t len = 0;
    const char *yaml = openapi_text(o, 1, &len);
    CHECK_STR(yaml, "\"openapi\": \"3.1.0\"\n"
                    "\"info\":\n"
                    "  \"title\": \"a: \\\"b\\\"\\n\"\n"
                    "  \"x\": []\n"
                    "\"list\":\n"
                    "  - 1\n"
                    "  - \"k\": true\n"
                    "    \"m\": {}\n"
                    "  -\n"
                    "    - null\n"
                    "    - 2.5\n"
                    "\"200\": \"\"\n");
    CHECK_INT((long long)len, (long long)strlen(yaml ? yaml : ""));
    const char *json = openapi_text(o, 0, &len);
    CHECK(json && json[0] == '{' && strstr(json, "\"openapi\": \"3.1.0\""));
    openapi_destroy(&o);

    /* Missing: not an error, no text. Broken: an error. */
    o = openapi_load("/nonexistent/sked.json", &err);
    CHECK(o != NULL && openapi_text(o, 0, &len) == NULL && len == 0);
    openapi_destroy(&o);
    char bad[] = "/tmp/sked-openapi-XXXXXX";
    fd = mkstemp(bad);
    CHECK(write(fd, "[1]", 3) == 3);
    close(fd);
    CHECK(openapi_load(bad, &err) == NULL);
    CHECK(strstr(err.msg, "not an object") != NULL);
    unlink(bad);
}
