/*
 * test_proto.c - wire protocol: round trips and rejection of bad frames.
 */
#include "tests/unit/test.h"

#include "proto/proto.h"

#include <stdlib.h>

static zmsg_t *s_raw(const char *ver, const char *type, const char *body)
{
    zmsg_t *z = zmsg_new();
    if (ver)
        zmsg_addstr(z, ver);
    if (type)
        zmsg_addstr(z, type);
    if (body)
        zmsg_addstr(z, body);
    return z;
}

static int s_decode_raw(const char *ver, const char *type, const char *body, proto_msg_t *m,
                        err_t *err)
{
    zmsg_t *z = s_raw(ver, type, body);
    int rc = proto_decode(z, m, err);
    zmsg_destroy(&z);
    return rc;
}

TEST(proto_job_roundtrip)
{
    proto_msg_t m = {.type = PROTO_JOB, .attempt = 2, .scheduled_for = 1795701600000LL,
                     .max_execution_time = 30, .seq = 7, .start_at = 1795701600000LL};
    snprintf(m.node_id, sizeof m.node_id, "master-a");
    snprintf(m.job_id, sizeof m.job_id, "t1@1795701600000");
    snprintf(m.trigger_id, sizeof m.trigger_id, "t1");
    snprintf(m.task_type, sizeof m.task_type, "sleep");
    m.parameters = strdup("{\"seconds\":1}");
    err_t err = {0};
    zmsg_t *z = proto_encode(&m, &err);
    CHECK(z != NULL);
    CHECK_INT(zmsg_size(z), 3);
    proto_msg_t d;
    CHECK_INT(proto_decode(z, &d, &err), 0);
    CHECK_INT(d.type, PROTO_JOB);
    CHECK_STR(d.job_id, "t1@1795701600000");
    CHECK_STR(d.task_type, "sleep");
    CHECK_INT(d.attempt, 2);
    CHECK_INT(d.scheduled_for, 1795701600000LL);
    CHECK_INT(d.max_execution_time, 30);
    CHECK_INT(d.start_at, 1795701600000LL);
    CHECK_INT(d.seq, 7);
    CHECK_STR(d.parameters, "{\"seconds\":1}");
    zmsg_destroy(&z);
    proto_msg_reset(&d);
    proto_msg_reset(&m);
}

TEST(proto_finished_and_heartbeat_roundtrip)
{
    proto_msg_t m = {.type = PROTO_FINISHED, .attempt = 1, .at = 5, .exit_code = 3};
    snprintf(m.node_id, sizeof m.node_id, "w1");
    snprintf(m.job_id, sizeof m.job_id, "j");
    snprintf(m.status, sizeof m.status, "failed");
    m.error = strdup("exit code 3");
    err_t err = {0};
    zmsg_t *z = proto_encode(&m, &err);
    proto_msg_t d;
    CHECK_INT(proto_decode(z, &d, &err), 0);
    CHECK_STR(d.status, "failed");
    CHECK_STR(d.error, "exit code 3");
    CHECK_INT(d.exit_code, 3);
    zmsg_destroy(&z);
    proto_msg_reset(&d);
    proto_msg_reset(&m);

    char *running[] = {"a", "b", NULL};
    proto_msg_t h = {.type = PROTO_HEARTBEAT, .slots = 4, .free_slots = 2, .running = running,
                     .nrunning = 2};
    snprintf(h.node_id, sizeof h.node_id, "w1");
    snprintf(h.task_types, sizeof h.task_types, "noop,sleep");
    z = proto_encode(&h, &err);
    CHECK_INT(proto_decode(z, &d, &err), 0);
    CHECK_INT(d.nrunning, 2);
    CHECK_STR(d.running[1], "b");
    CHECK_INT(d.free_slots, 2);
    zmsg_destroy(&z);
    proto_msg_reset(&d);
}

TEST(proto_ping_and_its_echo_roundtrip)
{
    proto_msg_t m = {.type = PROTO_PING, .token = 4503599627370497LL};
    snprintf(m.node_id, sizeof m.node_id, "master-a");
    err_t err = {0};
    zmsg_t *z = proto_encode(&m, &err);
    proto_msg_t d;
    CHECK_INT(proto_decode(z, &d, &err), 0);
    CHECK_INT(d.type, PROTO_PING);
    CHECK_INT(d.token, 4503599627370497LL);
    zmsg_destroy(&z);
    proto_msg_reset(&d);

    proto_msg_t b = {.type = PROTO_BYE, .echo = 4503599627370497LL};
    snprintf(b.node_id, sizeof b.node_id, "w1");
    z = proto_encode(&b, &err);
    CHECK_INT(proto_decode(z, &d, &err), 0);
    CHECK_INT(d.echo, 4503599627370497LL);
    zmsg_destroy(&z);
    proto_msg_reset(&d);

    CHECK(s_decode_raw("SKED1", "PING", "{\"node_id\":\"m\"}", &d, &err) < 0);
    CHECK(strstr(err.msg, "required field 'token'") != NULL);
    CHECK(s_decode_raw("SKED1", "PING", "{\"node_id\":\"m\",\"token\":0}", &d, &err) < 0);
    CHECK(strstr(err.msg, "token must not be 0") != NULL);
    CHECK(s_decode_raw("SKED1", "HEARTBEAT",
                       "{\"node_id\":\"w\",\"slots\":1,\"free_slots\":1,\"task_types\":\"\","
                       "\"echo\":\"x\"}",
                       &d, &err) < 0);
    CHECK(strstr(err.msg, "'echo' must be an integer") != NULL);
}

TEST(proto_refused_carries_the_job_and_the_credit)
{
    proto_msg_t m = {.type = PROTO_REFUSED, .attempt = 2, .slots = 4, .free_slots = 0};
    snprintf(m.node_id, sizeof m.node_id, "w1");
    snprintf(m.job_id, sizeof m.job_id, "j1");
    snprintf(m.task_types, sizeof m.task_types, "noop");
    err_t err = {0};
    zmsg_t *z = proto_encode(&m, &err);
    proto_msg_t d;
    CHECK_INT(proto_decode(z, &d, &err), 0);
    CHECK_INT(d.type, PROTO_REFUSED);
    CHECK_STR(proto_type_name(d.type), "REFUSED");
    CHECK_STR(d.job_id, "j1");
    CHECK_INT(d.attempt, 2);
    CHECK_INT(d.slots, 4);
    CHECK_INT(d.free_slots, 0);
    CHECK_STR(d.task_types, "noop");
    zmsg_destroy(&z);
    proto_msg_reset(&d);

    CHECK(s_decode_raw("SKED1", "REFUSED",
                       "{\"node_id\":\"w\",\"job_id\":\"j\",\"attempt\":1,\"slots\":1,"
                       "\"task_types\":\"\"}",
                       &d, &err) < 0);
    CHECK(strstr(err.msg, "required field 'free_slots'") != NULL);
    CHECK(s_decode_raw("SKED1", "REFUSED",
                       "{\"node_id\":\"w\",\"attempt\":1,\"slots\":1,\"free_slots\":0,"
                       "\"task_types\":\"\"}",
                       &d, &err) < 0);
    CHECK(strstr(err.msg, "required field 'job_id'") != NULL);
}

TEST(proto_encode_requires_fields)
{
    proto_msg_t m = {.type = PROTO_STARTED, .attempt = 1};
    snprintf(m.node_id, sizeof m.node_id, "w1");
    err_t err = {0};
    zmsg_t *z = proto_encode(&m, &err); /* job_id empty is encoded, decode refuses */
    proto_msg_t d;
    CHECK(proto_decode(z, &d, &err) < 0);
    zmsg_destroy(&z);
    m.type = (proto_type_t)99;
    CHECK(proto_encode(&m, &err) == NULL);
}

TEST(proto_rejects_malformed)
{
    proto_msg_t m;
    err_t err = {0};
    CHECK(s_decode_raw("SKED1", "JOB", NULL, &m, &err) < 0); /* 2 frames */
    CHECK(strstr(err.msg, "frames") != NULL);
    CHECK(s_decode_raw("SKED2", "HELLO", "{}", &m, &err) < 0);
    CHECK(strstr(err.msg, "version") != NULL);
    CHECK(s_decode_raw("SKED1", "NOPE", "{}", &m, &err) < 0);
    CHECK(strstr(err.msg, "unknown type") != NULL);
    CHECK(s_decode_raw("SKED1", "HELLO", "{not json", &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "HELLO", "[1,2]", &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "HELLO", "{\"node_id\":\"w\"}", &m, &err) < 0);
    CHECK(strstr(err.msg, "required field 'slots'") != NULL);
    CHECK(s_decode_raw("SKED1", "HELLO",
                       "{\"node_id\":\"w\",\"slots\":\"4\",\"free_slots\":1,\"task_types\":\"x\"}",
                       &m, &err) < 0);
    CHECK(strstr(err.msg, "'slots' must be an integer") != NULL);
    CHECK(s_decode_raw("SKED1", "HELLO",
                       "{\"node_id\":\"w\",\"node_id\":\"v\",\"slots\":1,\"free_slots\":1,"
                       "\"task_types\":\"x\"}",
                       &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "FINISHED",
                       "{\"node_id\":\"w\",\"job_id\":\"j\",\"attempt\":1,\"at\":1,"
                       "\"status\":\"weird\"}",
                       &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "STARTED",
                       "{\"node_id\":\"w\",\"job_id\":\"j\",\"attempt\":0,\"at\":1}", &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "HEARTBEAT",
                       "{\"node_id\":\"w\",\"slots\":1,\"free_slots\":1,\"task_types\":\"x\","
                       "\"running\":[\"a\",5]}",
                       &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "JOB",
                       "{\"node_id\":\"m\",\"job_id\":\"j\",\"trigger_id\":\"t\",\"task_type\":"
                       "\"noop\",\"attempt\":1,\"scheduled_for\":1,\"parameters\":[]}",
                       &m, &err) < 0);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char body[600];
    snprintf(body, sizeof body, "{\"node_id\":\"%s\",\"op\":\"upsert\",\"trigger_id\":\"t\"}", big);
    CHECK(s_decode_raw("SKED1", "NOTIFY", body, &m, &err) < 0);
    CHECK(s_decode_raw("SKED1", "NOTIFY", "{\"node_id\":\"g\",\"op\":\"upsert\",\"trigger_id\":\"t\"}",
                       &m, &err) == 0);
    proto_msg_reset(&m);
}

TEST(proto_random_frames_never_crash)
{
    unsigned seed = 12345;
    const char *pieces[] = {"{", "}", "\"node_id\"", ":", "\"w\"", ",", "1", "[", "]", "\"slots\"",
                            "null", "\"attempt\"", "-9999999999999", "\"\\u0000\"", "true"};
    for (int i = 0; i < 5000; i++) {
        char body[256] = "";
        int n = (int)(rand_r(&seed) % 12);
        for (int k = 0; k < n; k++)
            strncat(body, pieces[rand_r(&seed) % 15], sizeof body - strlen(body) - 1);
        const char *types[] = {"HELLO", "HEARTBEAT", "JOB",  "STARTED",
                               "FINISHED", "NOTIFY", "BYE", "PING"};
        proto_msg_t m;
        err_t err = {0};
        if (s_decode_raw("SKED1", types[rand_r(&seed) % 8], body, &m, &err) == 0)
            proto_msg_reset(&m);
    }
    CHECK(1);
}
