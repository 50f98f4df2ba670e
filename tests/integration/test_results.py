"""A job's final outcome is inserted as a record of its own into
`job_results` and folded into the job document later, by its master's
status writer while idle (docs/ARCHITECTURE.md, "Outcomes by insert").
Until folded, every reader lays the record over the job: the gateway's
GET /jobs/{id}, listings and cancel, and a master taking the partition
over, which must not run such a job again."""
import datetime as dt

from conftest import free_port, wait_for
from test_metrics import scrape, val


def raw_jobs(cluster):
    """The jobs collection as stored (cluster.db.jobs lays records over)."""
    return cluster.mongo[cluster.db_name].jobs


def test_an_outcome_is_recorded_then_folded_into_its_job(cluster):
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, master_env={"SKED_METRICS_ADDR": maddr})
    r = cluster.api("POST", "/triggers/", json={
        "name": "rec", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    wait_for(lambda: cluster.db.jobs.count_documents({"trigger_id": tid, "status": "succeeded"}) >= 3,
             30, what="three jobs succeeded")
    samples, _ = scrape(f"http://{maddr}/metrics")
    assert val(samples, "sked_store_operation_duration_seconds_count", op="record_jobs") >= 1, \
        "outcomes were not inserted as records"
    assert val(samples, "sked_results_folded_total") >= 3
    # Folded records are deleted; what is left belongs to the last fires.
    cluster.api("POST", f"/triggers/{tid}/pause")
    wait_for(lambda: cluster.db.job_results.count_documents({}) == 0, 30,
             what="every record folded once the jobs stop")
    stored = list(raw_jobs(cluster).find({"trigger_id": tid}))
    assert len(stored) >= 3 and all(j["status"] == "succeeded" for j in stored), stored
    assert all([a["status"] for a in j["attempts"]] == ["succeeded"] for j in stored), stored
    assert all(j["result"]["exit_code"] == 0 for j in stored), stored


def test_a_record_is_read_over_its_job_until_folded(cluster):
    """What a master that died between recording an outcome and folding it
    leaves: the job `running` in `jobs`, its outcome in `job_results`."""
    cluster.start(masters=0, workers=0, healthy_within=None)
    r = cluster.api("POST", "/triggers/", json={
        "name": "left", "trigger_config": {"interval": 1, "unit": "hours"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    part = cluster.db.triggers.find_one({"_id": tid})["partition"]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    jid = f"{tid}@{int(now.timestamp() * 1000) - 3600000}"
    raw_jobs(cluster).insert_one({
        "_id": jid, "trigger_id": tid, "owner": "alice", "partition": part, "kind": "scheduled",
        "task_type": "noop", "attempt": 1, "parameters": {}, "created_at": now,
        "scheduled_for": now - dt.timedelta(hours=1), "status": "running", "started_at": now,
        "worker_id": "worker-gone"})
    entry = {"attempt": 1, "status": "succeeded", "worker_id": "worker-gone", "started_at": now,
             "finished_at": now, "duration_ms": 5, "exit_code": 0, "error": None}
    cluster.db.job_results.insert_one({
        "_id": jid, "partition": part, "recorded_at": now,
        "set": {"status": "succeeded", "attempt": 1, "finished_at": now, "worker_id": "worker-gone",
                "started_at": now, "duration_ms": 5, "result": {"exit_code": 0}},
        "push": entry})

    got = cluster.api("GET", f"/jobs/{jid}").json()
    assert got["status"] == "succeeded", got
    assert [a["status"] for a in got["attempts"]] == ["succeeded"], got
    r = cluster.api("POST", f"/jobs/{jid}/cancel")
    assert r.status_code == 409 and "already succeeded" in r.text, r.text
    hist = cluster.api("GET", f"/triggers/{tid}/history").json()
    assert [j["status"] for j in hist["items"]] == ["succeeded"], hist
    running = cluster.api("GET", f"/triggers/{tid}/history", params={"status": "running"}).json()
    assert running["items"] == [], running

    # A master takes the partition over: the job is final, not lost, and
    # its writer folds the record into it.
    cluster.start_master(0, free_port(), SKED_WORKER_TIMEOUT_MS="2000")
    done = wait_for(lambda: cluster.db.job_results.count_documents({}) == 0 and
                    raw_jobs(cluster).find_one({"_id": jid}), 30, interval=0.2,
                    what="the record folded")
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1
    assert [a["status"] for a in done["attempts"]] == ["succeeded"], done
    log = cluster.masters[0].text()
    assert "jobs taken over" not in log, "a job with a recorded outcome was taken over"
