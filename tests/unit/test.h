/*
 * test.h - the unit-test harness: TEST(name) registers a case, CHECK*
 * record failures without stopping the case. runner.c prints TAP.
 *
 *   TEST(proto_roundtrip) { CHECK(x == 1); CHECK_STR(a, "b"); }
 */
#ifndef SKED_TEST_H
#define SKED_TEST_H

#include <stdio.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *what);

#define TEST(name)                                                                           \
    static void test_##name(void);                                                           \
    __attribute__((constructor)) static void test_reg_##name(void)                           \
    {                                                                                        \
        test_register(#name, test_##name);                                                   \
    }                                                                                        \
    static void test_##name(void)

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            test_fail(__FILE__, __LINE__, #cond);                                            \
    } while (0)

#define CHECK_STR(a, b)                                                                      \
    do {                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                     \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                             \
            char m_[1024];                                                                   \
            snprintf(m_, sizeof m_, "%s == \"%.400s\" (got \"%.400s\")", #a, b_ ? b_ : "(null)", \
                     a_ ? a_ : "(null)");                                                    \
            test_fail(__FILE__, __LINE__, m_);                                               \
        }                                                                                    \
    } while (0)

#define CHECK_INT(a, b)                                                                      \
    do {                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                  \
        if (a_ != b_) {                                                                      \
            char m_[512];                                                                    \
            snprintf(m_, sizeof m_, "%s == %lld (got %lld)", #a, b_, a_);                    \
            test_fail(__FILE__, __LINE__, m_);                                               \
        }                                                                                    \
    } while (0)

#endif
