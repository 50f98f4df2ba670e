/*
 * test_worker_tail.c - output tails: the ring keeps the end, live chunks
 * never split a UTF-8 character, and text leaving is wire-safe.
 */
#include "tests/unit/test.h"

#include "../../worker/tail.c"

#include <jansson.h>

TEST(worker_tail_keeps_the_last_bytes)
{
    tail_t *t = tail_new(8);
    tail_append(t, "abc", 3);
    char *s = tail_text(t);
    CHECK_STR(s, "abc");
    free(s);
    tail_append(t, "defghij", 7); /* wraps */
    s = tail_text(t);
    CHECK_STR(s, "cdefghij");
    free(s);
    tail_append(t, "0123456789xyz", 13); /* larger than the ring */
    s = tail_text(t);
    CHECK_STR(s, "56789xyz");
    free(s);
    tail_destroy(&t);
    CHECK(t == NULL);
    tail_destroy(&t);
}

TEST(worker_tail_chunks_follow_appends)
{
    tail_t *t = tail_new(8);
    CHECK(tail_chunk(t) == NULL);
    CHECK(!tail_pending(t));
    tail_append(t, "ab", 2);
    CHECK(tail_pending(t));
    char *c = tail_chunk(t);
    CHECK_STR(c, "ab");
    free(c);
    CHECK(tail_chunk(t) == NULL);
    tail_append(t, "cd", 2);
    c = tail_chunk(t);
    CHECK_STR(c, "cd");
    free(c);
    /* More than the ring since the last chunk: only the newest 8 bytes. */
    tail_append(t, "0123456789", 10);
    c = tail_chunk(t);
    CHECK_STR(c, "23456789");
    free(c);
    tail_destroy(&t);
}

TEST(worker_tail_chunks_hold_back_a_split_character)
{
    tail_t *t = tail_new(64);
    const char *euro = "\xe2\x82\xac"; /* U+20AC, 3 bytes */
    tail_append(t, "x", 1);
    tail_append(t, euro, 2);
    char *c = tail_chunk(t);
    CHECK_STR(c, "x");
    free(c);
    CHECK(tail_chunk(t) == NULL); /* only the first 2 bytes of the euro sign */
    tail_append(t, euro + 2, 1);
    c = tail_chunk(t);
    CHECK_STR(c, euro);
    free(c);
    /* At the end, a character cut short becomes '?'. */
    tail_append(t, euro, 1);
    char *s = tail_text(t);
    CHECK_STR(s, "x\xe2\x82\xac?");
    free(s);
    tail_destroy(&t);
}

TEST(worker_tail_drops_a_character_cut_by_the_ring)
{
    tail_t *t = tail_new(4);
    tail_append(t, "a\xe2\x82\xac" "bc", 6); /* the ring holds "\x82\xac" "bc" */
    char *s = tail_text(t);
    CHECK_STR(s, "bc");
    free(s);
    tail_destroy(&t);
}

TEST(worker_tail_clean_makes_valid_json_strings)
{
    const char in[] = "ok\t\n\r\x01\x1b[1m\0nul \xff\xfe \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xc3\xa9";
    size_t n = sizeof in - 1;
    char *s = tail_clean(in, n, 1000, 1);
    CHECK_INT(strlen(s), n); /* one for one, and no NUL left */
    CHECK_STR(s, "ok\t\n\r??[1m?nul ?? ?? ??? ???? \xc3\xa9");
    json_t *j = json_stringn(s, strlen(s));
    CHECK(j != NULL);
    json_decref(j);
    free(s);
    /* Keeping the start cuts a character at the end off; the end, at the start. */
    s = tail_clean("ab\xc3\xa9", 4, 3, 0);
    CHECK_STR(s, "ab");
    free(s);
    s = tail_clean("\xc3\xa9xy", 4, 3, 1);
    CHECK_STR(s, "xy");
    free(s);
}
