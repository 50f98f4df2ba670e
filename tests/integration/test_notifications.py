"""A trigger's own `notifications`: webhooks told of a failure after the last
retry, of a success, of a skipped fire; each delivery, delivered or given
up, recorded on the job; a receiver that is down never delays scheduling.
And the cluster alert for partitions without a live master."""
import datetime as dt
import signal
import time

from conftest import DelayProxy, wait_for
from test_alerts import Receiver, iso


def create(cluster, name, execution, notifications, interval=1, **extra):
    r = cluster.api("POST", "/triggers/", json={
        "name": name, "trigger_config": {"interval": interval, "unit": "seconds"},
        "execution_config": execution, "notifications": notifications, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def deliveries(cluster, job_id):
    return cluster.api("GET", f"/jobs/{job_id}").json()["notifications"]


def test_failure_after_last_retry_notifies_once_and_is_recorded(cluster):
    hook, other = Receiver(), Receiver()
    try:
        cluster.start(masters=1, workers=1)
        t = create(cluster, "nightly backup", {
            "task_type": "fail", "parameters": {"message": "disk full"},
            "retry_policy": {"max_retries": 1, "initial_delay": 0.1, "jitter": False}},
            [{"url": hook.url, "headers": {"Authorization": "Bearer hook-secret"}},
             {"url": other.url, "events": ["success"]}], interval=3)
        assert t["notifications"][0]["events"] == ["failure"]  # the default, filled in
        wait_for(lambda: hook.events("job_failed"), 30, what="a job_failed notification")
        ev = hook.events("job_failed")[0]
        job = cluster.db.jobs.find_one({"_id": ev["job"]["id"]})
        assert job["status"] == "failed" and job["attempt"] == 2
        assert ev["trigger"] == {"id": t["id"], "name": "nightly backup"}
        j = ev["job"]
        assert j["status"] == "failed" and j["attempt"] == 2 and j["task_type"] == "fail"
        assert j["error"] == "disk full" and j["worker_id"] == "worker-0"
        assert iso(j["scheduled_for"]) == job["scheduled_for"]
        assert ev["master"] == "master-0"
        headers = hook.posts[0][0]
        assert headers["Authorization"] == "Bearer hook-secret"
        assert headers["X-Sked-Delivery"] == f"{j['id']}/failure/0"
        assert headers["Content-Type"] == "application/json"
        # Recorded on the job: delivered at the first attempt, to hook 0 only.
        wait_for(lambda: deliveries(cluster, j["id"]), 10, what="the delivery record")
        rec = deliveries(cluster, j["id"])
        assert len(rec) == 1, rec
        assert rec[0]["hook"] == 0 and rec[0]["event"] == "failure"
        assert rec[0]["status"] == "delivered" and rec[0]["url"] == hook.url
        assert len(rec[0]["attempts"]) == 1 and rec[0]["attempts"][0]["http_status"] == 200
        # One notification per failed job (attempt 1 was retried, not notified),
        # and nothing for the hook that asked for successes only.
        time.sleep(1)
        ids = [e["job"]["id"] for e in hook.events()]
        assert len(ids) == len(set(ids)) and all(e["job"]["attempt"] == 2 for e in hook.events())
        assert not other.posts
        # The token in the hook's headers never reaches the logs.
        assert "hook-secret" not in cluster.masters[0].text()
    finally:
        hook.close()
        other.close()


def test_success_and_skipped_fires_notify_with_output_and_reason(cluster):
    hook = Receiver()
    try:
        cluster.start(masters=1, workers=1)
        ok = create(cluster, "echo", {"task_type": "echo", "parameters": {"text": "hello"}},
                    [{"url": hook.url, "events": ["success"]}])
        slow = create(cluster, "slow", {"task_type": "sleep", "parameters": {"seconds": 2.5}},
                      [{"url": hook.url, "events": ["skipped", "failure"]}])
        wait_for(lambda: hook.events("job_succeeded") and hook.events("job_skipped"), 30,
                 what="success and skipped notifications")
        s = hook.events("job_succeeded")[0]
        assert s["trigger"]["id"] == ok["id"] and s["job"]["status"] == "succeeded"
        assert "hello" in (s["job"]["output_tail"] or ""), s
        k = hook.events("job_skipped")[0]
        assert k["trigger"]["id"] == slow["id"] and k["job"]["skip_reason"] == "overlap"
        assert cluster.db.jobs.find_one({"_id": k["job"]["id"]})["status"] == "skipped"
        # The slow trigger's successes were not asked for.
        assert all(e["trigger"]["id"] == ok["id"] for e in hook.events("job_succeeded"))
        wait_for(lambda: deliveries(cluster, k["job"]["id"]), 10, what="the skip's record")
        assert deliveries(cluster, k["job"]["id"])[0]["event"] == "skipped"
    finally:
        hook.close()


def test_receiver_down_is_retried_then_recorded_failed_without_delaying_fires(cluster):
    hook = Receiver(lambda event: 503)
    try:
        cluster.start(masters=1, workers=1, master_env={
            "SKED_NOTIFY_TRIES": "3", "SKED_NOTIFY_BACKOFF_MS": "200"})
        bad = create(cluster, "bad", {"task_type": "fail"}, [{"url": hook.url}], interval=2)
        ok = create(cluster, "ok", {"task_type": "noop"}, [])
        job = {}

        def failed_record():
            for j in cluster.db.jobs.find({"trigger_id": bad["id"], "notifications": {"$exists": True}}):
                job.update(j)
                return True
            return False

        wait_for(failed_record, 30, what="a failed delivery record")
        rec = job["notifications"]
        assert len(rec) == 1 and rec[0]["status"] == "failed", rec
        assert [a["http_status"] for a in rec[0]["attempts"]] == [503, 503, 503]
        assert rec[0]["attempts"][0]["error"] == "HTTP status 503"
        at = [iso(a["at"]) for a in rec[0]["attempts"]]
        assert at[2] - at[0] >= dt.timedelta(milliseconds=500)  # 200 ms, then 400 ms
        posts = [e for e in hook.events() if e["job"]["id"] == job["_id"]]
        assert len(posts) == 3
        # Meanwhile the other trigger kept firing on time.
        started = {"trigger_id": ok["id"], "started_at": {"$ne": None}}
        wait_for(lambda: cluster.db.jobs.count_documents(started) >= 5, 20, what="5 runs")
        jobs = list(cluster.db.jobs.find(started))
        lags = sorted((j["started_at"] - j["scheduled_for"]).total_seconds() for j in jobs)
        assert lags[-1] < 1.0, lags
    finally:
        hook.close()


def test_invalid_notifications_list_every_field(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", json={
        "name": "bad hooks", "trigger_config": {"interval": 5},
        "execution_config": {"task_type": "noop"},
        "notifications": [
            {"url": "ftp://example.com/x", "events": ["failure", "failure"]},
            {"url": "http://example.com/y", "events": ["sometimes"], "headers": {"Host": "x"}},
            {"events": []}, "not an object"]})
    assert r.status_code == 422, r.text
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert ("body", "notifications", 0, "url") in locs
    assert ("body", "notifications", 0, "events", 1) in locs
    assert ("body", "notifications", 1, "events", 0) in locs
    assert ("body", "notifications", 1, "headers", "Host") in locs
    assert ("body", "notifications", 2, "url") in locs
    assert ("body", "notifications", 2, "events") in locs
    assert ("body", "notifications", 3) in locs
    r = cluster.api("POST", "/triggers/", json={
        "name": "too many", "trigger_config": {"interval": 5},
        "execution_config": {"task_type": "noop"},
        "notifications": [{"url": f"http://example.com/{i}"} for i in range(6)]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "notifications"]
    # PATCH replaces the list; an empty list removes every hook.
    t = create(cluster, "patched", {"task_type": "noop"}, [{"url": "http://example.com/a"}], 60)
    r = cluster.api("PATCH", f"/triggers/{t['id']}", json={"notifications": []})
    assert r.status_code == 200 and r.json()["notifications"] == []


def test_partitions_without_a_live_master_raise_an_alert_and_its_end(cluster):
    hook = Receiver()
    try:
        # 1.5 s: longer than the hand-overs of start-up, shorter than the
        # window from the dead master's stale heartbeat (1.9 s) to the
        # expiry of its leases (6 s).
        cluster.start(masters=2, workers=1, master_env={
            "SKED_ALERT_URL": hook.url, "SKED_ALERT_UNOWNED_MS": "1500",
            "SKED_LEASE_TTL_MS": "6000"})
        wait_for(lambda: all(m["partitions"] == 4 for m in cluster.health()["masters"])
                 and len(cluster.health()["masters"]) == 2, 30, what="both masters holding 4")
        before = len(hook.events())
        cluster.masters[1].popen.send_signal(signal.SIGKILL)
        cluster.masters[1].popen.wait()
        cluster.checked_stop.append(cluster.masters[1])
        after = lambda kind: [e for e in hook.events()[before:] if e["event"] == kind]  # noqa: E731
        wait_for(lambda: after("partitions_owned"), 30, what="unowned, then owned again")
        un = after("partitions_unowned")
        assert len(un) == 1, un
        assert len(un[0]["partitions"]) == 4 and un[0]["partitions_total"] == 8
        assert un[0]["master"] == "master-0" and un[0]["unowned_for_ms"] >= 1500
        assert len(after("partitions_owned")) == 1
    finally:
        hook.close()


def test_notification_pending_when_its_master_dies_is_sent_by_the_next_owner(cluster):
    up = []
    hook = Receiver(lambda event: 200 if up else 503)
    try:
        cluster.start(masters=2, workers=1, master_env={
            "SKED_NOTIFY_TRIES": "50", "SKED_NOTIFY_BACKOFF_MS": "300"})
        # Partitions settled first: a job failed by the first master whose
        # partition then moved to the second would be retried by the first
        # from its own queue, not sent again by a takeover.
        wait_for(lambda: len(cluster.health()["masters"]) == 2
                 and all(m["partitions"] == 4 for m in cluster.health()["masters"]), 30,
                 what="both masters holding 4")
        t = create(cluster, "flaky", {"task_type": "fail"}, [{"url": hook.url}], interval=3600)
        r = cluster.api("POST", f"/triggers/{t['id']}/execute", json={})
        assert r.status_code == 202, r.text
        jid = r.json()["job_id"]
        wait_for(lambda: hook.events("job_failed"), 20, what="a first (refused) delivery")
        job = cluster.db.jobs.find_one({"_id": jid})
        assert job["status"] == "failed" and job.get("notify_pending") is True, job
        # The master holding the job's partition dies with the delivery pending.
        member = cluster.db.members.find_one({"role": "master", "partitions": job["partition"]})
        victim = next(p for p in cluster.masters if p.name == member["node_id"])
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait()
        cluster.checked_stop.append(victim)
        up.append(1)
        survivor = next(p for p in cluster.masters if p is not victim)
        wait_for(lambda: [e for e in hook.events("job_failed") if e["master"] == survivor.name],
                 30, what="the notice from the master that took over")
        wait_for(lambda: cluster.db.jobs.find_one({"_id": jid, "notify_pending": {"$exists": False}}),
                 10, what="the pending mark cleared")
        rec = cluster.db.jobs.find_one({"_id": jid})["notifications"]
        assert [r["status"] for r in rec] == ["delivered"], rec
        assert "notification sent again after a takeover" in survivor.text()
    finally:
        hook.close()


def test_a_notification_goes_out_once_its_job_outcome_is_written(cluster):
    """A job's outcome is written by the master's status writer, off its
    loop; the job's notification waits for that write, so a receiver that
    reads the job back when told (here, inside the webhook handler) finds
    it as the notification says. The first outcome's write is held 2 s at
    the store; without the wait the notification came during the hold and
    the job read back was still `queued`."""
    seen = []

    def answer(event):
        doc = cluster.db.jobs.find_one({"_id": event["job"]["id"]})
        seen.append((time.time(), event["job"]["status"], doc and doc["status"]))
        return 200
    hook = Receiver(answer)
    proxy = DelayProxy(cluster.store_port)
    cluster.cleanups.append(proxy.stop)
    try:
        cluster.start(masters=1, workers=1, master_env={
            "SKED_MONGO_URI": f"mongodb://127.0.0.1:{proxy.port}/{cluster.db_name}"})
        proxy.hold_next(b"update\x00\x05\x00\x00\x00jobs\x00", 2.0)
        create(cluster, "held outcome", {"task_type": "fail", "parameters": {"message": "no"},
                                         "retry_policy": {"max_retries": 0}},
               [{"url": hook.url}], interval=5)
        wait_for(lambda: seen, 30, what="a job_failed notification")
        assert proxy.holding, "no outcome write was held"
        at, told, read_back = seen[0]
        assert told == "failed" and read_back == "failed", seen[0]
        assert at >= proxy.holding[0] + 1.9, "the notification went out while its outcome's write was held"
    finally:
        hook.close()
