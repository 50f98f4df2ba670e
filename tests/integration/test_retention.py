"""Job retention: final jobs older than SKED_JOB_RETENTION_S go, while
running jobs, jobs with a notice pending and the last fire a trigger's
state has not moved past stay; a pruned fire is never run again."""
import datetime as dt
import time

from conftest import free_port, wait_for
from test_metrics import scrape, val


def test_old_final_jobs_are_pruned_and_never_refired(cluster):
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1,
                  master_env={"SKED_JOB_RETENTION_S": "2", "SKED_METRICS_ADDR": maddr})
    r = cluster.api("POST", "/triggers/", json={
        "name": "every second", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    tick = r.json()["id"]
    r = cluster.api("POST", "/triggers/", json={
        "name": "long one", "trigger_config": {}, "execution_config": {
            "task_type": "sleep", "parameters": {"seconds": 16}}})
    slow = r.json()["id"]
    r = cluster.api("POST", f"/triggers/{slow}/execute", json={})
    assert r.status_code == 202, r.text
    running = r.json()["job_id"]
    # A final job whose notice was never delivered (its master died first).
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    part = cluster.db.triggers.find_one({"_id": slow})["partition"]
    cluster.db.jobs.insert_one({"_id": "pending-notice", "trigger_id": slow, "owner": "alice",
                                "partition": part, "kind": "manual", "task_type": "noop",
                                "status": "failed", "attempt": 1, "scheduled_for": old,
                                "created_at": old, "finished_at": old, "notify_pending": True})
    seen = set()

    def ticks():
        docs = list(cluster.db.jobs.find({"trigger_id": tick}, {"scheduled_for": 1}))
        seen.update(d["_id"] for d in docs)
        return docs
    start = time.time()
    while time.time() - start < 10:
        ticks()
        time.sleep(0.25)
    docs = ticks()
    assert len(seen) >= 8, f"only {len(seen)} fires seen"
    # Only the last few seconds of history remain.
    assert len(docs) <= 5, f"{len(docs)} jobs of a 1/s trigger kept with a 2 s retention"
    # What must stay, stayed.
    assert cluster.db.jobs.find_one({"_id": "pending-notice"}) is not None
    run = cluster.db.jobs.find_one({"_id": running})
    assert run is not None and run["status"] == "running", run
    # No fire was claimed twice: every job id seen is distinct by
    # construction, and none of the pruned ones came back.
    pruned = seen - {d["_id"] for d in docs}
    time.sleep(1.5)
    back = {d["_id"] for d in ticks()} & pruned
    assert not back, f"pruned fires claimed again: {sorted(back)[:3]}"
    samples, _ = scrape(f"http://{maddr}/metrics")
    assert val(samples, "sked_jobs_pruned_total") >= len(seen) - 5
    # The long job ends, and its record goes two seconds later.
    wait_for(lambda: cluster.db.jobs.find_one({"_id": running, "status": "succeeded"}), 30,
             interval=0.5, what="the long job to finish")
    wait_for(lambda: cluster.db.jobs.find_one({"_id": running}) is None, 10, interval=0.5,
             what="the finished long job to be pruned")


def test_retention_zero_keeps_every_job(cluster):
    cluster.start(masters=1, workers=1, master_env={"SKED_JOB_RETENTION_S": "0"})
    r = cluster.api("POST", "/triggers/", json={
        "name": "every second", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    tid = r.json()["id"]
    time.sleep(6)
    assert cluster.db.jobs.count_documents({"trigger_id": tid}) >= 5


def test_jobs_kept_for_g1_do_not_hide_the_rest(cluster):
    """More candidates kept for G1 than one batch (500) come first in the
    store's order; the deletable jobs behind them still go."""
    cluster.start(masters=1, workers=1, master_env={"SKED_JOB_RETENTION_S": "2"})
    r = cluster.api("POST", "/triggers/", json={
        "name": "every second", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    tid = r.json()["id"]
    part = cluster.db.triggers.find_one({"_id": tid})["partition"]
    now = dt.datetime.now(dt.timezone.utc)
    old, later = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
    # Final, old, but at times the trigger's state has not passed: kept.
    cluster.db.jobs.insert_many([
        {"_id": f"{tid}@{int(later.timestamp() * 1000) + i * 1000}", "trigger_id": tid,
         "owner": "alice", "partition": part, "kind": "scheduled", "task_type": "noop",
         "status": "succeeded", "attempt": 1, "scheduled_for": later + dt.timedelta(seconds=i),
         "created_at": old, "finished_at": old} for i in range(600)])
    time.sleep(10)
    real = cluster.db.jobs.count_documents({"trigger_id": tid, "scheduled_for": {"$lt": later}})
    kept = cluster.db.jobs.count_documents({"trigger_id": tid, "scheduled_for": {"$gte": later}})
    assert kept == 600
    assert 1 <= real <= 5, f"{real} jobs of a 1/s trigger kept with a 2 s retention"
