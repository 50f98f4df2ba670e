"""Rate limits (token bucket per user, per client address without a valid
token; 429 with Retry-After) and CORS (allow-list, preflight, headers on
every answer for allowed origins only)."""
import os
import time

import requests

from conftest import BIN, Proc, wait_port


def start_gateway(cluster, **env):
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", **env), cluster.logdir)
    wait_port(cluster.http_port)
    return cluster


def test_rate_limit_per_user_and_per_address(cluster):
    start_gateway(cluster, SKED_RATE_LIMIT=1, SKED_RATE_BURST=3)
    s = requests.Session()
    alice = {"Authorization": f"Bearer {cluster.token('alice')}"}
    bob = {"Authorization": f"Bearer {cluster.token('bob')}"}
    url = f"{cluster.url}/api/scheduler/triggers/"
    codes = [s.get(url, headers=alice, timeout=10).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = s.get(url, headers=alice, timeout=10)
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert "rate limit" in r.json()["detail"]
    # A new token for the same user shares the bucket; another user has his own.
    assert s.get(url, headers={"Authorization": f"Bearer {cluster.token('alice', ttl=99)}"},
                 timeout=10).status_code == 429
    assert s.get(url, headers=bob, timeout=10).status_code == 200
    # A token a second comes back.
    time.sleep(1.1)
    assert s.get(url, headers=alice, timeout=10).status_code == 200
    assert s.get(url, headers=alice, timeout=10).status_code == 429

    # Without a valid token the client address is limited: health, the
    # OpenAPI document, unknown paths and rejected tokens share its bucket.
    health = f"{cluster.url}/api/scheduler/health"
    assert s.get(health, timeout=10).status_code == 200
    assert s.get(f"{cluster.url}/docs/openapi/scheduler_openapi.json", timeout=10).status_code == 200
    assert s.get(url, headers={"Authorization": "Bearer nonsense"}, timeout=10).status_code == 401
    r = s.get(health, timeout=10)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert s.get(url, headers={"Authorization": "Bearer nonsense"}, timeout=10).status_code == 429
    assert s.get(f"{cluster.url}/nowhere", timeout=10).status_code == 429
    # ...while users with valid tokens from that address are not affected.
    assert s.get(url, headers=bob, timeout=10).status_code == 200


def test_rate_limit_can_be_disabled(cluster):
    start_gateway(cluster, SKED_RATE_LIMIT=0, SKED_RATE_BURST=1)
    s = requests.Session()
    codes = {s.get(f"{cluster.url}/api/scheduler/nothing", timeout=10).status_code for _ in range(150)}
    assert codes == {404}


def test_default_limits_allow_a_burst(cluster):
    start_gateway(cluster)
    s = requests.Session()
    h = {"Authorization": f"Bearer {cluster.token()}"}
    codes = [s.get(f"{cluster.url}/api/scheduler/nothing", headers=h, timeout=10).status_code
             for _ in range(60)]
    assert 429 not in codes


ALLOWED = "https://app.example.com"


def preflight(cluster, origin, method="POST", headers="authorization, content-type",
              path="/api/scheduler/triggers/"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(cluster.url + path, headers=h, timeout=10)


def test_cors_allow_list_and_preflight(cluster):
    start_gateway(cluster, SKED_CORS_ORIGINS=f" {ALLOWED}/ , http://localhost:3000")
    r = preflight(cluster, ALLOWED)
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
    allowed_headers = r.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in r.headers.get("Vary", "")
    # Preflights need no token and work on any path.
    assert preflight(cluster, "http://localhost:3000", "DELETE", None,
                     "/api/scheduler/triggers/abc").status_code == 204
    # Refused: origin, method or header not allowed; no CORS header then.
    for r in (preflight(cluster, "https://evil.example"),
              preflight(cluster, "https://app.example.com.evil.example"),
              preflight(cluster, ALLOWED, method="TRACE"),
              preflight(cluster, ALLOWED, headers="authorization, x-secret")):
        assert r.status_code == 400, r.text
        assert "Access-Control-Allow-Origin" not in r.headers
    # Actual requests: allowed origins get the header on every answer,
    # errors included (so a page can read its 401 or 429).
    url = f"{cluster.url}/api/scheduler/triggers/"
    r = requests.get(url, headers={"Origin": ALLOWED, **cluster.headers()}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in r.headers["Vary"]
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
    r = requests.get(url, headers={"Origin": ALLOWED}, timeout=10)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
    r = requests.get(url, headers={"Origin": "https://evil.example", **cluster.headers()}, timeout=10)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(url, headers=cluster.headers(), timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    # OPTIONS that is not a preflight is an ordinary request.
    r = requests.options(url, headers=cluster.headers(), timeout=10)
    assert r.status_code == 405


def test_cors_wildcard_and_off(cluster):
    start_gateway(cluster, SKED_CORS_ORIGINS="*")
    r = preflight(cluster, "https://anything.example")
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = requests.get(f"{cluster.url}/api/scheduler/health",
                     headers={"Origin": "https://anything.example"}, timeout=10)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert cluster.gateway.stop() == 0
    cluster.checked_stop.append(cluster.gateway)

    start_gateway(cluster)  # SKED_CORS_ORIGINS unset: no CORS at all
    r = preflight(cluster, ALLOWED)
    assert r.status_code == 400 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(f"{cluster.url}/api/scheduler/health", headers={"Origin": ALLOWED}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_bad_cors_setting_stops_the_gateway(cluster):
    p = Proc("gateway-bad", [os.path.join(BIN, "sked-gateway")],
             cluster.env(SKED_CORS_ORIGINS="app.example.com"), cluster.logdir)
    assert p.popen.wait(timeout=30) != 0
    p.log.close()
    assert "SKED_CORS_ORIGINS" in p.text()
