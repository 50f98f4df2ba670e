"""Prometheus metrics as a user scrapes them: the gateway's GET /metrics on
its HTTP port and a master's on SKED_METRICS_ADDR, parsed by
prometheus_client's parser, move as requests are answered and jobs run
(succeeded, failed, skipped), with label values from bounded sets only."""
import os
import time

import requests
import zmq
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, Proc, free_port, wait_for, wait_port

TRIGGER_ROUTE = "/api/scheduler/triggers/{trigger_id}"


def scrape(url):
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    samples, types = {}, {}
    for fam in text_string_to_metric_families(r.text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def worker_scrape(port):
    """A worker's metrics text and its parsed samples, or None while it
    does not serve them yet."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.ConnectionError:
        return None
    return text, [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def val(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def label_values(samples, name, label):
    return {dict(k[1]).get(label) for k in samples if k[0] == name}


def create(cluster, name, execution, interval=1):
    r = cluster.api("POST", "/triggers/", json={
        "name": name, "trigger_config": {"interval": interval, "unit": "seconds"},
        "execution_config": execution})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def count(cluster, tid, **q):
    return cluster.db.jobs.count_documents({"trigger_id": tid, **q})


def test_master_metrics_follow_the_jobs(cluster):
    maddr = f"127.0.0.1:{free_port()}"
    # Each state saved in the turn of its fire (SKED_STATE_SAVE_MS 0): the
    # saves are counted against the claims below.
    cluster.start(masters=1, workers=1,
                  master_env={"SKED_METRICS_ADDR": maddr, "SKED_STATE_SAVE_MS": "0"})
    murl = f"http://{maddr}/metrics"
    ok = create(cluster, "ok", {"task_type": "noop"})
    bad = create(cluster, "bad", {"task_type": "fail"})
    slow = create(cluster, "slow", {"task_type": "sleep", "parameters": {"seconds": 2.5}})
    wait_for(lambda: count(cluster, ok, status="succeeded") >= 3 and
             count(cluster, bad, status="failed") >= 2 and
             count(cluster, slow, status="skipped", skip_reason="overlap") >= 1,
             30, what="succeeded, failed and skipped jobs")

    # A malformed message to the master is dropped and counted.
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{cluster.master_ports[0]}")
    s.send_multipart([b"SKED1", b"garbage"])
    time.sleep(0.5)
    s.close()
    ctx.term()

    # The store first, then the scrape: each counter is updated after the
    # write it counts, so it is at least what the store shows.
    succeeded = count(cluster, ok, status="succeeded")
    failed = count(cluster, bad, status="failed")
    skipped = count(cluster, slow, status="skipped", skip_reason="overlap")
    started = cluster.db.jobs.count_documents({"started_at": {"$ne": None}})
    claimed = cluster.db.jobs.count_documents({"status": {"$ne": "skipped"}})
    m, types = scrape(murl)

    assert types["sked_fire_lag_seconds"] == "histogram"
    assert types["sked_jobs_finished"] == "counter"
    assert val(m, "sked_jobs_finished_total", task_type="noop", status="succeeded") >= succeeded
    assert val(m, "sked_jobs_finished_total", task_type="fail", status="failed") >= failed >= 2
    assert val(m, "sked_fires_skipped_total", reason="overlap") >= skipped >= 1
    assert val(m, "sked_job_retries_total", task_type="fail") == 0  # no retry policy
    assert val(m, "sked_fire_lag_seconds_count") >= started
    assert val(m, "sked_fire_lag_seconds_bucket", le="+Inf") == val(m, "sked_fire_lag_seconds_count")
    # Starts come within the second: most of the lag buckets hold them all.
    assert val(m, "sked_fire_lag_seconds_bucket", le="1") >= 0.9 * val(m, "sked_fire_lag_seconds_count")
    assert val(m, "sked_fire_lag_seconds_sum") >= 0
    assert val(m, "sked_claim_lag_seconds_count") >= claimed
    assert val(m, "sked_job_duration_seconds_count", task_type="noop") >= succeeded
    assert val(m, "sked_job_duration_seconds_count", task_type="sleep") >= 1
    assert val(m, "sked_job_duration_seconds_sum", task_type="sleep") >= 2.0
    assert val(m, "sked_leases_held") == 8
    assert val(m, "sked_lease_acquisitions_total") >= 8
    assert val(m, "sked_lease_losses_total") == 0
    assert val(m, "sked_queue_depth") >= 0
    assert val(m, "sked_workers_connected") == 1
    free, used = val(m, "sked_worker_slots", state="free"), val(m, "sked_worker_slots", state="used")
    assert free + used > 0 and used >= 0
    assert val(m, "sked_store_operation_duration_seconds_count", op="insert_job") >= claimed + skipped
    # Final outcomes go in bulks of records (group commit), and so do
    # deferred starts (the 2.5 s job's).
    assert val(m, "sked_store_operation_duration_seconds_count", op="record_jobs") >= 1
    assert val(m, "sked_store_operation_duration_seconds_count", op="update_started") >= 1
    # Each claim saves its trigger's state: the first of each of the 3
    # triggers by insert (one insert_many for those due together), the
    # others one by one (fewer than 8 share a fire time).
    assert val(m, "sked_store_operation_duration_seconds_count", op="insert_states") >= 1
    assert val(m, "sked_store_operation_duration_seconds_count", op="save_state") >= claimed - 3
    assert val(m, "sked_store_errors_total", op="insert_job") == 0
    assert val(m, "sked_malformed_messages_dropped_total") >= 1
    # Bounded labels: task types and statuses, never ids.
    assert label_values(m, "sked_jobs_finished_total", "task_type") <= {"noop", "fail", "sleep"}
    assert not any(ok in str(k) or bad in str(k) for k in m), "no trigger id in any label"

    # Counters only grow, and HEAD / other methods behave.
    time.sleep(2)
    m2, _ = scrape(murl)
    assert val(m2, "sked_jobs_finished_total", task_type="noop", status="succeeded") > \
        val(m, "sked_jobs_finished_total", task_type="noop", status="succeeded")
    assert requests.head(murl, timeout=10).status_code == 200
    assert requests.post(murl, timeout=10).status_code == 405
    assert requests.get(f"http://{maddr}/other", timeout=10).status_code == 404


def test_gateway_metrics_count_requests_by_route(cluster):
    cluster.start(masters=1, workers=1)
    gurl = f"{cluster.url}/metrics"
    tid = create(cluster, "g", {"task_type": "noop"}, interval=3600)
    before, types = scrape(gurl)
    assert types["sked_http_requests"] == "counter"
    assert types["sked_http_request_duration_seconds"] == "histogram"
    for _ in range(5):
        assert cluster.api("GET", f"/triggers/{tid}").status_code == 200
    assert cluster.api("GET", "/triggers/000000000000000000000000").status_code == 404
    assert requests.get(f"{cluster.url}/no/such/{tid}", timeout=10).status_code == 404
    expired = cluster.token(ttl=-3600)
    r = cluster.api("GET", "/triggers/", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    r = cluster.api("GET", "/triggers/", headers={"Authorization": "Bearer x.y.z"})
    assert r.status_code == 401
    after, _ = scrape(gurl)

    def delta(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    assert delta("sked_http_requests_total", route=TRIGGER_ROUTE, method="GET", status="200") == 5
    assert delta("sked_http_requests_total", route=TRIGGER_ROUTE, method="GET", status="404") == 1
    assert delta("sked_http_requests_total", route="other", method="GET", status="404") == 1
    assert delta("sked_http_requests_total", route="/api/scheduler/triggers/", method="GET",
                 status="401") == 2
    assert delta("sked_http_request_duration_seconds_count", route=TRIGGER_ROUTE, method="GET") == 6
    assert val(after, "sked_http_requests_total", route="/api/scheduler/triggers/", method="POST",
               status="201") >= 1
    # The first scrape is counted by the second.
    assert delta("sked_http_requests_total", route="/metrics", method="GET", status="200") == 1
    assert delta("sked_jwt_rejections_total", reason="expired") == 1
    assert delta("sked_jwt_rejections_total", reason="malformed") == 1
    routes = label_values(after, "sked_http_requests_total", "route")
    assert tid not in str(routes) and "other" in routes, routes
    assert all(r == "other" or r == "/metrics" or r.startswith(("/api/scheduler/", "/docs/openapi/"))
               for r in routes), routes
    # No token needed, other methods refused.
    assert requests.post(gurl, timeout=10).status_code == 405
    assert requests.head(gurl, timeout=10).status_code == 200


def test_gateway_counts_rate_limited_requests(cluster):
    """Only a gateway, with a tiny per-user budget; /metrics is limited per
    address, so the user's 429s do not stop the scrape."""
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", SKED_RATE_LIMIT="1",
                                       SKED_RATE_BURST="3"), cluster.logdir)
    wait_port(cluster.http_port)
    codes = [cluster.api("GET", "/cron/preview?expression=*+*+*+*+*").status_code for _ in range(6)]
    assert codes.count(429) >= 2, codes
    m, _ = scrape(f"{cluster.url}/metrics")
    assert val(m, "sked_rate_limited_total", scope="user") == codes.count(429)
    assert val(m, "sked_http_requests_total", route="/api/scheduler/cron/preview", method="GET",
               status="429") == codes.count(429)


def test_worker_serves_its_metrics(cluster):
    port = free_port()
    cluster.start(masters=1, workers=1, worker_env={"SKED_TASK_TYPES": "noop"})
    cluster.start_worker(5, SKED_METRICS_ADDR=f"127.0.0.1:{port}")
    r = cluster.api("POST", "/triggers/", json={
        "name": "wm", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "fail"}})
    assert r.status_code == 201

    def finished():
        got = worker_scrape(port)
        if got and any(s.name == "sked_worker_jobs_finished_total" and
                       s.labels.get("status") == "failed" and
                       s.labels.get("task_type") == "fail" and s.value >= 2 for s in got[1]):
            return got[0]
        return None
    text = wait_for(finished, 15, what="worker metrics for failed jobs")
    assert "sked_worker_slots" in text and "sked_worker_job_duration_seconds_bucket" in text


def test_worker_slots_by_task_type(cluster):
    """sked_worker_task_slots: `used` counts running jobs of the type, `free`
    is what the worker could start now (bounded by max_concurrent)."""
    import json
    port = free_port()
    conf = cluster.logdir + "/worker.json"
    with open(conf, "w") as f:
        json.dump({"slots": 4, "task_types": {
            "sleep": {"handler": "sleep", "max_concurrent": 2},
            "noop": {"handler": "noop"}}}, f)
    cluster.start(masters=1, workers=1, worker_env={
        "SKED_METRICS_ADDR": f"127.0.0.1:{port}", "SKED_WORKER_CONFIG": conf})
    r = cluster.api("POST", "/triggers/", json={
        "name": "long", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "sleep", "parameters": {"seconds": 6},
                             "overlap_policy": "allow"}})
    assert r.status_code == 201

    def slots():
        scraped = worker_scrape(port)
        got = {(s.labels["task_type"], s.labels["state"]): s.value for s in scraped[1]
               if s.name == "sked_worker_task_slots"} if scraped else {}
        return got if got.get(("sleep", "used")) == 2 else None
    got = wait_for(slots, 20, what="two sleep jobs running")
    assert got[("sleep", "free")] == 0      # max_concurrent 2 reached
    assert got[("noop", "used")] == 0 and got[("noop", "free")] == 2  # 4 slots - 2 used
