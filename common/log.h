/*
 * log.h - one log format for every sked process.
 *
 * A line carries time, level, role, node id, pid, a short message and
 * key=value fields: `log_info("job started", "job=%s attempt=%d", id, n)`.
 * With SKED_LOG_FORMAT=json each line is a JSON object with the same keys.
 * The level is checked before the arguments are evaluated. Lines go to
 * stderr, which is what systemd and container runtimes collect.
 */
#ifndef SKED_LOG_H
#define SKED_LOG_H

typedef enum { LL_DEBUG = 0, LL_INFO, LL_WARN, LL_ERROR } log_level_t;

extern log_level_t log_min_level;

/* Sets the role ("gateway", "master", "worker"), node id, level and format.
 * Strings are copied. Can't fail. */
void log_init(const char *role, const char *node_id, log_level_t level, int json);

/* Parses "debug", "info", "warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *name);

void log_write(log_level_t level, const char *msg, const char *fields_fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_AT(level, ...)                                                                   \
    do {                                                                                     \
        if ((level) >= log_min_level)                                                        \
            log_write((level), __VA_ARGS__);                                                 \
    } while (0)
#define log_debug(...) LOG_AT(LL_DEBUG, __VA_ARGS__)
#define log_info(...) LOG_AT(LL_INFO, __VA_ARGS__)
#define log_warn(...) LOG_AT(LL_WARN, __VA_ARGS__)
#define log_error(...) LOG_AT(LL_ERROR, __VA_ARGS__)

#endif
