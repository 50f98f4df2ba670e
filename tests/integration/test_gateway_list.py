"""GET /triggers with TriggerListParams (filters, search, sort, paging) and
GET /triggers/{id}/history with its status and time filters, as a client
sees them; invalid values are 422 with loc ["query", name]."""
import datetime as dt
import http.client
import json
import os

from conftest import BIN, Proc, wait_port

UTC = dt.timezone.utc


def start_gateway(cluster, **env):
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", **env), cluster.logdir)
    wait_port(cluster.http_port)
    return cluster


def create(cluster, name, tc, task="noop", sub="alice", active=True):
    r = cluster.api("POST", "/triggers/", sub=sub, json={
        "name": name, "trigger_config": tc, "execution_config": {"task_type": task},
        "is_active": active})
    assert r.status_code == 201, r.text
    return r.json()


def names(r):
    assert r.status_code == 200, r.text
    return [t["name"] for t in r.json()["items"]]


def locs(r):
    assert r.status_code == 422, r.text
    return {tuple(d["loc"]) for d in r.json()["detail"]}


def test_sort_by_next_fire_with_nothing_to_sort(cluster):
    # Found by schemathesis: an empty match made the gateway qsort(NULL),
    # which UBSan stops the process for.
    start_gateway(cluster)
    for q in ("?sort=next_fire_at", "?sort=next_fire_at&order=desc&status=paused&page=3"):
        r = cluster.api("GET", "/triggers/" + q)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [] and r.json()["total"] == 0
    create(cluster, "one", {"interval": 60})
    assert names(cluster.api("GET", "/triggers/?sort=next_fire_at")) == ["one"]
    assert names(cluster.api("GET", "/triggers/?sort=next_fire_at&name=zzz")) == []


def test_filters_search_sort_and_paging(cluster):
    start_gateway(cluster)
    now = dt.datetime.now(UTC)
    soon = (now + dt.timedelta(hours=1)).isoformat()
    later = (now + dt.timedelta(hours=5)).isoformat()
    create(cluster, "Backup.DB", {"interval": 1, "unit": "days", "start_at": later}, task="backup")
    create(cluster, "backupxdb", {"interval": 1, "unit": "days", "start_at": soon}, task="backup")
    create(cluster, "nightly (tests)", {"cron_expression": "0 1 * * *", "timezone": "America/New_York"},
           task="test_execution")
    create(cluster, "on-demand", {}, task="noop")
    create(cluster, "paused-one", {"interval": 10}, task="noop", active=False)
    create(cluster, "bobs", {"interval": 10}, sub="bob")
    L = "/triggers/"

    # Default: the caller's own, newest first.
    assert names(cluster.api("GET", L)) == ["paused-one", "on-demand", "nightly (tests)",
                                            "backupxdb", "Backup.DB"]
    assert names(cluster.api("GET", L + "?order=asc"))[0] == "Backup.DB"
    # Filters.
    assert names(cluster.api("GET", L + "?status=paused")) == ["paused-one"]
    assert len(names(cluster.api("GET", L + "?status=active"))) == 4
    assert names(cluster.api("GET", L + "?trigger_type=CRON")) == ["nightly (tests)"]
    assert names(cluster.api("GET", L + "?trigger_type=MANUAL")) == ["on-demand"]
    assert set(names(cluster.api("GET", L + "?task_type=backup"))) == {"Backup.DB", "backupxdb"}
    assert names(cluster.api("GET", L + "?task_type=backup&trigger_type=CRON")) == []
    # Name search: case-insensitive substring, regex characters literal.
    assert set(names(cluster.api("GET", L + "?name=BACKUP"))) == {"Backup.DB", "backupxdb"}
    assert names(cluster.api("GET", L + "?name=p.d")) == ["Backup.DB"]
    assert names(cluster.api("GET", L + "?name=%28tests%29")) == ["nightly (tests)"]
    assert names(cluster.api("GET", L + "?name=.*")) == []
    assert names(cluster.api("GET", L + "?name=%5B")) == []
    # Sorting by name, both ways.
    by_name = names(cluster.api("GET", L + "?sort=name"))
    assert by_name == ["Backup.DB", "backupxdb", "nightly (tests)", "on-demand", "paused-one"]
    assert names(cluster.api("GET", L + "?sort=name&order=desc")) == by_name[::-1]
    # next_fire_at: soonest first, triggers without a next fire last either way.
    r = cluster.api("GET", L + "?sort=next_fire_at")
    items = r.json()["items"]
    fires = [t["next_fire_at"] for t in items]
    timed = [f for f in fires if f]
    assert timed == sorted(timed) and len(timed) == 3, fires
    assert fires[3:] == [None, None], fires
    order = [t["name"] for t in items]
    assert order.index("backupxdb") < order.index("Backup.DB"), order   # +1 h before +5 h
    assert set(order[3:]) == {"paused-one", "on-demand"}
    desc = cluster.api("GET", L + "?sort=next_fire_at&order=desc").json()["items"]
    assert [t["next_fire_at"] for t in desc][:3] == timed[::-1]
    assert [t["next_fire_at"] for t in desc][3:] == [None, None]
    # Paging, in the store and in memory alike.
    for sort in ("created_at", "name", "next_fire_at"):
        whole = names(cluster.api("GET", L + f"?sort={sort}"))
        pages = []
        for page in (1, 2, 3):
            r = cluster.api("GET", L + f"?sort={sort}&page={page}&page_size=2")
            body = r.json()
            assert body["total"] == 5 and body["page"] == page and body["page_size"] == 2
            pages += names(r)
        assert pages == whole, sort
    assert names(cluster.api("GET", L + "?page=9")) == []
    # Admins see everyone's, and filter the same way.
    assert cluster.api("GET", L, sub="root", role="admin").json()["total"] == 6
    assert names(cluster.api("GET", L + "?name=bob", sub="root", role="admin")) == ["bobs"]
    assert names(cluster.api("GET", L + "?name=bob")) == []


def test_invalid_list_params_are_422_each_with_its_name(cluster):
    start_gateway(cluster)
    L = "/triggers/"
    assert locs(cluster.api("GET", L + "?page_size=101")) == {("query", "page_size")}
    assert locs(cluster.api("GET", L + "?page=0")) == {("query", "page")}
    assert locs(cluster.api("GET", L + "?page=x&page_size=0")) == {("query", "page"),
                                                                   ("query", "page_size")}
    r = cluster.api("GET", L + "?status=running&trigger_type=cron&task_type=a%20b&sort=owner"
                               "&order=up&name=")
    assert locs(r) == {("query", p) for p in ("status", "trigger_type", "task_type", "sort",
                                              "order", "name")}
    assert all(d["msg"] for d in r.json()["detail"])
    assert locs(cluster.api("GET", L + "?name=" + "x" * 201)) == {("query", "name")}
    # A broken escape, sent as is (requests would re-quote it).
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=10)
    conn.request("GET", "/api/scheduler/triggers/?name=%ZZ",
                 headers={"Authorization": f"Bearer {cluster.token()}"})
    resp = conn.getresponse()
    assert resp.status == 422
    assert [d["loc"] for d in json.loads(resp.read())["detail"]] == [["query", "name"]]
    conn.close()
    # Unknown parameters are ignored, as FastAPI does.
    assert cluster.api("GET", L + "?colour=red").status_code == 200


def test_history_filters_by_status_and_time(cluster):
    start_gateway(cluster)
    t = create(cluster, "hist", {"interval": 60})
    tid = t["id"]
    base = dt.datetime(2026, 3, 1, tzinfo=UTC)
    statuses = ["succeeded", "failed", "succeeded", "timed_out", "lost", "running"]
    for i, st in enumerate(statuses):
        when = base + dt.timedelta(hours=i)
        cluster.db.jobs.insert_one({
            "_id": f"{tid}@{int(when.timestamp() * 1000)}", "trigger_id": tid, "owner": "alice",
            "partition": 0, "kind": "scheduled", "task_type": "noop", "parameters": {},
            "scheduled_for": when, "run_at": when, "status": st, "attempt": 1, "created_at": when})
    H = f"/triggers/{tid}/history"

    def hours(q):
        r = cluster.api("GET", H + q)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["trigger_id"] == tid
        return [int(j["scheduled_for"][11:13]) for j in body["items"]], body["total"]

    assert hours("") == ([5, 4, 3, 2, 1, 0], 6)
    assert hours("?status=succeeded") == ([2, 0], 2)
    assert hours("?status=failed,timed_out,lost") == ([4, 3, 1], 3)
    assert hours("?from=2026-03-01T02:00:00Z") == ([5, 4, 3, 2], 4)
    assert hours("?to=2026-03-01T02:00:00Z") == ([1, 0], 2)               # to is exclusive
    assert hours("?from=2026-03-01T03:00:00%2B01:00&to=2026-03-01T04:00:00Z") == ([3, 2], 2)
    assert hours("?status=succeeded&from=2026-03-01T01:00:00Z&page_size=1") == ([2], 1)
    assert hours("?status=succeeded&page=2&page_size=1") == ([0], 2)
    r = cluster.api("GET", H + "?status=done&from=yesterday&page_size=1000")
    assert locs(r) == {("query", "status"), ("query", "from"), ("query", "page_size")}
    assert locs(cluster.api("GET", H + "?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z")) == \
        {("query", "to")}
    assert locs(cluster.api("GET", H + "?status=")) == {("query", "status")}
    # Another user still gets 404, filters or not.
    assert cluster.api("GET", H + "?status=failed", sub="bob").status_code == 404
