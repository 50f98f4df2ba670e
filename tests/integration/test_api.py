"""The REST surface: authentication, validation errors, limits, scoping."""
import base64
import json
import time

import jwt
import requests

GOOD = {
    "name": "daily-backup",
    "description": "Daily database backup",
    "trigger_config": {"cron_expression": "0 2 * * *", "timezone": "UTC"},
    "execution_config": {"task_type": "backup", "max_execution_time": 3600,
                         "retry_policy": {"max_retries": 3, "backoff_multiplier": 2.0}},
}


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_authentication_is_required_and_checked(cluster):
    cluster.start(masters=1, workers=1)
    url = f"{cluster.url}/api/scheduler/triggers/"
    now = int(time.time())

    def status(token):
        h = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.get(url, headers=h, timeout=5).status_code

    assert status(None) == 401
    assert status("garbage") == 401
    assert status(cluster.token(ttl=-120)) == 401                       # expired
    assert status(cluster.token(secret="another-secret")) == 401       # wrong key
    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "x", "exp": now + 60}) + "."
    assert status(unsigned) == 401                                       # alg none
    no_exp = jwt.encode({"sub": "x"}, cluster.secret, algorithm="HS256")
    assert status(no_exp) == 401
    hs512 = jwt.encode({"sub": "x", "exp": now + 60}, cluster.secret, algorithm="HS512")
    assert status(hs512) == 401                                          # algorithm pinned
    r = requests.get(url, timeout=5)
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert status(cluster.token()) == 200
    # Health needs no token and reveals no user data.
    h = requests.get(f"{cluster.url}/api/scheduler/health", timeout=5)
    assert h.status_code == 200 and h.json()["status"] == "healthy"
    assert "triggers" not in h.text


def test_seed_sample_bodies_are_accepted(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", json=GOOD)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["trigger_type"] == "CRON"
    assert t["next_fire_at"].endswith("T02:00:00.000Z")
    nightly = {
        "name": "nightly-tests", "description": "Nightly test suite execution",
        "trigger_config": {"cron_expression": "0 1 * * *", "timezone": "America/New_York"},
        "execution_config": {"task_type": "test_execution",
                             "parameters": {"suite_id": "regression-suite", "environment": "staging"}},
    }
    r = cluster.api("POST", "/triggers/", json=nightly)
    assert r.status_code == 201, r.text
    # 01:00 in New York is 05:00 or 06:00 UTC depending on DST.
    assert r.json()["next_fire_at"][11:13] in ("05", "06")
    # Same name again for the same owner: conflict.
    assert cluster.api("POST", "/triggers/", json=GOOD).status_code == 409


def test_malformed_json_is_400_with_line_and_column(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", data='{\n  "name": "x",\n  "trigger_config": {,\n}',
                    headers={**cluster.headers(), "Content-Type": "application/json"})
    assert r.status_code == 400
    d = r.json()["detail"][0]
    assert d["type"] == "json_invalid" and d["line"] == 3 and d["column"] >= 20, d
    r = cluster.api("POST", "/triggers/", data='{"name": "a", "name": "b"}')
    assert r.status_code == 400, "duplicate keys are rejected"


def test_invalid_fields_are_422_listing_each_path(cluster):
    cluster.start(masters=1, workers=1)
    body = {
        "name": "",
        "trigger_config": {"interval": -5, "unit": "weeks", "colour": "red"},
        "execution_config": {"task_type": "bad type!", "max_execution_time": "long",
                             "retry_policy": {"max_retries": 1000}},
    }
    r = cluster.api("POST", "/triggers/", json=body)
    assert r.status_code == 422, r.text
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    for want in [("body", "name"), ("body", "trigger_config", "interval"),
                 ("body", "trigger_config", "unit"), ("body", "trigger_config", "colour"),
                 ("body", "execution_config", "task_type"),
                 ("body", "execution_config", "max_execution_time"),
                 ("body", "execution_config", "retry_policy", "max_retries")]:
        assert want in locs, (want, locs)
    r = cluster.api("POST", "/triggers/", json={"name": "x", "trigger_config": {
        "cron_expression": "0 0 32 * *"}, "execution_config": {"task_type": "noop"}})
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["loc"] == ["body", "trigger_config", "cron_expression"] and "32" in d["msg"], d
    r = cluster.api("POST", "/triggers/", json={"name": "x", "trigger_config": {
        "cron_expression": "0 0 * * *", "timezone": "Mars/Olympus"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "trigger_config", "timezone"]
    r = cluster.api("POST", "/triggers/", json={"name": "x", "trigger_type": "CRON",
                                                  "trigger_config": {"interval": 5},
                                                  "execution_config": {"task_type": "noop"}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "trigger_type"]
    r = cluster.api("POST", "/triggers/", json={"trigger_config": {}, "execution_config": {}})
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert ("body", "name") in locs and ("body", "execution_config", "task_type") in locs
    assert cluster.api("POST", "/triggers/", json=[1, 2]).status_code == 422


def test_limits_and_unknown_resources(cluster):
    cluster.start(masters=1, workers=1)
    big = '{"name": "' + "x" * (1024 * 1024 + 10) + '"}'
    r = cluster.api("POST", "/triggers/", data=big)
    assert r.status_code == 413
    assert cluster.api("GET", "/triggers/000000000000000000000000").status_code == 404
    assert cluster.api("GET", "/triggers/nope/history").status_code == 404
    assert cluster.api("GET", "/jobs/nope").status_code == 404
    assert cluster.api("GET", "/nothing-here").status_code == 404
    assert cluster.api("DELETE", "/health").status_code == 405
    assert cluster.api("GET", "/triggers/?page_size=1000").status_code == 422


def test_triggers_are_scoped_to_their_owner(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", sub="alice", json=dict(GOOD, name="alices"))
    tid = r.json()["id"]
    assert cluster.api("GET", f"/triggers/{tid}", sub="bob").status_code == 404
    assert cluster.api("GET", f"/triggers/{tid}/history", sub="bob").status_code == 404
    assert cluster.api("GET", "/triggers/", sub="bob").json()["total"] == 0
    assert cluster.api("GET", f"/triggers/{tid}", sub="root", role="admin").status_code == 200
    assert cluster.api("GET", "/triggers/", sub="root", role="admin").json()["total"] == 1
