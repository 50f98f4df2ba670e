"""The short chaos suite: each scenario under the steady load, then the
invariant checker (no duplicate, no gap, nothing stuck), the scenario's
own window (every expected fire run or skipped for an allowed reason) and
the lease fencing check. `make chaos`."""
import scenarios


def test_0_baseline(chaos):
    scenarios.baseline(chaos)


def test_1_kill9_master_then_restart(chaos):
    scenarios.kill9_master(chaos)


def test_2_kill9_worker_mid_job(chaos):
    scenarios.kill9_worker(chaos)


def test_3_isolate_master_host_past_lease_ttl(chaos):
    scenarios.isolate_master(chaos)


def test_4_store_outage(chaos):
    scenarios.store_outage(chaos, seconds=30)


def test_5_rolling_restart(chaos):
    scenarios.rolling_restart(chaos)


def test_6_add_worker_live_and_drain_one(chaos):
    scenarios.add_and_drain_worker(chaos)
