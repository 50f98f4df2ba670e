"""A trigger's state (how far it has fired) is saved SKED_STATE_SAVE_MS
after its fire when the master is idle, once for the fires in between:
saving every 1-s trigger after every fire took most of the store's time
at 1,000 fires a second, and claims queued behind the saves. The API
derives a next fire that a state not yet saved would show in the past,
and a master that dies with unsaved states costs its successor refused
claims only: no fire runs twice, none is lost."""
import datetime as dt
import re
import signal
import time

from conftest import free_port, wait_for, zulu
from test_metrics import scrape, val

SAVES = ("save_state", "save_states", "insert_states")


def _trigger(cluster, name, start=None, execution=None, **config):
    tc = {"interval": 1, "unit": "seconds", **config}
    if start:
        tc["start_at"] = zulu(start)
    r = cluster.api("POST", "/triggers/", json={
        "name": name, "trigger_config": tc,
        "execution_config": {"task_type": "noop", **(execution or {})}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _saves(maddr):
    samples, _ = scrape(f"http://{maddr}/metrics")
    return sum(val(samples, "sked_store_operation_duration_seconds_count", op=op) or 0 for op in SAVES)


def _behind_s(cluster, tid):
    """How far the saved last_fire_at is behind the trigger's newest fire
    claimed (seconds), or None before both exist."""
    st = cluster.db.trigger_state.find_one({"_id": tid})
    newest = max((j["scheduled_for"] for j in cluster.db.jobs.find({"trigger_id": tid})), default=None)
    return (newest - st["last_fire_at"]).total_seconds() if st and newest else None


def _state_lag_over(cluster, tid, seconds):
    """Polls the trigger's state for `seconds`: how far behind its newest
    fire it was at most."""
    worst, end = 0.0, time.time() + seconds
    while time.time() < end:
        worst = max(worst, _behind_s(cluster, tid) or 0.0)
        time.sleep(0.1)
    return worst


def _saves_of_a_1s_trigger(cluster, save_ms, seconds):
    """One master with SKED_STATE_SAVE_MS=save_ms and a 1-s trigger: its
    state saves over `seconds` after the first, and how far the state was
    behind its newest fire at most."""
    maddr = f"127.0.0.1:{free_port()}"
    cluster.start(masters=1, workers=1,
                  master_env={"SKED_METRICS_ADDR": maddr, "SKED_STATE_SAVE_MS": save_ms})
    tid = _trigger(cluster, "every-second")
    wait_for(lambda: cluster.db.trigger_state.find_one({"_id": tid}), 15, what="the first state")
    before = _saves(maddr)
    worst = _state_lag_over(cluster, tid, seconds)
    saves = _saves(maddr) - before
    print(f"{seconds} s of a 1-s trigger: {saves:.0f} state saves; "
          f"state at most {worst:.1f} s behind its newest fire")
    return saves, worst


def test_an_idle_master_saves_a_state_once_for_the_fires_in_between(cluster):
    saves, worst = _saves_of_a_1s_trigger(cluster, "3000", 12)
    # Twelve fires: one save per three seconds or so, never one per fire.
    assert 2 <= saves <= 6, saves
    # Saved 3 s after the first fire not saved, on the loop's next turn.
    assert worst <= 5, worst


def test_state_save_ms_0_saves_every_fire_at_once(cluster):
    saves, worst = _saves_of_a_1s_trigger(cluster, "0", 8)
    assert saves >= 6, saves
    assert worst <= 1.5, worst


def test_the_api_derives_a_next_fire_the_saved_state_has_passed(cluster):
    cluster.start(masters=1, workers=1, master_env={"SKED_STATE_SAVE_MS": "6000"})
    tid = _trigger(cluster, "every-second")
    wait_for(lambda: cluster.db.trigger_state.find_one({"_id": tid}), 15, what="the first state")
    passed, seen, end = 0, 0, time.time() + 8
    while time.time() < end:
        asked = dt.datetime.now(dt.timezone.utc)
        st = cluster.db.trigger_state.find_one({"_id": tid})
        r = cluster.api("GET", f"/triggers/{tid}")
        assert r.status_code == 200, r.text
        body = r.json()
        nxt = dt.datetime.fromisoformat(body["next_fire_at"].replace("Z", "+00:00"))
        assert nxt >= asked - dt.timedelta(milliseconds=1), (asked, body["next_fire_at"])
        # A fire claimed ahead (500 ms) is not the next any more.
        assert nxt <= asked + dt.timedelta(seconds=1, milliseconds=505), (asked, body["next_fire_at"])
        assert body["last_fire_at"] is not None
        seen += 1
        passed += st["next_fire_at"].replace(tzinfo=dt.timezone.utc) < asked
        time.sleep(0.2)
    print(f"{seen} reads, {passed} with the saved next fire passed")
    # The state stood behind for most of the reads: the derivation was used.
    assert passed >= seen // 3, (passed, seen)


def test_a_killed_masters_unsaved_states_cost_its_successor_refused_claims_only(cluster):
    """States 10 s behind: the successor claims again what the dead master
    had claimed (fire_all catches every fire up), is refused by the job
    `_id`, and runs only the fires nobody claimed. (Overlap `allow`: the
    dead master's last fire, claimed ahead, is `queued` in the store until
    the successor adopts it, and the default policy would skip the fires
    behind it; test_takeover.py has that.)"""
    env = {"SKED_STATE_SAVE_MS": "10000", "SKED_LEASE_TTL_MS": "3000"}
    cluster.start(masters=2, workers=1, master_env=env)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=3)
    ids = [_trigger(cluster, f"t{i}", start=start, misfire_policy="fire_all",
                    execution={"overlap_policy": "allow"}) for i in range(3)]

    def behind():
        return all((_behind_s(cluster, t) or 0) >= 3 for t in ids) or None
    wait_for(behind, 40, interval=0.1, what="every state saved and 3 s behind its newest fire")
    holder = {t: max(cluster.db.jobs.find({"trigger_id": t}), key=lambda j: j["scheduled_for"])["master"]
              for t in ids}
    names = list(holder.values())
    dead = max(cluster.masters, key=lambda m: names.count(m.name))
    survivor = next(m for m in cluster.masters if m is not dead)
    held = [t for t in ids if holder[t] == dead.name]
    ran_before = {j["_id"]: j for j in cluster.db.jobs.find({"trigger_id": {"$in": ids}})}
    dead.popen.send_signal(signal.SIGKILL)
    dead.popen.wait()
    cluster.checked_stop.append(dead)
    killed = dt.datetime.now(dt.timezone.utc)
    after = killed + dt.timedelta(seconds=8)

    def fired_again():
        return all(cluster.db.jobs.find_one({"trigger_id": t, "scheduled_for": {"$gte": after},
                                             "status": "succeeded"}) for t in ids) or None
    wait_for(fired_again, 40, interval=0.5, what="the triggers firing under the survivor")
    time.sleep(1.5)
    # Every grid point from the first fire to the last has one job, run once.
    for tid in ids:
        jobs = sorted(cluster.db.jobs.find({"trigger_id": tid}), key=lambda j: j["scheduled_for"])
        grid = [j["scheduled_for"] for j in jobs]
        assert grid == [grid[0] + dt.timedelta(seconds=i) for i in range(len(grid))], f"a gap: {grid}"
        for j in jobs[:-2]:  # the newest may still be on its way
            assert j["status"] == "succeeded" and j["attempt"] == 1, j
            assert len(j.get("attempts") or [1]) == 1, j
    # The dead master's jobs are as it left them (started once, by it).
    for jid, was in ran_before.items():
        now = cluster.db.jobs.find_one({"_id": jid})
        if was.get("started_at"):
            assert now["started_at"] == was["started_at"] and now["master"] == was["master"], (was, now)
    refused = len(re.findall(r"fire already claimed elsewhere", survivor.text()))
    print(f"survivor refused {refused} claims the dead master had made ({len(held)} triggers)")
    assert refused >= len(held) * 2, refused
