"""Workers with a config file: exec and http handlers, deadlines and the
process groups they kill, per-type concurrency, labels, live output,
cancel, FINISHED resent until ACKed, drain, and config errors.

End-to-end tests go through the API (the job's `result` in history);
protocol tests talk to the worker from a fake master (a ROUTER socket in
the test), since the masters do not send CANCEL or ACK yet."""
import contextlib
import json
import os
import pwd
import random
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
import zmq

from conftest import BIN, SANITIZER_MARKS, free_port, one_shot, wait_for

FINAL = ("succeeded", "failed", "timed_out", "cancelled", "lost")


def write_config(tmp_path, cfg, name="worker.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)
    return str(path)


def marker():
    """A unique `sleep` argument, to find a job's processes with pgrep -f."""
    return f"1000.{random.randrange(10**8):08d}"


def pids(pattern):
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def final_job(cluster, tid, timeout=30):
    """The trigger's first job once final, as the history API shows it."""
    def final():
        items = cluster.api("GET", f"/triggers/{tid}/history").json()["items"]
        return items[0] if items and items[0]["status"] in FINAL else None
    return wait_for(final, timeout=timeout, interval=0.1, what=f"a final job of {tid}")


def lines(output):
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


REPORT_SCRIPT = r"""
printf 'stdin=%s\n' "$(cat)"
printf 'cmd=%s\n' "$SKED_PARAM_CMD"
printf 'sub=%s\n' "$SKED_PARAM_SUB"
printf 'quote=%s\n' "$SKED_PARAM_QUOTE"
printf 'n_items=%s\n' "$SKED_PARAM_N_ITEMS"
printf 'nested=%s\n' "$SKED_PARAM_NESTED"
printf 'job=%s\n' "$SKED_JOB_ID"
printf 'attempt=%s\n' "$SKED_ATTEMPT"
printf 'trigger=%s\n' "$SKED_TRIGGER_ID"
printf 'task_type=%s\n' "$SKED_TASK_TYPE"
printf 'allowed=%s\n' "${ALLOWED_VAR-unset}"
printf 'secret=%s\n' "${SECRET_VAR-unset}"
printf 'arg1=%s\n' "$1"
printf 'arg2=%s\n' "$2"
printf 'cwd=%s\n' "$(pwd)"
echo 'to stderr' >&2
"""


def test_exec_handler_runs_without_a_shell_and_reports_output(cluster, tmp_path):
    script = tmp_path / "report.sh"
    script.write_text(REPORT_SCRIPT)
    workdir = tmp_path / "work"
    workdir.mkdir()
    leftover = marker()
    path = write_config(tmp_path, {
        "task_types": {
            "report": {"handler": "exec", "argv": ["sh", str(script), "--flag", "two words"],
                       "cwd": str(workdir), "env_allow": ["PATH", "ALLOWED_VAR"], "timeout": 30},
            "exit3": {"handler": "exec", "argv": ["/bin/sh", "-c", "echo partial; exit 3"]},
            "chatty": {"handler": "exec", "env_allow": ["PATH"], "argv": [
                "/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo END"]},
            "leaves": {"handler": "exec", "env_allow": ["PATH"],
                       "argv": ["/bin/sh", "-c", f"sleep {leftover} & echo started"]},
            "whoami": {"handler": "exec", "argv": ["/bin/sh", "-c", "id -u; id -g"],
                       "user": "nobody", "env_allow": ["PATH"]},
            "missing": {"handler": "exec", "argv": ["sked-no-such-program"]},
        }})
    cluster.start(masters=1, workers=1, worker_env={
        "SKED_WORKER_CONFIG": path, "ALLOWED_VAR": "visible", "SECRET_VAR": "hidden"})
    pwned = tmp_path / "pwned"
    params = {"cmd": "; rm -rf / #", "sub": f"$(touch {pwned})", "quote": "it's \"quoted\" `x`",
              "n-items": 3, "nested": {"a": [1, 2]}}
    report = one_shot(cluster, "report", {"task_type": "report", "parameters": params})
    exit3 = one_shot(cluster, "exit3", {"task_type": "exit3"})
    chatty = one_shot(cluster, "chatty", {"task_type": "chatty"})
    leaves = one_shot(cluster, "leaves", {"task_type": "leaves"})
    whoami = one_shot(cluster, "whoami", {"task_type": "whoami"})
    missing = one_shot(cluster, "missing", {"task_type": "missing"})

    job = final_job(cluster, report)
    assert job["status"] == "succeeded", job
    assert job["result"]["exit_code"] == 0, job
    out = lines(job["result"]["output"])
    assert json.loads(out["stdin"]) == params
    assert out["cmd"] == params["cmd"] and out["sub"] == params["sub"]
    assert out["quote"] == params["quote"]
    assert out["n_items"] == "3" and json.loads(out["nested"]) == {"a": [1, 2]}
    assert out["job"] == job["id"] and out["attempt"] == "1"
    assert out["trigger"] == report and out["task_type"] == "report"
    assert out["allowed"] == "visible" and out["secret"] == "unset"
    assert out["arg1"] == "--flag" and out["arg2"] == "two words"
    assert out["cwd"] == str(workdir)
    assert "to stderr" in job["result"]["output"]
    assert not pwned.exists()

    job = final_job(cluster, exit3)
    assert job["status"] == "failed", job
    assert job["result"]["exit_code"] == 3 and job["result"]["error"] == "exit code 3", job
    assert job["result"]["output"] == "partial\n", job

    job = final_job(cluster, chatty)
    assert job["status"] == "succeeded", job
    output = job["result"]["output"]
    assert len(output.encode()) <= 65536 and output.endswith("x\nEND\n"), len(output)
    assert len(output) > 60000

    job = final_job(cluster, leaves)
    assert job["status"] == "succeeded" and job["result"]["output"] == "started\n", job
    # What the job left running in its process group did not survive it.
    wait_for(lambda: not pids(f"sleep {leftover}"), timeout=5, what="the leftover sleep to die")

    job = final_job(cluster, whoami)
    if os.geteuid() == 0:  # `user` applies only to a worker running as root
        nobody = pwd.getpwnam("nobody")
        assert job["result"]["output"] == f"{nobody.pw_uid}\n{nobody.pw_gid}\n", job

    job = final_job(cluster, missing)
    assert job["status"] == "failed", job
    assert job["result"]["error"] == "cannot execute 'sked-no-such-program': not found on PATH", job


def test_deadlines_kill_the_whole_process_group(cluster, tmp_path):
    stubborn_mark, limited_mark = marker(), marker()
    script = tmp_path / "stubborn.sh"
    # Ignores SIGTERM, and so does the background sleep it starts: only
    # SIGKILL after the grace period ends them.
    script.write_text(f"trap '' TERM\nsleep {stubborn_mark} &\necho waiting\nwait\n")
    path = write_config(tmp_path, {
        "task_types": {
            "stubborn": {"handler": "exec", "argv": ["/bin/sh", str(script)], "env_allow": ["PATH"]},
            "limited": {"handler": "exec", "env_allow": ["PATH"], "timeout": 1,
                        "argv": ["/bin/sh", "-c", f"sleep {limited_mark}; echo never"]},
        }})
    cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_CONFIG": path,
                                                   "SKED_KILL_GRACE_MS": "700"})
    stubborn = one_shot(cluster, "stubborn", {"task_type": "stubborn", "max_execution_time": 1})
    limited = one_shot(cluster, "limited", {"task_type": "limited"})
    running = wait_for(lambda: pids(f"sleep {stubborn_mark}"), timeout=15, interval=0.05,
                       what="the stubborn job's sleep")
    assert running

    job = final_job(cluster, stubborn)
    assert job["status"] == "timed_out", job
    assert job["result"]["error"] == "timed out after 1 s (max_execution_time)", job
    assert job["result"]["output"] == "waiting\n", job
    assert job["result"]["exit_code"] == 128 + signal.SIGKILL, job
    assert 1.6 <= job["duration_ms"] / 1000 <= 4, job  # 1 s + 0.7 s grace
    assert not pids(f"sleep {stubborn_mark}")

    job = final_job(cluster, limited)
    assert job["status"] == "timed_out", job
    assert job["result"]["error"] == "timed out after 1 s (timeout of task type 'limited')", job
    assert job["result"]["exit_code"] in (128 + signal.SIGTERM, 128 + signal.SIGKILL), job
    assert 0.9 <= job["duration_ms"] / 1000 <= 3, job
    assert not pids(f"sleep {limited_mark}")


class Engine(ThreadingHTTPServer):
    """A stand-in for a service the http handler calls."""
    daemon_threads = True

    def __init__(self):
        self.requests = []
        super().__init__(("127.0.0.1", 0), EngineHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class EngineHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers), json.loads(body)))
        if self.path == "/ok":
            code, out = 200, b"y" * 100000 + b"\nTAIL"
        elif self.path == "/slow":
            time.sleep(3)
            code, out = 200, b"late"
        else:
            code, out = 500, b"engine exploded"
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            pass  # the worker gave up on /slow

    def log_message(self, *args):
        pass


def test_http_handler_posts_the_job(cluster, tmp_path):
    engine = Engine()
    try:
        closed = free_port()
        path = write_config(tmp_path, {
            "task_types": {
                "ok": {"handler": "http", "url": engine.url + "/ok", "timeout": 10,
                       "headers": {"Authorization": "Bearer ${ENGINE_TOKEN}", "X-Static": "v"}},
                "fail": {"handler": "http", "url": engine.url + "/fail"},
                "slow": {"handler": "http", "url": engine.url + "/slow", "timeout": 1},
                "refused": {"handler": "http", "url": f"http://127.0.0.1:{closed}/run"},
            }})
        cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_CONFIG": path,
                                                       "ENGINE_TOKEN": "s3cret"})
        params = {"suite": "smoke", "n": 2}
        ok = one_shot(cluster, "ok", {"task_type": "ok", "parameters": params})
        fail = one_shot(cluster, "fail", {"task_type": "fail"})
        slow = one_shot(cluster, "slow", {"task_type": "slow"})
        refused = one_shot(cluster, "refused", {"task_type": "refused"})

        job = final_job(cluster, ok)
        assert job["status"] == "succeeded" and job["result"]["exit_code"] == 200, job
        output = job["result"]["output"]
        assert output.endswith("y\nTAIL") and len(output) <= 65536, len(output)
        req = next(r for r in engine.requests if r[0] == "/ok")
        headers, body = req[1], req[2]
        assert headers["Authorization"] == "Bearer s3cret" and headers["X-Static"] == "v"
        assert headers["Content-Type"] == "application/json"
        assert body["job_id"] == job["id"] and body["attempt"] == 1
        assert body["trigger_id"] == ok and body["task_type"] == "ok"
        assert body["parameters"] == params and body["scheduled_for"] == job["scheduled_for"]

        job = final_job(cluster, fail)
        assert job["status"] == "failed" and job["result"]["exit_code"] == 500, job
        assert job["result"]["output"] == "engine exploded", job
        assert "HTTP status 500" in job["result"]["error"], job

        job = final_job(cluster, slow)
        assert job["status"] == "timed_out", job
        assert job["duration_ms"] < 2500, job

        job = final_job(cluster, refused)
        assert job["status"] == "failed", job
        assert job["result"]["error"].startswith(f"cannot POST to 'http://127.0.0.1:{closed}/run'"), job
    finally:
        engine.shutdown()
        engine.server_close()


BAD_CONFIGS = [
    ("not json", "cannot parse worker config"),
    ('{"task_types": {}}', "task_types: required"),
    ('{"task_types": {"x": {"handler": "exec"}}}', "task_types.x.argv: required"),
    ('{"task_types": {"x": {"handler": "exec", "argv": []}}}', "task_types.x.argv"),
    ('{"task_types": {"x": {"handler": "noop", "bogus": 1}}}', "task_types.x.bogus: unknown key"),
    ('{"task_types": {"x": {"handler": "noop", "url": "http://a/"}}}', "task_types.x.url: unknown key"),
    ('{"task_types": {"x": {"handler": "rocket"}}}', "unknown handler 'rocket'"),
    ('{"task_types": {"x": {"handler": "noop", "max_concurrent": 0}}}', "task_types.x.max_concurrent"),
    ('{"task_types": {"x y": {"handler": "noop"}}}', "task_types.x y"),
    ('{"task_types": {"x": {"handler": "http", "url": "ftp://a/"}}}', "task_types.x.url"),
    ('{"task_types": {"x": {"handler": "http", "url": "http://a/", '
     '"headers": {"A": "${SKED_TEST_UNSET_VARIABLE}"}}}}', "'SKED_TEST_UNSET_VARIABLE' is not set"),
    ('{"task_types": {"x": {"handler": "exec", "argv": ["/bin/true"], "user": "no-such-user-zz"}}}',
     "no such user"),
    ('{"task_types": {"x": {"handler": "noop"}}, "labels": {"a": "b,c"}}', "labels.a"),
    ('{"task_types": {"x": {"handler": "noop"}}, "extra": 1}', "extra: unknown key"),
]


def test_a_bad_config_stops_the_worker_with_its_path(cluster, tmp_path):
    env = cluster.env(SKED_NODE_ID="bad-config")
    env.pop("SKED_TEST_UNSET_VARIABLE", None)
    cases = [(write_config(tmp_path, text, f"bad{i}.json"), want)
             for i, (text, want) in enumerate(BAD_CONFIGS)]
    cases.append((str(tmp_path / "missing.json"), "cannot read worker config"))
    for path, want in cases:
        r = subprocess.run([os.path.join(BIN, "sked-worker")], env=dict(env, SKED_WORKER_CONFIG=path),
                           capture_output=True, text=True, timeout=30)
        text = r.stdout + r.stderr
        assert r.returncode == 2, (path, r.returncode, text)
        assert f"'{path}'" in text and want in text, (want, text)
        assert not any(m in text for m in SANITIZER_MARKS), text
    r = subprocess.run([os.path.join(BIN, "sked-worker")],
                       env=dict(env, SKED_KILL_GRACE_MS="soon",
                                SKED_WORKER_CONFIG=write_config(
                                    tmp_path, {"task_types": {"n": {"handler": "noop"}}})),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "SKED_KILL_GRACE_MS" in r.stderr, r.stderr


# ---- protocol tests against a fake master ----------------------------------

class FakeMaster:
    """A master's ROUTER socket in the test: records what workers send and
    sends JOB, CANCEL and ACK."""

    def __init__(self, ctx):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.identity = None
        self.got = []  # (time, type, body), in arrival order

    def pump(self, duration=0.05):
        end = time.time() + duration
        while True:
            left = end - time.time()
            if not self.sock.poll(max(0, int(left * 1000))):
                if time.time() >= end:
                    return
                continue
            frames = self.sock.recv_multipart()
            self.identity = frames[0]
            assert frames[1] == b"SKED1", frames
            self.got.append((time.time(), frames[2].decode(), json.loads(frames[3])))

    def wait(self, type_, timeout=10, **match):
        """The first not yet consumed message of type_ whose body has match."""
        def find():
            self.pump()
            for i, (_, t, body) in enumerate(self.got):
                if t == type_ and all(body.get(k) == v for k, v in match.items()):
                    return self.got.pop(i)[2]
            return None
        return wait_for(find, timeout=timeout, interval=0, what=f"{type_} {match}")

    def all(self, type_, **match):
        self.pump()
        return [(t, b) for t, ty, b in self.got
                if ty == type_ and all(b.get(k) == v for k, v in match.items())]

    def send(self, type_, **body):
        body.setdefault("node_id", "fake-master")
        self.sock.send_multipart([self.identity, b"SKED1", type_.encode(), json.dumps(body).encode()])

    def job(self, job_id, task_type, attempt=1, **extra):
        extra.setdefault("parameters", {})
        self.send("JOB", job_id=job_id, trigger_id="t1", task_type=task_type, attempt=attempt,
                  scheduled_for=int(time.time() * 1000), **extra)


def test_credit_per_task_type_labels_output_and_cancel(cluster, tmp_path):
    ctx = zmq.Context()
    master = FakeMaster(ctx)
    mark = marker()
    loop = f"i=0; while :; do echo line $i; i=$((i+1)); sleep 0.1; done; : {mark}"
    path = write_config(tmp_path, {
        "task_types": {
            "one": {"handler": "exec", "argv": ["/bin/sh", "-c", loop], "env_allow": ["PATH"],
                    "max_concurrent": 1},
            "noop": {"handler": "noop"}},
        "labels": {"region": "eu", "gpu": "true"},
        "slots": 8})
    try:
        cluster.start_worker(0, SKED_MASTERS=master.endpoint, SKED_WORKER_CONFIG=path)
        hello = master.wait("HELLO")
        assert hello["slots"] == 8 and hello["free_slots"] == 8, hello
        assert set(hello["task_types"].split(",")) == {"one", "noop"}, hello
        assert set(hello["labels"].split(",")) == {"region=eu", "gpu=true"}, hello

        master.job("j1", "one")
        master.wait("STARTED", job_id="j1")
        started = time.time()
        # "one" is at its max_concurrent: no longer advertised, at once.
        hb = master.wait("HEARTBEAT", task_types="noop")
        assert hb["free_slots"] == 7 and hb["running"] == ["j1"], hb
        # A job sent on stale credit is refused, not held: its master sends
        # it elsewhere, or here again once there is room.
        master.job("j2", "one")
        refused = master.wait("REFUSED", job_id="j2")
        assert (refused["attempt"], refused["free_slots"], refused["task_types"]) == \
            (1, 7, "noop"), refused
        master.pump(0.8)
        assert not master.all("STARTED", job_id="j2")
        # Live output, in chunks at most every ~250 ms.
        chunks = master.all("OUTPUT", job_id="j1")
        assert len(chunks) >= 2, chunks
        assert len(chunks) <= (time.time() - started) / 0.25 + 2, chunks
        assert chunks[0][1]["output"].startswith("line 0\n") and chunks[0][1]["attempt"] == 1
        text = "".join(c[1]["output"] for c in chunks)
        assert text.startswith("line 0\nline 1\nline 2\n"), text

        master.send("CANCEL", job_id="j1", attempt=1, reason="cancelled")
        fin = master.wait("FINISHED", job_id="j1")
        assert fin["status"] == "cancelled" and fin["attempt"] == 1, fin
        assert fin["error"] == "cancelled by a master (reason: cancelled)", fin
        assert fin["output"].startswith("line 0\n"), fin
        # The type has room again: said at once, and j2 sent again runs.
        master.wait("HEARTBEAT", timeout=2, task_types="one,noop")
        master.job("j2", "one")
        master.wait("STARTED", job_id="j2")
        wait_for(lambda: len(pids(mark)) == 1, timeout=5, what="only j2's process")

        master.send("CANCEL", job_id="j2", attempt=1, reason="timed_out")
        fin = master.wait("FINISHED", job_id="j2")
        assert fin["status"] == "timed_out", fin
        wait_for(lambda: not pids(mark), timeout=5, what="j2's process to die")
        master.wait("HEARTBEAT", timeout=5, task_types="one,noop")

        master.job("j3", "nope")
        fin = master.wait("FINISHED", job_id="j3")
        assert fin["status"] == "failed" and "not served" in fin["error"], fin
        # A CANCEL for a job that is not here changes nothing.
        master.send("CANCEL", job_id="j9", attempt=1)
        master.job("j4", "noop")
        assert master.wait("FINISHED", job_id="j4")["status"] == "succeeded"
    finally:
        master.sock.close()
        ctx.term()


@contextlib.contextmanager
def worker_with_two_masters(cluster, **env):
    """A real worker (noop unless env says) connected to two fake masters,
    both greeted."""
    ctx = zmq.Context()
    a, b = FakeMaster(ctx), FakeMaster(ctx)
    try:
        cluster.start_worker(0, **{"SKED_MASTERS": f"{a.endpoint},{b.endpoint}",
                                   "SKED_TASK_TYPES": "noop", **env})
        a.wait("HELLO")
        b.wait("HELLO")
        yield a, b
    finally:
        a.sock.close()
        b.sock.close()
        ctx.term()


def test_finished_is_resent_until_acked(cluster):
    with worker_with_two_masters(cluster) as (a, b):
        a.job("j1", "noop")
        # Without an ACK: resent to the master it came from at the next
        # two heartbeats (300 ms apart), then to every master.
        wait_for(lambda: b.all("FINISHED", job_id="j1"), timeout=5, what="a resend to b")
        a.pump(0.1)
        at_a = [m for _, m in a.all("FINISHED", job_id="j1")]
        at_b = [m for _, m in b.all("FINISHED", job_id="j1")]
        assert at_a[0]["status"] == "succeeded"
        assert len(at_a) >= 4 and at_b, (len(at_a), len(at_b))
        assert all(m["at"] == at_a[0]["at"] for m in at_a + at_b)
        # seq counts every message the worker sends: b's first copy came
        # after the original and two resends to a, together with a's fourth.
        assert at_b[0]["seq"] == at_a[3]["seq"] + 1, ([m["seq"] for m in at_a], at_b[0]["seq"])
        b.send("ACK", job_id="j1", attempt=1)
        b.pump(0.3)
        a.got.clear()
        b.got.clear()
        # An ACKed FINISHED is not sent again; one ACKed at once never is.
        a.job("j2", "noop")
        a.wait("FINISHED", job_id="j2")
        a.send("ACK", job_id="j2", attempt=1)
        a.pump(2.0)
        b.pump(0.1)
        assert not a.all("FINISHED") and not b.all("FINISHED"), (a.got, b.got)
        assert a.all("HEARTBEAT")


def test_a_job_sent_again_after_it_ran_is_answered_not_run(cluster):
    """A master that takes a partition over before hearing from a worker
    may send an attempt again that already ran there (its STARTED was never
    written, its FINISHED not acknowledged yet): the worker answers with
    that FINISHED and does not run the attempt a second time. Another
    attempt of the same job does run."""
    with worker_with_two_masters(cluster) as (a, b):
        a.job("j1", "noop")
        first = a.wait("FINISHED", job_id="j1")
        b.job("j1", "noop")  # the new owner, not acknowledged yet by anyone
        again = b.wait("FINISHED", job_id="j1", timeout=5)
        assert again["status"] == "succeeded" and again["at"] == first["at"], (first, again)
        a.pump(0.3)
        b.pump(0.3)
        started = a.all("STARTED", job_id="j1") + b.all("STARTED", job_id="j1")
        assert len(started) == 1, started
        b.send("ACK", job_id="j1", attempt=1)
        b.job("j1", "noop", attempt=2)
        assert b.wait("STARTED", job_id="j1", attempt=2, timeout=5)


def test_a_job_beyond_the_free_slots_is_refused_and_a_repeat_is_not(cluster):
    """Two masters spend the same credit: the worker takes what its slots
    hold and answers REFUSED, with the credit it has, for the rest; it
    never queues a JOB behind a slot. A repeat of a JOB it runs is
    ignored, not refused (refused, it would be sent elsewhere and run
    twice)."""
    port = free_port()
    with worker_with_two_masters(cluster, SKED_TASK_TYPES="sleep", SKED_WORKER_SLOTS="1",
                                 SKED_METRICS_ADDR=f"127.0.0.1:{port}") as (a, b):
        a.job("j1", "sleep", parameters={"seconds": 3})
        a.wait("STARTED", job_id="j1")
        b.job("j2", "sleep", parameters={"seconds": 3})
        refused = b.wait("REFUSED", job_id="j2", timeout=3)
        assert (refused["attempt"], refused["slots"], refused["free_slots"]) == (1, 1, 0), refused
        b.job("j1", "sleep", parameters={"seconds": 3})  # a takeover's repeat
        assert a.wait("FINISHED", job_id="j1", timeout=10)["status"] == "succeeded"
        a.pump(0.3)
        b.pump(0.3)
        assert not b.all("REFUSED", job_id="j1"), b.all("REFUSED")
        assert not (a.all("STARTED", job_id="j2") + b.all("STARTED", job_id="j2")), \
            "a refused JOB ran"
        started = a.all("STARTED", job_id="j1") + b.all("STARTED", job_id="j1")
        assert not started, started  # the one STARTED was consumed above
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'sked_worker_jobs_refused_total{task_type="sleep"} 1' in metrics, metrics


def test_a_ping_is_answered_at_once_with_the_jobs_held_here(cluster):
    """A master taking partitions over PINGs every worker: the worker
    answers at once (not at its next heartbeat) with a HEARTBEAT that
    echoes the PING's token and lists what it holds, and keeps echoing the
    token in later heartbeats."""
    ctx = zmq.Context()
    master = FakeMaster(ctx)
    try:
        cluster.start_worker(0, SKED_MASTERS=master.endpoint, SKED_TASK_TYPES="noop",
                             SKED_HEARTBEAT_MS="3000", SKED_WORKER_TIMEOUT_MS="10000")
        assert "echo" not in master.wait("HELLO")
        master.job("held", "noop", start_at=int(time.time() * 1000) + 20000)
        master.pump(0.3)
        asked = time.time()
        master.send("PING", token=424242)
        hb = master.wait("HEARTBEAT", timeout=3, echo=424242)
        assert time.time() - asked < 1.5, "answered at the next heartbeat, not at once"
        assert "held" in hb.get("running", []), hb
        master.got.clear()
        later = master.wait("HEARTBEAT", timeout=6)
        assert later.get("echo") == 424242, later
        master.send("PING", token=0)  # malformed: dropped and counted
        master.send("PING", token=7)
        assert master.wait("HEARTBEAT", timeout=3, echo=7)
    finally:
        master.sock.close()
        ctx.term()


def test_a_job_with_start_at_is_held_until_then(cluster):
    """A JOB claimed ahead carries start_at: the worker holds it (listed
    as its own in heartbeats, holding a slot) and starts it at that time;
    a CANCEL meanwhile ends it unstarted: FINISHED `cancelled` without
    started_at. A start_at already past starts the job at once."""
    ctx = zmq.Context()
    master = FakeMaster(ctx)
    try:
        cluster.start_worker(0, SKED_MASTERS=master.endpoint, SKED_TASK_TYPES="noop",
                             SKED_WORKER_SLOTS="4")
        master.wait("HELLO")
        now = int(time.time() * 1000)
        master.job("held", "noop", start_at=now + 1500)
        master.job("withdrawn", "noop", start_at=now + 1500)
        master.job("late", "noop", start_at=now - 1000)
        assert master.wait("STARTED", job_id="late")["at"] < now + 1000
        def listed():
            return next((b for _, b in master.all("HEARTBEAT")
                         if {"held", "withdrawn"} <= set(b.get("running", []))), None)
        hb = wait_for(listed, timeout=5, interval=0.1, what="a heartbeat listing the held jobs")
        assert hb["free_slots"] <= 2, hb
        master.send("CANCEL", job_id="withdrawn", attempt=1, reason="withdrawn")
        fin = master.wait("FINISHED", job_id="withdrawn")
        assert fin["status"] == "cancelled" and not fin.get("started_at"), fin
        started = master.wait("STARTED", job_id="held", timeout=5)
        assert now + 1500 <= started["at"] < now + 3000, (now, started)
        assert not master.all("STARTED", job_id="withdrawn")
    finally:
        master.sock.close()
        ctx.term()


def test_drain_timeout_ends_running_processes(cluster, tmp_path):
    ctx = zmq.Context()
    master = FakeMaster(ctx)
    mark = marker()
    path = write_config(tmp_path, {"task_types": {
        "long": {"handler": "exec", "argv": ["/bin/sh", "-c", f"sleep {mark}"], "env_allow": ["PATH"]},
        "queued": {"handler": "exec", "argv": ["/bin/true"], "max_concurrent": 1}},
        "slots": 2})
    try:
        w = cluster.start_worker(0, SKED_MASTERS=master.endpoint, SKED_WORKER_CONFIG=path,
                                 SKED_DRAIN_TIMEOUT_MS="800", SKED_KILL_GRACE_MS="300")
        master.wait("HELLO")
        master.job("j1", "long")
        master.wait("STARTED", job_id="j1")
        master.job("j2", "queued", start_at=int(time.time() * 1000) + 60000)  # held till then
        wait_for(lambda: pids(f"sleep {mark}"), timeout=5, what="the job's sleep")
        w.popen.send_signal(signal.SIGTERM)
        bye = master.wait("BYE")  # lists its jobs, as a heartbeat does, for a takeover meanwhile
        assert {"j1", "j2"} <= set(bye.get("running", [])), bye
        fins = {f["job_id"]: f for f in (master.wait("FINISHED", timeout=5) for _ in range(2))}
        assert fins["j1"]["status"] == "failed" and fins["j1"]["error"] == "worker shutting down"
        assert fins["j1"]["exit_code"] == 128 + signal.SIGTERM, fins
        assert fins["j2"]["status"] == "failed" and fins["j2"]["error"] == "worker shutting down"
        assert not master.all("STARTED", job_id="j2")
        assert w.popen.wait(timeout=10) == 0
        assert not pids(f"sleep {mark}")
    finally:
        master.sock.close()
        ctx.term()


def test_live_output_reaches_the_job_while_it_runs(cluster, tmp_path):
    script = tmp_path / "ticker.sh"
    script.write_text("for i in 1 2 3 4 5 6 7 8; do echo tick-$i; sleep 0.5; done\n")
    conf = write_config(tmp_path, {"task_types": {"ticker": {
        "handler": "exec", "argv": ["/bin/sh", str(script)], "env_allow": ["PATH"]}}})
    cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_CONFIG": conf})
    tid = cluster.api("POST", "/triggers/", json={
        "name": "ticker", "trigger_config": {"cron_expression": "0 2 * * *"},
        "execution_config": {"task_type": "ticker"}}).json()["id"]
    jid = cluster.api("POST", f"/triggers/{tid}/execute").json()["job_id"]

    def live():
        j = cluster.api("GET", f"/jobs/{jid}").json()
        return j if j["status"] == "running" and "tick-2" in (j.get("output_tail") or "") else None
    j = wait_for(live, 10, what="live output while the job runs")
    assert "tick-8" not in j["output_tail"]
    done = wait_for(lambda: (lambda j: j if j["status"] == "succeeded" else None)(
        cluster.api("GET", f"/jobs/{jid}").json()), 15, what="the job to end")
    assert "tick-8" in done["result"]["output"]
