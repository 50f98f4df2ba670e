/*
 * test_config.c - settings from defaults, a config file and the environment.
 */
#include "tests/unit/test.h"

#include "common/config.h"

#include <stdlib.h>
#include <unistd.h>

static char *s_write(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sked-config-test-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static int s_load(config_t *cfg, int role, const char *file, err_t *err)
{
    char *argv[] = {"prog", "--config", (char *)file, NULL};
    return config_load(cfg, role, "prog", file ? 3 : 1, argv, NULL, err);
}

TEST(config_defaults)
{
    config_t cfg;
    err_t err = {0};
    unsetenv("SKED_PARTITIONS");
    unsetenv("SKED_CONFIG");
    CHECK_INT(s_load(&cfg, CONFIG_ROLE_MASTER, NULL, &err), 0);
    CHECK_INT(cfg.partitions, 64);
    CHECK_INT(cfg.lease_ttl_ms, 10000);
    CHECK_STR(cfg.master_bind, "tcp://127.0.0.1:7601");
    CHECK_INT(cfg.fire_ahead_ms, 500);
    CHECK(strncmp(cfg.node_id, "master-", 7) == 0);
}

TEST(config_file_then_environment)
{
    config_t cfg;
    err_t err = {0};
    char *path = s_write("# comment\n  SKED_PARTITIONS = 16\nSKED_NODE_ID=from-file\n\n"
                         "SKED_MASTERS=tcp://a:1,tcp://b:2\n");
    setenv("SKED_NODE_ID", "from-env", 1);
    CHECK_INT(s_load(&cfg, CONFIG_ROLE_WORKER, path, &err), 0);
    CHECK_INT(cfg.partitions, 16);
    CHECK_STR(cfg.node_id, "from-env");
    CHECK_STR(cfg.masters, "tcp://a:1,tcp://b:2");
    unsetenv("SKED_NODE_ID");
    unlink(path);
}

TEST(config_rejects_bad_input)
{
    config_t cfg;
    err_t err = {0};
    char *path = s_write("SKED_PARTITIONS=lots\n");
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, path, &err) < 0);
    CHECK(strstr(err.msg, "SKED_PARTITIONS") != NULL && strstr(err.msg, "line 1") != NULL);
    path = s_write("SKED_NO_SUCH=1\n");
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, path, &err) < 0);
    CHECK(strstr(err.msg, "unknown setting 'SKED_NO_SUCH'") != NULL);
    path = s_write("no equals sign\n");
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, path, &err) < 0);
    unlink(path);
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, "/nonexistent/sked.conf", &err) < 0);
    setenv("SKED_LOG_LEVEL", "loud", 1);
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, NULL, &err) < 0);
    CHECK(strstr(err.msg, "SKED_LOG_LEVEL") != NULL);
    unsetenv("SKED_LOG_LEVEL");
    setenv("SKED_LEASE_TTL_MS", "10", 1);
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, NULL, &err) < 0);
    unsetenv("SKED_LEASE_TTL_MS");
    setenv("SKED_FIRE_AHEAD_MS", "60001", 1);
    CHECK(s_load(&cfg, CONFIG_ROLE_MASTER, NULL, &err) < 0);
    CHECK(strstr(err.msg, "SKED_FIRE_AHEAD_MS") != NULL);
    unsetenv("SKED_FIRE_AHEAD_MS");
}
