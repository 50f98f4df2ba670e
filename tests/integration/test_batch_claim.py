"""Fires due at the same time are claimed by one unordered insert: each
fire the store admits runs once, a fire whose job document already exists
(claimed by someone else) is left alone while the rest of its batch runs,
and the master makes far fewer claim round trips than fires. The states
of triggers that fired together are saved together."""
import datetime as dt
import signal
import time

from conftest import DelayProxy, free_port, imported_trigger, template_trigger, wait_for, zulu
from test_metrics import scrape, val

N = 12          # triggers, all on the same 2-second grid
PERIOD_S = 2


def test_fires_due_together_are_claimed_in_one_insert(cluster):
    maddr = f"127.0.0.1:{free_port()}"
    # States saved as soon as the loop is idle: the grouping is looked at
    # here, the wait before a save in test_state_save.py.
    cluster.start(masters=1, workers=1,
                  master_env={"SKED_METRICS_ADDR": maddr, "SKED_STATE_SAVE_MS": "0"})
    now = dt.datetime.now(dt.timezone.utc)
    start = now.replace(microsecond=0) + dt.timedelta(seconds=8)
    start_ms = int(start.timestamp() * 1000)
    ids = []
    for i in range(N):
        r = cluster.api("POST", "/triggers/", json={
            "name": f"batch-{i}",
            "trigger_config": {"interval": PERIOD_S, "unit": "seconds", "start_at": zulu(start)},
            "execution_config": {"task_type": "noop"}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    # Someone else claimed the first trigger's first fire.
    planted = {"_id": f"{ids[0]}@{start_ms}", "trigger_id": ids[0], "owner": "alice",
               "kind": "scheduled", "task_type": "noop", "status": "succeeded", "attempt": 1,
               "scheduled_for": start, "created_at": now, "planted": True}
    cluster.db.jobs.insert_one(planted)
    assert time.time() < start.timestamp() - 1, "setup took too long for the test's start time"

    def first_fires_done():
        done = cluster.db.jobs.count_documents(
            {"_id": {"$in": [f"{t}@{start_ms}" for t in ids[1:]]}, "status": "succeeded"})
        return done == N - 1
    wait_for(first_fires_done, 30, interval=0.5, what="the first fires of the other triggers")
    # Two more grid points pass.
    time.sleep(2 * PERIOD_S + 1)

    jobs = list(cluster.db.jobs.find({"trigger_id": {"$in": ids}, "kind": "scheduled"}))
    by_fire = {}
    for j in jobs:
        by_fire.setdefault((j["trigger_id"], j["scheduled_for"]), []).append(j)
    assert all(len(v) == 1 for v in by_fire.values()), "a fire has two job documents"
    # The refused one was neither run nor overwritten.
    doc = cluster.db.jobs.find_one({"_id": planted["_id"]})
    assert doc.get("planted") is True and "started_at" not in doc and "attempts" not in doc, doc
    # The rest of its batch ran, each from its own grid time.
    for t in ids[1:]:
        first = cluster.db.jobs.find_one({"_id": f"{t}@{start_ms}"})
        assert first["status"] == "succeeded" and first.get("started_at"), first
    fires = len(jobs) - 1
    assert fires >= 3 * N - 1, f"only {fires} fires ran"

    samples, _ = scrape(f"http://{maddr}/metrics")
    claims = val(samples, "sked_store_operation_duration_seconds_count", op="insert_job")
    # One insert per grid point, a few more if a batch straddled a wake-up.
    assert 1 <= claims <= fires / 3, f"{claims} claim inserts for {fires} fires"
    # After its first save, a trigger's state is saved with the others of
    # its grid point in one update_many; every state names its last fire.
    saves = val(samples, "sked_store_operation_duration_seconds_count", op="save_states")
    assert saves >= 1, "no grouped state save"

    def states_current():
        last = {}
        for j in cluster.db.jobs.find({"trigger_id": {"$in": ids}, "kind": "scheduled"}):
            last[j["trigger_id"]] = max(last.get(j["trigger_id"], j["scheduled_for"]), j["scheduled_for"])
        states = {s["_id"]: s for s in cluster.db.trigger_state.find({"_id": {"$in": ids}})}
        stale = [t for t in ids if t not in states or states[t].get("last_fire_at") != last[t]
                 or states[t]["next_fire_at"] != last[t] + dt.timedelta(seconds=PERIOD_S)]
        return not stale or None
    wait_for(states_current, 10, interval=0.2, what="every trigger's state at its last fire")


def test_the_late_fires_of_many_triggers_are_recorded_in_one_insert(cluster):
    """A master back from a stall finds every trigger late. The skip
    records of all their misfires go to the store together, not in one
    round trip per trigger (which, on a loaded store, held the loop long
    enough for its leases to lapse)."""
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, master_env={"SKED_METRICS_ADDR": maddr})
    n = 40
    ids = []
    for i in range(n):
        r = cluster.api("POST", "/triggers/", json={
            "name": f"late-{i}", "trigger_config": {"interval": 1, "unit": "seconds"},
            "execution_config": {"task_type": "noop"}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    def ran():
        return len(cluster.db.jobs.distinct("trigger_id", {"trigger_id": {"$in": ids},
                                                            "status": "succeeded"})) == n
    wait_for(ran, 30, interval=0.5, what="a run of every trigger")
    before, _ = scrape(f"http://{maddr}/metrics")
    master = cluster.masters[0].popen
    master.send_signal(signal.SIGSTOP)
    time.sleep(4)
    master.send_signal(signal.SIGCONT)

    def recorded():
        return len(cluster.db.jobs.distinct("trigger_id", {
            "trigger_id": {"$in": ids}, "status": "skipped",
            "skip_reason": "misfire_coalesced"})) == n
    wait_for(recorded, 30, interval=0.5, what="the missed fires of every trigger recorded")
    after, _ = scrape(f"http://{maddr}/metrics")
    op = "sked_store_operation_duration_seconds_count"
    inserts = val(after, op, op="insert_skipped") - (val(before, op, op="insert_skipped") or 0)
    assert 1 <= inserts <= 5, f"{inserts} inserts recorded the misfires of {n} triggers"
    by_fire = {}
    for j in cluster.db.jobs.find({"trigger_id": {"$in": ids}}):
        by_fire.setdefault((j["trigger_id"], j["scheduled_for"]), []).append(j["_id"])
    assert all(len(v) == 1 for v in by_fire.values()), "a fire has two job documents"

    def states_saved():
        # Saved after the records: no state names a fire beyond what the
        # store holds, and every one is past the fires it skipped.
        skipped = {}
        for j in cluster.db.jobs.find({"trigger_id": {"$in": ids}, "status": "skipped"}):
            skipped[j["trigger_id"]] = max(skipped.get(j["trigger_id"], j["scheduled_for"]), j["scheduled_for"])
        states = {st["_id"]: st for st in cluster.db.trigger_state.find({"_id": {"$in": ids}})}
        return all(t in states and states[t]["last_fire_at"] >= skipped[t] for t in ids)
    wait_for(states_saved, 15, interval=0.5, what="every trigger's state saved past its skipped fires")


def test_one_off_triggers_ending_together_save_their_last_states_together(cluster):
    """N triggers whose one fire is at the same time: their last states
    (next fire: none) are saved in a group after they fire, not one store
    call each on the fire path, and a restarted master fires none again."""
    n = 24
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, master_env={"SKED_METRICS_ADDR": maddr})
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=8)
    start_ms = int(start.timestamp() * 1000)
    ids = []
    for i in range(n):
        r = cluster.api("POST", "/triggers/", json={
            "name": f"once-{i}",
            "trigger_config": {"interval": 1, "unit": "hours", "start_at": zulu(start),
                               "end_at": zulu(start + dt.timedelta(seconds=1))},
            "execution_config": {"task_type": "noop"}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert time.time() < start.timestamp() - 1, "setup took too long for the test's start time"

    def states_saved():
        return cluster.db.trigger_state.count_documents(
            {"_id": {"$in": ids}, "last_fire_at": start}) == n
    wait_for(states_saved, 30, interval=0.5, what="every last state saved")
    m, _ = scrape(f"http://{maddr}/metrics")
    one_by_one = val(m, "sked_store_operation_duration_seconds_count", op="save_state")
    assert one_by_one < n / 2, f"{one_by_one} of {n} last states saved one by one"
    text = cluster.masters[0].text()
    assert all(f"trigger reached end_at trigger={t}" in text for t in ids)

    assert cluster.masters[0].stop(signal.SIGTERM) == 0
    again = cluster.start_master(0, cluster.master_ports[0])
    wait_for(lambda: "partitions gained" in again.text(), 30, what="the restarted master's load")
    time.sleep(3)
    assert cluster.db.jobs.count_documents({"trigger_id": {"$in": ids}}) == n


def test_jobs_started_together_have_their_starts_written_in_bulks(cluster):
    """A STARTED is written a second after it comes (unless FINISHED comes
    first and carries it). Jobs that started together have theirs written
    in bulks by `_id`, a few a loop turn, not one store call each in one
    go (5,000 of them held a master's loop past its leases' deadline)."""
    n = 64
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, master_env={"SKED_METRICS_ADDR": maddr},
                  worker_env={"SKED_WORKER_SLOTS": str(n)})
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=8)
    ids = []
    for i in range(n):
        r = cluster.api("POST", "/triggers/", json={
            "name": f"long-{i}",
            "trigger_config": {"interval": 1, "unit": "hours", "start_at": zulu(start)},
            "execution_config": {"task_type": "sleep", "parameters": {"seconds": 6}}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert time.time() < start.timestamp() - 1, "setup took too long for the test's start time"
    jobs = [f"{t}@{int(start.timestamp() * 1000)}" for t in ids]

    def running():
        return cluster.db.jobs.count_documents({"_id": {"$in": jobs}, "status": "running",
                                                "started_at": {"$ne": None}})
    wait_for(lambda: running() == n, 20, interval=0.3, what="every start written while it runs")
    m, _ = scrape(f"http://{maddr}/metrics")
    bulks = val(m, "sked_store_operation_duration_seconds_count", op="update_started")
    singles = val(m, "sked_store_operation_duration_seconds_count", op="update_job")
    assert 1 <= bulks <= n / 4, f"{bulks} bulks for {n} starts"
    assert singles == 0, f"{singles} starts written one by one"
    wait_for(lambda: cluster.db.jobs.count_documents({"_id": {"$in": jobs}, "status": "succeeded"}) == n,
             30, interval=0.5, what="every job done")


def stop_and_import_behind(cluster, template, n, seconds):
    """Stops the one master and imports n triggers firing every second
    since `seconds` ago (fire_all, overlaps allowed), defined before then;
    returns their ids and a proxy to the store for the master's restart."""
    first = cluster.masters.pop(0)
    assert first.stop() == 0
    cluster.checked_stop.append(first)
    past = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=seconds)
    docs = []
    for i in range(n):
        doc = imported_trigger(template, f"behind-{i}", past, 1)
        doc["trigger_config"]["misfire_policy"] = "fire_all"
        doc["execution_config"] = dict(doc["execution_config"], overlap_policy="allow")
        doc["created_at"] = doc["updated_at"] = past - dt.timedelta(seconds=1)
        docs.append(doc)
    cluster.db.triggers.insert_many(docs)
    proxy = DelayProxy(cluster.store_port)
    cluster.cleanups.append(proxy.stop)
    return [d["_id"] for d in docs], proxy


def restart_behind(cluster, proxy):
    cluster.start_master(0, cluster.master_ports[0],
                         SKED_MONGO_URI=f"mongodb://127.0.0.1:{proxy.port}/{cluster.db_name}")


def test_a_catch_up_does_not_hold_up_the_triggers_due_on_time(cluster):
    """Triggers catching up on many missed fires (fire_all, after a
    master's death or downtime) come round again and again, each time
    still due and older than any trigger due on time. A batch of fires
    takes every due trigger once: the one due on time fires in the next
    batch rather than after the whole catch-up. Here 4 triggers imported
    while the master was stopped, defined and first due 120 s before it
    comes back, each store request of its held 50 ms."""
    cluster.start(masters=1, workers=1)
    template = template_trigger(cluster)
    on_time = cluster.api("POST", "/triggers/", json={
        "name": "on-time", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop", "overlap_policy": "allow"}}).json()["id"]
    wait_for(lambda: cluster.db.jobs.find_one({"trigger_id": on_time, "status": "succeeded"}), 15,
             what="the on-time trigger to run")
    behind, proxy = stop_and_import_behind(cluster, template, 4, 120)
    proxy.delay = 0.05
    restarted = time.time()
    restart_behind(cluster, proxy)
    caught = {"scheduled_for": {"$gt": dt.datetime.fromtimestamp(restarted, dt.timezone.utc)}}
    wait_for(lambda: all(cluster.db.jobs.find_one({"trigger_id": t, **caught}) for t in behind), 90,
             interval=0.5, what="the catch-up of 480 fires")
    caught_up = time.time()
    time.sleep(3)
    behind_jobs = list(cluster.db.jobs.find({"trigger_id": {"$in": behind}}))
    assert len(behind_jobs) >= 4 * 120, len(behind_jobs)
    began = min(j["created_at"] for j in behind_jobs).timestamp()
    assert caught_up - began > 4, f"the catch-up took {caught_up - began:.1f} s: too short to tell"
    lags = sorted((j["started_at"] - j["scheduled_for"]).total_seconds()
                  for j in cluster.db.jobs.find({"trigger_id": on_time})
                  if j.get("started_at") and began + 1 <= j["scheduled_for"].timestamp() < caught_up)
    print(f"catch-up {caught_up - began:.1f} s; on-time lags {lags}")
    assert len(lags) >= caught_up - began - 3, \
        f"the on-time trigger ran {len(lags)} fires due during the {caught_up - began:.1f}-s catch-up"
    assert lags[-1] < 1.5, f"fires due on time waited for the catch-up: lags {lags}"


# An insert of job documents (claims) as it goes over the wire.
JOB_INSERT = b"insert\x00\x05\x00\x00\x00jobs\x00"


def test_triggers_gained_together_each_fire_before_any_catches_up(cluster):
    """A master that gains partitions loads their triggers a batch of
    documents at a time, the loop taking a turn between two; a partition
    being loaded fires nothing, so a turn puts its due triggers off a
    moment. With a catch-up to make (fire_all), each gained trigger's first
    missed fire is claimed in the first batches, not after the triggers
    read later have caught up on all of theirs; and each batch's jobs go
    to the workers once claimed, not after the pass's last batch. Here
    300 triggers imported while the master was stopped, each 20 fires
    behind, every claim insert held 50 ms."""
    cluster.start(masters=1, workers=1, worker_env={"SKED_WORKER_SLOTS": "8000"})
    template = template_trigger(cluster)
    ids, proxy = stop_and_import_behind(cluster, template, 300, 20)
    proxy.slow = (JOB_INSERT, 0.05)
    restarted = dt.datetime.now(dt.timezone.utc)
    restart_behind(cluster, proxy)
    missed = {"trigger_id": {"$in": ids}, "scheduled_for": {"$lt": restarted}}
    wait_for(lambda: cluster.db.jobs.count_documents(missed) >= 300 * 20, 90, interval=0.5,
             what="the catch-up of 6,000 fires")
    wait_for(lambda: cluster.db.jobs.count_documents(dict(missed, started_at={"$exists": True}))
             >= 300 * 20, 60, interval=0.5, what="the catch-up's jobs started")
    claimed, waits = {}, []
    for j in cluster.db.jobs.find(missed, {"trigger_id": 1, "created_at": 1, "started_at": 1}):
        claimed.setdefault(j["trigger_id"], []).append(j["created_at"].timestamp())
        waits.append((j["started_at"] - j["created_at"]).total_seconds())
    waits.sort()
    assert len(claimed) == 300
    firsts = sorted(min(v) for v in claimed.values())
    began, ended = firsts[0], max(max(v) for v in claimed.values())
    spread = firsts[-1] - began
    print(f"catch-up {ended - began:.2f} s; first fires claimed over {spread:.2f} s; "
          f"decided to started p50 {waits[len(waits) // 2]:.3f} s, max {waits[-1]:.3f} s")
    assert ended - began > 1, f"the catch-up took {ended - began:.2f} s: too short to tell"
    assert spread < 0.2 * (ended - began), \
        f"the last gained trigger's first fire came {spread:.2f} s into a {ended - began:.2f}-s catch-up"
    assert waits[len(waits) // 2] < 0.18, \
        f"the catch-up's jobs started {waits[len(waits) // 2]:.3f} s after their batch (median)"
