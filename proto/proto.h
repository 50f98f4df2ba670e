/*
 * proto.h - sked's ZeroMQ wire protocol (see proto/PROTOCOL.md).
 *
 * A message is three frames: the version tag "SKED1", the type name
 * ("HELLO", "JOB", ...) and a JSON object body. ROUTER identity frames are
 * the caller's business: decode is given the frames after them.
 *
 * Decoding is strict: wrong frame count, unknown version or type, a body
 * that is not a JSON object, duplicate keys, a missing required field, a
 * field of the wrong type or too long: each is rejected with a message,
 * and the receiver drops the message and counts it (proto_dropped).
 */
#ifndef SKED_PROTO_H
#define SKED_PROTO_H

#include "common/err.h"

#include <czmq.h>
#include <stdint.h>

#define PROTO_VERSION "SKED1"
#define PROTO_MAX_BODY (256 * 1024)

typedef enum {
    PROTO_HELLO = 1, /* worker -> master: I exist, my capacity */
    PROTO_HEARTBEAT, /* worker -> master: still alive, free slots, running jobs */
    PROTO_JOB,       /* master -> worker: run this */
    PROTO_STARTED,   /* worker -> master: job started */
    PROTO_FINISHED,  /* worker -> master: job ended */
    PROTO_NOTIFY,    /* gateway -> master: trigger changed */
    PROTO_BYE,       /* worker -> master: draining, send nothing more */
    PROTO_CANCEL,    /* master -> worker: stop this job (status cancelled / timed_out) */
    PROTO_ACK,       /* master -> worker: FINISHED of this attempt is persisted */
    PROTO_OUTPUT,    /* worker -> master: a chunk of a running job's output */
    PROTO_PING,      /* master -> worker: answer at once, echoing this token */
    PROTO_REFUSED,   /* worker -> master: no room for this JOB; it was not taken */
    PROTO_TYPE_MAX
} proto_type_t;

#define PROTO_ID_MAX 160
#define PROTO_MAX_RUNNING 4096

/* One decoded message. Strings are NUL-terminated copies; `parameters`,
 * `error`, `output` and `running` are heap-owned by the message. */
typedef struct {
    proto_type_t type;
    uint64_t seq;
    char node_id[PROTO_ID_MAX];    /* sender's node id (all types) */
    /* HELLO / HEARTBEAT */
    int slots, free_slots;
    char task_types[512];          /* comma-separated: types with a free slot now */
    char serves[512];              /* comma-separated: every type the worker runs */
    char labels[512];              /* comma-separated k=v */
    char **running;                /* HEARTBEAT: job ids running, `nrunning` of them */
    int nrunning;
    int64_t echo;                  /* HELLO / HEARTBEAT / BYE: token of the last PING received */
    /* PING */
    int64_t token;
    /* JOB / STARTED / FINISHED */
    char job_id[PROTO_ID_MAX];
    char trigger_id[64];
    char task_type[64];
    int attempt;
    int64_t scheduled_for;         /* ms since epoch */
    int64_t at;                    /* ms since epoch: started_at / finished_at */
    int max_execution_time;        /* seconds, 0 = none */
    int64_t start_at;              /* JOB: not started before it, ms since epoch; 0 = at once */
    char *parameters;              /* JOB: JSON object text */
    char status[16];               /* FINISHED: succeeded, failed, timed_out, cancelled */
    int exit_code;
    char *error, *output;          /* FINISHED: may be NULL; OUTPUT: output is the chunk */
    int64_t duration_ms;
    int64_t started_at;            /* FINISHED: when the attempt started, ms since epoch; 0 unknown */
    /* NOTIFY */
    char op[16];                   /* upsert, delete */
    /* CANCEL */
    char reason[64];               /* e.g. cancelled, timed_out, replaced */
} proto_msg_t;

/* Name of a type ("JOB"), or "?" if out of range. */
const char *proto_type_name(proto_type_t type);

/* Builds a message of msg->type; returns a new zmsg_t (the caller's) or
 * NULL if a required field is missing or too long (err says which). */
zmsg_t *proto_encode(const proto_msg_t *msg, err_t *err);

/* Decodes frames (not consumed) into *out, which the caller releases with
 * proto_msg_reset. Returns 0 or ERR_INVALID with a message. */
int proto_decode(zmsg_t *frames, proto_msg_t *out, err_t *err);

/* Frees what a decoded or filled message owns and zeroes it. NULL-safe. */
void proto_msg_reset(proto_msg_t *msg);

/* Messages dropped as malformed in this process (for metrics and tests). */
extern uint64_t proto_dropped;

#endif
