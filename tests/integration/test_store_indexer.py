"""The embedded store's `_id` index (deploy/store-indexer.py): FerretDB on
SQLite runs its finds, updates and deletes by `_id` as full scans unless the
index its statements can use exists. The session's store runs the indexer
as `make run` does; these tests read the plans SQLite makes for FerretDB's
own statements from the store's database files."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pymongo

from conftest import ROOT, id_lookup_plans, wait_for

INDEXER = os.path.join(ROOT, "deploy", "store-indexer.py")
SKED_COLLECTIONS = {"triggers", "trigger_state", "jobs", "locks", "members", "audit"}


def id_plans(store_dir, db_name):
    """{collection: SQLite's plan for FerretDB's update by `_id`} of one
    database, as FerretDB v1.24 writes that statement."""
    path = os.path.join(store_dir, f"{db_name}.sqlite")
    if not os.path.exists(path):
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        out = {}
        for name, table in con.execute("SELECT name, table_name FROM _ferretdb_collections"):
            out[name] = id_lookup_plans(con, table)["UPDATE"]
        return out
    finally:
        con.close()


def all_indexed(store_dir, db_name, names):
    plans = id_plans(store_dir, db_name)
    if not names <= set(plans):
        return False
    return all("USING INDEX" in p for p in plans.values()) and plans  # the change windows too


def test_every_sked_collection_is_looked_up_by_id_through_an_index(cluster):
    cluster.start(masters=1, workers=1)
    r = cluster.api("POST", "/triggers/", json={
        "name": "indexed", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    plans = wait_for(lambda: all_indexed(cluster.store.dir, cluster.db_name, SKED_COLLECTIONS), 20,
                     what="an _id index on every sked collection")
    assert all("__sked_id" in p for p in plans.values()), plans
    # The cluster works on the indexed tables: jobs run and their statuses land.
    wait_for(lambda: cluster.db.jobs.count_documents({"trigger_id": r.json()["id"], "status": "succeeded"}) >= 2,
             20, what="two runs recorded as succeeded")


def test_a_collection_created_later_or_again_gets_the_index_and_finds_stay_exact(store):
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{store.port}/", serverSelectionTimeoutMS=5000)
    db_name = "ix_" + uuid.uuid4().hex[:10]
    db = client[db_name]
    try:
        for round_ in range(2):
            db.later.insert_many([{"_id": f"d{i}", "n": i} for i in range(500)] +
                                 [{"_id": i, "n": -i} for i in range(1, 4)])
            wait_for(lambda: all_indexed(store.dir, db_name, {"later"}), 10,
                     what=f"the index on a new collection (round {round_})")
            # Lookups through the index give what a scan gave: strings and
            # numbers stay apart, a missing _id matches nothing.
            assert db.later.find_one({"_id": "d321"})["n"] == 321
            assert db.later.find_one({"_id": 2})["n"] == -2
            assert db.later.find_one({"_id": "2"}) is None
            assert db.later.update_one({"_id": "d7"}, {"$set": {"n": 70}}).matched_count == 1
            assert db.later.update_one({"_id": "d9999"}, {"$set": {"n": 1}}).matched_count == 0
            assert db.later.find_one({"_id": "d7"})["n"] == 70
            assert db.later.delete_one({"_id": "d8"}).deleted_count == 1
            assert db.later.count_documents({}) == 502
            db.later.drop()
    finally:
        client.drop_database(db_name)
        client.close()


def test_the_indexer_ends_cleanly_on_sigterm_and_with_its_parent(tmp_path):
    proc = subprocess.Popen([sys.executable, INDEXER, str(tmp_path), "--interval", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0, proc.stdout.read()
    # Started by a shell that exits a second later: the indexer notices and ends.
    sh = subprocess.run(["bash", "-c", f'"{sys.executable}" "{INDEXER}" "{tmp_path}" --interval 0.1 '
                         '>/dev/null 2>&1 & echo $!; sleep 1'], capture_output=True, text=True, timeout=10)
    pid = int(sh.stdout.strip())

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:   # reaped by init, or a zombie
            return f.read().split(") ")[1].split()[0] == "Z"
    wait_for(gone, 5, what="the orphaned indexer to end")
