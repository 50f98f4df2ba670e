"""Retries (G3): failed, timed-out and lost attempts run again under the
trigger's retry_policy, on one job document per fire, with backoff; the
master times out hung attempts itself; a stale attempt's messages never
overwrite a newer attempt."""
import datetime as dt
import json
import time

import zmq

from conftest import (DelayProxy, free_port, insert_job_history, one_shot, trigger_partition, wait_for,
                      zulu)

FINAL = ("succeeded", "failed", "timed_out", "lost", "cancelled")
# An insert of outcome records (`job_results`) as it goes over the wire.
RECORD_INSERT = b"insert\x00\x0c\x00\x00\x00job_results\x00"


def the_job(cluster, tid):
    docs = list(cluster.db.jobs.find({"trigger_id": tid}))
    assert len(docs) <= 1, f"one fire made {len(docs)} job documents"
    return docs[0] if docs else None


def wait_final(cluster, tid, timeout, seen=None, poll=None):
    """Waits for the trigger's job to reach a final status; records every
    (status, attempt) observed on the way in `seen`."""
    def final():
        if poll:
            poll()
        job = the_job(cluster, tid)
        if job and seen is not None:
            seen.add((job["status"], job["attempt"]))
        return job if job and job["status"] in FINAL else None
    return wait_for(final, timeout=timeout, interval=0.05, what="a final job status")


def seconds(a, b):
    return (b - a).total_seconds()


def test_failed_attempts_are_retried_with_exponential_backoff(cluster):
    cluster.start(masters=1, workers=1)
    tid = one_shot(cluster, "fails-thrice", {
        "task_type": "fail", "parameters": {"message": "boom"},
        "retry_policy": {"max_retries": 2, "initial_delay": 1, "backoff_multiplier": 2,
                         "jitter": False}})
    seen = set()
    job = wait_final(cluster, tid, timeout=30, seen=seen)
    assert job["status"] == "failed" and job["attempt"] == 3, job
    attempts = job["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3], attempts
    for a in attempts:
        assert a["status"] == "failed" and a["error"] == "boom" and a["exit_code"] == 1, a
        assert a["worker_id"] == "worker-0" and a["started_at"] and a["finished_at"], a
    starts = [a["started_at"] for a in attempts]
    gap1, gap2 = seconds(starts[0], starts[1]), seconds(starts[1], starts[2])
    print(f"attempt start gaps: {gap1:.3f}s, {gap2:.3f}s")
    assert 0.9 <= gap1 <= 2.0, (gap1, gap2)   # initial_delay 1
    assert 1.9 <= gap2 <= 3.5, (gap1, gap2)   # 1 * 2^1
    # Between attempts the job waited as `retrying`, numbered for the next one.
    assert ("retrying", 2) in seen and ("retrying", 3) in seen, seen
    # What a user sees: one job for the fire, its last attempt's outcome.
    r = cluster.api("GET", f"/jobs/{job['_id']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "failed" and body["attempt"] == 3, body
    assert body["result"]["error"] == "boom" and body["result"]["exit_code"] == 1, body
    items = cluster.api("GET", f"/triggers/{tid}/history").json()["items"]
    assert len(items) == 1 and items[0]["status"] == "failed" and items[0]["attempt"] == 3, items


def test_no_retry_policy_means_one_attempt(cluster):
    cluster.start(masters=1, workers=1)
    tid = one_shot(cluster, "fails-once", {"task_type": "fail"})
    job = wait_final(cluster, tid, timeout=20)
    time.sleep(2.5)  # a retry (default initial_delay 1 s) would have begun by now
    job = the_job(cluster, tid)
    assert job["status"] == "failed" and job["attempt"] == 1, job
    assert [a["status"] for a in job["attempts"]] == ["failed"], job["attempts"]


def test_timed_out_attempts_are_retried_then_stay_timed_out(cluster):
    cluster.start(masters=1, workers=1)
    tid = one_shot(cluster, "too-slow", {
        "task_type": "sleep", "parameters": {"seconds": 5}, "max_execution_time": 1,
        "retry_policy": {"max_retries": 1}})
    job = wait_final(cluster, tid, timeout=30)
    assert job["status"] == "timed_out" and job["attempt"] == 2, job
    attempts = job["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "timed_out"), (2, "timed_out")]
    for a in attempts:
        # Ended by the limit (1 s), not by the 5 s sleep.
        took = seconds(a["started_at"], a["finished_at"])
        assert 0.8 <= took <= 3.5, (took, a)
    # Default policy: initial_delay 1 s with full jitter, so at most ~1 s apart.
    gap = seconds(attempts[0]["finished_at"], attempts[1]["started_at"])
    assert -0.1 <= gap <= 2.5, gap


def test_a_lost_attempt_is_retried_on_another_worker(cluster):
    cluster.start(masters=1, workers=2)
    tid = one_shot(cluster, "survives", {
        "task_type": "sleep", "parameters": {"seconds": 3},
        "retry_policy": {"max_retries": 1, "initial_delay": 0.5, "jitter": False}})
    running = wait_for(lambda: (lambda j: j if j and j["status"] == "running" else None)(
        the_job(cluster, tid)), timeout=20, interval=0.05, what="the job running")
    victim_id = running["worker_id"]
    victim = next(p for p in cluster.workers if p.name == victim_id)
    survivor = next(p for p in cluster.workers if p is not victim)
    victim.popen.kill()
    victim.popen.wait(timeout=10)
    victim.log.close()
    cluster.checked_stop.append(victim)
    killed = time.time()
    seen = set()
    job = wait_final(cluster, tid, timeout=30, seen=seen)
    print(f"final status {time.time() - killed:.2f}s after the kill")
    assert job["status"] == "succeeded" and job["attempt"] == 2, job
    a1, a2 = job["attempts"]
    assert (a1["attempt"], a1["status"], a1["worker_id"]) == (1, "lost", victim_id), a1
    assert a1["error"] == "worker stopped heartbeating", a1
    assert (a2["attempt"], a2["status"], a2["worker_id"]) == (2, "succeeded", survivor.name), a2
    assert job["worker_id"] == survivor.name and job["result"]["exit_code"] == 0, job
    assert ("retrying", 2) in seen or ("running", 2) in seen, seen


class FakeWorker:
    """A worker speaking the wire protocol from the test: it heartbeats
    while pumped, and sends STARTED/FINISHED only when told to."""

    def __init__(self, port, node_id, task_types):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.node_id, self.task_types = node_id, task_types
        self.free_slots = 4  # the credit its heartbeats give
        self.next_hb = 0.0
        self.jobs = []
        self.cancels = []
        self.acks = []

    def send(self, type_, **body):
        body["node_id"] = self.node_id
        self.sock.send_multipart([b"SKED1", type_.encode(), json.dumps(body).encode()])

    def pump(self, duration):
        end = time.time() + duration
        while True:
            now = time.time()
            if now >= self.next_hb:
                self.send("HEARTBEAT", slots=4, free_slots=self.free_slots,
                          task_types=self.task_types)
                self.next_hb = now + 0.3
            if now >= end:
                return
            if self.sock.poll(int(max(0, min(end, self.next_hb) - now) * 1000) + 1):
                frames = self.sock.recv_multipart()
                if frames[1] == b"JOB":
                    self.jobs.append(json.loads(frames[2]))
                elif frames[1] == b"CANCEL":
                    self.cancels.append(json.loads(frames[2]))
                elif frames[1] == b"ACK":
                    self.acks.append(json.loads(frames[2]))

    def wait_job(self, timeout):
        def got():
            self.pump(0.1)
            return self.jobs.pop(0) if self.jobs else None
        return wait_for(got, timeout=timeout, interval=0, what="a JOB at the fake worker")

    def close(self):
        self.sock.close()
        self.ctx.term()


def test_master_times_out_a_hung_attempt_and_ignores_its_late_messages(cluster):
    # The real worker serves only noop: sleep jobs go to the fake one.
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"})
    fake = FakeWorker(cluster.master_ports[0], "fake-worker", "sleep")
    try:
        fake.pump(0.5)
        tid = one_shot(cluster, "hangs", {
            "task_type": "sleep", "parameters": {"seconds": 1}, "max_execution_time": 1,
            "retry_policy": {"max_retries": 1, "initial_delay": 1, "jitter": False}})
        j1 = fake.wait_job(timeout=20)
        assert j1["attempt"] == 1 and j1["max_execution_time"] == 1, j1
        jid = j1["job_id"]
        fake.send("STARTED", job_id=jid, attempt=1, at=int(time.time() * 1000))
        started = time.time()
        # Attempt 1 never finishes; the master gives up after max_execution_time
        # (1 s) + its grace (5 s) and retries after initial_delay (1 s).
        j2 = fake.wait_job(timeout=25)
        waited = time.time() - started
        print(f"attempt 2 sent {waited:.2f}s after attempt 1 started")
        assert j2["job_id"] == jid and j2["attempt"] == 2, j2
        assert 5.5 <= waited <= 15, waited
        doc = cluster.db.jobs.find_one({"_id": jid})
        assert doc["status"] == "retrying" and doc["attempt"] == 2, doc
        assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [(1, "timed_out")]
        assert doc["attempts"][0]["worker_id"] == "fake-worker"
        # The hung attempt's worker was told to stop it.
        assert [(c["job_id"], c["attempt"], c["reason"]) for c in fake.cancels] == \
            [(jid, 1, "timed_out")], fake.cancels

        fake.send("STARTED", job_id=jid, attempt=2, at=int(time.time() * 1000))

        def job_is(status, attempt):
            fake.pump(0.1)
            d = cluster.db.jobs.find_one({"_id": jid})
            return d if d["status"] == status and d["attempt"] == attempt else None
        wait_for(lambda: job_is("running", 2), timeout=10, interval=0, what="attempt 2 running")
        # Late messages of attempt 1 must not touch attempt 2.
        now = int(time.time() * 1000)
        fake.send("FINISHED", job_id=jid, attempt=1, at=now, status="succeeded", exit_code=0)
        fake.send("STARTED", job_id=jid, attempt=1, at=now)
        fake.pump(1.0)
        doc = cluster.db.jobs.find_one({"_id": jid})
        assert doc["status"] == "running" and doc["attempt"] == 2, doc
        assert len(doc["attempts"]) == 1 and "result" not in doc, doc

        fake.send("FINISHED", job_id=jid, attempt=2, at=int(time.time() * 1000), status="failed",
                  exit_code=3, error="bad", duration_ms=100)
        doc = wait_for(lambda: job_is("failed", 2), timeout=10, interval=0, what="attempt 2 failed")
        assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [(1, "timed_out"),
                                                                          (2, "failed")]
        assert doc["result"] == {"exit_code": 3, "error": "bad"}, doc
        # max_retries 1 used up: nothing more is sent.
        fake.pump(2.0)
        assert not fake.jobs, fake.jobs
    finally:
        fake.close()


def test_a_refused_job_is_queued_again_and_sent_when_there_is_room(cluster):
    """A worker with no room for a JOB (another master spent the same
    credit) answers REFUSED: the master takes the job back, spends no
    attempt on it, sends that worker nothing while it says it is full, and
    sends the same attempt again once it has room."""
    from test_metrics import scrape, val
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_METRICS_ADDR": maddr})
    fake = FakeWorker(cluster.master_ports[0], "fake-worker", "sleep")
    try:
        fake.pump(0.5)
        tid = one_shot(cluster, "refused", {"task_type": "sleep", "parameters": {"seconds": 1},
                                            "retry_policy": {"max_retries": 0}})
        j1 = fake.wait_job(timeout=20)
        jid = j1["job_id"]
        fake.free_slots = 0
        fake.send("REFUSED", job_id=jid, attempt=1, slots=4, free_slots=0, task_types="sleep")
        fake.pump(2.0)  # heartbeats saying it is full
        assert not fake.jobs, fake.jobs
        doc = cluster.db.jobs.find_one({"_id": jid})
        assert (doc["status"], doc["attempt"]) == ("queued", 1), doc
        m, _ = scrape(f"http://{maddr}/metrics")
        assert val(m, "sked_jobs_refused_total", task_type="sleep") == 1
        assert val(m, "sked_queue_depth") == 1

        fake.free_slots = 4
        j2 = fake.wait_job(timeout=5)
        assert (j2["job_id"], j2["attempt"]) == (jid, 1), j2
        now = int(time.time() * 1000)
        fake.send("STARTED", job_id=jid, attempt=1, at=now)
        fake.send("FINISHED", job_id=jid, attempt=1, at=now + 5, status="succeeded", exit_code=0,
                  duration_ms=5)
        doc = wait_final(cluster, tid, timeout=10, poll=lambda: fake.pump(0.1))
        assert doc["status"] == "succeeded" and doc["attempt"] == 1, doc
        assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [(1, "succeeded")], doc
        fake.pump(1.0)
        assert not fake.jobs, fake.jobs
    finally:
        fake.close()


def test_a_resent_finished_is_acknowledged_without_another_write(cluster):
    """A worker resends FINISHED until its ACK arrives (a backlog of status
    writes delays ACKs). A resend of one the master has persisted gets its
    ACK at once and costs no store write."""
    from test_metrics import scrape, val
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_METRICS_ADDR": maddr})
    fake = FakeWorker(cluster.master_ports[0], "fake-worker", "sleep")

    def updates():
        m, _ = scrape(f"http://{maddr}/metrics")
        return val(m, "sked_store_operation_duration_seconds_count", op="update_job")

    def acks(n):
        def got():
            fake.pump(0.1)
            return len(fake.acks) >= n
        wait_for(got, timeout=10, interval=0, what=f"{n} ACKs")
    try:
        fake.pump(0.5)
        one_shot(cluster, "resent", {"task_type": "sleep", "parameters": {"seconds": 1}})
        j = fake.wait_job(timeout=20)
        now = int(time.time() * 1000)
        fin = dict(job_id=j["job_id"], attempt=1, at=now, status="succeeded", started_at=now - 5,
                   duration_ms=5)
        fake.send("FINISHED", **fin)
        acks(1)
        before = updates()
        for n in range(2, 5):  # one at a time: resends that come together wait as one
            fake.send("FINISHED", **fin)
            acks(n)
        assert updates() == before, "a resent FINISHED was written again"
        assert cluster.db.jobs.find_one({"_id": j["job_id"]})["status"] == "succeeded"
    finally:
        fake.sock.close()
        fake.ctx.term()


def test_resends_of_a_finished_waiting_its_turn_are_dropped_on_arrival(cluster):
    """Behind a slow store, a worker's resends of one FINISHED (every
    heartbeat until ACKed) used to queue up with it; with a burst of
    10,000 jobs they filled the waiting queue and most of the master's
    heap. A resend whose attempt's FINISHED is still waiting is dropped and
    counted; the one that waited is written once and ACKed."""
    from test_metrics import scrape, val
    maddr = f"127.0.0.1:{free_port()}"
    proxy = DelayProxy(cluster.store_port)
    cluster.cleanups.append(proxy.stop)
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_METRICS_ADDR": maddr,
                              "SKED_MONGO_URI": f"mongodb://127.0.0.1:{proxy.port}/{cluster.db_name}"})
    fake = FakeWorker(cluster.master_ports[0], "fake-worker", "sleep")
    try:
        fake.pump(0.5)
        tid = one_shot(cluster, "resent-while-waiting", {"task_type": "sleep",
                                                         "parameters": {"seconds": 1}})
        j = fake.wait_job(timeout=20)
        now = int(time.time() * 1000)
        fin = dict(job_id=j["job_id"], attempt=1, at=now, status="succeeded", started_at=now - 5,
                   duration_ms=5)
        proxy.delay = 0.1  # more holds the leases' renewals past their TTL
        # A STARTED of a job the master does not hold costs it two store
        # round trips: the FINISHED and its resends arrive meanwhile.
        fake.send("STARTED", job_id="not-held-here", attempt=1, at=now)
        time.sleep(0.03)
        for _ in range(30):
            fake.send("FINISHED", **fin)
        doc = wait_final(cluster, tid, timeout=20, poll=lambda: fake.pump(0.1))
        assert doc["status"] == "succeeded", doc
        proxy.delay = 0.0
        fake.pump(1.0)
        m, _ = scrape(f"http://{maddr}/metrics")
        dropped = val(m, "sked_status_resends_dropped_total")
        acked = [a for a in fake.acks if a["job_id"] == j["job_id"]]
        print(f"{dropped} resends dropped, {len(acked)} ACKs")
        assert dropped >= 20, dropped
        assert len(acked) == 30 - dropped, (dropped, acked)
    finally:
        fake.close()


def test_a_status_for_a_partition_held_elsewhere_is_counted_not_acknowledged(cluster):
    """Workers resend an unacknowledged FINISHED to every master; those
    that do not hold the job's partition ignore it. Behind a slow store
    that is every late ACK, once per master: it is counted
    (`sked_status_not_held_total`), not logged a line each (14,000 warnings
    a minute at 1,000 fires a second), and never acknowledged, so the
    worker keeps it for the holder."""
    from test_metrics import scrape, val
    maddr = f"127.0.0.1:{free_port()}"
    ports = [free_port(), free_port()]
    cluster.master_ports = ports
    cluster.start_master(0, ports[0], SKED_METRICS_ADDR=maddr)
    cluster.start_master(1, ports[1])

    def held_by(owner):
        now = dt.datetime.now(dt.timezone.utc)
        return {int(d["resource"].split("/")[1]) for d in cluster.db.locks.find({"kind": "lease"})
                if d["resource"].startswith("partition/") and d.get("owner") == owner
                and not d.get("released_at") and d["expires_at"] > now}
    wait_for(lambda: len(held_by("master-1")) >= 2 and len(held_by("master-0")) >= 2, 30,
             what="the partitions shared by both masters")
    other = sorted(held_by("master-1"))
    names = [f"elsewhere-{i}" for i in range(200)]
    trig = next(n for n in names if trigger_partition(n) in other)
    fake = FakeWorker(ports[0], "fake-worker", "noop")
    try:
        fake.pump(0.5)
        now = int(time.time() * 1000)
        for k in range(5):  # five jobs: resends of one that come together wait as one
            fake.send("FINISHED", job_id=f"{trig}@{now - 1000 * k}", attempt=1, at=now,
                      status="succeeded", started_at=now - 5, duration_ms=5)
        fake.pump(1.5)
        m, _ = scrape(f"http://{maddr}/metrics")
        assert val(m, "sked_status_not_held_total") == 5, val(m, "sked_status_not_held_total")
        assert not fake.acks, fake.acks
        assert "not held here" not in cluster.masters[0].text(), "logged at info or above"
    finally:
        fake.close()


def test_freed_slots_get_new_jobs_while_a_burst_of_ends_is_written(cluster):
    """64 jobs due at once for a worker with 8 slots, on a store where each
    status write is slow (every insert of outcome records held 0.5 s on
    its way to the store). Like a real worker whose
    slots are all taken, the fake one reports a full batch's ends first and
    then, in one heartbeat, its freed slots. The master hands out that
    credit at once, while the ends are still being written, instead of
    after them: the last JOB reaches the worker before a quarter of the
    FINISHED are acknowledged (about 48 without it: one JOB per written end
    and a batch per heartbeat handled after its batch's ends). With the
    writes slowed by 6,000 jobs of history and no usable `_id` index
    instead, outcome records (inserts) were written fast enough, now and
    then, to be acknowledged before the last JOB (1 run in 9)."""
    n, slots = 64, 8
    proxy = DelayProxy(cluster.store_port)
    cluster.cleanups.append(proxy.stop)
    proxy.slow = (RECORD_INSERT, 0.5)
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_FIRE_AHEAD_MS": "0",
                              "SKED_MONGO_URI": f"mongodb://127.0.0.1:{proxy.port}/{cluster.db_name}"})
    now = dt.datetime.now(dt.timezone.utc)
    fake = FakeWorker(cluster.master_ports[0], "burst-worker", "sleep")
    try:
        fake.send("HELLO", slots=slots, free_slots=slots, task_types="sleep")
        start = now.replace(microsecond=0) + dt.timedelta(seconds=12)
        for i in range(n):
            r = cluster.api("POST", "/triggers/", json={
                "name": f"burst-{i}", "trigger_config": {"interval": 1, "unit": "hours", "start_at": zulu(start)},
                "execution_config": {"task_type": "sleep", "parameters": {"seconds": 1}}})
            assert r.status_code == 201, r.text
        assert dt.datetime.now(dt.timezone.utc) < start, "the triggers took too long to create"
        jobs, held, acks, acked_at_last_job = set(), [], set(), None
        next_hb, last_job, end = 0.0, 0.0, time.time() + 120
        while time.time() < end and len(acks) < n:
            if time.time() >= next_hb:  # liveness; free what is not held
                fake.send("HEARTBEAT", slots=slots, free_slots=slots - len(held), task_types="sleep")
                next_hb = time.time() + 1.0
            while fake.sock.poll(20):
                frames = fake.sock.recv_multipart()
                body = json.loads(frames[2])
                if frames[1] == b"JOB":
                    held.append(body)
                    jobs.add(body["job_id"])
                    last_job = time.time()
                    if len(jobs) == n:
                        acked_at_last_job = len(acks)
                elif frames[1] == b"ACK":
                    acks.add(body["job_id"])
            # Run what is held once every slot is taken (or nothing more came).
            if len(held) >= slots or (held and time.time() - last_job > 0.3):
                for j in held:
                    at = int(time.time() * 1000)
                    fake.send("STARTED", job_id=j["job_id"], attempt=j["attempt"], at=at)
                    fake.send("FINISHED", job_id=j["job_id"], attempt=j["attempt"], at=at,
                              status="succeeded", started_at=at, duration_ms=0, exit_code=0)
                held = []
                fake.send("HEARTBEAT", slots=slots, free_slots=slots, task_types="sleep")
        print(f"{len(jobs)} jobs, {len(acks)} acknowledged; {acked_at_last_job} when the last JOB came")
        assert len(jobs) == n and len(acks) == n, (len(jobs), len(acks))
        assert acked_at_last_job < n / 4, \
            f"the last JOB came after {acked_at_last_job} of {n} ends were written"
        assert cluster.db.jobs.count_documents({"worker_id": "burst-worker", "status": "succeeded"}) == n
    finally:
        fake.close()


def test_a_worker_that_dies_with_its_end_still_waiting_loses_nothing(cluster):
    """On a store where each status write is slow (6,000 jobs of history, no
    usable `_id` index),
    a busy worker reports 64 ends at once; a second worker then reports
    the end of its one job and dies, and the master drops the silent
    worker (1 s timeout) while the 64 writes are still being made. Its
    attempt is not taken for lost (and run again by a retry): its end is
    recorded as it ran. (Since outcomes are inserted as records, the 64
    are written before the worker is dropped; the test waits for the drop.) Written by the loop, the 64 held it and the
    FINISHED waited unread (then "attempt not taken for lost" kept the
    attempt); with the status writer the loop reads it at once and the
    flight has ended before the worker is dropped."""
    n, slots = 64, 64
    cluster.unindexed()
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_FIRE_AHEAD_MS": "0", "SKED_WORKER_TIMEOUT_MS": "1000"})
    insert_job_history(cluster.db, 6000)
    now = dt.datetime.now(dt.timezone.utc)
    busy = FakeWorker(cluster.master_ports[0], "busy-worker", "sleep")
    dying = FakeWorker(cluster.master_ports[0], "dying-worker", "sleep")
    try:
        busy.send("HELLO", slots=slots, free_slots=slots, task_types="sleep")
        dying.send("HELLO", slots=1, free_slots=1, task_types="sleep")
        start = now.replace(microsecond=0) + dt.timedelta(seconds=12)
        for i in range(n + 1):
            r = cluster.api("POST", "/triggers/", json={
                "name": f"ends-{i}", "trigger_config": {"interval": 1, "unit": "hours", "start_at": zulu(start)},
                "execution_config": {"task_type": "sleep", "parameters": {"seconds": 1},
                                     "retry_policy": {"max_retries": 1, "initial_delay": 0}}})
            assert r.status_code == 201, r.text
        held = {busy: [], dying: []}
        end = time.time() + 60
        while time.time() < end and (len(held[busy]) < n or not held[dying]):
            for fw, cap in ((busy, slots), (dying, 1)):
                fw.send("HEARTBEAT", slots=cap, free_slots=cap - len(held[fw]), task_types="sleep")
                while fw.sock.poll(100):
                    frames = fw.sock.recv_multipart()
                    if frames[1] == b"JOB":
                        held[fw].append(json.loads(frames[2]))
        assert len(held[busy]) == n and len(held[dying]) == 1, (len(held[busy]), len(held[dying]))

        def ends(fw):
            for j in held[fw]:
                at = int(time.time() * 1000)
                fw.send("STARTED", job_id=j["job_id"], attempt=j["attempt"], at=at)
                fw.send("FINISHED", job_id=j["job_id"], attempt=j["attempt"], at=at,
                        status="succeeded", started_at=at, duration_ms=0, exit_code=0)
        ends(busy)
        time.sleep(0.5)  # the master has read them all: they wait their turn
        ends(dying)  # and then it says nothing more
        mine = held[dying][0]["job_id"]
        wait_end = time.time() + 60
        while time.time() < wait_end:
            busy.send("HEARTBEAT", slots=slots, free_slots=slots, task_types="sleep")
            doc = cluster.db.jobs.find_one({"_id": mine})
            if doc["status"] in ("succeeded", "lost", "failed"):
                break
            time.sleep(0.3)
        # Outcomes inserted as records are written before the worker is
        # dropped: the attempt must stay as recorded once it is.
        wait_for(lambda: busy.send("HEARTBEAT", slots=slots, free_slots=slots, task_types="sleep")
                 or "worker gone" in cluster.masters[0].text(), 10, interval=0.3,
                 what="the silent worker dropped")
        time.sleep(1.0)
        doc = cluster.db.jobs.find_one({"_id": mine})
        text = cluster.masters[0].text()
        assert "worker gone" in text and "dying-worker" in text, "the worker was not dropped"
        assert doc["status"] == "succeeded" and doc["attempt"] == 1, doc
        assert [a["status"] for a in doc["attempts"]] == ["succeeded"], doc["attempts"]
        ended = text.find(f"job finished job={mine}")
        assert "attempt not taken for lost" in text or 0 <= ended < text.find("worker gone"), \
            "the dying worker's end was handled neither before it was dropped nor as waiting"
    finally:
        busy.close()
        dying.close()


def _behind_proxy(cluster, worker_name):
    """One master whose store requests pass a DelayProxy, its metrics on,
    and a fake worker for its sleep jobs (the real worker takes noop only)."""
    maddr = f"127.0.0.1:{free_port()}"
    proxy = DelayProxy(cluster.store_port)
    cluster.cleanups.append(proxy.stop)
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_FIRE_AHEAD_MS": "0", "SKED_METRICS_ADDR": maddr,
                              "SKED_MONGO_URI": f"mongodb://127.0.0.1:{proxy.port}/{cluster.db_name}"})
    return maddr, proxy, FakeWorker(cluster.master_ports[0], worker_name, "sleep")


def test_a_burst_of_ends_is_written_in_bulks_and_each_ack_follows_its_write(cluster):
    """48 jobs end at once on one worker. Their outcomes are written in
    bulks (group commit) rather than one round trip each, and the ACK of
    each FINISHED, which lets the worker forget it, comes only once its
    outcome is in the store: the master's store requests are held 4 ms
    each (a store a little away), the test reads the store directly."""
    from test_metrics import scrape, val
    n = 48
    maddr, proxy, fake = _behind_proxy(cluster, "bulk-worker")
    try:
        fake.send("HELLO", slots=n, free_slots=n, task_types="sleep")
        start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=8)
        for i in range(n):
            r = cluster.api("POST", "/triggers/", json={
                "name": f"bulk-{i}", "trigger_config": {"interval": 1, "unit": "hours", "start_at": zulu(start)},
                "execution_config": {"task_type": "sleep", "parameters": {"seconds": 1}}})
            assert r.status_code == 201, r.text
        jobs, end = [], time.time() + 40
        while len(jobs) < n and time.time() < end:
            fake.send("HEARTBEAT", slots=n, free_slots=n - len(jobs), task_types="sleep")
            while fake.sock.poll(100):
                frames = fake.sock.recv_multipart()
                if frames[1] == b"JOB":
                    jobs.append(json.loads(frames[2]))
        assert len(jobs) == n, len(jobs)
        m, _ = scrape(f"http://{maddr}/metrics")
        bulks_before = val(m, "sked_store_operation_duration_seconds_count", op="record_jobs")
        proxy.delay = 0.004
        for j in jobs:
            at = int(time.time() * 1000)
            fake.send("STARTED", job_id=j["job_id"], attempt=1, at=at)
            fake.send("FINISHED", job_id=j["job_id"], attempt=1, at=at, status="succeeded",
                      started_at=at, duration_ms=0, exit_code=0)
        acked, unwritten, end = set(), [], time.time() + 30
        while len(acked) < n and time.time() < end:
            if fake.sock.poll(100):
                frames = fake.sock.recv_multipart()
                if frames[1] == b"ACK":
                    jid = json.loads(frames[2])["job_id"]
                    acked.add(jid)
                    if cluster.db.jobs.find_one({"_id": jid})["status"] != "succeeded":
                        unwritten.append(jid)
        assert len(acked) == n, len(acked)
        assert not unwritten, f"ACKs came before their outcome was written: {unwritten}"
        m, _ = scrape(f"http://{maddr}/metrics")
        bulks = val(m, "sked_store_operation_duration_seconds_count", op="record_jobs") - bulks_before
        print(f"{n} ends written in {bulks:.0f} bulks")
        assert 1 <= bulks <= n / 2, f"{n} ends took {bulks} writes"
    finally:
        fake.close()


def test_worker_messages_are_read_while_a_status_write_waits_on_the_store(cluster):
    """The outcomes are written by the master's status writer, off its loop:
    one job's end is held 3 s at the store (one insert of its outcome), and the
    master reads and handles the next job's end meanwhile (counted
    finished while the hold lasts). Each ACK still comes only once its
    outcome is written. Written by the loop, the hold kept the second end
    unread until it was over."""
    from test_metrics import scrape, val
    maddr, proxy, fake = _behind_proxy(cluster, "slow-store-worker")
    try:
        fake.send("HELLO", slots=2, free_slots=2, task_types="sleep")
        start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=6)
        for i in range(2):
            r = cluster.api("POST", "/triggers/", json={
                "name": f"held-{i}", "trigger_config": {"interval": 1, "unit": "hours", "start_at": zulu(start)},
                "execution_config": {"task_type": "sleep", "parameters": {"seconds": 1}}})
            assert r.status_code == 201, r.text
        jobs, end = [], time.time() + 30
        while len(jobs) < 2 and time.time() < end:
            fake.send("HEARTBEAT", slots=2, free_slots=2 - len(jobs), task_types="sleep")
            while fake.sock.poll(100):
                frames = fake.sock.recv_multipart()
                if frames[1] == b"JOB":
                    jobs.append(json.loads(frames[2]))
        assert len(jobs) == 2, jobs

        def finished():
            fake.send("HEARTBEAT", slots=2, free_slots=0, task_types="sleep")
            m, _ = scrape(f"http://{maddr}/metrics")
            return val(m, "sked_jobs_finished_total", task_type="sleep", status="succeeded") or 0

        def end_of(j):
            at = int(time.time() * 1000)
            fake.send("FINISHED", job_id=j["job_id"], attempt=1, at=at, status="succeeded",
                      started_at=at, duration_ms=0, exit_code=0)

        proxy.hold_next(RECORD_INSERT, 3.0)
        end_of(jobs[0])
        wait_for(lambda: fake.send("HEARTBEAT", slots=2, free_slots=0, task_types="sleep") or proxy.holding,
                 2, interval=0.05, what="the first end's write held")
        end_of(jobs[1])
        wait_for(lambda: finished() >= 2, 1.5, interval=0.1,
                 what="the second end handled while the first one's write is held")
        assert not proxy.held and time.time() < proxy.holding[0] + 2.5, \
            "the second end was handled only once the hold was over"
        acks, end = {}, time.time() + 15
        while len(acks) < 2 and time.time() < end:
            fake.send("HEARTBEAT", slots=2, free_slots=2 - len(acks), task_types="sleep")
            if fake.sock.poll(100):
                frames = fake.sock.recv_multipart()
                if frames[1] == b"ACK":
                    acks.setdefault(json.loads(frames[2])["job_id"], time.time())
        assert len(acks) == 2, acks
        for j in jobs:
            assert cluster.db.jobs.find_one({"_id": j["job_id"]})["status"] == "succeeded"
            assert acks[j["job_id"]] >= proxy.holding[0] + 2.9, "an ACK came before its write"
    finally:
        fake.close()
