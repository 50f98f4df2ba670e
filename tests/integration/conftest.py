"""Fixtures that run a real sked cluster: FerretDB on loopback, the real
sked binaries (the sanitizer build from `make asan`), a real HTTP client.

Each test gets its own database in the shared FerretDB, and its own
processes on free ports. When a cluster stops, every process must exit 0
after SIGTERM and its log must hold no sanitizer report.
"""
import datetime
import os
import random
import shutil
import sys
import signal
import socket
import subprocess
import threading
import time
import uuid

import bson
import jwt
import pymongo

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import check_invariants  # noqa: E402
import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SKED_BIN_DIR", os.path.join(ROOT, "build", "asan", "bin"))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_ports_given = set()


def free_port():
    """A free loopback port below the kernel's ephemeral range, never
    given twice: a port the kernel picked (bind to 0) could be taken by an
    outgoing connection (a client's, the DelayProxy's to the store) before
    the process meant to listen on it starts ("Address already in use")."""
    hi = _ephemeral_low() - 1
    for _ in range(1000):
        port = random.randint(max(1024, hi - 12000), hi)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise AssertionError("no free loopback port below the ephemeral range")


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def zulu(t):
    """An aware datetime as the API writes it: ISO-8601 with a Z."""
    return t.isoformat().replace("+00:00", "Z")


def interval_trigger(cluster, name, execution_config, start, period_s):
    """Creates over HTTP a trigger firing every period_s seconds from
    `start` (an aware datetime); returns its id."""
    r = cluster.api("POST", "/triggers/", json={
        "name": name,
        "trigger_config": {"interval": period_s, "unit": "seconds", "start_at": zulu(start)},
        "execution_config": execution_config})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def one_shot(cluster, name, execution_config, delay=2):
    """A trigger that fires once, `delay` s from now (then hourly)."""
    start = (datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
             + datetime.timedelta(seconds=delay))
    return interval_trigger(cluster, name, execution_config, start, 3600)


def insert_job_history(db, n):
    """n final jobs of other triggers. On FerretDB/SQLite without the `_id`
    index (Cluster.unindexed), and for any filter besides `_id` alone, a
    job status update costs time in proportion to the jobs collection, so
    this makes each one slow (tens of ms at 6,000)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    db.jobs.insert_many([
        {"_id": f"filler{i}@1000", "trigger_id": f"filler{i}", "kind": "scheduled", "status": "succeeded",
         "attempt": 1, "scheduled_for": now, "created_at": now, "finished_at": now,
         "result": {"exit_code": 0, "output": "x" * 200}} for i in range(n)])


def trigger_partition(tid, partitions=8):
    """The partition of a trigger id: FNV-1a of the id, as the gateway's
    (8: this file's SKED_PARTITIONS)."""
    h = 2166136261
    for b in tid.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % partitions


def template_trigger(cluster):
    """An hourly noop trigger made through the API, as a document to copy
    (imported_trigger)."""
    r = cluster.api("POST", "/triggers/", json={
        "name": "template", "trigger_config": {"interval": 3600, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    return cluster.db.triggers.find_one({"_id": r.json()["id"]})


def imported_trigger(template, name, first, period_s):
    """A copy of an API-made trigger document under a new id, firing every
    period_s seconds from `first`: what a bulk import writes, with no
    NOTIFY to any master."""
    tid = str(bson.ObjectId())
    doc = dict(template, _id=tid, name=name, partition=trigger_partition(tid), version=1)
    doc["trigger_config"] = {"interval": period_s, "unit": "seconds"}
    doc["schedule"] = dict(template["schedule"], first_fire_at=first, period_ms=period_s * 1000)
    return doc


def wait_for(pred, timeout, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


def id_lookup_plans(con, table):
    """SQLite's plans for the statements FerretDB v1.24 runs to find and to
    update a document of `table` by `_id`: {"SELECT": plan, "UPDATE": plan}
    (deploy/store-indexer.py is what turns them from SCAN into SEARCH)."""
    out = {}
    for verb, q, args in (
            ("SELECT", f'''SELECT _ferretdb_sjson FROM "{table}" WHERE _ferretdb_sjson->'$._id' = ?''', ('"x"',)),
            ("UPDATE", f'''UPDATE "{table}" SET _ferretdb_sjson = ? WHERE _ferretdb_sjson->'$._id' = ?''',
             ("{}", '"x"'))):
        out[verb] = "; ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + q, args))
    return out


# Databases the store's indexer leaves alone (Cluster.unindexed).
UNINDEXED_PREFIX = "unindexed_"


class Store:
    """FerretDB (SQLite backend) on a loopback port; can be stopped and
    started again on the same port and data for outage tests."""

    def __init__(self, d, indexer=None):
        self.dir = d
        self.port = free_port()
        self.ferretdb = shutil.which("ferretdb") or os.path.expanduser("~/.local/bin/ferretdb")
        self.proc = None
        self.start()
        # The embedded store's `_id` index, as `make run` deploys it
        # (deploy/store-indexer.py); SKED_STORE_INDEXER=0 leaves it out.
        if indexer is None:
            indexer = os.environ.get("SKED_STORE_INDEXER", "1") != "0"
        self.indexer = None
        if indexer:
            self.indexer_log = open(os.path.join(self.dir, "store-indexer.log"), "a")
            self.indexer = subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "deploy", "store-indexer.py"), self.dir,
                 "--interval", "0.2", "--except", UNINDEXED_PREFIX],
                stdout=self.indexer_log, stderr=subprocess.STDOUT)

    def start(self):
        self.log = open(os.path.join(self.dir, "ferretdb.log"), "a")
        self.proc = subprocess.Popen(
            [self.ferretdb, "--handler=sqlite", f"--sqlite-url=file:{self.dir}/",
             f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.dir}",
             "--telemetry=disable", "--debug-addr=-", "--log-level=error"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()

    def close(self):
        """Stop the store for good, its indexer with it."""
        if self.proc.poll() is None:
            self.stop()
        if self.indexer:
            self.indexer.terminate()
            self.indexer.wait(timeout=10)
            self.indexer_log.close()
            self.indexer = None


class DelayProxy:
    """A TCP proxy on loopback in front of the store that holds each request
    `delay` seconds before passing it on, as a store far away or a loaded
    one answers. Answers pass at once; requests on one connection keep
    their order."""

    def __init__(self, target_port):
        self.delay = 0.0
        self.hold = None  # (marker, seconds): see hold_next
        self.slow = None  # (marker, seconds): every request that contains marker held that long
        self.held = []  # (start, end) of each request held by hold_next, once over
        self.holding = []  # start of each request held by hold_next, from its start
        self.lock = threading.Lock()
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src, dst, held):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if held:
                    self._hold_if_marked(data)
                if held and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold_next(self, marker, seconds):
        """Holds the next request that contains the bytes `marker`
        `seconds`, once: one store call that takes that long, the other
        requests of its connection behind it, other connections' not."""
        with self.lock:
            self.hold = (marker, seconds)

    def _hold_if_marked(self, data):
        with self.lock:
            hold = self.hold if self.hold and self.hold[0] in data else None
            if hold:
                self.hold = None
        if not hold and self.slow and self.slow[0] in data:
            time.sleep(self.slow[1])
            return
        if hold:
            t0 = time.time()
            self.holding.append(t0)
            time.sleep(hold[1])
            self.held.append((t0, time.time()))

    def stop(self):
        self.listener.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """One FerretDB for the session."""
    s = Store(str(tmp_path_factory.mktemp("store")))
    yield s
    s.close()


class Proc:
    def __init__(self, name, args, env, logdir):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.popen = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self):
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.alive():
            self.popen.send_signal(sig)
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait()
            self.log.close()
            raise AssertionError(f"{self.name} did not stop within {timeout}s")
        self.log.close()
        return rc

    def text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()


# The job fields an outcome record (job_results) sets until its master
# folds it into the job (docs/ARCHITECTURE.md, "Outcomes by insert").
RECORD_KEYS = {"status", "attempt", "finished_at", "started_at", "worker_id", "duration_ms",
               "result", "attempts", "notify_pending"}
_MISSING = object()


def _values(doc, dotted):
    """The values at a dotted path; through an array, each element's."""
    vals = [doc]
    for part in dotted.split("."):
        nxt = []
        for v in vals:
            if isinstance(v, dict):
                if part in v:
                    nxt.append(v[part])
            elif isinstance(v, list):
                if part.isdigit():
                    if int(part) < len(v):
                        nxt.append(v[int(part)])
                else:
                    nxt += [e[part] for e in v if isinstance(e, dict) and part in e]
        vals = nxt
    return vals


def _cond(vals, cond):
    flat = vals + [e for v in vals if isinstance(v, list) for e in v]
    if not (isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond)):
        return cond in flat or (cond is None and not vals)
    for op, arg in cond.items():
        if op == "$in":
            ok = any(v in arg for v in flat) or (None in arg and not vals)
        elif op == "$nin":
            ok = not any(v in arg for v in flat) and not (None in arg and not vals)
        elif op == "$ne":
            ok = arg not in flat and not (arg is None and not vals)
        elif op == "$exists":
            ok = bool(vals) == bool(arg)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            cmp = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
                   "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}[op]
            num = (int, float)
            ok = any(v is not None and (type(v) is type(arg) or
                                        (isinstance(v, num) and isinstance(arg, num))) and cmp(v, arg)
                     for v in flat)
        elif op == "$size":
            ok = any(isinstance(v, list) and len(v) == arg for v in vals)
        else:
            raise NotImplementedError(f"JobsView cannot match {op}")
        if not ok:
            return False
    return True


def matches(doc, filt):
    """A Mongo filter of the forms the tests use, evaluated in Python."""
    for key, cond in filt.items():
        if key == "$and":
            ok = all(matches(doc, f) for f in cond)
        elif key == "$or":
            ok = any(matches(doc, f) for f in cond)
        else:
            ok = _cond(_values(doc, key), cond)
        if not ok:
            return False
    return True


class Rows(list):
    def sort(self, key, direction=1):  # the cursor's sort(key, direction)
        super().sort(key=lambda d: (d.get(key) is None, d.get(key)), reverse=direction < 0)
        return self


class JobsView:
    """db.jobs as the API shows the jobs: each outcome record not folded
    yet laid over its job (check_invariants.jobs_seen), filters on the
    fields a record sets matched after that. Everything else is the
    collection's own."""

    def __init__(self, coll):
        self._coll = coll

    def __getattr__(self, name):
        return getattr(self._coll, name)

    def find(self, filt=None, projection=None, sort=None, limit=0, **kw):
        filt = filt or {}
        stored = {k: v for k, v in filt.items()
                  if not k.startswith("$") and k.split(".")[0] not in RECORD_KEYS}
        later = {k: v for k, v in filt.items() if k not in stored}
        rows = Rows(j for j in check_invariants.jobs_seen(self._coll.database, stored, None, **kw)
                    if matches(j, later))
        for key, direction in reversed(sort or []):
            rows.sort(key, direction)
        if limit:
            del rows[limit:]
        if projection:
            keep = {k.split(".")[0] for k, v in projection.items() if v} | {"_id"}
            rows = Rows({k: v for k, v in j.items() if k in keep} for j in rows)
        return rows

    def find_one(self, filt=None, projection=None, sort=None, **kw):
        rows = self.find(filt, projection, sort=sort, limit=1, **kw)
        return rows[0] if rows else None

    def count_documents(self, filt, **kw):
        return len(self.find(filt, **kw))

    def distinct(self, key, filt=None):
        return sorted({v for j in self.find(filt) for v in _values(j, key)}, key=repr)


class DbView:
    """A database whose `jobs` is a JobsView."""

    def __init__(self, db):
        self._db = db
        self.jobs = JobsView(db.jobs)

    def __getattr__(self, name):
        return getattr(self._db, name)

    def __getitem__(self, name):
        return self.jobs if name == "jobs" else self._db[name]


class Cluster:
    """A sked cluster on loopback against the session's FerretDB."""

    def __init__(self, store, logdir, name):
        self.store = store
        store_port = store.port
        self.store_port = store_port
        self.logdir = logdir
        self.mongo = pymongo.MongoClient(f"mongodb://127.0.0.1:{store_port}/", serverSelectionTimeoutMS=5000,
                                         tz_aware=True)
        self.use_db("t_" + uuid.uuid4().hex[:12])
        self.secret = "test-secret-" + uuid.uuid4().hex
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.masters, self.workers, self.gateway = [], [], None
        self.master_ports = []
        self.checked_stop = []
        self.cleanups = []  # run once the processes have stopped

    def use_db(self, name):
        self.db_name = name
        self.uri = f"mongodb://127.0.0.1:{self.store_port}/{name}"
        self.db = DbView(self.mongo[name])

    def unindexed(self):
        """Before start: a database the store's indexer leaves as FerretDB
        makes it, where every `_id` lookup scans its collection (a slow
        store, given a large one: insert_job_history)."""
        self.use_db(UNINDEXED_PREFIX + uuid.uuid4().hex[:12])

    def env(self, **extra):
        e = dict(os.environ)
        e.update({
            "SKED_MONGO_URI": self.uri,
            "SKED_JWT_SECRET": self.secret,
            "SKED_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "SKED_MASTERS": ",".join(f"tcp://127.0.0.1:{p}" for p in self.master_ports),
            "SKED_LEASE_TTL_MS": "3000",
            "SKED_HEARTBEAT_MS": "300",
            "SKED_WORKER_TIMEOUT_MS": "1500",
            "SKED_PARTITIONS": "8",
            "SKED_LOG_LEVEL": "info",
            "ASAN_OPTIONS": "detect_leaks=1:exitcode=66",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
            "LSAN_OPTIONS": f"suppressions={ROOT}/tests/lsan.supp:print_suppressions=0",
        })
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def start(self, masters=2, workers=2, worker_env=None, master_env=None, gateway_env=None,
              healthy_within=30):
        """Starts the processes; waits up to healthy_within seconds (None:
        not at all) for the gateway to call the cluster healthy."""
        self.master_ports = [free_port() for _ in range(masters)]
        for i, port in enumerate(self.master_ports):
            self.start_master(i, port, **(master_env or {}))
        for i in range(workers):
            self.start_worker(i, **(worker_env or {}))
        self.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                            self.env(SKED_NODE_ID="gateway-1", **(gateway_env or {})), self.logdir)
        wait_port(self.http_port)
        if healthy_within is not None:
            wait_for(lambda: self.health().get("status") == "healthy", healthy_within,
                     what="a healthy cluster")
        return self

    def start_master(self, i, port, **env):
        p = Proc(f"master-{i}", [os.path.join(BIN, "sked-master")],
                 self.env(SKED_NODE_ID=f"master-{i}", SKED_MASTER_BIND=f"tcp://127.0.0.1:{port}", **env),
                 self.logdir)
        self.masters.append(p)
        return p

    def start_worker(self, i, **env):
        p = Proc(f"worker-{i}", [os.path.join(BIN, "sked-worker")],
                 self.env(SKED_NODE_ID=f"worker-{i}", **env), self.logdir)
        self.workers.append(p)
        return p

    def token(self, sub="alice", role="user", ttl=3600, secret=None, **claims):
        now = int(time.time())
        payload = {"sub": sub, "role": role, "iat": now, "exp": now + ttl, **claims}
        return jwt.encode(payload, secret or self.secret, algorithm="HS256")

    def headers(self, sub="alice", role="user"):
        return {"Authorization": f"Bearer {self.token(sub, role)}"}

    def health(self):
        try:
            return requests.get(f"{self.url}/api/scheduler/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}

    def api(self, method, path, sub="alice", role="user", **kw):
        kw.setdefault("headers", self.headers(sub, role))
        kw.setdefault("timeout", 10)
        return requests.request(method, f"{self.url}/api/scheduler{path}", **kw)

    def invariants(self, stuck_after=300.0):
        """The invariant checker's report over this cluster's database."""
        return check_invariants.check(self.db, stuck_after)

    def stop(self):
        failures = []
        procs = ([self.gateway] if self.gateway else []) + self.workers + self.masters
        for p in procs:
            if p in self.checked_stop:
                continue
            try:
                rc = p.stop()
            except AssertionError as e:
                failures.append(str(e))
                continue
            if rc != 0:
                failures.append(f"{p.name} exited with {rc}")
            text = p.text()
            for mark in SANITIZER_MARKS:
                if mark in text:
                    failures.append(f"{p.name}: {mark} (see {p.log_path})")
        for f in self.cleanups:
            f()
        self.mongo.drop_database(self.db_name)
        self.mongo.close()
        assert not failures, "; ".join(failures)


@pytest.fixture
def cluster(store, tmp_path, request):
    c = Cluster(store, str(tmp_path), request.node.name)
    yield c
    c.stop()
