"""Input limits of the gateway: the request head (431), the media type of
bodies (415) and the bounds of string fields."""
import json
import os
import socket

import requests

from conftest import BIN, Proc, wait_port

T = "/triggers/"


def start_gateway(cluster, **env):
    """Only a gateway (no masters or workers) against the cluster's store."""
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", **env), cluster.logdir)
    wait_port(cluster.http_port)
    return cluster


def body(name="t", **exec_config):
    return {"name": name, "trigger_config": {"interval": 60},
            "execution_config": {"task_type": "noop", **exec_config}}


def raw(cluster, head):
    """Sends a raw request head and returns the whole answer."""
    with socket.create_connection(("127.0.0.1", cluster.http_port), timeout=10) as s:
        s.sendall(head)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_request_heads_over_the_limit_are_431(cluster):
    start_gateway(cluster, SKED_MAX_HEADER=4096)
    h = cluster.headers()
    url = f"{cluster.url}/api/scheduler/triggers/"
    assert requests.get(url, headers={**h, "X-Pad": "a" * 3000}, timeout=10).status_code == 200
    r = requests.get(url, headers={**h, "X-Pad": "a" * 5000}, timeout=10)
    assert r.status_code == 431, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"detail": "request header fields too large (limit 4096 bytes)"}
    # Many small fields count as much as one large one, the request line too.
    many = {f"X-F{i}": "v" * 60 for i in range(60)}
    assert requests.get(url, headers={**h, **many}, timeout=10).status_code == 431
    assert requests.get(url + "?name=" + "a" * 5000, headers=h, timeout=10).status_code == 431
    # Without a token, on any path, and with a body: the head is judged first.
    assert requests.get(f"{cluster.url}/api/scheduler/health", headers={"X-Pad": "a" * 5000},
                        timeout=10).status_code == 431
    r = requests.post(url, headers={**h, "X-Pad": "a" * 5000}, json=body(), timeout=10)
    assert r.status_code == 431
    # Past h2o's own bounds (100 fields, ~408 KiB) h2o answers a plain 400.
    head = b"GET /api/scheduler/health HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-F%d: v\r\n" % i for i in range(120)) + b"\r\n"
    assert raw(cluster, head).startswith(b"HTTP/1.1 400 ")
    # The gateway still serves.
    assert requests.get(url, headers=h, timeout=10).status_code == 200


def test_default_header_limit_and_bad_settings(cluster):
    start_gateway(cluster)
    h = cluster.headers()
    url = f"{cluster.url}/api/scheduler/triggers/"
    assert requests.get(url, headers={**h, "X-Pad": "a" * 15000}, timeout=10).status_code == 200
    r = requests.get(url, headers={**h, "X-Pad": "a" * 17000}, timeout=10)
    assert r.status_code == 431 and "16384" in r.json()["detail"]
    for bad in ("100", "300000", "lots"):
        p = Proc(f"gateway-bad-{bad}", [os.path.join(BIN, "sked-gateway")],
                 cluster.env(SKED_MAX_HEADER=bad), cluster.logdir)
        assert p.popen.wait(timeout=30) != 0
        p.log.close()
        assert "SKED_MAX_HEADER" in p.text()


def test_bodies_must_be_json(cluster):
    start_gateway(cluster)
    ok = json.dumps(body())
    h = cluster.headers()

    def post(ctype, data=ok, path=T, method="POST"):
        hh = dict(h)
        if ctype is not None:
            hh["Content-Type"] = ctype
        return cluster.api(method, path, headers=hh, data=data)

    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                  "application/xml", "application/json; charset=latin-1", "application/jsonx",
                  "json", "", "application/json x"):
        r = post(ctype)
        assert r.status_code == 415, (ctype, r.status_code, r.text)
        assert "application/json" in r.json()["detail"], r.text
    for i, ctype in enumerate(("application/json", "Application/JSON; charset=UTF-8",
                               'application/json;charset="utf-8"', "application/merge-patch+json",
                               "application/json; version=1")):
        r = post(ctype, data=json.dumps(body(f"t{i}")))
        assert r.status_code == 201, (ctype, r.text)
    # No Content-Type: the body is read as JSON anyway, as FastAPI does.
    r = post(None, data=json.dumps(body("no-type")))
    assert r.status_code == 201, r.text
    assert post(None, data="{oops").status_code == 400
    tid = r.json()["id"]
    # Every endpoint that reads a body says the same.
    for method, path in (("PUT", f"/triggers/{tid}"), ("PATCH", f"/triggers/{tid}"),
                         ("POST", f"/triggers/{tid}/execute")):
        r = post("text/plain", data='{"description": "x"}', path=path, method=method)
        assert r.status_code == 415, (method, path, r.text)
    r = cluster.api("POST", "/locks", sub="root", role="admin", data='{"name": "a", "ttl_seconds": 5}',
                    headers={**cluster.headers("root", "admin"), "Content-Type": "text/plain"})
    assert r.status_code == 415
    # An execute without a body needs no Content-Type check.
    r = cluster.api("POST", f"/triggers/{tid}/execute", headers={**h, "Content-Type": "text/plain"})
    assert r.status_code == 202, r.text
    # Authentication comes first.
    r = requests.post(f"{cluster.url}/api/scheduler/triggers/", data=ok,
                      headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 401


def test_string_fields_have_limits(cluster):
    start_gateway(cluster)
    cases = [
        ({"name": "n" * 201}, ["body", "name"]),
        ({"description": "d" * 2001}, ["body", "description"]),
        ({"trigger_config": {"cron_expression": "* " * 129}}, ["body", "trigger_config", "cron_expression"]),
        ({"trigger_config": {"cron_expression": "* * * * *", "timezone": "Z" * 65}},
         ["body", "trigger_config", "timezone"]),
        ({"trigger_config": {"interval": 5, "start_at": "2" * 65}}, ["body", "trigger_config", "start_at"]),
        ({"execution_config": {"task_type": "t" * 64}}, ["body", "execution_config", "task_type"]),
    ]
    for patch, loc in cases:
        r = cluster.api("POST", T, json={**body("s"), **patch})
        assert r.status_code == 422, (patch, r.text)
        assert loc in [d["loc"] for d in r.json()["detail"]], (loc, r.text)
    r = cluster.api("POST", "/locks", sub="root", role="admin",
                    json={"name": "n" * 65, "ttl_seconds": 5, "owner": "o" * 256})
    assert {tuple(d["loc"]) for d in r.json()["detail"]} == {("body", "name"), ("body", "owner")}
