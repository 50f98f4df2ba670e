/*
 * config.c - the settings table and the file/environment loader.
 *
 * The table below is the single source of the configuration reference:
 * name, default, which roles read it, and its help line.
 */
#include "common/config.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { T_STR, T_INT, T_LONG };

typedef struct {
    const char *name;
    int type;
    size_t offset;
    size_t size;
    const char *def;
    int roles;
    const char *help;
} setting_t;

#define G CONFIG_ROLE_GATEWAY
#define M CONFIG_ROLE_MASTER
#define W CONFIG_ROLE_WORKER
#define STR(f) T_STR, offsetof(config_t, f), sizeof(((config_t *)0)->f)
#define INT(f) T_INT, offsetof(config_t, f), sizeof(int)
#define LONG(f) T_LONG, offsetof(config_t, f), sizeof(long)

static const setting_t s_settings[] = {
    {"SKED_MONGO_URI", STR(mongo_uri), "mongodb://127.0.0.1:27017/sked", G | M,
     "MongoDB connection string; the database name in its path is used (default sked)"},
    {"SKED_HTTP_ADDR", STR(http_addr), "127.0.0.1:8080", G, "gateway HTTP listen address host:port"},
    {"SKED_JWT_SECRET", STR(jwt_secret), "", G,
     "HS256 secret for API tokens (required unless SKED_JWT_PUBLIC_KEY_FILE is set; 32+ random "
     "bytes recommended)"},
    {"SKED_MASTER_BIND", STR(master_bind), "tcp://127.0.0.1:7601", M,
     "ZeroMQ endpoint this master binds for workers and gateways"},
    {"SKED_MASTERS", STR(masters), "tcp://127.0.0.1:7601", G | W,
     "comma-separated ZeroMQ endpoints of every master"},
    {"SKED_NODE_ID", STR(node_id), "", G | M | W,
     "unique name of this process in the cluster (default: ROLE-HOSTNAME-PID)"},
    {"SKED_LOG_LEVEL", STR(log_level), "info", G | M | W, "debug, info, warn or error"},
    {"SKED_LOG_FORMAT", STR(log_format), "text", G | M | W, "text or json"},
    {"SKED_LEASE_TTL_MS", INT(lease_ttl_ms), "10000", M,
     "partition lease time-to-live; renewed every third of it"},
    {"SKED_PARTITIONS", INT(partitions), "64", G | M,
     "number of trigger partitions (must match across the cluster)"},
    {"SKED_WORKER_SLOTS", INT(worker_slots), "64", W, "jobs a worker runs at once"},
    {"SKED_TASK_TYPES", STR(task_types), "noop,sleep,echo,fail", W,
     "comma-separated task types this worker serves (built-ins: noop, sleep, echo, fail)"},
    {"SKED_TASK_LIMITS", STR(task_limits), "", M,
     "most jobs of a task type running at once across the cluster, as type=N,type2=M "
     "(same on every master; empty: no limits)"},
    {"SKED_WORKER_CONFIG", STR(worker_config), "", W,
     "JSON file mapping task types to handlers, limits and labels (empty: SKED_TASK_TYPES "
     "built-ins); see deploy/worker.conf.example"},
    {"SKED_KILL_GRACE_MS", STR(kill_grace_ms), "", W,
     "SIGTERM to SIGKILL delay in ms when a job is timed out, cancelled or shut down "
     "(empty: the worker config file's kill_grace_ms, else 5000)"},
    {"SKED_HEARTBEAT_MS", INT(heartbeat_ms), "1000", M | W,
     "worker heartbeat period and master membership refresh period"},
    {"SKED_WORKER_TIMEOUT_MS", INT(worker_timeout_ms), "5000", M,
     "a worker silent this long is gone; its running jobs become lost"},
    {"SKED_DRAIN_TIMEOUT_MS", INT(drain_timeout_ms), "30000", W,
     "on SIGTERM a worker waits this long for running jobs before exiting"},
    {"SKED_MAX_BODY", LONG(max_body), "1048576", G, "largest accepted request body in bytes"},
    {"SKED_MAX_HEADER", LONG(max_header), "16384", G,
     "largest accepted request head (request line and header fields) in bytes, 1024-262144; "
     "larger: 431"},
    {"SKED_JWT_PUBLIC_KEY_FILE", STR(jwt_public_key_file), "", G,
     "PEM file with an RSA public key: tokens are then RS256, verified with it, and "
     "SKED_JWT_SECRET is not used"},
    {"SKED_HEALTH_LAG_MS", INT(health_lag_ms), "5000", G,
     "health reports degraded when a master's fire lag in the last minute exceeds this"},
    {"SKED_JWT_PUBLIC_KEY", STR(jwt_public_key), "", G,
     "the RSA public key itself, PEM text (instead of SKED_JWT_PUBLIC_KEY_FILE); RS256"},
    {"SKED_JWT_ISSUER", STR(jwt_issuer), "", G, "required token \"iss\" (empty: not checked)"},
    {"SKED_JWT_AUDIENCE", STR(jwt_audience), "", G,
     "required token \"aud\" (string or array holding it; empty: not checked)"},
    {"SKED_JWT_LEEWAY", INT(jwt_leeway_s), "30", G, "clock skew allowed on exp and nbf, seconds"},
    {"SKED_RATE_LIMIT", INT(rate_limit), "50", G,
     "requests per second per user (per client IP without a valid token); 0 disables"},
    {"SKED_RATE_BURST", INT(rate_burst), "100", G, "token bucket size of SKED_RATE_LIMIT"},
    {"SKED_CORS_ORIGINS", STR(cors_origins), "", G,
     "comma-separated origins allowed by CORS, or *; empty: no CORS headers"},
    {"SKED_OPENAPI_PATH", STR(openapi_path), "docs/openapi/scheduler_openapi.json", G,
     "OpenAPI document served under /docs/openapi/ (relative: to the working directory, "
     "else to the binary's directory and its parents)"},
    {"SKED_METRICS_ADDR", STR(metrics_addr), "", M | W,
     "host:port where GET /metrics serves Prometheus metrics (empty: not served)"},
    {"SKED_ALERT_URL", STR(alert_url), "", M,
     "webhook (http or https) that alert events are POSTed to as JSON (empty: no alerts)"},
    {"SKED_ALERT_HEADERS", STR(alert_headers), "", M,
     "extra headers of alert POSTs, \"Name: value\" items separated by newlines or ';'"},
    {"SKED_ALERT_EVENTS", STR(alert_events), "job_failed,fire_lag_high,partitions_unowned", M,
     "comma list of alert events to send: job_failed, fire_lag_high, fire_skipped, "
     "partitions_unowned"},
    {"SKED_ALERT_LAG_MS", INT(alert_lag_ms), "5000", M,
     "fire lag above which a fire_lag_high alert is sent (at most once a minute); 0 disables"},
    {"SKED_ALERT_LAG_FOR_MS", INT(alert_lag_for_ms), "0", M,
     "fire_lag_high only once fires have started late (above SKED_ALERT_LAG_MS) for this long, ms"},
    {"SKED_ALERT_UNOWNED_MS", INT(alert_unowned_ms), "30000", M,
     "partitions_unowned alert after a partition has had no live master for this long, ms"},
    {"SKED_NOTIFY_TRIES", INT(notify_tries), "5", M,
     "delivery attempts of a trigger's notification webhook before it is recorded failed"},
    {"SKED_NOTIFY_BACKOFF_MS", INT(notify_backoff_ms), "1000", M,
     "wait before the first retry of a notification webhook; doubles, at most 60 s"},
    {"SKED_FIRE_AHEAD_MS", INT(fire_ahead_ms), "500", M,
     "a fire is claimed and sent to its worker this long before its time, and started on "
     "time there; 0 claims at the time"},
    {"SKED_STATE_SAVE_MS", INT(state_save_ms), "2000", M,
     "a trigger's state (how far it has fired) is saved this long after its fire while the "
     "master is idle, once for the fires in between; at least 5000 while it is busy; 0 saves "
     "at once"},
    {"SKED_SNAPSHOT_MIN", INT(snapshot_min), "10000", M,
     "a master holding at least this many triggers writes each partition's schedule to the "
     "store when it gives the partition up gracefully, and the next holder restores it "
     "instead of reading every trigger; 0: always"},
    {"SKED_SNAPSHOT_EVERY_S", INT(snapshot_every_s), "300", M,
     "such a master also writes each partition's snapshot this often while it holds it, so "
     "that the partition's next holder restores it after this one died too (re-reading the "
     "triggers that may have fired since); 0: only when giving partitions up"},
    {"SKED_JOB_RETENTION_S", INT(job_retention_s), "604800", M,
     "final jobs finished longer ago than this many seconds are deleted; 0 keeps every job"},
};
#define NSETTINGS (sizeof s_settings / sizeof s_settings[0])

static int s_set(config_t *cfg, const setting_t *s, const char *value, const char *origin,
                 err_t *err)
{
    char *field = (char *)cfg + s->offset;
    if (s->type == T_STR) {
        if (strlen(value) >= s->size)
            return err_set(err, ERR_INVALID, "cannot set %s from %s: longer than %zu bytes",
                           s->name, origin, s->size - 1);
        memcpy(field, value, strlen(value) + 1);
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end != '\0' || v < 0 || (s->type == T_INT && v > 1000000000))
        return err_set(err, ERR_INVALID, "cannot set %s from %s: '%s' is not a valid number",
                       s->name, origin, value);
    if (s->type == T_INT)
        *(int *)field = (int)v;
    else
        *(long *)field = v;
    return 0;
}

static const setting_t *s_find(const char *name)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strcmp(s_settings[i].name, name) == 0)
            return &s_settings[i];
    return NULL;
}

static int s_load_file(config_t *cfg, const char *path, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, ERR_INVALID, "cannot open config file '%s': %s", path,
                       strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\0')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            rc = err_set(err, ERR_INVALID, "cannot parse config file '%s' line %d: expected KEY=VALUE",
                         path, lineno);
            break;
        }
        *eq = '\0';
        char *key = p, *kend = eq;
        while (kend > key && (kend[-1] == ' ' || kend[-1] == '\t'))
            *--kend = '\0';
        char *value = eq + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        const setting_t *s = s_find(key);
        if (!s) {
            rc = err_set(err, ERR_INVALID, "cannot parse config file '%s' line %d: unknown setting '%s'",
                         path, lineno, key);
            break;
        }
        char origin[600];
        snprintf(origin, sizeof origin, "%s line %d", path, lineno);
        rc = s_set(cfg, s, value, origin, err);
    }
    fclose(f);
    return rc;
}

static void s_usage(const char *prog, int role)
{
    printf("usage: %s [--config FILE] [--help]\n\n"
           "Settings come from the environment or from a config file of KEY=VALUE lines\n"
           "(--config FILE or SKED_CONFIG); the environment wins.\n\n",
           prog);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting_t *s = &s_settings[i];
        if (s->roles & role)
            printf("  %-24s %s\n  %-24s default: %s\n", s->name, s->help, "",
                   s->def[0] ? s->def : "(none)");
    }
}

int config_load(config_t *cfg, int role, const char *prog, int argc, char **argv,
                char ***rest, err_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NSETTINGS; i++)
        if (s_set(cfg, &s_settings[i], s_settings[i].def, "default", err) < 0)
            return ERR_INVALID;
    const char *file = getenv("SKED_CONFIG");
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(prog, role);
            return 1;
        } else if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return err_set(err, ERR_INVALID, "missing value for --config");
            file = argv[++i];
        } else if (rest) {
            argv[nrest++] = argv[i];
        } else {
            return err_set(err, ERR_INVALID, "unknown argument '%s' (try --help)", argv[i]);
        }
    }
    if (rest) {
        argv[nrest] = NULL;
        *rest = argv;
    }
    if (file && *file && s_load_file(cfg, file, err) < 0)
        return ERR_INVALID;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = getenv(s_settings[i].name);
        if (v && s_set(cfg, &s_settings[i], v, "the environment", err) < 0)
            return ERR_INVALID;
    }
    if (cfg->node_id[0] == '\0') {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        const char *r = role == CONFIG_ROLE_GATEWAY ? "gateway"
                        : role == CONFIG_ROLE_MASTER ? "master"
                                                     : "worker";
        snprintf(cfg->node_id, sizeof cfg->node_id, "%s-%.60s-%d", r, host, (int)getpid());
    }
    if (log_level_parse(cfg->log_level) < 0)
        return err_set(err, ERR_INVALID, "invalid SKED_LOG_LEVEL '%s': use debug, info, warn or error",
                       cfg->log_level);
    if (strcmp(cfg->log_format, "text") != 0 && strcmp(cfg->log_format, "json") != 0)
        return err_set(err, ERR_INVALID, "invalid SKED_LOG_FORMAT '%s': use text or json",
                       cfg->log_format);
    if (cfg->partitions < 1 || cfg->partitions > 4096)
        return err_set(err, ERR_INVALID, "invalid SKED_PARTITIONS %d: use 1-4096", cfg->partitions);
    if (cfg->lease_ttl_ms < 1000)
        return err_set(err, ERR_INVALID, "invalid SKED_LEASE_TTL_MS %d: at least 1000",
                       cfg->lease_ttl_ms);
    if (cfg->heartbeat_ms < 50 || cfg->worker_timeout_ms < 2 * cfg->heartbeat_ms)
        return err_set(err, ERR_INVALID,
                       "invalid SKED_HEARTBEAT_MS/SKED_WORKER_TIMEOUT_MS: heartbeat >= 50 and "
                       "timeout >= 2 heartbeats");
    if (cfg->worker_slots < 1)
        return err_set(err, ERR_INVALID, "invalid SKED_WORKER_SLOTS: at least 1");
    if (cfg->fire_ahead_ms < 0 || cfg->fire_ahead_ms > 60000)
        return err_set(err, ERR_INVALID, "invalid SKED_FIRE_AHEAD_MS %d: 0 to 60000",
                       cfg->fire_ahead_ms);
    if (cfg->state_save_ms < 0 || cfg->state_save_ms > 60000)
        return err_set(err, ERR_INVALID, "invalid SKED_STATE_SAVE_MS %d: 0 to 60000",
                       cfg->state_save_ms);
    if (cfg->job_retention_s < 0)
        return err_set(err, ERR_INVALID, "invalid SKED_JOB_RETENTION_S %d: 0 (keep) or more",
                       cfg->job_retention_s);
    return 0;
}

void config_init_log(const config_t *cfg, const char *role)
{
    log_init(role, cfg->node_id, (log_level_t)log_level_parse(cfg->log_level),
             strcmp(cfg->log_format, "json") == 0);
}
