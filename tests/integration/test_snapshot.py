"""A master that gives its partitions up gracefully (SIGTERM) and holds at
least SKED_SNAPSHOT_MIN triggers writes each partition's schedule to the
store; the next holder restores it instead of reading every trigger and
state, and re-reads what the gateways changed since. A holder that died
left none, and a snapshot of an older epoch or of another build is not
used: those partitions load in full."""
import datetime as dt
import re
import signal
import time

from conftest import free_port, interval_trigger, wait_for, zulu


def fired_since(cluster, tid, since):
    return cluster.db.jobs.count_documents({"trigger_id": tid, "scheduled_for": {"$gt": since}})


def restored(master):
    """(partitions, triggers, changes) restored from snapshots, summed over
    the master's restores; None if none."""
    m = re.findall(r"partitions restored from snapshots count=(\d+) triggers=(\d+) stale=(\d+) "
                   r"changes=(\d+)", master.text())
    return tuple(sum(int(x[k]) for x in m) for k in (0, 1, 3)) if m else None


def stale(master):
    """Triggers of periodic snapshots read again (they may have fired since)."""
    return sum(int(x) for x in re.findall(r"partitions restored from snapshots .* stale=(\d+)", master.text()))


def headers(cluster, **filt):
    """The snapshots' header documents (chunk 0 of each)."""
    return list(cluster.db.snapshots.find(dict(filt, probe={"$exists": True})))


def test_a_restarted_master_restores_its_schedule_and_the_changes_made_meanwhile(cluster):
    cluster.start(masters=1, workers=1, master_env={"SKED_SNAPSHOT_MIN": "1000"})
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    steady = interval_trigger(cluster, "steady", {"task_type": "echo", "parameters": {"k": "v"},
                                                   "priority": 3}, now, 1)
    r = cluster.api("POST", "/triggers/", json={
        "name": "berlin", "trigger_type": "CRON",
        "trigger_config": {"cron_expression": "* * * * * *", "timezone": "Europe/Berlin"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    berlin = r.json()["id"]
    paused = interval_trigger(cluster, "paused-meanwhile", {"task_type": "noop"}, now, 1)
    deleted = interval_trigger(cluster, "deleted-meanwhile", {"task_type": "noop"}, now, 1)
    changed = interval_trigger(cluster, "changed-meanwhile", {"task_type": "noop"}, now, 3600)
    quiet = [interval_trigger(cluster, f"quiet-{i}", {"task_type": "noop"},
                              now + dt.timedelta(hours=1), 3600) for i in range(40)]
    wait_for(lambda: fired_since(cluster, steady, now) >= 2, 20, what="the steady trigger firing")

    # Below SKED_SNAPSHOT_MIN: no snapshot, a full load.
    assert cluster.masters[0].stop(signal.SIGTERM) == 0
    cluster.masters.pop(0)
    assert cluster.db.snapshots.count_documents({}) == 0
    m = cluster.start_master(0, cluster.master_ports[0], SKED_SNAPSHOT_MIN="0", SKED_SNAPSHOT_EVERY_S="1")
    wait_for(lambda: "partitions gained" in m.text(), 30, what="the restarted master's load")
    assert restored(m) is None

    # At or above it: a final snapshot of each of the 8 partitions at SIGTERM
    # (each replacing the periodic one of its epoch).
    assert m.stop(signal.SIGTERM) == 0
    cluster.masters.pop(0)
    heads = headers(cluster)
    assert sorted(h["partition"] for h in heads) == list(range(8))
    assert all(h["final"] for h in heads)
    assert sum(h["triggers"] for h in heads) == 5 + len(quiet)
    # Changed while no master runs: the gateway notes each change.
    assert cluster.api("POST", f"/triggers/{paused}/pause").status_code == 200
    assert cluster.api("DELETE", f"/triggers/{deleted}").status_code == 204
    r = cluster.api("PATCH", f"/triggers/{changed}", json={
        "trigger_config": {"interval": 1, "unit": "seconds",
                           "start_at": zulu(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))}})
    assert r.status_code == 200, r.text
    created = interval_trigger(cluster, "created-meanwhile", {"task_type": "noop"},
                               dt.datetime.now(dt.timezone.utc).replace(microsecond=0), 1)

    back = dt.datetime.now(dt.timezone.utc)
    m = cluster.start_master(0, cluster.master_ports[0], SKED_SNAPSHOT_MIN="0")
    wait_for(lambda: restored(m) is not None, 30, what="the partitions restored")
    count, triggers, changes = restored(m)
    assert (count, triggers) == (8, 5 + len(quiet))
    # Every trigger the gateway noted from 2 minutes before the snapshot
    # on is re-read: here all, those created before it included.
    assert changes == 5 + len(quiet) + 1
    assert "snapshot not used" not in m.text() and stale(m) == 0
    for h in heads:  # a restored snapshot is deleted (the new epoch's are written as it goes)
        assert cluster.db.snapshots.count_documents({"partition": h["partition"], "epoch": h["epoch"]}) == 0

    settled = back + dt.timedelta(seconds=2)
    wait_for(lambda: all(fired_since(cluster, t, settled) >= 3 for t in (steady, berlin, changed, created)),
             30, what="the restored, changed and created triggers firing")
    assert fired_since(cluster, paused, settled) == 0
    assert fired_since(cluster, deleted, settled) == 0
    job = cluster.db.jobs.find_one({"trigger_id": steady, "scheduled_for": {"$gt": settled}})
    assert (job["task_type"], job["parameters"], job["owner"]) == ("echo", {"k": "v"}, "alice")
    # Each time fired once (G1 by _id), and none of the steady trigger's missed.
    times = [j["scheduled_for"] for j in cluster.db.jobs.find({"trigger_id": steady})]
    assert len(times) == len(set(times))
    assert all(fired_since(cluster, t, now + dt.timedelta(hours=1)) == 0 for t in quiet)


def test_no_snapshot_of_an_older_epoch_or_another_build_is_used(cluster):
    cluster.start(masters=1, workers=1, master_env={"SKED_SNAPSHOT_MIN": "0"})
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    ids = [interval_trigger(cluster, f"t-{i}", {"task_type": "noop"}, now, 1) for i in range(12)]
    wait_for(lambda: all(fired_since(cluster, t, now) >= 1 for t in ids), 20, what="every trigger firing")

    # Another build's snapshot of one partition (its probe cron differs).
    assert cluster.masters[0].stop(signal.SIGTERM) == 0
    cluster.masters.pop(0)
    kept = list(cluster.db.snapshots.find({}))
    heads = [d for d in kept if "probe" in d]
    assert len(heads) == 8
    odd = heads[0]["partition"]
    cluster.db.snapshots.update_one({"_id": heads[0]["_id"]}, {"$set": {"probe": b"\x00" * 32}})
    m = cluster.start_master(0, cluster.master_ports[0], SKED_SNAPSHOT_MIN="0", SKED_SNAPSHOT_EVERY_S="0")
    wait_for(lambda: restored(m) is not None, 30, what="the partitions restored")
    assert restored(m)[0] == 7
    assert f"snapshot not used; loading in full partition={odd}" in m.text()
    assert "written by another build" in m.text()

    # Without periodic snapshots a holder killed (kill -9) leaves none; the
    # ones it restored from (an older epoch's) put back are not used: every
    # partition loads in full.
    wait_for(lambda: "partitions gained" in m.text(), 30, what="the load")
    assert m.stop(signal.SIGKILL) != 0
    cluster.masters.pop(0)
    cluster.checked_stop.append(m)
    assert cluster.db.snapshots.count_documents({}) == 0
    cluster.db.snapshots.insert_many(kept)
    killed = dt.datetime.now(dt.timezone.utc)
    m = cluster.start_master(0, cluster.master_ports[0], SKED_SNAPSHOT_MIN="0")
    wait_for(lambda: re.search(r"partitions gained count=8 .* triggers=12", m.text()), 30,
             what="every partition loaded in full")
    assert restored(m) is None
    assert "snapshot not used" not in m.text()  # not even looked at: not the previous epoch's
    wait_for(lambda: all(fired_since(cluster, t, killed + dt.timedelta(seconds=2)) >= 2 for t in ids), 30,
             what="every trigger firing again")


def test_partitions_handed_to_a_new_master_are_restored_there(cluster):
    """A second master joins: the first gives half of its partitions back
    (a graceful release) with their snapshots, and the second restores
    them; every trigger fires on, each time once."""
    cluster.start(masters=1, workers=1, master_env={"SKED_SNAPSHOT_MIN": "0"})
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    ids = [interval_trigger(cluster, f"t-{i}", {"task_type": "noop"}, now, 1) for i in range(16)]
    wait_for(lambda: all(fired_since(cluster, t, now) >= 1 for t in ids), 20, what="every trigger firing")
    port = free_port()
    cluster.master_ports.append(port)
    second = cluster.start_master(1, port, SKED_SNAPSHOT_MIN="0")
    wait_for(lambda: (restored(second) or (0,))[0] == 4, 30, what="the handed partitions restored")
    count, triggers, _ = restored(second)
    assert 0 < triggers < 16
    assert "snapshot not used" not in second.text()
    joined = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    wait_for(lambda: all(fired_since(cluster, t, joined) >= 3 for t in ids), 30,
             what="every trigger firing on after the handover")
    for t in ids:
        times = [j["scheduled_for"] for j in cluster.db.jobs.find({"trigger_id": t})]
        assert len(times) == len(set(times))
    assert not headers(cluster, final=True), "a restored snapshot is deleted"


def test_change_windows_older_than_an_hour_are_dropped(cluster):
    """The gateways' change windows (one collection a minute) are dropped
    by a master once older than an hour (10 s after its start, then every
    10 minutes); younger ones stay."""
    old = cluster.db["trigger_changes_202001011200"]
    old.insert_one({"trigger_id": "x", "partition": 0})
    cluster.start(masters=1, workers=1)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    interval_trigger(cluster, "noted", {"task_type": "noop"}, now + dt.timedelta(hours=1), 3600)
    names = cluster.mongo[cluster.db_name].list_collection_names
    young = [n for n in names() if n.startswith("trigger_changes_") and n != old.name]
    assert len(young) == 1, young
    wait_for(lambda: old.name not in names(), 30, what="the old window dropped")
    assert young[0] in names()


def test_a_killed_masters_periodic_snapshot_is_restored_and_what_may_have_fired_since_read_again(cluster):
    """Every SKED_SNAPSHOT_EVERY_S a master writes each held partition's
    snapshot. Killed, it writes no final one: its successor restores the
    periodic one, but reads again by `_id` every trigger that may have
    fired since (its next fire was due before now + the claim-ahead), so
    none fires twice and each goes on from its saved state."""
    cluster.start(masters=1, workers=1,
                  master_env={"SKED_SNAPSHOT_MIN": "0", "SKED_SNAPSHOT_EVERY_S": "1"})
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    fast = [interval_trigger(cluster, f"fast-{i}", {"task_type": "noop"}, now, 1) for i in range(6)]
    slow = [interval_trigger(cluster, f"slow-{i}", {"task_type": "noop"}, now + dt.timedelta(hours=1), 3600)
            for i in range(20)]
    wait_for(lambda: len({h["partition"] for h in headers(cluster)}) == 8 and
             all(fired_since(cluster, t, now) >= 3 for t in fast), 30,
             what="a periodic snapshot of every partition, and the fast triggers firing")
    m = cluster.masters[0]
    assert m.stop(signal.SIGKILL) != 0
    cluster.masters.pop(0)
    cluster.checked_stop.append(m)
    assert not headers(cluster, final=True)
    killed = dt.datetime.now(dt.timezone.utc)
    m = cluster.start_master(0, cluster.master_ports[0], SKED_SNAPSHOT_MIN="0", SKED_SNAPSHOT_EVERY_S="1")
    wait_for(lambda: (restored(m) or (0,))[0] == 8, 30, what="every partition restored")
    count, triggers, _ = restored(m)
    assert triggers + stale(m) == len(fast) + len(slow)
    assert stale(m) >= len(fast), "the triggers due since the snapshot are read again"
    wait_for(lambda: re.search(r"partitions gained count=8 .* triggers=26", m.text()), 10,
             what="every trigger scheduled")
    wait_for(lambda: all(fired_since(cluster, t, killed + dt.timedelta(seconds=4)) >= 2 for t in fast), 30,
             what="the fast triggers firing again")
    for t in fast:
        times = [j["scheduled_for"] for j in cluster.db.jobs.find({"trigger_id": t})]
        assert len(times) == len(set(times))
    assert all(fired_since(cluster, t, now + dt.timedelta(minutes=59)) == 0 for t in slow)


def test_a_periodic_snapshot_from_which_too_many_may_have_fired_is_not_used(cluster):
    """Past 256 triggers that may have fired since a periodic snapshot
    (and an eighth of the partition), reading each again by `_id` would
    cost more than the full load: the partition loads in full, and every
    trigger fires on, each time once."""
    cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_SLOTS": "1000"},
                  master_env={"SKED_SNAPSHOT_MIN": "0", "SKED_SNAPSHOT_EVERY_S": "1", "SKED_PARTITIONS": "1"},
                  gateway_env={"SKED_RATE_LIMIT": "0", "SKED_PARTITIONS": "1"})
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    ids = [interval_trigger(cluster, f"t-{i}", {"task_type": "noop"}, now, 1) for i in range(300)]
    wait_for(lambda: headers(cluster) and all(fired_since(cluster, t, now) >= 1 for t in ids[-5:]), 60,
             what="a periodic snapshot, and the triggers firing")
    m = cluster.masters[0]
    assert m.stop(signal.SIGKILL) != 0
    cluster.masters.pop(0)
    cluster.checked_stop.append(m)
    killed = dt.datetime.now(dt.timezone.utc)
    m = cluster.start_master(0, cluster.master_ports[0], SKED_SNAPSHOT_MIN="0", SKED_SNAPSHOT_EVERY_S="1",
                             SKED_PARTITIONS="1")
    wait_for(lambda: re.search(r"partitions gained count=1 .* triggers=300", m.text()), 30,
             what="the partition loaded")
    assert "reason=\"too many of its triggers may have fired since it was taken\"" in m.text()
    assert restored(m) is None
    sample = ids[::30]
    wait_for(lambda: all(fired_since(cluster, t, killed + dt.timedelta(seconds=4)) >= 2 for t in sample), 30,
             what="the triggers firing again")
    for t in sample:
        times = [j["scheduled_for"] for j in cluster.db.jobs.find({"trigger_id": t})]
        assert len(times) == len(set(times))
