/*
 * err.h - error codes and the caller-supplied error record.
 *
 * Functions return 0 on success and one of the negative ERR_* codes on
 * failure; when given an err_t they also leave a message there, worded as
 * "what failed 'subject': why", lower case, no period. ERR_RETRY marks a
 * condition worth retrying (store unreachable, peer busy).
 */
#ifndef SKED_ERR_H
#define SKED_ERR_H

#include <stdarg.h>

enum {
    ERR_OK = 0,
    ERR_INVALID = -1,  /* bad input from outside */
    ERR_RETRY = -2,    /* transient: store unreachable, timeout */
    ERR_NOTFOUND = -3,
    ERR_CONFLICT = -4, /* duplicate key, lost race */
    ERR_SYS = -5,      /* system call or library failure */
};

typedef struct {
    int code;
    char msg[512];
} err_t;

/* Fills err (if not NULL) and returns code, so callers can write
 * `return err_set(err, ERR_INVALID, "...")`. */
int err_set(err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
