/*
 * test_schedule.c - interval arithmetic, partitions, job ids.
 */
#include "tests/unit/test.h"

#include "common/schedule.h"

TEST(schedule_interval_next_prev)
{
    CHECK_INT(sched_interval_next(1000, 500, 0), 1000);
    CHECK_INT(sched_interval_next(1000, 500, 1000), 1500);
    CHECK_INT(sched_interval_next(1000, 500, 1499), 1500);
    CHECK_INT(sched_interval_next(1000, 500, 1500), 2000);
    CHECK_INT(sched_interval_prev(1000, 500, 999), -1);
    CHECK_INT(sched_interval_prev(1000, 500, 1000), 1000);
    CHECK_INT(sched_interval_prev(1000, 500, 2499), 2000);
}

TEST(schedule_interval_units)
{
    CHECK_INT(sched_interval_ms(3600, "seconds"), 3600000);
    CHECK_INT(sched_interval_ms(2, "minutes"), 120000);
    CHECK_INT(sched_interval_ms(1, "hours"), 3600000);
    CHECK_INT(sched_interval_ms(1, "days"), 86400000);
    CHECK_INT(sched_interval_ms(1, "weeks"), -1);
    CHECK_INT(sched_interval_ms(0, "seconds"), -1);
    CHECK_INT(sched_interval_ms(INT64_MAX / 10, "days"), -1);
}

TEST(schedule_partition_and_job_id)
{
    int seen[8] = {0};
    char id[32];
    for (int i = 0; i < 800; i++) {
        snprintf(id, sizeof id, "t%d", i);
        int p = sched_partition(id, 8);
        CHECK(p >= 0 && p < 8);
        seen[p]++;
    }
    for (int p = 0; p < 8; p++)
        CHECK(seen[p] > 50); /* spread, not all in one */
    CHECK_INT(sched_partition("abc", 64), sched_partition("abc", 64));
    char job[64];
    sched_job_id(job, sizeof job, "t1", 1795701600000LL);
    CHECK_STR(job, "t1@1795701600000");
}
