"""Changing triggers: PATCH, PUT, DELETE, pause and resume. Each change is
checked where it matters: in the API's answers and in the jobs the masters
fire afterwards (the job documents in the store)."""
import datetime as dt
import time

import requests

from conftest import wait_for

EVERY_SECOND = {
    "name": "every-second",
    "trigger_config": {"interval": 1, "unit": "seconds"},
    "execution_config": {"task_type": "noop"},
}
NIGHTLY = {
    "name": "nightly",
    "description": "nightly run",
    "trigger_config": {"cron_expression": "0 2 * * *", "timezone": "Europe/Berlin"},
    "execution_config": {"task_type": "noop", "parameters": {"a": 1}},
}


# Masters re-read their triggers every 10 housekeeping ticks; with these
# settings that is every 10 s, so within the tests' few-second windows only
# the gateway's NOTIFY can explain a master reacting to a change.
SLOW_RECONCILE = {"SKED_HEARTBEAT_MS": 1000, "SKED_LEASE_TTL_MS": 10000,
                  "SKED_WORKER_TIMEOUT_MS": 3000}


def iso(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def ran(cluster, tid):
    """How many of the trigger's fires have run (a fire claimed ahead of its
    time, SKED_FIRE_AHEAD_MS, is a job document before it runs)."""
    return cluster.db.jobs.count_documents({"trigger_id": tid, "status": "succeeded"})


def fires(cluster, tid, after=None):
    """scheduled_for of the trigger's jobs (UTC, sorted), optionally only
    those strictly after `after`."""
    out = sorted(j["scheduled_for"].replace(tzinfo=dt.timezone.utc)
                 for j in cluster.db.jobs.find({"trigger_id": tid}))
    return [t for t in out if after is None or t > after]


def create(cluster, body, sub="alice", role="user"):
    r = cluster.api("POST", "/triggers/", sub=sub, role=role, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def locs(r):
    return {tuple(d["loc"]) for d in r.json()["detail"]}


def test_patch_interval_reschedules_the_master_at_once(cluster):
    cluster.start(masters=2, workers=1, master_env=SLOW_RECONCILE)
    t = create(cluster, EVERY_SECOND)
    tid = t["id"]
    wait_for(lambda: ran(cluster, tid) >= 3, 10, what="3 fires at 1 s")
    r = cluster.api("PATCH", f"/triggers/{tid}",
                    json={"trigger_config": {"interval": 2, "unit": "seconds"}})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["version"] == 2 and p["trigger_config"] == {"interval": 2, "unit": "seconds"}
    assert p["name"] == "every-second" and p["execution_config"]["task_type"] == "noop"
    assert iso(p["updated_at"]) > iso(t["updated_at"]) and p["created_at"] == t["created_at"]
    changed = iso(p["updated_at"])
    doc = cluster.db.triggers.find_one({"_id": tid})
    assert doc["version"] == 2 and doc["schedule"]["period_ms"] == 2000
    first = doc["schedule"]["first_fire_at"].replace(tzinfo=dt.timezone.utc)
    assert first == changed + dt.timedelta(seconds=2)
    assert iso(p["next_fire_at"]) == first, "the answer shows the new schedule"
    wait_for(lambda: len(fires(cluster, tid, changed)) >= 3, 12, what="3 fires at 2 s")
    new = fires(cluster, tid, changed + dt.timedelta(milliseconds=200))
    # The master dropped the 1 s grid on NOTIFY: nothing fired between the
    # change and the new first fire, then every 2 s exactly.
    assert new[0] == first, (new, first)
    for a, b in zip(new, new[1:]):
        assert b - a == dt.timedelta(seconds=2), new
    old = fires(cluster, tid)[:3]
    assert all(b - a == dt.timedelta(seconds=1) for a, b in zip(old, old[1:])), old
    # The history shows both, and old jobs are untouched.
    h = cluster.api("GET", f"/triggers/{tid}/history?page_size=100").json()
    assert h["total"] == len(fires(cluster, tid))


def test_pause_stops_fires_and_resume_restarts_them(cluster):
    cluster.start(masters=1, workers=1, master_env=SLOW_RECONCILE)
    tid = create(cluster, EVERY_SECOND)["id"]
    wait_for(lambda: len(fires(cluster, tid)) >= 2, 10, what="2 fires")
    r = cluster.api("POST", f"/triggers/{tid}/pause")
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["status"] == "paused" and p["is_active"] is False and p["next_fire_at"] is None
    assert p["version"] == 2
    paused = iso(p["updated_at"])
    # Pausing again changes nothing: same version, still paused.
    again = cluster.api("POST", f"/triggers/{tid}/pause/")
    assert again.status_code == 200 and again.json()["version"] == 2
    time.sleep(2.5)
    assert fires(cluster, tid, paused + dt.timedelta(milliseconds=200)) == [], "fired while paused"
    assert cluster.api("GET", f"/triggers/{tid}").json()["status"] == "paused"
    assert cluster.api("GET", "/triggers/").json()["items"][0]["is_active"] is False
    r = cluster.api("POST", f"/triggers/{tid}/resume")
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["status"] == "active" and q["is_active"] is True and q["version"] == 3
    resumed = iso(q["updated_at"])
    # The grid restarts from the resume; nothing missed while paused is run.
    assert iso(q["next_fire_at"]) == resumed + dt.timedelta(seconds=1)
    wait_for(lambda: len(fires(cluster, tid, resumed)) >= 2, 6, what="fires after resume")
    after = list(cluster.db.jobs.find({"trigger_id": tid}))
    assert not any(j["misfire"] for j in after), "resume ran a catch-up misfire"
    gap = fires(cluster, tid, paused + dt.timedelta(milliseconds=200))
    assert gap[0] == resumed + dt.timedelta(seconds=1), gap
    # PATCH is_active works the same way.
    r = cluster.api("PATCH", f"/triggers/{tid}", json={"is_active": False})
    assert r.status_code == 200 and r.json()["status"] == "paused"


def test_delete_removes_the_trigger_and_stops_fires(cluster):
    cluster.start(masters=1, workers=1, master_env=SLOW_RECONCILE)
    tid = create(cluster, EVERY_SECOND)["id"]
    wait_for(lambda: ran(cluster, tid) >= 2, 10, what="2 fires")
    r = cluster.api("DELETE", f"/triggers/{tid}")
    assert r.status_code == 204 and r.content == b"", r.text
    deleted = dt.datetime.now(dt.timezone.utc)
    assert cluster.api("GET", f"/triggers/{tid}").status_code == 404
    assert cluster.api("DELETE", f"/triggers/{tid}").status_code == 404
    assert cluster.api("PATCH", f"/triggers/{tid}", json={"name": "x"}).status_code == 404
    assert cluster.api("POST", f"/triggers/{tid}/resume").status_code == 404
    assert cluster.api("GET", "/triggers/").json()["total"] == 0
    time.sleep(2.5)
    assert fires(cluster, tid, deleted + dt.timedelta(milliseconds=200)) == [], "fired after delete"
    # Its jobs stay as history.
    jobs = list(cluster.db.jobs.find({"trigger_id": tid}))
    assert len(jobs) >= 2
    assert cluster.api("GET", f"/jobs/{jobs[0]['_id']}").status_code == 200
    # The name is free again.
    create(cluster, EVERY_SECOND)


def test_put_replaces_the_whole_trigger_and_validates_it(cluster):
    cluster.start(masters=1, workers=1)
    t = create(cluster, dict(NIGHTLY, is_active=False))
    tid = t["id"]
    bad = {"name": "", "trigger_config": {"interval": 0, "unit": "weeks"},
           "execution_config": {"task_type": "bad type!"}, "colour": "red"}
    r = cluster.api("PUT", f"/triggers/{tid}", json=bad)
    assert r.status_code == 422, r.text
    for want in [("body", "name"), ("body", "trigger_config", "interval"),
                 ("body", "trigger_config", "unit"), ("body", "execution_config", "task_type"),
                 ("body", "colour")]:
        assert want in locs(r), (want, locs(r))
    r = cluster.api("PUT", f"/triggers/{tid}", json={"name": "only-a-name"})
    assert r.status_code == 422
    assert {("body", "trigger_config"), ("body", "execution_config")} <= locs(r)
    r = cluster.api("PUT", f"/triggers/{tid}", data='{"name": ',
                    headers={**cluster.headers(), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "json_invalid"
    r = cluster.api("PUT", f"/triggers/{tid}", json={**NIGHTLY, "trigger_type": "INTERVAL"})
    assert r.status_code == 422 and locs(r) == {("body", "trigger_type")}
    assert cluster.db.triggers.find_one({"_id": tid})["version"] == 1, "failed PUTs wrote"
    # A valid PUT replaces everything: omitted fields take their defaults
    # (no description, active), the type follows the new config.
    r = cluster.api("PUT", f"/triggers/{tid}", json={
        "name": "every-two", "trigger_config": {"interval": 2},
        "execution_config": {"task_type": "echo"}})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["id"] == tid and p["owner"] == "alice" and p["version"] == 2
    assert p["trigger_type"] == "INTERVAL" and p["description"] == ""
    assert p["trigger_config"] == {"interval": 2, "unit": "seconds"}
    assert p["execution_config"] == {"task_type": "echo", "parameters": {}}
    assert p["status"] == "active" and p["next_fire_at"] is not None
    assert p["created_at"] == t["created_at"]
    doc = cluster.db.triggers.find_one({"_id": tid})
    assert doc["schedule"] == {"kind": "interval", "first_fire_at": doc["schedule"]["first_fire_at"],
                               "period_ms": 2000}
    wait_for(lambda: len(fires(cluster, tid)) >= 2, 8, what="fires after PUT")
    got = fires(cluster, tid)
    assert got[1] - got[0] == dt.timedelta(seconds=2)
    j = cluster.db.jobs.find_one({"trigger_id": tid})
    assert j["task_type"] == "echo"


def test_patch_merges_validates_and_keeps_the_grid(cluster):
    cluster.start(masters=1, workers=1)
    t = create(cluster, NIGHTLY)
    tid = t["id"]
    before = cluster.db.triggers.find_one({"_id": tid})
    r = cluster.api("PATCH", f"/triggers/{tid}", json={"description": "renamed job"})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["description"] == "renamed job" and p["version"] == 2
    assert p["trigger_config"] == t["trigger_config"] == {"cron_expression": "0 2 * * *",
                                                          "timezone": "Europe/Berlin"}
    assert p["execution_config"] == t["execution_config"]
    assert p["next_fire_at"] == t["next_fire_at"]
    after = cluster.db.triggers.find_one({"_id": tid})
    assert after["schedule"] == before["schedule"]
    # The same PATCH again is no change: no new version.
    r = cluster.api("PATCH", f"/triggers/{tid}", json={"description": "renamed job"})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert cluster.api("PATCH", f"/triggers/{tid}", json={}).json()["version"] == 2
    # Errors carry body paths, as for create, and change nothing.
    cases = [
        ({"trigger_config": {"cron_expression": "0 0 32 * *"}},
         ("body", "trigger_config", "cron_expression")),
        ({"colour": "red"}, ("body", "colour")),
        ({"name": ""}, ("body", "name")),
        ({"name": None}, ("body", "name")),
        ({"is_active": "yes"}, ("body", "is_active")),
        ({"trigger_type": "INTERVAL"}, ("body", "trigger_type")),
        # A given execution_config replaces the stored one whole.
        ({"execution_config": {"parameters": {"a": 2}}}, ("body", "execution_config", "task_type")),
        ({"trigger_config": {"interval": 5, "cron_expression": "@daily"}}, ("body", "trigger_config")),
    ]
    for patch, loc in cases:
        r = cluster.api("PATCH", f"/triggers/{tid}", json=patch)
        assert r.status_code == 422, (patch, r.text)
        assert loc in locs(r), (patch, r.text)
    r = cluster.api("PATCH", f"/triggers/{tid}", json=[1])
    assert r.status_code == 422
    r = cluster.api("PATCH", f"/triggers/{tid}", data="{nope",
                    headers={**cluster.headers(), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert cluster.db.triggers.find_one({"_id": tid})["version"] == 2
    # A new trigger_config changes the type and the derived schedule.
    r = cluster.api("PATCH", f"/triggers/{tid}", json={
        "trigger_config": {"cron_expression": "30 3 * * *", "timezone": "America/New_York",
                           "dst_policy": {"gap": "skip"}},
        "execution_config": {"task_type": "echo", "parameters": {"b": True}}})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["trigger_type"] == "CRON" and p["version"] == 3
    assert p["execution_config"] == {"task_type": "echo", "parameters": {"b": True}}
    assert p["next_fire_at"][14:19] == "30:00"
    sched = cluster.db.triggers.find_one({"_id": tid})["schedule"]
    assert sched == {"kind": "cron", "cron_expression": "30 3 * * *",
                     "timezone": "America/New_York", "dst_gap": "skip", "dst_overlap": "first"}
    r = cluster.api("PATCH", f"/triggers/{tid}", json={"trigger_config": {"interval": 1}})
    assert r.status_code == 200 and r.json()["trigger_type"] == "INTERVAL"
    wait_for(lambda: len(fires(cluster, tid)) >= 1, 6, what="a fire after turning into INTERVAL")


def test_changes_are_scoped_to_the_owner_and_names_stay_unique(cluster):
    cluster.start(masters=1, workers=1)
    a = create(cluster, dict(NIGHTLY, name="alices"))["id"]
    create(cluster, dict(NIGHTLY, name="alices-other"))
    create(cluster, dict(NIGHTLY, name="bobs"), sub="bob")
    # Bob can neither see nor change Alice's trigger.
    for method, path, kw in [("PATCH", f"/triggers/{a}", {"json": {"description": "x"}}),
                             ("PUT", f"/triggers/{a}", {"json": NIGHTLY}),
                             ("DELETE", f"/triggers/{a}", {}),
                             ("POST", f"/triggers/{a}/pause", {}),
                             ("POST", f"/triggers/{a}/resume", {})]:
        r = cluster.api(method, path, sub="bob", **kw)
        assert r.status_code == 404, (method, path, r.text)
    doc = cluster.db.triggers.find_one({"_id": a})
    assert doc["version"] == 1 and doc["status"] == "active"
    # Unknown ids, methods and missing tokens.
    unknown = "0" * 24
    assert cluster.api("PATCH", f"/triggers/{unknown}", json={}).status_code == 404
    assert cluster.api("PUT", f"/triggers/{unknown}", json=NIGHTLY).status_code == 404
    assert cluster.api("DELETE", f"/triggers/{unknown}").status_code == 404
    assert cluster.api("POST", f"/triggers/{unknown}/pause").status_code == 404
    assert cluster.api("POST", f"/triggers/{a}").status_code == 405
    assert cluster.api("GET", f"/triggers/{a}/pause").status_code == 405
    assert cluster.api("DELETE", "/triggers/").status_code == 405
    for method in ("PATCH", "PUT", "DELETE"):
        r = requests.request(method, f"{cluster.url}/api/scheduler/triggers/{a}", json={}, timeout=5)
        assert r.status_code == 401
    assert requests.post(f"{cluster.url}/api/scheduler/triggers/{a}/pause", timeout=5).status_code == 401
    # Renaming onto a name the owner already uses is a conflict; onto
    # another owner's name it is not.
    r = cluster.api("PATCH", f"/triggers/{a}", json={"name": "alices-other"})
    assert r.status_code == 409, r.text
    r = cluster.api("PUT", f"/triggers/{a}", json=dict(NIGHTLY, name="alices-other"))
    assert r.status_code == 409, r.text
    assert cluster.db.triggers.find_one({"_id": a})["name"] == "alices"
    r = cluster.api("PATCH", f"/triggers/{a}", json={"name": "bobs"})
    assert r.status_code == 200 and r.json()["name"] == "bobs"
    # Admins act on everyone's triggers; the owner stays.
    r = cluster.api("POST", f"/triggers/{a}/pause", sub="root", role="admin")
    assert r.status_code == 200 and r.json()["owner"] == "alice" and r.json()["status"] == "paused"
    r = cluster.api("PATCH", f"/triggers/{a}", sub="root", role="admin",
                    json={"description": "by admin"})
    assert r.status_code == 200 and r.json()["owner"] == "alice"
    assert cluster.api("GET", f"/triggers/{a}").json()["description"] == "by admin"
    assert cluster.api("DELETE", f"/triggers/{a}", sub="root", role="admin").status_code == 204
    assert cluster.api("GET", f"/triggers/{a}").status_code == 404
