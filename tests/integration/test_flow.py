"""End to end: a trigger created over HTTP runs on workers via masters,
and the job documents tell the truth (G1 among them)."""
import datetime as dt
import time

from conftest import interval_trigger, wait_for, zulu

INTERVAL_BODY = {
    "name": "every-second",
    "trigger_config": {"interval": 1, "unit": "seconds"},
    "execution_config": {"task_type": "noop"},
}


def succeeded(cluster, trigger_id, sub="alice"):
    r = cluster.api("GET", f"/triggers/{trigger_id}/history?page_size=100", sub=sub)
    assert r.status_code == 200, r.text
    return [j for j in r.json()["items"] if j["status"] == "succeeded"]


def test_interval_trigger_runs_on_workers(cluster):
    cluster.start(masters=2, workers=2)
    r = cluster.api("POST", "/triggers/", json=INTERVAL_BODY)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["id"] and t["trigger_type"] == "INTERVAL" and t["owner"] == "alice"
    assert t["next_fire_at"] is not None
    created = time.time()
    jobs = wait_for(lambda: (lambda s: s if len(s) >= 3 else None)(succeeded(cluster, t["id"])),
                    timeout=10, what="3 succeeded jobs")
    took = time.time() - created
    for j in jobs:
        for field in ("scheduled_for", "started_at", "finished_at", "attempt", "worker_id"):
            assert j[field] is not None, (field, j)
        assert j["attempt"] == 1
        assert j["worker_id"].startswith("worker-")
    print(f"3 succeeded jobs {took:.2f}s after creation")
    # The trigger as read back carries schedule state written by the master
    # (SKED_STATE_SAVE_MS, 2 s, after a fire; test_state_save.py).
    def last_fire():
        r = cluster.api("GET", f"/triggers/{t['id']}")
        assert r.status_code == 200
        return r.json()["last_fire_at"]
    wait_for(last_fire, 5, interval=0.2, what="last_fire_at")
    # And it also works without the trailing slash, and in the listing.
    r = cluster.api("GET", "/triggers")
    assert r.status_code == 200 and r.json()["total"] == 1


def test_fires_are_on_the_interval_grid_and_never_duplicated(cluster):
    cluster.start(masters=2, workers=2)
    ids = []
    for i in range(6):
        body = dict(INTERVAL_BODY, name=f"grid-{i}")
        r = cluster.api("POST", "/triggers/", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    time.sleep(6)
    for tid in ids:
        jobs = list(cluster.db.jobs.find({"trigger_id": tid}))
        times = [j["scheduled_for"] for j in jobs]
        assert len(times) == len(set(times)), "duplicate fire"
        assert len(jobs) >= 4, f"trigger {tid} fired only {len(jobs)} times in 6 s"
        times.sort()
        for a, b in zip(times, times[1:]):
            assert b - a == dt.timedelta(seconds=1), (a, b)
    # Both masters took a share of the partitions.
    h = cluster.health()
    assert len(h["masters"]) == 2 and all(m["partitions"] > 0 for m in h["masters"]), h


def test_a_fire_claimed_elsewhere_is_not_run_again(cluster):
    """G1: the job _id is (trigger, scheduled_for); a fire that another
    master already claimed is refused by the store and not dispatched."""
    cluster.start(masters=1, workers=1)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=3)
    body = {
        "name": "claimed",
        "trigger_config": {"interval": 1, "unit": "seconds",
                           "start_at": zulu(start)},
        "execution_config": {"task_type": "noop"},
    }
    r = cluster.api("POST", "/triggers/", json=body)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    first_ms = int(start.timestamp() * 1000)
    cluster.db.jobs.insert_one({"_id": f"{tid}@{first_ms}", "trigger_id": tid, "status": "succeeded",
                                "worker_id": "someone-else", "attempt": 1, "owner": "alice",
                                "scheduled_for": start})
    wait_for(lambda: len(succeeded(cluster, tid)) >= 3, timeout=12, what="later fires")
    doc = cluster.db.jobs.find_one({"_id": f"{tid}@{first_ms}"})
    assert doc["worker_id"] == "someone-else"
    assert cluster.db.jobs.count_documents({"trigger_id": tid, "scheduled_for": start}) == 1


def test_cron_trigger_with_seconds_field_runs(cluster):
    cluster.start(masters=1, workers=1)
    body = {"name": "cron-secs", "trigger_config": {"cron_expression": "*/1 * * * * *",
                                                   "timezone": "Europe/London"},
            "execution_config": {"task_type": "echo", "parameters": {"hello": "world"}}}
    r = cluster.api("POST", "/triggers/", json=body)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["trigger_type"] == "CRON"
    jobs = wait_for(lambda: (lambda s: s if len(s) >= 2 else None)(succeeded(cluster, t["id"])),
                    timeout=10, what="2 cron jobs")
    assert jobs[0]["result"]["output"] == '{"hello":"world"}'
    for j in jobs:
        assert j["scheduled_for"].endswith(".000Z"), j["scheduled_for"]


def test_failing_and_sleeping_tasks_report_status(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", json={
        "name": "fails", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "fail", "parameters": {"message": "boom"}}})
    tid = r.json()["id"]
    r = cluster.api("POST", "/triggers/", json={
        "name": "sleeps", "trigger_config": {"interval": 2, "unit": "seconds"},
        "execution_config": {"task_type": "sleep", "parameters": {"seconds": 0.5}}})
    sid = r.json()["id"]

    def failed():
        items = cluster.api("GET", f"/triggers/{tid}/history").json()["items"]
        return [j for j in items if j["status"] == "failed"]
    jobs = wait_for(failed, timeout=10, what="a failed job")
    assert jobs[0]["result"]["error"] == "boom"
    assert jobs[0]["result"]["exit_code"] == 1
    slept = wait_for(lambda: succeeded(cluster, sid), timeout=10, what="a sleep job")
    assert slept[0]["duration_ms"] >= 450
    job = cluster.api("GET", f"/jobs/{slept[0]['id']}")
    assert job.status_code == 200 and job.json()["trigger_id"] == sid


def test_jobs_wait_for_a_worker_that_serves_their_task_type(cluster):
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"})
    r = cluster.api("POST", "/triggers/", json={
        "name": "nobody", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "sleep", "parameters": {"seconds": 0},
                             "overlap_policy": "allow"}})
    tid = r.json()["id"]
    time.sleep(2.5)
    items = cluster.api("GET", f"/triggers/{tid}/history").json()["items"]
    assert items and all(j["status"] == "queued" for j in items), items
    # Health says which task type has queued jobs but no worker.
    h = wait_for(lambda: (lambda h: h if h.get("unserved_task_types") == ["sleep"] else None)(
        cluster.health()), 5, what="health to name the unserved task type")
    assert h["status"] == "degraded" and any("sleep" in r for r in h["reasons"]), h
    # A worker that serves the type arrives and takes the queued jobs.
    cluster.start_worker(9, SKED_TASK_TYPES="sleep")
    wait_for(lambda: len(succeeded(cluster, tid)) >= len(items), timeout=10,
             what="queued jobs to run on the new worker")
    wait_for(lambda: cluster.health().get("unserved_task_types") == [], 5,
             what="health to clear the unserved task type")


def test_past_start_at_does_not_fire_for_times_before_creation(cluster):
    cluster.start(masters=1, workers=1)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=10)
    r = cluster.api("POST", "/triggers/", json={
        "name": "past-start", "trigger_config": {
            "interval": 1, "unit": "hours", "start_at": zulu(start)},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    expected = (start + dt.timedelta(hours=1)).isoformat().replace("+00:00", ".000Z")
    assert r.json()["next_fire_at"] == expected
    time.sleep(3)
    assert cluster.db.jobs.count_documents({"trigger_id": tid}) == 0
    state = cluster.db.trigger_state.find_one({"_id": tid})
    assert state is None or state["next_fire_at"] == start + dt.timedelta(hours=1)


def test_health_reports_queue_depth_and_fire_lag(cluster):
    # A 1 ms threshold: any real fire lag trips it. Fires claimed at their
    # time, not ahead (ahead, a worker starts them within a millisecond).
    cluster.start(masters=1, workers=1, gateway_env={"SKED_HEALTH_LAG_MS": "1"},
                  master_env={"SKED_FIRE_AHEAD_MS": "0"})
    h = cluster.health()
    assert h["queue_depth"] == 0 and h["fire_lag_ms"] == 0, h
    r = cluster.api("POST", "/triggers/", json=INTERVAL_BODY)
    assert r.status_code == 201
    h = wait_for(lambda: (lambda h: h if h.get("fire_lag_ms", 0) > 1 else None)(cluster.health()),
                 10, what="fire lag in health")
    assert h["status"] == "degraded" and any("fire lag" in x for x in h["reasons"]), h


def test_end_at_stops_the_schedule(cluster):
    cluster.start(masters=1, workers=1)
    end = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=4)
    r = cluster.api("POST", "/triggers/", json={
        "name": "ends", "trigger_config": {"interval": 1, "unit": "seconds",
                                           "end_at": zulu(end)},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    time.sleep(7)
    jobs = list(cluster.db.jobs.find({"trigger_id": tid}))
    assert 2 <= len(jobs) <= 4, len(jobs)
    assert all(j["scheduled_for"] <= end for j in jobs), (end, sorted(j["scheduled_for"] for j in jobs))
    assert cluster.api("GET", f"/triggers/{tid}").json()["next_fire_at"] is None


def test_a_restarted_master_resumes_from_the_stored_state_unless_the_trigger_changed_after(cluster):
    cluster.start(masters=1, workers=1)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    ids = [interval_trigger(cluster, name, {"task_type": "noop"}, start, 1)
           for name in ("resumes", "changed")]
    resumes, changed = ids
    wait_for(lambda: all(cluster.db.jobs.count_documents({"trigger_id": t}) >= 2 for t in ids),
             timeout=15, what="two fires of each trigger")
    old = cluster.masters[0]
    assert old.stop() == 0  # SIGTERM: states saved, leases released
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    # Both states now say the next fire is 10 s away (on the 1-s grid); the
    # second was written before its trigger's last change, so it is stale.
    later = now + dt.timedelta(seconds=10)
    cluster.db.trigger_state.update_one({"_id": resumes}, {"$set": {
        "next_fire_at": later, "updated_at": now}})
    defined = cluster.db.triggers.find_one({"_id": changed})["updated_at"]
    cluster.db.trigger_state.update_one({"_id": changed}, {"$set": {
        "next_fire_at": later, "updated_at": defined - dt.timedelta(seconds=1)}})
    cluster.start_master(0, cluster.master_ports[0])
    quiet_from = now + dt.timedelta(seconds=2)  # past what was claimed ahead before the stop

    def fires(tid):
        return sorted(j["scheduled_for"] for j in cluster.db.jobs.find(
            {"trigger_id": tid, "scheduled_for": {"$gte": quiet_from}}))
    wait_for(lambda: fires(resumes), timeout=30, what="the resumed trigger's fire")
    assert fires(resumes)[0] == later, fires(resumes)
    # The stale state is not used: its trigger fired before `later` (its
    # missed fires coalesced into one, its default misfire policy).
    assert fires(changed) and fires(changed)[0] < later, fires(changed)
