/*
 * metrics_http.c - metrics_serve()/metrics_stop(): GET /metrics from a
 * background thread, on common/http.h's h2o server; see metrics.h.
 *
 * Invariants:
 * - Everything h2o is touched by the scrape thread only: it creates the
 *   server (reporting the bind result back through s_srv.cond), runs it,
 *   destroys it and empties h2o's per-thread buffer cache before it exits.
 *   h2o 2.2 keeps recycled memory in thread-local lists, so another thread
 *   must not run an h2o server in the same process.
 * - http_server_run() polls a volatile sig_atomic_t, which only a signal
 *   handler on the same thread may share safely; so metrics_stop() sets an
 *   atomic flag, and the server's own tick (every S_TICK_MS, on the scrape
 *   thread) copies it into the loop's stop flag.
 * - The scrape thread blocks the asynchronous signals, so SIGTERM and
 *   friends reach the process's main thread and interrupt its loop.
 */
#include "common/metrics.h"

#include "common/log.h"
#include "common/http.h"

#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0
#endif
#include <h2o.h>

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>


enum {
    S_TICK_MS = 50,    /* how soon the scrape thread notices metrics_stop() */
    S_MAX_BODY = 4096, /* scrapes carry no body; a larger one gets 413 */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int running; /* a thread exists (set and cleared by the caller's thread) */
    pthread_t thread;
    /* startup handshake, under mu */
    const char *addr;
    int started;
    int rc;
    err_t err;
    int port;
    atomic_int stop; /* set by metrics_stop, read by the tick */
} s_srv = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* The loop's stop flag, only ever touched on the scrape thread. */
struct s_run {
    volatile sig_atomic_t stop;
};

static void s_text(http_resp_t *resp, int status, const char *text)
{
    resp->status = status;
    resp->content_type = "text/plain; charset=utf-8";
    resp->body = strdup(text);
    resp->body_len = resp->body ? strlen(text) : 0;
}

static void s_handle(void *arg, const http_req_t *req, http_resp_t *resp)
{
    (void)arg;
    if (req->path_len != 8 || memcmp(req->path, "/metrics", 8) != 0) {
        s_text(resp, 404, "not found\n");
        return;
    }
    int get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    int head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    if (!get && !head) {
        s_text(resp, 405, "method not allowed\n");
        http_resp_add_header(resp, "Allow", "GET, HEAD");
        return;
    }
    char *text = metrics_render();
    if (!text) {
        s_text(resp, 500, "cannot render metrics: out of memory\n");
        return;
    }
    resp->content_type = METRICS_CONTENT_TYPE;
    resp->body = text;
    resp->body_len = strlen(text);
}

static void s_tick(void *arg)
{
    struct s_run *run = arg;
    if (atomic_load(&s_srv.stop))
        run->stop = 1;
}

/* h2o 2.2 recycles memory in thread-local lists that nothing frees: pool
 * chunks (lib/common/memory.c's static mempool_allocator, at most 16) and
 * socket buffers (h2o_socket_buffer_prototype). Left there they leak when
 * this thread exits, so take every one out and free it. The pool chunks are
 * reached by pulling 16 fresh chunks through a pool and freeing them by
 * hand: a chunk starts with its next pointer (struct st_h2o_mem_pool_chunk_t
 * in memory.c). */
static void s_drain_h2o_caches(void)
{
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2
    struct s_chunk {
        struct s_chunk *next;
    };
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    for (int i = 0; i < 16 * 4; i++) /* 4 of these fill a 4 KB chunk */
        h2o_mem_alloc_pool(&pool, 1008);
    for (struct s_chunk *c = (struct s_chunk *)pool.chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
#endif
    h2o_mem_recycle_t *r = &h2o_socket_buffer_prototype.allocator;
    while (r->cnt > 0)
        free(h2o_mem_alloc_recycle(r, 1));
}

static void *s_thread(void *arg)
{
    (void)arg;
    err_t err = {0};
    http_server_t *srv = http_server_new(s_srv.addr, S_MAX_BODY, s_handle, NULL, &err);
    pthread_mutex_lock(&s_srv.mu);
    s_srv.started = 1;
    s_srv.rc = srv ? 0 : err.code ? err.code : ERR_SYS;
    s_srv.err = err;
    s_srv.port = srv ? http_server_port(srv) : 0;
    pthread_cond_signal(&s_srv.cond);
    pthread_mutex_unlock(&s_srv.mu);
    if (srv) {
        struct s_run run = {.stop = 0};
        http_server_set_tick(srv, S_TICK_MS, s_tick, &run);
        if (http_server_run(srv, &run.stop) != 0)
            log_error("metrics server failed", "port=%d", s_srv.port);
        http_server_destroy(&srv);
    }
    s_drain_h2o_caches();
    return NULL;
}

/* Starts s_thread with the asynchronous signals blocked; 0 or errno. */
static int s_start_thread(void)
{
    sigset_t all, old;
    sigfillset(&all);
    int sync[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof sync / sizeof sync[0]; i++)
        sigdelset(&all, sync[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s_srv.thread, NULL, s_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int metrics_serve(const char *addr, err_t *err)
{
    assert(addr);
    assert(!s_srv.running && "metrics_serve called while a scrape server runs");
    pthread_mutex_lock(&s_srv.mu);
    s_srv.addr = addr;
    s_srv.started = 0;
    s_srv.port = 0;
    atomic_store(&s_srv.stop, 0);
    int rc = s_start_thread();
    if (rc != 0) {
        pthread_mutex_unlock(&s_srv.mu);
        return err_set(err, ERR_SYS, "cannot serve metrics on '%s': cannot start thread: %s", addr,
                       strerror(rc));
    }
    while (!s_srv.started)
        pthread_cond_wait(&s_srv.cond, &s_srv.mu);
    rc = s_srv.rc;
    if (rc != 0 && err)
        *err = s_srv.err;
    s_srv.addr = NULL;
    s_srv.running = rc == 0;
    pthread_mutex_unlock(&s_srv.mu);
    if (rc != 0) {
        pthread_join(s_srv.thread, NULL);
        return rc;
    }
    log_info("serving metrics", "addr=%s port=%d", addr, s_srv.port);
    return 0;
}

int metrics_serve_port(void)
{
    pthread_mutex_lock(&s_srv.mu);
    int port = s_srv.running ? s_srv.port : 0;
    pthread_mutex_unlock(&s_srv.mu);
    return port;
}

void metrics_stop(void)
{
    if (!s_srv.running)
        return;
    atomic_store(&s_srv.stop, 1);
    pthread_join(s_srv.thread, NULL);
    pthread_mutex_lock(&s_srv.mu);
    s_srv.running = 0;
    s_srv.port = 0;
    pthread_mutex_unlock(&s_srv.mu);
}
