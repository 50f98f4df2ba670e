/*
 * test_cron.c - cron syntax, error messages, next-fire search and the DST
 * gap/overlap policies, plus a brute-force cross-check of cron_next()
 * around every transition of several zones.
 */
#include "tests/unit/test.h"

#include "common/clock.h"
#include "common/cron.h"
#include "common/tz.h"

#include <stdint.h>
#include <stdlib.h>

static int64_t s_ms(const char *iso)
{
    int64_t ms = 0;
    if (clock_parse_iso(iso, &ms) != 0)
        test_fail(__FILE__, __LINE__, iso);
    return ms;
}

static void s_iso(int64_t ms, char *buf, size_t size)
{
    tz_civil_t t;
    tz_civil_from_secs(ms / 1000, &t);
    snprintf(buf, size, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)t.year, t.mon, t.mday,
             t.hour, t.min, t.sec);
}

/* The next count fires as "ISO[!gap|!second] ...", or the error text. */
static const char *s_fires(const char *expr, const char *zone, const char *from, int count,
                           const char *gap, const char *overlap)
{
    static char out[4096];
    err_t err = {0};
    cron_dst_policy_t pol;
    const tz_t *tz = tz_get(zone, &err);
    cron_t *c = cron_new(expr, &err);
    out[0] = '\0';
    if (!tz || !c || cron_dst_policy_parse(gap, overlap, &pol, &err)) {
        snprintf(out, sizeof out, "error: %s", err.msg);
        cron_destroy(&c);
        return out;
    }
    int64_t after = s_ms(from);
    size_t used = 0;
    for (int i = 0; i < count; i++) {
        cron_fire_t f;
        int rc = cron_next(c, tz, pol, after, &f);
        if (rc != 0) {
            snprintf(out + used, sizeof out - used, "%src=%d", used ? " " : "", rc);
            break;
        }
        char iso[40];
        s_iso(f.at_ms, iso, sizeof iso);
        used += (size_t)snprintf(out + used, sizeof out - used, "%s%s%s%s", used ? " " : "", iso,
                                 f.flags & CRON_FIRE_GAP_SHIFTED ? "!gap" : "",
                                 f.flags & CRON_FIRE_OVERLAP_SECOND ? "!second" : "");
        /* local_secs and utc_offset must describe the same instant */
        CHECK_INT(f.local_secs - f.utc_offset, f.at_ms / 1000);
        CHECK_INT(f.utc_offset, tz_offset_at(tz, f.at_ms / 1000, NULL));
        after = f.at_ms;
    }
    cron_destroy(&c);
    return out;
}

#define UTC(expr, from, n) s_fires(expr, "UTC", from, n, NULL, NULL)

static const char *s_err(const char *expr)
{
    static char msg[600];
    err_t err = {0};
    cron_t *c = cron_new(expr, &err);
    if (c) {
        cron_destroy(&c);
        return "ok";
    }
    CHECK_INT(err.code, ERR_INVALID);
    snprintf(msg, sizeof msg, "%s", err.msg);
    return msg;
}

TEST(cron_fields)
{
    const char *f = "2025-01-01T00:00:30Z";
    CHECK_STR(UTC("* * * * *", f, 2), "2025-01-01T00:01:00Z 2025-01-01T00:02:00Z");
    CHECK_STR(UTC("*/15 * * * * *", f, 3),
              "2025-01-01T00:00:45Z 2025-01-01T00:01:00Z 2025-01-01T00:01:15Z");
    CHECK_STR(UTC("10,20 30 4 * * *", f, 2), "2025-01-01T04:30:10Z 2025-01-01T04:30:20Z");
    CHECK_STR(UTC("5 4 * * *", f, 2), "2025-01-01T04:05:00Z 2025-01-02T04:05:00Z");
    CHECK_STR(UTC("0 9-11 * * *", f, 4),
              "2025-01-01T09:00:00Z 2025-01-01T10:00:00Z 2025-01-01T11:00:00Z "
              "2025-01-02T09:00:00Z");
    CHECK_STR(UTC("0 0 1,15 * *", f, 3),
              "2025-01-15T00:00:00Z 2025-02-01T00:00:00Z 2025-02-15T00:00:00Z");
    CHECK_STR(UTC("0 */6 * * *", f, 5),
              "2025-01-01T06:00:00Z 2025-01-01T12:00:00Z 2025-01-01T18:00:00Z "
              "2025-01-02T00:00:00Z 2025-01-02T06:00:00Z");
    CHECK_STR(UTC("0 1-10/3 * * *", f, 5),
              "2025-01-01T01:00:00Z 2025-01-01T04:00:00Z 2025-01-01T07:00:00Z "
              "2025-01-01T10:00:00Z 2025-01-02T01:00:00Z");
    CHECK_STR(UTC("0 20/2 * * *", f, 3),
              "2025-01-01T20:00:00Z 2025-01-01T22:00:00Z 2025-01-02T20:00:00Z");
    CHECK_STR(UTC("0 0 1 */4 *", f, 3),
              "2025-05-01T00:00:00Z 2025-09-01T00:00:00Z 2026-01-01T00:00:00Z");
    CHECK_STR(UTC("0 0 1-5,10-12/2,20 * *", f, 9),
              "2025-01-02T00:00:00Z 2025-01-03T00:00:00Z 2025-01-04T00:00:00Z "
              "2025-01-05T00:00:00Z 2025-01-10T00:00:00Z 2025-01-12T00:00:00Z "
              "2025-01-20T00:00:00Z 2025-02-01T00:00:00Z 2025-02-02T00:00:00Z");
    CHECK_STR(UTC("59 59 23 31 12 *", f, 1), "2025-12-31T23:59:59Z");
}

TEST(cron_names_and_macros)
{
    const char *f = "2025-01-01T00:00:30Z"; /* a Wednesday */
    CHECK_STR(UTC("0 0 1 JAN,jul *", f, 2), "2025-07-01T00:00:00Z 2026-01-01T00:00:00Z");
    CHECK_STR(UTC("0 0 1 Mar-May *", f, 3),
              "2025-03-01T00:00:00Z 2025-04-01T00:00:00Z 2025-05-01T00:00:00Z");
    CHECK_STR(UTC("0 12 * * mon-FRI", f, 4),
              "2025-01-01T12:00:00Z 2025-01-02T12:00:00Z 2025-01-03T12:00:00Z "
              "2025-01-06T12:00:00Z");
    CHECK_STR(UTC("0 0 * * 7", f, 2), "2025-01-05T00:00:00Z 2025-01-12T00:00:00Z");
    CHECK_STR(UTC("0 0 * * 0", f, 1), "2025-01-05T00:00:00Z");
    CHECK_STR(UTC("0 0 * * SUN", f, 1), "2025-01-05T00:00:00Z");
    CHECK_STR(UTC("0 0 * * 5-7", f, 4),
              "2025-01-03T00:00:00Z 2025-01-04T00:00:00Z 2025-01-05T00:00:00Z "
              "2025-01-10T00:00:00Z");
    CHECK_STR(UTC("0 0 * * FRI-SUN", f, 4),
              "2025-01-03T00:00:00Z 2025-01-04T00:00:00Z 2025-01-05T00:00:00Z "
              "2025-01-10T00:00:00Z");
    CHECK_STR(UTC("0 0 * * */2", f, 3), /* Sun, Tue, Thu, Sat */
              "2025-01-02T00:00:00Z 2025-01-04T00:00:00Z 2025-01-05T00:00:00Z");
    CHECK_STR(UTC("0 0 * * 1/2", f, 3), /* Mon, Wed, Fri */
              "2025-01-03T00:00:00Z 2025-01-06T00:00:00Z 2025-01-08T00:00:00Z");
    CHECK_STR(UTC("0 0 ? * 1", f, 1), "2025-01-06T00:00:00Z");
    CHECK_STR(UTC("@yearly", f, 2), "2026-01-01T00:00:00Z 2027-01-01T00:00:00Z");
    CHECK_STR(UTC("@annually", f, 1), "2026-01-01T00:00:00Z");
    CHECK_STR(UTC("@monthly", f, 1), "2025-02-01T00:00:00Z");
    CHECK_STR(UTC("@weekly", f, 1), "2025-01-05T00:00:00Z");
    CHECK_STR(UTC("@daily", f, 1), "2025-01-02T00:00:00Z");
    CHECK_STR(UTC("@midnight", f, 1), "2025-01-02T00:00:00Z");
    CHECK_STR(UTC("@hourly", f, 2), "2025-01-01T01:00:00Z 2025-01-01T02:00:00Z");
    CHECK_STR(UTC("  @HOURLY\t", f, 1), "2025-01-01T01:00:00Z");
    CHECK_STR(UTC(" \t 0\t 0   *  *  * \t ", f, 1), "2025-01-02T00:00:00Z");
}

TEST(cron_errors)
{
    static const struct {
        const char *expr, *msg;
    } cases[] = {
        {"0 0 32 * *", "day-of-month: 32 is out of range 1-31"},
        {"0 0 0 * *", "day-of-month: 0 is out of range 1-31"},
        {"*/0 * * * *", "minute: step must be positive"},
        {"0 x * * *", "hour: invalid value 'x'"},
        {"0 0 * 5-2 *", "month: range 5-2 is reversed"},
        {"0 0 * MAY-FEB *", "month: range MAY-FEB is reversed"},
        {"0 20-4 * * *", "hour: range 20-4 is reversed"},
        {"* * *", "expected 5 or 6 fields, got 3"},
        {"", "expected 5 or 6 fields, got 0"},
        {"   \t ", "expected 5 or 6 fields, got 0"},
        {"1 2 3 4 5 6 7", "expected 5 or 6 fields, got 7"},
        {"@foo", "unknown macro '@foo'"},
        {"@reboot", "unknown macro '@reboot'"},
        {"@daily 1", "unexpected field '1' after macro '@daily'"},
        {"0 0 30 2 *", "expression can never fire: day-of-month 30 does not occur in month 2"},
        {"0 0 31 4 *", "expression can never fire: day-of-month 31 does not occur in month 4"},
        {"0 0 31 2,4,6 *",
         "expression can never fire: day-of-month 31 does not occur in months 2,4,6"},
        {"0 0 30,31 FEB *",
         "expression can never fire: day-of-month 30,31 does not occur in month 2"},
        {"0 0 30 2 */2", "expression can never fire: day-of-month 30 does not occur in month 2"},
        {"60 * * * *", "minute: 60 is out of range 0-59"},
        {"60 * * * * *", "second: 60 is out of range 0-59"},
        {"0 24 * * *", "hour: 24 is out of range 0-23"},
        {"0 0 * 13 *", "month: 13 is out of range 1-12"},
        {"0 0 * 0 *", "month: 0 is out of range 1-12"},
        {"0 0 * * 8", "day-of-week: 8 is out of range 0-7"},
        {"0 0 * * MON-", "day-of-week: invalid value 'MON-'"},
        {"0 0 * * -MON", "day-of-week: invalid value '-MON'"},
        {"1,,2 * * * *", "minute: empty list element"},
        {"1, * * * *", "minute: empty list element"},
        {",1 * * * *", "minute: empty list element"},
        {"*/x * * * *", "minute: invalid step 'x'"},
        {"*/ * * * *", "minute: missing step after '/'"},
        {"*/61 * * * *", "minute: step 61 is out of range 1-60"},
        {"0 0 * * */8", "day-of-week: step 8 is out of range 1-7"},
        {"1-5/0 * * * *", "minute: step must be positive"},
        {"0 0 * JANUARY *", "month: invalid value 'JANUARY'"},
        {"0 0 * * JAN", "day-of-week: invalid value 'JAN'"},
        {"0 MON * * *", "hour: invalid value 'MON'"},
        {"? * * * *", "minute: invalid value '?'"},
        {"-1 * * * *", "minute: invalid value '-1'"},
        {"*-5 * * * *", "minute: invalid value '*'"},
        {"99999999999 * * * *", "minute: 99999999999 is out of range 0-59"},
        {"1.5 * * * *", "minute: invalid value '1.5'"},
        {"0 0 1 1 1 1", "ok"}, /* 6 fields: seconds first */
        {"0 0 30 2 MON", "ok"}, /* OR rule: every Monday in February */
        {"0 0 29 2 *", "ok"},
        {"0 0 31 1-12 *", "ok"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_STR(s_err(cases[i].expr), cases[i].msg);
    err_t err;
    CHECK(cron_new(NULL, &err) == NULL);
    CHECK_STR(err.msg, "expected 5 or 6 fields, got 0");
    cron_destroy(NULL);
}

TEST(cron_calendar)
{
    CHECK_STR(UTC("0 0 1 * *", "2025-12-15T00:00:00Z", 2),
              "2026-01-01T00:00:00Z 2026-02-01T00:00:00Z");
    CHECK_STR(UTC("59 23 31 12 *", "2025-12-31T23:59:00Z", 1), "2026-12-31T23:59:00Z");
    CHECK_STR(UTC("0 0 29 2 *", "2025-01-01T00:00:00Z", 2),
              "2028-02-29T00:00:00Z 2032-02-29T00:00:00Z");
    CHECK_STR(UTC("0 0 29 2 *", "2097-01-01T00:00:00Z", 1), "2104-02-29T00:00:00Z");
    CHECK_STR(UTC("0 0 29 2 *", "2399-01-01T00:00:00Z", 1), "2400-02-29T00:00:00Z");
    CHECK_STR(UTC("0 0 31 * *", "2025-04-01T00:00:00Z", 3),
              "2025-05-31T00:00:00Z 2025-07-31T00:00:00Z 2025-08-31T00:00:00Z");
    CHECK_STR(UTC("0 0 30 * *", "2025-01-31T00:00:00Z", 2),
              "2025-03-30T00:00:00Z 2025-04-30T00:00:00Z");
    /* strictly after, at millisecond precision */
    CHECK_STR(UTC("* * * * *", "2025-01-01T00:00:00Z", 1), "2025-01-01T00:01:00Z");
    CHECK_STR(UTC("* * * * *", "2025-01-01T00:00:59.999Z", 1), "2025-01-01T00:01:00Z");
    CHECK_STR(UTC("* * * * * *", "1969-12-31T23:59:59.500Z", 2),
              "1970-01-01T00:00:00Z 1970-01-01T00:00:01Z");
    CHECK_STR(UTC("0 0 1 1 *", "1899-06-01T00:00:00Z", 1), "1900-01-01T00:00:00Z");
    CHECK_STR(UTC("59 59 23 31 12 *", "9999-12-31T23:59:58Z", 1), "9999-12-31T23:59:59Z");
    CHECK_STR(UTC("0 0 1 1 *", "9999-06-01T00:00:00Z", 1), "rc=-3"); /* no year 10000 */
}

TEST(cron_vixie_day_rule)
{
    const char *f = "2025-01-01T00:00:00Z";
    /* both restricted: the 13th or any Friday */
    CHECK_STR(UTC("0 0 13 * 5", f, 6),
              "2025-01-03T00:00:00Z 2025-01-10T00:00:00Z 2025-01-13T00:00:00Z "
              "2025-01-17T00:00:00Z 2025-01-24T00:00:00Z 2025-01-31T00:00:00Z");
    /* day-of-week '*': only the 13th */
    CHECK_STR(UTC("0 0 13 * *", f, 2), "2025-01-13T00:00:00Z 2025-02-13T00:00:00Z");
    /* a field starting with '*' counts as unrestricted: both must match */
    CHECK_STR(UTC("0 0 */13 * 5", f, 1), "2025-02-14T00:00:00Z");
    CHECK_STR(UTC("0 0 13 * */7", f, 1), "2025-04-13T00:00:00Z"); /* 13th on a Sunday */
    CHECK_STR(UTC("0 0 ? * 5", f, 1), "2025-01-03T00:00:00Z");
    /* Feb 29 that is a Sunday: every 28 years here, found despite the gap */
    CHECK_STR(UTC("0 0 29 2 */7", f, 2), "2032-02-29T00:00:00Z 2060-02-29T00:00:00Z");
    /* OR rule: Sundays in February, and Feb 29 */
    CHECK_STR(UTC("0 0 29 2 SUN", "2028-02-20T00:00:00Z", 3),
              "2028-02-27T00:00:00Z 2028-02-29T00:00:00Z 2029-02-04T00:00:00Z");
}

TEST(cron_dst_new_york)
{
    const char *ny = "America/New_York";
    const char *spring = "2025-03-08T12:00:00Z", *fall = "2025-11-01T12:00:00Z";
    /* 02:30 does not exist on 2025-03-09: fired at 03:00 EDT, or skipped */
    CHECK_STR(s_fires("30 2 * * *", ny, spring, 2, "fire_after", "first"),
              "2025-03-09T07:00:00Z!gap 2025-03-10T06:30:00Z");
    CHECK_STR(s_fires("30 2 * * *", ny, spring, 2, "skip", "first"),
              "2025-03-10T06:30:00Z 2025-03-11T06:30:00Z");
    CHECK_STR(s_fires("30 2 * * *", ny, "2025-03-07T12:00:00Z", 2, "skip", "first"),
              "2025-03-08T07:30:00Z 2025-03-10T06:30:00Z");
    /* four cron times in the gap fire once */
    CHECK_STR(s_fires("*/15 2 * * *", ny, spring, 3, "fire_after", "first"),
              "2025-03-09T07:00:00Z!gap 2025-03-10T06:00:00Z 2025-03-10T06:15:00Z");
    /* ... and nothing extra when 03:00 is itself a cron time */
    CHECK_STR(s_fires("0 2,3 * * *", ny, spring, 3, "fire_after", "first"),
              "2025-03-09T07:00:00Z 2025-03-10T06:00:00Z 2025-03-10T07:00:00Z");
    CHECK_STR(s_fires("0 2,3 * * *", ny, spring, 3, "skip", "first"),
              "2025-03-09T07:00:00Z 2025-03-10T06:00:00Z 2025-03-10T07:00:00Z");
    CHECK_STR(s_fires("* * 2 * * *", ny, "2025-03-09T06:59:58Z", 3, "fire_after", "first"),
              "2025-03-09T07:00:00Z!gap 2025-03-10T06:00:00Z 2025-03-10T06:00:01Z");
    CHECK_STR(s_fires("0 * * * *", ny, "2025-03-09T05:30:00Z", 3, NULL, NULL),
              "2025-03-09T06:00:00Z 2025-03-09T07:00:00Z 2025-03-09T08:00:00Z");
    /* 01:30 happens twice on 2025-11-02 */
    CHECK_STR(s_fires("30 1 * * *", ny, fall, 2, "fire_after", "first"),
              "2025-11-02T05:30:00Z 2025-11-03T06:30:00Z");
    CHECK_STR(s_fires("30 1 * * *", ny, fall, 3, "fire_after", "both"),
              "2025-11-02T05:30:00Z 2025-11-02T06:30:00Z!second 2025-11-03T06:30:00Z");
    CHECK_STR(s_fires("0 * * * *", ny, "2025-11-02T03:30:00Z", 4, NULL, "first"),
              "2025-11-02T04:00:00Z 2025-11-02T05:00:00Z 2025-11-02T07:00:00Z "
              "2025-11-02T08:00:00Z");
    CHECK_STR(s_fires("0 * * * *", ny, "2025-11-02T03:30:00Z", 4, NULL, "both"),
              "2025-11-02T04:00:00Z 2025-11-02T05:00:00Z 2025-11-02T06:00:00Z!second "
              "2025-11-02T07:00:00Z");
    /* starting inside the repeated hour, after its first occurrence */
    CHECK_STR(s_fires("45 1 * * *", ny, "2025-11-02T06:10:00Z", 1, NULL, "first"),
              "2025-11-03T06:45:00Z");
    CHECK_STR(s_fires("45 1 * * *", ny, "2025-11-02T06:10:00Z", 1, NULL, "both"),
              "2025-11-02T06:45:00Z!second");
    /* far past the table (2037): the footer rule */
    CHECK_STR(s_fires("30 2 * * *", ny, "2090-03-11T12:00:00Z", 2, NULL, NULL),
              "2090-03-12T07:00:00Z!gap 2090-03-13T06:30:00Z");
    /* the second Sunday of March at 02:30 never exists; with skip, nothing
     * fires in 50 years */
    CHECK_STR(s_fires("30 2 8-14 3 */7", ny, spring, 1, "skip", NULL), "rc=-3");
    CHECK_STR(s_fires("30 2 8-14 3 */7", ny, spring, 2, "fire_after", NULL),
              "2025-03-09T07:00:00Z!gap 2026-03-08T07:00:00Z!gap");
}

TEST(cron_dst_london_lord_howe)
{
    const char *lo = "Europe/London", *lh = "Australia/Lord_Howe";
    CHECK_STR(s_fires("30 1 * * *", lo, "2025-03-29T12:00:00Z", 2, "fire_after", NULL),
              "2025-03-30T01:00:00Z!gap 2025-03-31T00:30:00Z");
    CHECK_STR(s_fires("30 1 * * *", lo, "2025-03-29T12:00:00Z", 1, "skip", NULL),
              "2025-03-31T00:30:00Z");
    CHECK_STR(s_fires("30 1 * * *", lo, "2025-10-25T12:00:00Z", 2, NULL, "first"),
              "2025-10-26T00:30:00Z 2025-10-27T01:30:00Z");
    CHECK_STR(s_fires("30 1 * * *", lo, "2025-10-25T12:00:00Z", 3, NULL, "both"),
              "2025-10-26T00:30:00Z 2025-10-26T01:30:00Z!second 2025-10-27T01:30:00Z");
    /* Lord Howe: 02:00 -> 02:30 on 2025-10-05, 02:00 -> 01:30 on 2025-04-06 */
    CHECK_STR(s_fires("15 2 * * *", lh, "2025-10-04T12:00:00Z", 2, "fire_after", NULL),
              "2025-10-04T15:30:00Z!gap 2025-10-05T15:15:00Z");
    CHECK_STR(s_fires("15 2 * * *", lh, "2025-10-04T12:00:00Z", 1, "skip", NULL),
              "2025-10-05T15:15:00Z");
    CHECK_STR(s_fires("30 2 * * *", lh, "2025-10-04T12:00:00Z", 2, "fire_after", NULL),
              "2025-10-04T15:30:00Z 2025-10-05T15:30:00Z");
    CHECK_STR(s_fires("45 1 * * *", lh, "2025-04-05T12:00:00Z", 2, NULL, "first"),
              "2025-04-05T14:45:00Z 2025-04-06T15:15:00Z");
    CHECK_STR(s_fires("45 1 * * *", lh, "2025-04-05T12:00:00Z", 3, NULL, "both"),
              "2025-04-05T14:45:00Z 2025-04-05T15:15:00Z!second 2025-04-06T15:15:00Z");
    CHECK_STR(s_fires("*/20 1-2 * * *", lh, "2025-04-05T14:30:00Z", 6, NULL, "first"),
              "2025-04-05T14:40:00Z 2025-04-05T15:30:00Z 2025-04-05T15:50:00Z "
              "2025-04-05T16:10:00Z 2025-04-06T14:30:00Z 2025-04-06T14:50:00Z");
}

TEST(cron_zones_without_dst)
{
    /* Tokyo: 02:30 every day, no flags, around the dates others shift */
    CHECK_STR(s_fires("30 2 * * *", "Asia/Tokyo", "2025-03-08T12:00:00Z", 3, NULL, NULL),
              "2025-03-08T17:30:00Z 2025-03-09T17:30:00Z 2025-03-10T17:30:00Z");
    /* Mexico City kept DST until October 2022 */
    const char *mx = "America/Mexico_City";
    CHECK_STR(s_fires("30 2 * * *", mx, "2022-04-02T12:00:00Z", 2, NULL, NULL),
              "2022-04-03T08:00:00Z!gap 2022-04-04T07:30:00Z");
    CHECK_STR(s_fires("30 1 * * *", mx, "2022-10-29T12:00:00Z", 3, NULL, "both"),
              "2022-10-30T06:30:00Z 2022-10-30T07:30:00Z!second 2022-10-31T07:30:00Z");
    /* ... and none since: the old first-Sunday-of-April change is gone */
    CHECK_STR(s_fires("30 2 * * *", mx, "2023-04-01T12:00:00Z", 3, NULL, NULL),
              "2023-04-02T08:30:00Z 2023-04-03T08:30:00Z 2023-04-04T08:30:00Z");
    CHECK_STR(s_fires("30 1 * * *", mx, "2030-10-26T12:00:00Z", 2, NULL, "both"),
              "2030-10-27T07:30:00Z 2030-10-28T07:30:00Z");
}

TEST(cron_api_misc)
{
    err_t err = {0};
    cron_dst_policy_t pol;
    CHECK_INT(cron_dst_policy_parse(NULL, NULL, &pol, &err), 0);
    CHECK_INT(pol.gap, CRON_GAP_FIRE_AFTER);
    CHECK_INT(pol.overlap, CRON_OVERLAP_FIRST);
    CHECK_INT(cron_dst_policy_parse("skip", "both", &pol, &err), 0);
    CHECK_INT(pol.gap, CRON_GAP_SKIP);
    CHECK_INT(pol.overlap, CRON_OVERLAP_BOTH);
    CHECK_STR(cron_gap_name(pol.gap), "skip");
    CHECK_STR(cron_overlap_name(pol.overlap), "both");
    CHECK_STR(cron_gap_name(CRON_GAP_FIRE_AFTER), "fire_after");
    CHECK_STR(cron_overlap_name(CRON_OVERLAP_FIRST), "first");
    CHECK_INT(cron_dst_policy_parse("later", NULL, &pol, &err), ERR_INVALID);
    CHECK_STR(err.msg, "unknown dst gap policy 'later': expected fire_after or skip");
    CHECK_INT(cron_dst_policy_parse(NULL, "last", &pol, &err), ERR_INVALID);
    CHECK_STR(err.msg, "unknown dst overlap policy 'last': expected first or both");

    cron_t *c = cron_new("0 12 * * MON", &err);
    CHECK(c != NULL);
    const tz_t *utc = tz_get("UTC", &err);
    cron_fire_t f;
    CHECK_INT(cron_next(c, utc, CRON_DST_POLICY_DEFAULT, INT64_MAX, &f), ERR_INVALID);
    CHECK_INT(cron_next(c, utc, CRON_DST_POLICY_DEFAULT, INT64_MIN, &f), ERR_INVALID);
    CHECK_INT(cron_next(c, utc, CRON_DST_POLICY_DEFAULT, s_ms("2025-01-01T00:00:00Z"), &f), 0);
    CHECK_INT(cron_matches(c, f.local_secs), 1);
    CHECK_INT(cron_matches(c, f.local_secs + 1), 0);
    cron_destroy(&c);
    CHECK(c == NULL);
}

TEST(cron_parse_into_caller_memory)
{
    /* Kept inside a caller's record: the same schedule as cron_new's, the
     * same errors, and a macro too. */
    _Alignas(int64_t) unsigned char mem[CRON_SIZE];
    err_t err = {0};
    const tz_t *utc = tz_get("UTC", &err);
    const char *exprs[] = {"*/7 3-5 * * MON-FRI", "@monthly", "30 0 29 2 *"};
    for (size_t e = 0; e < sizeof exprs / sizeof exprs[0]; e++) {
        cron_t *own = cron_new(exprs[e], &err);
        const cron_t *in = cron_parse_into(mem, exprs[e], &err);
        CHECK(own != NULL);
        CHECK(in == (const cron_t *)mem);
        int64_t a = s_ms("2025-01-01T00:00:00Z"), b = a;
        for (int i = 0; i < 20; i++) {
            cron_fire_t fa, fb;
            CHECK_INT(cron_next(own, utc, CRON_DST_POLICY_DEFAULT, a, &fa), 0);
            CHECK_INT(cron_next(in, utc, CRON_DST_POLICY_DEFAULT, b, &fb), 0);
            CHECK_INT(fa.at_ms, fb.at_ms);
            a = fa.at_ms;
            b = fb.at_ms;
        }
        cron_destroy(&own);
    }
    CHECK(cron_parse_into(mem, "0 0 30 2 *", &err) == NULL);
    CHECK_INT(err.code, ERR_INVALID);
    CHECK_STR(err.msg, s_err("0 0 30 2 *"));
    CHECK(cron_parse_into(mem, "@often", &err) == NULL);
    CHECK_STR(err.msg, "unknown macro '@often'");
}

/* ---- brute-force cross-check --------------------------------------- */

typedef struct {
    int64_t at;
    int flags;
} s_fire_t;

/* The fires in [w0, w1) by definition, minute by minute: a regular fire
 * where the wall time matches (a repeated wall time's second occurrence
 * only with "both"), and with "fire_after" one fire at each spring-forward
 * transition whose skipped wall times include a match. */
static int s_reference(const cron_t *c, const tz_t *tz, cron_dst_policy_t pol, int64_t w0,
                       int64_t w1, s_fire_t *out, int max)
{
    int n = 0;
    for (int64_t t = w0; t < w1 && n < max; t += 60) {
        tz_span_t sp;
        int64_t utc[2];
        tz_span_at(tz, t, &sp);
        int64_t local = t + sp.offset;
        int regular = cron_matches(c, local), flags = 0;
        if (regular && tz_local_to_utc(tz, local, utc) == 2 && utc[1] == t) {
            if (pol.overlap == CRON_OVERLAP_FIRST)
                regular = 0;
            flags = CRON_FIRE_OVERLAP_SECOND;
        }
        int gap = 0;
        if (sp.start == t && sp.prev_offset < sp.offset && pol.gap == CRON_GAP_FIRE_AFTER)
            for (int64_t l = t + sp.prev_offset; l < t + sp.offset && !gap; l += 60)
                gap = cron_matches(c, l);
        if (regular)
            out[n++] = (s_fire_t){t, flags};
        else if (gap)
            out[n++] = (s_fire_t){t, CRON_FIRE_GAP_SHIFTED};
    }
    return n;
}

TEST(cron_matches_brute_force_around_transitions)
{
    static const char *zones[] = {"America/New_York", "Europe/London", "Australia/Lord_Howe",
                                  "Pacific/Chatham",  "Europe/Dublin", "America/Santiago",
                                  "Africa/Casablanca", "America/Mexico_City", "Asia/Tehran",
                                  "America/St_Johns"};
    static const char *exprs[] = {"*/7 * * * *", "30 1 * * *", "0 2 * * *", "15,45 0-3 * * *",
                                  "0 * * * *", "*/30 1-3 * * *", "45 2 * * 0", "*/20 * * * *"};
    static s_fire_t ref[8192], got[8192];
    int checked = 0, failures = 0, shifted = 0, second = 0;
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
        err_t err = {0};
        const tz_t *tz = tz_get(zones[z], &err);
        CHECK(tz != NULL);
        if (!tz)
            continue;
        int64_t t = s_ms("2021-01-01T00:00:00Z") / 1000, stop = s_ms("2027-01-01T00:00:00Z") / 1000;
        for (int guard = 0; guard < 100; guard++) {
            tz_span_t sp;
            tz_span_at(tz, t, &sp);
            if (sp.end == INT64_MAX || sp.end >= stop)
                break;
            t = sp.end;
            if (sp.next_offset == sp.offset)
                continue;
            int64_t w0 = (t / 60 - 24 * 60) * 60, w1 = w0 + 48 * 3600;
            for (size_t e = 0; e < sizeof exprs / sizeof exprs[0]; e++) {
                cron_t *c = cron_new(exprs[e], &err);
                for (int p = 0; p < 4; p++) {
                    cron_dst_policy_t pol = {(cron_gap_t)(p & 1), (cron_overlap_t)(p >> 1)};
                    int nr = s_reference(c, tz, pol, w0, w1, ref, 8192), ng = 0;
                    int64_t after = w0 * 1000 - 1;
                    while (ng < 8192) {
                        cron_fire_t f;
                        if (cron_next(c, tz, pol, after, &f) != 0 || f.at_ms >= w1 * 1000)
                            break;
                        got[ng++] = (s_fire_t){f.at_ms / 1000, f.flags};
                        after = f.at_ms;
                    }
                    for (int i = 0; i < nr; i++) {
                        shifted += !!(ref[i].flags & CRON_FIRE_GAP_SHIFTED);
                        second += !!(ref[i].flags & CRON_FIRE_OVERLAP_SECOND);
                    }
                    int same = nr == ng;
                    for (int i = 0; same && i < nr; i++)
                        same = ref[i].at == got[i].at && ref[i].flags == got[i].flags;
                    checked++;
                    if (!same && failures++ < 5) {
                        char a[40];
                        s_iso(t * 1000, a, sizeof a);
                        printf("# %s '%s' gap=%s overlap=%s near %s: ref %d fires, got %d\n",
                               zones[z], exprs[e], cron_gap_name(pol.gap),
                               cron_overlap_name(pol.overlap), a, nr, ng);
                        for (int i = 0; i < nr || i < ng; i++) {
                            char x[40] = "-", y[40] = "-";
                            if (i < nr)
                                s_iso(ref[i].at * 1000, x, sizeof x);
                            if (i < ng)
                                s_iso(got[i].at * 1000, y, sizeof y);
                            if (i >= nr || i >= ng || ref[i].at != got[i].at ||
                                ref[i].flags != got[i].flags) {
                                printf("#   [%d] ref %s/%d got %s/%d\n", i, x,
                                       i < nr ? ref[i].flags : -1, y, i < ng ? got[i].flags : -1);
                                break;
                            }
                        }
                    }
                }
                cron_destroy(&c);
            }
        }
    }
    printf("# %d windows checked, %d differ (%d gap-shifted, %d second-occurrence fires)\n",
           checked, failures, shifted, second);
    CHECK(checked > 500 && shifted > 100 && second > 100);
    CHECK_INT(failures, 0);
}
