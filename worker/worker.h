/*
 * worker.h - a worker's task types, its jobs and their handlers.
 *
 *   main.c     settings, connections to every master, heartbeats, the loop
 *   wconfig.c  the worker config file: task types -> handlers, labels
 *   jobs.c     running and queued jobs: slots, deadlines, cancel, kill
 *   builtin.c  noop, sleep, echo, fail
 *   exec.c     the exec handler: a process group per job
 *   webhook.c  the http handler: libcurl's multi interface in the loop
 *   jobenv.c   a job's environment for exec (SKED_*, allow-list)
 *   tail.c     bounded output tails and wire-safe text
 *   outbox.c   FINISHED messages awaiting the master's ACK
 *
 * Everything runs on the worker's one thread, driven by zmq_poll.
 */
#ifndef SKED_WORKER_H
#define SKED_WORKER_H

#include "proto/proto.h"

#include <stdint.h>
#include <sys/types.h>

/* Largest output kept per job (the tail) and sent in one OUTPUT chunk. */
#define WORKER_OUTPUT_MAX 65536

/* ---- task types (wconfig.c) --------------------------------------------- */

typedef enum { HANDLER_BUILTIN = 1, HANDLER_EXEC, HANDLER_HTTP } handler_kind_t;

/* One task type this worker serves and how. `running` and `queued` are
 * counters kept by jobs.c; the rest is read-only configuration. */
typedef struct {
    char name[64];
    handler_kind_t kind;
    char builtin[16];   /* HANDLER_BUILTIN: noop, sleep, echo or fail */
    int max_concurrent; /* 0 = bounded by the worker's slots only */
    int64_t timeout_ms; /* 0 = none */
    /* exec */
    char **argv;      /* NULL-terminated */
    char *cwd;        /* NULL = the worker's */
    char **env_allow; /* NULL-terminated variable names */
    char *user;       /* as configured, NULL = none */
    int switch_user;  /* setgid/setuid to uid/gid before exec (we run as root) */
    uid_t uid;
    gid_t gid;
    gid_t *groups;
    int ngroups;
    /* http */
    char *url;
    char **headers; /* "Name: value" with ${VAR} expanded, NULL-terminated */
    /* state */
    int running, queued;
} tasktype_t;

typedef struct {
    tasktype_t *types;
    int ntypes;
    char labels[512];  /* comma-separated k=v, as HELLO carries them */
    int slots;         /* 0 = not given */
    int kill_grace_ms; /* -1 = not given */
    char path[512];    /* the file read, "" for the SKED_TASK_TYPES default */
} wconfig_t;

/* Reads and validates a worker config file (JSON, see README). Returns a
 * new config or NULL with a message that names the path and the key. */
wconfig_t *wconfig_load(const char *path, err_t *err);

/* Same from text; path is only used in messages. */
wconfig_t *wconfig_parse(const char *text, const char *path, err_t *err);

/* The default without a file: each name of a comma list is a built-in. */
wconfig_t *wconfig_builtins(const char *list, err_t *err);

/* The task type called name, or NULL. */
tasktype_t *wconfig_find(const wconfig_t *self, const char *name);

void wconfig_destroy(wconfig_t **self_p);

/* ---- output tails (tail.c) ---------------------------------------------- */

typedef struct tail tail_t;

/* A tail keeping the last cap bytes. Can't fail. */
tail_t *tail_new(size_t cap);
void tail_destroy(tail_t **self_p);
void tail_append(tail_t *self, const void *data, size_t n);

/* The kept bytes as clean text (see tail_clean); the caller's. */
char *tail_text(const tail_t *self);

/* The bytes appended since the last chunk (at most cap, an incomplete
 * UTF-8 character held back), as clean text; NULL if none. The caller's. */
char *tail_chunk(tail_t *self);

/* True if tail_chunk would return something. */
int tail_pending(const tail_t *self);

/* A clean copy of at most max bytes of s[0..n), its end if keep_end else
 * its start: valid UTF-8 (bad bytes become '?', one for one) without NUL
 * or control characters other than tab, newline and return, so jansson
 * accepts it and JSON escaping at most doubles it. The caller's. */
char *tail_clean(const char *s, size_t n, size_t max, int keep_end);

/* ---- jobs --------------------------------------------------------------- */

/* Why a job is being ended before its handler finished on its own. */
typedef enum { END_NONE = 0, END_TIMEOUT, END_CANCEL, END_SHUTDOWN } run_end_t;

/* One job on this worker. */
typedef struct {
    char job_id[PROTO_ID_MAX];
    char trigger_id[64];
    char task_type[64];
    int attempt;
    int master; /* index of the connection it came from */
    int max_execution_time;
    int64_t scheduled_for;
    int64_t start_at; /* wall ms: held until then (a fire claimed ahead); 0 = at once */
    char *parameters; /* JSON text, owned */
    tasktype_t *tt;   /* borrowed; NULL if not served here */
    int64_t started_at; /* wall ms */
    int64_t started_mono;
    int start_unsent;   /* started, its STARTED not sent yet (jobs.c, s_report_started) */
    int64_t done_at_mono;  /* builtin: when a timed built-in ends; 0 = not timed */
    int64_t deadline_mono; /* 0 = none */
    int deadline_is_job;   /* max_execution_time set the deadline (not the type's timeout) */
    run_end_t ending;
    char end_reason[64];  /* CANCEL's reason */
    int64_t kill_at_mono; /* exec: SIGKILL the group then; 0 = none pending */
    pid_t pid;            /* exec: the process, leader of its group; 0 = none */
    int out_fd;           /* exec: read end of stdout+stderr; -1 = closed */
    void *http;           /* webhook: the transfer's state */
    tail_t *tail;         /* exec, http: the output */
    int64_t next_output_mono;
    /* outcome, once known */
    int finished;
    char status[16];
    int exit_code;
    char *error, *output; /* owned */
} run_t;

/* Records the outcome (status, exit code, error text) of a run. */
void run_set_outcome(run_t *run, const char *status, int exit_code, const char *error_fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the outcome of a run ended early (run->ending): timed_out,
 * cancelled (timed_out if the CANCEL's reason says so) or, for a worker
 * shutting down, failed; exit_code is the process's, or -1. */
void run_set_ended(run_t *run, int exit_code);

void run_destroy(run_t **run_p);

/* ---- the job table (jobs.c) --------------------------------------------- */

typedef struct jobs jobs_t;

/* How jobs.c reports to masters: STARTED, OUTPUT and FINISHED of a job
 * that came from connection `master`. msg is borrowed for the call. */
typedef void(jobs_send_fn)(void *ctx, int master, proto_msg_t *msg);

/* A job table for the task types of cfg (borrowed, its counters are
 * updated), running at most `slots` jobs at once. */
jobs_t *jobs_new(wconfig_t *cfg, int slots, int kill_grace_ms, jobs_send_fn *send, void *ctx);

/* Kills and reaps what still runs, frees everything. */
void jobs_destroy(jobs_t **self_p);

/* Takes a JOB (and its parameters): starts it, or holds it until its
 * start_at. Returns 0, taking nothing, if the worker or the job's task
 * type has no free slot (the caller answers REFUSED); 1 otherwise (a
 * repeat of a JOB held here is ignored). */
int jobs_accept(jobs_t *self, int master, proto_msg_t *job);

/* Stops a job (CANCEL); returns 1 if it was here and not yet finished. */
int jobs_cancel(jobs_t *self, const char *job_id, int attempt, const char *reason);

/* A SIGCHLD arrived: look for exited processes at the next advance. */
void jobs_child_exited(jobs_t *self);

/* Does what is due: reaps exited processes, completes built-ins, enforces
 * deadlines and kill grace periods, sends OUTPUT chunks, starts queued
 * jobs. Returns the monotonic time something is next due (or INT64_MAX). */
int64_t jobs_advance(jobs_t *self);

/* Poll items for output pipes and http sockets: at most jobs_nitems. */
int jobs_nitems(const jobs_t *self);
int jobs_pollitems(jobs_t *self, zmq_pollitem_t *items, int max);

/* Handles the results of the items jobs_pollitems filled. */
void jobs_on_events(jobs_t *self, const zmq_pollitem_t *items, int n);

/* The drain timeout is over: queued jobs fail, running ones are ended
 * (processes get SIGTERM, then SIGKILL) and fail "worker shutting down". */
void jobs_shutdown(jobs_t *self);

size_t jobs_running(const jobs_t *self);
size_t jobs_queued(const jobs_t *self);

/* Free slots of the worker (its credit). */
int jobs_free_slots(const jobs_t *self);

/* The task types with a free slot, comma-separated, into buf. */
void jobs_advertise(const jobs_t *self, char *buf, size_t size);
/* Every task type this worker runs, comma-separated (HELLO's `serves`). */
void jobs_serves(const jobs_t *self, char *buf, size_t size);

/* Up to max ids of running jobs (borrowed); returns how many. */
int jobs_running_ids(const jobs_t *self, char **ids, int max);

/* ---- built-ins (builtin.c) ---------------------------------------------- */

/* True if name is a built-in handler. */
int builtin_known(const char *name);

/* Starts built-in `name` for run: either finishes it at once
 * (run->finished) or sets done_at_mono for builtin_complete. */
void builtin_start(run_t *run, const char *name, int64_t now_mono);

/* Completes a timed built-in whose done_at_mono has come. */
void builtin_complete(run_t *run);

/* ---- exec (exec.c) ------------------------------------------------------ */

/* Spawns run's argv in a new process group with the job's stdin and
 * environment; sets run->pid, run->out_fd, run->tail. Returns 0, or a
 * negative code with a message (the job then fails). */
int exec_start(run_t *run, err_t *err);

/* Reads what the process wrote into its tail; closes out_fd at EOF. */
void exec_read(run_t *run);

/* If the process has exited: reads the rest of its output, SIGKILLs what
 * is left of its process group, reaps it and records the outcome. Returns
 * 1 then, 0 while it runs. */
int exec_check_exit(run_t *run);

/* Sends sig to the run's whole process group. */
void exec_signal(run_t *run, int sig);

/* Kills and reaps a process at once (worker teardown). */
void exec_abandon(run_t *run);

/* ---- job environment (jobenv.c) ----------------------------------------- */

/* SKED_PARAM_<NAME> for a parameter key: upper case, other than letters
 * and digits '_'. Writes into out (NUL-terminated, truncated to size). */
void jobenv_param_name(const char *key, char *out, size_t size);

/* A NULL-terminated "K=V" array for run's process: SKED_JOB_ID,
 * SKED_ATTEMPT, SKED_TRIGGER_ID, SKED_TASK_TYPE, SKED_SCHEDULED_FOR,
 * SKED_PARAM_*, then the allowed names found in environ. The caller frees
 * it with jobenv_free. */
char **jobenv_build(const run_t *run, char *const *allow, char *const *environ_in);
void jobenv_free(char ***env_p);

/* ---- http (webhook.c) --------------------------------------------------- */

typedef struct webhook webhook_t;

/* libcurl's multi interface for this worker's http jobs; NULL on failure. */
webhook_t *webhook_new(err_t *err);
void webhook_destroy(webhook_t **self_p);

/* POSTs the job; returns 0 or a negative code with a message. */
int webhook_start(webhook_t *self, run_t *run, err_t *err);

/* Stops run's transfer, if any (cancel, timeout, shutdown). */
void webhook_abort(webhook_t *self, run_t *run);

/* Number of poll items webhook_pollitems may fill. */
int webhook_nitems(const webhook_t *self);

/* Fills items with the sockets libcurl waits on; returns how many. */
int webhook_pollitems(webhook_t *self, zmq_pollitem_t *items, int max);

/* Hands poll results back to libcurl and runs its due timers; a transfer
 * that ended has its run's outcome recorded (run->finished). */
void webhook_on_events(webhook_t *self, const zmq_pollitem_t *items, int n);

/* Monotonic ms when libcurl wants to be called again, or INT64_MAX. */
int64_t webhook_next_timer(const webhook_t *self);

/* ---- unacknowledged FINISHED (outbox.c) --------------------------------- */

typedef struct outbox outbox_t;

/* Sends msg to connection `master`, or to every master if it is -1. */
typedef void(outbox_send_fn)(void *ctx, int master, proto_msg_t *msg);

/* An outbox keeping at most max_entries messages and max_bytes, each for
 * at most give_up_ms; resends follow period_ms (the heartbeat). */
outbox_t *outbox_new(size_t max_entries, size_t max_bytes, int64_t give_up_ms, int64_t period_ms);
void outbox_destroy(outbox_t **self_p);

/* Keeps a copy of a FINISHED just sent to connection `master`. */
void outbox_add(outbox_t *self, const proto_msg_t *finished, int master, int64_t now_mono);

/* Forgets the FINISHED of (job_id, attempt); returns 1 if it was kept. */
int outbox_ack(outbox_t *self, const char *job_id, int attempt);

/* The kept FINISHED of (job_id, attempt), or NULL: a JOB for an attempt
 * that already ran here is answered with it instead of a second run. */
proto_msg_t *outbox_find(outbox_t *self, const char *job_id, int attempt);

/* Resends what is due (call at each heartbeat) and drops what is too old. */
void outbox_resend(outbox_t *self, int64_t now_mono, outbox_send_fn *send, void *ctx);

/* Fills ids with the job ids of unacknowledged FINISHED messages (borrowed,
 * valid until the outbox changes); returns how many, at most max. */
int outbox_job_ids(outbox_t *self, char **ids, int max);
size_t outbox_size(const outbox_t *self);
uint64_t outbox_dropped(const outbox_t *self); /* for room */
uint64_t outbox_expired(const outbox_t *self); /* never acknowledged */

#endif
