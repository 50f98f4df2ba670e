"""Fire-lag benchmark: N interval triggers firing every second for D
seconds on a local cluster of release binaries (bin/) against FerretDB;
prints p50/p99/max of scheduled_for -> started_at (worker start) and of
scheduled_for -> created_at (claim), plus duplicates and gaps.

    make bench-lag [BENCH_TRIGGERS=100] [BENCH_SECONDS=20]
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import conftest  # noqa: E402
from check_invariants import jobs_seen  # noqa: E402

N = int(os.environ.get("BENCH_TRIGGERS", "100"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    conftest.BIN = os.path.join(conftest.ROOT, "bin")
    with tempfile.TemporaryDirectory() as d:
        store = conftest.Store(d)
        c = conftest.Cluster(store, d, "bench")
        try:
            c.start(masters=2, workers=2, master_env={"SKED_LOG_LEVEL": "warn"},
                    worker_env={"SKED_LOG_LEVEL": "warn"})
            for i in range(N):
                r = c.api("POST", "/triggers/", json={
                    "name": f"lag-{i}", "trigger_config": {"interval": 1, "unit": "seconds"},
                    "execution_config": {"task_type": "noop"}})
                assert r.status_code == 201, r.text
            t0 = time.time()
            time.sleep(SECONDS)
            jobs = list(jobs_seen(c.db, {}, {"scheduled_for": 1, "created_at": 1, "started_at": 1,
                                             "trigger_id": 1, "status": 1}))
        finally:
            c.stop()
            store.close()
    run = [j for j in jobs if j.get("started_at")]
    start_lag = [(j["started_at"] - j["scheduled_for"]).total_seconds() * 1000 for j in run]
    claim_lag = [(j["created_at"] - j["scheduled_for"]).total_seconds() * 1000 for j in jobs]
    keys = [(j["trigger_id"], j["scheduled_for"]) for j in jobs]
    print(f"fire lag, {N} triggers x 1/s for {SECONDS} s, 2 masters, 2 workers, FerretDB/SQLite")
    print(f"jobs: {len(jobs)} claimed, {len(run)} started, "
          f"{sum(1 for j in jobs if j['status'] == 'succeeded')} succeeded, "
          f"duplicates: {len(keys) - len(set(keys))}")
    for name, v in (("claim (scheduled_for -> created_at)", claim_lag),
                    ("start (scheduled_for -> started_at)", start_lag)):
        if v:
            print(f"{name:40s} p50 {pct(v, 50):7.1f} ms  p99 {pct(v, 99):7.1f} ms  max {max(v):7.1f} ms")
    expected = N * (SECONDS - 1)
    print(f"expected at least ~{expected} fires in the window; got {len(jobs)}; elapsed {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
