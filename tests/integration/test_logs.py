"""One log format for every process: with SKED_LOG_FORMAT=json each line is
a JSON object with ts, level, role, node, msg and the key=value fields
(job=..., attempt=...); job state changes carry their ids; neither tokens
nor job parameters reach the logs."""
import json

from conftest import wait_for


def test_json_logs_from_every_process_carry_ids_and_no_secrets(cluster):
    env = {"SKED_LOG_FORMAT": "json"}
    cluster.start(masters=1, workers=1, master_env=env, worker_env=env, gateway_env=env)
    token_header = cluster.headers()
    r = cluster.api("POST", "/triggers/", headers=token_header, json={
        "name": "logged", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "fail",
                             "parameters": {"password": "hunter2-param-secret"}}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    wait_for(lambda: cluster.db.jobs.count_documents({"trigger_id": tid, "status": "failed"}) >= 2,
             20, what="failed jobs")
    procs = {"master": cluster.masters[0], "worker": cluster.workers[0], "gateway": cluster.gateway}
    finished = []
    for role, p in procs.items():
        text = p.text()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines, role
        for ln in lines:
            rec = json.loads(ln)  # every line is one JSON object
            assert {"ts", "level", "role", "node", "msg"} <= rec.keys(), rec
            assert rec["role"] == role and rec["level"] in ("debug", "info", "warn", "error")
            if rec["msg"] == "job finished":
                finished.append(rec)
        assert "hunter2-param-secret" not in text, role
        assert token_header["Authorization"].split()[1] not in text, role
        assert cluster.secret not in text, role
    # The master's line for a job's end names the job, attempt, status and worker.
    m = [r for r in finished if r["role"] == "master"]
    assert m, finished
    assert m[0]["job"].startswith(tid + "@") and m[0]["attempt"] == "1"
    assert m[0]["status"] == "failed" and m[0]["worker"] == "worker-0"
