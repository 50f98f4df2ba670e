/*
 * bench_cron.c - how many cron_next() computations per second one core
 * does (`make bench-cron`, built -O2 without sanitizers).
 *
 * Each case chains cron_next() from a fixed start (every result is the
 * next call's "after"), restarting at the start after 10,000 fires so a
 * rare expression keeps being measured in the years it was chosen for.
 * One line per case, then the total over all cases. Also parses.
 */
#include "common/cron.h"
#include "common/tz.h"

#include <stdio.h>
#include <time.h>

#define S_CASE_SECONDS 0.3

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const struct {
    const char *expr, *zone;
    cron_dst_policy_t pol;
} s_cases[] = {
    {"*/5 * * * *", "UTC", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"0 9 * * MON-FRI", "America/New_York", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"30 2 * * *", "America/New_York", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_BOTH}},
    {"30 2 * * *", "Europe/London", {CRON_GAP_SKIP, CRON_OVERLAP_FIRST}},
    {"*/15 * * * * *", "Australia/Lord_Howe", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_BOTH}},
    {"0 0 1 1 *", "Asia/Tokyo", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"0 0 29 2 *", "UTC", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"0 0 13 * 5", "Europe/Berlin", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"@hourly", "America/Mexico_City", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"15,45 8-18/2 1-7 * 1", "Pacific/Chatham", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"0 12 * * *", "America/Sao_Paulo", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
    {"0 3 * * *", "America/New_York", {CRON_GAP_FIRE_AFTER, CRON_OVERLAP_FIRST}},
};

int main(void)
{
    const int64_t start_ms = 1735689600000LL; /* 2025-01-01T00:00:00Z */
    const int64_t late_ms = 2524608000000LL;  /* 2050-01-01: past the zone tables */
    long total = 0;
    double total_secs = 0;
    err_t err;
    printf("%-24s %-22s %-18s %12s\n", "expression", "zone", "policy", "next/s");
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        for (int late = 0; late < 2; late++) {
            const tz_t *tz = tz_get(s_cases[i].zone, &err);
            cron_t *c = cron_new(s_cases[i].expr, &err);
            if (!tz || !c) {
                fprintf(stderr, "bench-cron: %s\n", err.msg);
                return 1;
            }
            int64_t from = late ? late_ms : start_ms, after = from;
            long n = 0;
            double t0 = s_now(), t1 = t0;
            while (t1 - t0 < S_CASE_SECONDS) {
                for (int k = 0; k < 1000; k++) {
                    cron_fire_t f;
                    if (cron_next(c, tz, s_cases[i].pol, after, &f) != 0 || n % 10000 == 9999)
                        after = from;
                    else
                        after = f.at_ms;
                    n++;
                }
                t1 = s_now();
            }
            char pol[32];
            snprintf(pol, sizeof pol, "%s/%s", cron_gap_name(s_cases[i].pol.gap),
                     cron_overlap_name(s_cases[i].pol.overlap));
            printf("%-24s %-22s %-18s %12.0f%s\n", s_cases[i].expr, s_cases[i].zone, pol,
                   (double)n / (t1 - t0), late ? "  (from 2050)" : "");
            total += n;
            total_secs += t1 - t0;
            cron_destroy(&c);
        }
    }
    printf("%-24s %-22s %-18s %12.0f\n", "total", "", "", (double)total / total_secs);

    long parsed = 0;
    double t0 = s_now(), t1 = t0;
    while (t1 - t0 < S_CASE_SECONDS) {
        for (int k = 0; k < 1000; k++) {
            cron_t *c = cron_new(s_cases[parsed % 12].expr, &err);
            cron_destroy(&c);
            parsed++;
        }
        t1 = s_now();
    }
    printf("%-24s %-22s %-18s %12.0f\n", "cron_new (parse)", "", "", (double)parsed / (t1 - t0));
    tz_cache_clear();
    return 0;
}
