"""Cost of the store calls the two schedulers make, by collection size, on
a fresh FerretDB (SQLite) on loopback: what docs/BENCHMARKS.md cites.

    .venv/bin/python tests/bench/store_ops.py [SIZE ...]     (default 100 1000 5000)
    .venv/bin/python tests/bench/store_ops.py --rates [SECONDS]   (default 8)

--rates: the store's sustained rate of a fire's two writes, each for
SECONDS: sked's outcome update (its `$set` and `$push` of `attempts`, in
ordered bulks of 16 by `_id`, what the status writer sends) from 1, 2
and 4 connections at once, and its claim (insert_many of 16 job
documents, unordered), on 20,000 jobs with sked's secondary indexes and
the `_id` index. Then what an outcome would cost written another way:
an update by `_id` that changes nothing (FerretDB then skips its
write: what is left is finding and matching the document), and the outcome's
fields inserted as documents of their own (insert_many of 16, unordered)
into a collection beside the jobs.

For each size N, a collection of N documents shaped like sked's finished
jobs, then the mean time of: insert_one; find_one by _id; update_one by
_id alone; update_one by _id plus `attempt` and `status` conditions (what
sked's status updates used before they became `_id`-only); and Agenda's
lock query (find_one_and_update with its name/$or filter and
nextRunAt/priority sort, matching nothing). Finds and updates pick
documents spread over the whole collection: without deploy/store-indexer.py
FerretDB's SQLite table has no index its `_id` queries can use, so a
document near the start of the table is found sooner than one near its end.
Each size is measured twice: as FerretDB leaves the table ("scan"), then
after `store-indexer.py --once` ("index"). Last, the query plans SQLite
makes for FerretDB's `_id` lookup, read from the store's own database file.
"""
import datetime
import glob
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pymongo

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import conftest  # noqa: E402

REPEAT = 30
INDEXER = os.path.join(conftest.ROOT, "deploy", "store-indexer.py")


def timed(fn):
    t = time.perf_counter()
    for i in range(REPEAT):
        fn(i)
    return (time.perf_counter() - t) / REPEAT * 1000


def job_doc(_id, now, later):
    """A finished noop job as sked stores it, plus Agenda's fields."""
    return {"_id": _id, "trigger_id": "trigger-0001", "owner": "bench", "partition": 7,
            "kind": "scheduled", "task_type": "noop", "scheduled_for": now, "status": "succeeded",
            "attempt": 1, "created_at": now, "run_at": now, "epoch": 3, "master": "m1",
            "misfire": False, "started_at": now, "finished_at": now, "worker_id": "w1",
            "duration_ms": 3, "result": {"exit_code": 0, "output": "ok"},
            "attempts": [{"attempt": 1, "status": "succeeded", "worker_id": "w1", "started_at": now,
                          "finished_at": now, "duration_ms": 3, "exit_code": 0, "error": None}],
            "name": "noop", "nextRunAt": later, "lockedAt": None, "priority": 0}


def query_plan(store_dir, collection):
    """SQLite's plan for the statements FerretDB runs for an _id lookup."""
    for path in glob.glob(os.path.join(store_dir, "**", "*.sqlite"), recursive=True):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?",
                                        (collection + "_%",)):
                for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                          (table,)):
                    print(f"index: {sql}")
                for verb, plan in conftest.id_lookup_plans(con, table).items():
                    print(f"plan: {verb} {table} WHERE <_id> -> {plan}")
        finally:
            con.close()


def rates(seconds):
    """Writes a second the store sustains: outcome updates by connections, claims."""
    now = datetime.datetime.now(datetime.timezone.utc)
    n = 20000
    with tempfile.TemporaryDirectory() as d:
        store = conftest.Store(d, indexer=False)
        url = f"mongodb://127.0.0.1:{store.port}/"
        client = pymongo.MongoClient(url)
        try:
            jobs = client.rates.jobs
            jobs.create_index([("trigger_id", 1), ("scheduled_for", -1)])
            jobs.create_index([("status", 1), ("run_at", 1)])
            jobs.create_index([("created_at", 1)])
            for k in range(0, n, 1000):
                jobs.insert_many([job_doc(f"j{i}", now, now) for i in range(k, k + 1000)])
            subprocess.run([sys.executable, INDEXER, d, "--once"], check=True, stdout=subprocess.DEVNULL)
            outcome = {"$set": {"status": "succeeded", "finished_at": now, "worker_id": "w2",
                                "duration_ms": 4, "result": {"exit_code": 0}},
                       "$push": {"attempts": {"attempt": 1, "status": "succeeded", "worker_id": "w2"}}}

            def run(conns, op):
                counts, stop = [0] * conns, time.time() + seconds

                def one(c):
                    cl = pymongo.MongoClient(url)
                    col, r = cl.rates.jobs, 0
                    while time.time() < stop:
                        ids = [f"j{((r * 16 + i) * conns + c) * 7 % n}" for i in range(16)]
                        if op == "same":  # every job already holds these values
                            same = {"$set": {"status": "succeeded", "owner": "bench"}}
                            col.bulk_write([pymongo.UpdateOne({"_id": j}, same) for j in ids])
                        elif op == "outcome insert":
                            cl.rates.outcomes.insert_many([dict(outcome["$set"], _id=f"o{c}-{r}-{i}")
                                                           for i in range(16)], ordered=False)
                        elif op == "update":
                            col.bulk_write([pymongo.UpdateOne({"_id": j}, outcome) for j in ids])
                        else:
                            col.insert_many([job_doc(f"c{c}-{r}-{i}", now, now) for i in range(16)],
                                            ordered=False)
                        r += 1
                        counts[c] += 16
                    cl.close()
                threads = [threading.Thread(target=one, args=(c,)) for c in range(conns)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return sum(counts) / seconds

            for conns in (1, 2, 4):
                print(f"outcome updates, {conns} connection(s): {run(conns, 'update'):.0f} a second", flush=True)
            print(f"claims (inserts), 1 connection: {run(1, 'insert'):.0f} a second", flush=True)
            print(f"outcome updates that change nothing, 1 connection: {run(1, 'same'):.0f} a second", flush=True)
            print(f"outcomes inserted beside the jobs, 1 connection: {run(1, 'outcome insert'):.0f} a second",
                  flush=True)
        finally:
            client.close()
            store.close()


def main():
    if sys.argv[1:2] == ["--rates"]:
        return rates(float(sys.argv[2]) if len(sys.argv) > 2 else 8)
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 5000]
    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(days=1)
    lock_q = {"name": "noop", "disabled": {"$ne": True},
              "$or": [{"lockedAt": {"$eq": None}, "nextRunAt": {"$lte": now}},
                      {"lockedAt": {"$lte": now - datetime.timedelta(minutes=10)}}]}
    print("docs  _id    insert  find_id  upd_id  upd_id+attempt+status  agenda_lock_query   (ms per call)")
    with tempfile.TemporaryDirectory() as d:
        store = conftest.Store(d, indexer=False)
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{store.port}/")
        try:
            for n in sizes:
                db = client[f"ops{n}"]
                db.jobs.insert_many([job_doc(f"j{i}", now, later) for i in range(n)])
                spread = [f"j{(i * 7919) % n}" for i in range(2 * REPEAT)]
                for how in ("scan", "index"):
                    if how == "index":
                        if n == sizes[-1]:
                            query_plan(d, "jobs")
                        subprocess.run([sys.executable, INDEXER, d, "--once"], check=True,
                                       stdout=subprocess.DEVNULL)
                    ins = timed(lambda i: db.jobs.insert_one({"_id": f"{how}{i}", "attempt": 1,
                                                              "status": "queued"}))
                    fnd = timed(lambda i: db.jobs.find_one({"_id": spread[i]}))
                    upd = timed(lambda i: db.jobs.update_one({"_id": spread[i]}, {"$set": {"status": "running"}}))
                    updf = timed(lambda i: db.jobs.update_one(
                        {"_id": spread[i + REPEAT], "attempt": {"$lte": 1},
                         "status": {"$in": ["queued", "retrying", "running"]}}, {"$set": {"status": "running"}}))
                    lock = timed(lambda i: db.jobs.find_one_and_update(
                        lock_q, {"$set": {"lockedAt": now}}, sort=[("nextRunAt", 1), ("priority", -1)]))
                    print(f"{n:5d} {how:5s} {ins:7.1f} {fnd:8.1f} {upd:7.1f} {updf:22.1f} {lock:18.1f}",
                          flush=True)
                if n == sizes[-1]:
                    query_plan(d, "jobs")
                client.drop_database(f"ops{n}")
        finally:
            client.close()
            store.close()


if __name__ == "__main__":
    main()
