"""Per-trigger policies in the master: overlap (forbid, allow, buffer_one)
and misfire (fire_once, fire_all within catchup_window, skip). Every
skipped fire is a job document with status skipped and a reason."""
import datetime as dt
import signal
import time

from conftest import wait_for


def create(cluster, name, execution, **trigger_config):
    tc = {"interval": 1, "unit": "seconds", **trigger_config}
    r = cluster.api("POST", "/triggers/", json={"name": name, "trigger_config": tc,
                                                "execution_config": execution})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def jobs_of(cluster, tid):
    return sorted(cluster.db.jobs.find({"trigger_id": tid}), key=lambda j: j["scheduled_for"])


def runs(jobs):
    return [j for j in jobs if j["status"] != "skipped"]


def overlapping(jobs):
    done = [j for j in jobs if j.get("started_at") and j.get("finished_at") and j["status"] == "succeeded"]
    done.sort(key=lambda j: j["started_at"])
    return any(b["started_at"] < a["finished_at"] for a, b in zip(done, done[1:]))


def test_overlap_forbid_skips_fires_while_the_job_runs(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "forbid", {"task_type": "sleep", "parameters": {"seconds": 2.5}})
    time.sleep(8)
    jobs = jobs_of(cluster, tid)
    skipped = [j for j in jobs if j["status"] == "skipped"]
    assert skipped and all(j["skip_reason"] == "overlap" for j in skipped), jobs
    assert len(runs(jobs)) >= 2
    assert not overlapping(jobs)


def test_overlap_allow_runs_concurrently(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "allow", {"task_type": "sleep", "parameters": {"seconds": 2.5},
                                    "overlap_policy": "allow"})
    time.sleep(7)
    jobs = jobs_of(cluster, tid)
    assert not [j for j in jobs if j["status"] == "skipped"]
    assert overlapping(jobs)


def test_overlap_buffer_one_holds_one_fire(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "buffer", {"task_type": "sleep", "parameters": {"seconds": 2.5},
                                     "overlap_policy": "buffer_one"})
    time.sleep(9)
    jobs = jobs_of(cluster, tid)
    skipped = [j for j in jobs if j["status"] == "skipped"]
    assert skipped and all(j["skip_reason"] == "overlap" for j in skipped)
    ran = [j for j in runs(jobs) if j.get("started_at")]
    assert len(ran) >= 3
    assert not overlapping(jobs)
    # A buffered fire starts as soon as the previous run ends, not at its own time.
    late = [j for j in ran if (j["started_at"] - j["scheduled_for"]).total_seconds() > 1]
    assert late, ran


def stop_master_for(cluster, seconds):
    m = cluster.masters[0]
    assert m.stop() == 0  # SIGTERM: it releases its leases
    cluster.checked_stop.append(m)
    time.sleep(seconds)
    cluster.start_master(1, cluster.master_ports[0])


def test_misfire_skip_records_every_missed_fire(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "skip", {"task_type": "noop"}, misfire_policy="skip")
    wait_for(lambda: len(jobs_of(cluster, tid)) >= 2, 10, what="first fires")
    stop_master_for(cluster, 5)
    wait_for(lambda: any(j["status"] == "skipped" for j in jobs_of(cluster, tid)), 20,
             what="skipped fires")
    time.sleep(2)
    jobs = jobs_of(cluster, tid)
    skipped = [j for j in jobs if j["status"] == "skipped"]
    assert len(skipped) >= 3 and all(j["skip_reason"] == "misfire_skipped" for j in skipped)
    assert not [j for j in jobs if j.get("misfire") and j["status"] != "skipped"]
    # Together they cover the grid without a hole.
    times = [j["scheduled_for"] for j in jobs]
    assert all(b - a == dt.timedelta(seconds=1) for a, b in zip(times, times[1:])), times


def test_misfire_fire_all_runs_missed_fires_within_the_window(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "all", {"task_type": "noop", "overlap_policy": "allow"},
                 misfire_policy="fire_all", catchup_window=3)
    wait_for(lambda: len(jobs_of(cluster, tid)) >= 2, 10, what="first fires")
    stopped = dt.datetime.now(dt.timezone.utc)
    stop_master_for(cluster, 7)
    restarted = dt.datetime.now(dt.timezone.utc)
    wait_for(lambda: any(j.get("misfire") and j["status"] == "succeeded" for j in jobs_of(cluster, tid)),
             20, what="catch-up runs")
    time.sleep(2)
    jobs = jobs_of(cluster, tid)
    outside = [j for j in jobs if j["status"] == "skipped"]
    # A fire claimed ahead (SKED_FIRE_AHEAD_MS, 500) before the stop ran on
    # time: it was not missed.
    missed_but_run = [j for j in jobs if j["status"] != "skipped"
                      and stopped + dt.timedelta(seconds=1) < j["scheduled_for"] < restarted]
    assert outside and all(j["skip_reason"] == "misfire_outside_catchup_window" for j in outside)
    assert len(missed_but_run) >= 2, jobs
    assert all(j["scheduled_for"] >= restarted - dt.timedelta(seconds=5) for j in missed_but_run)
    times = [j["scheduled_for"] for j in jobs]
    assert all(b - a == dt.timedelta(seconds=1) for a, b in zip(times, times[1:])), times


def test_misfire_fire_once_runs_one_and_records_the_rest(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "once", {"task_type": "noop"})
    wait_for(lambda: len(jobs_of(cluster, tid)) >= 2, 10, what="first fires")
    stop_master_for(cluster, 5)
    wait_for(lambda: any(j.get("misfire") and j["status"] == "succeeded" for j in jobs_of(cluster, tid)),
             20, what="the misfire run")
    jobs = jobs_of(cluster, tid)
    ran = [j for j in jobs if j.get("misfire") and j["status"] != "skipped"]
    coalesced = [j for j in jobs if j["status"] == "skipped"]
    assert len(ran) == 1
    assert coalesced and all(j["skip_reason"] == "misfire_coalesced" for j in coalesced)
    assert max(j["scheduled_for"] for j in coalesced) < ran[0]["scheduled_for"]


def test_higher_priority_jobs_go_first_when_workers_are_scarce(cluster):
    cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_SLOTS": "1"})
    low = create(cluster, "low", {"task_type": "sleep", "parameters": {"seconds": 0.9},
                                  "overlap_policy": "allow", "priority": 0})
    high = create(cluster, "high", {"task_type": "sleep", "parameters": {"seconds": 0.9},
                                    "overlap_policy": "allow", "priority": 10})
    time.sleep(8)
    ran_low = [j for j in jobs_of(cluster, low) if j.get("started_at")]
    ran_high = [j for j in jobs_of(cluster, high) if j.get("started_at")]
    # One slot, 1.8 s of work per second: the queue grows, and it is the
    # low-priority trigger's jobs that wait.
    assert len(ran_high) >= 5, ran_high
    assert len(ran_high) > len(ran_low) + 2, (len(ran_high), len(ran_low))


def test_overlap_replace_cancels_the_running_job(cluster):
    cluster.start(masters=1, workers=1)
    tid = create(cluster, "replace", {"task_type": "sleep", "parameters": {"seconds": 30},
                                      "overlap_policy": "replace"}, interval=2)
    time.sleep(7)
    jobs = jobs_of(cluster, tid)
    cancelled = [j for j in jobs if j["status"] == "cancelled"]
    assert len(cancelled) >= 2, [(j["status"], j.get("skip_reason")) for j in jobs]
    running = [j for j in jobs if j["status"] == "running"]
    assert len(running) <= 1
    for j in cancelled:
        assert j["result"]["exit_code"] is not None or j["result"].get("error")


def test_worker_labels_route_jobs(cluster, tmp_path):
    import json
    conf = tmp_path / "eu.json"
    conf.write_text(json.dumps({"labels": {"region": "eu", "gpu": "true"},
                                "task_types": {"noop": {"handler": "noop"}}}))
    cluster.start(masters=1, workers=1)
    cluster.start_worker(7, SKED_WORKER_CONFIG=str(conf))
    tid = create(cluster, "eu-only", {"task_type": "noop", "worker_labels": {"region": "eu"}})
    any_tid = create(cluster, "anywhere", {"task_type": "noop"})
    wait_for(lambda: len([j for j in jobs_of(cluster, tid) if j["status"] == "succeeded"]) >= 3, 15,
             what="labelled jobs")
    assert {j["worker_id"] for j in jobs_of(cluster, tid) if j.get("worker_id")} == {"worker-7"}
    nowhere = create(cluster, "mars", {"task_type": "noop", "worker_labels": {"region": "mars"}})
    time.sleep(3)
    assert all(j["status"] in ("queued", "skipped") for j in jobs_of(cluster, nowhere))
    assert any(j["status"] == "succeeded" for j in jobs_of(cluster, any_tid))


def test_a_forced_run_of_a_paused_trigger_keeps_its_worker_labels(cluster, tmp_path):
    """A paused trigger is not in the schedule: a forced run takes its
    policies from its definition, worker labels included."""
    import json
    conf = tmp_path / "eu.json"
    conf.write_text(json.dumps({"labels": {"region": "eu"},
                                "task_types": {"noop": {"handler": "noop"}}}))
    cluster.start(masters=1, workers=1)
    cluster.start_worker(7, SKED_WORKER_CONFIG=str(conf))
    tid = create(cluster, "eu-paused", {"task_type": "noop", "worker_labels": {"region": "eu"}},
                 interval=3600)
    assert cluster.api("POST", f"/triggers/{tid}/pause").status_code == 200
    r = cluster.api("POST", f"/triggers/{tid}/execute", json={"parameters": {"force_execution": True}})
    assert r.status_code == 202, r.text
    jid = r.json()["job_id"]
    done = wait_for(lambda: cluster.db.jobs.find_one({"_id": jid, "status": "succeeded"}), 15,
                    what="the forced run done")
    assert done["worker_id"] == "worker-7", done


def test_task_type_limit_holds_across_masters(cluster):
    """SKED_TASK_LIMITS caps running jobs of a type across the cluster: slot
    documents claimed by insert, released when the attempt ends."""
    cluster.start(masters=2, workers=2, master_env={"SKED_TASK_LIMITS": "sleep=2"})
    for i in range(8):
        create(cluster, f"limited-{i}", {"task_type": "sleep", "parameters": {"seconds": 1.5},
                                         "overlap_policy": "allow"})
    time.sleep(9)
    jobs = [j for j in cluster.db.jobs.find({"task_type": "sleep", "started_at": {"$exists": True}})]
    assert len(jobs) >= 6, "limited jobs must still make progress"
    events = []
    for j in jobs:
        end = j.get("finished_at") or (j["started_at"] + dt.timedelta(seconds=60))
        events += [(j["started_at"], 1), (end, -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    assert peak <= 2, f"{peak} sleep jobs ran at once with a limit of 2"
    # Both masters claimed fires of limited triggers (the limit is shared
    # across them; which master wins a freed slot is left to chance).
    parts = {t["partition"] for t in cluster.db.triggers.find({}, {"partition": 1})}
    owners = {m["_id"]: set(m["partitions"]) for m in cluster.db.members.find({"role": "master"})}
    spread = sum(1 for ps in owners.values() if ps & parts)
    claimed = {j["master"] for j in cluster.db.jobs.find({"task_type": "sleep"})}
    assert len(claimed) == spread, (parts, owners, claimed)


def test_the_pending_queue_goes_oldest_first_past_jobs_nobody_can_take(cluster):
    """A master walks its pending queue oldest first whenever a worker has
    credit: a job goes out when a worker can take it, in its turn, and the
    jobs of a task type or labels nobody serves (at the head of the queue
    here) hold none of the others up."""
    cluster.start(masters=1, workers=1,
                  worker_env={"SKED_TASK_TYPES": "noop,sleep", "SKED_WORKER_SLOTS": "1"})
    unserved = create(cluster, "nobody-serves-echo", {"task_type": "echo"})
    mars = create(cluster, "mars", {"task_type": "sleep", "parameters": {"seconds": 0.1},
                                    "worker_labels": {"region": "mars"}})
    wait_for(lambda: all(len(jobs_of(cluster, t)) >= 2 for t in (unserved, mars)), 15,
             what="jobs nobody can take queued first")
    r = cluster.api("POST", "/triggers/", json={
        "name": "one-slot", "trigger_config": {"cron_expression": "0 2 * * *"},
        "execution_config": {"task_type": "sleep", "parameters": {"seconds": 0.3}}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    ids = []
    for _ in range(5):  # one slot: they queue, behind the others
        r = cluster.api("POST", f"/triggers/{tid}/execute",
                        json={"parameters": {"force_execution": True}})
        assert r.status_code in (200, 201, 202), r.text
        ids.append(r.json()["job_id"])
    done = wait_for(lambda: (lambda js: js if all(j and j["status"] == "succeeded" for j in js) else None)(
        [cluster.db.jobs.find_one({"_id": i}) for i in ids]), 30, what="the queued runs")
    starts = [j["started_at"] for j in done]
    assert starts == sorted(starts), "queued runs did not start oldest first"
    assert [j["scheduled_for"] for j in done] == sorted(j["scheduled_for"] for j in done)
    for t in (unserved, mars):
        assert {j["status"] for j in jobs_of(cluster, t)} <= {"queued", "skipped"}
