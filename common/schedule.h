/*
 * schedule.h - pure scheduling arithmetic shared by gateways and masters:
 * which partition a trigger belongs to, interval fire times, job ids.
 *
 * An INTERVAL trigger fires at first + k * period (k >= 0) in absolute
 * time, never drifting with run durations; `first` is start_at when given,
 * else creation time + period.
 */
#ifndef SKED_SCHEDULE_H
#define SKED_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

/* Partition of a trigger id, 0..partitions-1 (FNV-1a; stable forever). */
int sched_partition(const char *trigger_id, int partitions);

/* Interval length in ms for {interval, unit}; -1 if the unit is unknown or
 * the result overflows. Units: seconds, minutes, hours, days. */
int64_t sched_interval_ms(int64_t interval, const char *unit);

/* Smallest first + k*period (k >= 0) strictly greater than after. */
int64_t sched_interval_next(int64_t first, int64_t period, int64_t after);

/* Largest first + k*period (k >= 0) at or before t, or -1 if t < first. */
int64_t sched_interval_prev(int64_t first, int64_t period, int64_t t);

/* Job id of a scheduled fire: "<trigger_id>@<scheduled_for ms>". The job
 * document's _id, so a second insert of the same fire is refused (G1). */
void sched_job_id(char *buf, size_t size, const char *trigger_id, int64_t scheduled_for);

#endif
