"""A master re-reads its partitions' triggers every 10 housekeeping ticks
(3 s here), so a change whose NOTIFY never came (written to the store by
a gateway that then died, or by a bulk import) still reaches the
schedule: new triggers start, changed ones are rescheduled, deleted ones
stop. A pass reads more triggers than one batch (256) here, a batch per
loop turn, so it spans several turns."""
import datetime as dt
import re
import time

import requests

from conftest import free_port, imported_trigger as imported, template_trigger, wait_for


def jobs_of(cluster, tid):
    return cluster.db.jobs.count_documents({"trigger_id": tid})


def test_triggers_changed_behind_the_masters_back_are_picked_up_by_the_reconcile(cluster):
    cluster.start(masters=1, workers=1)
    master = cluster.masters[0]
    template = template_trigger(cluster)
    now = dt.datetime.now(dt.timezone.utc)
    later = now + dt.timedelta(hours=1)
    quiet = [imported(template, f"quiet-{i}", later, 3600) for i in range(600)]
    loud = imported(template, "loud", now + dt.timedelta(seconds=1), 1)
    cluster.db.triggers.insert_many(quiet + [loud])

    # New: found by a pass and scheduled, with no NOTIFY.
    wait_for(lambda: jobs_of(cluster, loud["_id"]) >= 2, 20, what="the imported trigger firing")
    wait_for(lambda: sum(int(c) for c in re.findall(
        r"reconcile found triggers new or changed count=(\d+)", master.text())) >= 601, 20,
             what="every imported trigger scheduled")

    # Changed (a new version): rescheduled to fire every second.
    changed = quiet[-1]
    cluster.db.triggers.update_one({"_id": changed["_id"]}, {"$set": {
        "version": 2, "updated_at": dt.datetime.now(dt.timezone.utc),
        "trigger_config": {"interval": 1, "unit": "seconds"},
        "schedule.period_ms": 1000,
        "schedule.first_fire_at": dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)}})
    wait_for(lambda: jobs_of(cluster, changed["_id"]) >= 2, 20, what="the changed trigger firing")

    # Deleted or paused: unscheduled at the end of a pass.
    gone = [loud["_id"]] + [d["_id"] for d in quiet[:300]]
    cluster.db.triggers.delete_many({"_id": {"$in": gone[:-1]}})
    cluster.db.triggers.update_one({"_id": gone[-1]}, {"$set": {"status": "paused", "version": 2}})
    wait_for(lambda: master.text().count("reason=reconcile") >= len(gone), 20,
             what="the deleted and paused triggers unscheduled")
    text = master.text()
    assert all(f"trigger={t} reason=reconcile" in text for t in gone)
    assert f"trigger={changed['_id']} reason=reconcile" not in text
    time.sleep(1.5)  # a fire claimed ahead before the pass ended runs
    fired = jobs_of(cluster, loud["_id"])
    time.sleep(3)
    assert jobs_of(cluster, loud["_id"]) == fired, "a deleted trigger fires no more"
    # The others stay: the changed one fires on.
    before = jobs_of(cluster, changed["_id"])
    wait_for(lambda: jobs_of(cluster, changed["_id"]) > before, 10, what="the changed trigger firing on")


def test_a_trigger_that_reached_its_end_is_not_read_again_by_every_pass(cluster):
    """A trigger past its end_at keeps its definition (the gateway's), so
    each pass finds it, unscheduled. It is remembered as ended: a pass
    takes it for new only once it has changed."""
    cluster.start(masters=1, workers=1)
    master = cluster.masters[0]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    r = cluster.api("POST", "/triggers/", json={
        "name": "ends", "trigger_config": {"interval": 1, "unit": "seconds",
                                           "end_at": (now + dt.timedelta(seconds=3)).isoformat()},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    wait_for(lambda: f"trigger reached end_at trigger={tid}" in master.text(), 20,
             what="the trigger reaching its end_at")

    def found():
        return len(re.findall(r"reconcile found triggers new or changed", master.text()))
    before, fired = found(), jobs_of(cluster, tid)
    time.sleep(10)  # three passes at least (one every 10 heartbeats of 300 ms)
    assert found() == before, "an ended trigger was read again by a reconcile pass"
    assert jobs_of(cluster, tid) == fired

    # Changed behind the master's back (no NOTIFY): a pass picks it up.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    cluster.db.triggers.update_one({"_id": tid}, {"$set": {
        "version": 2, "updated_at": dt.datetime.now(dt.timezone.utc), "schedule.end_at": later,
        "trigger_config.end_at": later.isoformat()}})
    wait_for(lambda: jobs_of(cluster, tid) >= fired + 2, 20, what="the changed trigger firing again")


def test_passes_are_spaced_by_twenty_times_their_reading_time(cluster):
    """On FerretDB every pass is a full scan of `triggers`, whatever the
    partitions. With many triggers a pass every 10 ticks kept the store
    busy all the time, so a pass begins no sooner than 20 times its
    predecessor's reading time after that one ended."""
    maddr = f"127.0.0.1:{free_port()}"
    env = {"SKED_METRICS_ADDR": maddr}
    cluster.start(masters=1, workers=1, master_env=env)
    template = template_trigger(cluster)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    cluster.db.triggers.insert_many([imported(template, f"q-{i}", later, 3600) for i in range(5000)])
    # A new master loads them whole on gaining the partitions; its passes
    # then read ids and versions only.
    assert cluster.masters[0].stop() == 0
    master = cluster.start_master(1, cluster.master_ports[0], **env)
    wait_for(lambda: "partitions gained" in master.text(), 60, what="the new master's load")

    def sample():
        try:
            text = requests.get(f"http://{maddr}/metrics", timeout=5).text
        except requests.ConnectionError:
            return None
        passes = sum(float(v) for v in re.findall(
            r'^sked_reconcile_passes_total\{result="complete"\} (\S+)', text, re.M))
        read = re.search(r"^sked_reconcile_read_seconds_total (\S+)", text, re.M)
        return passes, float(read.group(1)) if read else 0.0

    ends = []  # (time the pass was seen ended, its reading time)
    last = wait_for(sample, 10, what="the master's metrics")
    deadline = time.time() + 60
    while time.time() < deadline and len(ends) < 2:
        cur = sample()
        if cur and cur[0] > last[0]:
            assert cur[0] == last[0] + 1, "two passes ended within 0.1 s"
            ends.append((time.time(), cur[1] - last[1]))
        last = cur or last
        time.sleep(0.1)
    assert len(ends) >= 2, f"fewer than two passes ended in 60 s: {ends}"
    unpaced = 10 * 0.3  # a pass every 10 ticks of 300 ms
    for (t0, read), (t1, _) in zip(ends, ends[1:]):
        # Only a read long enough makes the spacing show against the ticks.
        assert 20 * read > unpaced + 1, f"a pass read only {read:.3f} s: too few triggers"
        assert t1 - t0 >= 20 * read - 0.3, f"passes {t1 - t0:.2f} s apart after reading {read:.2f} s"
