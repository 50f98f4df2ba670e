"""The benchmark harness's counting (tests/bench/run.py), on hand-made run
records: what `make bench` reports as duplicates, misses, lag percentiles
and jobs in flight for sked and for Agenda alike."""
import importlib.util
import os

import conftest

HERE = os.path.dirname(os.path.abspath(__file__))


def load_run():
    bin_dir = conftest.BIN  # run.py points conftest at the release binaries; keep ours
    spec = importlib.util.spec_from_file_location(
        "bench_run", os.path.join(HERE, "..", "bench", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        conftest.BIN = bin_dir
    return mod


run = load_run()


def rec(k, scheduled, start=None, end=None):
    return {"k": k, "scheduled": scheduled, "start": start, "end": end, "by": "x"}


def test_fire_figures_count_duplicates_misses_and_lags():
    expected = {(k, t) for k in range(2) for t in (1000, 2000, 3000)}
    runs = [
        rec(0, 1000, 1010, 1020), rec(0, 2000, 2030, 2040), rec(0, 3000, 3005, 3006),
        rec(1, 1000, 1100, 1200), rec(1, 1000, 1150, 1160),   # (1, 1000) ran twice
        rec(1, 2000, None, 2500),                             # ran, start unknown
        rec(1, 4000, 4001, 4002),                             # outside the window: ignored
        rec(1, 3000),                                         # never started or ended: a miss
    ]
    f = run.fire_figures(runs, expected)
    assert f["runs"] == 6
    assert f["duplicates"] == 1
    assert f["misses"] == 1
    assert f["no_start_time"] == 1
    assert sorted(f["lags"]) == [5, 10, 30, 100, 150]
    assert (f["p50"], f["p99"], f["max"]) == (30, 150, 150)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert run.pct(values, 50) == 50
    assert run.pct(values, 99) == 99
    assert run.pct([7], 99) == 7
    assert run.pct([], 50) is None


def test_max_in_flight_counts_overlaps_and_open_jobs():
    runs = [rec(0, 0, 0, 10), rec(1, 0, 5, 15), rec(2, 0, 10, 20),  # ends before starts at 10
            rec(3, 0, 12),                                           # still running at stop
            rec(4, 0)]                                               # never started
    assert run.max_in_flight(runs, stop_at=100) == 3
    assert run.max_in_flight([], stop_at=100) == 0


def test_failover_counts_only_fires_a_survivor_made():
    """A trigger fires again when a surviving scheduler runs it; a fire the
    killed one had claimed ahead and that starts after the kill does not
    count."""
    def by(k, scheduled, start, who):
        return dict(rec(k, scheduled, start, start + 1), by=who)
    kill = 10_000
    runs = [by(0, 9000, 9001, "m1"), by(1, 9000, 9001, "m1"), by(2, 9000, 9001, "m2"),
            by(0, 10_300, 10_300, "m1"),   # claimed ahead by the victim, started after the kill
            by(0, 13_000, 13_050, "m2"),   # taken over: fired again 3.05 s after the kill
            by(1, 14_000, 14_020, "m3"),   # 4.02 s
            by(2, 11_000, 11_001, "m2")]   # not the victim's trigger
    expected = {(k, t) for k in range(3) for t in (9000, 13_000)}
    f = run.Bench._failover_figures(runs, expected, kill, "m1")
    assert f["victim_triggers"] == 2
    assert (f["again_first_s"], f["again_all_s"]) == (3.05, 4.02)


def test_probe_figures_take_the_worst_lag_and_count_unrun_seconds():
    first = 1_000_000
    # Every second of the window ran except two; one ran 3.2 s late.
    ran = {first + 1000 * i: first + 1000 * i + 5 for i in range(1, run.PROBE_WATCH_S - 1)}
    del ran[first + 5000], ran[first + 6000]
    ran[first + 7000] = first + 10200
    f = run.probe_figures(ran, first)
    assert f == {"probe_lag_max_ms": 3200, "probe_missed": 2}
    assert run.probe_figures({}, first) == {"probe_lag_max_ms": None,
                                            "probe_missed": run.PROBE_WATCH_S - 2}


def test_workers_are_sized_for_the_fires_of_a_second():
    """accuracy and failover give their two workers n slots in all (Agenda's
    concurrency there), never fewer than the default 64 each."""
    assert run.pool_slots(20, 2) == 64
    assert run.pool_slots(1000, 2) == 500
    assert run.pool_slots(1001, 2) == 501
