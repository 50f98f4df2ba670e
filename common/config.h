/*
 * config.h - process configuration from a file, the environment and flags.
 *
 * Every setting has one name, SKED_*, used both as the environment variable
 * and as the key in a config file of `KEY=VALUE` lines. Precedence, lowest
 * first: built-in default, config file (--config FILE or SKED_CONFIG), the
 * environment. The table in config.c is the reference; `--help` prints the
 * settings a role reads.
 */
#ifndef SKED_CONFIG_H
#define SKED_CONFIG_H

#include "common/err.h"

#include <stddef.h>

#define CONFIG_ROLE_GATEWAY 1
#define CONFIG_ROLE_MASTER 2
#define CONFIG_ROLE_WORKER 4

typedef struct {
    char mongo_uri[512];
    char http_addr[128];
    char jwt_secret[512];
    char master_bind[256];
    char masters[2048];
    char node_id[128];
    char log_level[16];
    char log_format[16];
    char task_types[512];
    char worker_config[512];
    char task_limits[512];
    char kill_grace_ms[16];
    int lease_ttl_ms;
    int partitions;
    int worker_slots;
    int heartbeat_ms;
    int worker_timeout_ms;
    int drain_timeout_ms;
    long max_body;
    long max_header;
    /* gateway: auth, rate limits, CORS, OpenAPI document */
    char jwt_public_key_file[512];
    char jwt_public_key[8192];
    int health_lag_ms;
    char jwt_issuer[256];
    char jwt_audience[256];
    int jwt_leeway_s;
    int rate_limit;
    int rate_burst;
    char cors_origins[2048];
    char openapi_path[512];
    /* master: metrics scrape address, failure alerts */
    char metrics_addr[128];
    char alert_url[1024];
    char alert_headers[2048];
    char alert_events[128];
    int alert_lag_ms;
    int alert_lag_for_ms;
    int alert_unowned_ms;
    int job_retention_s;
    int fire_ahead_ms;
    int state_save_ms;
    int snapshot_min;
    int snapshot_every_s;
    /* master: per-trigger notification webhooks */
    int notify_tries;
    int notify_backoff_ms;
} config_t;

/* Fills cfg for a role (CONFIG_ROLE_*). Returns 0, 1 when --help was given
 * (usage already printed to stdout), or a negative code with a message.
 * Flags it understands: --config FILE, --help. Other arguments are left
 * in *rest (argv order, NULL-terminated, pointing into argv). */
int config_load(config_t *cfg, int role, const char *prog, int argc, char **argv,
                char ***rest, err_t *err);

/* Sets up logging from cfg for a role name. Can't fail. */
void config_init_log(const config_t *cfg, const char *role);

#endif
