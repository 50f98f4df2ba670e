/*
 * err.c - fills err_t records; see err.h.
 */
#include "common/err.h"

#include <stdio.h>

int err_set(err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}
