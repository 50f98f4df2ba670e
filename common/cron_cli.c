/*
 * cron_cli.c - bin/sked-cron: shows when a cron expression fires.
 *
 *   sked-cron next 'EXPR' [--tz ZONE] [--from ISO] [--count N]
 *                         [--dst-gap fire_after|skip] [--dst-overlap first|both]
 *
 * One line per fire: the UTC instant, the wall-clock time with its offset
 * and abbreviation, then any DST flags. It exists so operators can check a
 * schedule (and its DST behaviour) with exactly the engine the master
 * uses, cron.c and tz.c; it is a thin argument parser around cron_next().
 * Invalid input exits 2, "never fires within the search horizon" exits 1.
 */
#include "common/clock.h"
#include "common/cron.h"
#include "common/tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_COUNT 100000

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: sked-cron next 'EXPR' [options]\n"
            "\n"
            "Prints the next fire times of a cron expression, one per line:\n"
            "UTC instant, wall-clock time in the zone, DST flags.\n"
            "\n"
            "options:\n"
            "  --tz ZONE                    IANA time zone (default UTC)\n"
            "  --from ISO                   start after this instant, e.g.\n"
            "                               2025-03-09T00:00:00Z (default now)\n"
            "  --count N                    how many fire times (default 5, max %d)\n"
            "  --dst-gap fire_after|skip    wall times skipped by spring-forward\n"
            "                               (default fire_after)\n"
            "  --dst-overlap first|both     wall times repeated by fall-back\n"
            "                               (default first)\n"
            "  --help                       this text\n"
            "\n"
            "EXPR: 'min hour dom month dow', or with a leading seconds field, or\n"
            "@yearly @monthly @weekly @daily @hourly; see docs/CRON.md.\n",
            S_MAX_COUNT);
}

static void s_format_utc(int64_t secs, char *buf, size_t size)
{
    tz_civil_t t;
    tz_civil_from_secs(secs, &t);
    snprintf(buf, size, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)t.year, t.mon, t.mday,
             t.hour, t.min, t.sec);
}

static void s_format_local(const cron_fire_t *f, const char *abbr, char *buf, size_t size)
{
    tz_civil_t t;
    int off = f->utc_offset < 0 ? -f->utc_offset : f->utc_offset;
    char offs[16];
    tz_civil_from_secs(f->local_secs, &t);
    if (off % 60)
        snprintf(offs, sizeof offs, "%c%02d:%02d:%02d", f->utc_offset < 0 ? '-' : '+',
                 off / 3600, off / 60 % 60, off % 60);
    else
        snprintf(offs, sizeof offs, "%c%02d:%02d", f->utc_offset < 0 ? '-' : '+', off / 3600,
                 off / 60 % 60);
    snprintf(buf, size, "%04lld-%02d-%02dT%02d:%02d:%02d%s %s", (long long)t.year, t.mon,
             t.mday, t.hour, t.min, t.sec, offs, abbr);
}

/* Option value: "--opt VALUE" or "--opt=VALUE"; NULL if argv[*i] isn't opt. */
static const char *s_opt(int argc, char **argv, int *i, const char *opt, int *missing)
{
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

typedef struct {
    const char *expr, *zone, *from, *count, *gap, *overlap;
} s_args_t;

/* Returns 0, 1 for --help, or 2 after printing a usage error. */
static int s_parse_args(int argc, char **argv, s_args_t *a)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return argc < 2 ? (s_usage(stderr), 2) : (s_usage(stdout), 1);
    if (strcmp(argv[1], "next") != 0) {
        fprintf(stderr, "sked-cron: unknown command '%s'; try --help\n", argv[1]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        int missing = 0;
        const char *v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return s_usage(stdout), 1;
        else if ((v = s_opt(argc, argv, &i, "--tz", &missing)))
            a->zone = v;
        else if ((v = s_opt(argc, argv, &i, "--from", &missing)))
            a->from = v;
        else if ((v = s_opt(argc, argv, &i, "--count", &missing)))
            a->count = v;
        else if ((v = s_opt(argc, argv, &i, "--dst-gap", &missing)))
            a->gap = v;
        else if ((v = s_opt(argc, argv, &i, "--dst-overlap", &missing)))
            a->overlap = v;
        else if (missing || (argv[i][0] == '-' && argv[i][1] == '-')) {
            fprintf(stderr, "sked-cron: %s '%s'; try --help\n",
                    missing ? "missing value for option" : "unknown option", argv[i]);
            return 2;
        } else if (!a->expr)
            a->expr = argv[i];
        else {
            fprintf(stderr, "sked-cron: unexpected argument '%s' (quote the expression)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!a->expr) {
        fprintf(stderr, "sked-cron: missing cron expression; try --help\n");
        return 2;
    }
    return 0;
}

static int s_run(const s_args_t *a)
{
    err_t err = {0};
    cron_dst_policy_t pol;
    int64_t from = clock_wall_ms();
    long count = 5;
    if (a->count) {
        char *end;
        count = strtol(a->count, &end, 10);
        if (*end || end == a->count || count < 1 || count > S_MAX_COUNT) {
            fprintf(stderr, "sked-cron: invalid --count '%s': expected 1-%d\n", a->count,
                    S_MAX_COUNT);
            return 2;
        }
    }
    if (a->from && clock_parse_iso(a->from, &from) != 0) {
        fprintf(stderr, "sked-cron: invalid --from '%s': expected ISO-8601 such as "
                        "2025-03-09T00:00:00Z\n", a->from);
        return 2;
    }
    if (cron_dst_policy_parse(a->gap, a->overlap, &pol, &err)) {
        fprintf(stderr, "sked-cron: %s\n", err.msg);
        return 2;
    }
    const tz_t *tz = tz_get(a->zone ? a->zone : "UTC", &err);
    if (!tz) {
        fprintf(stderr, "sked-cron: %s\n", err.msg);
        return 2;
    }
    cron_t *c = cron_new(a->expr, &err);
    if (!c) {
        fprintf(stderr, "sked-cron: cannot parse cron expression '%s': %s\n", a->expr, err.msg);
        return 2;
    }
    int rc = 0;
    for (long i = 0; i < count; i++) {
        cron_fire_t f;
        int r = cron_next(c, tz, pol, from, &f);
        if (r != 0) {
            fprintf(stderr, "sked-cron: %s\n",
                    r == ERR_INVALID ? "time outside the years 1-9999"
                                     : "no fire time within the search horizon");
            rc = r == ERR_INVALID ? 2 : 1;
            break;
        }
        char utc[40], local[80];
        s_format_utc(f.at_ms / 1000, utc, sizeof utc);
        s_format_local(&f, tz_abbrev_at(tz, f.at_ms / 1000), local, sizeof local);
        printf("%s  %s%s%s\n", utc, local, f.flags & CRON_FIRE_GAP_SHIFTED ? "  dst-gap-shifted" : "",
               f.flags & CRON_FIRE_OVERLAP_SECOND ? "  dst-overlap-second" : "");
        from = f.at_ms;
    }
    cron_destroy(&c);
    return rc;
}

int main(int argc, char **argv)
{
    s_args_t a = {0};
    int rc = s_parse_args(argc, argv, &a);
    if (rc == 0)
        rc = s_run(&a);
    else if (rc == 1)
        rc = 0;
    tz_cache_clear();
    return rc;
}
