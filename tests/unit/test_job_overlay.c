/*
 * test_job_overlay.c - a job's outcome record laid over the job document
 * (store_job_overlay), as the gateway and masters read a job whose record
 * is not folded yet.
 */
#include "tests/unit/test.h"

#include "common/store.h"

static const char *s_attempt_status(const bson_t *doc, const char *index)
{
    char key[32];
    snprintf(key, sizeof key, "attempts.%s.status", index);
    return bj_get_str(doc, key, "(none)");
}

TEST(job_overlay_sets_fields_and_appends_the_attempt)
{
    bson_t *job = BCON_NEW("_id", BCON_UTF8("t@1"), "status", BCON_UTF8("running"), "attempt",
                           BCON_INT32(2), "trigger_id", BCON_UTF8("t"), "attempts", "[", "{",
                           "attempt", BCON_INT32(1), "status", BCON_UTF8("failed"), "}", "]");
    bson_t *record = BCON_NEW("_id", BCON_UTF8("t@1"), "partition", BCON_INT32(3), "set", "{",
                              "status", BCON_UTF8("succeeded"), "attempt", BCON_INT32(2),
                              "result", "{", "exit_code", BCON_INT32(0), "}", "}", "push", "{",
                              "attempt", BCON_INT32(2), "status", BCON_UTF8("succeeded"), "}");
    bson_t out;
    store_job_overlay(job, record, &out);
    CHECK_STR(bj_get_str(&out, "status", ""), "succeeded");
    CHECK_INT(bj_get_int(&out, "attempt", 0), 2);
    CHECK_INT(bj_get_int(&out, "result.exit_code", -1), 0);
    CHECK_STR(bj_get_str(&out, "trigger_id", ""), "t");
    CHECK_STR(s_attempt_status(&out, "0"), "failed");
    CHECK_STR(s_attempt_status(&out, "1"), "succeeded");
    CHECK_STR(s_attempt_status(&out, "2"), "(none)");
    CHECK(!bson_has_field(&out, "partition"));
    CHECK(!bson_has_field(&out, "set"));

    /* Folded already (the fold's update landed, its delete did not): the
     * attempt is there once. */
    bson_t again;
    store_job_overlay(&out, record, &again);
    CHECK_STR(s_attempt_status(&again, "1"), "succeeded");
    CHECK_STR(s_attempt_status(&again, "2"), "(none)");
    CHECK_INT((int64_t)bson_count_keys(&again), (int64_t)bson_count_keys(&out));
    bson_destroy(&again);
    bson_destroy(&out);
    bson_destroy(record);
    bson_destroy(job);
}

TEST(job_overlay_of_a_job_without_attempts)
{
    bson_t *job = BCON_NEW("_id", BCON_UTF8("t@2"), "status", BCON_UTF8("queued"));
    bson_t *record = BCON_NEW("_id", BCON_UTF8("t@2"), "set", "{", "status",
                              BCON_UTF8("cancelled"), "}", "push", "{", "attempt", BCON_INT32(1),
                              "status", BCON_UTF8("cancelled"), "}");
    bson_t out;
    store_job_overlay(job, record, &out);
    CHECK_STR(bj_get_str(&out, "status", ""), "cancelled");
    CHECK_STR(s_attempt_status(&out, "0"), "cancelled");
    bson_destroy(&out);
    bson_destroy(record);
    bson_destroy(job);
}
