"""A master dies while its jobs run: the next owner of the partition adopts
the jobs workers still run (not run twice, G5), records their end, and
declares lost the ones nobody runs (retried by policy, G3)."""
import datetime as dt
import re
import signal
import time

import zmq

from conftest import DelayProxy, wait_for, zulu
from test_worker_identity import FakeWorker


def kill9(cluster, proc):
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait()
    cluster.checked_stop.append(proc)


def test_running_job_survives_its_masters_death(cluster):
    """A 30-second job under 5-second leases: its master dies mid-run and it
    is still not run again while its worker lives (G5)."""
    cluster.start(masters=2, workers=1, master_env={"SKED_LEASE_TTL_MS": "5000"})
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    r = cluster.api("POST", "/triggers/", json={
        "name": "long", "trigger_config": {"interval": 1, "unit": "hours",
                                           "start_at": zulu(start)},
        "execution_config": {"task_type": "sleep", "parameters": {"seconds": 30},
                             "retry_policy": {"max_retries": 2, "initial_delay": 0}}})
    tid = r.json()["id"]
    job = wait_for(lambda: cluster.db.jobs.find_one({"trigger_id": tid, "status": "running"}),
                   15, what="the job to run")
    owner = next(m for m in cluster.masters if m.name == job["master"])
    kill9(cluster, owner)
    done = wait_for(lambda: cluster.db.jobs.find_one({"_id": job["_id"],
                                                      "status": {"$in": ["succeeded", "failed", "lost"]}}),
                    50, interval=0.5, what="the job to finish under the new owner")
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1, "the job ran again although its worker was alive"
    assert len(done.get("attempts") or []) == 1


def test_queued_and_orphaned_running_jobs_are_taken_over(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", json={
        "name": "tick", "trigger_config": {"interval": 1, "unit": "hours"},
        "execution_config": {"task_type": "noop", "overlap_policy": "allow",
                             "retry_policy": {"max_retries": 1, "initial_delay": 0}}})
    tid = r.json()["id"]
    part = cluster.db.triggers.find_one({"_id": tid})["partition"]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    base = {"trigger_id": tid, "owner": "alice", "partition": part, "kind": "scheduled",
            "task_type": "noop", "attempt": 1, "parameters": {}, "created_at": now}
    # What a master that died could have left: one claimed fire never sent,
    # one "running" on a worker that no longer runs it.
    cluster.db.jobs.insert_one({**base, "_id": f"{tid}@1", "scheduled_for": now - dt.timedelta(hours=2),
                                "status": "queued", "run_at": now})
    cluster.db.jobs.insert_one({**base, "_id": f"{tid}@2", "scheduled_for": now - dt.timedelta(hours=1),
                                "status": "running", "started_at": now, "worker_id": "gone"})
    # A new master takes the partitions over (the first one stops cleanly).
    first = cluster.masters[0]
    assert first.stop() == 0
    cluster.checked_stop.append(first)
    cluster.start_master(1, cluster.master_ports[0])
    wait_for(lambda: cluster.db.jobs.find_one({"_id": f"{tid}@1"})["status"] == "succeeded", 30,
             interval=0.5, what="the orphaned queued job to run")
    orphan = wait_for(lambda: (lambda d: d if d["status"] == "succeeded" else None)(
        cluster.db.jobs.find_one({"_id": f"{tid}@2"})), 30, interval=0.5,
        what="the orphaned running job to be lost and retried")
    assert orphan["attempt"] == 2
    assert orphan["attempts"][0]["status"] == "lost"


def test_takeover_waits_to_hear_from_the_workers_other_masters_see(cluster):
    """A queued job the old owner may have sent out is not queued again
    until every worker another live master lists has answered the new
    owner's PING: that worker may have run it, its FINISHED still on the
    way."""
    cluster.start(masters=2, workers=1, master_env={"SKED_WORKER_TIMEOUT_MS": "3000"})
    a, b = cluster.masters
    port_a, port_b = cluster.master_ports
    # A manual trigger in one of the partitions A gives back when B returns
    # (the upper half of the test clusters' 8).
    for i in range(40):
        r = cluster.api("POST", "/triggers/", json={
            "name": f"m{i}", "trigger_config": {}, "execution_config": {"task_type": "noop"}})
        tid = r.json()["id"]
        part = cluster.db.triggers.find_one({"_id": tid})["partition"]
        if part >= 4:
            break
    assert part >= 4
    job_id = f"{tid}@7"
    ctx = zmq.Context()
    # The far worker's connections: to A only at first, to B at the end.
    far = [FakeWorker(ctx, port_a, node="far-worker")]

    def beat():
        for w in far:
            w.hello("HEARTBEAT", free=0)

    def beat_for(seconds):
        end = time.time() + seconds
        while time.time() < end:
            beat()
            time.sleep(0.3)

    def status():
        return cluster.db.jobs.find_one({"_id": job_id})["status"]
    try:
        far[0].hello()
        # B leaves; A takes every partition (and scans them) and lists the
        # far worker.
        assert b.stop() == 0
        cluster.checked_stop.append(b)

        def a_holds_all_and_lists():
            beat()
            doc = cluster.db.members.find_one({"_id": "master:master-0"}) or {}
            return (len(doc.get("partitions", [])) == 8
                    and any(w.get("node_id") == "far-worker" for w in doc.get("workers", [])))
        wait_for(a_holds_all_and_lists, 30, interval=0.3, what="A holding all 8 partitions")
        beat_for(2.1)  # A's takeover scan of B's partitions is done
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        cluster.db.jobs.insert_one({"_id": job_id, "trigger_id": tid, "owner": "alice",
                                    "partition": part, "kind": "manual", "task_type": "noop",
                                    "attempt": 1, "parameters": {}, "created_at": now,
                                    "scheduled_for": now, "run_at": now, "status": "queued"})
        b2 = cluster.start_master(1, port_b, SKED_WORKER_TIMEOUT_MS="3000")
        wait_for(lambda: beat() or "jobs taken over" in b2.text(), 30, interval=0.3,
                 what="B taking the partition and its queued job over")
        taken = time.time()
        beat_for(4)  # past B's worker timeout (3 s), the far worker still unheard by B
        assert status() == "queued", "B queued the job before hearing from the worker A lists"
        # The far worker's connection to B comes back, but what arrives
        # first was written before B's PING (held up by a network cut):
        # heartbeats that do not answer it are not enough.
        far.append(FakeWorker(ctx, port_b, node="far-worker", answer_pings=False))
        far[1].hello(free=0)
        beat_for(3)
        assert status() == "queued", "B queued the job on heartbeats that did not answer its PING"
        # The far worker answers B's PING: B places the job, the real worker runs it.
        far[1].answer_pings = True
        wait_for(lambda: beat() or status() == "succeeded", 10, interval=0.3,
                 what="the job to run once the far worker answered B")
        assert time.time() < taken + 14, "placed by the wait's bound (6 timeouts), not by the answer"
    finally:
        for w in far:
            w.close()
        ctx.term()


def test_a_draining_workers_running_job_is_adopted_from_its_bye(cluster):
    """A draining worker sends BYE in place of HEARTBEAT. A master that
    takes a partition over meanwhile finds the job it still runs listed in
    the BYE and adopts it, instead of taking it for lost (or, had it been
    `queued` still, sending it out a second time)."""
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"},
                  master_env={"SKED_WORKER_TIMEOUT_MS": "1500"})
    r = cluster.api("POST", "/triggers/", json={
        "name": "drained", "trigger_config": {}, "execution_config": {"task_type": "fake"}})
    tid = r.json()["id"]
    part = cluster.db.triggers.find_one({"_id": tid})["partition"]
    job_id = f"{tid}@5"
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cluster.db.jobs.insert_one({"_id": job_id, "trigger_id": tid, "owner": "alice", "partition": part,
                                "kind": "manual", "task_type": "fake", "attempt": 1, "parameters": {},
                                "created_at": now, "scheduled_for": now, "status": "running",
                                "started_at": now, "worker_id": "drainer"})
    first = cluster.masters[0]
    assert first.stop() == 0
    cluster.checked_stop.append(first)
    ctx = zmq.Context()
    w = FakeWorker(ctx, cluster.master_ports[0], node="drainer")
    try:
        second = cluster.start_master(1, cluster.master_ports[0], SKED_WORKER_TIMEOUT_MS="1500")
        w.hello(free=0)

        def bye():
            w.send("BYE", running=[job_id])
        wait_for(lambda: bye() or "jobs taken over" in second.text(), 30, interval=0.3,
                 what="the new master taking the running job over")
        for _ in range(20):  # 6 s: past the takeover wait (three worker timeouts at most)
            bye()
            time.sleep(0.3)
        assert "job adopted after takeover" in second.text(), "the job listed in BYE was not adopted"
        doc = cluster.db.jobs.find_one({"_id": job_id})
        assert doc["status"] == "running", doc
        at = int(time.time() * 1000)
        w.send("FINISHED", job_id=job_id, attempt=1, at=at, status="succeeded", exit_code=0,
               duration_ms=10)
        done = wait_for(lambda: (lambda d: d if d["status"] == "succeeded" else None)(
            cluster.db.jobs.find_one({"_id": job_id})), 10, interval=0.3, what="the end recorded")
        assert done["attempt"] == 1 and not [a for a in done.get("attempts") or [] if a["status"] == "lost"]
    finally:
        w.close()
        ctx.term()


def test_takeover_stops_waiting_for_a_worker_that_never_answers(cluster):
    """A worker that keeps heartbeating but never answers the PING (an
    old worker, or one whose answers cannot get through) holds a takeover
    up for six worker timeouts at most; then the jobs are placed and the
    master says which workers it gave up on."""
    cluster.start(masters=1, workers=1, master_env={"SKED_WORKER_TIMEOUT_MS": "1000"})
    r = cluster.api("POST", "/triggers/", json={
        "name": "waited", "trigger_config": {}, "execution_config": {"task_type": "noop"}})
    tid = r.json()["id"]
    part = cluster.db.triggers.find_one({"_id": tid})["partition"]
    job_id = f"{tid}@9"
    first = cluster.masters[0]
    assert first.stop() == 0
    cluster.checked_stop.append(first)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cluster.db.jobs.insert_one({"_id": job_id, "trigger_id": tid, "owner": "alice", "partition": part,
                                "kind": "manual", "task_type": "noop", "attempt": 1, "parameters": {},
                                "created_at": now, "scheduled_for": now, "run_at": now,
                                "status": "queued"})
    ctx = zmq.Context()
    mute = FakeWorker(ctx, cluster.master_ports[0], node="mute", answer_pings=False)
    try:
        second = cluster.start_master(1, cluster.master_ports[0], SKED_WORKER_TIMEOUT_MS="1000")
        wait_for(lambda: mute.hello("HEARTBEAT", free=0) or "jobs taken over" in second.text(), 30,
                 interval=0.2, what="the new master taking the queued job over")
        taken = time.time()
        for _ in range(20):  # 4 s: past the minimum wait (1 s), short of the bound (6 s)
            mute.hello("HEARTBEAT", free=0)
            time.sleep(0.2)
        assert cluster.db.jobs.find_one({"_id": job_id})["status"] == "queued", \
            "placed although a worker never answered the PING"
        wait_for(lambda: mute.hello("HEARTBEAT", free=0) or
                 cluster.db.jobs.find_one({"_id": job_id})["status"] == "succeeded", 15, interval=0.2,
                 what="the job placed once the wait's bound passed")
        assert time.time() - taken < 10
        line = next(l for l in second.text().splitlines() if "takeover stopped waiting" in l)
        assert "workers=mute" in line, line
    finally:
        mute.close()
        ctx.term()


# The takeover scan's read of `jobs` as it goes over the wire: the one
# request with `notify_pending: true` in it (its filter's second branch).
SCAN_JOBS = b"\x08notify_pending\x00\x01"
LIVE = ("queued", "running", "retrying")


def test_a_gained_partition_fires_while_its_takeover_scan_reads(cluster):
    """The takeover scan reads every job on FerretDB (seconds, with tens
    of thousands): it runs on a thread of its own, and the gained
    partitions' triggers that allow overlapping runs fire meanwhile;
    those that forbid them wait for its end (the jobs they would overlap
    are not known before). The jobs claimed during the scan are the new
    owner's: not taken over, each run once. Here the scan's read of
    `jobs` is held 6 s at the store, and 40 triggers fire every second
    meanwhile: more outcomes than are folded into their jobs while the
    master is busy (writer.c), so the scan reads many of its own jobs
    still `queued` in the store."""
    cluster.start(masters=1, workers=1)
    tids = {}
    for name, overlap in [(f"allow{i}", "allow") for i in range(40)] + [("forbid", "forbid")]:
        tids[name] = cluster.api("POST", "/triggers/", json={
            "name": name, "trigger_config": {"interval": 1, "unit": "seconds"},
            "execution_config": {"task_type": "noop", "overlap_policy": overlap}}).json()["id"]
    tids["allow"] = tids["allow0"]
    wait_for(lambda: all(cluster.db.jobs.find_one({"trigger_id": tids[t], "status": "succeeded"})
                         for t in ("allow", "forbid")), 15, what="both kinds of trigger to have run")
    first = cluster.masters[0]
    assert first.stop() == 0
    cluster.checked_stop.append(first)
    # A claim the old owner left, never sent: the takeover runs it.
    part = cluster.db.triggers.find_one({"_id": tids["allow"]})["partition"]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    orphan = f"{tids['allow']}@{int(now.timestamp() * 1000) - 300007}"
    cluster.db.jobs.insert_one({"_id": orphan, "trigger_id": tids["allow"], "owner": "alice",
                                "partition": part, "kind": "scheduled", "task_type": "noop",
                                "attempt": 1, "parameters": {}, "created_at": now,
                                "scheduled_for": now - dt.timedelta(minutes=5), "run_at": now,
                                "status": "queued"})
    live = len(list(cluster.db.jobs.find({"status": {"$in": list(LIVE)}})))
    proxy = DelayProxy(cluster.store_port)
    cluster.cleanups.append(proxy.stop)
    proxy.hold_next(SCAN_JOBS, 6)
    second = cluster.start_master(1, cluster.master_ports[0],
                                  SKED_MONGO_URI=f"mongodb://127.0.0.1:{proxy.port}/{cluster.db_name}")
    wait_for(lambda: proxy.held, 40, interval=0.1, what="the takeover scan's held read to end")
    (t0, t1), = proxy.held
    wait_for(lambda: "jobs taken over" in second.text(), 15, what="the scan's end")
    done = wait_for(lambda: (lambda d: d if d["status"] not in LIVE else None)(
        cluster.db.jobs.find_one({"_id": orphan})), 30, interval=0.5, what="the orphan to run")
    assert done["status"] == "succeeded" and len(done["attempts"]) == 1, done
    time.sleep(2)

    def between(tid, field):
        return [j for j in cluster.db.jobs.find({"trigger_id": tid})
                if j.get(field) and t0 <= j[field].timestamp() < t1]
    ran = between(tids["allow"], "started_at")
    assert len(ran) >= 3, f"the allowing trigger ran {len(ran)} times during the 6-s scan"
    assert not between(tids["forbid"], "created_at"), "a forbidding trigger fired before the scan's end"
    # Taken over: what was live before the new master came, not its own claims.
    count = int(re.search(r"jobs taken over count=(\d+)", second.text()).group(1))
    assert count == live, (count, live)
    starts = re.findall(r"job started job=(\S+) attempt=1", cluster.workers[0].text())
    assert len(starts) == len(set(starts)), "a job ran twice"
    report = cluster.invariants(stuck_after=30)
    assert not report["duplicates"] and not report["stuck"], report
