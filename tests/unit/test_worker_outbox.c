/*
 * test_worker_outbox.c - FINISHED kept until ACKed: resent to its master
 * twice, then to every master with backoff (capped at 5 s); bounded; given up on.
 */
#include "tests/unit/test.h"

#include "../../worker/outbox.c"

typedef struct {
    int sends, to_all, last_master;
    char last_job[PROTO_ID_MAX];
} rec_t;

static void s_rec(void *ctx, int master, proto_msg_t *msg)
{
    rec_t *r = ctx;
    r->sends++;
    r->to_all += master < 0;
    r->last_master = master;
    snprintf(r->last_job, sizeof r->last_job, "%s", msg->job_id);
}

static proto_msg_t s_fin(const char *job, int attempt)
{
    proto_msg_t m = {.type = PROTO_FINISHED, .attempt = attempt, .output = "out", .error = NULL};
    snprintf(m.job_id, sizeof m.job_id, "%s", job);
    snprintf(m.status, sizeof m.status, "succeeded");
    return m;
}

TEST(worker_outbox_resends_then_broadcasts)
{
    outbox_t *o = outbox_new(100, 1 << 20, 600000, 1000);
    proto_msg_t m = s_fin("j1", 1);
    outbox_add(o, &m, 2, 0);
    rec_t r = {0};
    outbox_resend(o, 500, s_rec, &r); /* sent just now: not yet */
    CHECK_INT(r.sends, 0);
    for (int k = 1; k <= 2; k++) {
        outbox_resend(o, k * 1000, s_rec, &r);
        CHECK_INT(r.sends, k);
        CHECK_INT(r.last_master, 2);
    }
    outbox_resend(o, 3000, s_rec, &r);
    CHECK_INT(r.sends, 3);
    CHECK_INT(r.to_all, 1);
    /* Backing off: 2 s, 4 s, then capped at 5 s. */
    outbox_resend(o, 4000, s_rec, &r);
    CHECK_INT(r.sends, 3);
    outbox_resend(o, 5000, s_rec, &r);
    CHECK_INT(r.sends, 4);
    outbox_resend(o, 8000, s_rec, &r);
    CHECK_INT(r.sends, 4);
    outbox_resend(o, 9000, s_rec, &r);
    CHECK_INT(r.sends, 5);
    outbox_resend(o, 13000, s_rec, &r);
    CHECK_INT(r.sends, 5);
    outbox_resend(o, 14000, s_rec, &r);
    CHECK_INT(r.sends, 6);
    CHECK_STR(r.last_job, "j1");
    CHECK(outbox_find(o, "j1", 2) == NULL); /* another attempt */
    CHECK(outbox_find(o, "j1", 1) != NULL);
    CHECK_STR(outbox_find(o, "j1", 1)->job_id, "j1");
    CHECK_INT(outbox_ack(o, "j1", 2), 0);
    CHECK_INT(outbox_ack(o, "j1", 1), 1);
    CHECK_INT(outbox_ack(o, "j1", 1), 0);
    CHECK(outbox_find(o, "j1", 1) == NULL);
    CHECK_INT(outbox_size(o), 0);
    outbox_resend(o, 60000, s_rec, &r);
    CHECK_INT(r.sends, 6);
    outbox_destroy(&o);
    CHECK(o == NULL);
}

TEST(worker_outbox_is_bounded_and_gives_up)
{
    outbox_t *o = outbox_new(3, 1 << 20, 10000, 1000);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "j%d", i);
        proto_msg_t m = s_fin(id, 1);
        outbox_add(o, &m, 0, i);
    }
    CHECK_INT(outbox_size(o), 3);
    CHECK_INT(outbox_dropped(o), 2);
    CHECK_INT(outbox_ack(o, "j0", 1), 0); /* the oldest went first */
    CHECK_INT(outbox_ack(o, "j4", 1), 1);
    rec_t r = {0};
    outbox_resend(o, 10003, s_rec, &r); /* j2, j3 are 10 s old */
    CHECK_INT(outbox_size(o), 0);
    CHECK_INT(outbox_expired(o), 2);
    CHECK_INT(r.sends, 0);
    /* The same FINISHED added twice is kept once. */
    proto_msg_t m = s_fin("j9", 1);
    outbox_add(o, &m, 0, 0);
    outbox_add(o, &m, 1, 0);
    CHECK_INT(outbox_size(o), 1);
    outbox_destroy(&o);

    /* A byte budget bounds big outputs too. */
    o = outbox_new(100, 2 * sizeof(entry_t) + 10, 10000, 1000);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "b%d", i);
        proto_msg_t big = s_fin(id, 1);
        outbox_add(o, &big, 0, 0);
    }
    CHECK_INT(outbox_size(o), 2);
    CHECK_INT(outbox_dropped(o), 1);
    outbox_destroy(&o);
}
