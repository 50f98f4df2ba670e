#!/usr/bin/env python3
"""store-indexer: gives the embedded store's `_id` lookups an index they use.

    deploy/store-indexer.py STORE_DIR [--once] [--interval SECONDS] [--except PREFIX ...]

sked's hot paths are `_id` lookups (docs/ARCHITECTURE.md, "Store rules").
FerretDB v1.24 on SQLite indexes each collection's `_id` on the expression
`_ferretdb_sjson->"_id"`, but the statements it runs for a find, update or
delete by `_id` filter on `_ferretdb_sjson->'$._id'`. SQLite matches index
expressions as written, so none of those statements uses the index: each
one scans its whole table, and a status update costs time in proportion to
the jobs collection (0.7 ms with this index against 423 ms without it at
20,000 documents; docs/BENCHMARKS.md).

This watcher adds, to every collection table of every database file in
STORE_DIR, the index those statements can use:

    CREATE INDEX "<table>__sked_id" ON "<table>" (_ferretdb_sjson->'$._id')

It looks again every --interval seconds (0.5), so collections created later
(or dropped and created again) get theirs within a moment of their first
document. FerretDB does not know of the index and needs not: SQLite keeps
it up to date and its planner picks it; dropping the collection drops it.
A file nobody has written since its last look is not opened again. It runs
beside the store and ends on SIGTERM or SIGINT (exit 0) or when the process
that started it ends. --once indexes what is there and exits (for a store
whose collections all exist, e.g. one restored from a backup). --except
leaves the databases whose name starts with PREFIX as FerretDB made them
(the tests use it for a store whose `_id` lookups are slow).

Against MongoDB none of this applies: its `_id` index serves these lookups.
Python's own sqlite3 module (stdlib, SQLite 3.38 or later for `->`) does the
work; the index is written in a transaction of its own, and FerretDB's
connections wait for it (their busy timeout is 10 s).
"""
import argparse
import glob
import os
import signal
import sqlite3
import sys
import time

SUFFIX = "__sked_id"


def log(msg):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} store-indexer: {msg}", flush=True)


def index_file(path):
    """Index the collection tables of one database file that lack it;
    returns how many it indexed."""
    con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10, isolation_level=None)
    done = 0
    try:
        rows = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        indexed = {tbl for (kind, name, tbl, _) in rows if kind == "index" and name == tbl + SUFFIX}
        for kind, name, _, sql in rows:
            if kind != "table" or name in indexed or name.startswith(("_ferretdb", "sqlite_")):
                continue
            if "_ferretdb_sjson" not in (sql or ""):
                continue
            t = time.monotonic()
            con.execute(f'''CREATE INDEX IF NOT EXISTS "{name}{SUFFIX}" ON "{name}" '''
                        f'''(_ferretdb_sjson->'$._id')''')
            n = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            log(f"indexed _id of {os.path.basename(path)}:{name} ({n} documents, "
                f"{(time.monotonic() - t) * 1000:.0f} ms)")
            done += 1
    finally:
        con.close()
    return done


def stamp(path):
    """What changes whenever the file's schema can have: the database file's
    and its write-ahead log's size and modification time."""
    out = []
    for p in (path, path + "-wal"):
        try:
            st = os.stat(p)
            out += [st.st_size, st.st_mtime_ns]
        except OSError:
            out += [None, None]
    return tuple(out)


def sweep(store_dir, seen, excepted=()):
    """One look at every database file; `seen` maps a file to its stamp when
    it was last found with nothing to index, so files nobody writes are only
    stat()ed."""
    paths = sorted(p for p in glob.glob(os.path.join(store_dir, "*.sqlite"))
                   if not os.path.basename(p).startswith(tuple(excepted)))
    for path in paths:
        st = stamp(path)
        if seen.get(path) == st:
            continue
        try:
            index_file(path)
            seen[path] = st
        except sqlite3.Error as e:   # busy past the timeout, a file being created: next round
            log(f"{os.path.basename(path)} not indexed this round: {e}")
    for path in set(seen) - set(paths):
        del seen[path]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store_dir")
    ap.add_argument("--once", action="store_true", help="index what is there and exit")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between looks (0.5)")
    ap.add_argument("--except", dest="excepted", action="append", default=[], metavar="PREFIX",
                    help="leave databases whose name starts with PREFIX unindexed")
    args = ap.parse_args()
    if sqlite3.sqlite_version_info < (3, 38, 0):
        log(f"SQLite {sqlite3.sqlite_version} has no '->' operator; 3.38 or later is needed")
        return 1
    if not os.path.isdir(args.store_dir):
        log(f"no such directory: {args.store_dir}")
        return 1
    seen = {}
    if args.once:
        sweep(args.store_dir, seen, args.excepted)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    parent = os.getppid()
    log(f"watching {args.store_dir} every {args.interval} s")
    while os.getppid() == parent:
        sweep(args.store_dir, seen, args.excepted)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
