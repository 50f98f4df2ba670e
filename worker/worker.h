/*
 * worker.h - a worker's running jobs and its built-in handlers.
 *
 *   main.c     configuration, connections to every master, the loop
 *   builtin.c  noop, sleep, echo, fail
 */
#ifndef SKED_WORKER_H
#define SKED_WORKER_H

#include "proto/proto.h"

#include <stdint.h>

/* One job on this worker. */
typedef struct {
    char job_id[PROTO_ID_MAX];
    char trigger_id[64];
    char task_type[64];
    int attempt;
    int master;           /* index of the connection it came from */
    int max_execution_time;
    char *parameters;     /* JSON text, owned */
    int64_t started_at;   /* wall ms */
    int64_t started_mono;
    int64_t done_at_mono; /* when a timed built-in ends; 0 = not timed */
    /* outcome, once known */
    int finished;
    char status[16];
    int exit_code;
    char *error, *output; /* owned */
} run_t;

/* Starts a built-in job: either finishes it at once (run->finished) or
 * sets done_at_mono for the loop to call builtin_complete at that time.
 * Returns 0, or ERR_INVALID if the task type is not a built-in. */
int builtin_start(run_t *run, int64_t now_mono);

/* Completes a timed built-in whose done_at_mono has come. */
void builtin_complete(run_t *run, int64_t now_mono);

/* True if name is a built-in task type. */
int builtin_known(const char *name);

void run_destroy(run_t **run_p);

#endif
