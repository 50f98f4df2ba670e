/*
 * http.c - the gateway's HTTP/1.1 server: h2o 2.2 on its own evloop, one
 * synchronous handler; see http.h.
 *
 * Layout: one h2o host with one path "/" whose handler (s_on_req) calls the
 * sked handler and sends its answer with a Content-Length. A filter on that
 * path and on the host's fallback path rewrites every response h2o makes by
 * itself (its 413, 400 on a broken chunked body, 417, 404) into
 * {"detail": "..."} JSON; responses of our own generator pass untouched.
 * (h2o writes the 400 for an unparseable request head straight to the
 * socket, as text/plain; no filter sees it.)
 *
 * Invariants:
 * - A request head over max_header (counted by s_head_size, since h2o 2.2
 *   keeps no raw length) gets a JSON 431 from s_on_req; heads h2o itself
 *   refuses (over H2O_MAX_REQLEN bytes or H2O_MAX_HEADERS fields) get its
 *   text/plain 400, as any unparseable head does.
 * - h2o reads a whole body before calling us. Its limit is max_body + 1, so
 *   h2o refuses bodies that are clearly too large without reading them and
 *   s_on_req refuses the one remaining size; both answers say the same.
 * - Every accepted socket is in srv->conns (an s_conn, freed by the socket's
 *   on_close), so shutdown can close idle keep-alive connections, which h2o
 *   2.2 would otherwise keep for its 10 s request timeout.
 * - h2o_context_dispose and h2o_evloop_destroy assert that no timer is
 *   linked, and every connection holds one while it reads; so the context is
 *   disposed only once no connection is left and no timer is pending. If
 *   that cannot be reached, the server is leaked rather than aborted.
 * - The tick and the stop flag are polled between h2o_evloop_run calls; the
 *   loop never waits longer than S_POLL_MS, so no h2o timer of ours exists.
 *
 * Called by gateway/main.c; single-threaded.
 */
#include "common/http.h"

#include "common/clock.h"
#include "common/log.h"

#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0
#endif
#include <h2o.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(HTTP_MAX_HEADER_FIELDS == H2O_MAX_HEADERS, "h2o's header field count");
_Static_assert(HTTP_MAX_HEADER_HARD == H2O_MAX_REQLEN, "h2o's request head limit");
_Static_assert(HTTP_MAX_HEADER_LIMIT < H2O_MAX_REQLEN, "a limit h2o lets through");

enum {
    S_POLL_MS = 100,     /* longest wait in the loop: bounds stop and tick latency */
    S_GRACE_MS = 5000,   /* in-flight requests get this long at shutdown */
    S_FORCE_MS = 2000,   /* then every socket is shut down and gets this long */
    S_ACCEPT_BATCH = 64, /* accepts per listener wake-up */
    S_DETAIL_MAX = 256,  /* longest h2o error text copied into a JSON detail */
};

/* An accepted connection, so that shutdown can find its socket. */
struct s_conn {
    h2o_linklist_t link;
    h2o_socket_t *sock;
    http_server_t *srv;
    int shut; /* shutdown(2) already called */
};

struct s_handler {
    h2o_handler_t super;
    http_server_t *srv;
};

struct s_filter {
    h2o_filter_t super;
    http_server_t *srv;
};

/* Replaces the body of an h2o-generated response with JSON. */
struct s_json_ostream {
    h2o_ostream_t super;
    http_server_t *srv;
    int done;
};

struct http_server {
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_evloop_t *loop;
    h2o_socket_t *listener;
    int ctx_live;      /* ctx initialised and not disposed */
    int wedged;        /* shutdown could not finish: never free anything */
    int accept_paused; /* out of fds: listener read stopped */
    int64_t accept_paused_at;
    int port;
    size_t max_body;
    size_t max_header; /* 0: h2o's own bounds only */
    http_handler_fn handler;
    void *arg;
    int tick_ms;
    http_tick_fn tick;
    void *tick_arg;
    h2o_linklist_t conns; /* of struct s_conn */
    size_t nconns;
};

/* Marks responses made by this file; anything else came from h2o. */
static h2o_generator_t s_generator = {NULL, NULL};

static const char *s_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    }
    switch (status / 100) {
    case 2: return "Success";
    case 3: return "Redirection";
    case 4: return "Client Error";
    default: return "Server Error";
    }
}

/* RFC 9110 token characters, as allowed in a header name. */
static int s_is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
            return 0;
    }
    return 1;
}

/* A header value must not end the header line early. */
static int s_is_field_value(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

static int s_is_managed_header(const char *name)
{
    static const char *const managed[] = {"content-length", "transfer-encoding", "connection",
                                          "date", "server"};
    for (size_t i = 0; i < sizeof managed / sizeof managed[0]; i++)
        if (strcasecmp(name, managed[i]) == 0)
            return 1;
    return 0;
}

int http_resp_add_header(http_resp_t *resp, const char *name, const char *value)
{
    assert(resp && name && value);
    if (resp->nheaders < 0 || resp->nheaders >= (int)(sizeof resp->headers / sizeof resp->headers[0]))
        return ERR_INVALID;
    if (strlen(name) >= sizeof resp->headers[0].name || strlen(value) >= sizeof resp->headers[0].value)
        return ERR_INVALID;
    if (!s_is_token(name) || !s_is_field_value(value) || s_is_managed_header(name))
        return ERR_INVALID;
    strcpy(resp->headers[resp->nheaders].name, name);
    strcpy(resp->headers[resp->nheaders].value, value);
    resp->nheaders++;
    return 0;
}

const char *http_req_header(const http_req_t *req, const char *name, size_t *len)
{
    h2o_req_t *hreq = req->h2o_req;
    size_t n = strlen(name);
    if (len)
        *len = 0;
    if (n == 4 && strncasecmp(name, "host", 4) == 0) {
        /* h2o moves Host into authority, or puts the host's name there if absent */
        if (!hreq->input.authority.base ||
            hreq->input.authority.base == hreq->hostconf->authority.hostport.base)
            return NULL;
        if (len)
            *len = hreq->input.authority.len;
        return hreq->input.authority.base;
    }
    for (size_t i = 0; i < hreq->headers.size; i++) {
        const h2o_header_t *h = hreq->headers.entries + i;
        if (h->name->len == n && strncasecmp(h->name->base, name, n) == 0) {
            if (len)
                *len = h->value.len;
            return h->value.base;
        }
    }
    return NULL;
}

static int s_is_head(const h2o_req_t *req)
{
    return h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
}

static void s_free_body(void *slot)
{
    free(*(char **)slot);
}

/* Copies resp's headers into the h2o response; invalid ones (the struct is
 * writable without http_resp_add_header) are dropped with a warning.
 * Returns whether a Content-Type header was among them. */
static int s_copy_headers(h2o_req_t *req, const http_resp_t *resp)
{
    int has_type = 0, n = resp->nheaders;
    if (n < 0 || n > (int)(sizeof resp->headers / sizeof resp->headers[0]))
        n = 0;
    for (int i = 0; i < n; i++) {
        const char *name = resp->headers[i].name, *value = resp->headers[i].value;
        if (!memchr(name, 0, sizeof resp->headers[i].name) ||
            !memchr(value, 0, sizeof resp->headers[i].value) || !s_is_token(name) ||
            !s_is_field_value(value) || s_is_managed_header(name)) {
            log_warn("dropped invalid response header", "index=%d", i);
            continue;
        }
        has_type |= strcasecmp(name, "content-type") == 0;
        h2o_iovec_t nv = h2o_strdup(&req->pool, name, SIZE_MAX);
        h2o_iovec_t vv = h2o_strdup(&req->pool, value, SIZE_MAX);
        h2o_add_header_by_str(&req->pool, &req->res.headers, nv.base, nv.len, 0, NULL, vv.base,
                              vv.len);
    }
    return has_type;
}

/* Sends resp as the whole response and takes its body. */
static void s_send(h2o_req_t *req, http_resp_t *resp)
{
    char **slot = h2o_mem_alloc_shared(&req->pool, sizeof *slot, s_free_body);
    *slot = resp->body; /* freed when the request's pool is cleared */
    h2o_iovec_t body = h2o_iovec_init(resp->body ? resp->body : "", resp->body ? resp->body_len : 0);

    if (!s_copy_headers(req, resp)) {
        const char *type = resp->content_type ? resp->content_type : "application/json";
        if (!s_is_field_value(type)) {
            log_warn("dropped invalid response content type", "status=%d", resp->status);
            type = "application/json";
        }
        h2o_iovec_t tv = h2o_strdup(&req->pool, type, SIZE_MAX);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, "Content-Type", tv.base,
                       tv.len);
    }
    if (req->conn->ctx->shutdown_requested)
        req->http1_is_persistent = 0; /* the request was read before shutdown began */
    req->res.status = resp->status;
    req->res.reason = s_reason(resp->status);
    int bodyless = resp->status == 204 || resp->status == 304;
    /* SIZE_MAX: no Content-Length line, which 204 and 304 must not carry */
    req->res.content_length = bodyless ? SIZE_MAX : body.len;
    h2o_start_response(req, &s_generator);
    if (bodyless || s_is_head(req))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

/* Sends {"detail": detail} (detail must need no JSON escaping). */
static void s_send_detail(h2o_req_t *req, int status, const char *detail)
{
    http_resp_t resp = {.status = status, .content_type = "application/json"};
    size_t cap = strlen(detail) + 16;
    resp.body = malloc(cap);
    if (resp.body)
        resp.body_len = (size_t)snprintf(resp.body, cap, "{\"detail\":\"%s\"}", detail);
    s_send(req, &resp);
}

static void s_too_large_text(const http_server_t *srv, char *buf, size_t size)
{
    snprintf(buf, size, "request body too large (limit %zu bytes)", srv->max_body);
}

/* Writes the peer's address as text into buf; "" if unknown. */
static void s_peer_addr(h2o_req_t *req, char *buf, size_t size)
{
    struct sockaddr_storage ss;
    buf[0] = '\0';
    socklen_t n = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (n == 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)size);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)size);
}

/* Drops "scheme://authority" from an absolute-form request target (RFC 9112
 * 3.2.2), which h2o 2.2 passes on as the path. */
static h2o_iovec_t s_origin_form(h2o_iovec_t t)
{
    if (t.len == 0 || t.base[0] == '/')
        return t;
    size_t at = h2o_strstr(t.base, t.len, H2O_STRLIT("://"));
    if (at == SIZE_MAX)
        return t; /* "*" or something odd: the handler sees it as is */
    const char *end = t.base + t.len, *p = t.base + at + 3;
    while (p < end && *p != '/' && *p != '?')
        p++;
    return h2o_iovec_init(p, (size_t)(end - p));
}

/* The size of req's head as it was sent: "METHOD target HTTP/1.x" and
 * each "Name: value" with its CRLF, Host included. h2o 2.2 keeps neither
 * the raw head nor its length for the handler, so it is added up here. */
static size_t s_head_size(const h2o_req_t *req)
{
    size_t n = req->input.method.len + 1 + req->input.path.len + 1 + sizeof "HTTP/1.1\r\n" - 1;
    const char *host = req->input.authority.base;
    if (host && host != req->hostconf->authority.hostport.base) /* else h2o filled it in */
        n += sizeof "Host: \r\n" - 1 + req->input.authority.len;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + 4 + req->headers.entries[i].value.len;
    return n + 2; /* the empty line */
}

static int s_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_server_t *srv = ((struct s_handler *)self)->srv;
    char addr[INET6_ADDRSTRLEN];
    s_peer_addr(req, addr, sizeof addr);

    size_t head = s_head_size(req);
    if (srv->max_header && head > srv->max_header) {
        char detail[128];
        snprintf(detail, sizeof detail, "request header fields too large (limit %zu bytes)",
                 srv->max_header);
        log_debug("http request refused", "remote=%s status=431 head_bytes=%zu", addr, head);
        req->http1_is_persistent = 0; /* a client this far off is not worth a keep-alive */
        s_send_detail(req, 431, detail);
        return 0;
    }

    if (req->entity.len > srv->max_body) {
        char detail[128];
        s_too_large_text(srv, detail, sizeof detail);
        log_debug("http request refused", "remote=%s status=413 bytes=%zu", addr, req->entity.len);
        s_send_detail(req, 413, detail);
        return 0;
    }

    h2o_iovec_t target = s_origin_form(req->path);
    const char *path = target.base, *q = memchr(path, '?', target.len);
    size_t path_len = q ? (size_t)(q - path) : target.len;
    http_req_t r = {
        .method = req->method.base,
        .method_len = req->method.len,
        .path = path_len ? path : "/",
        .path_len = path_len ? path_len : 1,
        .query = q ? q + 1 : NULL,
        .query_len = q ? target.len - path_len - 1 : 0,
        .body = req->entity.base ? req->entity.base : "",
        .body_len = req->entity.base ? req->entity.len : 0,
        .remote_addr = addr,
        .h2o_req = req,
    };
    http_resp_t resp;
    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    resp.content_type = "application/json";

    srv->handler(srv->arg, &r, &resp);

    if (resp.status < 200 || resp.status > 599) {
        log_error("handler returned an invalid status", "status=%d path=%.*s", resp.status,
                  (int)r.path_len, r.path);
        free(resp.body);
        s_send_detail(req, 500, "internal error");
        return 0;
    }
    log_debug("http request", "method=%.*s path=%.*s status=%d bytes=%zu remote=%s",
              (int)r.method_len, r.method, (int)r.path_len, r.path, resp.status, resp.body_len, addr);
    s_send(req, &resp);
    return 0;
}

/* Appends s[0..n) to out as the inside of a JSON string; returns the new length. */
static size_t s_json_escape(char *out, size_t len, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[len++] = '\\';
            out[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)sprintf(out + len, "\\u%04x", c);
        } else {
            out[len++] = (char)c;
        }
    }
    return len;
}

static void s_json_do_send(h2o_ostream_t *ostr, h2o_req_t *req, h2o_iovec_t *bufs, size_t nbufs,
                           h2o_send_state_t state)
{
    struct s_json_ostream *self = (struct s_json_ostream *)ostr;
    if (self->done) {
        h2o_ostream_send_next(&self->super, req, NULL, 0, state);
        return;
    }
    self->done = 1;

    char text[S_DETAIL_MAX];
    size_t tlen = 0;
    if (req->res.status == 413) {
        s_too_large_text(self->srv, text, sizeof text);
        tlen = strlen(text);
    } else {
        for (size_t i = 0; i < nbufs && tlen < sizeof text; i++) {
            size_t n = bufs[i].len < sizeof text - tlen ? bufs[i].len : sizeof text - tlen;
            memcpy(text + tlen, bufs[i].base, n);
            tlen += n;
        }
        if (tlen == 0) {
            tlen = strlen(req->res.reason);
            tlen = tlen < sizeof text ? tlen : sizeof text - 1;
            memcpy(text, req->res.reason, tlen);
        }
    }
    char *json = h2o_mem_alloc_pool(&req->pool, tlen * 6 + 16);
    size_t len = (size_t)sprintf(json, "{\"detail\":\"");
    len = s_json_escape(json, len, text, tlen);
    len += (size_t)sprintf(json + len, "\"}");

    log_debug("http error from h2o", "status=%d", req->res.status);
    req->res.reason = s_reason(req->res.status); /* h2o says "Request Entity Too Large" */
    req->res.content_length = len;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   H2O_STRLIT("application/json"), 1);
    h2o_iovec_t out = h2o_iovec_init(json, len);
    h2o_ostream_send_next(&self->super, req, &out, s_is_head(req) ? 0 : 1, state);
}

static void s_json_on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    if (req->_generator != &s_generator) {
        struct s_json_ostream *ostr =
            (struct s_json_ostream *)h2o_add_ostream(req, sizeof *ostr, slot);
        ostr->super.do_send = s_json_do_send;
        ostr->srv = ((struct s_filter *)self)->srv;
        ostr->done = 0;
        slot = &ostr->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

static void s_add_json_filter(http_server_t *srv, h2o_pathconf_t *pathconf)
{
    struct s_filter *f = (struct s_filter *)h2o_create_filter(pathconf, sizeof *f);
    f->super.on_setup_ostream = s_json_on_setup_ostream;
    f->srv = srv;
}

static void s_on_conn_close(void *data)
{
    struct s_conn *c = data;
    h2o_linklist_unlink(&c->link);
    c->srv->nconns--;
    free(c);
}

static void s_on_accept(h2o_socket_t *listener, const char *err)
{
    http_server_t *srv = listener->data;
    if (err)
        return;
    for (int i = 0; i < S_ACCEPT_BATCH; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the listener stays readable: stop polling it for a while */
                log_warn("cannot accept connection, pausing", "error=\"%s\" conns=%zu",
                         strerror(errno), srv->nconns);
                h2o_socket_read_stop(listener);
                srv->accept_paused = 1;
                srv->accept_paused_at = clock_mono_ms();
            }
            return;
        }
        struct s_conn *c = calloc(1, sizeof *c);
        if (!c) {
            h2o_socket_close(sock);
            continue;
        }
        c->sock = sock;
        c->srv = srv;
        h2o_linklist_insert(&srv->conns, &c->link);
        srv->nconns++;
        sock->on_close.cb = s_on_conn_close;
        sock->on_close.data = c;
        h2o_accept(&srv->accept_ctx, sock);
    }
}

/* Splits "host:port" / "[v6]:port"; host may come back empty. */
static int s_split_addr(const char *addr, char *host, size_t hsize, char *port, size_t psize)
{
    const char *h = addr, *colon;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        h = addr + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - addr);
    }
    const char *p = colon + 1;
    size_t plen = strlen(p);
    if (hlen >= hsize || plen == 0 || plen >= psize || strspn(p, "0123456789") != plen ||
        strtol(p, NULL, 10) > 65535)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, p, plen + 1);
    return 0;
}

/* Returns a listening socket for addr, or a negative ERR_* code. */
static int s_listen(const char *addr, err_t *err)
{
    char host[256], port[8];
    if (s_split_addr(addr, host, sizeof host, port, sizeof port) != 0)
        return err_set(err, ERR_INVALID, "cannot parse listen address '%s': want host:port", addr);
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        strcpy(host, "0.0.0.0");

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        return err_set(err, ERR_INVALID, "cannot resolve listen address '%s': %s", addr,
                       gai_strerror(rc));
    int fd = -1, saved = 0, on = 1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return err_set(err, ERR_SYS, "cannot listen on '%s': %s", addr, strerror(saved));
    return fd;
}

static int s_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t n = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &n) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static void s_configure(http_server_t *srv)
{
    h2o_config_init(&srv->config);
    srv->config.server_name = h2o_iovec_init(H2O_STRLIT("sked"));
    srv->config.max_request_entity_size = srv->max_body < SIZE_MAX ? srv->max_body + 1 : SIZE_MAX;
    srv->config.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *host =
        h2o_config_register_host(&srv->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    struct s_handler *h = (struct s_handler *)h2o_create_handler(path, sizeof *h);
    h->super.on_req = s_on_req;
    h->srv = srv;
    s_add_json_filter(srv, path);
    s_add_json_filter(srv, &host->fallback_path);
}

http_server_t *http_server_new(const char *addr, size_t max_body, http_handler_fn handler,
                               void *arg, err_t *err)
{
    assert(addr && handler);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);

    int fd = s_listen(addr, err);
    if (fd < 0)
        return NULL;
    http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) {
        close(fd);
        err_set(err, ERR_SYS, "cannot allocate http server for '%s': out of memory", addr);
        return NULL;
    }
    srv->max_body = max_body;
    srv->handler = handler;
    srv->arg = arg;
    srv->port = s_bound_port(fd);
    h2o_linklist_init_anchor(&srv->conns);
    s_configure(srv);

    srv->loop = h2o_evloop_create();
    h2o_context_init(&srv->ctx, srv->loop, &srv->config);
    srv->ctx_live = 1;
    srv->accept_ctx.ctx = &srv->ctx;
    srv->accept_ctx.hosts = srv->config.hosts;
    srv->listener = h2o_evloop_socket_create(srv->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    srv->listener->data = srv;
    h2o_socket_read_start(srv->listener, s_on_accept);
    log_info("http server listening", "addr=%s port=%d max_body=%zu", addr, srv->port, max_body);
    return srv;
}

int http_server_set_max_header(http_server_t *srv, size_t max)
{
    assert(srv);
    if (max > HTTP_MAX_HEADER_LIMIT)
        return ERR_INVALID;
    srv->max_header = max;
    return 0;
}

int http_server_port(const http_server_t *srv)
{
    return srv->port;
}

void http_server_set_tick(http_server_t *srv, int tick_ms, http_tick_fn tick, void *arg)
{
    srv->tick_ms = tick && tick_ms > 0 ? tick_ms : 0;
    srv->tick = tick;
    srv->tick_arg = arg;
}

/* Runs the loop once for at most wait_ms; 0, or -1 on a failure other than EINTR. */
static int s_run_once(http_server_t *srv, int32_t wait_ms)
{
    if (h2o_evloop_run(srv->loop, wait_ms) != 0 && errno != EINTR) {
        log_error("http event loop failed", "error=\"%s\"", strerror(errno));
        return -1;
    }
    return 0;
}

/* Shuts down (both ways) the sockets of connections that are idle (waiting
 * for a request with nothing buffered) or, with all, of every connection;
 * h2o then sees EOF or EPIPE and closes them through its own paths. */
static void s_shut_conns(http_server_t *srv, int all)
{
    for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
        struct s_conn *c = H2O_STRUCT_FROM_MEMBER(struct s_conn, link, n);
        int idle = h2o_socket_is_reading(c->sock) && !h2o_socket_is_writing(c->sock) &&
                   c->sock->input->size == 0;
        if (!c->shut && (all || idle)) {
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
            c->shut = 1;
        }
    }
}

static int s_timers_pending(h2o_context_t *ctx)
{
    h2o_timeout_t *t[] = {&ctx->zero_timeout,          &ctx->one_sec_timeout,
                          &ctx->hundred_ms_timeout,    &ctx->handshake_timeout,
                          &ctx->http1.req_timeout,     &ctx->http2.idle_timeout,
                          &ctx->http2.graceful_shutdown_timeout, &ctx->proxy.io_timeout};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!h2o_linklist_is_empty(&t[i]->_entries))
            return 1;
    return 0;
}

/* Closes the listener and every connection, then disposes the context. */
static void s_stop(http_server_t *srv)
{
    if (srv->listener) {
        h2o_socket_read_stop(srv->listener);
        h2o_socket_close(srv->listener);
        srv->listener = NULL;
    }
    /* Answers from now on carry Connection: close. Not h2o_context_request_
     * shutdown(): its HTTP/2 part links a 1 s timer (one_sec_timeout) that
     * would have to expire before the context may be disposed, and HTTP/2 is
     * off here. */
    srv->ctx.shutdown_requested = 1;
    int64_t start = clock_mono_ms();
    while (srv->nconns > 0 && clock_mono_ms() - start < S_GRACE_MS) {
        s_shut_conns(srv, 0);
        s_run_once(srv, 10);
    }
    if (srv->nconns > 0) {
        log_warn("closing busy connections at shutdown", "conns=%zu", srv->nconns);
        s_shut_conns(srv, 1);
        start = clock_mono_ms();
        while (srv->nconns > 0 && clock_mono_ms() - start < S_FORCE_MS)
            s_run_once(srv, 10);
    }
    /* let disposed sockets and zero-delay callbacks run */
    for (int i = 0; i < 100 && (i == 0 || s_timers_pending(&srv->ctx)); i++)
        s_run_once(srv, 0);
    if (srv->nconns > 0 || s_timers_pending(&srv->ctx)) {
        log_error("http server cannot shut down cleanly, leaking it", "conns=%zu", srv->nconns);
        srv->wedged = 1;
        return;
    }
    h2o_multithread_queue_t *queue = srv->ctx.queue;
    h2o_context_dispose(&srv->ctx);
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2 && !H2O_USE_LIBUV
    free(queue); /* 2.2's evloop h2o_multithread_destroy_queue closes it but never frees it */
#else
    (void)queue;
#endif
    srv->ctx_live = 0;
}

int http_server_run(http_server_t *srv, volatile sig_atomic_t *stop)
{
    assert(srv && stop && srv->ctx_live);
    int rc = 0;
    int64_t next_tick = srv->tick ? clock_mono_ms() + srv->tick_ms : INT64_MAX;
    while (!*stop) {
        int64_t now = clock_mono_ms(), wait = S_POLL_MS;
        if (srv->tick && next_tick - now < wait)
            wait = next_tick > now ? next_tick - now : 0;
        if (s_run_once(srv, (int32_t)wait) != 0) {
            rc = ERR_SYS;
            break;
        }
        now = clock_mono_ms();
        if (srv->accept_paused && now - srv->accept_paused_at >= S_POLL_MS) {
            srv->accept_paused = 0;
            h2o_socket_read_start(srv->listener, s_on_accept);
        }
        if (srv->tick && now >= next_tick) {
            srv->tick(srv->tick_arg);
            next_tick = clock_mono_ms() + srv->tick_ms;
        }
    }
    log_info("http server stopping", "conns=%zu", srv->nconns);
    s_stop(srv);
    return rc;
}

/* h2o 2.2's h2o_evloop_destroy frees the loop but leaves its epoll fd open;
 * the loop is struct { h2o_evloop_t super; int ep; } (lib/common/socket/
 * evloop/epoll.c.h), so close that fd if it really is an epoll instance. */
static void s_evloop_destroy(h2o_evloop_t *loop)
{
#if defined(__linux__) && H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2
    struct s_epoll_loop {
        h2o_evloop_t super;
        int ep;
    };
    int ep = ((struct s_epoll_loop *)loop)->ep;
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", ep);
    ssize_t n = ep >= 0 ? readlink(path, target, sizeof target - 1) : -1;
    h2o_evloop_destroy(loop);
    if (n > 0) {
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[eventpoll]") == 0)
            close(ep);
    }
#else
    h2o_evloop_destroy(loop);
#endif
}

void http_server_destroy(http_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    http_server_t *srv = *self_p;
    *self_p = NULL;
    if (srv->ctx_live && !srv->wedged)
        s_stop(srv);
    if (srv->wedged)
        return; /* connections still point into srv: leaking beats crashing */
    s_evloop_destroy(srv->loop);
    h2o_config_dispose(&srv->config);
    free(srv);
}
