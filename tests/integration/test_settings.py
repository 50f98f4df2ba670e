"""A master keeps one copy of the settings triggers share (task type,
parameters, policies, limits, bounds, zone: master/sched.c conf_t). These
tests hold it to its word: triggers that differ in a single setting each
run by their own, and a trigger that changes its settings or goes leaves
the others' copy as it was."""
import datetime as dt

from conftest import interval_trigger, wait_for

FINAL = ("succeeded", "failed", "timed_out", "lost", "cancelled")


def final_jobs(cluster, ids, timeout):
    """The one job of each trigger in ids, once every one of them is final."""
    def done():
        jobs = {j["trigger_id"]: j for j in cluster.db.jobs.find({"trigger_id": {"$in": ids}})}
        return jobs if len(jobs) == len(ids) and all(
            j["status"] in FINAL for j in jobs.values()) else None
    return wait_for(done, timeout=timeout, interval=0.2, what="every trigger's job final")


def test_triggers_differing_in_one_setting_each_run_by_their_own(cluster):
    cluster.start(masters=1, workers=1)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=3)
    base = {"task_type": "fail", "parameters": {"message": "base"},
            "retry_policy": {"max_retries": 1, "initial_delay": 0.5, "backoff_multiplier": 2,
                             "max_delay": 300, "jitter": False}}

    def but(**changes):
        ec = {**base, "retry_policy": dict(base["retry_policy"])}
        for k, v in changes.items():
            if k in ec["retry_policy"]:
                ec["retry_policy"][k] = v
            else:
                ec[k] = v
        return ec
    slow = {"task_type": "sleep", "parameters": {"seconds": 3}}
    settings = {"base": base, "twin": but(), "parameters": but(parameters={"message": "other"}),
                "task_type": but(task_type="noop"), "max_retries": but(max_retries=0),
                "initial_delay": but(initial_delay=3), "slow": slow,
                "slow_capped": {**slow, "max_execution_time": 1}}
    ids = {name: interval_trigger(cluster, name, ec, start, 3600) for name, ec in settings.items()}
    jobs = final_jobs(cluster, list(ids.values()), timeout=60)
    job = {name: jobs[tid] for name, tid in ids.items()}

    def gap(j):
        a = j["attempts"]
        return (a[1]["started_at"] - a[0]["started_at"]).total_seconds()

    for name in ("base", "twin", "initial_delay"):
        j = job[name]
        assert (j["status"], j["attempt"]) == ("failed", 2), (name, j)
        assert j["parameters"] == {"message": "base"}, (name, j)
        assert [a["error"] for a in j["attempts"]] == ["base", "base"], (name, j)
    assert gap(job["base"]) < 2.5 and gap(job["twin"]) < 2.5, job
    assert gap(job["initial_delay"]) >= 2.9, job["initial_delay"]
    j = job["parameters"]
    assert (j["status"], j["attempt"], j["parameters"]) == ("failed", 2, {"message": "other"}), j
    assert j["attempts"][0]["error"] == "other", j
    assert (job["task_type"]["status"], job["task_type"]["task_type"]) == ("succeeded", "noop")
    assert (job["max_retries"]["status"], job["max_retries"]["attempt"]) == ("failed", 1)
    assert job["slow"]["status"] == "succeeded", job["slow"]
    assert job["slow_capped"]["status"] == "timed_out", job["slow_capped"]


def test_a_trigger_that_changes_or_goes_leaves_the_shared_settings_as_they_were(cluster):
    cluster.start(masters=1, workers=1)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
    same = {"task_type": "noop", "parameters": {"k": 1}}
    a, b, c = (interval_trigger(cluster, name, same, start, 1) for name in "abc")

    def params_since(tid, t):
        return [j.get("parameters") for j in cluster.db.jobs.find(
            {"trigger_id": tid, "scheduled_for": {"$gte": t}}).sort("scheduled_for", 1)]

    wait_for(lambda: all(params_since(t, start) for t in (a, b, c)), timeout=20,
             what="a first fire of each trigger")
    # b takes settings of its own, c goes: a's shared copy stays what it was.
    r = cluster.api("PATCH", f"/triggers/{b}",
                    json={"execution_config": {"task_type": "noop", "parameters": {"k": 2}}})
    assert r.status_code == 200, r.text
    assert cluster.api("DELETE", f"/triggers/{c}").status_code == 204
    changed = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    wait_for(lambda: len(params_since(a, changed)) >= 3 and len(params_since(b, changed)) >= 3,
             timeout=20, what="three fires of a and b after the change")
    assert set(map(str, params_since(a, changed))) == {str({"k": 1})}
    assert set(map(str, params_since(b, changed))) == {str({"k": 2})}
    # b back to the settings a has: they share again, and both run with them.
    r = cluster.api("PATCH", f"/triggers/{b}", json={"execution_config": same})
    assert r.status_code == 200, r.text
    again = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    wait_for(lambda: len(params_since(b, again)) >= 2, timeout=20, what="b's fires after")
    assert set(map(str, params_since(a, again) + params_since(b, again))) == {str({"k": 1})}
    assert cluster.api("DELETE", f"/triggers/{a}").status_code == 204
    assert cluster.api("DELETE", f"/triggers/{b}").status_code == 204
    master = cluster.masters[0]
    assert master.alive(), master.text()
