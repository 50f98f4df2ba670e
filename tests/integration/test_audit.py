"""Every write through the API is recorded in `audit`: who, what, when,
before and after."""


def test_writes_are_audited(cluster):
    cluster.start(masters=1, workers=1)
    body = {"name": "audited", "trigger_config": {"cron_expression": "0 2 * * *"},
            "execution_config": {"task_type": "noop"}}
    tid = cluster.api("POST", "/triggers/", json=body).json()["id"]
    assert cluster.api("PATCH", f"/triggers/{tid}", json={"description": "changed"}).status_code == 200
    assert cluster.api("POST", f"/triggers/{tid}/pause").status_code == 200
    jid = cluster.api("POST", f"/triggers/{tid}/execute",
                      json={"parameters": {"force_execution": True}}).json()["job_id"]
    assert cluster.api("DELETE", f"/triggers/{tid}").status_code == 204
    assert cluster.api("POST", "/locks", sub="root", role="admin",
                       json={"name": "nightly", "ttl_seconds": 60}).status_code == 201
    records = list(cluster.db.audit.find({}).sort("at", 1))
    actions = [(r["action"], r["actor"]) for r in records]
    assert actions == [("trigger.create", "alice"), ("trigger.update", "alice"),
                       ("trigger.update", "alice"), ("trigger.execute", "alice"),
                       ("trigger.delete", "alice"), ("lock.acquire", "root")], actions
    create, update = records[0], records[1]
    assert create["resource"] == tid and "before" not in create and create["after"]["name"] == "audited"
    assert update["before"]["description"] == "" and update["after"]["description"] == "changed"
    assert records[3]["resource"] == jid
    assert records[4]["before"]["_id"] == tid and "after" not in records[4]
    assert all(r["at"] and r["remote"] == "127.0.0.1" for r in records)
    # Reads are not audited.
    cluster.api("GET", "/triggers/")
    assert cluster.db.audit.count_documents({}) == len(records)
