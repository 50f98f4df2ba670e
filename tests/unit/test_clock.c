/*
 * test_clock.c - ISO-8601 formatting and parsing.
 */
#include "tests/unit/test.h"

#include "common/clock.h"

TEST(clock_format_epoch)
{
    char buf[40];
    clock_format_iso(0, buf, sizeof buf);
    CHECK_STR(buf, "1970-01-01T00:00:00.000Z");
    clock_format_iso(951782400123LL, buf, sizeof buf); /* leap day 2000 */
    CHECK_STR(buf, "2000-02-29T00:00:00.123Z");
    clock_format_iso(-1, buf, sizeof buf);
    CHECK_STR(buf, "1969-12-31T23:59:59.999Z");
}

TEST(clock_parse_roundtrip)
{
    int64_t ms;
    CHECK_INT(clock_parse_iso("2000-02-29T00:00:00.123Z", &ms), 0);
    CHECK_INT(ms, 951782400123LL);
    CHECK_INT(clock_parse_iso("2026-11-26T15:00:00+01:00", &ms), 0);
    CHECK_INT(ms, 1795701600000LL);
    CHECK_INT(clock_parse_iso("2026-11-26T14:00Z", &ms), 0);
    CHECK_INT(ms, 1795701600000LL);
}

TEST(clock_parse_rejects)
{
    int64_t ms;
    CHECK(clock_parse_iso("2001-02-29T00:00:00Z", &ms) < 0);
    CHECK(clock_parse_iso("2026-13-01T00:00:00Z", &ms) < 0);
    CHECK(clock_parse_iso("2026-11-26T00:00:00", &ms) < 0);
    CHECK(clock_parse_iso("2026-11-26T00:00:00Zjunk", &ms) < 0);
    CHECK(clock_parse_iso("", &ms) < 0);
    CHECK(clock_parse_iso("2026-11-26T00:00:00.Z", &ms) < 0);
}
