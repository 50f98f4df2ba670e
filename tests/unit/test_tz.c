/*
 * test_tz.c - TZif reading, POSIX footer rules, UTC <-> wall clock, and a
 * comparison against glibc's localtime_r() for every zone the OS ships.
 *
 * Only these tests may touch the process-global TZ (setenv + tzset), to ask
 * glibc for reference answers; they restore it afterwards.
 */
#include "tests/unit/test.h"

#include "common/clock.h"
#include "common/tz.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ZONEINFO "/usr/share/zoneinfo"

static int64_t s_secs(const char *iso)
{
    int64_t ms = 0;
    if (clock_parse_iso(iso, &ms) != 0)
        test_fail(__FILE__, __LINE__, iso);
    return ms / 1000;
}

static const tz_t *s_zone(const char *name)
{
    err_t err = {0};
    const tz_t *tz = tz_get(name, &err);
    if (!tz) {
        char m[600];
        snprintf(m, sizeof m, "tz_get(%s): %s", name, err.msg);
        test_fail(__FILE__, __LINE__, m);
    }
    return tz;
}

/* Reads a whole file; caller frees. */
static uint8_t *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    *len = 0;
    if (!f)
        return NULL;
    buf = malloc(1 << 20);
    if (buf)
        *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* A TZif v2 image with no transitions, one type and the given footer. */
static size_t s_make_tzif(uint8_t *buf, const char *footer, int32_t off, int is_dst)
{
    size_t n = 0;
    for (int part = 0; part < 2; part++) {
        memset(buf + n, 0, 44);
        memcpy(buf + n, "TZif2", 5);
        buf[n + 39] = 1; /* typecnt */
        buf[n + 43] = 4; /* charcnt */
        n += 44;
        buf[n++] = (uint8_t)((uint32_t)off >> 24);
        buf[n++] = (uint8_t)((uint32_t)off >> 16);
        buf[n++] = (uint8_t)((uint32_t)off >> 8);
        buf[n++] = (uint8_t)off;
        buf[n++] = (uint8_t)is_dst;
        buf[n++] = 0;
        memcpy(buf + n, "XXX", 4);
        n += 4;
    }
    n += (size_t)sprintf((char *)buf + n, "\n%s\n", footer);
    return n;
}

TEST(tz_names)
{
    err_t err = {0};
    const tz_t *utc = tz_get("UTC", &err);
    CHECK(utc != NULL);
    CHECK_STR(tz_name(utc), "UTC");
    CHECK_INT(tz_offset_at(utc, 1700000000, NULL), 0);
    CHECK_STR(tz_abbrev_at(utc, 0), "UTC");
    CHECK(tz_get("Etc/UTC", &err) != NULL);
    const tz_t *ny = s_zone("America/New_York");
    CHECK(ny == tz_get("America/New_York", &err)); /* cached */
    CHECK_STR(tz_name(ny), "America/New_York");
    const char *bad[] = {"", "/etc/passwd", "../etc/passwd", "America/../../etc/passwd",
                         "America/New York", "America/New_York;", "Mars/Olympus",
                         "leapseconds", "America", "zone.tab",
                         "A1234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[200];
        memset(&err, 0, sizeof err);
        CHECK(tz_get(bad[i], &err) == NULL);
        CHECK_INT(err.code, ERR_INVALID);
        snprintf(want, sizeof want, "unknown time zone '%.64s'", bad[i]);
        CHECK_STR(err.msg, want);
    }
    CHECK(tz_get(NULL, &err) == NULL);
}

TEST(tz_utc_without_files)
{
    char dir[] = "/tmp/sked-tz-empty-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    tz_cache_clear();
    setenv("SKED_ZONEINFO_DIR", dir, 1);
    err_t err = {0};
    CHECK(tz_get("UTC", &err) != NULL);
    CHECK(tz_get("Etc/UTC", &err) != NULL);
    CHECK(tz_get("Europe/Paris", &err) == NULL);
    CHECK_STR(err.msg, "unknown time zone 'Europe/Paris'");
    unsetenv("SKED_ZONEINFO_DIR");
    rmdir(dir);
    tz_cache_clear();
    CHECK(tz_get("Europe/Paris", &err) != NULL);
}

TEST(tz_new_york)
{
    const tz_t *ny = s_zone("America/New_York");
    int dst = -1;
    CHECK_INT(tz_offset_at(ny, s_secs("2025-01-15T12:00:00Z"), &dst), -5 * 3600);
    CHECK_INT(dst, 0);
    CHECK_STR(tz_abbrev_at(ny, s_secs("2025-01-15T12:00:00Z")), "EST");
    CHECK_INT(tz_offset_at(ny, s_secs("2025-07-15T12:00:00Z"), &dst), -4 * 3600);
    CHECK_INT(dst, 1);
    CHECK_STR(tz_abbrev_at(ny, s_secs("2025-07-15T12:00:00Z")), "EDT");
    /* transition instants: 2025-03-09 07:00Z and 2025-11-02 06:00Z */
    CHECK_INT(tz_offset_at(ny, s_secs("2025-03-09T06:59:59Z"), NULL), -5 * 3600);
    CHECK_INT(tz_offset_at(ny, s_secs("2025-03-09T07:00:00Z"), NULL), -4 * 3600);
    CHECK_INT(tz_offset_at(ny, s_secs("2025-11-02T05:59:59Z"), NULL), -4 * 3600);
    CHECK_INT(tz_offset_at(ny, s_secs("2025-11-02T06:00:00Z"), NULL), -5 * 3600);
    /* past the table (2037), from the footer rule */
    CHECK_INT(tz_offset_at(ny, s_secs("2087-03-09T06:59:59Z"), NULL), -5 * 3600);
    CHECK_INT(tz_offset_at(ny, s_secs("2087-03-09T07:00:00Z"), NULL), -4 * 3600);
    CHECK_STR(tz_abbrev_at(ny, s_secs("2087-07-01T00:00:00Z")), "EDT");
    /* before standard time: local mean time */
    CHECK_INT(tz_offset_at(ny, s_secs("1850-01-01T00:00:00Z"), NULL), -(4 * 3600 + 56 * 60 + 2));
    CHECK_STR(tz_abbrev_at(ny, s_secs("1850-01-01T00:00:00Z")), "LMT");

    tz_span_t sp;
    tz_span_at(ny, s_secs("2025-06-01T00:00:00Z"), &sp);
    CHECK_INT(sp.start, s_secs("2025-03-09T07:00:00Z"));
    CHECK_INT(sp.end, s_secs("2025-11-02T06:00:00Z"));
    CHECK_INT(sp.offset, -4 * 3600);
    CHECK_INT(sp.prev_offset, -5 * 3600);
    CHECK_INT(sp.next_offset, -5 * 3600);
    CHECK_INT(sp.is_dst, 1);
    tz_span_at(ny, s_secs("2090-06-01T00:00:00Z"), &sp);
    CHECK_INT(sp.start, s_secs("2090-03-12T07:00:00Z"));
    CHECK_INT(sp.end, s_secs("2090-11-05T06:00:00Z"));
    /* extreme instants are clamped, not overflowed */
    CHECK_INT(tz_offset_at(ny, INT64_MAX, NULL), tz_offset_at(ny, TZ_LIMIT_SECS, NULL));
    CHECK_INT(tz_offset_at(ny, INT64_MIN, NULL), tz_offset_at(ny, -TZ_LIMIT_SECS, NULL));
    tz_span_at(ny, INT64_MAX, &sp);
    CHECK(sp.end == INT64_MAX);
    tz_span_at(ny, INT64_MIN, &sp);
    CHECK(sp.start == INT64_MIN && sp.end > INT64_MIN);
}

TEST(tz_local_to_utc)
{
    const tz_t *ny = s_zone("America/New_York");
    int64_t out[2], gap;
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-06-01T12:00:00Z"), out), 1);
    CHECK_INT(out[0], s_secs("2025-06-01T16:00:00Z"));
    /* spring forward: 02:00-02:59:59 do not exist */
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-03-09T01:59:59Z"), out), 1);
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-03-09T02:00:00Z"), out), 0);
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-03-09T02:30:00Z"), out), 0);
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-03-09T03:00:00Z"), out), 1);
    CHECK_INT(tz_gap_end(ny, s_secs("2025-03-09T02:30:00Z"), &gap), 0);
    CHECK_INT(gap, s_secs("2025-03-09T07:00:00Z"));
    CHECK_INT(tz_gap_end(ny, s_secs("2025-03-09T03:30:00Z"), &gap), ERR_NOTFOUND);
    /* fall back: 01:00-01:59:59 happen twice */
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-11-02T01:30:00Z"), out), 2);
    CHECK_INT(out[0], s_secs("2025-11-02T05:30:00Z"));
    CHECK_INT(out[1], s_secs("2025-11-02T06:30:00Z"));
    CHECK_INT(tz_local_to_utc(ny, s_secs("2025-11-02T02:00:00Z"), out), 1);
    CHECK_INT(out[0], s_secs("2025-11-02T07:00:00Z"));
    /* the same in 2090, from the footer rule */
    CHECK_INT(tz_local_to_utc(ny, s_secs("2090-03-12T02:30:00Z"), out), 0);
    CHECK_INT(tz_local_to_utc(ny, s_secs("2090-11-05T01:30:00Z"), out), 2);
    CHECK_INT(tz_local_to_utc(ny, INT64_MAX, out), ERR_INVALID);

    /* Lord Howe moves 30 minutes: 02:00 -> 02:30 in October, back in April */
    const tz_t *lh = s_zone("Australia/Lord_Howe");
    CHECK_INT(tz_local_to_utc(lh, s_secs("2025-10-05T02:15:00Z"), out), 0);
    CHECK_INT(tz_gap_end(lh, s_secs("2025-10-05T02:15:00Z"), &gap), 0);
    CHECK_INT(gap, s_secs("2025-10-04T15:30:00Z"));
    CHECK_INT(tz_local_to_utc(lh, s_secs("2025-10-05T02:30:00Z"), out), 1);
    CHECK_INT(tz_local_to_utc(lh, s_secs("2025-04-06T01:45:00Z"), out), 2);
    CHECK_INT(out[0], s_secs("2025-04-05T14:45:00Z"));
    CHECK_INT(out[1], s_secs("2025-04-05T15:15:00Z"));
    CHECK_INT(tz_local_to_utc(lh, s_secs("2025-04-06T02:00:00Z"), out), 1);

    /* Europe/London: 01:00 GMT -> 02:00 BST on 2025-03-30 */
    const tz_t *lo = s_zone("Europe/London");
    CHECK_INT(tz_local_to_utc(lo, s_secs("2025-03-30T01:30:00Z"), out), 0);
    CHECK_INT(tz_local_to_utc(lo, s_secs("2025-10-26T01:30:00Z"), out), 2);
    CHECK_INT(out[0], s_secs("2025-10-26T00:30:00Z"));
    CHECK_INT(out[1], s_secs("2025-10-26T01:30:00Z"));
}

TEST(tz_zones_without_dst)
{
    const tz_t *tk = s_zone("Asia/Tokyo");
    const tz_t *mx = s_zone("America/Mexico_City");
    int dst;
    CHECK_INT(tz_offset_at(mx, s_secs("2022-06-01T12:00:00Z"), &dst), -5 * 3600);
    CHECK_INT(dst, 1); /* the last summer time, abolished in October 2022 */
    int64_t t = s_secs("2023-01-01T00:00:00Z"), end = s_secs("2060-01-01T00:00:00Z");
    int bad_mx = 0, bad_tk = 0;
    for (; t < end; t += 6 * 3600 + 7) {
        if (tz_offset_at(mx, t, &dst) != -6 * 3600 || dst)
            bad_mx++;
        if (tz_offset_at(tk, t, &dst) != 9 * 3600 || dst)
            bad_tk++;
    }
    CHECK_INT(bad_mx, 0);
    CHECK_INT(bad_tk, 0);
    tz_span_t sp;
    tz_span_at(mx, s_secs("2030-01-01T00:00:00Z"), &sp);
    CHECK(sp.end == INT64_MAX);
    CHECK_INT(sp.offset, -6 * 3600);
    int64_t out[2];
    CHECK_INT(tz_local_to_utc(tk, s_secs("2025-03-09T02:30:00Z"), out), 1);
    CHECK_INT(out[0], s_secs("2025-03-08T17:30:00Z"));
}

TEST(tz_civil)
{
    tz_civil_t c;
    tz_civil_from_secs(s_secs("2028-02-29T23:59:58Z"), &c);
    CHECK_INT(c.year, 2028);
    CHECK_INT(c.mon, 2);
    CHECK_INT(c.mday, 29);
    CHECK_INT(c.hour, 23);
    CHECK_INT(c.min, 59);
    CHECK_INT(c.sec, 58);
    CHECK_INT(c.wday, 2); /* Tuesday */
    CHECK_INT(c.yday, 59);
    tz_civil_from_secs(-1, &c);
    CHECK_INT(c.year, 1969);
    CHECK_INT(c.mday, 31);
    CHECK_INT(c.sec, 59);
    CHECK_INT(c.wday, 3);
    CHECK_INT(tz_secs_from_civil(2028, 2, 29, 23, 59, 58), s_secs("2028-02-29T23:59:58Z"));
    CHECK_INT(tz_days_from_civil(1970, 1, 1), 0);
}

/* glibc's offset, DST flag and abbreviation at t in the current TZ. */
static int s_glibc(int64_t t, int *is_dst, char *abbr, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm))
        return INT32_MIN;
    *is_dst = tm.tm_isdst > 0;
    snprintf(abbr, size, "%s", tm.tm_zone ? tm.tm_zone : "");
    return (int)tm.tm_gmtoff;
}

/* Compares zone tz with glibc (TZ already set) at t; prints mismatches. */
static int s_compare_at(const tz_t *tz, int64_t t, int *reported)
{
    int g_dst, dst;
    char g_abbr[32];
    int g = s_glibc(t, &g_dst, g_abbr, sizeof g_abbr);
    int o = tz_offset_at(tz, t, &dst);
    const char *abbr = tz_abbrev_at(tz, t);
    if (g == o && g_dst == dst && strcmp(g_abbr, abbr) == 0)
        return 0;
    if ((*reported)++ < 20) {
        char iso[40];
        clock_format_iso(t * 1000, iso, sizeof iso);
        printf("# %s at %s: glibc %d %d %s, tz %d %d %s\n", tz_name(tz), iso, g, g_dst, g_abbr,
               o, dst, abbr);
    }
    return 1;
}

typedef struct {
    int zones, instants, mismatches, reported;
    dev_t devs[4096];
    ino_t inos[4096];
    int n_seen;
} s_walk_t;

static void s_check_zone(s_walk_t *w, const char *name)
{
    const tz_t *tz = s_zone(name);
    if (!tz)
        return;
    char env[600];
    snprintf(env, sizeof env, ":%s", name);
    setenv("TZ", env, 1);
    tzset();
    w->zones++;
    int64_t lo = s_secs("1900-01-01T00:00:00Z"), hi = s_secs("2100-01-01T00:00:00Z");
    uint64_t rnd = 0x9e3779b97f4a7c15ULL ^ (uint64_t)w->zones;
    for (int i = 0; i < 300; i++) {
        rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t t = lo + (int64_t)((rnd >> 11) % (uint64_t)(hi - lo));
        w->mismatches += s_compare_at(tz, t, &w->reported);
        w->instants++;
    }
    /* every transition +-1 s, found by walking the spans */
    int64_t t = lo;
    for (int i = 0; i < 5000; i++) {
        tz_span_t sp;
        tz_span_at(tz, t, &sp);
        if (sp.end == INT64_MAX || sp.end >= hi)
            break;
        if (sp.end <= t) { /* spans must advance */
            w->mismatches++;
            break;
        }
        t = sp.end;
        for (int d = -1; d <= 1; d++)
            w->mismatches += s_compare_at(tz, t + d, &w->reported);
        w->instants += 3;
    }
}

static void s_walk(s_walk_t *w, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s%s%s", ZONEINFO, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char sub[512], full[1024];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        if (!*rel && (strcmp(e->d_name, "posix") == 0 || strcmp(e->d_name, "right") == 0 ||
                      strcmp(e->d_name, "localtime") == 0 || strcmp(e->d_name, "posixrules") == 0))
            continue;
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", ZONEINFO, sub);
        if (lstat(full, &st) != 0 || S_ISLNK(st.st_mode))
            continue;
        if (S_ISDIR(st.st_mode)) {
            s_walk(w, sub);
            continue;
        }
        int dup = 0;
        for (int i = 0; i < w->n_seen && !dup; i++)
            dup = w->devs[i] == st.st_dev && w->inos[i] == st.st_ino;
        if (dup || !S_ISREG(st.st_mode) || w->n_seen >= 4096)
            continue;
        w->devs[w->n_seen] = st.st_dev;
        w->inos[w->n_seen++] = st.st_ino;
        char magic[4] = {0};
        FILE *f = fopen(full, "rb");
        size_t got = f ? fread(magic, 1, 4, f) : 0;
        if (f)
            fclose(f);
        if (got == 4 && memcmp(magic, "TZif", 4) == 0)
            s_check_zone(w, sub);
    }
    closedir(d);
}

TEST(tz_matches_glibc_for_every_zone)
{
    static s_walk_t w;
    const char *old = getenv("TZ");
    char saved[256] = "";
    if (getenv("SKED_ZONEINFO_DIR")) {
        printf("# skipped: SKED_ZONEINFO_DIR is set\n");
        return;
    }
    if (old)
        snprintf(saved, sizeof saved, "%s", old);
    memset(&w, 0, sizeof w);
    s_walk(&w, "");
    if (old)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    printf("# compared %d zones at %d instants: %d mismatches\n", w.zones, w.instants,
           w.mismatches);
    CHECK(w.zones > 300);
    CHECK_INT(w.mismatches, 0);
    tz_cache_clear();
}

/* Footer rules alone (a TZif without transitions), compared with glibc
 * reading the same POSIX TZ string. */
TEST(tz_footer_rules_match_glibc)
{
    const char *rules[] = {
        "XST5XDT,M3.2.0,M11.1.0",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
        "XST3XDT,J60/2,J300/2",              /* Julian, Feb 29 never counted */
        "XST3XDT,59/2,300",                  /* zero-based, Feb 29 counted */
        "XST3XDT,M3.5.0/26,M10.5.0/-1",      /* hours beyond 24 and negative */
        "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",  /* America/Nuuk style */
        "IST-2IDT,M3.4.4/26,M10.5.0",        /* Asia/Jerusalem */
        "<+13>-13<+14>,M9.5.0/3,M4.1.0/4",   /* southern hemisphere, east of UTC */
        "XST8",                              /* no DST */
        "XST-5:30",
        "XST5XDT4:30,M4.1.0/167,M9.1.6/-167",
    };
    uint8_t buf[512];
    const char *old = getenv("TZ");
    char saved[256] = "";
    if (old)
        snprintf(saved, sizeof saved, "%s", old);
    int64_t lo = s_secs("1971-01-01T00:00:00Z"), hi = s_secs("2101-01-01T00:00:00Z");
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        err_t err = {0};
        size_t n = s_make_tzif(buf, rules[r], 0, 0);
        tz_t *tz = tz_new_from_tzif(rules[r], buf, n, &err);
        if (!tz) {
            printf("# %s: %s\n", rules[r], err.msg);
            CHECK(tz != NULL);
            continue;
        }
        setenv("TZ", rules[r], 1);
        tzset();
        int reported = 0, bad = 0;
        for (int64_t t = lo; t < hi; t += 86400 * 3 + 3607)
            bad += s_compare_at(tz, t, &reported);
        int64_t t = lo;
        for (int i = 0; i < 400; i++) { /* each change +-1 s */
            tz_span_t sp;
            tz_span_at(tz, t, &sp);
            if (sp.end == INT64_MAX || sp.end >= hi)
                break;
            t = sp.end;
            for (int d = -1; d <= 1; d++)
                bad += s_compare_at(tz, t + d, &reported);
        }
        CHECK_INT(bad, 0);
        tz_destroy(&tz);
    }
    /* No dates: the US rules, as glibc without a posixrules file. */
    err_t err = {0};
    size_t n = s_make_tzif(buf, "XST5XDT", 0, 0);
    tz_t *tz = tz_new_from_tzif("T", buf, n, &err);
    CHECK(tz != NULL);
    if (tz) {
        CHECK_INT(tz_offset_at(tz, s_secs("2025-03-09T06:59:59Z"), NULL), -5 * 3600);
        CHECK_INT(tz_offset_at(tz, s_secs("2025-03-09T07:00:00Z"), NULL), -4 * 3600);
        CHECK_INT(tz_offset_at(tz, s_secs("2025-11-02T05:59:59Z"), NULL), -4 * 3600);
        CHECK_INT(tz_offset_at(tz, s_secs("2025-11-02T06:00:00Z"), NULL), -5 * 3600);
    }
    tz_destroy(&tz);
    if (old)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
}

/* RFC 8536 3.3.1: starting Jan 1 00:00 and ending Dec 31 at 24:00 plus the
 * DST shift means DST all year. (glibc evaluates such a rule per UTC year
 * and reports standard time for the first hours of each UTC year.) */
TEST(tz_footer_permanent_dst)
{
    uint8_t buf[512];
    err_t err = {0};
    size_t n = s_make_tzif(buf, "XST5XDT,0/0,J365/25", 0, 0);
    tz_t *tz = tz_new_from_tzif("T", buf, n, &err);
    CHECK(tz != NULL);
    if (!tz)
        return;
    int bad = 0, dst;
    for (int64_t t = s_secs("2020-12-31T00:00:00Z"); t < s_secs("2030-01-02T00:00:00Z"); t += 1800)
        bad += tz_offset_at(tz, t, &dst) != -4 * 3600 || !dst;
    CHECK_INT(bad, 0);
    int64_t out[2];
    CHECK_INT(tz_local_to_utc(tz, s_secs("2025-01-01T00:30:00Z"), out), 1);
    tz_destroy(&tz);
}

TEST(tz_rejects_malformed)
{
    uint8_t buf[512];
    err_t err = {0};
    const char *bad_footers[] = {"", "X", "XST", "XST5XDT,M3.2.0", "XST5XDT,M13.2.0,M11.1.0",
                                 "XST5XDT,M3.6.0,M11.1.0", "XST5XDT,M3.2.7,M11.1.0",
                                 "XST5XDT,J0,J365", "XST5XDT,366,0", "XST25",
                                 "XST5XDT,M3.2.0/168,M11.1.0", "<XST5", "XST5XDT,M3.2.0,M11.1.0x",
                                 "XST5:60"};
    for (size_t i = 0; i < sizeof bad_footers / sizeof bad_footers[0]; i++) {
        size_t n = s_make_tzif(buf, bad_footers[i], 0, 0);
        tz_t *tz = tz_new_from_tzif("Test/Bad", buf, n, &err);
        if (i == 0) { /* an empty footer is valid: no rule */
            CHECK(tz != NULL);
            tz_destroy(&tz);
            continue;
        }
        if (tz)
            printf("# accepted footer '%s'\n", bad_footers[i]);
        CHECK(tz == NULL);
        tz_destroy(&tz);
        CHECK_INT(err.code, ERR_INVALID);
    }
    CHECK_STR(err.msg, "cannot load time zone 'Test/Bad': unsupported TZ rule in TZif footer");

    size_t n = s_make_tzif(buf, "XST5", 0, 0);
    buf[n - 1] = 'x'; /* footer without its closing newline */
    CHECK(tz_new_from_tzif("T", buf, n, &err) == NULL);
    CHECK_STR(err.msg, "cannot load time zone 'T': malformed TZif footer");
    n = s_make_tzif(buf, "XST5", 0, 0);
    buf[0] = 'Z';
    CHECK(tz_new_from_tzif("T", buf, n, &err) == NULL);
    CHECK_STR(err.msg, "cannot load time zone 'T': not a TZif file");
    n = s_make_tzif(buf, "XST5", 0, 2); /* isdst must be 0 or 1 */
    CHECK(tz_new_from_tzif("T", buf, n, &err) == NULL);
    CHECK_STR(err.msg, "cannot load time zone 'T': malformed TZif data");
    n = s_make_tzif(buf, "XST5", 30 * 3600, 0); /* offset beyond 26 h */
    CHECK(tz_new_from_tzif("T", buf, n, &err) == NULL);
    n = s_make_tzif(buf, "XST5", 0, 0);
    buf[44 + 10 + 39] = 0; /* typecnt 0 in the second header */
    CHECK(tz_new_from_tzif("T", buf, n, &err) == NULL);
    CHECK_STR(err.msg, "cannot load time zone 'T': inconsistent TZif header counts");
    CHECK(tz_new_from_tzif("T", buf, 0, &err) == NULL);
}

/* Every truncation and many single-byte corruptions of a real file: each
 * is rejected or yields a zone that answers sanely; none crashes (ASan). */
TEST(tz_survives_corrupt_files)
{
    size_t len;
    uint8_t *orig = s_slurp(ZONEINFO "/America/New_York", &len);
    CHECK(orig != NULL && len > 100);
    if (!orig)
        return;
    uint8_t *buf = malloc(len);
    err_t err;
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, orig, cut); /* exact-size copy so ASan sees overreads */
        tz_t *tz = tz_new_from_tzif("T", buf, cut, &err);
        CHECK(tz == NULL);
        tz_destroy(&tz);
    }
    tz_t *ok = tz_new_from_tzif("T", orig, len, &err);
    CHECK(ok != NULL);
    tz_destroy(&ok);
    int accepted = 0;
    const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x01, '\n', ','};
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(buf, orig, len);
            buf[pos] = vals[v];
            tz_t *tz = tz_new_from_tzif("T", buf, len, &err);
            if (tz) {
                int64_t out[2];
                accepted++;
                for (int64_t t = -4000000000LL; t < 5000000000LL; t += 123456789) {
                    int o = tz_offset_at(tz, t, NULL);
                    CHECK(o >= -TZ_MAX_OFFSET && o <= TZ_MAX_OFFSET);
                    CHECK(tz_abbrev_at(tz, t) != NULL);
                    CHECK(tz_local_to_utc(tz, t, out) >= 0);
                }
                tz_destroy(&tz);
            }
        }
    }
    printf("# %d corrupted variants accepted and exercised\n", accepted);
    free(buf);
    free(orig);
}
