/*
 * log.c - writes log lines in text or JSON; see log.h.
 *
 * Fields are formatted once as "k=v k2=\"v w\"" text; the JSON form splits
 * that text back into keys and values, honouring double quotes.
 */
#include "common/log.h"

#include "common/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

log_level_t log_min_level = LL_INFO;
static char s_role[32] = "sked";
static char s_node[128] = "";
static int s_json;

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *role, const char *node_id, log_level_t level, int json)
{
    snprintf(s_role, sizeof s_role, "%s", role ? role : "sked");
    snprintf(s_node, sizeof s_node, "%s", node_id ? node_id : "");
    log_min_level = level;
    s_json = json;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, s_level_names[i]) == 0)
            return i;
    return -1;
}

/* Appends s to out as the inside of a JSON string. */
static size_t s_json_escape(char *out, size_t cap, size_t len, const char *s, size_t n)
{
    for (size_t i = 0; i < n && len + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[len++] = '\\';
            out[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(out + len, cap - len, "\\u%04x", c);
        } else {
            out[len++] = (char)c;
        }
    }
    return len;
}

static size_t s_json_fields(char *out, size_t cap, size_t len, const char *f)
{
    while (*f) {
        while (*f == ' ')
            f++;
        const char *eq = strchr(f, '=');
        if (!eq)
            break;
        const char *v = eq + 1, *end;
        int quoted = *v == '"';
        if (quoted) {
            v++;
            end = strchr(v, '"');
            if (!end)
                end = v + strlen(v);
        } else {
            end = strchr(v, ' ');
            if (!end)
                end = v + strlen(v);
        }
        if (len + 8 >= cap)
            break;
        out[len++] = ',';
        out[len++] = '"';
        len = s_json_escape(out, cap, len, f, (size_t)(eq - f));
        out[len++] = '"';
        out[len++] = ':';
        out[len++] = '"';
        len = s_json_escape(out, cap, len, v, (size_t)(end - v));
        if (len + 2 < cap)
            out[len++] = '"';
        f = *end == '"' ? end + 1 : end;
    }
    return len;
}

void log_write(log_level_t level, const char *msg, const char *fields_fmt, ...)
{
    char fields[2048] = "";
    if (fields_fmt && *fields_fmt) {
        va_list ap;
        va_start(ap, fields_fmt);
        vsnprintf(fields, sizeof fields, fields_fmt, ap);
        va_end(ap);
    }
    char ts[40];
    clock_format_iso(clock_wall_ms(), ts, sizeof ts);
    char line[4096];
    size_t len;
    if (s_json) {
        len = (size_t)snprintf(line, sizeof line,
                               "{\"ts\":\"%s\",\"level\":\"%s\",\"role\":\"%s\",\"node\":\"", ts,
                               s_level_names[level], s_role);
        len = s_json_escape(line, sizeof line, len, s_node, strlen(s_node));
        len += (size_t)snprintf(line + len, sizeof line - len, "\",\"pid\":%d,\"msg\":\"",
                                (int)getpid());
        len = s_json_escape(line, sizeof line, len, msg, strlen(msg));
        line[len++] = '"';
        len = s_json_fields(line, sizeof line - 3, len, fields);
        line[len++] = '}';
    } else {
        len = (size_t)snprintf(line, sizeof line, "%s %-5s %s[%s/%d] %s%s%s", ts,
                               s_level_names[level], s_role, s_node, (int)getpid(), msg,
                               fields[0] ? " " : "", fields);
        if (len >= sizeof line - 1)
            len = sizeof line - 2;
    }
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
