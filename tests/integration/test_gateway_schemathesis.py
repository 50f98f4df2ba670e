"""Property-based run of every documented operation (schemathesis): the
OpenAPI document the gateway serves drives the generated requests, valid
(positive) and invalid (negative) ones, sent with an admin token to a real
cluster. Every answer must be documented for its operation (status,
content type, schema), none may be a 5xx, and no process may crash or trip
a sanitizer (the cluster fixture checks that when it stops).

Path ids are random for most cases; a part of them are replaced with a
real trigger's or job's id so that the operations also act on something.
The examples are derandomized so a failure reproduces;
SKED_SCHEMATHESIS_EXAMPLES raises their number per operation and mode
(default 20) and SKED_SCHEMATHESIS_SEED picks other ones, for a longer
local hunt."""
import os
import time

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

EXAMPLES = int(os.environ.get("SKED_SCHEMATHESIS_EXAMPLES", "20"))
SEED = int(os.environ["SKED_SCHEMATHESIS_SEED"]) if os.environ.get("SKED_SCHEMATHESIS_SEED") else None
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# - Header values with control characters (but tab) or DEL are not HTTP
#   (RFC 9110 field-vchar): h2o refuses such a head with its plain 400
#   before the API sees it, as README says. schemathesis sends them by
#   default, for servers that take them.
# - Unknown query parameters are ignored, as FastAPI does (README), so
#   sending them is not invalid input here.
# - The token is ours (an admin's), not generated.
CONFIG = schemathesis.Config.from_dict({"generation": {
    "exclude-header-characters": "".join(chr(c) for c in range(32) if c != 9) + "\x7f",
    "allow-extra-parameters": False, "with-security-parameters": False}})
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
TRIGGER = {"name": "fuzz-target", "trigger_config": {"cron_expression": "0 3 * * *"},
           "execution_config": {"task_type": "noop", "parameters": {"a": [1, {"b": None}]}}}


class Targets:
    """Real ids to put in paths: a trigger (made again when a case deletes
    or renames it away) and a job of it."""

    def __init__(self, cluster, session, headers):
        self.cluster, self.s, self.h = cluster, session, headers
        self.n = 0
        self.trigger_id = self.job_id = None
        self.refresh()

    def api(self, method, path, **kw):
        return self.s.request(method, f"{self.cluster.url}/api/scheduler{path}", headers=self.h,
                              timeout=30, **kw)

    def refresh(self):
        if self.trigger_id and self.api("GET", f"/triggers/{self.trigger_id}").status_code == 200:
            return
        self.n += 1
        r = self.api("POST", "/triggers/", json={**TRIGGER, "name": f"fuzz-target-{self.n}"})
        assert r.status_code == 201, r.text
        self.trigger_id = r.json()["id"]
        r = self.api("POST", f"/triggers/{self.trigger_id}/execute", json={})
        assert r.status_code == 202, r.text
        self.job_id = r.json()["job_id"]

    def apply(self, case):
        """Puts the real ids in case's path, unless the path is what a
        negative case made invalid."""
        path = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
        if path is not None and path.mode == schemathesis.GenerationMode.NEGATIVE:
            return
        self.refresh()
        params = case.path_parameters or {}
        if "trigger_id" in params:
            params["trigger_id"] = self.trigger_id
        if "job_id" in params:
            params["job_id"] = self.job_id


def negatable(op):
    """Whether op has anything invalid to send: a query, a body, or a path
    parameter narrower than any string (not so for GET /triggers/{id})."""
    return bool(list(op.body)) or any(
        p.location.value == "query" or
        (p.location.value == "path" and set(p.definition.get("schema", {})) - {"type"})
        for p in op.iter_parameters())


def run_operation(op, mode, cluster, session, headers, targets):
    checks = CHECKS + ([negative_data_rejection] if mode == schemathesis.GenerationMode.NEGATIVE
                       else [])

    @given(case=op.as_strategy(generation_mode=mode), real=st.booleans())
    @hypothesis.seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED is None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              verbosity=hypothesis.Verbosity.quiet)
    def check(case, real):
        if real:
            targets.apply(case)
        case.call_and_validate(base_url=cluster.url, session=session, headers=headers,
                               checks=checks, timeout=30)

    check()


def test_every_operation_against_its_document(cluster):
    # No rate limit: the run is faster than any sane limit, and a 429
    # (documented everywhere) would hide the answers under test.
    cluster.start(masters=1, workers=1, gateway_env={"SKED_RATE_LIMIT": 0})
    t0 = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{cluster.url}/docs/openapi/scheduler_openapi.json",
                                           config=CONFIG, timeout=10)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {cluster.token('fuzz-admin', 'admin')}"}
    targets = Targets(cluster, session, headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    doc = requests.get(f"{cluster.url}/docs/openapi/scheduler_openapi.json", timeout=10).json()
    assert len(operations) == sum(m in METHODS for ops in doc["paths"].values() for m in ops)
    failures, took = [], {}
    for op in operations:
        if not cluster.gateway.alive():
            failures.append(f"the gateway died before {op.method.upper()} {op.path} (see its log)")
            break
        modes = [schemathesis.GenerationMode.POSITIVE] + (
            [schemathesis.GenerationMode.NEGATIVE] if negatable(op) else [])
        for mode in modes:
            t1 = time.monotonic()
            try:
                run_operation(op, mode, cluster, session, headers, targets)
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - collect all findings
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {str(e)[:3000]}")
            took[f"{op.method.upper()} {op.path} ({mode.value})"] = time.monotonic() - t1
    elapsed = time.monotonic() - t0
    assert not failures, "\n\n".join(failures)
    # Every process is still up; the fixture then checks clean exits and
    # sanitizer reports.
    for p in [cluster.gateway] + cluster.masters + cluster.workers:
        assert p.alive(), f"{p.name} died during the run"
    slowest = sorted(took.items(), key=lambda kv: -kv[1])[:3]
    print(f"schemathesis: {len(operations)} operations, {EXAMPLES} examples per mode, "
          f"{elapsed:.1f} s; slowest: " + ", ".join(f"{k} {v:.1f} s" for k, v in slowest))
