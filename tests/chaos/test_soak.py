"""The soak: scenarios in random order, one after the other under the same
load, for SOAK_SECONDS (skipped when unset). `make soak SOAK_SECONDS=900`."""
import os
import random
import time

import pytest

import scenarios
from conftest import wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "0"))


@pytest.mark.skipif(SOAK_SECONDS <= 0, reason="set SOAK_SECONDS to soak")
def test_soak(chaos):
    rnd = random.Random(os.environ.get("SOAK_SEED") or time.time())
    end = time.time() + SOAK_SECONDS
    pool = scenarios.SHORT[1:] + scenarios.EXTRA
    n = 0
    while time.time() < end:
        scenario = rnd.choice(pool)
        chaos.restore()
        chaos.prune()
        wait_for(chaos.calm, 90, interval=1, what="the cluster to settle after the previous scenario")
        scenario(chaos)
        n += 1
    print(f"soak: {n} scenarios in {SOAK_SECONDS:.0f}s")
