/*
 * jobs.c - the worker's jobs: queue, slots, handlers, deadlines, cancel.
 *
 * A JOB joins a FIFO queue and starts as soon as the worker has a free
 * slot (SKED_WORKER_SLOTS or the config's `slots`) and its task type is
 * below its max_concurrent; a job of a type this worker does not serve
 * starts and fails at once. Free slots are the worker's credit; the task
 * types that still have room are what HELLO/HEARTBEAT advertise, so
 * masters do not send what cannot start. A JOB that finds no room (sent
 * on stale credit, or on credit another master spent too) is refused:
 * its master queues it again for whichever worker has room, instead of it
 * waiting here for a slot. A JOB with `start_at` (a fire its master claimed ahead of
 * its time) waits in the queue, holding its slot, until that time on this
 * worker's clock, at most HOLD_MAX_MS after it arrived: it starts on time
 * however busy its master is when the time comes.
 *
 * A started job's deadline is the smaller of its max_execution_time and
 * its type's timeout. At the deadline, on CANCEL, or when the drain
 * timeout ends, a job is ended: a built-in or http job at once; an exec
 * job gets SIGTERM on its process group and SIGKILL kill_grace_ms later,
 * and is reported once its process has exited (exec.c). While a job runs,
 * new output goes to its master as OUTPUT chunks at most every 250 ms;
 * FINISHED carries the output's last 64 KiB.
 */
#include "worker/worker.h"

#include "common/clock.h"
#include "common/log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define OUTPUT_EVERY_MS 250
#define ERROR_MAX 8000 /* the protocol allows 8192 */
#define HOLD_MAX_MS 60000 /* a start_at further ahead (a wrong clock) is cut to this */

typedef struct {
    run_t **v;
    size_t n, cap;
} runs_t;

struct jobs {
    wconfig_t *cfg;
    int slots, kill_grace_ms;
    runs_t running, queued; /* owned */
    webhook_t *web;         /* NULL until the first http job */
    jobs_send_fn *send;
    void *ctx;
    int reap;          /* SIGCHLD seen */
    int shutting_down; /* start nothing more */
    int nexec_items;   /* of the last jobs_pollitems */
};

static void s_push(runs_t *l, run_t *r)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = r;
}

/* Removes entry i, keeping the order. */
static run_t *s_take(runs_t *l, size_t i)
{
    run_t *r = l->v[i];
    memmove(l->v + i, l->v + i + 1, (l->n - i - 1) * sizeof *l->v);
    l->n--;
    return r;
}

jobs_t *jobs_new(wconfig_t *cfg, int slots, int kill_grace_ms, jobs_send_fn *send, void *ctx)
{
    jobs_t *self = calloc(1, sizeof *self);
    self->cfg = cfg;
    self->slots = slots;
    self->kill_grace_ms = kill_grace_ms;
    self->send = send;
    self->ctx = ctx;
    return self;
}

static void s_fill(proto_msg_t *msg, proto_type_t type, const run_t *r)
{
    memset(msg, 0, sizeof *msg);
    msg->type = type;
    msg->attempt = r->attempt;
    snprintf(msg->job_id, sizeof msg->job_id, "%s", r->job_id);
    snprintf(msg->trigger_id, sizeof msg->trigger_id, "%s", r->trigger_id);
    snprintf(msg->task_type, sizeof msg->task_type, "%s", r->task_type);
}

/* Sends FINISHED for a run whose outcome is recorded. */
static void s_report(jobs_t *self, run_t *r)
{
    proto_msg_t msg;
    s_fill(&msg, PROTO_FINISHED, r);
    msg.at = clock_wall_ms();
    msg.exit_code = r->exit_code;
    msg.duration_ms = r->started_mono ? clock_mono_ms() - r->started_mono : 0;
    msg.started_at = r->started_mono ? r->started_at : 0;
    snprintf(msg.status, sizeof msg.status, "%s", r->status);
    char *out = NULL;
    if (r->output)
        out = tail_clean(r->output, strlen(r->output), WORKER_OUTPUT_MAX, 1);
    else if (r->tail)
        out = tail_text(r->tail);
    if (out && !*out) {
        free(out);
        out = NULL;
    }
    msg.output = out;
    msg.error = r->error ? tail_clean(r->error, strlen(r->error), ERROR_MAX, 0) : NULL;
    self->send(self->ctx, r->master, &msg);
    log_info("job finished", "job=%s attempt=%d status=%s exit_code=%d", r->job_id, r->attempt,
             r->status, r->exit_code);
    free(msg.output);
    free(msg.error);
}

/* Reports and removes every running job whose outcome is known. */
static void s_flush(jobs_t *self)
{
    for (size_t i = 0; i < self->running.n;) {
        run_t *r = self->running.v[i];
        if (!r->finished) {
            i++;
            continue;
        }
        s_take(&self->running, i);
        if (r->tt)
            r->tt->running--;
        s_report(self, r);
        run_destroy(&r);
    }
}

static void s_deadline(run_t *r)
{
    int64_t job = r->max_execution_time > 0 ? (int64_t)r->max_execution_time * 1000 : 0;
    int64_t type = r->tt ? r->tt->timeout_ms : 0;
    int64_t ms = job && (!type || job <= type) ? job : type;
    r->deadline_is_job = ms && ms == job;
    r->deadline_mono = ms ? r->started_mono + ms : 0;
}

/* Sends the STARTED of every job started since the last call. */
static void s_report_started(jobs_t *self)
{
    for (size_t i = 0; i < self->running.n; i++) {
        run_t *r = self->running.v[i];
        if (!r->start_unsent)
            continue;
        r->start_unsent = 0;
        proto_msg_t msg;
        s_fill(&msg, PROTO_STARTED, r);
        msg.at = r->started_at;
        self->send(self->ctx, r->master, &msg);
        log_info("job started", "job=%s attempt=%d task_type=%s", r->job_id, r->attempt,
                 r->task_type);
    }
}

/* Starts a job's handler; takes ownership of r (it joins `running`). Its
 * STARTED goes out after the jobs started with it (s_report_started):
 * 500 fires due at the same millisecond, each sent its STARTED and its
 * FINISHED before the next started, began over 3 to 16 ms. */
static void s_start(jobs_t *self, run_t *r)
{
    int64_t mono = clock_mono_ms();
    r->started_at = clock_wall_ms();
    r->started_mono = mono;
    r->next_output_mono = mono + OUTPUT_EVERY_MS;
    r->start_unsent = 1;
    s_deadline(r);
    s_push(&self->running, r);
    err_t err = {0};
    if (!r->tt) {
        run_set_outcome(r, "failed", -1, "task type '%s' is not served by this worker",
                        r->task_type);
        return;
    }
    r->tt->running++;
    switch (r->tt->kind) {
    case HANDLER_BUILTIN:
        builtin_start(r, r->tt->builtin, mono);
        break;
    case HANDLER_EXEC:
        if (exec_start(r, &err) < 0)
            run_set_outcome(r, "failed", -1, "%s", err.msg);
        break;
    case HANDLER_HTTP:
        if (!self->web)
            self->web = webhook_new(&err);
        if (!self->web || webhook_start(self->web, r, &err) < 0)
            run_set_outcome(r, "failed", -1, "%s", err.msg);
        break;
    }
}

/* True if the type's max_concurrent is taken, held jobs included. */
static int s_type_full(const tasktype_t *tt)
{
    return tt && tt->max_concurrent && tt->running + tt->queued >= tt->max_concurrent;
}

static int s_has_room(const jobs_t *self, const tasktype_t *tt)
{
    return (int)self->running.n < self->slots &&
           (!tt || !tt->max_concurrent || tt->running < tt->max_concurrent);
}

/* Starts queued jobs, oldest first, as far as slots allow. */
static void s_start_queued(jobs_t *self)
{
    int started = 0;
    for (size_t i = 0; i < self->queued.n && !self->shutting_down &&
                       (int)self->running.n < self->slots;) {
        run_t *r = self->queued.v[i];
        if (!s_has_room(self, r->tt) || (r->start_at && clock_wall_ms() < r->start_at)) {
            i++;
            continue;
        }
        s_take(&self->queued, i);
        if (r->tt)
            r->tt->queued--;
        s_start(self, r);
        started = 1;
        if ((int)self->running.n >= self->slots) { /* a job that ended at once frees its slot */
            s_report_started(self);
            s_flush(self);
        }
    }
    if (started) { /* STARTED before FINISHED */
        s_report_started(self);
        s_flush(self);
    }
}

static run_t *s_find(const runs_t *l, const char *job_id, int attempt, size_t *at)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i]->attempt == attempt && strcmp(l->v[i]->job_id, job_id) == 0) {
            if (at)
                *at = i;
            return l->v[i];
        }
    return NULL;
}

int jobs_accept(jobs_t *self, int master, proto_msg_t *job)
{
    /* A repeat first: refused, a job that runs here would be sent elsewhere. */
    if (s_find(&self->running, job->job_id, job->attempt, NULL) ||
        s_find(&self->queued, job->job_id, job->attempt, NULL)) {
        log_info("duplicate JOB ignored", "job=%s attempt=%d", job->job_id, job->attempt);
        return 1;
    }
    tasktype_t *tt = wconfig_find(self->cfg, job->task_type);
    if (!self->shutting_down && (jobs_free_slots(self) == 0 || s_type_full(tt))) {
        log_info("JOB refused: no room", "job=%s attempt=%d task_type=%s", job->job_id,
                 job->attempt, job->task_type);
        return 0;
    }
    run_t *r = calloc(1, sizeof *r);
    snprintf(r->job_id, sizeof r->job_id, "%s", job->job_id);
    snprintf(r->trigger_id, sizeof r->trigger_id, "%s", job->trigger_id);
    snprintf(r->task_type, sizeof r->task_type, "%s", job->task_type);
    r->attempt = job->attempt;
    r->master = master;
    r->max_execution_time = job->max_execution_time;
    r->scheduled_for = job->scheduled_for;
    int64_t now = clock_wall_ms();
    if (job->start_at > now)
        r->start_at = job->start_at - now > HOLD_MAX_MS ? now + HOLD_MAX_MS : job->start_at;
    r->parameters = job->parameters;
    job->parameters = NULL;
    r->tt = tt;
    r->out_fd = -1;
    if (self->shutting_down) {
        s_push(&self->running, r);
        if (r->tt)
            r->tt->running++;
        run_set_outcome(r, "failed", -1, "worker shutting down");
    } else {
        s_push(&self->queued, r);
        if (r->tt)
            r->tt->queued++;
    }
    s_flush(self);
    s_start_queued(self);
    return 1;
}

/* Ends a running job early (deadline, CANCEL, shutdown). */
static void s_end(jobs_t *self, run_t *r, run_end_t why, const char *reason)
{
    if (r->finished || r->ending != END_NONE)
        return;
    r->ending = why;
    snprintf(r->end_reason, sizeof r->end_reason, "%s", reason ? reason : "");
    if (!r->tt || r->tt->kind != HANDLER_EXEC || r->pid <= 1) {
        webhook_abort(self->web, r);
        run_set_ended(r, -1);
        return;
    }
    log_info(why == END_TIMEOUT ? "job timed out; stopping its processes" : "stopping a job's processes",
             "job=%s attempt=%d pid=%d grace_ms=%d", r->job_id, r->attempt, (int)r->pid,
             self->kill_grace_ms);
    if (self->kill_grace_ms > 0) {
        exec_signal(r, SIGTERM);
        r->kill_at_mono = clock_mono_ms() + self->kill_grace_ms;
    } else {
        exec_signal(r, SIGKILL);
    }
}

int jobs_cancel(jobs_t *self, const char *job_id, int attempt, const char *reason)
{
    size_t at;
    run_t *r = s_find(&self->queued, job_id, attempt, &at);
    if (r) { /* never started */
        s_take(&self->queued, at);
        if (r->tt)
            r->tt->queued--;
        r->ending = END_CANCEL;
        snprintf(r->end_reason, sizeof r->end_reason, "%s", reason ? reason : "");
        run_set_ended(r, -1);
        s_report(self, r);
        run_destroy(&r);
        return 1;
    }
    r = s_find(&self->running, job_id, attempt, NULL);
    if (!r || r->finished || r->ending != END_NONE)
        return 0;
    s_end(self, r, END_CANCEL, reason);
    s_flush(self);
    s_start_queued(self);
    return 1;
}

void jobs_child_exited(jobs_t *self)
{
    self->reap = 1;
}

/* Sends new output of r if some is waiting and it is time. */
static void s_output(jobs_t *self, run_t *r, int64_t now)
{
    if (!r->tail || !tail_pending(r->tail) || now < r->next_output_mono)
        return;
    char *chunk = tail_chunk(r->tail);
    if (!chunk)
        return;
    proto_msg_t msg;
    s_fill(&msg, PROTO_OUTPUT, r);
    msg.output = chunk;
    self->send(self->ctx, r->master, &msg);
    free(chunk);
    r->next_output_mono = now + OUTPUT_EVERY_MS;
}

static int64_t s_min(int64_t a, int64_t b)
{
    return b && b < a ? b : a;
}

int64_t jobs_advance(jobs_t *self)
{
    int64_t now = clock_mono_ms(), next = INT64_MAX;
    int reap = self->reap;
    self->reap = 0;
    for (size_t i = 0; i < self->running.n; i++) {
        run_t *r = self->running.v[i];
        if (reap && r->pid > 1)
            exec_check_exit(r);
        if (!r->finished && r->done_at_mono && r->done_at_mono <= now)
            builtin_complete(r);
        if (!r->finished && r->deadline_mono && r->deadline_mono <= now)
            s_end(self, r, END_TIMEOUT, NULL);
        if (!r->finished && r->kill_at_mono && r->kill_at_mono <= now) {
            log_warn("job still running after the grace period; killing its process group",
                     "job=%s attempt=%d pid=%d", r->job_id, r->attempt, (int)r->pid);
            exec_signal(r, SIGKILL);
            r->kill_at_mono = 0;
        }
        if (r->finished)
            continue;
        s_output(self, r, now);
        next = s_min(next, r->done_at_mono);
        if (r->ending == END_NONE)
            next = s_min(next, r->deadline_mono);
        next = s_min(next, r->kill_at_mono);
        if (r->tail && tail_pending(r->tail))
            next = s_min(next, r->next_output_mono);
    }
    s_flush(self);
    s_start_queued(self);
    int64_t wall = clock_wall_ms();
    for (size_t i = 0; i < self->queued.n; i++) /* held until their start_at */
        if (self->queued.v[i]->start_at > wall)
            next = s_min(next, now + (self->queued.v[i]->start_at - wall));
    next = s_min(next, webhook_next_timer(self->web));
    return next;
}

int jobs_nitems(const jobs_t *self)
{
    return (int)self->running.n + webhook_nitems(self->web);
}

int jobs_pollitems(jobs_t *self, zmq_pollitem_t *items, int max)
{
    int n = 0;
    for (size_t i = 0; i < self->running.n && n < max; i++)
        if (self->running.v[i]->out_fd >= 0)
            items[n++] = (zmq_pollitem_t){NULL, self->running.v[i]->out_fd, ZMQ_POLLIN, 0};
    self->nexec_items = n;
    return n + webhook_pollitems(self->web, items + n, max - n);
}

void jobs_on_events(jobs_t *self, const zmq_pollitem_t *items, int n)
{
    int nexec = self->nexec_items < n ? self->nexec_items : n;
    for (int k = 0; k < nexec; k++) {
        if (!items[k].revents)
            continue;
        for (size_t i = 0; i < self->running.n; i++) {
            run_t *r = self->running.v[i];
            if (r->out_fd == items[k].fd) {
                exec_read(r);
                if (r->out_fd < 0) /* EOF: the process has probably exited */
                    self->reap = 1;
                break;
            }
        }
    }
    webhook_on_events(self->web, items + nexec, n - nexec);
    s_flush(self);
    s_start_queued(self);
}

void jobs_shutdown(jobs_t *self)
{
    self->shutting_down = 1;
    while (self->queued.n) {
        run_t *r = s_take(&self->queued, 0);
        if (r->tt)
            r->tt->queued--;
        run_set_outcome(r, "failed", -1, "worker shutting down");
        s_report(self, r);
        run_destroy(&r);
    }
    for (size_t i = 0; i < self->running.n; i++)
        s_end(self, self->running.v[i], END_SHUTDOWN, NULL);
    s_flush(self);
}

size_t jobs_running(const jobs_t *self)
{
    return self->running.n;
}

size_t jobs_queued(const jobs_t *self)
{
    return self->queued.n;
}

int jobs_free_slots(const jobs_t *self)
{
    int used = (int)(self->running.n + self->queued.n);
    return used >= self->slots ? 0 : self->slots - used;
}

void jobs_advertise(const jobs_t *self, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < self->cfg->ntypes; i++) {
        const tasktype_t *t = &self->cfg->types[i];
        if (s_type_full(t))
            continue;
        int n = snprintf(buf + len, size - len, "%s%s", len ? "," : "", t->name);
        if (n < 0 || len + (size_t)n >= size)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
}

void jobs_serves(const jobs_t *self, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < self->cfg->ntypes; i++) {
        int n = snprintf(buf + len, size - len, "%s%s", len ? "," : "", self->cfg->types[i].name);
        if (n < 0 || len + (size_t)n >= size)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
}

int jobs_running_ids(const jobs_t *self, char **ids, int max)
{
    int n = 0;
    for (size_t i = 0; i < self->running.n && n < max; i++)
        ids[n++] = self->running.v[i]->job_id;
    /* Received and held until its start_at: also ours, so not "lost" on takeover. */
    for (size_t i = 0; i < self->queued.n && n < max; i++)
        ids[n++] = self->queued.v[i]->job_id;
    return n;
}

static void s_free_all(jobs_t *self, runs_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        run_t *r = l->v[i];
        exec_abandon(r);
        webhook_abort(self->web, r);
        run_destroy(&r);
    }
    free(l->v);
}

void jobs_destroy(jobs_t **self_p)
{
    jobs_t *self = *self_p;
    if (!self)
        return;
    s_free_all(self, &self->running);
    s_free_all(self, &self->queued);
    webhook_destroy(&self->web);
    free(self);
    *self_p = NULL;
}
