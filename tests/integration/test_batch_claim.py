"""Fires due at the same time are claimed by one unordered insert: each
fire the store admits runs once, a fire whose job document already exists
(claimed by someone else) is left alone while the rest of its batch runs,
and the master makes far fewer claim round trips than fires. The states
of triggers that fired together are saved together."""
import datetime as dt
import time

from conftest import free_port, wait_for, zulu
from test_metrics import scrape, val

N = 12          # triggers, all on the same 2-second grid
PERIOD_S = 2


def test_fires_due_together_are_claimed_in_one_insert(cluster):
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1, master_env={"SKED_METRICS_ADDR": maddr})
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
