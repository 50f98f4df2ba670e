"""The invariant checker finds what it is meant to find, and a healthy
cluster gives it nothing to report."""
import datetime as dt
import time


def test_checker_reports_duplicates_gaps_and_stuck_jobs(cluster):
    cluster.start(masters=2, workers=1)
    r = cluster.api("POST", "/triggers/", json={
        "name": "checked", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    tid = r.json()["id"]
    time.sleep(5)
    clean = cluster.invariants()
    assert clean["jobs"] >= 4
    assert not clean["duplicates"] and not clean["gaps"] and not clean["stuck"], clean

    jobs = sorted(cluster.db.jobs.find({"trigger_id": tid}), key=lambda j: j["scheduled_for"])
    middle = jobs[len(jobs) // 2]
    cluster.db.jobs.delete_one({"_id": middle["_id"]})
    # The unique index refuses a second job for one fire; without it the
    # checker must still see one.
    assert "trigger_scheduled" in cluster.db.jobs.index_information()
    cluster.db.jobs.drop_index("trigger_scheduled")
    cluster.db.jobs.insert_one({**jobs[0], "_id": "copy-of-first"})
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    cluster.db.jobs.insert_one({"_id": "stuck-one", "trigger_id": "x", "kind": "manual",
                                "status": "running", "created_at": old, "scheduled_for": old})
    r = cluster.invariants()
    assert (tid, jobs[0]["scheduled_for"]) in r["duplicates"]
    assert any(g[0] == tid and g[1] == middle["scheduled_for"] for g in r["gaps"]), r["gaps"]
    assert ("stuck-one", "running") in r["stuck"]
