"""A worker is one node id across ZeroMQ connections: one that reconnects
keeps the jobs it reports, one that restarts (HELLO) replaces its old
entry at once (its unreported jobs end lost, it is not shown draining).
The fake worker here speaks the real protocol over a real DEALER socket."""
import json
import signal
import time

import zmq

from conftest import wait_for


class FakeWorker:
    """One connection of worker node `node` serving task type `fake`. Like
    a real worker it echoes, in its HELLO/HEARTBEAT/BYE, the token of the
    last PING it read (`answer_pings=False`: a worker that never reads)."""

    def __init__(self, ctx, port, node="fake-1", answer_pings=True):
        self.node = node
        self.answer_pings = answer_pings
        self.echo = 0
        self.inbox = []
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def _read(self, timeout_ms):
        """Reads what has come (waiting up to timeout_ms for the first);
        PINGs set the echo, the rest goes to the inbox."""
        while self.sock.poll(timeout_ms):
            _, t, body = self.sock.recv_multipart()
            kind, msg = t.decode(), json.loads(body)
            if kind == "PING":
                if self.answer_pings:
                    self.echo = msg["token"]
            else:
                self.inbox.append((kind, msg))
            timeout_ms = 0

    def send(self, kind, **body):
        body["node_id"] = self.node
        if kind in ("HELLO", "HEARTBEAT", "BYE") and self.answer_pings:
            self._read(0)
            if self.echo:
                body.setdefault("echo", self.echo)
        self.sock.send_multipart([b"SKED1", kind.encode(), json.dumps(body).encode()])

    def hello(self, kind="HELLO", free=1, running=()):
        self.send(kind, slots=1, free_slots=free, task_types="fake" if free else "",
                  serves="fake", running=list(running))

    def recv(self, kind, timeout=10.0, beat=None):
        """The next message of `kind`, sending HEARTBEATs (args `beat`) meanwhile."""
        end = time.time() + timeout
        while time.time() < end:
            if beat is not None:
                self.hello("HEARTBEAT", **beat)
            self._read(250)
            for i, (k, msg) in enumerate(self.inbox):
                if k == kind:
                    del self.inbox[i]
                    return msg
        raise AssertionError(f"no {kind} within {timeout}s")

    def close(self):
        self.sock.close()


def send_fake_job(cluster, fw):
    """A manual run of a `fake` trigger; returns the JOB fw received."""
    r = cluster.api("POST", "/triggers/", json={
        "name": "on fake", "trigger_config": {}, "execution_config": {"task_type": "fake"}})
    assert r.status_code == 201, r.text
    r = cluster.api("POST", f"/triggers/{r.json()['id']}/execute", json={})
    assert r.status_code == 202, r.text
    return fw.recv("JOB", 15, beat={"free": 1})


def run_fake_job(cluster, fw):
    job = send_fake_job(cluster, fw)
    fw.send("STARTED", job_id=job["job_id"], attempt=job["attempt"], at=int(time.time() * 1000))
    wait_for(lambda: cluster.db.jobs.find_one({"_id": job["job_id"], "status": "running"}), 10,
             what="the job running")
    return job


def list_then_finish(cluster, fw, job, seconds):
    """fw heartbeats listing the job for `seconds`, which must leave it
    running as attempt 1, then reports it succeeded. Returns the ACK."""
    end = time.time() + seconds
    while time.time() < end:
        fw.hello("HEARTBEAT", free=0, running=[job["job_id"]])
        time.sleep(0.3)
    doc = cluster.db.jobs.find_one({"_id": job["job_id"]})
    assert doc["status"] == "running" and doc["attempt"] == 1, doc
    fw.send("FINISHED", job_id=job["job_id"], attempt=1, at=int(time.time() * 1000),
            status="succeeded", exit_code=0, duration_ms=10)
    return fw.recv("ACK", 10, beat={"free": 1})


def fake_running_a_job(cluster, worker_timeout_ms):
    """One master (SKED_WORKER_TIMEOUT_MS as given) and a fake worker
    connection running a job: (context, connection, JOB)."""
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_WORKER_TIMEOUT_MS": str(worker_timeout_ms)})
    ctx = zmq.Context()
    fw = FakeWorker(ctx, cluster.master_ports[0])
    fw.hello()
    return ctx, fw, run_fake_job(cluster, fw)


def test_reconnected_worker_keeps_its_running_job(cluster):
    ctx, fw, job = fake_running_a_job(cluster, 3000)
    try:
        fw.close()  # the connection drops; the process (and its job) lives on
        time.sleep(0.5)
        fw = FakeWorker(ctx, cluster.master_ports[0])
        # past SKED_WORKER_TIMEOUT_MS of the old connection
        ack = list_then_finish(cluster, fw, job, 5)
        assert ack["job_id"] == job["job_id"]
        doc = cluster.db.jobs.find_one({"_id": job["job_id"]})
        assert doc["status"] == "succeeded" and [a["status"] for a in doc["attempts"]] == ["succeeded"]
        assert "worker reconnected" in cluster.masters[0].text()
        fw.close()
    finally:
        ctx.destroy(linger=0)


def test_an_unreachable_connection_hands_its_jobs_to_the_live_one(cluster):
    """Two connections of one worker seem alive at once (after a master
    stall, the old one's queued messages and the new one's alternate), so
    neither replaces the other. When a send to the old one then fails, its
    entry goes at the next tick, and the jobs the live connection lists
    move to it: they are not taken for lost (and run again by a retry)
    while the worker still runs them."""
    ctx, old, job = fake_running_a_job(cluster, 5000)
    try:
        new = FakeWorker(ctx, cluster.master_ports[0])
        for _ in range(5):  # both connections heartbeat: a clash, both kept
            old.hello("HEARTBEAT", free=1, running=[job["job_id"]])
            new.hello("HEARTBEAT", free=0, running=[job["job_id"]])
            time.sleep(0.1)
        master = cluster.masters[0]
        wait_for(lambda: "two workers share a node id" in master.text(), 5, what="the clash seen")
        old.close()
        time.sleep(0.2)
        # The next fake job goes to the old connection, the one with credit:
        # the send fails and the master drops that entry.
        r = cluster.api("POST", "/triggers/", json={
            "name": "second", "trigger_config": {}, "execution_config": {"task_type": "fake"}})
        cluster.api("POST", f"/triggers/{r.json()['id']}/execute", json={})
        wait_for(lambda: "worker gone" in master.text(), 5, interval=0.05,
                 what="the unreachable entry dropped")
        assert "other_connection=live" in master.text()
        doc = cluster.db.jobs.find_one({"_id": job["job_id"]})
        assert doc["status"] == "running" and doc["attempt"] == 1, doc
        new.send("FINISHED", job_id=job["job_id"], attempt=1, at=int(time.time() * 1000),
                 status="succeeded", exit_code=0, duration_ms=10)
        new.recv("ACK", 10, beat={"free": 0, "running": [job["job_id"]]})
        doc = cluster.db.jobs.find_one({"_id": job["job_id"]})
        assert [a["status"] for a in doc["attempts"]] == ["succeeded"], doc
        assert master.text().count("two workers share a node id") <= 2, "said once per connection"
        new.close()
    finally:
        ctx.destroy(linger=0)


def reconnect_before_reading(cluster):
    """A worker that stalled past its connection's heartbeat timeout: a JOB
    went out on the old connection, and the worker's first HEARTBEAT on
    the new one does not list it yet. Returns (context, new connection, JOB)."""
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_WORKER_TIMEOUT_MS": "20000"})
    ctx = zmq.Context()
    old = FakeWorker(ctx, cluster.master_ports[0])
    old.hello()
    job = send_fake_job(cluster, old)
    old.close()
    time.sleep(1)  # silent past a heartbeat (300 ms): a reconnect, not a clash
    new = FakeWorker(ctx, cluster.master_ports[0])
    new.hello("HEARTBEAT", free=0)
    wait_for(lambda: "worker reconnected" in cluster.masters[0].text(), 5, interval=0.05,
             what="the new connection taken for the node")
    return ctx, new, job


def test_a_job_sent_on_the_old_connection_is_kept_when_it_starts_after_the_reconnect(cluster):
    """The worker reads the JOB after announcing itself: the STARTED that
    follows keeps the attempt, which is not taken for lost (nor run again)."""
    ctx, new, job = reconnect_before_reading(cluster)
    try:
        new.send("STARTED", job_id=job["job_id"], attempt=1, at=int(time.time() * 1000))
        list_then_finish(cluster, new, job, 2)  # several heartbeats (300 ms)
        doc = cluster.db.jobs.find_one({"_id": job["job_id"]})
        assert [a["status"] for a in doc["attempts"]] == ["succeeded"], doc
        assert "job lost" not in cluster.masters[0].text()
        new.close()
    finally:
        ctx.destroy(linger=0)


def test_a_job_the_new_connection_never_lists_ends_lost_within_heartbeats(cluster):
    """The JOB died with the old connection: the new one's announcements a
    heartbeat later still do not list it, so it ends lost then, long
    before the worker timeout (20 s)."""
    ctx, new, job = reconnect_before_reading(cluster)
    try:
        t0 = time.time()
        doc = wait_for(lambda: new.hello("HEARTBEAT", free=0) or cluster.db.jobs.find_one(
            {"_id": job["job_id"], "status": "lost"}), 5, interval=0.3, what="the job lost")
        assert time.time() - t0 < 5
        assert doc["attempts"][0]["error"] == "worker reconnected without it", doc
        new.close()
    finally:
        ctx.destroy(linger=0)


def test_restarted_worker_replaces_its_old_entry_at_once(cluster):
    cluster.start(masters=1, workers=1, master_env={"SKED_WORKER_TIMEOUT_MS": "20000"})
    ctx = zmq.Context()
    try:
        fw = FakeWorker(ctx, cluster.master_ports[0])
        fw.hello()
        job = run_fake_job(cluster, fw)
        fw.close()
        t0 = time.time()
        fw = FakeWorker(ctx, cluster.master_ports[0])
        fw.hello()  # a new process: it runs nothing
        done = wait_for(lambda: cluster.db.jobs.find_one({"_id": job["job_id"], "status": "lost"}),
                        5, what="the old process's job lost")
        assert time.time() - t0 < 5  # not after the 20 s worker timeout
        assert done["attempts"][0]["error"] == "worker restarted"
        fakes = wait_for(lambda: [w for w in cluster.health().get("workers", [])
                                  if w["node_id"] == "fake-1" and w["inflight"] == 0], 5,
                         what="one fake-1 entry with nothing in flight")
        assert len(fakes) == 1, fakes
        fw.close()
        # A real worker restarted after SIGTERM (BYE: draining) is not shown
        # draining once its new process says HELLO.
        w = cluster.workers[0]
        assert w.stop(signal.SIGTERM) == 0
        cluster.checked_stop.append(w)
        wait_for(lambda: [x for x in cluster.health().get("workers", [])
                          if x["node_id"] == "worker-0" and x["draining"]], 10,
                 what="worker-0 shown draining")
        cluster.start_worker(0)
        wait_for(lambda: [x for x in cluster.health().get("workers", [])
                          if x["node_id"] == "worker-0" and not x["draining"]], 10,
                 what="worker-0 back, not draining")
    finally:
        ctx.destroy(linger=0)


def test_finished_carries_the_start_time_when_started_went_unrecorded(cluster):
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"})
    ctx = zmq.Context()
    try:
        fw = FakeWorker(ctx, cluster.master_ports[0])
        fw.hello()
        job = send_fake_job(cluster, fw)
        began = int(time.time() * 1000) - 1234
        # No STARTED (lost, or sent while another master held the partition).
        fw.send("FINISHED", job_id=job["job_id"], attempt=1, at=began + 1234, status="succeeded",
                exit_code=0, duration_ms=0, started_at=began)
        fw.recv("ACK", 10, beat={"free": 1})
        doc = cluster.db.jobs.find_one({"_id": job["job_id"]})
        assert doc["status"] == "succeeded"
        assert int(doc["started_at"].timestamp() * 1000) == began, doc
        fw.close()
    finally:
        ctx.destroy(linger=0)
