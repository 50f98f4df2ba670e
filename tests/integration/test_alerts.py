"""Alerts from the master to a webhook (SKED_ALERT_URL): job_failed when a
job ends failed with no retry left, fire_skipped when asked for,
fire_lag_high at most once a minute; failed deliveries are retried with
backoff and then given up; a webhook that hangs never delays scheduling."""
import datetime as dt
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_for


class Receiver:
    """A local webhook: records every POST; `answer(event)` picks the status."""

    def __init__(self, answer=lambda event: 200):
        self.posts = []
        self.answer = answer
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event = json.loads(body)
                with outer.lock:
                    outer.posts.append((dict(self.headers), event))
                    status = outer.answer(event)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, kind=None):
        with self.lock:
            return [e for _, e in self.posts if kind is None or e["event"] == kind]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Hang:
    """Accepts connections, reads, and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


def scrape(url):
    samples = {}
    for fam in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def val(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def create(cluster, name, execution, interval=1):
    r = cluster.api("POST", "/triggers/", json={
        "name": name, "trigger_config": {"interval": interval, "unit": "seconds"},
        "execution_config": execution})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def iso(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_failed_job_sends_one_alert_with_its_fields(cluster):
    hook = Receiver()
    try:
        cluster.start(masters=1, workers=1, master_env={
            "SKED_ALERT_URL": hook.url, "SKED_ALERT_HEADERS": "X-Token: s3cret;X-Team: ops",
            "SKED_ALERT_EVENTS": "job_failed,fire_skipped"})
        bad = create(cluster, "bad", {"task_type": "fail", "parameters": {"message": "disk full"}}, 2)
        retried = create(cluster, "retried", {"task_type": "fail", "retry_policy": {
            "max_retries": 1, "initial_delay": 0.1, "jitter": False}}, 2)
        ok = create(cluster, "ok", {"task_type": "noop"})
        slow = create(cluster, "slow", {"task_type": "sleep", "parameters": {"seconds": 2.5}})
        wait_for(lambda: [e for e in hook.events("job_failed") if e["trigger_id"] == bad] and
                 [e for e in hook.events("job_failed") if e["trigger_id"] == retried] and
                 [e for e in hook.events("fire_skipped") if e["trigger_id"] == slow],
                 30, what="job_failed and fire_skipped alerts")
        ev = [e for e in hook.events("job_failed") if e["trigger_id"] == bad][0]
        job = cluster.db.jobs.find_one({"_id": ev["job_id"]})
        assert job and job["status"] == "failed"
        assert ev["task_type"] == "fail" and ev["status"] == "failed" and ev["attempt"] == 1
        assert ev["error"] == "disk full" and ev["worker_id"] == "worker-0"
        assert ev["master"] == "master-0"
        assert iso(ev["scheduled_for"]) == job["scheduled_for"]
        assert abs((iso(ev["at"]) - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 30
        # Only after the last retry: one event, for attempt 2.
        evs = [e for e in hook.events("job_failed") if e["trigger_id"] == retried]
        assert evs and all(e["attempt"] == 2 for e in evs), evs
        # Nothing for jobs that succeed; skips only when asked for, with the reason.
        assert not [e for e in hook.events() if e["trigger_id"] == ok]
        sk = [e for e in hook.events("fire_skipped") if e["trigger_id"] == slow][0]
        assert sk["reason"] == "overlap" and sk["task_type"] == "sleep"
        assert cluster.db.jobs.find_one({"_id": sk["job_id"]})["status"] == "skipped"
        assert not hook.events("fire_lag_high")  # not in SKED_ALERT_EVENTS
        headers = hook.posts[0][0]
        assert headers["X-Token"] == "s3cret" and headers["X-Team"] == "ops"
        assert headers["Content-Type"] == "application/json"
        # One alert per failed job, however many deliveries.
        ids = [e["job_id"] for e in hook.events("job_failed")]
        assert len(ids) == len(set(ids))
    finally:
        hook.close()


def mapped(proc, soname):
    """True if the process has the shared library `soname` mapped."""
    with open(f"/proc/{proc.popen.pid}/maps") as f:
        return any(f"/{soname}" in line for line in f)


def test_libcurl_is_loaded_by_the_first_delivery_not_at_start(cluster):
    """A master maps libcurl (and the TLS, LDAP, SSH libraries it brings)
    only once it has a webhook to send: an idle master is 3.7 MiB smaller
    (docs/BENCHMARKS.md). Loaded late, it still delivers, with the
    configured headers."""
    hook = Receiver()
    try:
        cluster.start(masters=1, workers=1, master_env={
            "SKED_ALERT_URL": hook.url, "SKED_ALERT_HEADERS": "X-Token: s3cret"})
        master = cluster.masters[0]
        ok = create(cluster, "ok", {"task_type": "noop"})
        wait_for(lambda: cluster.db.jobs.count_documents(
            {"trigger_id": ok, "status": "succeeded"}) >= 2, 30, what="two runs of a trigger")
        assert not mapped(master, "libcurl.so.4"), "libcurl mapped before any webhook"
        create(cluster, "bad", {"task_type": "fail"}, 2)
        wait_for(lambda: hook.events("job_failed"), 30, what="a job_failed alert")
        assert mapped(master, "libcurl.so.4")
        assert hook.posts[0][0]["X-Token"] == "s3cret"
    finally:
        hook.close()


def test_failed_deliveries_are_retried_then_given_up(cluster):
    seen, first = {}, []

    def answer(event):
        jid = event.get("job_id")
        seen[jid] = seen.get(jid, 0) + 1
        if not first:
            first.append(jid)
        if jid == first[0]:
            return 500          # the first event never gets through
        return 500 if seen[jid] <= 2 else 200   # the others on the third try

    hook = Receiver(answer)
    maddr = f"127.0.0.1:{free_port()}"
    try:
        cluster.start(masters=1, workers=1, master_env={
            "SKED_ALERT_URL": hook.url, "SKED_METRICS_ADDR": maddr})
        create(cluster, "bad", {"task_type": "fail"}, 2)
        wait_for(lambda: first and seen.get(first[0], 0) >= 4 and
                 any(n >= 3 for j, n in seen.items() if j != first[0]), 30,
                 what="retried deliveries")
        time.sleep(4)  # the given-up event would have had its fifth try by now
        assert seen[first[0]] == 4, seen
        assert all(n == 3 for j, n in seen.items() if j != first[0] and n >= 3), seen
        m = scrape(f"http://{maddr}/metrics")
        assert val(m, "sked_alerts_sent_total", result="http_error") >= 6
        assert val(m, "sked_alerts_sent_total", result="ok") >= 1
        assert val(m, "sked_alerts_given_up_total") == 1
        assert val(m, "sked_alerts_dropped_total") == 0
    finally:
        hook.close()


def test_hanging_webhook_does_not_delay_scheduling(cluster):
    hang = Hang()
    maddr = f"127.0.0.1:{free_port()}"
    try:
        cluster.start(masters=1, workers=1, master_env={
            "SKED_ALERT_URL": hang.url, "SKED_METRICS_ADDR": maddr})
        create(cluster, "bad", {"task_type": "fail"})
        ok = create(cluster, "ok", {"task_type": "noop"})
        time.sleep(10)
        m = scrape(f"http://{maddr}/metrics")
        assert val(m, "sked_alerts_queued") >= 5, "deliveries hang"
        assert val(m, "sked_alerts_sent_total", result="ok") == 0
        jobs = list(cluster.db.jobs.find({"trigger_id": ok, "started_at": {"$ne": None}}))
        assert len(jobs) >= 8, len(jobs)
        lags = sorted((j["started_at"] - j["scheduled_for"]).total_seconds() for j in jobs)
        assert lags[-1] < 1.0, lags
        # The master still answers and stops at once with deliveries in flight.
        t0 = time.time()
        assert cluster.masters[0].stop() == 0
        cluster.checked_stop.append(cluster.masters[0])
        assert time.time() - t0 < 5
    finally:
        hang.close()


def start_ticking(cluster, hook, **master_env):
    """One master alerting to hook and one worker with a single slot; a 1-s
    noop trigger already running on time. Returns the trigger id."""
    cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_SLOTS": "1"},
                  master_env={"SKED_ALERT_URL": hook.url, **master_env})
    tid = create(cluster, "tick", {"task_type": "noop"})
    wait_for(lambda: cluster.db.jobs.count_documents({"trigger_id": tid, "status": "succeeded"}) >= 2,
             20, what="jobs on time")
    return tid


def hold_the_slot(cluster, seconds):
    """Runs a `sleep` job on the worker's only slot and waits for its end:
    the tick's fire meanwhile waits its turn and starts late by up to
    `seconds` (its later fires are skipped for overlap)."""
    r = cluster.api("POST", "/triggers/", json={
        "name": f"hold {seconds} s at {time.time()}", "trigger_config": {},
        "execution_config": {"task_type": "sleep", "parameters": {"seconds": seconds}}})
    assert r.status_code == 201, r.text
    r = cluster.api("POST", f"/triggers/{r.json()['id']}/execute", json={})
    assert r.status_code == 202, r.text
    jid = r.json()["job_id"]
    wait_for(lambda: cluster.db.jobs.find_one({"_id": jid, "status": "succeeded"}), seconds + 10,
             what=f"the {seconds}-s job done")


def test_fire_lag_above_threshold_alerts_once_a_minute(cluster):
    hook = Receiver()
    try:
        tid = start_ticking(cluster, hook, SKED_ALERT_LAG_MS="800")
        assert not hook.events("fire_lag_high")
        # A busy worker starts the tick's jobs late: twice, within a minute.
        for _ in range(2):
            hold_the_slot(cluster, 2.5)
            time.sleep(2)
        wait_for(lambda: hook.events("fire_lag_high"), 10, what="a fire_lag_high alert")
        time.sleep(1)
        evs = hook.events("fire_lag_high")
        assert len(evs) == 1, evs
        ev = evs[0]
        assert ev["lag_ms"] > ev["threshold_ms"] == 800
        assert ev["trigger_id"] == tid and ev["task_type"] == "noop"
        job = cluster.db.jobs.find_one({"_id": ev["job_id"]})
        assert (job["started_at"] - job["scheduled_for"]).total_seconds() * 1000 > 800
    finally:
        hook.close()


def test_fire_lag_alert_waits_until_fires_are_late_for_lag_for_ms(cluster):
    hook = Receiver()
    try:
        tid = start_ticking(cluster, hook, SKED_ALERT_LAG_MS="800", SKED_ALERT_LAG_FOR_MS="4000")
        # Late for about 2 s: below SKED_ALERT_LAG_FOR_MS, no alert.
        hold_the_slot(cluster, 2)
        time.sleep(3)
        assert not hook.events("fire_lag_high")
        lags = [(j["started_at"] - j["scheduled_for"]).total_seconds()
                for j in cluster.db.jobs.find({"trigger_id": tid, "status": "succeeded"})]
        assert [x for x in lags if x > 0.8], f"a fire started late: {lags}"
        # Late for about 6 s: one alert, telling for how long.
        hold_the_slot(cluster, 6)
        wait_for(lambda: hook.events("fire_lag_high"), 10, what="a fire_lag_high alert")
        ev = hook.events("fire_lag_high")[0]
        assert ev["late_for_ms"] >= 4000 and ev["lag_ms"] > 800, ev
    finally:
        hook.close()
