/*
 * http.h - a small HTTP/1.1 server on h2o's evloop with one synchronous handler.
 *
 * Every request (any method, any path) is read in full, then handed to the
 * one handler, which fills an http_resp_t before it returns; the server sends
 * it with a Content-Length. Bodies above max_body get a JSON 413, request
 * heads above the header limit (http_server_set_max_header) a JSON 431;
 * neither reaches the handler. Errors h2o produces itself (413, 400 on
 * broken chunked encoding, 417) are rewritten to {"detail": "..."} JSON; only
 * the 400 for an unparseable request head stays h2o's text/plain (h2o also
 * sends it for more than HTTP_MAX_HEADER_FIELDS header fields or a head over
 * HTTP_MAX_HEADER_HARD bytes). Keep-alive, chunked
 * request bodies and pipelining work; there is no TLS and no HTTP/2.
 *
 * Single-threaded: the handler and the tick run on the thread that called
 * http_server_run(). The gateway's main.c creates one server and runs it.
 */
#ifndef SKED_HTTP_H
#define SKED_HTTP_H

#include "common/err.h"

#include <signal.h>
#include <stddef.h>

typedef struct http_server http_server_t;

/* h2o's own bounds on a request head, which http_server_set_max_header
 * cannot raise: more header fields, or a longer head, get its text/plain 400
 * and the connection is closed. */
#define HTTP_MAX_HEADER_FIELDS 100
#define HTTP_MAX_HEADER_HARD (8192 + 4096 * 100)
/* The largest limit http_server_set_max_header takes. */
#define HTTP_MAX_HEADER_LIMIT (256 * 1024)

/* One request. Every pointer is borrowed and valid only during the handler
 * call; no string is NUL-terminated except remote_addr. */
typedef struct {
    const char *method;
    size_t method_len;
    const char *path; /* raw (not percent-decoded) path without the query string;
                         an absolute-form target "http://h/p" arrives as "/p" */
    size_t path_len;
    const char *query; /* text after '?', NULL/0 if none */
    size_t query_len;
    const char *body; /* whole request body; "" (never NULL) when there is none */
    size_t body_len;
    const char *remote_addr; /* peer IP as text */
    void *h2o_req;           /* opaque, for http_req_header */
} http_req_t;

/* Returns the value of a request header (case-insensitive name) or NULL and
 * sets *len (if not NULL). With several headers of that name, the first one.
 * "Host" works; Content-Length, Transfer-Encoding and Expect are consumed by
 * the server and are not visible here. */
const char *http_req_header(const http_req_t *req, const char *name, size_t *len);

typedef struct {
    int status;               /* default 200; outside 200..599 is sent as 500 */
    const char *content_type; /* default "application/json"; borrowed until the handler returns */
    char *body;               /* malloc'd by the handler; the server frees it (even if not sent) */
    size_t body_len;          /* not sent for HEAD, 204 and 304 */
    struct {
        char name[64];
        char value[512];
    } headers[16];
    int nheaders;
} http_resp_t;

/* Adds a response header (both strings copied). A "Content-Type" header
 * replaces content_type. Returns ERR_INVALID if the table is full, a string
 * does not fit, the name is not a token, the value holds CR/LF, or the name
 * is one the server sets itself (Content-Length, Transfer-Encoding,
 * Connection, Date, Server). */
int http_resp_add_header(http_resp_t *resp, const char *name, const char *value);

/* Fills resp for req. resp arrives zeroed except for the defaults above. */
typedef void (*http_handler_fn)(void *arg, const http_req_t *req, http_resp_t *resp);
typedef void (*http_tick_fn)(void *arg);

/* Binds and listens on addr, "host:port" (IPv4, a name, or [v6]:port; an
 * empty host or "*" means every IPv4 address; port 0 picks a free port, see
 * http_server_port). Ignores SIGPIPE for the process. Returns NULL and fills
 * err on failure: ERR_INVALID for an address that does not parse or resolve,
 * ERR_SYS if it cannot be bound. */
http_server_t *http_server_new(const char *addr, size_t max_body, http_handler_fn handler,
                               void *arg, err_t *err);

/* Refuses requests whose head is larger than max bytes with a JSON 431
 * (Request Header Fields Too Large); the handler never sees them. The head
 * is counted as sent: the request line and every header field as
 * "Name: value" with its CRLF (Content-Length, Transfer-Encoding, Expect
 * and Upgrade, which h2o consumes, are not counted). 0, the default, leaves
 * only h2o's own bounds. Returns ERR_INVALID if max is over
 * HTTP_MAX_HEADER_LIMIT. Call before http_server_run. */
int http_server_set_max_header(http_server_t *srv, size_t max);

/* The bound TCP port. Can't fail. */
int http_server_port(const http_server_t *srv);

/* Calls tick(arg) about every tick_ms milliseconds from the loop (0 = never).
 * Call before http_server_run. */
void http_server_set_tick(http_server_t *srv, int tick_ms, http_tick_fn tick, void *arg);

/* Serves until *stop becomes non-zero (checked at least every 100 ms), then
 * stops accepting, lets in-flight requests finish (idle keep-alive
 * connections are closed at once, the rest get up to 5 s) and disposes the
 * loop's context. Call once. Returns 0, or ERR_SYS if the event loop failed
 * (the shutdown still happens). */
int http_server_run(http_server_t *srv, volatile sig_atomic_t *stop);

/* Closes the listener and any connection and frees everything; NULL-safe,
 * sets *self_p = NULL. */
void http_server_destroy(http_server_t **self_p);

#endif
