"""Scans a sked database and reports what must never happen:

- duplicates: two jobs for one (trigger, scheduled_for);
- gaps: an INTERVAL trigger's fire time, between its first and last job,
  with no job at all (neither run nor recorded as skipped);
- stuck: a job in a non-final state (queued, running, retrying) older than
  --stuck-after seconds that no live worker reports running.

    python tests/tools/check_invariants.py mongodb://127.0.0.1:27018/sked [--stuck-after 300]
    make check-invariants SKED_MONGO_URI=...

Exit code 0 when clean, 1 when anything is reported. Tests import check().
"""
import argparse
import datetime as dt
import sys
from collections import defaultdict

import pymongo

NON_FINAL = ("queued", "running", "retrying")


def jobs_seen(db, filt=None, projection=None, **kw):
    """db.jobs.find(filt, projection) as readers see the jobs: an outcome
    record in job_results not folded into its job yet is laid over it
    (its `set` fields; the attempt entry is appended to `attempts` when
    the projection asks for them)."""
    records = {r["_id"]: r for r in db.job_results.find({"_id": {"$exists": True}})}
    for j in getattr(db.jobs, "_coll", db.jobs).find(filt or {}, projection, **kw):
        r = records.get(j["_id"])
        if r:
            want = projection is None or "attempts" in projection
            j.update({k: v for k, v in r.get("set", {}).items()
                      if projection is None or k in projection})
            if want and r.get("push") and r["push"] not in j.get("attempts", []):
                j["attempts"] = j.get("attempts", []) + [r["push"]]
        yield j


def check(db, stuck_after=300.0, now=None):
    now = now or dt.datetime.now(dt.timezone.utc)
    report = {"duplicates": [], "gaps": [], "stuck": [], "jobs": 0, "triggers": 0}
    by_trigger = defaultdict(list)
    for j in jobs_seen(db, {}, {"trigger_id": 1, "scheduled_for": 1, "status": 1, "created_at": 1,
                                "run_at": 1, "kind": 1}):
        report["jobs"] += 1
        if j.get("kind", "scheduled") == "scheduled":
            by_trigger[j["trigger_id"]].append(j)
        if j["status"] in NON_FINAL:
            since = j.get("run_at") or j.get("created_at")
            if since and since.tzinfo is None:
                since = since.replace(tzinfo=dt.timezone.utc)
            if since and (now - since).total_seconds() > stuck_after:
                report["stuck"].append((j["_id"], j["status"]))
    report["triggers"] = len(by_trigger)
    triggers = {t["_id"]: t for t in db.triggers.find({"_id": {"$in": list(by_trigger)}},
                                                       {"schedule": 1})}
    for tid, jobs in by_trigger.items():
        seen = defaultdict(int)
        for j in jobs:
            seen[j["scheduled_for"]] += 1
        report["duplicates"] += [(tid, t) for t, n in seen.items() if n > 1]
        sched = (triggers.get(tid) or {}).get("schedule") or {}
        period = sched.get("period_ms")
        if sched.get("kind") != "interval" or not period:
            continue
        times = sorted(seen)
        step = dt.timedelta(milliseconds=period)
        for a, b in zip(times, times[1:]):
            missing = round((b - a) / step) - 1
            if missing > 0:
                report["gaps"].append((tid, a + step, missing))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("uri")
    ap.add_argument("--stuck-after", type=float, default=300.0)
    args = ap.parse_args()
    client = pymongo.MongoClient(args.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    db = client.get_default_database(default="sked")
    r = check(db, args.stuck_after)
    print(f"jobs {r['jobs']}  triggers {r['triggers']}  duplicates {len(r['duplicates'])}  "
          f"gaps {len(r['gaps'])}  stuck {len(r['stuck'])}")
    for kind in ("duplicates", "gaps", "stuck"):
        for item in r[kind][:50]:
            print(f"{kind[:-1] if kind != 'stuck' else 'stuck'}: {item}")
    return 1 if r["duplicates"] or r["gaps"] or r["stuck"] else 0


if __name__ == "__main__":
    sys.exit(main())
