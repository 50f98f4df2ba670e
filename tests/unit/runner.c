/*
 * runner.c - runs the registered unit tests and prints TAP.
 *
 *   unit-tests            run all
 *   unit-tests --list     print the names
 *   unit-tests --test N   run the tests whose name is N (or starts with N)
 */
#include "tests/unit/test.h"

#include "common/log.h"

#include <stdlib.h>

#define MAX_TESTS 1024

static struct {
    const char *name;
    test_fn fn;
} s_tests[MAX_TESTS];
static int s_count;
static int s_failed_now;

void test_register(const char *name, test_fn fn)
{
    if (s_count < MAX_TESTS) {
        s_tests[s_count].name = name;
        s_tests[s_count].fn = fn;
        s_count++;
    }
}

void test_fail(const char *file, int line, const char *what)
{
    printf("# %s:%d: check failed: %s\n", file, line, what);
    s_failed_now = 1;
}

static int s_cmp(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    log_init("test", "unit", LL_ERROR, 0);
    /* Sort by name so the order is stable whatever the link order. */
    qsort(s_tests, (size_t)s_count, sizeof s_tests[0], s_cmp);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) {
            for (int t = 0; t < s_count; t++)
                printf("%s\n", s_tests[t].name);
            return 0;
        } else if (strcmp(argv[i], "--test") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--list] [--test NAME]\n", argv[0]);
            return 2;
        }
    }
    int run = 0, failed = 0;
    for (int t = 0; t < s_count; t++)
        if (!only || strncmp(s_tests[t].name, only, strlen(only)) == 0)
            run++;
    printf("1..%d\n", run);
    int n = 0;
    for (int t = 0; t < s_count; t++) {
        if (only && strncmp(s_tests[t].name, only, strlen(only)) != 0)
            continue;
        s_failed_now = 0;
        s_tests[t].fn();
        fflush(stdout);
        n++;
        printf("%s %d - %s\n", s_failed_now ? "not ok" : "ok", n, s_tests[t].name);
        failed += s_failed_now;
    }
    printf("# %d passed, %d failed\n", run - failed, failed);
    printf("%d passed, %d failed\n", run - failed, failed);
    return failed ? 1 : 0;
}
