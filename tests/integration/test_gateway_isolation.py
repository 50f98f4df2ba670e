"""Two users and an admin over every endpoint. A user sees and changes only
what is his: another user's trigger or job answers 404 exactly as one that
does not exist (never 403, which would confirm it exists), and leaves it
untouched; listings show only his own. An admin sees and manages
everyone's, the owner staying who it was. The lock endpoints are for
admins only (403 for everyone else)."""
import os

import requests

from conftest import BIN, Proc, wait_port

MISSING_TRIGGER = "0123456789abcdef01234567"
MISSING_JOB = MISSING_TRIGGER + "@m0123456789abcdef01234567"


def start_gateway(cluster, **env):
    """Only a gateway: jobs of manual runs stay queued, so they can be cancelled."""
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", **env), cluster.logdir)
    wait_port(cluster.http_port)
    return cluster


class User:
    def __init__(self, cluster, sub, role="user", **claims):
        self.cluster, self.sub = cluster, sub
        self.h = {"Authorization": f"Bearer {cluster.token(sub, role, **claims)}"}

    def __call__(self, method, path, **kw):
        return requests.request(method, f"{self.cluster.url}/api/scheduler{path}", headers=self.h,
                                timeout=10, **kw)


def trigger_body(name):
    return {"name": name, "trigger_config": {"cron_expression": "0 4 * * *"},
            "execution_config": {"task_type": "noop", "parameters": {"who": name}}}


def setup_user(user, name):
    r = user("POST", "/triggers/", json=trigger_body(name))
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    r = user("POST", f"/triggers/{tid}/execute", json={"parameters": {"override_config": {"x": 1}}})
    assert r.status_code == 202, r.text
    return tid, r.json()["job_id"]


def foreign_calls(tid, job_id):
    """Every call on one trigger and its job: (method, path, kwargs)."""
    return [
        ("GET", f"/triggers/{tid}", {}),
        ("PATCH", f"/triggers/{tid}", {"json": {"description": "taken over"}}),
        ("PUT", f"/triggers/{tid}", {"json": trigger_body("taken-over")}),
        ("POST", f"/triggers/{tid}/pause", {}),
        ("POST", f"/triggers/{tid}/resume", {}),
        ("POST", f"/triggers/{tid}/execute", {}),
        ("POST", f"/triggers/{tid}/execute", {"json": {"parameters": {"force_execution": True}}}),
        ("GET", f"/triggers/{tid}/history", {}),
        ("GET", f"/triggers/{tid}/history?status=queued&page_size=5", {}),
        ("GET", f"/jobs/{job_id}", {}),
        ("POST", f"/jobs/{job_id}/cancel", {}),
        ("DELETE", f"/triggers/{tid}", {}),
    ]


def snapshot(cluster):
    """What the store holds, to show a refused call changed nothing."""
    return (sorted((t["_id"], t["owner"], t["version"], t["status"], t.get("description"))
                   for t in cluster.db.triggers.find()),
            sorted((j["_id"], j["owner"], j["status"]) for j in cluster.db.jobs.find()),
            cluster.db.audit.count_documents({}))


def test_users_see_only_their_own_and_admins_see_all(cluster):
    start_gateway(cluster, SKED_RATE_LIMIT=0)
    alice = User(cluster, "alice")
    bob = User(cluster, "bob", role="operator", roles=["operator", "dev"])
    root = User(cluster, "root", role="user", roles=["admin"])
    a_tid, a_job = setup_user(alice, "nightly")
    b_tid, b_job = setup_user(bob, "nightly")   # the same name: names are per owner
    before = snapshot(cluster)

    # A user gets for another's trigger and job exactly what a missing one gets.
    for me, other_tid, other_job in ((bob, a_tid, a_job), (alice, b_tid, b_job)):
        for (method, path, kw), (_, nowhere, _) in zip(foreign_calls(other_tid, other_job),
                                                        foreign_calls(MISSING_TRIGGER, MISSING_JOB)):
            r = me(method, path, **kw)
            assert r.status_code == 404, (me.sub, method, path, r.status_code, r.text)
            gone = me(method, nowhere, **kw)
            assert gone.status_code == 404 and r.json() == gone.json(), (method, path, r.text, gone.text)
    assert snapshot(cluster) == before, "refused calls changed nothing"

    # Listings: each user his own only, whatever the filters; admins all.
    def listed(user, query=""):
        r = user("GET", "/triggers/" + query)
        assert r.status_code == 200, r.text
        return sorted((t["id"], t["owner"]) for t in r.json()["items"]), r.json()["total"]

    for query in ("", "?name=nightly", "?sort=next_fire_at", "?sort=name&order=desc", "?status=active",
                  "?task_type=noop&trigger_type=CRON", "?page_size=100"):
        assert listed(alice, query) == ([(a_tid, "alice")], 1), query
        assert listed(bob, query) == ([(b_tid, "bob")], 1), query
        assert listed(root, query) == (sorted([(a_tid, "alice"), (b_tid, "bob")]), 2), query
    # Own history and jobs are there.
    assert [j["id"] for j in alice("GET", f"/triggers/{a_tid}/history").json()["items"]] == [a_job]
    assert bob("GET", f"/jobs/{b_job}").json()["owner"] == "bob"

    # Lock endpoints: admins only, 403 for users (valid token, wrong role).
    for user in (alice, bob):
        for method, path, kw in (("GET", "/locks", {}),
                                 ("POST", "/locks", {"json": {"name": "l", "ttl_seconds": 5}}),
                                 ("DELETE", "/locks/l", {}), ("DELETE", "/locks/l?owner=root", {})):
            r = user(method, path, **kw)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json() == {"detail": "admin role required"}
    assert root("POST", "/locks", json={"name": "l", "ttl_seconds": 5}).status_code == 201
    assert alice("DELETE", "/locks/l?owner=root").status_code == 403
    assert root("GET", "/locks").json()["total"] >= 1
    assert root("DELETE", "/locks/l").status_code == 204

    # Endpoints with nothing owned answer everyone alike.
    for user in (alice, bob, root):
        assert user("GET", "/cron/preview?expression=0+4+*+*+*&count=1").status_code == 200
        assert user("GET", "/health").status_code in (200, 503)

    # An admin manages everyone's triggers and jobs; owners stay.
    r = root("GET", f"/triggers/{a_tid}")
    assert r.status_code == 200 and r.json()["owner"] == "alice"
    r = root("PATCH", f"/triggers/{a_tid}", json={"description": "by admin"})
    assert r.status_code == 200 and r.json()["owner"] == "alice" and r.json()["version"] == 2
    r = root("PUT", f"/triggers/{b_tid}", json=trigger_body("nightly"))
    assert r.status_code == 200 and r.json()["owner"] == "bob"
    assert root("POST", f"/triggers/{b_tid}/pause").json()["status"] == "paused"
    assert bob("GET", f"/triggers/{b_tid}").json()["status"] == "paused", "the owner sees the change"
    assert root("POST", f"/triggers/{b_tid}/resume").json()["status"] == "active"
    r = root("POST", f"/triggers/{a_tid}/execute", json={})
    assert r.status_code == 202, r.text
    a_job2 = r.json()["job_id"]
    assert cluster.db.jobs.find_one({"_id": a_job2})["owner"] == "alice"
    assert alice("GET", f"/jobs/{a_job2}").status_code == 200, "a run an admin asked for is the owner's"
    assert bob("GET", f"/jobs/{a_job2}").status_code == 404
    assert sorted(j["id"] for j in root("GET", f"/triggers/{a_tid}/history").json()["items"]) == \
        sorted([a_job, a_job2])
    assert root("GET", f"/jobs/{b_job}").json()["owner"] == "bob"
    assert root("POST", f"/jobs/{b_job}/cancel").status_code == 202
    # The owner's own calls still work after an admin's.
    assert alice("POST", f"/jobs/{a_job}/cancel").status_code == 202
    assert alice("PATCH", f"/triggers/{a_tid}", json={"description": "mine again"}).status_code == 200
    # Audit records name who did it.
    actors = {(d["actor"], d["resource"]) for d in cluster.db.audit.find({"action": "trigger.update"})}
    assert ("root", a_tid) in actors and ("alice", a_tid) in actors and ("root", b_tid) in actors
    assert not any(actor == "bob" and res == a_tid for actor, res in actors)
    # Deletes: an admin may delete anyone's; the other user still cannot.
    assert bob("DELETE", f"/triggers/{a_tid}").status_code == 404
    assert root("DELETE", f"/triggers/{a_tid}").status_code == 204
    assert alice("GET", f"/triggers/{a_tid}").status_code == 404
    assert listed(alice) == ([], 0) and listed(root) == ([(b_tid, "bob")], 1)
    # Jobs stay as history, still scoped to their owner.
    assert alice("GET", f"/jobs/{a_job}").status_code == 200
    assert bob("GET", f"/jobs/{a_job}").status_code == 404
