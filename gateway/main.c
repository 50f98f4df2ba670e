/*
 * main.c - sked-gateway: the REST API server, and `token` to mint API
 * tokens for operators.
 *
 *   sked-gateway [--config FILE]          serve on SKED_HTTP_ADDR
 *   sked-gateway token --sub NAME [--role admin|user] [--ttl SECONDS]
 */
#include "gateway/gateway.h"

#include "common/log.h"
#include "common/metrics.h"
#include "common/tz.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* Reads a PEM file of at most 16 KiB into buf; its length, or -1. */
static long s_read_pem(const char *path, char *buf, size_t size, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, ERR_INVALID, "cannot read SKED_JWT_PUBLIC_KEY_FILE '%s': %s", path,
                       strerror(errno));
    size_t n = fread(buf, 1, size, f);
    int bad = ferror(f) || n == size;
    fclose(f);
    if (bad)
        return err_set(err, ERR_INVALID, "cannot read SKED_JWT_PUBLIC_KEY_FILE '%s': %s", path,
                       n == size ? "larger than 16 KiB" : "read error");
    return (long)n;
}

/* The token verifier the configuration asks for: RS256 with a public key
 * file, else HS256 with the shared secret; issuer and audience optional. */
static token_verifier_t *s_verifier(const config_t *cfg, err_t *err)
{
    const char *iss = cfg->jwt_issuer[0] ? cfg->jwt_issuer : NULL;
    const char *aud = cfg->jwt_audience[0] ? cfg->jwt_audience : NULL;
    if (cfg->jwt_public_key[0])
        return token_verifier_new_rs256(cfg->jwt_public_key, strlen(cfg->jwt_public_key), iss, aud,
                                        cfg->jwt_leeway_s, err);
    if (cfg->jwt_public_key_file[0]) {
        char pem[16384];
        long n = s_read_pem(cfg->jwt_public_key_file, pem, sizeof pem, err);
        if (n < 0)
            return NULL;
        return token_verifier_new_rs256(pem, (size_t)n, iss, aud, cfg->jwt_leeway_s, err);
    }
    if (!cfg->jwt_secret[0]) {
        err_set(err, ERR_INVALID, "set SKED_JWT_SECRET (HS256) or SKED_JWT_PUBLIC_KEY_FILE (RS256)");
        return NULL;
    }
    return token_verifier_new_hs256(cfg->jwt_secret, strlen(cfg->jwt_secret), iss, aud,
                                    cfg->jwt_leeway_s, err);
}

/* Rate limits, CORS and the OpenAPI document; -1 with err on bad settings. */
static int s_http_extras(gateway_t *gw, err_t *err)
{
    const config_t *cfg = gw->cfg;
    if (cfg->rate_limit > 0) {
        if (cfg->rate_burst < 1)
            return err_set(err, ERR_INVALID, "invalid SKED_RATE_BURST %d: at least 1",
                           cfg->rate_burst);
        gw->limits = ratelimit_new(cfg->rate_limit, cfg->rate_burst, GATEWAY_RATE_KEYS);
        if (!gw->limits)
            return err_set(err, ERR_SYS, "cannot set up rate limits: out of memory");
    }
    if (!(gw->cors = cors_new(cfg->cors_origins, err)))
        return -1;
    if (!(gw->openapi = openapi_load(cfg->openapi_path, err)))
        return -1;
    return 0;
}

static int s_token(const config_t *cfg, char **args)
{
    const char *sub = NULL, *role = "user";
    long ttl = 3600;
    for (int i = 1; args[i]; i++) {
        if (strcmp(args[i], "--sub") == 0 && args[i + 1])
            sub = args[++i];
        else if (strcmp(args[i], "--role") == 0 && args[i + 1])
            role = args[++i];
        else if (strcmp(args[i], "--ttl") == 0 && args[i + 1])
            ttl = strtol(args[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: sked-gateway token --sub NAME [--role admin|user] [--ttl SECONDS]\n");
            return 2;
        }
    }
    if (!sub || !cfg->jwt_secret[0]) {
        fprintf(stderr, "sked-gateway token: --sub and SKED_JWT_SECRET are required\n");
        return 2;
    }
    err_t err = {0};
    char *tok = token_mint_hs256(cfg->jwt_secret, strlen(cfg->jwt_secret), sub, role, ttl, &err);
    if (!tok) {
        fprintf(stderr, "sked-gateway token: %s\n", err.msg);
        return 2;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

int main(int argc, char **argv)
{
    config_t cfg;
    err_t err = {0};
    char **rest = NULL;
    int rc = config_load(&cfg, CONFIG_ROLE_GATEWAY, "sked-gateway", argc, argv, &rest, &err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "sked-gateway: %s\n", err.msg);
        return rc < 0 ? 2 : 0;
    }
    if (rest[0] && strcmp(rest[0], "token") == 0)
        return s_token(&cfg, rest);
    if (rest[0]) {
        fprintf(stderr, "sked-gateway: unknown argument '%s' (try --help)\n", rest[0]);
        return 2;
    }
    config_init_log(&cfg, "gateway");
    zsys_init();
    zsys_handler_set(NULL);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);

    gateway_t gw = {.cfg = &cfg};
    int exit_code = 1;
    api_metrics_init(&gw);
    http_server_t *srv = NULL;
    gw.verifier = s_verifier(&cfg, &err);
    if (!gw.verifier)
        goto out;
    if (s_http_extras(&gw, &err) < 0)
        goto out;
    gw.store = store_new(cfg.mongo_uri, &err);
    if (!gw.store)
        goto out;
    if (gateway_connect_masters(&gw) < 0) {
        err_set(&err, ERR_INVALID, "cannot use SKED_MASTERS '%s'", cfg.masters);
        goto out;
    }
    if (cfg.max_header < 1024 || cfg.max_header > HTTP_MAX_HEADER_LIMIT) {
        err_set(&err, ERR_INVALID, "invalid SKED_MAX_HEADER %ld: use 1024-%d", cfg.max_header,
                HTTP_MAX_HEADER_LIMIT);
        goto out;
    }
    srv = http_server_new(cfg.http_addr, (size_t)cfg.max_body, api_handle, &gw, &err);
    if (!srv)
        goto out;
    http_server_set_max_header(srv, (size_t)cfg.max_header);
    log_info("gateway started", "listen=%s port=%d masters=%s auth=%s rate_limit=%d cors=%s",
             cfg.http_addr, http_server_port(srv), cfg.masters,
             cfg.jwt_public_key_file[0] || cfg.jwt_public_key[0] ? "RS256" : "HS256", cfg.rate_limit,
             cors_enabled(gw.cors) ? "on" : "off");
    exit_code = http_server_run(srv, &s_stop) < 0 ? 1 : 0;
    log_info("gateway stopped", "port=%d", http_server_port(srv));
out:
    if (exit_code && err.msg[0])
        log_error("cannot start", "reason=\"%s\"", err.msg);
    http_server_destroy(&srv);
    for (int i = 0; i < gw.nnotify; i++)
        zsock_destroy(&gw.notify[i]);
    store_destroy(&gw.store);
    token_verifier_destroy(&gw.verifier);
    ratelimit_destroy(&gw.limits);
    cors_destroy(&gw.cors);
    openapi_destroy(&gw.openapi);
    metrics_reset_all();
    tz_cache_clear();
    return exit_code;
}
