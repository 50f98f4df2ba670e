/*
 * exec.c - the exec handler: one process group per job, never a shell.
 *
 * The task type's argv runs as given (argv[0] found on the worker's PATH
 * if it has no '/'), with stdin an in-memory file holding the parameters
 * JSON, stdout and stderr one pipe (so their lines keep their order),
 * the environment from jobenv.c, the type's cwd, and, when the worker
 * runs as root and the type names a user, that user's groups, gid and uid.
 *
 * The child makes itself leader of a new process group before exec, so
 * one kill(-pid) reaches everything it starts that stays in the group
 * (a shell's `sleep 1000 &` included). When the leader exits, the job is
 * over: we notice it with waitid(WNOWAIT), so the leader stays a zombie
 * and its pid cannot be reused while we SIGKILL what is left of its group;
 * only then is it reaped. Between fork and execve the child only makes
 * async-signal-safe calls: the worker has other threads (ZeroMQ's).
 */
#define _GNU_SOURCE
#include "worker/worker.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The file to execute for prog, or NULL if none is found; the caller's. */
static char *s_resolve(const char *prog)
{
    if (strchr(prog, '/'))
        return strdup(prog);
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        size_t len = strcspn(p, ":");
        char full[4096];
        if (len > 0 && len + strlen(prog) + 2 < sizeof full) {
            snprintf(full, sizeof full, "%.*s/%s", (int)len, p, prog);
            if (access(full, X_OK) == 0)
                return strdup(full);
        }
        p += len;
        if (*p == ':')
            p++;
    }
    return NULL;
}

/* A file descriptor positioned at the start of the parameters' text. */
static int s_stdin_fd(const char *params, err_t *err)
{
    int fd = memfd_create("sked-params", MFD_CLOEXEC);
    if (fd < 0) { /* old kernel: an unlinked temporary file */
        char tmpl[] = "/tmp/sked-params-XXXXXX";
        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd >= 0)
            unlink(tmpl);
    }
    if (fd < 0)
        return err_set(err, ERR_SYS, "cannot create the stdin file: %s", strerror(errno));
    size_t n = strlen(params), off = 0;
    while (off < n) {
        ssize_t w = write(fd, params + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return err_set(err, ERR_SYS, "cannot write the stdin file: %s", strerror(errno));
        }
        off += (size_t)w;
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* Async-signal-safe: writes "sked-worker: cannot WHAT: ENAME" to fd 2. */
static void s_child_fail(const char *what, const char *subject)
{
    int e = errno;
    const char *name = strerrorname_np(e);
    const char *parts[] = {"sked-worker: cannot ", what, " '", subject, "': ",
                           name ? name : "error", "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        ssize_t w = write(2, parts[i], strlen(parts[i]));
        (void)w;
    }
    _exit(127);
}

typedef struct {
    const tasktype_t *tt;
    const char *path;
    char **env;
    int in_fd, out_fd;
    pid_t parent;
    long max_fd;
} child_t;

static void s_child(const child_t *c)
{
    setpgid(0, 0);
    /* Our handlers and ignores must not reach the job. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(c->in_fd, 0) < 0 || dup2(c->out_fd, 1) < 0 || dup2(c->out_fd, 2) < 0)
        _exit(127);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
#endif
        for (long fd = 3; fd < c->max_fd; fd++)
            close((int)fd);
    if (c->tt->cwd && chdir(c->tt->cwd) < 0)
        s_child_fail("change directory to", c->tt->cwd);
    if (c->tt->switch_user) {
        if (setgroups((size_t)c->tt->ngroups, c->tt->groups) < 0 || setgid(c->tt->gid) < 0 ||
            setuid(c->tt->uid) < 0)
            s_child_fail("switch to user", c->tt->user);
    }
    /* The job must not outlive a worker killed with SIGKILL. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != c->parent)
        _exit(127);
    execve(c->path, c->tt->argv, c->env);
    s_child_fail("execute", c->path);
}

int exec_start(run_t *run, err_t *err)
{
    const tasktype_t *tt = run->tt;
    char *path = s_resolve(tt->argv[0]);
    if (!path)
        return err_set(err, ERR_INVALID, "cannot execute '%.200s': not found on PATH", tt->argv[0]);
    int in_fd = s_stdin_fd(run->parameters ? run->parameters : "{}", err);
    if (in_fd < 0) {
        free(path);
        return ERR_SYS;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        close(in_fd);
        free(path);
        return err_set(err, ERR_SYS, "cannot create the output pipe: %s", strerror(errno));
    }
    child_t c = {.tt = tt, .path = path, .in_fd = in_fd, .out_fd = pipefd[1], .parent = getpid(),
                 .max_fd = sysconf(_SC_OPEN_MAX)};
    if (c.max_fd < 0 || c.max_fd > 65536)
        c.max_fd = 65536;
    c.env = jobenv_build(run, tt->env_allow, environ);
    pid_t pid = fork();
    if (pid == 0)
        s_child(&c);
    int fork_errno = errno;
    jobenv_free(&c.env);
    free(path);
    close(in_fd);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        return err_set(err, ERR_SYS, "cannot start '%.200s': fork: %s", tt->argv[0],
                       strerror(fork_errno));
    }
    setpgid(pid, pid); /* also here, so kill(-pid) works before the child runs */
    fcntl(pipefd[0], F_SETFL, fcntl(pipefd[0], F_GETFL) | O_NONBLOCK);
    run->pid = pid;
    run->out_fd = pipefd[0];
    run->tail = tail_new(WORKER_OUTPUT_MAX);
    log_debug("process started", "job=%s pid=%d argv0=%s", run->job_id, (int)pid, tt->argv[0]);
    return 0;
}

void exec_read(run_t *run)
{
    char buf[65536];
    /* Bounded, so a chatty job cannot starve the loop. */
    for (int i = 0; i < 16 && run->out_fd >= 0; i++) {
        ssize_t n = read(run->out_fd, buf, sizeof buf);
        if (n > 0) {
            tail_append(run->tail, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close(run->out_fd); /* EOF or a read error */
        run->out_fd = -1;
    }
}

void exec_signal(run_t *run, int sig)
{
    if (run->pid > 1)
        kill(-run->pid, sig);
}

/* Reaps the (exited) leader; returns its wait status, or -1 if unknown. */
static int s_reap(pid_t pid)
{
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, 0);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

int exec_check_exit(run_t *run)
{
    if (run->pid <= 1)
        return 0;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int status = -1;
    if (waitid(P_PID, (id_t)run->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
        if (errno != ECHILD)
            return 0;
        /* Reaped elsewhere (cannot happen: we reap only here): its pid may be
         * reused already, so its group is not signalled. */
    } else if (si.si_pid == 0) {
        return 0;
    } else {
        exec_read(run);
        exec_signal(run, SIGKILL); /* what it left behind in its group */
        status = s_reap(run->pid);
    }
    run->pid = 0;
    exec_read(run);
    if (run->out_fd >= 0) {
        close(run->out_fd);
        run->out_fd = -1;
    }
    int code = status < 0 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status)
                                 : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    if (run->ending != END_NONE)
        run_set_ended(run, code);
    else if (status >= 0 && WIFEXITED(status) && code == 0)
        run_set_outcome(run, "succeeded", 0, NULL);
    else if (status >= 0 && WIFSIGNALED(status))
        run_set_outcome(run, "failed", code, "killed by signal %d", WTERMSIG(status));
    else if (status >= 0)
        run_set_outcome(run, "failed", code, "exit code %d", code);
    else
        run_set_outcome(run, "failed", -1, "process status lost");
    return 1;
}

void exec_abandon(run_t *run)
{
    if (run->pid > 1) {
        exec_signal(run, SIGKILL);
        s_reap(run->pid);
        run->pid = 0;
    }
    if (run->out_fd >= 0) {
        close(run->out_fd);
        run->out_fd = -1;
    }
}
