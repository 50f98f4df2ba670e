/*
 * fuzz_cron.c - libFuzzer target for the cron and time-zone engine
 * (`make fuzz-cron`, FUZZ_SECONDS=60 by default).
 *
 * Input byte 0 picks the mode and options:
 *   - TZif mode (top two bits set): the rest is parsed as a TZif file and
 *     the resulting zone is queried at many instants;
 *   - otherwise the rest becomes a cron expression, either verbatim or
 *     (bit 0) assembled from a vocabulary of cron tokens so the fuzzer
 *     reaches valid expressions quickly; it is parsed and cron_next() is
 *     called a few times in one of several zones under one of the four DST
 *     policies, starting from an instant taken from bytes 1-8.
 * Every result is checked against the contract in cron.h / tz.h; a
 * violation traps, so the fuzzer reports it like a crash.
 */
#include "common/cron.h"
#include "common/tz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S_CHECK(cond)                                                                        \
    do {                                                                                     \
        if (!(cond))                                                                         \
            __builtin_trap();                                                                \
    } while (0)

/* Within the search horizon (plus a day of zone offset) of year 9999's end. */
#define S_NEAR_9999_MS (INT64_C(253402300799999) - ((int64_t)CRON_SEARCH_YEARS * 366 + 1) * 86400000)

static const char *const s_zones[] = {
    "UTC",          "America/New_York", "Australia/Lord_Howe", "Europe/Dublin",
    "Pacific/Chatham", "Asia/Tokyo",    "America/Santiago",    "Africa/Casablanca",
};

static const char *const s_vocab[] = {
    "*", "?", "/", "-", ",", " ", " ", " ", "\t", "0", "1", "2", "3", "5", "7", "9", "12",
    "15", "23", "24", "28", "29", "30", "31", "32", "59", "60", "MON", "jan", "Sun", "FRI",
    "feb", "DEC", "SAT", "@daily", "@hourly", "@weekly", "@yearly", "@foo", "L", "#", "x",
};

static void s_fuzz_tzif(const uint8_t *data, size_t size)
{
    err_t err;
    tz_t *tz = tz_new_from_tzif("Fuzz/Zone", data, size, &err);
    if (!tz)
        return;
    for (int64_t t = -3000000000LL; t < 5000000000LL; t += 98765432) {
        int64_t out[2], gap;
        tz_span_t sp;
        int o = tz_offset_at(tz, t, NULL);
        S_CHECK(o >= -TZ_MAX_OFFSET && o <= TZ_MAX_OFFSET);
        S_CHECK(tz_abbrev_at(tz, t) != NULL);
        tz_span_at(tz, t, &sp);
        S_CHECK(sp.start <= t && t < sp.end && sp.offset == o);
        int n = tz_local_to_utc(tz, t, out);
        S_CHECK(n >= 0 && n <= 2);
        for (int i = 0; i < n; i++)
            S_CHECK(out[i] + tz_offset_at(tz, out[i], NULL) == t);
        if (n == 0) /* a skipped wall time lies in some transition's gap */
            S_CHECK(tz_gap_end(tz, t, &gap) == 0 && gap > t - TZ_MAX_OFFSET - 1);
    }
    cron_t *c = cron_new("*/13 */5 * * *", &err);
    cron_fire_t f;
    int64_t after = 1700000000000LL;
    for (int i = 0; i < 8 && cron_next(c, tz, CRON_DST_POLICY_DEFAULT, after, &f) == 0; i++) {
        S_CHECK(f.at_ms > after);
        after = f.at_ms;
    }
    cron_destroy(&c);
    tz_destroy(&tz);
}

static void s_fuzz_cron(const uint8_t *data, size_t size)
{
    char expr[512];
    size_t n = 0;
    uint8_t opt = data[0];
    int64_t after = 0;
    if (size < 9)
        return;
    memcpy(&after, data + 1, 8);
    if (!(opt & 0x20)) /* mostly keep the start within 1900-2200 */
        after = (int64_t)((uint64_t)after % 9467280000000ULL) - 2208988800000LL;
    data += 9;
    size -= 9;
    if (opt & 1) {
        for (size_t i = 0; i < size && n + 16 < sizeof expr; i++) {
            const char *tok = s_vocab[data[i] % (sizeof s_vocab / sizeof s_vocab[0])];
            size_t len = strlen(tok);
            memcpy(expr + n, tok, len);
            n += len;
        }
    } else {
        n = size < sizeof expr - 1 ? size : sizeof expr - 1;
        memcpy(expr, data, n);
    }
    expr[n] = '\0';

    err_t err;
    cron_t *c = cron_new(expr, &err);
    if (!c) {
        S_CHECK(err.code == ERR_INVALID && err.msg[0] != '\0');
        return;
    }
    const tz_t *tz = tz_get(s_zones[(opt >> 1) & 7], &err);
    if (!tz)
        tz = tz_get("UTC", &err);
    cron_dst_policy_t pol = {(opt & 0x10) ? CRON_GAP_SKIP : CRON_GAP_FIRE_AFTER,
                             (opt & 0x40) ? CRON_OVERLAP_BOTH : CRON_OVERLAP_FIRST};
    for (int i = 0; i < 4; i++) {
        cron_fire_t f;
        int rc = cron_next(c, tz, pol, after, &f);
        if (rc == ERR_INVALID)
            break;
        if (rc == ERR_NOTFOUND) { /* only a skip policy, or the end of year 9999 */
            S_CHECK(pol.gap == CRON_GAP_SKIP || after > S_NEAR_9999_MS);
            break;
        }
        S_CHECK(rc == 0);
        S_CHECK(f.at_ms > after && f.at_ms % 1000 == 0);
        S_CHECK(f.local_secs - f.utc_offset == f.at_ms / 1000);
        S_CHECK(f.utc_offset == tz_offset_at(tz, f.at_ms / 1000, NULL));
        if (f.flags & CRON_FIRE_GAP_SHIFTED) {
            S_CHECK(pol.gap == CRON_GAP_FIRE_AFTER);
            int64_t gap;
            S_CHECK(tz_gap_end(tz, f.local_secs - 1, &gap) == 0 && gap * 1000 == f.at_ms);
        } else {
            S_CHECK(cron_matches(c, f.local_secs));
        }
        if (f.flags & CRON_FIRE_OVERLAP_SECOND)
            S_CHECK(pol.overlap == CRON_OVERLAP_BOTH);
        after = f.at_ms;
    }
    cron_destroy(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if ((data[0] & 0xc0) == 0xc0)
        s_fuzz_tzif(data + 1, size - 1);
    else
        s_fuzz_cron(data, size);
    return 0;
}
