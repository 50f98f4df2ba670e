"""sked side by side with Agenda: five workloads on one FerretDB, one table.

    make bench-peer            (or: make bench, which runs bench-cron first)
    .venv/bin/python tests/bench/run.py [workload ...]

Starts FerretDB (SQLite) on a free loopback port. Each workload runs first
against a sked cluster of the release binaries in bin/ (its own database),
then against Agenda (tests/bench/agenda/runner.js, its own database), and
every figure is computed by this script from what each system recorded:
sked's job documents (`scheduled_for`, `started_at`, `finished_at`) and
Agenda's run log (the job's `nextRunAt` when it was picked up, the moment the
handler was entered and left). Workloads, sizes (environment variables;
the issue's sizes are the `full` column of SIZES) and figures:

  accuracy     N triggers firing every second for S seconds: fire lag
               (scheduled time -> handler start) p50/p99/max
  throughput   N noop jobs due at the same instant: jobs/s due -> finished
  concurrency  N `sleep D` jobs due at once over 4 workers: most jobs in
               flight at once, RSS per in-flight job of the scheduler's
               own processes
  scale        N cron triggers registered, each with its schedule state
               (BENCH_SCALE_STATES=0: none): scheduler RSS, time to rebuild
               the queue after a restart, restart -> first fire of a due
               trigger, then that trigger's worst lag (it fires every
               second) over the next 22 s (sked's first reconcile pass runs in it);
               then BENCH_SCALE_MASTERS (3) masters started at once: their RSS
               summed and counted once, start -> all partitions loaded
  failover     the accuracy load on 3 schedulers, one killed with SIGKILL:
               time until its triggers fire again, fires lost, duplicated

A duplicate is a (trigger, scheduled time) run twice; a miss is a time of
the schedule in the window that did not run by the end of the workload
(the window plus BENCH_DRAIN_S). Triggers and Agenda jobs are written to
the store with insert_many in each system's own document format before the
schedulers start (as a bulk import would); creating them one by one through
the APIs is not what is measured.

Writes var/bench/results.json and var/bench/fire_lag.png (the accuracy
workload's lag distribution for both systems), and sked's accuracy runs
one by one in var/bench/accuracy-runs.json (lag over the window); the
logs stay in var/bench/<workload>-<system>/.
"""
import datetime
import json
import math
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import bson
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import conftest  # noqa: E402
from check_invariants import jobs_seen  # noqa: E402

ROOT = conftest.ROOT
conftest.BIN = os.environ.get("SKED_BIN_DIR", os.path.join(ROOT, "bin"))
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "var", "bench"))
AGENDA_DIR = os.path.join(HERE, "agenda")

# name: (environment variable, default, the size, meaning)
SIZES = {
    "accuracy_triggers": ("BENCH_ACCURACY_TRIGGERS", 20, 1000, "triggers firing every second"),
    "accuracy_seconds": ("BENCH_ACCURACY_SECONDS", 30, 60, "seconds of firing"),
    "throughput_jobs": ("BENCH_THROUGHPUT_JOBS", 500, 50000, "noop jobs due at once"),
    "concurrency_jobs": ("BENCH_CONCURRENCY_JOBS", 400, 10000, "sleep jobs due at once"),
    "concurrency_sleep": ("BENCH_CONCURRENCY_SLEEP_S", 20, 30, "seconds each sleep job runs"),
    "scale_triggers": ("BENCH_SCALE_TRIGGERS", 10000, 1000000, "cron triggers registered"),
    "failover_triggers": ("BENCH_FAILOVER_TRIGGERS", 20, 1000, "triggers firing every second"),
    "failover_seconds": ("BENCH_FAILOVER_SECONDS", 40, 60, "seconds of firing"),
}
DRAIN_S = int(os.environ.get("BENCH_DRAIN_S", "30"))        # bound on waiting after a window
LEASE_TTL_MS = int(os.environ.get("BENCH_LEASE_TTL_MS", "10000"))     # sked's default
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "64"))
# Agenda processes for accuracy, throughput and scale. More than one makes
# FerretDB/SQLite answer Agenda's concurrent findAndModify with "database is
# locked" and lets two processes lock the same job (docs/BENCHMARKS.md);
# concurrency runs 4 (as sked's 4 workers), failover 3 (as sked's 3 masters).
AGENDA_PROCS = int(os.environ.get("BENCH_AGENDA_PROCESSES", "1"))
AGENDA_PROCESS_EVERY_MS = int(os.environ.get("BENCH_AGENDA_PROCESS_EVERY_MS", "100"))
# In the scale workload each of Agenda's lock queries scans every job (about
# 0.3 ms a job on FerretDB/SQLite here): polled every 100 ms they pile up and
# nothing runs, so that workload keeps Agenda's default of 5 s.
AGENDA_SCALE_PROCESS_EVERY_MS = int(os.environ.get("BENCH_AGENDA_SCALE_PROCESS_EVERY_MS", "5000"))
# BENCH_PEER=0 runs sked's half of each workload only (Agenda's figures
# print as "-"): for sizes where Agenda would run for the whole drain
# bound (50,000 jobs at its 0.26 jobs/s here).
PEER = os.environ.get("BENCH_PEER", "1") != "0"
# throughput: how long Agenda's jobs are waited for after their due time
# at most (its runner lives 900 s); those not finished by then are counted
# missed, and its rate is over what finished. At 50,000 jobs Agenda locks
# each due job with a query that scans every job (about 6 s each at that
# size) before it runs any, so it would take days.
PEER_BOUND_S = int(os.environ.get("BENCH_PEER_BOUND_S", "840"))
PROBE_WATCH_S = 22  # scale: how long the 1-s probe trigger's lag is watched after the rebuild
# scale: every trigger also has its schedule state (trigger_state), as one
# that has fired has; 0 leaves them out, as before 2026-11-28 (none had).
SCALE_STATES = os.environ.get("BENCH_SCALE_STATES", "1") != "0"
# scale: after the one-master figures, all masters are started afresh this
# many at once (the "all masters"): their RSS summed, their memory
# counted once (each one's private pages, the shared libraries' pages
# once), and the time until they hold every partition, loaded. 1: skipped.
SCALE_MASTERS = int(os.environ.get("BENCH_SCALE_MASTERS", "3"))
# scale: 1 restarts the one master with kill -9 instead of SIGTERM, once it
# has written a periodic snapshot of every partition: its leases expire
# first (BENCH_LEASE_TTL_MS), then the periodic snapshots are restored.
SCALE_KILL = os.environ.get("BENCH_SCALE_KILL", "0") != "0"
WORKLOADS = ["accuracy", "throughput", "concurrency", "scale", "failover"]


def size(name):
    env, default, _, _ = SIZES[name]
    return int(os.environ.get(env, default))


def ms(dt):
    return None if dt is None else int(round(dt.timestamp() * 1000))


def now_ms():
    return int(time.time() * 1000)


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(len(v) * p / 100) - 1))]


def proc_kib(pid, name):
    """The "Field: N kB" figures of /proc/<pid>/<name> (status,
    smaps_rollup) by field, or {} if the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                m = re.match(r"(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    except OSError:
        pass
    return out


def rss_kib(pid):
    return proc_kib(pid, "status").get("VmRSS", 0)


def cpu_s(pid):
    """User + system CPU seconds of a live process, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class RssSampler:
    """Samples the summed RSS of pids() every period until stopped."""

    def __init__(self, pids, period=0.25):
        self.pids, self.period = pids, period
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), sum(rss_kib(p) for p in self.pids())))
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self._t.join()

    def peak(self, after=0.0):
        return max((kib for t, kib in self.samples if t >= after), default=0)


# --- figures from run records -------------------------------------------
# A run record: {"k": trigger key, "scheduled": ms, "start": ms or None,
# "end": ms or None, "by": who ran it}.

def fire_figures(runs, expected):
    """Lags, duplicates and misses of runs against the expected (k, ms) set."""
    ran = [r for r in runs if (r["start"] is not None or r["end"] is not None)
           and (r["k"], r["scheduled"]) in expected]
    keys = [(r["k"], r["scheduled"]) for r in ran]
    distinct = set(keys)
    lags = [r["start"] - r["scheduled"] for r in ran if r["start"] is not None]
    return {"runs": len(ran), "expected": len(expected), "duplicates": len(keys) - len(distinct),
            "misses": len(expected - distinct), "no_start_time": sum(1 for r in ran if r["start"] is None),
            "lags": lags,
            "p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags) if lags else None}


def max_in_flight(runs, stop_at):
    events = []
    for r in runs:
        if r["start"] is None:
            continue
        events.append((r["start"], 1))
        events.append((r["end"] if r["end"] is not None else stop_at, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


# --- sked -----------------------------------------------------------------

class Absent(dict):
    """The figures of a system that did not run (BENCH_PEER=0): None each."""

    def __missing__(self, key):
        return None


class SkedCluster(conftest.Cluster):
    """conftest's cluster with benchmark settings: release binaries, the
    production partition count, quieter logs, no API rate limit, metrics on
    every master."""

    def __init__(self, store, logdir, name, **settings):
        super().__init__(store, logdir, name)
        self.settings = {
            "SKED_PARTITIONS": PARTITIONS, "SKED_LEASE_TTL_MS": LEASE_TTL_MS,
            "SKED_HEARTBEAT_MS": 1000, "SKED_WORKER_TIMEOUT_MS": 5000,
            "SKED_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warn"), "SKED_RATE_LIMIT": 0,
            "SKED_DRAIN_TIMEOUT_MS": 1000,
            **settings}
        self.metrics = {}

    def env(self, **extra):
        e = super().env()
        e.update({k: str(v) for k, v in self.settings.items()})
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def start_master(self, i, port, **env):
        mport = conftest.free_port()
        p = super().start_master(i, port, SKED_METRICS_ADDR=f"127.0.0.1:{mport}", **env)
        self.metrics[p] = mport
        return p

    def restart_master(self, i, sig=signal.SIGTERM, **env):
        old = self.masters[i]
        old.stop(sig)
        self.checked_stop.append(old)
        p = self.start_master(i, self.master_ports[i], **env)  # appends it
        self.masters.pop()
        self.masters[i] = p
        return p

    def scrape(self):
        """Each live master's /metrics text."""
        out = {}
        for p in self.masters:
            if p.alive() and p in self.metrics:
                try:
                    out[p.name] = requests.get(f"http://127.0.0.1:{self.metrics[p]}/metrics", timeout=5).text
                except requests.RequestException:
                    pass
        return out

    def metric_sum(self, name, label_re=""):
        total = 0.0
        for text in self.scrape().values():
            for line in text.splitlines():
                if line.startswith(name) and re.search(label_re, line):
                    m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)", line)
                    if m:
                        total += float(m.group(2))
        return total

    def wait_written(self, timeout=30):
        """Until no master's status writer holds an outcome it has not
        written (sked_status_writes_queued 0 everywhere), so that the runs
        read from the store next are all there."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.metric_sum("sked_status_writes_queued") > 0:
            time.sleep(0.2)
        time.sleep(0.2)  # a bulk taken as the gauge was read

    def rss_pids(self):
        return [p.popen.pid for p in self.masters + self.workers if p.alive()]

    def wait_leases(self, timeout=60):
        """Until every partition is held and shared out (no master above its
        share), as seen twice a second apart."""
        share = math.ceil(PARTITIONS / max(1, len(self.masters)))
        deadline, stable = time.time() + timeout, 0
        while time.time() < deadline:
            held = []
            for text in self.scrape().values():
                m = re.search(r"^sked_leases_held (\S+)", text, re.M)
                held.append(float(m.group(1)) if m else 0)
            ok = sum(held) >= PARTITIONS and max(held, default=0) <= share
            stable = stable + 1 if ok else 0
            if stable >= 2:
                return True
            time.sleep(1)
        return False


def iso(ms_):
    return datetime.datetime.fromtimestamp(ms_ / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def dt(ms_):
    return datetime.datetime.fromtimestamp(ms_ / 1000, datetime.timezone.utc)


def sked_trigger(k, trigger_config, execution_config, schedule, trigger_type):
    """A trigger document as the gateway writes it (gateway/api.c,
    gateway/trigger.c), with a fresh ObjectId-hex _id."""
    tid = str(bson.ObjectId())
    now = dt(now_ms())
    execution_config = dict(execution_config)
    execution_config.setdefault("parameters", {})
    return {"_id": tid, "owner": "bench", "partition": conftest.trigger_partition(tid, PARTITIONS), "created_at": now,
            "updated_at": now, "name": f"bench-{k}", "description": "", "trigger_type": trigger_type,
            "trigger_config": trigger_config, "execution_config": execution_config,
            "schedule": schedule, "status": "active", "version": 1}


def sked_interval_triggers(n, t0, period_s, seconds, execution_config, misfire=None, prefix=""):
    """n INTERVAL triggers firing at t0 + k*period for `seconds` seconds."""
    end = t0 + seconds * 1000 - 500
    docs = []
    for k in range(n):
        tc = {"interval": period_s, "unit": "seconds", "start_at": iso(t0), "end_at": iso(end)}
        if misfire:
            tc["misfire_policy"] = misfire
        docs.append(sked_trigger(f"{prefix}{k}", tc, execution_config,
                                 {"kind": "interval", "first_fire_at": dt(t0), "period_ms": period_s * 1000,
                                  "end_at": dt(end)}, "INTERVAL"))
    return docs


def probe_figures(ran, first):
    """The scale workload's probe, which fires every second: its worst lag,
    and how many of its seconds after `first` (ms) until PROBE_WATCH_S - 2 s
    later did not run (skipped as misfires, or never due)."""
    lags = [start - sched for sched, start in ran.items()]
    want = [first + 1000 * i for i in range(1, PROBE_WATCH_S - 1)]
    return {"probe_lag_max_ms": max(lags, default=None),
            "probe_missed": sum(1 for t in want if t not in ran)}


def insert_many(coll, docs, batch=1000):
    for i in range(0, len(docs), batch):
        coll.insert_many(docs[i:i + batch], ordered=False)


def sked_runs(db, ids):
    """Run records of sked's jobs (scheduled fires, not skips)."""
    runs = []
    for j in jobs_seen(db, {}, {"trigger_id": 1, "scheduled_for": 1, "started_at": 1, "finished_at": 1,
                                "status": 1, "master": 1, "created_at": 1}):
        if j.get("status") == "skipped":
            continue
        runs.append({"k": ids.get(j["trigger_id"], j["trigger_id"]), "scheduled": ms(j["scheduled_for"]),
                     "start": ms(j.get("started_at")),
                     "end": ms(j.get("finished_at")) if j.get("status") in FINAL else None,
                     "by": j.get("master"), "claimed": ms(j.get("created_at")), "status": j.get("status")})
    return runs


FINAL = ("succeeded", "failed", "timed_out", "lost", "cancelled")


def store_profile(cluster):
    """Per store operation: count, mean and an upper bound of p99 (bucket
    edge), summed over the masters' sked_store_operation_duration_seconds."""
    ops = {}
    for text in cluster.scrape().values():
        for line in text.splitlines():
            m = re.match(r'sked_store_operation_duration_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)', line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            o = ops.setdefault(labels.get("op", "?"), {"count": 0, "sum": 0.0, "buckets": {}})
            if m.group(1) == "count":
                o["count"] += float(m.group(3))
            elif m.group(1) == "sum":
                o["sum"] += float(m.group(3))
            else:
                le = labels["le"]
                o["buckets"][le] = o["buckets"].get(le, 0) + float(m.group(3))
    out = {}
    for op, o in ops.items():
        if not o["count"]:
            continue
        p99 = None
        for le, c in sorted(((float(le), c) for le, c in o["buckets"].items())):
            if c >= 0.99 * o["count"]:
                p99 = le
                break
        out[op] = {"count": int(o["count"]), "mean_ms": 1000 * o["sum"] / o["count"],
                   "p99_le_ms": None if p99 is None or math.isinf(p99) else 1000 * p99}
    return out


def pool_slots(n, workers):
    """SKED_WORKER_SLOTS for n triggers each firing every second: n slots
    over the workers (Agenda's concurrency in the same workload is n),
    never below the default 64. A fire claimed ahead holds its slot on the
    worker until its time (SKED_FIRE_AHEAD_MS, 500 ms), so n fires a second
    need about n / 2 slots besides those running: at the default, two
    workers held 128, and at 500 triggers a second fires waited for slots
    (docs/BENCHMARKS.md, fourteenth session)."""
    return max(64, -(-n // workers))


class Sked:
    """A sked cluster for one workload, in its own database and log dir."""

    def __init__(self, bench, workload, masters=2, workers=2, master_env=None, worker_env=None):
        self.dir = os.path.join(OUT, f"{workload}-sked")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.c = SkedCluster(bench.store, self.dir, workload)
        self.bench, self.workload = bench, workload
        self.store_cpu0 = cpu_s(bench.store.proc.pid)
        self.masters, self.workers = masters, workers
        self.master_env, self.worker_env = master_env or {}, worker_env or {}

    def start(self, healthy_within=30):
        self.c.start(masters=self.masters, workers=self.workers, master_env=self.master_env,
                     worker_env=self.worker_env, healthy_within=healthy_within)
        if not self.c.wait_leases():
            log("sked: not every partition is held after 60 s")

    def stop(self):
        procs = self.c.masters + self.c.workers + ([self.c.gateway] if self.c.gateway else [])
        self.bench.cpu[(self.workload, "sked")] = {
            "store": cpu_s(self.bench.store.proc.pid) - self.store_cpu0,
            "scheduler": sum(cpu_s(p.popen.pid) for p in procs if p.alive())}
        try:
            self.c.stop()
        except AssertionError as e:
            log(f"sked: stop: {e}")


# --- Agenda -----------------------------------------------------------------

AGENDA_TEMPLATE = {  # the fields Agenda 6's MongoBackend writes for a job
    "type": "normal", "priority": 0, "lockedAt": None, "lastFinishedAt": None, "failedAt": None,
    "failCount": None, "failReason": None, "repeatTimezone": None, "lastRunAt": None,
    "repeatInterval": None, "repeatAt": None, "disabled": None, "progress": None,
    "debounceStartedAt": None, "fork": None, "startDate": None, "endDate": None, "skipDays": None,
    "lastModifiedBy": None}


def agenda_job(name, data, next_run, repeat=None, end=None):
    doc = dict(AGENDA_TEMPLATE)
    doc.update({"_id": bson.ObjectId(), "name": name, "data": data, "nextRunAt": dt(next_run),
                "repeatInterval": repeat, "endDate": dt(end) if end else None})
    return doc


def agenda_every_second(n, t0, s):
    """n noop jobs repeating every second from t0 for s seconds."""
    return [agenda_job("noop", {"k": i}, t0, "* * * * * *", t0 + s * 1000 - 500) for i in range(n)]


class AgendaProc:
    def __init__(self, uri, out, logdir, name, concurrency, lock_lifetime=600000, seconds=900,
                 jobs="noop", process_every=AGENDA_PROCESS_EVERY_MS):
        self.name = name
        self.log = open(os.path.join(logdir, f"{name}.log"), "w")
        self.popen = subprocess.Popen(
            ["node", os.path.join(AGENDA_DIR, "runner.js"), "--uri", uri, "--out", out, "--name", name,
             "--process-every", str(process_every), "--concurrency", str(concurrency),
             "--lock-lifetime", str(lock_lifetime), "--seconds", str(seconds), "--jobs", jobs],
            cwd=AGENDA_DIR, stdout=subprocess.PIPE, stderr=self.log)
        self.started_at = time.time()

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        buf = b""
        while time.time() < deadline and self.popen.poll() is None:
            r, _, _ = select.select([self.popen.stdout], [], [], 0.05)
            if r:
                buf += os.read(self.popen.stdout.fileno(), 100)
                if b"ready" in buf:
                    return time.time()
        raise RuntimeError(f"{self.name} not ready (see its log)")

    def stop(self, sig=signal.SIGTERM):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.log.close()


class AgendaRun:
    """Agenda processes for one workload, in their own database."""

    def __init__(self, bench, workload):
        self.dir = os.path.join(OUT, f"{workload}-agenda")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.db_name = f"agenda_{workload}_{os.getpid()}"
        self.uri = f"mongodb://127.0.0.1:{bench.store.port}/{self.db_name}"
        self.db = bench.mongo[self.db_name]
        self.out = os.path.join(self.dir, "runs.jsonl")
        self.procs = []
        self.mongo = bench.mongo
        self.bench, self.workload = bench, workload
        self.store_cpu0 = cpu_s(bench.store.proc.pid)
        self.cpu_done = 0.0  # CPU of Agenda processes that already ended

    def start(self, n, concurrency, lock_lifetime=600000, jobs="noop", process_every=AGENDA_PROCESS_EVERY_MS):
        new = [AgendaProc(self.uri, self.out, self.dir, f"agenda-{len(self.procs) + i}", concurrency,
                          lock_lifetime, jobs=jobs, process_every=process_every) for i in range(n)]
        self.procs += new
        for p in new:
            p.wait_ready()
        return new

    def pids(self):
        return [p.popen.pid for p in self.procs if p.popen.poll() is None]

    def runs(self):
        try:
            with open(self.out) as f:
                lines = f.readlines()
        except OSError:
            return []
        starts, ends = [], {}
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e["ev"] == "start":
                starts.append(e)
            else:
                ends[(e["id"], e["scheduled"], e["pid"])] = e["end"]
        return [{"k": e["k"], "scheduled": e["scheduled"], "start": e["start"],
                 "end": ends.get((e["id"], e["scheduled"], e["pid"])), "by": e["pid"]} for e in starts]

    def stop(self):
        self.bench.cpu[(self.workload, "agenda")] = {
            "store": cpu_s(self.bench.store.proc.pid) - self.store_cpu0,
            "scheduler": self.cpu_done + sum(cpu_s(p) for p in self.pids())}
        for p in self.procs:
            p.stop()
        self.mongo.drop_database(self.db_name)


# --- the workloads ------------------------------------------------------------

def align(t):
    """The next whole second at least t ms from now."""
    return (now_ms() + t) // 1000 * 1000 + 1000


def wait_until(pred, deadline, interval=1.0):
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def wait_progress(count, target, cap_s, stall_s=20):
    """Until count() reaches target, stops growing for stall_s, or cap_s
    seconds pass; returns the last count."""
    start = last_change = time.time()
    last = -1
    while True:
        c = count()
        now = time.time()
        if c >= target or now - start >= cap_s or (now - last_change >= stall_s and c == last and c > 0):
            return c
        if c != last:
            last, last_change = c, now
        time.sleep(1)


def sleep_until_ms(t):
    d = t / 1000 - time.time()
    if d > 0:
        time.sleep(d)


class Bench:
    def __init__(self):
        os.makedirs(OUT, exist_ok=True)
        self.store_dir = os.path.join(OUT, "store")
        shutil.rmtree(self.store_dir, ignore_errors=True)
        os.makedirs(self.store_dir)
        self.store = conftest.Store(self.store_dir)
        import pymongo
        self.mongo = pymongo.MongoClient(f"mongodb://127.0.0.1:{self.store.port}/", tz_aware=True)
        self.rows = []        # table rows
        self.details = {}     # per workload, for results.json
        self.cpu = {}         # (workload, system) -> CPU seconds of the store and the scheduler

    def row(self, workload, figure, sked, agenda, better="lower", dup=("", ""), miss=("", "")):
        self.rows.append({"workload": workload, "figure": figure, "sked": sked, "agenda": agenda,
                          "better": better, "dup": dup, "miss": miss})

    # accuracy -------------------------------------------------------------
    def accuracy(self):
        n, s = size("accuracy_triggers"), size("accuracy_seconds")
        res = {}
        # sked
        k = Sked(self, "accuracy", worker_env={"SKED_WORKER_SLOTS": pool_slots(n, 2)})
        t0 = align(12000 + n * 4)
        docs = sked_interval_triggers(n, t0, 1, s, {"task_type": "noop"})
        ids = {d["_id"]: i for i, d in enumerate(docs)}
        try:
            insert_many(k.c.db.triggers, docs)
            k.start()
            if now_ms() > t0 - 1000:
                log("accuracy/sked: the cluster was not ready before the window")
            end = t0 + s * 1000
            sleep_until_ms(end)
            wait_progress(lambda: k.c.metric_sum("sked_jobs_finished_total"), n * s, DRAIN_S)
            k.c.wait_written()
            profile = store_profile(k.c)
            refused = k.c.metric_sum("sked_jobs_refused_total")
            runs = sked_runs(k.c.db, ids)
        finally:
            k.stop()
        with open(os.path.join(OUT, "accuracy-runs.json"), "w") as f:  # each run, for lag over time
            json.dump({"t0": t0, "runs": runs}, f, default=str)
        expected = {(i, t0 + j * 1000) for i in range(n) for j in range(s)}
        res["sked"] = fire_figures(runs, expected)
        res["sked"]["store"] = profile
        res["sked"]["refused"] = refused
        if PEER:
            # Agenda
            a = AgendaRun(self, "accuracy")
            t0 = align(6000 + n * 2)
            try:
                insert_many(a.db.agendaJobs, agenda_every_second(n, t0, s))
                a.start(AGENDA_PROCS, max(100, n))
                sleep_until_ms(t0 + s * 1000)
                wait_progress(lambda: len(a.runs()), n * s, DRAIN_S)
                runs = a.runs()
            finally:
                a.stop()
            expected = {(i, t0 + j * 1000) for i in range(n) for j in range(s)}
            res["agenda"] = fire_figures(runs, expected)
        else:
            res["agenda"] = Absent()
        sk, ag = res["sked"], res["agenda"]
        w = f"accuracy ({n} triggers x 1/s, {s} s)"
        for f in ("p50", "p99", "max"):
            self.row(w, f"fire lag {f} (ms)", sk[f], ag[f], dup=(sk["duplicates"], ag["duplicates"]),
                     miss=(sk["misses"], ag["misses"]))
        self.details["accuracy"] = {sys_: {kk: v for kk, v in r.items()} for sys_, r in res.items()}

    # throughput -----------------------------------------------------------
    def throughput(self):
        n = size("throughput_jobs")
        res = {}
        k = Sked(self, "throughput")
        t0 = align(12000 + n * 4)
        docs = sked_interval_triggers(n, t0, 86400, 1, {"task_type": "noop"})
        ids = {d["_id"]: i for i, d in enumerate(docs)}
        try:
            insert_many(k.c.db.triggers, docs)
            k.start()
            sleep_until_ms(t0)
            wait_progress(lambda: k.c.metric_sum("sked_jobs_finished_total"), n, DRAIN_S + n / 10)
            k.c.wait_written()
            profile = store_profile(k.c)
            runs = sked_runs(k.c.db, ids)
        finally:
            k.stop()
        res["sked"] = self._throughput_figures(runs, n, t0)
        res["sked"]["store"] = profile
        if PEER:
            a = AgendaRun(self, "throughput")
            t0 = align(6000 + n * 2)
            try:
                insert_many(a.db.agendaJobs, [agenda_job("noop", {"k": i}, t0) for i in range(n)])
                a.start(AGENDA_PROCS, max(100, n))
                sleep_until_ms(t0)
                wait_progress(lambda: sum(1 for r in a.runs() if r["end"]), n,
                              min(DRAIN_S + n / 10, PEER_BOUND_S))
                runs = a.runs()
                waited = time.time() - t0 / 1000
            finally:
                a.stop()
            res["agenda"] = self._throughput_figures(runs, n, t0)
            res["agenda"]["waited_s"] = waited
        else:
            res["agenda"] = Absent()
        sk, ag = res["sked"], res["agenda"]
        w = f"throughput ({n} noop jobs due at once)"
        self.row(w, "jobs/s due -> finished", sk["rate"], ag["rate"], better="higher",
                 dup=(sk["duplicates"], ag["duplicates"]), miss=(sk["misses"], ag["misses"]))
        self.row(w, "last job finished after (s)", sk["span_s"], ag["span_s"])
        self.row(w, "jobs finished (of all due)", sk["finished"], ag["finished"], better="higher")
        if ag.get("waited_s") is not None:
            self.row(w, "Agenda waited for after the due time (s)", None, ag["waited_s"])
        self.row(w, "start lag p99 (ms)", sk["p99"], ag["p99"])
        self.details["throughput"] = res

    @staticmethod
    def _throughput_figures(runs, n, t0):
        expected = {(i, t0) for i in range(n)}
        f = fire_figures(runs, expected)
        done = [r for r in runs if r["end"] is not None and (r["k"], r["scheduled"]) in expected]
        last = max((r["end"] for r in done), default=None)
        distinct = len({r["k"] for r in done})
        f["finished"] = distinct
        f["span_s"] = None if last is None else (last - t0) / 1000
        f["rate"] = None if not last or last <= t0 else distinct / ((last - t0) / 1000)
        del f["lags"]
        return f

    # concurrency ----------------------------------------------------------
    def concurrency(self):
        n, d = size("concurrency_jobs"), size("concurrency_sleep")
        slots = math.ceil(n / 4)
        res = {}
        k = Sked(self, "concurrency", masters=2, workers=4, worker_env={"SKED_WORKER_SLOTS": slots})
        t0 = align(12000 + n * 4)
        docs = sked_interval_triggers(n, t0, 86400, 1, {"task_type": "sleep", "parameters": {"seconds": d}})
        ids = {dd["_id"]: i for i, dd in enumerate(docs)}
        sampler = None
        try:
            insert_many(k.c.db.triggers, docs)
            k.start()
            sampler = RssSampler(k.c.rss_pids)
            sleep_until_ms(t0 - 500)
            base = sampler.peak(after=time.time() - 2)
            wait_progress(lambda: k.c.metric_sum("sked_jobs_finished_total"), n, d + DRAIN_S + n / 20, d + 20)
            stop_at = now_ms()
            sampler.stop()
            k.c.wait_written()
            profile = store_profile(k.c)
            runs = sked_runs(k.c.db, ids)
        finally:
            if sampler:
                sampler.stop()
            k.stop()
        res["sked"] = self._concurrency_figures(runs, n, t0, stop_at, sampler, base)
        res["sked"]["store"] = profile
        if PEER:
            a = AgendaRun(self, "concurrency")
            t0 = align(6000 + n * 2)
            sampler = None
            try:
                insert_many(a.db.agendaJobs, [agenda_job("sleep", {"k": i, "seconds": d}, t0) for i in range(n)])
                a.start(4, slots, jobs="sleep")
                sampler = RssSampler(a.pids)
                sleep_until_ms(t0 - 500)
                base = sampler.peak(after=time.time() - 2)
                wait_progress(lambda: sum(1 for r in a.runs() if r["end"]), n, d + DRAIN_S + n / 20, d + 20)
                stop_at = now_ms()
                sampler.stop()
                runs = a.runs()
            finally:
                if sampler:
                    sampler.stop()
                a.stop()
            res["agenda"] = self._concurrency_figures(runs, n, t0, stop_at, sampler, base)
        else:
            res["agenda"] = Absent()
        sk, ag = res["sked"], res["agenda"]
        w = f"concurrency ({n} x sleep {d} s, 4 workers)"
        self.row(w, "most jobs in flight at once", sk["in_flight"], ag["in_flight"], better="higher",
                 dup=(sk["duplicates"], ag["duplicates"]), miss=(sk["misses"], ag["misses"]))
        self.row(w, "all started after (s)", sk["all_started_s"], ag["all_started_s"])
        self.row(w, "RSS per in-flight job (KiB)", sk["kib_per_job"], ag["kib_per_job"])
        self.row(w, "peak RSS, all processes (MiB)", sk["peak_mib"], ag["peak_mib"])
        self.details["concurrency"] = res

    @staticmethod
    def _concurrency_figures(runs, n, t0, stop_at, sampler, base):
        expected = {(i, t0) for i in range(n)}
        f = fire_figures(runs, expected)
        del f["lags"]
        ok = [r for r in runs if (r["k"], r["scheduled"]) in expected]
        f["in_flight"] = max_in_flight(ok, stop_at)
        starts = sorted(r["start"] for r in ok if r["start"] is not None)
        f["all_started_s"] = (starts[-1] - t0) / 1000 if len(starts) >= n else None
        peak = sampler.peak()
        f["base_mib"], f["peak_mib"] = base / 1024, peak / 1024
        f["kib_per_job"] = (peak - base) / f["in_flight"] if f["in_flight"] else None
        return f

    # scale ------------------------------------------------------------------
    @staticmethod
    def _yearly_next(expr, now):
        """The next fire (a datetime) of a scale trigger's cron, which fires
        once a year at a fixed minute, hour, day and month."""
        mi, h, dom, mon, _ = expr.split()
        nxt = datetime.datetime(now.year, int(mon), int(dom), int(h), int(mi), tzinfo=datetime.timezone.utc)
        return nxt if nxt > now else nxt.replace(year=now.year + 1)

    def scale(self):
        n = size("scale_triggers")
        rnd = random.Random(8)
        month = datetime.datetime.now(datetime.timezone.utc).month
        exprs = []
        for _ in range(n):
            mon = rnd.choice([m for m in range(1, 13) if m != month])
            exprs.append(f"{rnd.randrange(60)} {rnd.randrange(24)} {rnd.randrange(1, 29)} {mon} *")
        res = {"sked": {}, "agenda": {}}
        # sked: one master, so its RSS and rebuild are the whole queue's
        k = Sked(self, "scale", masters=1, workers=1, master_env={"SKED_LOG_LEVEL": "info"})
        docs = [sked_trigger(i, {"cron_expression": e, "timezone": "UTC"}, {"task_type": "noop"},
                             {"kind": "cron", "cron_expression": e, "timezone": "UTC", "dst_gap": "fire_after",
                              "dst_overlap": "first"}, "CRON") for i, e in enumerate(exprs)]
        probe_t0 = align(0) - 60000
        docs += sked_interval_triggers(1, probe_t0, 1, 86400, {"task_type": "noop"}, prefix="probe-")
        probe = docs[-1]["_id"]
        states = []
        if SCALE_STATES:  # as the master writes them (master/sched.c, s_state_doc)
            now, saved = datetime.datetime.now(datetime.timezone.utc), dt(now_ms())
            for d, e in zip(docs, exprs):
                nxt = self._yearly_next(e, now)
                states.append({"_id": d["_id"], "partition": d["partition"], "next_fire_at": nxt,
                               "last_fire_at": nxt.replace(year=nxt.year - 1), "updated_at": saved})
        try:
            t = time.time()
            insert_many(k.c.db.triggers, docs)
            insert_many(k.c.db.trigger_state, states)
            res["sked"]["insert_s"] = time.time() - t
            log(f"scale/sked: {n} triggers and {len(states)} states inserted in {res['sked']['insert_s']:.1f} s")
            # healthy only once the first load is over and the master's member
            # document lists its partitions: minutes at 1,000,000 triggers
            k.start(healthy_within=None)
            ok = wait_until(lambda: self._gained(k.c.masters[0], n + 1), time.time() + 120 + n / 1000, 0.5)
            res["sked"]["first_load_s"] = self._gained(k.c.masters[0], n + 1) if ok else None
            time.sleep(2)
            res["sked"]["rss_mib"] = rss_kib(k.c.masters[0].popen.pid) / 1024
            # restart: SIGTERM (snapshots written, leases released), start again;
            # or kill -9 once every partition has a periodic snapshot
            if SCALE_KILL:
                wait_until(lambda: k.c.db.snapshots.count_documents({"seq": {"$exists": True}}) >= PARTITIONS,
                           time.time() + 600, 5)
            t_stop = time.time()
            k.c.restart_master(0, signal.SIGKILL if SCALE_KILL else signal.SIGTERM, SKED_LOG_LEVEL="info")
            t_restart = time.time()
            res["sked"]["stop_s"] = t_restart - t_stop
            res["sked"]["killed"] = SCALE_KILL
            m = k.c.masters[0]
            ok = wait_until(lambda: self._gained(m, n + 1), time.time() + 120 + n / 1000, 0.2)
            rebuilt = self._gained(m, n + 1)
            res["sked"]["rebuild_s"] = rebuilt - t_restart if ok and rebuilt else None
            restart_ms = int(t_restart * 1000)
            first = [None]

            def probe_fired():
                late = [j for j in jobs_seen(k.c.db, {"trigger_id": probe})
                        if j.get("started_at") and ms(j["started_at"]) >= restart_ms]
                first[0] = min(late, key=lambda j: j["started_at"]) if late else None
                return first[0] is not None
            wait_until(probe_fired, time.time() + 60 + n / 1000, 0.5)
            res["sked"]["first_fire_s"] = ((ms(first[0]["started_at"]) - restart_ms) / 1000) if first[0] else None
            time.sleep(PROBE_WATCH_S)  # the first reconcile pass (10 heartbeats after the load) reads every trigger
            if first[0]:
                ran = {ms(j["scheduled_for"]): ms(j["started_at"]) for j in jobs_seen(
                    k.c.db, {"trigger_id": probe, "scheduled_for": {"$gt": first[0]["scheduled_for"]}})
                    if j.get("started_at")}
                res["sked"].update(probe_figures(ran, ms(first[0]["scheduled_for"])))
            res["sked"]["rss_after_mib"] = rss_kib(m.popen.pid) / 1024
            res["sked"]["store"] = store_profile(k.c)
            if SCALE_MASTERS > 1:
                res["sked"]["masters"] = self._scale_masters(k, n + 1)
        finally:
            k.stop()
        if PEER:
            # Agenda: one process; it keeps no queue, each poll queries the store
            a = AgendaRun(self, "scale")
            try:
                now = datetime.datetime.now(datetime.timezone.utc)
                jobs = []
                for i, e in enumerate(exprs):
                    jobs.append(agenda_job("noop", {"k": i}, ms(self._yearly_next(e, now)), e))
                jobs.append(agenda_job("noop", {"k": "probe"}, now_ms() - 60000, "* * * * * *"))
                t = time.time()
                insert_many(a.db.agendaJobs, jobs)
                res["agenda"]["insert_s"] = time.time() - t
                p = a.start(1, 100, process_every=AGENDA_SCALE_PROCESS_EVERY_MS)[0]
                wait_until(lambda: any(r["k"] == "probe" for r in a.runs()), time.time() + 60 + n / 1000, 0.2)
                time.sleep(2)
                res["agenda"]["rss_mib"] = rss_kib(p.popen.pid) / 1024
                a.cpu_done += cpu_s(p.popen.pid)
                p.stop()
                a.db.agendaJobs.update_one({"data.k": "probe"}, {"$set": {"nextRunAt": dt(now_ms() - 1000),
                                                                            "lockedAt": None}})
                t_restart = time.time()
                restart_ms = int(t_restart * 1000)
                a.start(1, 100, process_every=AGENDA_SCALE_PROCESS_EVERY_MS)
                first = [None]

                def agenda_probe():
                    s = [r["start"] for r in a.runs() if r["k"] == "probe" and r["start"] >= restart_ms]
                    first[0] = min(s) if s else None
                    return bool(s)
                wait_until(agenda_probe, time.time() + 60 + n / 1000, 0.2)
                res["agenda"]["first_fire_s"] = (first[0] - restart_ms) / 1000 if first[0] else None
                if first[0]:
                    time.sleep(PROBE_WATCH_S)
                    ran = {r["scheduled"]: r["start"] for r in a.runs()
                           if r["k"] == "probe" and r["start"] and r["start"] > first[0]}
                    res["agenda"].update(probe_figures(ran, first[0] // 1000 * 1000))
                res["agenda"]["rss_after_mib"] = rss_kib(a.procs[-1].popen.pid) / 1024
            finally:
                a.stop()
        sk, ag = res["sked"], res["agenda"]
        w = f"scale ({n} cron triggers, 1 scheduler)"
        self.row(w, "scheduler RSS (MiB)", sk.get("rss_mib"), ag.get("rss_mib"))
        self.row(w, "kill -9 -> exit (s)" if SCALE_KILL else "SIGTERM -> exit, partitions' snapshots written (s)",
                 sk.get("stop_s"), "n/a (no queue)")
        self.row(w, "queue rebuilt after restart (s)", sk.get("rebuild_s"), "n/a (no queue)")
        self.row(w, "restart -> first fire of a due trigger (s)", sk.get("first_fire_s"), ag.get("first_fire_s"))
        self.row(w, f"that trigger's fire lag (every 1 s), max over the next {PROBE_WATCH_S} s (ms)",
                 sk.get("probe_lag_max_ms"), ag.get("probe_lag_max_ms"),
                 miss=(sk.get("probe_missed", ""), ag.get("probe_missed", "")))
        many = sk.get("masters") or {}
        if many:
            w = f"scale ({n} cron triggers, {SCALE_MASTERS} masters started at once)"
            self.row(w, "masters' RSS summed (MiB)", many.get("rss_sum_mib"), None)
            self.row(w, "masters' memory, shared library pages once (MiB)", many.get("once_mib"), None)
            self.row(w, "start -> every partition held and loaded (s)", many.get("loaded_s"), None)
        self.details["scale"] = res

    def _scale_masters(self, k, want):
        """Stops the master and starts SCALE_MASTERS afresh at once; once
        they hold every partition between them, no more than their share
        each, with `want` triggers scheduled in all (their member
        documents), samples each one's memory."""
        c = k.c
        for old in c.masters:
            old.stop()
            c.checked_stop.append(old)
        c.masters = []
        ports = [c.master_ports[0]] + [conftest.free_port() for _ in range(SCALE_MASTERS - 1)]
        c.master_ports = ports
        t0 = time.time()
        for i, port in enumerate(ports):
            c.start_master(i, port, SKED_LOG_LEVEL="info")
        share = math.ceil(PARTITIONS / SCALE_MASTERS)

        def loaded():
            docs = [c.db.members.find_one({"_id": f"master:master-{i}"}) or {} for i in range(SCALE_MASTERS)]
            parts = [len(d.get("partitions", [])) for d in docs]
            return (sum(parts) == PARTITIONS and max(parts) <= share and
                    sum(d.get("scheduled_triggers", 0) for d in docs) >= want)
        ok = wait_until(loaded, time.time() + 120 + want / 1000, 0.5)
        out = {"loaded_s": time.time() - t0 if ok else None}
        time.sleep(2)
        sm = [proc_kib(p.popen.pid, "smaps_rollup") for p in c.masters]
        out["rss_mib"] = [x.get("Rss", 0) / 1024 for x in sm]
        out["rss_sum_mib"] = sum(out["rss_mib"])
        # the masters map the same libraries: their shared pages counted once
        private = sum(x.get("Private_Clean", 0) + x.get("Private_Dirty", 0) for x in sm)
        shared = max((x.get("Shared_Clean", 0) + x.get("Shared_Dirty", 0) for x in sm), default=0)
        out["private_mib"], out["shared_once_mib"] = private / 1024, shared / 1024
        out["once_mib"] = (private + shared) / 1024
        log(f"scale/sked: {SCALE_MASTERS} masters: RSS {[round(r, 1) for r in out['rss_mib']]} MiB, "
            f"counted once {out['once_mib']:.1f} MiB, loaded in {out['loaded_s']}")
        return out

    @staticmethod
    def _gained(proc, want):
        """Time (epoch s) of the log line saying the master holds every
        partition with `want` triggers loaded, or None."""
        for line in proc.text().splitlines():
            if "partitions gained" in line:
                m = re.search(r"held=(\d+).*triggers=(\d+)", line)
                if m and int(m.group(1)) >= PARTITIONS and int(m.group(2)) >= want:
                    ts = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", line)
                    if ts:
                        return datetime.datetime.fromisoformat(ts.group(0).replace("Z", "+00:00")).timestamp()
                    return time.time()
        return None

    # failover -------------------------------------------------------------
    def failover(self):
        n, s = size("failover_triggers"), size("failover_seconds")
        kill_after = s // 3
        res = {}
        k = Sked(self, "failover", masters=3, workers=2,
                 worker_env={"SKED_WORKER_SLOTS": pool_slots(n, 2)})
        t0 = align(12000 + n * 4)
        docs = sked_interval_triggers(n, t0, 1, s, {"task_type": "noop", "overlap_policy": "allow"},
                                      misfire="fire_all")
        ids = {d["_id"]: i for i, d in enumerate(docs)}
        try:
            insert_many(k.c.db.triggers, docs)
            k.start()
            sleep_until_ms(t0 + kill_after * 1000)
            # the master holding the most partitions
            held = {}
            for name, text in k.c.scrape().items():
                m = re.search(r"^sked_leases_held (\S+)", text, re.M)
                held[name] = float(m.group(1)) if m else 0
            victim = max(k.c.masters, key=lambda p: held.get(p.name, 0))
            kill_ms = now_ms()
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait()
            k.c.checked_stop.append(victim)
            log(f"failover/sked: killed {victim.name} holding {held.get(victim.name)} partitions")
            sleep_until_ms(t0 + s * 1000)
            wait_progress(lambda: k.c.metric_sum("sked_jobs_finished_total"), n * s, DRAIN_S, 10)
            time.sleep(2)
            k.c.wait_written()
            profile = store_profile(k.c)
            runs = sked_runs(k.c.db, ids)
        finally:
            k.stop()
        expected = {(i, t0 + j * 1000) for i in range(n) for j in range(s)}
        res["sked"] = self._failover_figures(runs, expected, kill_ms, victim.name)
        res["sked"]["store"] = profile
        if PEER:
            a = AgendaRun(self, "failover")
            t0 = align(6000 + n * 2)
            try:
                insert_many(a.db.agendaJobs, agenda_every_second(n, t0, s))
                procs = a.start(3, max(100, n), lock_lifetime=LEASE_TTL_MS)
                sleep_until_ms(t0 + kill_after * 1000)
                counts = {}
                for r in a.runs():
                    counts[r["by"]] = counts.get(r["by"], 0) + 1
                victim = max(procs, key=lambda p: counts.get(p.popen.pid, 0))
                kill_ms = now_ms()
                victim.popen.send_signal(signal.SIGKILL)
                victim.popen.wait()
                sleep_until_ms(t0 + s * 1000)
                wait_progress(lambda: len(a.runs()), n * s, DRAIN_S, 10)
                runs = a.runs()
            finally:
                a.stop()
            expected = {(i, t0 + j * 1000) for i in range(n) for j in range(s)}
            res["agenda"] = self._failover_figures(runs, expected, kill_ms, victim.popen.pid)
        else:
            res["agenda"] = Absent()
        sk, ag = res["sked"], res["agenda"]
        w = f"failover ({n} triggers x 1/s, {s} s, 3 schedulers, kill -9 at {kill_after} s)"
        self.row(w, "kill -> its triggers fire again, first (s)", sk["again_first_s"], ag["again_first_s"],
                 dup=(sk["duplicates"], ag["duplicates"]), miss=(sk["misses"], ag["misses"]))
        self.row(w, "kill -> all its triggers fired again (s)", sk["again_all_s"], ag["again_all_s"])
        self.row(w, "fire lag p99 over the run (ms)", sk["p99"], ag["p99"])
        self.details["failover"] = res

    @staticmethod
    def _failover_figures(runs, expected, kill_ms, victim):
        f = fire_figures(runs, expected)
        del f["lags"]
        # the victim's triggers: those it ran last before the kill
        # (by start time; a sked job without started_at by its end)
        last = {}
        for r in runs:
            t = r["start"] if r["start"] is not None else r["end"]
            if t is not None and t < kill_ms:
                if r["k"] not in last or t > last[r["k"]][0]:
                    last[r["k"]] = (t, r["by"])
        mine = {kk for kk, (_, by) in last.items() if by == victim}
        # Fired again: by a survivor. A fire the victim claimed ahead
        # (SKED_FIRE_AHEAD_MS) starts on its worker after the kill, but
        # its partition has not been taken over by then.
        again = {}
        for r in runs:
            t = r["start"] if r["start"] is not None else r["end"]
            if r["k"] in mine and r["by"] != victim and t is not None and t >= kill_ms:
                again[r["k"]] = min(again.get(r["k"], t), t)
        f["victim_triggers"] = len(mine)
        f["again_first_s"] = (min(again.values()) - kill_ms) / 1000 if again else None
        f["again_all_s"] = (max(again.values()) - kill_ms) / 1000 if mine and len(again) == len(mine) else None
        f["kill_ms"] = kill_ms
        return f

    # output -----------------------------------------------------------------
    def table(self):
        def fmt(v):
            if v is None:
                return "-"
            if isinstance(v, str):
                return v
            if isinstance(v, float):
                return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
            return str(v)

        def ratio(r):
            sk, ag = r["sked"], r["agenda"]
            if not isinstance(sk, (int, float)) or not isinstance(ag, (int, float)):
                return "-"
            if r["better"] == "higher":
                return f"{sk / ag:.3g}x" if ag else "-"
            return f"{ag / sk:.3g}x" if sk else "-"

        head = ["workload", "figure", "sked", "Agenda", "ratio", "dup sked/Agenda", "miss sked/Agenda"]
        rows = [[r["workload"], r["figure"], fmt(r["sked"]), fmt(r["agenda"]), ratio(r),
                 f"{r['dup'][0]}/{fmt(r['dup'][1])}" if r["dup"][0] != "" else "",
                 f"{r['miss'][0]}/{fmt(r['miss'][1])}" if r["miss"][0] != "" else ""] for r in self.rows]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c) + " |" for c in rows]
        return "\n".join(lines)

    def plot(self, path):
        acc = self.details.get("accuracy")
        if not acc:
            return
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log("matplotlib not installed (make bench-deps): no plot")
            return
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, key, color in (("sked", "sked", "tab:blue"), ("Agenda", "agenda", "tab:orange")):
            lags = sorted(max(1, x) for x in acc[key].get("lags") or [])
            if lags:
                ys = [(i + 1) / len(lags) for i in range(len(lags))]
                ax.step(lags, ys, where="post", label=f"{name} (n={len(lags)}, p99={pct(lags, 99)} ms)",
                        color=color)
        ax.set_xscale("log")
        ax.set_xlabel("fire lag: scheduled time -> handler start (ms, log scale; <1 ms drawn at 1)")
        ax.set_ylabel("fraction of fires")
        n, s = size("accuracy_triggers"), size("accuracy_seconds")
        ax.set_title(f"fire lag, {n} triggers x 1/s for {s} s, FerretDB/SQLite, 2 cores")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        log(f"plot: {path}")

    def close(self):
        self.mongo.close()
        self.store.close()


def sizes_line():
    return ", ".join(f"{v[0]}={size(k)}" for k, v in SIZES.items()) + \
        f", BENCH_DRAIN_S={DRAIN_S}, BENCH_LEASE_TTL_MS={LEASE_TTL_MS}, BENCH_PARTITIONS={PARTITIONS}, " \
        f"BENCH_AGENDA_PROCESS_EVERY_MS={AGENDA_PROCESS_EVERY_MS}, " \
        f"BENCH_AGENDA_SCALE_PROCESS_EVERY_MS={AGENDA_SCALE_PROCESS_EVERY_MS}, BENCH_AGENDA_PROCESSES={AGENDA_PROCS}, " \
        f"BENCH_PEER={int(PEER)}"


def main():
    chosen = sys.argv[1:] or os.environ.get("BENCH_WORKLOADS", " ".join(WORKLOADS)).split()
    for w in chosen:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload '{w}' (choose from {', '.join(WORKLOADS)})")
    if PEER and not os.path.exists(os.path.join(AGENDA_DIR, "node_modules", "agenda")):
        sys.exit("Agenda is not installed: make bench-deps")
    started = time.time()
    b = Bench()
    try:
        for w in chosen:
            log(f"workload {w}")
            t = time.time()
            try:
                getattr(b, w)()
            except Exception as e:  # one failed workload must not hide the others
                log(f"workload {w} failed: {e!r}")
                b.row(w, f"FAILED: {e}", None, None)
            log(f"workload {w} took {time.time() - t:.0f} s")
    finally:
        b.close()
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"sizes": {k: size(k) for k in SIZES}, "rows": b.rows, "details": b.details,
                   "cpu": {f"{w}/{sy}": v for (w, sy), v in b.cpu.items()},
                   "elapsed_s": time.time() - started}, f, indent=1, default=str)
    b.plot(os.path.join(OUT, "fire_lag.png"))
    print(f"sked vs Agenda on FerretDB {os.path.basename(shutil.which('ferretdb') or 'ferretdb')} "
          f"(SQLite), {os.cpu_count()} cores; ratio > 1 means sked is better")
    print(f"sizes: {sizes_line()}")
    print(b.table())
    for w, r in b.details.items():
        prof = r.get("sked", {}).get("store")
        if prof:
            print(f"sked store round trips, {w}: " + "; ".join(
                f"{op} {p['count']} x {p['mean_ms']:.1f} ms (p99 <= {p['p99_le_ms'] or '-'} ms)"
                for op, p in sorted(prof.items())))
        if r.get("sked", {}).get("refused") is not None:
            print(f"sked JOBs refused by a worker with no free slot, {w}: {r['sked']['refused']:.0f} "
                  "(queued again: late by a credit round trip)")
    for w in chosen:
        sk, ag = b.cpu.get((w, "sked")), b.cpu.get((w, "agenda"))
        if sk:
            print(f"CPU seconds, {w}: sked processes {sk['scheduler']:.1f} + FerretDB {sk['store']:.1f}" +
                  (f"; Agenda processes {ag['scheduler']:.1f} + FerretDB {ag['store']:.1f}" if ag else ""))
    print(f"elapsed: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
