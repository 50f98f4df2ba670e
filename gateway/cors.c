/*
 * cors.c - Cross-Origin Resource Sharing for browsers (SKED_CORS_ORIGINS).
 *
 * The allow-list is a comma-separated list of origins ("https://app.example"
 * compared exactly, a trailing '/' ignored) or "*". A request whose Origin
 * is on it gets Access-Control-Allow-Origin (the origin itself and
 * "Vary: Origin", or "*" for the wildcard) on every answer, errors
 * included, so that a browser page can read a 401 or a 429. A preflight
 * (OPTIONS with Origin and Access-Control-Request-Method) is answered here,
 * before routing and authentication, as Starlette's CORSMiddleware does:
 * 204 with the allowed methods and headers and a max age when the origin,
 * method and headers are allowed, else 400 without any CORS header.
 * Origins not on the list never get a CORS header. Credentials (cookies)
 * are not used by this API, so Access-Control-Allow-Credentials is never
 * sent; the bearer token travels in the Authorization header, which the
 * preflight allows.
 *
 * Called by api.c for every request; immutable after cors_new().
 */
#include "gateway/gateway.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CORS_MAX_ORIGINS 64
#define CORS_METHODS "GET, POST, PUT, PATCH, DELETE, OPTIONS"
#define CORS_HEADERS "Authorization, Content-Type, Accept, Accept-Language, Content-Language"
#define CORS_MAX_AGE "600"

struct cors {
    int any;
    int n;
    char *origins[CORS_MAX_ORIGINS];
};

cors_t *cors_new(const char *list, err_t *err)
{
    cors_t *self = calloc(1, sizeof *self);
    char *copy = strdup(list ? list : "");
    if (!self || !copy) {
        free(self);
        free(copy);
        err_set(err, ERR_SYS, "cannot set up CORS: out of memory");
        return NULL;
    }
    int rc = 0;
    for (char *save = NULL, *o = strtok_r(copy, ",", &save); o && rc == 0;
         o = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*o))
            o++;
        size_t n = strlen(o);
        while (n > 0 && (isspace((unsigned char)o[n - 1]) || o[n - 1] == '/'))
            o[--n] = '\0';
        if (n == 0)
            continue;
        if (strcmp(o, "*") == 0) {
            self->any = 1;
        } else if (!strstr(o, "://") || strchr(o, '*') || n > 400) {
            rc = err_set(err, ERR_INVALID,
                         "cannot use SKED_CORS_ORIGINS entry '%.100s': give scheme://host[:port] "
                         "or *",
                         o);
        } else if (self->n == CORS_MAX_ORIGINS) {
            rc = err_set(err, ERR_INVALID, "cannot use SKED_CORS_ORIGINS: more than %d origins",
                         CORS_MAX_ORIGINS);
        } else if (!(self->origins[self->n++] = strdup(o))) {
            rc = err_set(err, ERR_SYS, "cannot set up CORS: out of memory");
        }
    }
    free(copy);
    if (rc < 0)
        cors_destroy(&self);
    return self;
}

void cors_destroy(cors_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    for (int i = 0; i < (*self_p)->n; i++)
        free((*self_p)->origins[i]);
    free(*self_p);
    *self_p = NULL;
}

int cors_enabled(const cors_t *self)
{
    return self && (self->any || self->n > 0);
}

/* 1 if origin (len bytes, not NUL-terminated) is allowed. */
static int s_allowed(const cors_t *self, const char *origin, size_t len)
{
    if (!self || !origin || len == 0 || len > 400)
        return 0;
    if (self->any)
        return 1;
    for (int i = 0; i < self->n; i++)
        if (strlen(self->origins[i]) == len && strncasecmp(self->origins[i], origin, len) == 0)
            return 1;
    return 0;
}

/* Adds Access-Control-Allow-Origin (and Vary) for an allowed origin. */
static void s_allow_origin(const cors_t *self, http_resp_t *resp, const char *origin, size_t len)
{
    char value[512];
    if (self->any) {
        http_resp_add_header(resp, "Access-Control-Allow-Origin", "*");
        return;
    }
    snprintf(value, sizeof value, "%.*s", (int)len, origin);
    http_resp_add_header(resp, "Access-Control-Allow-Origin", value);
    http_resp_add_header(resp, "Vary", "Origin");
}

int cors_is_preflight(const http_req_t *req)
{
    return req->method_len == 7 && memcmp(req->method, "OPTIONS", 7) == 0 &&
           http_req_header(req, "origin", NULL) &&
           http_req_header(req, "access-control-request-method", NULL);
}

/* 1 if every comma-separated name in the requested headers is allowed. */
static int s_headers_allowed(const char *h, size_t len)
{
    static const char *const ok[] = {"authorization", "content-type", "accept",
                                     "accept-language", "content-language", NULL};
    size_t i = 0;
    while (i < len) {
        while (i < len && (h[i] == ' ' || h[i] == '\t' || h[i] == ','))
            i++;
        size_t start = i;
        while (i < len && h[i] != ',' && h[i] != ' ' && h[i] != '\t')
            i++;
        if (i == start)
            continue;
        int found = 0;
        for (const char *const *o = ok; *o && !found; o++)
            found = strlen(*o) == i - start && strncasecmp(*o, h + start, i - start) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

void cors_preflight(const cors_t *self, const http_req_t *req, http_resp_t *resp)
{
    size_t olen = 0, mlen = 0, hlen = 0;
    const char *origin = http_req_header(req, "origin", &olen);
    const char *method = http_req_header(req, "access-control-request-method", &mlen);
    const char *headers = http_req_header(req, "access-control-request-headers", &hlen);
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL};
    int method_ok = 0;
    for (const char *const *m = methods; *m && !method_ok; m++)
        method_ok = strlen(*m) == mlen && memcmp(*m, method, mlen) == 0;
    const char *why = !s_allowed(self, origin, olen) ? "origin"
                      : !method_ok                   ? "method"
                      : headers && !s_headers_allowed(headers, hlen) ? "headers"
                                                                     : NULL;
    if (why) {
        char msg[64];
        snprintf(msg, sizeof msg, "CORS preflight refused: %s not allowed", why);
        json_t *body = json_pack("{s:s}", "detail", msg);
        resp->status = 400;
        resp->body = json_dumps(body, JSON_COMPACT);
        resp->body_len = resp->body ? strlen(resp->body) : 0;
        json_decref(body);
        return;
    }
    s_allow_origin(self, resp, origin, olen);
    http_resp_add_header(resp, "Access-Control-Allow-Methods", CORS_METHODS);
    http_resp_add_header(resp, "Access-Control-Allow-Headers", CORS_HEADERS);
    http_resp_add_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
    resp->status = 204;
}

void cors_apply(const cors_t *self, const http_req_t *req, http_resp_t *resp)
{
    size_t olen = 0;
    const char *origin = http_req_header(req, "origin", &olen);
    if (!s_allowed(self, origin, olen))
        return;
    s_allow_origin(self, resp, origin, olen);
    http_resp_add_header(resp, "Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate");
}
