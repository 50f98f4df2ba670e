"""The OpenAPI document: served as JSON and YAML without a token, valid
OpenAPI 3.1, and true to the gateway: every documented operation is
served, every other method on a documented path is refused with 405, and
every answer the gateway gives in these calls matches the schema the
document declares for it."""
import datetime as dt
import json
import os

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import BIN, ROOT, Proc, wait_port

DOC_PATH = os.path.join(ROOT, "docs", "openapi", "scheduler_openapi.json")
METHODS = ("get", "post", "put", "patch", "delete")


def start_gateway(cluster, **env):
    """Only a gateway (no masters or workers) against the cluster's store."""
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", **env), cluster.logdir)
    wait_port(cluster.http_port)
    return cluster


class Spec:
    """The document, with response checking against its schemas."""

    def __init__(self, doc):
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource("urn:sked", resource)

    def resolve(self, obj):
        while "$ref" in obj:
            node = self.doc
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def check(self, template, method, r):
        """Asserts r is a documented answer of the operation and that its
        JSON body matches the documented schema."""
        op = self.doc["paths"][template][method.lower()]
        responses = op["responses"]
        status = str(r.status_code)
        assert status in responses, f"{method} {template} answered undocumented {status}: {r.text[:300]}"
        resp = self.resolve(responses[status])
        content = resp.get("content", {})
        if not content:
            assert not r.content, f"{method} {template} {status} has a body"
            return
        ctype = r.headers["Content-Type"].split(";")[0]
        assert ctype in content, (method, template, status, ctype)
        if ctype != "application/json":
            return
        schema = content[ctype]["schema"]
        if "$ref" in schema:
            schema = {"$ref": "urn:sked" + schema["$ref"]}
        validator = Draft202012Validator(schema, registry=self.registry,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(r.json()), key=lambda e: list(e.path))
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture(scope="module")
def spec():
    with open(DOC_PATH) as f:
        return Spec(json.load(f))


def test_document_is_served_as_json_and_yaml_and_is_valid(cluster, spec):
    start_gateway(cluster)
    base = f"{cluster.url}/docs/openapi/scheduler_openapi"
    rj = requests.get(base + ".json", timeout=10)     # no token needed
    assert rj.status_code == 200, rj.text
    assert rj.headers["Content-Type"].startswith("application/json")
    assert rj.json() == spec.doc, "the gateway serves the repository's document"
    ry = requests.get(base + ".yaml", timeout=10)
    assert ry.status_code == 200
    assert ry.headers["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(ry.text) == spec.doc, "the YAML says the same as the JSON"
    assert not ry.text.lstrip().startswith("{"), "YAML in block style"
    validate_spec(yaml.safe_load(ry.text))
    assert spec.doc["openapi"].startswith("3.")
    # The seed's schema names are all there.
    for name in ("CreateScheduledTriggerRequest", "UpdateScheduledTriggerRequest",
                 "ScheduledTriggerResponse", "ScheduledJobResponse", "ExecutionStatusResponse",
                 "ExecutionHistoryResponse", "SystemHealthResponse", "TriggerConfigSchema",
                 "ExecutionConfigSchema", "RetryPolicySchema", "LockAcquisitionRequest",
                 "TriggerListParams", "HTTPError", "HTTPValidationError"):
        assert name in spec.doc["components"]["schemas"], name
    assert requests.post(base + ".json", timeout=10).status_code == 405
    assert requests.head(base + ".yaml", timeout=10).status_code == 200
    assert requests.get(f"{cluster.url}/docs/openapi/scheduler_openapi.xml", timeout=10).status_code == 404


def test_the_seed_samples_validate_against_the_request_schema(spec):
    schema = {"$ref": "urn:sked#/components/schemas/CreateScheduledTriggerRequest"}
    v = Draft202012Validator(schema, registry=spec.registry)
    for ex in spec.doc["components"]["schemas"]["CreateScheduledTriggerRequest"]["examples"]:
        v.validate(ex)
    assert not v.is_valid({"name": "x", "trigger_config": {}, "execution_config": {"task_type": "a"},
                           "colour": "red"}), "unknown fields are refused, as the gateway does"


def _calls(tid, job_id):
    """One plausible request per documented operation: (template, method, path, kwargs)."""
    # Every field the gateway accepts, so that a field it accepts (or
    # renders) but the document does not describe fails the schema check.
    body = {"name": "matrix", "description": "all fields", "trigger_type": "INTERVAL",
            "is_active": True,
            "trigger_config": {"interval": 60, "unit": "seconds", "start_at": "2026-01-01T00:00:00Z",
                               "end_at": "2036-01-01T00:00:00Z", "misfire_policy": "fire_all",
                               "catchup_window": 600},
            "execution_config": {"task_type": "noop", "parameters": {"a": [1, {"b": None}]},
                                 "max_execution_time": 30, "priority": 5, "worker_labels": {"zone": "eu"},
                                 "overlap_policy": "buffer_one",
                                 "retry_policy": {"max_retries": 2, "backoff_multiplier": 1.5,
                                                  "initial_delay": 0.5, "max_delay": 10, "jitter": False}}}
    cron = {"name": "matrix-cron", "trigger_config": {
        "cron_expression": "0 2 * * *", "timezone": "Europe/Berlin",
        "dst_policy": {"gap": "skip", "overlap": "both"}}, "execution_config": {"task_type": "noop"}}
    return [
        ("/api/scheduler/triggers/", "GET", "/api/scheduler/triggers/?sort=next_fire_at", {}),
        ("/api/scheduler/triggers/", "POST", "/api/scheduler/triggers/", {"json": body}),
        ("/api/scheduler/triggers/{trigger_id}", "GET", f"/api/scheduler/triggers/{tid}", {}),
        ("/api/scheduler/triggers/{trigger_id}", "PATCH", f"/api/scheduler/triggers/{tid}",
         {"json": {"description": "patched"}}),
        ("/api/scheduler/triggers/{trigger_id}", "PUT", f"/api/scheduler/triggers/{tid}",
         {"json": cron}),
        ("/api/scheduler/triggers/{trigger_id}/pause", "POST", f"/api/scheduler/triggers/{tid}/pause", {}),
        ("/api/scheduler/triggers/{trigger_id}/resume", "POST", f"/api/scheduler/triggers/{tid}/resume", {}),
        ("/api/scheduler/triggers/{trigger_id}/history", "GET",
         f"/api/scheduler/triggers/{tid}/history?status=succeeded", {}),
        ("/api/scheduler/jobs/{job_id}", "GET", f"/api/scheduler/jobs/{job_id}", {}),
        ("/api/scheduler/triggers/{trigger_id}/execute", "POST", f"/api/scheduler/triggers/{tid}/execute",
         {"json": {"parameters": {"force_execution": True, "override_config": {"x": 1}}}}),
        ("/api/scheduler/jobs/{job_id}/cancel", "POST", f"/api/scheduler/jobs/{tid}@m{'0' * 24}/cancel", {}),
        ("/api/scheduler/cron/preview", "GET", "/api/scheduler/cron/preview?expression=0+2+*+*+*", {}),
        ("/api/scheduler/health", "GET", "/api/scheduler/health", {}),
        ("/api/scheduler/locks", "POST", "/api/scheduler/locks", {"json": {"name": "m", "ttl_seconds": 60}}),
        ("/api/scheduler/locks", "GET", "/api/scheduler/locks", {}),
        ("/api/scheduler/locks/{name}", "DELETE", "/api/scheduler/locks/m", {}),
        ("/docs/openapi/scheduler_openapi.json", "GET", "/docs/openapi/scheduler_openapi.json", {}),
        ("/docs/openapi/scheduler_openapi.yaml", "GET", "/docs/openapi/scheduler_openapi.yaml", {}),
        ("/metrics", "GET", "/metrics", {}),
        ("/api/scheduler/triggers/{trigger_id}", "DELETE", f"/api/scheduler/triggers/{tid}", {}),
    ]


def test_every_documented_operation_is_served_and_nothing_else(cluster, spec):
    start_gateway(cluster)
    admin = {"Authorization": f"Bearer {cluster.token('root', 'admin')}"}
    r = cluster.api("POST", "/triggers/", sub="root", role="admin", json={
        "name": "t", "trigger_config": {"cron_expression": "0 2 * * *"},
        "execution_config": {"task_type": "noop"}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    when = dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone.utc)
    job_id = f"{tid}@{int(when.timestamp() * 1000)}"
    cluster.db.jobs.insert_one({
        "_id": job_id, "trigger_id": tid, "owner": "root", "partition": 0, "kind": "scheduled",
        "task_type": "noop", "parameters": {}, "scheduled_for": when, "run_at": when,
        "status": "succeeded", "attempt": 1, "created_at": when, "started_at": when,
        "finished_at": when, "duration_ms": 3, "worker_id": "w", "attempts": [],
        "result": {"exit_code": 0, "error": None, "output": ""}})
    cluster.db.jobs.insert_one({
        "_id": f"{tid}@m{'0' * 24}", "trigger_id": tid, "owner": "root", "partition": 0, "kind": "manual",
        "task_type": "noop", "parameters": {}, "scheduled_for": when, "run_at": when,
        "status": "queued", "attempt": 1, "created_at": when})
    calls = _calls(tid, job_id)
    documented = {(t, m.lower()) for t in spec.doc["paths"] for m in spec.doc["paths"][t] if m in METHODS}
    assert {(t, m.lower()) for t, m, _, _ in calls} == documented, "the matrix covers the document"
    for template, method, path, kw in calls:
        r = requests.request(method, cluster.url + path, headers=admin, timeout=10, **kw)
        assert r.status_code < 400, (method, path, r.status_code, r.text)
        spec.check(template, method, r)
    # Any other method on a documented path is 405, i.e. the gateway serves
    # nothing there that the document does not describe.
    for template in spec.doc["paths"]:
        path = template.replace("{trigger_id}", "000000000000000000000000").replace(
            "{job_id}", job_id).replace("{name}", "m")
        for method in METHODS:
            if method in spec.doc["paths"][template]:
                continue
            r = requests.request(method.upper(), cluster.url + path, headers=admin, timeout=10)
            assert r.status_code == 405, (method, template, r.status_code, r.text)
    # Paths next to documented ones are not served.
    for path in ("/api/scheduler/jobs", "/api/scheduler/triggers/x/y", "/api/scheduler/locks/a/b",
                 "/api/scheduler", "/docs/openapi/", "/api/scheduler/cron"):
        r = requests.get(cluster.url + path, headers=admin, timeout=10)
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}, (path, r.text)


def test_error_answers_match_their_documented_schemas(cluster, spec):
    start_gateway(cluster)
    T = "/api/scheduler/triggers/"
    api = cluster.api
    spec.check(T, "GET", requests.get(cluster.url + T, timeout=10))                       # 401
    spec.check(T, "POST", api("POST", "/triggers/", data="{oops"))                         # 400
    spec.check(T, "POST", api("POST", "/triggers/", json={"name": ""}))                    # 422
    spec.check(T, "GET", api("GET", "/triggers/?page_size=500&status=on"))                 # 422
    good = {"name": "dup", "trigger_config": {"interval": 5}, "execution_config": {"task_type": "noop"}}
    spec.check(T, "POST", api("POST", "/triggers/", json=good))                            # 201
    spec.check(T, "POST", api("POST", "/triggers/", json=good))                            # 409
    spec.check(T, "POST", api("POST", "/triggers/", data="x" * (1024 * 1024 + 1)))         # 413
    spec.check("/api/scheduler/triggers/{trigger_id}", "GET", api("GET", "/triggers/nope"))  # 404
    spec.check("/api/scheduler/jobs/{job_id}", "GET", api("GET", "/jobs/nope"))            # 404
    spec.check("/api/scheduler/cron/preview", "GET", api("GET", "/cron/preview?expression=61+*+*+*+*"))
    spec.check("/api/scheduler/locks", "GET", api("GET", "/locks"))                        # 403
    spec.check("/api/scheduler/locks", "POST",
               api("POST", "/locks", sub="root", role="admin", json={"name": "a/b"}))      # 422
    spec.check("/api/scheduler/locks/{name}", "DELETE",
               api("DELETE", "/locks/none", sub="root", role="admin"))                     # 404
    spec.check("/api/scheduler/health", "GET", requests.get(cluster.url + "/api/scheduler/health", timeout=10))


def test_document_location_is_configurable(cluster, tmp_path):
    other = tmp_path / "doc.json"
    other.write_text(json.dumps({"openapi": "3.1.0", "info": {"title": "x", "version": "1"},
                                 "paths": {}}))
    start_gateway(cluster, SKED_OPENAPI_PATH=str(other))
    r = requests.get(f"{cluster.url}/docs/openapi/scheduler_openapi.json", timeout=10)
    assert r.json()["info"]["title"] == "x"
    assert cluster.gateway.stop() == 0
    cluster.checked_stop.append(cluster.gateway)

    # A missing document is not fatal: the API works, the document says 503.
    start_gateway(cluster, SKED_OPENAPI_PATH=str(tmp_path / "absent.json"))
    r = requests.get(f"{cluster.url}/docs/openapi/scheduler_openapi.yaml", timeout=10)
    assert r.status_code == 503 and "SKED_OPENAPI_PATH" in r.json()["detail"]
    assert cluster.api("GET", "/triggers/").status_code == 200
    assert cluster.gateway.stop() == 0
    cluster.checked_stop.append(cluster.gateway)

    # A broken one stops the gateway at start.
    bad = tmp_path / "bad.json"
    bad.write_text('{"openapi": ')
    p = Proc("gateway-bad", [os.path.join(BIN, "sked-gateway")],
             cluster.env(SKED_OPENAPI_PATH=str(bad)), cluster.logdir)
    assert p.popen.wait(timeout=30) != 0
    p.log.close()
    assert "cannot load OpenAPI document" in p.text()
    cluster.gateway = None
