"""Claim ahead, start on time: a fire's job is claimed and sent to its
worker SKED_FIRE_AHEAD_MS before its time, and the worker starts it at that
time, not before. A trigger that still has a job running, with an overlap
policy other than `allow`, is decided at its fire time: what runs then is
what the policy looks at. `0` claims at the fire time."""
import datetime as dt

from conftest import wait_for, zulu

PERIOD_S = 2


def _start_trigger(cluster, name, execution_config):
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=5)
    r = cluster.api("POST", "/triggers/", json={
        "name": name,
        "trigger_config": {"interval": PERIOD_S, "unit": "seconds", "start_at": zulu(start)},
        "execution_config": execution_config})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _jobs(cluster, tid, n):
    """The trigger's first n fires, once all of them are final."""
    def done():
        jobs = list(cluster.db.jobs.find({"trigger_id": tid}).sort("scheduled_for", 1))
        return jobs[:n] if len(jobs) >= n and all(
            j["status"] in ("succeeded", "skipped") for j in jobs[:n]) else None
    return wait_for(done, 30, interval=0.3, what=f"{n} final fires of {tid}")


def _ms(t):
    return t.timestamp() * 1000


def test_fires_are_claimed_ahead_and_start_on_their_time(cluster):
    cluster.start(masters=1, workers=1)  # SKED_FIRE_AHEAD_MS: the default, 500
    tid = _start_trigger(cluster, "ahead", {"task_type": "noop"})
    for j in _jobs(cluster, tid, 3):
        sf = _ms(j["scheduled_for"])
        assert j["status"] == "succeeded", j
        # Claimed about 500 ms before its time (its job document written then).
        assert _ms(j["created_at"]) <= sf - 100, j
        # Held by the worker until its time, then started.
        assert sf <= _ms(j["started_at"]) < sf + 2000, j


def test_without_claiming_ahead_a_fire_is_claimed_at_its_time(cluster):
    cluster.start(masters=1, workers=1, master_env={"SKED_FIRE_AHEAD_MS": "0"})
    tid = _start_trigger(cluster, "at-time", {"task_type": "noop"})
    for j in _jobs(cluster, tid, 2):
        sf = _ms(j["scheduled_for"])
        assert j["status"] == "succeeded", j
        assert _ms(j["created_at"]) >= sf, j
        assert _ms(j["started_at"]) >= sf, j


def test_overlap_is_decided_at_the_fire_time_not_when_looked_at_ahead(cluster):
    # Looked at 1.5 s ahead, each fire finds the previous one (1 s of sleep)
    # still running; at its own time that one has ended, so `forbid` lets
    # every fire run.
    cluster.start(masters=1, workers=1, master_env={"SKED_FIRE_AHEAD_MS": "1500"})
    tid = _start_trigger(cluster, "overlap", {"task_type": "sleep", "parameters": {"seconds": 1},
                                              "overlap_policy": "forbid"})
    jobs = _jobs(cluster, tid, 4)
    skipped = [j for j in jobs if j["status"] == "skipped"]
    assert not skipped, skipped
    for j in jobs[1:]:  # the first had nothing running before it: claimed ahead
        assert _ms(j["started_at"]) >= _ms(j["scheduled_for"]), j
