"""Cost of the store calls the two schedulers make, by collection size, on
a fresh FerretDB (SQLite) on loopback: what docs/BENCHMARKS.md cites.

    .venv/bin/python tests/bench/store_ops.py [SIZE ...]     (default 100 1000 5000)

For each size N, a collection of N job-like documents, then the mean time
of: insert_one; find_one by _id; update_one by _id alone; update_one by
_id plus `attempt` and `status` conditions (sked's status update filter,
master/dispatch.c); and Agenda's lock query (find_one_and_update with its
name/$or filter and nextRunAt/priority sort, matching nothing).
"""
import datetime
import os
import sys
import tempfile
import time

import pymongo

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import conftest  # noqa: E402

REPEAT = 30


def timed(fn):
    t = time.perf_counter()
    for i in range(REPEAT):
        fn(i)
    return (time.perf_counter() - t) / REPEAT * 1000


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 5000]
    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(days=1)
    lock_q = {"name": "noop", "disabled": {"$ne": True},
              "$or": [{"lockedAt": {"$eq": None}, "nextRunAt": {"$lte": now}},
                      {"lockedAt": {"$lte": now - datetime.timedelta(minutes=10)}}]}
    print("docs   insert  find_id  upd_id  upd_id+attempt+status  agenda_lock_query   (ms per call)")
    with tempfile.TemporaryDirectory() as d:
        store = conftest.Store(d)
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{store.port}/")
        try:
            for n in sizes:
                db = client[f"ops{n}"]
                db.jobs.insert_many([{"_id": f"j{i}", "attempt": 1, "status": "queued", "name": "noop",
                                      "nextRunAt": later, "lockedAt": None, "priority": 0,
                                      "pad": "x" * 300} for i in range(n)])
                ins = timed(lambda i: db.jobs.insert_one({"_id": f"new{i}", "attempt": 1, "status": "queued"}))
                fnd = timed(lambda i: db.jobs.find_one({"_id": f"j{i}"}))
                upd = timed(lambda i: db.jobs.update_one({"_id": f"j{i}"}, {"$set": {"status": "running"}}))
                updf = timed(lambda i: db.jobs.update_one(
                    {"_id": f"j{i + REPEAT}", "attempt": {"$lte": 1},
                     "status": {"$in": ["queued", "retrying", "running"]}}, {"$set": {"status": "running"}}))
                lock = timed(lambda i: db.jobs.find_one_and_update(
                    lock_q, {"$set": {"lockedAt": now}}, sort=[("nextRunAt", 1), ("priority", -1)]))
                print(f"{n:5d} {ins:7.1f} {fnd:8.1f} {upd:7.1f} {updf:22.1f} {lock:18.1f}", flush=True)
                client.drop_database(f"ops{n}")
        finally:
            client.close()
            store.stop()


if __name__ == "__main__":
    main()
