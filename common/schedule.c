/*
 * schedule.c - partition hashing, interval arithmetic, job ids.
 */
#include "common/schedule.h"

#include <stdio.h>
#include <string.h>

int sched_partition(const char *trigger_id, int partitions)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)trigger_id; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return (int)(h % (uint32_t)partitions);
}

int64_t sched_interval_ms(int64_t interval, const char *unit)
{
    int64_t mult;
    if (strcmp(unit, "seconds") == 0)
        mult = 1000;
    else if (strcmp(unit, "minutes") == 0)
        mult = 60 * 1000;
    else if (strcmp(unit, "hours") == 0)
        mult = 3600 * 1000;
    else if (strcmp(unit, "days") == 0)
        mult = 86400 * 1000;
    else
        return -1;
    if (interval <= 0 || interval > INT64_MAX / mult / 4)
        return -1;
    return interval * mult;
}

int64_t sched_interval_next(int64_t first, int64_t period, int64_t after)
{
    if (after < first)
        return first;
    return first + ((after - first) / period + 1) * period;
}

int64_t sched_interval_prev(int64_t first, int64_t period, int64_t t)
{
    if (t < first)
        return -1;
    return first + (t - first) / period * period;
}

void sched_job_id(char *buf, size_t size, const char *trigger_id, int64_t scheduled_for)
{
    snprintf(buf, size, "%s@%lld", trigger_id, (long long)scheduled_for);
}
