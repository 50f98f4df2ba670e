"""Chaos suite: a multi-host sked cluster in network namespaces
(deploy/netns-cluster.sh), a steady load through the gateway, faults, and
after each fault the invariant checker plus per-scenario statistics.

One cluster for the whole session (scenarios run one after the other under
the same load, as in production); each scenario first brings back anything
a previous one left down. `down` runs at the end even when a test fails,
and the session fails if a process did not exit 0 on SIGTERM or its log
holds a sanitizer report.

Environment: SKED_BIN_DIR (default build/asan/bin), CHAOS_DIR (default
var/chaos), CHAOS_PREFIX (sked namespaces/links prefix, default skc),
CHAOS_SUBNET (default 10.77.1), SOAK_SECONDS (test_soak only).
"""
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict

import jwt
import pymongo
import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import check_invariants  # noqa: E402
from check_invariants import jobs_seen  # noqa: E402

SCRIPT = os.path.join(ROOT, "deploy", "netns-cluster.sh")
CHAOS_DIR = os.environ.get("CHAOS_DIR", os.path.join(ROOT, "var", "chaos"))
PREFIX = os.environ.get("CHAOS_PREFIX", "skc")
SUBNET = os.environ.get("CHAOS_SUBNET", "10.77.1")
LEASE_TTL_MS = 3000
SETTINGS = {
    "SKED_LEASE_TTL_MS": str(LEASE_TTL_MS),
    "SKED_HEARTBEAT_MS": "300",
    "SKED_WORKER_TIMEOUT_MS": "1500",
    "SKED_PARTITIONS": "8",
    "SKED_LOG_LEVEL": "info",
    "SKED_DRAIN_TIMEOUT_MS": "10000",
    "SKED_RATE_LIMIT": "0",
}
# A skip allowed by the load's policies (overlap allow, misfire fire_once).
ALLOWED_SKIPS = {"misfire_coalesced"}
NON_FINAL = ("queued", "running", "retrying")

TICKS = int(os.environ.get("CHAOS_TICKS", "5"))  # noop triggers every second (10 saturates FerretDB on 2 cores)
RESULTS = []  # rows of the final table
STARTED = re.compile(r"job started job=(\S+) attempt=(\d+)")


def utcnow():
    """Now, in whole milliseconds. The store keeps dates in milliseconds and
    pymongo drops the rest of a query's bound, so a window end of 12:00:00.0004
    would count the 12:00:00 fire as expected in Python yet find no job
    below 12:00:00.000 in the store: seven "missing" fires once in a while."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def wait_for(pred, timeout, interval=0.2, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
        except (requests.RequestException, pymongo.errors.PyMongoError) as e:
            last = f"error: {e}"
            last_ok = False
        else:
            last_ok = bool(last)
        if last_ok:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


class NetnsCluster:
    def __init__(self):
        self.env = dict(os.environ)
        self.env.update(SETTINGS)
        self.env.update({"SKED_CLUSTER_DIR": CHAOS_DIR, "SKED_NETNS_PREFIX": PREFIX,
                         "SKED_NETNS_SUBNET": SUBNET})
        if os.path.isdir("/dev/shm"):  # FerretDB/SQLite syncs a lot; keep its files in memory
            self.env.setdefault("SKED_STORE_DIR", f"/dev/shm/sked-{PREFIX}-store")
        self.env.setdefault("SKED_BIN_DIR", os.path.join(ROOT, "build", "asan", "bin"))
        self.url = f"http://{SUBNET}.11:8080"
        self.store_uri = f"mongodb://{SUBNET}.10:27017/"
        self.http = requests.Session()
        self.http.trust_env = False  # never through a proxy
        self.mongo = None
        self.db = None
        self.triggers = []
        self.down_output = ""
        self.deleted = {}  # job id -> scheduled_for, of the jobs prune() removed

    # --- the script ---
    def sh(self, *args, check=True, timeout=120):
        r = subprocess.run([SCRIPT, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"netns-cluster.sh {' '.join(args)} -> {r.returncode}\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def up(self):
        self.sh("down", check=False)
        self.sh("up", timeout=180)
        with open(os.path.join(CHAOS_DIR, "jwt-secret")) as f:
            self.secret = f.read().strip()
        self.mongo = pymongo.MongoClient(self.store_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        self.db = self.mongo["sked"]

    def down(self):
        if self.mongo:
            self.mongo.close()
            self.mongo = None
        r = self.sh("down", check=False, timeout=300)
        self.down_output = r.stdout + r.stderr
        return r.returncode

    def kill(self, name, sig="TERM"):
        """Signals NAME and waits for it to end; returns its exit status."""
        r = self.sh("kill", name, f"-{sig}")
        return r.stdout.strip().rsplit(" ", 1)[-1]

    def start(self, name):
        self.sh("start", name)

    def isolate(self, host):
        self.sh("isolate", host)

    def heal(self, host):
        self.sh("heal", host)

    def pid(self, name):
        r = self.sh("pid", name, check=False)
        return int(r.stdout) if r.stdout.strip() else None

    def alive(self, name):
        p = self.pid(name)
        if not p:
            return False
        try:
            os.kill(p, 0)
            return True
        except OSError:
            return False

    def procs(self):
        return self.sh("procs").stdout.split()

    def hosts(self):
        return [l.split()[0] for l in self.sh("hosts").stdout.splitlines()]

    def double_runs(self):
        """(job, attempt) pairs that some worker started more than once,
        from every worker's log: a dispatch that reached two workers, or
        one worker twice."""
        seen = Counter()
        logdir = os.path.join(CHAOS_DIR, "log")
        for f in os.listdir(logdir):
            if f.startswith("worker-"):
                for line in open(os.path.join(logdir, f), errors="replace"):
                    m = STARTED.search(line)
                    if m:
                        seen[m.groups()] += 1
        return [k for k, n in seen.items() if n > 1]

    def log(self, name):
        with open(os.path.join(CHAOS_DIR, "log", f"{name}.log"), errors="replace") as f:
            return f.read()

    # --- the API ---
    def token(self, sub="chaos", role="user", ttl=7200):
        now = int(time.time())
        return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl},
                          self.secret, algorithm="HS256")

    def api(self, method, path, **kw):
        kw.setdefault("headers", {"Authorization": f"Bearer {self.token()}"})
        kw.setdefault("timeout", 10)
        return self.http.request(method, f"{self.url}/api/scheduler{path}", **kw)

    def health(self):
        try:
            return self.http.get(f"{self.url}/api/scheduler/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}

    def healthy(self, masters=None, workers=None, owning=False):
        """The store is reachable, all 8 partitions are covered, the given
        masters heartbeat (and hold partitions when `owning`) and the given
        workers are connected."""
        h = self.health()
        if not h.get("store", {}).get("reachable") or h.get("partitions", {}).get("covered") != 8:
            return False
        live_m = {m["node_id"] for m in h.get("masters", [])
                  if not owning or m.get("partitions", 0) > 0}
        # Presence only: a worker restarted under the same node id can show
        # `draining` until its old connection expires on the masters.
        live_w = {w["node_id"] for w in h.get("workers", [])}
        if masters is not None and not set(masters) <= live_m:
            return False
        if workers is not None and not set(workers) <= live_w:
            return False
        return h

    def create_load(self):
        """10 noop triggers every second, 2 sleep-3s triggers every 5 s,
        overlap allowed (every fire must run)."""
        start = (utcnow() + dt.timedelta(seconds=2)).replace(microsecond=0)
        at = start.isoformat().replace("+00:00", "Z")
        specs = [(f"tick-{i}", 1, {"task_type": "noop"}) for i in range(TICKS)]
        specs += [(f"long-{i}", 5, {"task_type": "sleep", "parameters": {"seconds": 3}})
                  for i in range(2)]
        for name, every, ex in specs:
            ex = dict(ex, overlap_policy="allow")
            r = self.api("POST", "/triggers/", json={
                "name": name, "trigger_config": {"interval": every, "unit": "seconds", "start_at": at},
                "execution_config": ex})
            assert r.status_code == 201, r.text
            self.triggers.append(r.json()["id"])

    def restore(self):
        """Brings back whatever a scenario left down: links, store,
        processes; waits for a healthy cluster."""
        for h in self.hosts():
            self.heal(h)
        if not self.alive("store"):
            self.start("store")
        for name in ["store"] + [p for p in self.procs() if p != "store"]:
            if not self.alive(name):
                self.start(name)
        masters = [p for p in self.procs() if p.startswith("master-")]
        ws = [p for p in self.procs() if p.startswith("worker-")]
        wait_for(lambda: self.healthy(masters=masters, workers=ws), 60,
                 what="every master and worker back, all partitions covered")

    def prune(self):
        """Deletes the jobs earlier scenarios checked. FerretDB v1 (SQLite)
        evaluates most filters in Go over the whole collection (every status
        update whose filter has more than `_id`, every takeover scan), so a
        growing jobs collection slows the store down until leases lapse; a
        real MongoDB would not need this. Per trigger, only jobs older than
        its oldest non-final job go, so no gap is created. The deleted ids
        are remembered: one that appears again is a re-fire of a fire that
        was already claimed (counted as a duplicate)."""
        cutoff = utcnow() - dt.timedelta(seconds=10)
        keep_after = utcnow() - dt.timedelta(minutes=10)
        self.deleted = {i: at for i, at in self.deleted.items() if at > keep_after}
        for tid in self.triggers:
            live = [j for j in jobs_seen(self.db, {"trigger_id": tid}, {"scheduled_for": 1, "status": 1})
                    if j.get("status") in NON_FINAL]
            oldest = min(live, key=lambda j: j["scheduled_for"]) if live else None
            bound = min(cutoff, aware(oldest["scheduled_for"])) if oldest else cutoff
            docs = list(self.db.jobs.find({"trigger_id": tid, "scheduled_for": {"$lt": bound}},
                                          {"_id": 1, "scheduled_for": 1}))
            if docs:
                self.db.jobs.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
            self.deleted.update({d["_id"]: aware(d["scheduled_for"]) for d in docs})

    def calm(self):
        """Every 1-s trigger's fires of [now-5 s, now-2 s) ran, each started
        within 1 s: no leftover lease thrash from an earlier scenario."""
        now = utcnow()
        ticks = [t["_id"] for t in self.db.triggers.find({"_id": {"$in": self.triggers},
                                                          "schedule.period_ms": 1000}, {"_id": 1})]
        jobs = list(jobs_seen(self.db, {"trigger_id": {"$in": ticks},
                                       "scheduled_for": {"$gte": now - dt.timedelta(seconds=5),
                                                         "$lt": now - dt.timedelta(seconds=2)}}))
        if len(jobs) < 3 * len(ticks):
            return False
        return all(j.get("started_at") and
                   (aware(j["started_at"]) - aware(j["scheduled_for"])).total_seconds() < 1.0
                   for j in jobs)

    def refires(self):
        if not self.deleted:
            return []
        return [(j["_id"], j.get("status"), j.get("created_at"))
                for j in self.db.jobs.find({"_id": {"$in": list(self.deleted)}})]


@pytest.fixture(scope="session")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the chaos suite needs root (ip netns)")
    c = NetnsCluster()
    try:
        c.up()
        c.create_load()
        wait_for(lambda: c.db.jobs.count_documents({"status": "succeeded"}) >= 20, 20,
                 what="the load to run")
        yield c
    finally:
        rc = c.down()
        print("\n--- netns-cluster.sh down ---\n" + c.down_output)
        report_path = os.path.join(CHAOS_DIR, "down-report.txt")
        os.makedirs(CHAOS_DIR, exist_ok=True)
        with open(report_path, "w") as f:
            f.write(c.down_output)
        store_dir = c.env.get("SKED_STORE_DIR", "")
        if rc == 0 and store_dir.startswith("/dev/shm/sked-"):
            shutil.rmtree(store_dir, ignore_errors=True)  # memory, not disk
    assert rc == 0, f"a process did not exit 0 on SIGTERM or tripped a sanitizer:\n{c.down_output}"


@pytest.fixture
def chaos(cluster):
    """Restores the cluster before the scenario (a failed earlier scenario
    must not spoil this one)."""
    cluster.restore()
    cluster.prune()
    wait_for(cluster.calm, 90, interval=1, what="the cluster to settle after the previous scenario "
             "(every 1-s fire of the last 3 s run within 1 s)")
    return cluster


# --- measuring a scenario -------------------------------------------------

def grid(sched, t0, t1):
    first, period = sched["first_fire_at"], dt.timedelta(milliseconds=sched["period_ms"])
    if first.tzinfo is None:
        first = first.replace(tzinfo=dt.timezone.utc)
    k = max(0, -(-(t0 - first) // period))
    out = []
    t = first + k * period
    while t < t1:
        out.append(t)
        t += period
    return out


def aware(t):
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def scenario_stats(c, name, t0, t_fault, t1):
    """Counts the window [t0, t1) of scheduled times; recovery: from the
    fault until the last 1-s fire that started more than 1 s late."""
    triggers = {t["_id"]: t for t in c.db.triggers.find({"_id": {"$in": c.triggers}})}
    expected = run = missing = lost = 0
    missing_fires = []  # (trigger name, fire time, the trigger's latest job before t1)
    skipped = Counter()
    dup = 0
    late_until = None
    for tid, t in triggers.items():
        jobs = defaultdict(list)
        for j in jobs_seen(c.db, {"trigger_id": tid, "scheduled_for": {"$gte": t0, "$lt": t1}}):
            jobs[aware(j["scheduled_for"])].append(j)
        period = t["schedule"]["period_ms"]
        for at in grid(t["schedule"], t0, t1):
            expected += 1
            js = jobs.get(at, [])
            if not js:
                missing += 1
                latest = max(jobs) if jobs else None
                missing_fires.append((t.get("name", tid), at.isoformat(),
                                      latest.isoformat() if latest else None))
                continue
            dup += len(js) > 1
            j = js[0]
            if j["status"] == "skipped":
                skipped[j.get("skip_reason")] += 1
            elif j["status"] != "cancelled":
                run += 1
            if j["status"] == "lost" or any(a.get("status") == "lost" for a in j.get("attempts") or []):
                lost += 1
            if period == 1000 and at >= t_fault:
                began = aware(j.get("started_at")) or aware(j.get("created_at")) or at
                if j["status"] == "skipped" or (began - at).total_seconds() > 1.0:
                    if late_until is None or began > late_until:
                        late_until = began
    rec = (late_until - t_fault).total_seconds() if late_until else 0.0
    report = check_invariants.check(c.db, stuck_after=20)
    refired = c.refires()
    doubles = c.double_runs()
    row = {"scenario": name, "expected": expected, "run": run, "skipped": dict(skipped),
           "duplicates": dup + len(refired), "refired": refired, "double_runs": doubles, "missing": missing,
           "missing_fires": missing_fires, "lost": lost,
           "recovery_s": round(rec, 1), "check": report}
    RESULTS.append(row)
    return row


def assert_clean(row, max_recovery=None):
    rep = row["check"]
    problems = []
    if rep["duplicates"]:
        problems.append(f"duplicates {rep['duplicates'][:5]}")
    if rep["gaps"]:
        problems.append(f"gaps {rep['gaps'][:5]}")
    if rep["stuck"]:
        problems.append(f"stuck {rep['stuck'][:5]}")
    if row["duplicates"]:
        problems.append(f"{row['duplicates']} duplicate fires in the window (re-fired: {row['refired'][:5]})")
    if row["missing"]:
        problems.append(f"{row['missing']} fires neither run nor recorded "
                        f"(trigger, fire, its latest job): {row['missing_fires'][:5]}")
    if row["double_runs"]:
        problems.append(f"attempts started twice by workers: {row['double_runs'][:5]}")
    bad = set(row["skipped"]) - ALLOWED_SKIPS
    if bad:
        problems.append(f"skips not allowed by the policies: {bad}")
    if max_recovery is not None and row["recovery_s"] > max_recovery:
        problems.append(f"recovery {row['recovery_s']}s > {max_recovery}s")
    assert not problems, f"{row['scenario']}: " + "; ".join(problems)


def fencing_violations(c, since):
    """Jobs claimed by a master outside its lease epoch: the epoch document
    named by the job must belong to the job's master, and the claim must
    not come after that epoch ended (expired or released, store time)."""
    out = []
    leases = {d["_id"]: d for d in c.db.locks.find({"kind": "lease"})}
    for j in c.db.jobs.find({"created_at": {"$gte": since}, "epoch": {"$exists": True}},
                            {"partition": 1, "epoch": 1, "master": 1, "created_at": 1}):
        d = leases.get(f"partition/{j['partition']}#{j['epoch']}")
        if d is None or d.get("owner") != j.get("master"):
            out.append((j["_id"], "epoch not held by its master", d and d.get("owner")))
            continue
        end = aware(d.get("released_at") or d.get("expires_at"))
        if end and aware(j["created_at"]) > end + dt.timedelta(milliseconds=250):
            out.append((j["_id"], "claimed after its epoch ended",
                        (aware(j["created_at"]) - end).total_seconds()))
    return out


def settle(c, seconds=5):
    """Lets running jobs finish after the cluster is whole again."""
    time.sleep(seconds)


def caught_up(c, t1, timeout=30):
    """Waits until every trigger has a job at or after t1: the masters
    have decided every fire before it. A fire claimed late is then counted
    as run (its lateness shows in the recovery time) rather than as lost;
    one still missing after this was never claimed."""
    def done():
        return all(c.db.jobs.find_one({"trigger_id": tid, "scheduled_for": {"$gte": t1}}, {"_id": 1})
                   for tid in c.triggers)
    end = time.time() + timeout
    while time.time() < end and not done():
        time.sleep(0.5)


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    lines = format_table(RESULTS)
    terminalreporter.write_sep("=", "chaos scenarios")
    for l in lines:
        terminalreporter.write_line(l)
    try:
        os.makedirs(CHAOS_DIR, exist_ok=True)
        with open(os.path.join(CHAOS_DIR, "report.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    except OSError:
        pass


def format_table(rows):
    head = ("scenario", "expected", "run", "skipped (by reason)", "dup", "lost fires",
            "lost attempts", "double runs", "stuck", "recovery s")
    body = []
    for r in rows:
        sk = ", ".join(f"{k}:{v}" for k, v in sorted(r["skipped"].items())) or "-"
        body.append((r["scenario"], str(r["expected"]), str(r["run"]), sk, str(r["duplicates"]),
                     str(r["missing"]), str(r["lost"]), str(len(r["double_runs"])),
                     str(len(r["check"]["stuck"])),
                     f"{r['recovery_s']:.1f}"))
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda row: "  ".join(v.ljust(w[i]) for i, v in enumerate(row))  # noqa: E731
    return [fmt(head), fmt(tuple("-" * n for n in w))] + [fmt(b) for b in body]
