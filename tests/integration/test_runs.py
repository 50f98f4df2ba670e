"""Manual runs and cancel: POST /triggers/{id}/execute with the seed's body
(force_execution, override_config) and POST /jobs/{id}/cancel."""
import time

from conftest import wait_for


def make(cluster, name, execution, **config):
    r = cluster.api("POST", "/triggers/", json={
        "name": name, "trigger_config": config or {"cron_expression": "0 2 * * *"},
        "execution_config": execution})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def job(cluster, job_id):
    r = cluster.api("GET", f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def final(cluster, job_id, timeout=15):
    return wait_for(lambda: (lambda j: j if j["status"] not in ("queued", "running", "retrying") else None)(
        job(cluster, job_id)), timeout, what=f"job {job_id} to end")


def test_manual_run_with_override_config(cluster):
    cluster.start(masters=2, workers=1)
    tid = make(cluster, "nightly-tests", {"task_type": "echo", "parameters": {
        "suite_id": "regression-suite", "environment": "staging"}})
    r = cluster.api("POST", f"/triggers/{tid}/execute", json={
        "parameters": {"force_execution": True, "override_config": {"environment": "production"}}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["trigger_id"] == tid and body["job_id"]
    j = final(cluster, body["job_id"])
    assert j["status"] == "succeeded", j
    assert j["kind"] == "manual"
    assert '"environment":"production"' in j["result"]["output"]
    assert '"suite_id":"regression-suite"' in j["result"]["output"]
    # The trigger's own parameters are unchanged.
    t = cluster.api("GET", f"/triggers/{tid}").json()
    assert t["execution_config"]["parameters"]["environment"] == "staging"
    # An empty body runs it too; the history lists manual runs.
    r = cluster.api("POST", f"/triggers/{tid}/execute")
    assert r.status_code == 202
    final(cluster, r.json()["job_id"])
    items = cluster.api("GET", f"/triggers/{tid}/history").json()["items"]
    assert len([i for i in items if i["kind"] == "manual"]) == 2


def test_paused_trigger_runs_only_when_forced(cluster):
    cluster.start(masters=1, workers=1)
    tid = make(cluster, "paused", {"task_type": "noop"})
    assert cluster.api("POST", f"/triggers/{tid}/pause").status_code == 200
    r = cluster.api("POST", f"/triggers/{tid}/execute", json={"parameters": {}})
    assert r.status_code == 409
    r = cluster.api("POST", f"/triggers/{tid}/execute", json={"parameters": {"force_execution": True}})
    assert r.status_code == 202
    assert final(cluster, r.json()["job_id"])["status"] == "succeeded"


def test_execute_validation_and_scoping(cluster):
    cluster.start(masters=1, workers=1)
    tid = make(cluster, "v", {"task_type": "noop"})
    r = cluster.api("POST", f"/triggers/{tid}/execute", json={"parameters": {"force_execution": "yes",
                                                                            "bogus": 1}})
    assert r.status_code == 422
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert ("body", "parameters", "force_execution") in locs and ("body", "parameters", "bogus") in locs
    assert cluster.api("POST", f"/triggers/{tid}/execute", data="{oops").status_code == 400
    assert cluster.api("POST", f"/triggers/{tid}/execute", sub="mallory").status_code == 404


def test_overlap_policy_applies_unless_forced(cluster):
    cluster.start(masters=1, workers=1)
    tid = make(cluster, "slow", {"task_type": "sleep", "parameters": {"seconds": 3}})
    first = cluster.api("POST", f"/triggers/{tid}/execute").json()["job_id"]
    wait_for(lambda: job(cluster, first)["status"] == "running", 10, what="first run")
    second = cluster.api("POST", f"/triggers/{tid}/execute").json()["job_id"]
    j = final(cluster, second)
    assert j["status"] == "skipped" and j["skip_reason"] == "overlap", j
    third = cluster.api("POST", f"/triggers/{tid}/execute",
                        json={"parameters": {"force_execution": True}}).json()["job_id"]
    assert final(cluster, third)["status"] == "succeeded"


def test_cancel_queued_job_and_refuse_final_ones(cluster):
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"})
    tid = make(cluster, "waits", {"task_type": "sleep", "parameters": {"seconds": 1}})
    jid = cluster.api("POST", f"/triggers/{tid}/execute").json()["job_id"]
    time.sleep(1)
    assert job(cluster, jid)["status"] == "queued"   # no worker serves sleep
    r = cluster.api("POST", f"/jobs/{jid}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    assert final(cluster, jid)["status"] == "cancelled"
    assert cluster.api("POST", f"/jobs/{jid}/cancel").status_code == 409
    assert cluster.api("POST", "/jobs/nope/cancel").status_code == 404
    assert cluster.api("POST", f"/jobs/{jid}/cancel", sub="mallory").status_code == 404
