"""Input limits of the gateway: the request head (431) and the bounds of
string fields."""
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
