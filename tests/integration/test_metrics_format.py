"""The Prometheus text exposition of common/metrics.c, read by real parsers.

The unit-test runner renders a registry shaped like sked's (test
metrics_sample in tests/unit/test_metrics.c) and writes it to the file named
by SKED_METRICS_SAMPLE. Here it is checked three ways: line by line against
the grammar of the text format 0.0.4 (stricter than the Python parser),
with prometheus_client's parser (families, types, every value), and with
`promtool check metrics` when promtool is installed.

Needs no store: it only runs build/asan/bin/unit-tests (SKED_BIN_DIR).
"""
import math
import os
import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SKED_BIN_DIR", os.path.join(ROOT, "build", "asan", "bin"))

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]Inf|NaN)"
HELP_RE = re.compile(rf"# HELP ({NAME}) ((?:[^\\\n]|\\[\\n])*)")
TYPE_RE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram)")
SAMPLE_RE = re.compile(rf"({NAME})(\{{(?:{LABEL}(?:,{LABEL})*)?\}})? ({VALUE})")
SUFFIXES = {"counter": [""], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics") / "sample.prom"
    env = dict(os.environ, SKED_METRICS_SAMPLE=str(path))
    run = subprocess.run([os.path.join(BIN, "unit-tests"), "--test", "metrics_sample"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1..1\nok 1 - metrics_sample\n" in run.stdout, run.stdout
    raw = path.read_bytes()
    return raw.decode("utf-8")  # strict: the exposition must be UTF-8


def test_grammar(sample):
    """Every line is HELP, TYPE or a sample of the family TYPE announced."""
    assert sample.endswith("\n")
    families, series, current = set(), set(), None
    for n, line in enumerate(sample[:-1].split("\n"), 1):
        where = f"line {n}: {line!r}"
        if line.startswith("# HELP "):
            m = HELP_RE.fullmatch(line)
            assert m, where
            assert m.group(1) not in families, where  # HELP comes before TYPE, once
        elif line.startswith("# TYPE "):
            m = TYPE_RE.fullmatch(line)
            assert m, where
            assert m.group(1) not in families, where
            families.add(m.group(1))
            current = m.groups()
        else:
            m = SAMPLE_RE.fullmatch(line)
            assert m and current, where
            name, labels = m.group(1), m.group(2) or ""
            family, kind = current
            assert name in [family + s for s in SUFFIXES[kind]], where
            assert (name, labels) not in series, where
            series.add((name, labels))
            if kind == "histogram":
                assert ("le=" in labels) == (name.endswith("_bucket")), where


def families_by_name(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family, name=None, **fixed):
    """{tuple of the other label values: value} of family's samples called
    name (default: the family's own sample name) whose labels match fixed."""
    out = {}
    for s in family.samples:
        if name is not None and s.name != name:
            continue
        if any(s.labels.get(k) != v for k, v in fixed.items()):
            continue
        rest = tuple(v for k, v in s.labels.items() if k not in fixed)
        out[rest] = s.value
    return out


def test_families_and_types(sample):
    fams = families_by_name(sample)
    # counters lose _total in the parser's (OpenMetrics) model; samples keep it
    assert {n: f.type for n, f in fams.items()} == {
        "sked_jobs_finished": "counter",
        "sked_fires_skipped": "counter",
        "sked_jobs_lost": "counter",
        "sked_queue_depth": "gauge",
        "sked_worker_slots": "gauge",
        "sked_fire_lag_seconds": "histogram",
        "sked_job_duration_seconds": "histogram",
        "sked_http_requests": "counter",
        "sked_metrics_overflow": "counter",
    }
    assert fams["sked_jobs_finished"].documentation == "Jobs finished, by task type and status."
    assert {s.name for s in fams["sked_jobs_finished"].samples} == {"sked_jobs_finished_total"}


def test_counter_and_gauge_values(sample):
    fams = families_by_name(sample)
    assert values(fams["sked_jobs_finished"]) == {
        ("noop", "succeeded"): 41, ("echo", "failed"): 2, ("sleep", "timed_out"): 1}
    assert [(s.labels, s.value) for s in fams["sked_jobs_finished"].samples][0] == (
        {"task_type": "noop", "status": "succeeded"}, 41)
    assert values(fams["sked_fires_skipped"]) == {("overlap",): 3}
    assert values(fams["sked_jobs_lost"]) == {(): 0}  # unlabelled: 0 before any update
    assert values(fams["sked_queue_depth"]) == {(): 12}

    slots = values(fams["sked_worker_slots"])
    assert math.isnan(slots.pop(("sleep", "unknown")))
    assert slots == {("noop", "free"): 60, ("noop", "used"): 4, ("sleep", "ratio"): 0.125,
                     ("sleep", "unbounded"): math.inf, ("sleep", "negative"): -2.5}


def check_histogram(family, **fixed):
    """Buckets cumulative, ending in +Inf == _count; returns ({le: n}, sum, count)."""
    buckets = values(family, family.name + "_bucket", **fixed)
    les = [float(le) for (le,) in buckets]
    counts = [buckets[(le,)] for (le,) in buckets]
    assert les == sorted(les) and les[-1] == math.inf
    assert counts == sorted(counts)
    (total,) = values(family, family.name + "_sum", **fixed).values()
    (count,) = values(family, family.name + "_count", **fixed).values()
    assert counts[-1] == count
    return dict(zip(les, counts)), total, count


def test_histograms(sample):
    fams = families_by_name(sample)
    lag, total, count = check_histogram(fams["sked_fire_lag_seconds"])
    # observed 0.0004 0.002 0.003 0.05 0.5 2 20 into 0.001 0.01 0.1 1 10
    assert lag == {0.001: 1, 0.01: 3, 0.1: 4, 1: 5, 10: 6, math.inf: 7}
    assert total == pytest.approx(22.5554) and count == 7

    dur = fams["sked_job_duration_seconds"]
    noop, total, count = check_histogram(dur, task_type="noop")
    assert (noop[0.001], total, count) == (1, 0.0005, 1)
    sleep, total, count = check_histogram(dur, task_type="sleep")
    assert (sleep[1], sleep[2.5], sleep[3600], sleep[math.inf]) == (0, 1, 1, 2)
    assert (total, count) == (4001.5, 2)
    assert len(noop) == 19  # 18 default bounds + +Inf


def test_escaping_and_overflow(sample):
    fams = families_by_name(sample)
    http = fams["sked_http_requests"]
    assert http.documentation == (
        "HTTP requests by route, method and status.\nRoutes are templates, never raw paths "
        "(\\ and newline in help are escaped).")
    assert values(http) == {
        ("/api/scheduler/triggers/{id}", "GET", "200"): 10,
        ('/a "quoted" \\ back\\slash\nnewline', "GET", "404"): 1,
        ("caf\u00e9 bad\ufffd", "GET", "200"): 1,  # the byte 0xff is not UTF-8
        ("other", "other", "other"): 2,            # limit 3: /x and /y overflowed
    }
    assert values(fams["sked_metrics_overflow"]) == {("sked_http_requests_total",): 2}


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_promtool(sample):
    run = subprocess.run(["promtool", "check", "metrics"], input=sample, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
