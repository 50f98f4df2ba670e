"""GET /cron/preview: next fire times from the engine the masters use,
with DST shaping, query decoding and errors as a user sees them."""
import http.client
import json

import requests

PREVIEW = "/cron/preview"


def raw_get(cluster, query):
    """GET with the query bytes exactly as given: requests would re-quote
    a broken escape like %zz into %25zz."""
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=10)
    try:
        conn.request("GET", f"/api/scheduler{PREVIEW}?{query}",
                     headers={"Authorization": f"Bearer {cluster.token()}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def preview(cluster, query, **kw):
    """Sends query verbatim (already percent-encoded) so the test controls
    the exact bytes on the wire."""
    return cluster.api("GET", f"{PREVIEW}?{query}", **kw)


def locs(r):
    return [tuple(d["loc"]) for d in r.json()["detail"]]


def test_new_york_spring_forward_gap_is_shifted_and_flagged(cluster):
    cluster.start(masters=1, workers=1)
    r = preview(cluster, "expression=30+2+*+*+*&timezone=America%2FNew_York"
                         "&from=2026-03-06T12:00:00Z&count=3")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expression"] == "30 2 * * *"
    assert body["timezone"] == "America/New_York"
    assert body["items"] == [
        {"at": "2026-03-07T07:30:00.000Z", "local": "2026-03-07T02:30:00-05:00",
         "utc_offset": -18000, "dst": None},
        # 02:30 does not exist on 2026-03-08: fired once at 03:00 EDT.
        {"at": "2026-03-08T07:00:00.000Z", "local": "2026-03-08T03:00:00-04:00",
         "utc_offset": -14400, "dst": "gap_shifted"},
        {"at": "2026-03-09T06:30:00.000Z", "local": "2026-03-09T02:30:00-04:00",
         "utc_offset": -14400, "dst": None},
    ]
    # dst_gap=skip drops the skipped wall time instead.
    r = preview(cluster, "expression=30%202%20*%20*%20*&timezone=America/New_York"
                         "&from=2026-03-07T12:00:00Z&count=1&dst_gap=skip")
    assert r.status_code == 200, r.text
    assert [i["local"] for i in r.json()["items"]] == ["2026-03-09T02:30:00-04:00"]
    # Fall back: 01:30 happens twice on 2026-11-01; "both" fires at each.
    q = "expression=30+1+*+*+*&timezone=America/New_York&from=2026-10-31T12:00:00Z&count=3"
    r = preview(cluster, q + "&dst_overlap=both")
    assert r.status_code == 200, r.text
    assert [(i["local"], i["dst"]) for i in r.json()["items"]] == [
        ("2026-11-01T01:30:00-04:00", None),
        ("2026-11-01T01:30:00-05:00", "overlap_second"),
        ("2026-11-02T01:30:00-05:00", None),
    ]
    r = preview(cluster, q)
    assert [i["at"] for i in r.json()["items"]] == [
        "2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z", "2026-11-03T06:30:00.000Z"]


def test_count_defaults_limits_and_percent_encoding(cluster):
    cluster.start(masters=1, workers=1)
    # requests encodes '*' as %2A, '/' as %2F and spaces as '+'.
    r = cluster.api("GET", PREVIEW, params={"expression": "*/15 * * * *",
                                            "from": "2026-01-01T00:00:00+00:00"})
    assert "%2A%2F15" in r.url and "%2B00%3A00" in r.url, r.url
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expression"] == "*/15 * * * *" and body["timezone"] == "UTC"
    assert [i["at"] for i in body["items"]] == [
        "2026-01-01T00:15:00.000Z", "2026-01-01T00:30:00.000Z", "2026-01-01T00:45:00.000Z",
        "2026-01-01T01:00:00.000Z", "2026-01-01T01:15:00.000Z"], "default count is 5"
    assert body["items"][0]["local"] == "2026-01-01T00:15:00+00:00"
    assert body["items"][0]["utc_offset"] == 0
    # Lower-case hex, %20 and a seconds field.
    r = preview(cluster, "expression=%2a%2f20%20*%20*%20*%20*%20*&from=2026-01-01T00:00:00Z&count=3")
    assert r.status_code == 200, r.text
    assert [i["at"][11:19] for i in r.json()["items"]] == ["00:00:20", "00:00:40", "00:01:00"]
    r = preview(cluster, "expression=*+*+*+*+*&from=2026-01-01T00:00:00Z&count=100")
    items = r.json()["items"]
    assert len(items) == 100 and items[-1]["at"] == "2026-01-01T01:40:00.000Z"
    # Without `from`, fires start after now.
    r = preview(cluster, "expression=@hourly&count=1")
    assert r.status_code == 200 and r.json()["items"][0]["at"].endswith(":00:00.000Z")
    # A zone with a half-hour offset.
    r = preview(cluster, "expression=0+9+*+*+*&timezone=Asia%2FKolkata&from=2026-01-01T00:00:00Z&count=1")
    assert r.json()["items"][0] == {"at": "2026-01-01T03:30:00.000Z",
                                    "local": "2026-01-01T09:00:00+05:30",
                                    "utc_offset": 19800, "dst": None}
    for bad_count in ("0", "101", "abc", "", "1.5", "-1"):
        r = preview(cluster, f"expression=@daily&count={bad_count}")
        assert r.status_code == 422, (bad_count, r.text)
        assert locs(r) == [("query", "count")], (bad_count, r.text)
    # Broken escapes, an encoded NUL and bytes that are not UTF-8 are refused;
    # encoded UTF-8 is fine (and then rejected by the engine, not the decoder).
    status, body = raw_get(cluster, "expression=%2A+*+*+*+*&count=1")
    assert status == 200 and len(body["items"]) == 1, body
    status, body = raw_get(cluster, "expression=%C3%A9+*+*+*+*")
    assert status == 422 and body["detail"][0]["msg"] == "minute: invalid value '\u00e9'", body
    for bad in ("%zz+*+*+*+*", "*+*+*+*+%2", "*+*+*+*+*%00", "%ff+*+*+*+*", "*+*+*+*+%"):
        status, body = raw_get(cluster, f"expression={bad}")
        assert status == 422, (bad, body)
        d = body["detail"][0]
        assert d["loc"] == ["query", "expression"] and "percent-encoding" in d["msg"], (bad, d)
    r = preview(cluster, "expression=" + "*" * 300)
    assert r.status_code == 422 and locs(r) == [("query", "expression")]


def test_preview_errors_name_the_parameter(cluster):
    cluster.start(masters=1, workers=1)
    r = preview(cluster, "expression=0+0+32+*+*")
    assert r.status_code == 422, r.text
    d = r.json()["detail"]
    assert d == [{"type": "value_error", "loc": ["query", "expression"],
                  "msg": "day-of-month: 32 is out of range 1-31"}], d
    r = preview(cluster, "expression=0+0+30+2+*")
    assert r.status_code == 422 and "never fire" in r.json()["detail"][0]["msg"]
    r = preview(cluster, "timezone=UTC")
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "missing" and locs(r) == [("query", "expression")]
    r = preview(cluster, "expression=@daily&timezone=Mars%2FOlympus")
    assert r.status_code == 422 and locs(r) == [("query", "timezone")]
    assert "Mars/Olympus" in r.json()["detail"][0]["msg"]
    # An unencoded '+' in an offset decodes to a space: a clear 422.
    r = preview(cluster, "expression=@daily&from=2026-01-01T00:00:00+01:00")
    assert r.status_code == 422 and locs(r) == [("query", "from")]
    assert "%2B" in r.json()["detail"][0]["msg"]
    r = preview(cluster, "expression=@daily&from=2026-01-01T00:00:00%2B01:00&count=1")
    assert r.status_code == 200 and r.json()["items"][0]["at"] == "2026-01-01T00:00:00.000Z"
    r = preview(cluster, "expression=@daily&from=yesterday")
    assert r.status_code == 422 and locs(r) == [("query", "from")]
    r = preview(cluster, "expression=@daily&dst_gap=later&dst_overlap=twice")
    assert r.status_code == 422
    assert set(locs(r)) == {("query", "dst_gap"), ("query", "dst_overlap")}
    # Every problem is reported at once.
    r = preview(cluster, "expression=61+*+*+*+*&timezone=Nowhere&count=0&from=x")
    assert r.status_code == 422
    assert set(locs(r)) == {("query", "expression"), ("query", "timezone"),
                            ("query", "count"), ("query", "from")}
    # Authenticated like the rest of the API; GET only.
    r = requests.get(f"{cluster.url}/api/scheduler{PREVIEW}?expression=@daily", timeout=5)
    assert r.status_code == 401
    assert cluster.api("POST", f"{PREVIEW}?expression=@daily").status_code == 405
    assert cluster.api("GET", f"{PREVIEW}/?expression=@daily").status_code == 200
