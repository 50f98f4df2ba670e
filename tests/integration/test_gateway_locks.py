"""Lock endpoints (admin only): GET /locks lists the head epoch of every
lease chain (a real master's partition leases, named locks); POST /locks
(LockAcquisitionRequest) acquires or renews a named lock as an epoch
chain claimed by insert; DELETE /locks/{name} releases it."""
import os
import threading
import time

import requests

from conftest import BIN, Proc, free_port, wait_for, wait_port


def start_gateway(cluster, name="gateway", port=None, **env):
    port = port or cluster.http_port
    p = Proc(name, [os.path.join(BIN, "sked-gateway")],
             cluster.env(SKED_NODE_ID=name, SKED_HTTP_ADDR=f"127.0.0.1:{port}", **env), cluster.logdir)
    wait_port(port)
    return p


def admin(cluster, method, path, sub="root", **kw):
    return cluster.api(method, path, sub=sub, role="admin", **kw)


def locs(r):
    assert r.status_code == 422, r.text
    return {tuple(d["loc"]) for d in r.json()["detail"]}


def test_named_lock_lifecycle(cluster):
    cluster.gateway = start_gateway(cluster)
    # Admins only.
    for method, path, kw in (("GET", "/locks", {}), ("POST", "/locks", {"json": {"name": "a", "ttl_seconds": 5}}),
                             ("DELETE", "/locks/a", {})):
        r = cluster.api(method, path, **kw)
        assert r.status_code == 403 and r.json()["detail"] == "admin role required", r.text
    assert requests.get(f"{cluster.url}/api/scheduler/locks", timeout=10).status_code == 401

    r = admin(cluster, "POST", "/locks", json={"name": "deploy", "ttl_seconds": 30})
    assert r.status_code == 201, r.text
    lock = r.json()
    assert lock["resource"] == "named/deploy" and lock["name"] == "deploy" and lock["type"] == "named"
    assert lock["epoch"] == 1 and lock["owner"] == "root" and lock["held"] is True
    assert lock["released_at"] is None
    items = admin(cluster, "GET", "/locks").json()["items"]
    assert [(i["resource"], i["epoch"], i["owner"], i["held"]) for i in items] == \
        [("named/deploy", 1, "root", True)]

    # Someone else: 409, told who holds it and until when.
    r = admin(cluster, "POST", "/locks", sub="ops", json={"name": "deploy", "ttl_seconds": 30})
    assert r.status_code == 409, r.text
    assert r.json()["lock"]["owner"] == "root" and "root" in r.json()["detail"]
    r = admin(cluster, "POST", "/locks", json={"name": "deploy", "ttl_seconds": 30, "owner": "ci-job-7"})
    assert r.status_code == 409

    # The owner again: renewed, same epoch, later expiry.
    time.sleep(0.05)
    r = admin(cluster, "POST", "/locks", json={"name": "deploy", "ttl_seconds": 60})
    assert r.status_code == 200, r.text
    assert r.json()["epoch"] == 1 and r.json()["expires_at"] > lock["expires_at"]

    # Release: only by its owner (and at its epoch, when given).
    assert admin(cluster, "DELETE", "/locks/deploy", sub="ops").status_code == 409
    assert admin(cluster, "DELETE", "/locks/deploy?epoch=2").status_code == 409
    assert admin(cluster, "DELETE", "/locks/deploy?epoch=1").status_code == 204
    assert admin(cluster, "DELETE", "/locks/deploy").status_code == 404
    assert admin(cluster, "DELETE", "/locks/never-taken").status_code == 404
    assert admin(cluster, "DELETE", "/locks/bad%2Fname").status_code == 404
    head = admin(cluster, "GET", "/locks").json()["items"][0]
    assert head["held"] is False and head["released_at"] is not None

    # After release the next holder gets the next epoch at once.
    r = admin(cluster, "POST", "/locks", sub="ops", json={"name": "deploy", "ttl_seconds": 1,
                                                           "owner": "ci-job-7"})
    assert r.status_code == 201 and r.json()["epoch"] == 2 and r.json()["owner"] == "ci-job-7"
    # A lapsed lock is taken over with a new epoch (the old holder is fenced).
    time.sleep(1.2)
    r = admin(cluster, "POST", "/locks", json={"name": "deploy", "ttl_seconds": 5, "owner": "ci-job-7"})
    assert r.status_code == 201 and r.json()["epoch"] == 3, r.text
    assert admin(cluster, "DELETE", "/locks/deploy?owner=ci-job-7").status_code == 204
    assert cluster.db.locks.count_documents({"resource": "named/deploy"}) == 3


def test_lock_request_validation(cluster):
    cluster.gateway = start_gateway(cluster)
    assert locs(admin(cluster, "POST", "/locks", json={})) == {("body", "name"), ("body", "ttl_seconds")}
    r = admin(cluster, "POST", "/locks", json={"name": "a/b", "ttl_seconds": 0, "owner": "", "x": 1})
    assert locs(r) == {("body", "name"), ("body", "ttl_seconds"), ("body", "owner"), ("body", "x")}
    assert locs(admin(cluster, "POST", "/locks", json={"name": "a", "ttl_seconds": 86401})) == \
        {("body", "ttl_seconds")}
    assert locs(admin(cluster, "POST", "/locks", json={"name": "a" * 65, "ttl_seconds": 1})) == \
        {("body", "name")}
    assert locs(admin(cluster, "POST", "/locks", json={"name": "a", "ttl_seconds": "10"})) == \
        {("body", "ttl_seconds")}
    assert locs(admin(cluster, "POST", "/locks", json=["a"])) == {("body",)}
    assert admin(cluster, "POST", "/locks", data="{").status_code == 400
    assert locs(admin(cluster, "DELETE", "/locks/a?epoch=0&owner=")) == {("query", "epoch"),
                                                                          ("query", "owner")}
    assert admin(cluster, "PUT", "/locks").status_code == 405
    assert admin(cluster, "GET", "/locks/a").status_code == 405


def test_contenders_on_two_gateways_get_one_lock(cluster):
    cluster.gateway = start_gateway(cluster)
    port2 = free_port()
    g2 = start_gateway(cluster, "gateway-2", port2)
    try:
        urls = [cluster.url, f"http://127.0.0.1:{port2}"]
        token = cluster.token("root", "admin")
        for round_ in range(3):
            results = []
            barrier = threading.Barrier(8)

            def contend(i):
                barrier.wait()
                r = requests.post(f"{urls[i % 2]}/api/scheduler/locks",
                                  headers={"Authorization": f"Bearer {token}"},
                                  json={"name": "race", "ttl_seconds": 30, "owner": f"c{i}"}, timeout=20)
                results.append((r.status_code, r.json()))

            threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [b for code, b in results if code == 201]
            assert len(winners) == 1, results
            assert sorted(code for code, _ in results) == [201] + [409] * 7
            assert winners[0]["epoch"] == round_ + 1
            assert all(b["lock"]["owner"] == winners[0]["owner"] for code, b in results if code == 409)
            r = admin(cluster, "DELETE", f"/locks/race?owner={winners[0]['owner']}")
            assert r.status_code == 204
        epochs = sorted(d["epoch"] for d in cluster.db.locks.find({"resource": "named/race"}))
        assert epochs == [1, 2, 3]
    finally:
        assert g2.stop() == 0
        assert "ERROR: AddressSanitizer" not in g2.text()


def test_partition_leases_of_a_real_master_are_listed(cluster):
    port = free_port()
    cluster.master_ports = [port]
    cluster.start_master(0, port)
    cluster.gateway = start_gateway(cluster)

    def partitions():
        items = admin(cluster, "GET", "/locks").json()["items"]
        return [i for i in items if i["type"] == "partition" and i["held"]]

    held = wait_for(lambda: len(partitions()) == 8 and partitions(), 30, what="8 partition leases")
    assert [i["name"] for i in held] == [str(p) for p in range(8)]
    assert all(i["owner"] == "master-0" and i["epoch"] >= 1 for i in held)
    assert [i["resource"] for i in held] == [f"partition/{p}" for p in range(8)]
    # Named locks come after partitions.
    assert admin(cluster, "POST", "/locks", json={"name": "zz", "ttl_seconds": 9}).status_code == 201
    items = admin(cluster, "GET", "/locks").json()
    assert items["total"] == 9 and items["items"][-1]["resource"] == "named/zz"
