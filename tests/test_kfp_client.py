"""litedet/kfp/client.py and the `litedet kfp` verbs against a loopback KFP v2beta1 API.

The server below is not a mock of the client: it speaks HTTP on 127.0.0.1, checks every request
body strictly against the API models shipped in `kfp_server_api` (unknown fields, wrong types,
bad enum values are refused with 400, as the real server's JSON decoder refuses them), applies
the rules the KFP API server enforces (names present, max concurrency 1-10, a PipelineSpec on
upload, parameters the pipeline declares, version names unique), and answers with the JSON the
real server sends (snake_case fields, int64 as strings, RFC 3339 times). No TFX import.
"""

import argparse
import email.parser
import email.policy
import http.server
import itertools
import json
import socket
import threading
import urllib.parse

import kfp_server_api
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from litedet.kfp import cli as kfp_cli
from litedet.kfp import client as kfp_client
from litedet.kfp.client import Connection, KfpError

INT64_FIELDS = {"max_concurrency", "interval_second", "total_size"}
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
NOW = "2026-11-28T09:00:00Z"

PIPELINE_SPEC = {
    "pipelineInfo": {"name": "litedet"},
    "schemaVersion": "2.0.0",
    "sdkVersion": "tfx-1.16.0",
    "components": {},
    "deploymentSpec": {},
    "root": {
        "dag": {"tasks": {}},
        "inputDefinitions": {
            "parameters": {
                "input_base": {
                    "parameterType": "STRING",
                    "defaultValue": "gs://bucket/data",
                    "isOptional": True,
                }
            }
        },
    },
}


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def check_model(value, type_name, where="body"):
    """Refuses what the KFP API's JSON decoder would refuse for `type_name`."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise BadRequest(400, f"{where}: expected a list")
        for i, item in enumerate(value):
            check_model(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise BadRequest(400, f"{where}: expected an object")
        for key, item in value.items():
            check_model(item, type_name.split(", ", 1)[1][:-1], f"{where}.{key}")
        return
    if type_name == "object":
        return
    natives = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}
    if type_name in natives:
        field = where.rsplit(".", 1)[-1]
        allowed = (str, int) if field in INT64_FIELDS else natives[type_name]
        if not isinstance(value, allowed) or (type_name != "bool" and isinstance(value, bool)):
            raise BadRequest(400, f"{where}: expected {type_name}, got {value!r}")
        return
    model = getattr(kfp_server_api.models, type_name)
    if getattr(model, "allowable_values", None) is not None and not model.openapi_types:
        if value not in model.allowable_values:
            raise BadRequest(400, f"{where}: {value!r} is not one of {model.allowable_values}")
        return
    if not isinstance(value, dict):
        raise BadRequest(400, f"{where}: expected an object for {type_name}")
    json_to_attribute = {v: k for k, v in model.attribute_map.items()}
    for key, item in value.items():
        if key not in json_to_attribute:
            raise BadRequest(400, f'{where}: unknown field "{key}" in {type_name}')
        check_model(item, model.openapi_types[json_to_attribute[key]], f"{where}.{key}")


class FakeKfp:
    """State and rules of a small KFP API server."""

    def __init__(self, token=None):
        self.token = token  # None: no authentication (standalone KFP)
        self.login_redirect = False
        self.denied_namespaces = set()  # multi-user: namespaces this caller may not use
        self.ids = (f"{n:08d}-0000-4000-8000-000000000000" for n in itertools.count(1))
        self.pipelines, self.versions, self.experiments = {}, {}, {}
        self.runs, self.recurring_runs = [], []
        self.requests = []  # (method, path, query, headers) of every request
        # What the cluster does with a run, one state per GET of it, e.g. ["RUNNING",
        # "SUCCEEDED"]; on reaching a final state `on_final(run)` plays the pipeline's effects
        # (gate.json, a pushed version) and may set run["run_details"].
        self.run_states = []
        self.on_final = None

    # -- helpers --
    def _new_id(self):
        return next(self.ids)

    def _matches(self, item, query):
        raw = query.get("filter")
        if not raw:
            return True
        for predicate in json.loads(raw)["predicates"]:
            # protojson takes an enum by name or number; kfp.Client sends 1 (EQUALS)
            if predicate["operation"] not in ("EQUALS", 1):
                raise BadRequest(400, f"unsupported filter {predicate}")
            value = predicate.get("stringValue", predicate.get("string_value"))
            if item[predicate["key"]] != value:
                return False
        return True

    def _page(self, items, query):
        items = list(items)
        if query.get("sort_by") == "created_at desc":
            items.sort(key=lambda x: x["_seq"], reverse=True)
        size = int(query.get("page_size") or 10)
        return [{k: v for k, v in x.items() if not k.startswith("_")} for x in items[:size]], len(
            items
        )

    def _spec_from_upload(self, content_type, body):
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        files = {
            part.get_param("name", header="content-disposition"): part.get_content()
            for part in message.iter_parts()
        }
        if "uploadfile" not in files:
            raise BadRequest(400, "missing uploadfile")
        data = files["uploadfile"]
        # The server decodes every YAML document and takes the one that is a PipelineSpec
        # (template.go, isV2Spec); a second one is the PlatformSpec (Kubernetes settings).
        documents = [
            d for d in yaml.safe_load_all(data if isinstance(data, str) else data.decode()) if d
        ]
        for document in documents:
            spec = pipeline_spec_pb2.PipelineSpec()
            try:  # what the server's isPipelineSpec does: strict protojson, name and root
                json_format.ParseDict(document, spec)
            except json_format.ParseError:
                continue
            if spec.pipeline_info.name and spec.HasField("root"):
                for other in documents:
                    if other is not document:
                        try:
                            json_format.ParseDict(other, pipeline_spec_pb2.PlatformSpec())
                        except json_format.ParseError:
                            raise BadRequest(400, "platform spec is invalid") from None
                return document
        raise BadRequest(
            400, "Failed to create a pipeline due to invalid input: unknown template format"
        )

    def _add_version(self, pipeline_id, name, spec, description=""):
        if any(
            v["pipeline_id"] == pipeline_id and v["display_name"] == name
            for v in self.versions.values()
        ):
            raise BadRequest(409, f"The name {name} already exist. Please specify a new name")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._new_id(),
            "display_name": name,
            "description": description,
            "created_at": NOW,
            "pipeline_spec": spec,
            "_seq": len(self.versions),
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _run_spec(self, body):
        """Checks a run's pipeline reference and parameters against the stored version."""
        ref = body.get("pipeline_version_reference") or {}
        version = self.versions.get(ref.get("pipeline_version_id"))
        if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
            raise BadRequest(404, "Pipeline version not found")
        if body.get("experiment_id") not in self.experiments:
            raise BadRequest(404, "Experiment not found")
        declared = (
            version["pipeline_spec"]["root"].get("inputDefinitions", {}).get("parameters", {})
        )
        for name, value in (body.get("runtime_config") or {}).get("parameters", {}).items():
            if name not in declared:
                raise BadRequest(400, f"parameter {name} is not an input of the pipeline")
            if declared[name]["parameterType"] == "STRING" and not isinstance(value, str):
                raise BadRequest(400, f"parameter {name}: expected a string")

    # -- the API --
    def handle(self, method, path, query, headers, body):
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            if self.login_redirect:
                return 302, {"Location": "/dex/auth"}
            return 401, {
                "error": "Unauthenticated",
                "code": 16,
                "message": "Request header error: there is no user identity header.",
            }
        if query.get("namespace") in self.denied_namespaces:
            return 403, {
                "error": "PermissionDenied",
                "code": 7,
                "message": f"User is not authorized to list runs in namespace {query['namespace']}",
            }
        base = "/apis/v2beta1/"
        if not path.startswith(base):
            return 404, {"error": "Not Found", "code": 5, "message": "Not Found"}
        route = path[len(base) :]
        if (method, route) == ("GET", "healthz"):
            return 200, {"multi_user": False}
        if (method, route) == ("GET", "pipelines"):
            items, total = self._page(
                (
                    p
                    for p in self.pipelines.values()
                    if self._matches(p, query) and p["namespace"] == query.get("namespace", "")
                ),
                query,
            )
            return 200, ({"pipelines": items, "total_size": total} if items else {})
        if (method, route) == ("POST", "pipelines/upload"):
            spec = self._spec_from_upload(headers["content-type"], body)
            name = query.get("name")
            if any(p["display_name"] == name for p in self.pipelines.values()):
                raise BadRequest(
                    409,
                    f"Failed to create a pipeline: The name {name} already "
                    "exists. Please specify a new name",
                )
            pipeline = {
                "pipeline_id": self._new_id(),
                "display_name": name,
                "description": query.get("description", ""),
                "created_at": NOW,
                "namespace": query.get("namespace", ""),
                "_seq": len(self.pipelines),
            }
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)
            return 200, {k: v for k, v in pipeline.items() if not k.startswith("_")}
        if (method, route) == ("POST", "pipelines/upload_version"):
            spec = self._spec_from_upload(headers["content-type"], body)
            if query.get("pipelineid") not in self.pipelines:
                raise BadRequest(404, "Pipeline not found")
            version = self._add_version(
                query["pipelineid"], query["name"], spec, query.get("description", "")
            )
            return 200, {k: v for k, v in version.items() if not k.startswith("_")}
        if method == "GET" and route.startswith("pipelines/") and route.endswith("/versions"):
            pipeline_id = route.split("/")[1]
            if pipeline_id not in self.pipelines:
                raise BadRequest(404, "Pipeline not found")
            items, total = self._page(
                (
                    v
                    for v in self.versions.values()
                    if v["pipeline_id"] == pipeline_id and self._matches(v, query)
                ),
                query,
            )
            return 200, ({"pipeline_versions": items, "total_size": total} if items else {})
        if (method, route) == ("GET", "experiments"):
            items, total = self._page(
                (e for e in self.experiments.values() if self._matches(e, query)), query
            )
            return 200, ({"experiments": items, "total_size": total} if items else {})
        if (method, route) == ("POST", "experiments"):
            check_model(body, "V2beta1Experiment")
            if not body.get("display_name"):
                raise BadRequest(400, "Experiment must have a non-empty name")
            experiment = {
                "experiment_id": self._new_id(),
                "display_name": body["display_name"],
                "namespace": body.get("namespace", ""),
                "created_at": NOW,
                "storage_state": "AVAILABLE",
                "_seq": len(self.experiments),
            }
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, {k: v for k, v in experiment.items() if not k.startswith("_")}
        if (method, route) == ("POST", "runs"):
            check_model(body, "V2beta1Run")
            if not body.get("display_name"):
                raise BadRequest(400, "Run name cannot be empty")
            self._run_spec(body)
            run = dict(
                body,
                run_id=self._new_id(),
                state="PENDING",
                created_at=NOW,
                storage_state="AVAILABLE",
                _seq=len(self.runs),
            )
            self.runs.append(run)
            return 200, {k: v for k, v in run.items() if not k.startswith("_")}
        if method == "GET" and route.startswith("runs/"):
            run = next((r for r in self.runs if r["run_id"] == route.split("/")[1]), None)
            if run is None:
                raise BadRequest(404, "Run not found")
            states = run.setdefault("_states", list(self.run_states))
            if states and run["state"] not in FINAL_STATES:
                run["state"] = states.pop(0)
                if run["state"] in FINAL_STATES:
                    run["finished_at"] = NOW
                    if self.on_final is not None:
                        self.on_final(run)
            return 200, {k: v for k, v in run.items() if not k.startswith("_")}
        if method == "GET" and route.startswith("pipelines/") and "/versions/" in route:
            _, pipeline_id, _, version_id = route.split("/")
            version = self.versions.get(version_id)
            if version is None or version["pipeline_id"] != pipeline_id:
                raise BadRequest(404, "Pipeline version not found")
            return 200, {k: v for k, v in version.items() if not k.startswith("_")}
        if (method, route) == ("GET", "recurringruns"):
            items, total = self._page(
                (
                    j
                    for j in self.recurring_runs
                    if self._matches(j, query)
                    and j.get("namespace", "") == query.get("namespace", "")
                ),
                query,
            )
            return 200, ({"recurringRuns": items, "total_size": total} if items else {})
        if route.startswith("recurringruns/"):
            job_id, _, verb = route.split("/")[1].partition(":")
            job = next((j for j in self.recurring_runs if j["recurring_run_id"] == job_id), None)
            if job is None:
                raise BadRequest(404, f"Recurring run {job_id} not found")
            if (method, verb) == ("GET", ""):
                return 200, {k: v for k, v in job.items() if not k.startswith("_")}
            if (method, verb) == ("POST", "disable"):
                job["mode"], job["status"] = "DISABLE", "DISABLED"
                return 200, {}
            if (method, verb) == ("POST", "enable"):
                job["mode"], job["status"] = "ENABLE", "ENABLED"
                return 200, {}
            if (method, verb) == ("DELETE", ""):
                self.recurring_runs.remove(job)
                return 200, {}
        if (method, route) == ("GET", "runs"):
            items, total = self._page(
                (
                    r
                    for r in self.runs
                    if not query.get("experiment_id")
                    or r["experiment_id"] == query["experiment_id"]
                ),
                query,
            )
            return 200, ({"runs": items, "total_size": total} if items else {})
        if (method, route) == ("POST", "recurringruns"):
            check_model(body, "V2beta1RecurringRun")
            if not body.get("display_name"):
                raise BadRequest(400, "Recurring run's name cannot be empty")
            if not 1 <= int(body.get("max_concurrency", 0)) <= 10:
                raise BadRequest(
                    400, "Max concurrency of a recurring run must be at least 1 and at most 10"
                )
            cron = (body.get("trigger") or {}).get("cron_schedule", {}).get("cron", "")
            if not (cron.startswith("@") or len(cron.split()) in (5, 6)):  # robfig/cron v1
                raise BadRequest(400, "Schedule cron is not a supported format")
            if body.get("mode") not in ("ENABLE", "DISABLE"):
                raise BadRequest(400, "Recurring run's mode is invalid")
            self._run_spec(body)
            job = dict(
                body,
                recurring_run_id=self._new_id(),
                created_at=NOW,
                status="ENABLED",
                _seq=len(self.recurring_runs),
            )
            job["max_concurrency"] = str(job["max_concurrency"])  # int64 travels as a string
            self.recurring_runs.append(job)
            return 200, {k: v for k, v in job.items() if not k.startswith("_")}
        return 404, {"error": "Not Found", "code": 5, "message": f"no route {method} {path}"}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _serve(self, method):
        fake = self.server.fake
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP names are caseless
        fake.requests.append((method, parsed.path, query, headers))
        if parsed.path == "/dex/auth":
            return self._send(200, "<html><body>Log in to Kubeflow</body></html>", "text/html")
        try:
            body = raw
            if headers.get("content-type", "").startswith("application/json"):
                body = json.loads(raw or b"{}")
            status, payload = fake.handle(method, parsed.path, query, headers, body)
        except BadRequest as e:
            status, payload = e.status, {"error": str(e), "code": 3, "message": str(e)}
        except Exception as e:  # a bug in this fake: answer 500 so the test says so
            status, payload = 500, {"error": repr(e), "code": 13, "message": repr(e)}
        if status == 302:
            self.send_response(302)
            self.send_header("Location", payload["Location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(status, json.dumps(payload), "application/json")

    def _send(self, status, text, content_type):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    """A FakeKfp on a random loopback port; yields (fake, endpoint)."""
    # kfp.Client reads and may write ~/.config/kfp/context.json: keep the tests off the real one.
    import kfp

    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))
    fake = FakeKfp()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = fake
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def package(tmp_path):
    path = tmp_path / "litedet-kfp.yaml"
    path.write_text("# compiled\n" + yaml.safe_dump(PIPELINE_SPEC))
    return str(path)


def _conn(endpoint, **kwargs):
    return Connection.resolve(endpoint=endpoint, environ={}, timeout_s=5, **kwargs)


def test_upload_creates_the_pipeline_then_adds_versions(kfp_server, package, tmp_path):
    fake, endpoint = kfp_server
    first = kfp_client.upload(_conn(endpoint), package, "litedet")
    assert first.new_pipeline and first.version_name == "litedet"
    assert set(fake.pipelines) == {first.pipeline_id}

    second = kfp_client.upload(_conn(endpoint), package, "litedet", version="v2")
    assert not second.new_pipeline
    assert (second.pipeline_id, second.version_name) == (first.pipeline_id, "v2")
    assert fake.versions[second.version_id]["pipeline_spec"] == PIPELINE_SPEC

    # TFX's PipelineJob .json form is unwrapped to the PipelineSpec the server accepts.
    job = tmp_path / "litedet.json"
    job.write_text(
        json.dumps(
            {
                "displayName": "litedet",
                "labels": {},
                "runtimeConfig": {},
                "pipelineSpec": PIPELINE_SPEC,
            }
        )
    )
    third = kfp_client.upload(_conn(endpoint), str(job), "litedet")
    assert fake.versions[third.version_id]["pipeline_spec"] == PIPELINE_SPEC
    assert len({first.version_id, second.version_id, third.version_id}) == 3


def test_a_file_that_is_not_a_compiled_pipeline_is_refused_before_any_request(kfp_server, tmp_path):
    fake, endpoint = kfp_server
    bogus = tmp_path / "notes.yaml"
    bogus.write_text("hello: world\n")
    with pytest.raises(KfpError, match="not a compiled pipeline"):
        kfp_client.upload(_conn(endpoint), str(bogus), "litedet")
    assert fake.requests == []


def test_a_run_starts_the_newest_version_with_typed_parameters(kfp_server, package):
    fake, endpoint = kfp_server
    kfp_client.upload(_conn(endpoint), package, "litedet")
    newest = kfp_client.upload(_conn(endpoint), package, "litedet", version="v2")

    run_id = kfp_client.start_run(
        _conn(endpoint),
        "litedet",
        {"input_base": "gs://bucket/coco-2026-11"},
        pipeline_root="gs://bucket/root",
        service_account="litedet-pipeline-runner",
    )

    [run] = fake.runs
    assert run["run_id"] == run_id
    assert run["pipeline_version_reference"] == {
        "pipeline_id": newest.pipeline_id,
        "pipeline_version_id": newest.version_id,
    }
    assert run["runtime_config"] == {
        "parameters": {"input_base": "gs://bucket/coco-2026-11"},
        "pipeline_root": "gs://bucket/root",
    }
    assert run["service_account"] == "litedet-pipeline-runner"
    assert fake.experiments[run["experiment_id"]]["display_name"] == "litedet"

    # A second run reuses the experiment instead of creating another.
    kfp_client.start_run(_conn(endpoint), "litedet", {}, version="litedet")
    assert len(fake.experiments) == 1
    assert fake.runs[1]["pipeline_version_reference"]["pipeline_version_id"] != newest.version_id


def test_a_recurring_run_is_created_from_a_five_field_cron(kfp_server, package):
    fake, endpoint = kfp_server
    kfp_client.upload(_conn(endpoint), package, "litedet")
    job_id = kfp_client.schedule(
        _conn(endpoint),
        "litedet",
        "0 3 * * *",
        {"input_base": "gs://bucket/nightly"},
        name="nightly",
    )
    [job] = fake.recurring_runs
    assert job["recurring_run_id"] == job_id
    # robfig/cron reads seconds first: the client must send 03:00:00 daily, not minute 3 hourly.
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert (job["mode"], job["max_concurrency"], job["no_catchup"]) == ("ENABLE", "1", True)
    assert job["runtime_config"]["parameters"] == {"input_base": "gs://bucket/nightly"}


@pytest.mark.parametrize(
    "given, sent",
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("30 0 3 * * 1-5", "30 0 3 * * 1-5"),
        ("@daily", "@daily"),
        ("  0  3 * * * ", "0 0 3 * * *"),
    ],
)
def test_cron_expressions_are_normalized_to_seconds_first(given, sent):
    assert kfp_client.normalize_cron(given) == sent


def test_a_malformed_cron_fails_before_any_request():
    with pytest.raises(KfpError, match="5 fields"):
        kfp_client.normalize_cron("every night")


def test_runs_are_listed_newest_first_with_their_state(kfp_server, package):
    fake, endpoint = kfp_server
    kfp_client.upload(_conn(endpoint), package, "litedet")
    for _ in range(3):
        kfp_client.start_run(_conn(endpoint), "litedet", {})
    fake.runs[0]["state"], fake.runs[1]["state"] = "SUCCEEDED", "FAILED"
    rows = kfp_client.list_runs(_conn(endpoint), experiment="litedet", limit=10)
    assert [r.state for r in rows] == ["PENDING", "FAILED", "SUCCEEDED"]
    assert [r.run_id for r in rows] == [r["run_id"] for r in reversed(fake.runs)]
    assert rows[0].created_at.year == 2026


def test_an_unknown_pipeline_is_a_clear_error(kfp_server):
    _, endpoint = kfp_server
    with pytest.raises(KfpError) as error:
        kfp_client.start_run(_conn(endpoint), "no-such-pipeline", {})
    message = str(error.value)
    assert "no pipeline named 'no-such-pipeline'" in message and endpoint in message
    assert "litedet kfp upload" in message


def test_an_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(KfpError) as error:
        kfp_client.list_runs(_conn(endpoint))
    assert f"cannot reach Kubeflow Pipelines at {endpoint}" in str(error.value)
    assert "KFP_ENDPOINT" in str(error.value)


def test_refused_credentials_are_a_clear_error(kfp_server):
    fake, endpoint = kfp_server
    fake.token = "the-right-token"
    with pytest.raises(KfpError) as error:
        kfp_client.list_runs(_conn(endpoint, token="an-expired-token"))
    message = str(error.value)
    assert "HTTP 401" in message and endpoint in message and "KFP_BEARER_TOKEN" in message
    assert "an-expired-token" not in message  # never echo a secret
    assert kfp_client.list_runs(_conn(endpoint, token="the-right-token")) == []


def test_a_namespace_the_account_may_not_use_is_a_clear_error(kfp_server):
    fake, endpoint = kfp_server
    fake.denied_namespaces.add("someone-else")
    with pytest.raises(KfpError) as error:
        kfp_client.list_runs(_conn(endpoint, namespace="someone-else"))
    message = str(error.value)
    assert "HTTP 403" in message and "someone-else" in message and "KFP_NAMESPACE" in message


def test_a_gateway_login_page_is_a_clear_error_not_an_empty_answer(kfp_server):
    fake, endpoint = kfp_server
    fake.token, fake.login_redirect = "the-right-token", True
    with pytest.raises(KfpError, match="web page, not the KFP API"):
        kfp_client.start_run(_conn(endpoint, namespace="team-vision"), "litedet", {})


def test_the_projected_service_account_token_is_read_per_request(kfp_server, package, tmp_path):
    fake, endpoint = kfp_server
    token_file = tmp_path / "token"
    token_file.write_text("token-1")
    conn = Connection.resolve(
        environ={
            "KFP_ENDPOINT": endpoint,
            "KFP_NAMESPACE": "team-vision",
            "KF_PIPELINES_SA_TOKEN_PATH": str(token_file),
        }
    )
    assert conn.token is None and conn.token_path == str(token_file)
    assert conn.namespace == "team-vision"
    fake.token = "token-1"
    kfp_client.list_runs(conn)
    token_file.write_text("token-2")  # the kubelet rotated it
    fake.token = "token-2"
    kfp_client.list_runs(conn)
    assert fake.requests[-1][2]["namespace"] == "team-vision"


def test_an_endpoint_is_required_outside_a_cluster():
    with pytest.raises(KfpError, match="KFP_ENDPOINT"):
        Connection.resolve(environ={})
    in_pod = Connection.resolve(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert in_pod.endpoint == kfp_client.IN_CLUSTER_ENDPOINT


def _cli(argv):
    parser = argparse.ArgumentParser(prog="litedet")
    kfp_cli.add_verbs(parser.add_subparsers(dest="verb", required=True))
    return kfp_cli.main(parser.parse_args(argv))


def test_the_cli_uploads_runs_schedules_and_lists(kfp_server, package, tmp_path, capsys):
    fake, endpoint = kfp_server
    connection = ["--endpoint", endpoint]
    assert _cli(["kfp", "upload", "--package", package] + connection) == 0
    assert "new pipeline 'litedet'" in capsys.readouterr().out
    assert _cli(["kfp", "run", "--param", "input_base=gs://b/d"] + connection) == 0
    assert "Started run" in capsys.readouterr().out
    spec = tmp_path / "nightly.yaml"
    spec.write_text("name: nightly\ncron: '0 3 * * *'\nparameters: {input_base: gs://b/n}\n")
    assert (
        _cli(["kfp", "schedule", "--from-file", str(spec), "--max-concurrency", "2"] + connection)
        == 0
    )
    assert "'0 0 3 * * *'" in capsys.readouterr().out
    assert fake.recurring_runs[0]["max_concurrency"] == "2"
    assert _cli(["kfp", "runs"] + connection) == 0
    assert "PENDING" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_exit_non_zero(kfp_server, capsys):
    _, endpoint = kfp_server
    assert _cli(["kfp", "run", "--pipeline", "nope", "--endpoint", endpoint]) == 1
    err = capsys.readouterr().err
    assert err.startswith("litedet: error: ") and err.count("\n") == 1
    assert _cli(["kfp", "run", "--param", "colour=red", "--endpoint", endpoint]) == 1
    assert "not a run-time parameter" in capsys.readouterr().err


# --- run --wait: the run's state and the gate's verdict ---------------------------------------


def _gate_writer(s3, bucket, root_key, blessed, pushed_version=None, models_key=None):
    """on_final for FakeKfp: what a real run leaves in the store, at the URIs KFP's driver
    gives: <root>/<pipeline name>/<run id>/ModelGate/<uuid>/blessing/gate.json."""

    def write(run):
        if run["state"] != "SUCCEEDED":
            return
        key = f"{root_key}/litedet/{run['run_id']}/ModelGate/0f3c9a1b/blessing/gate.json"
        report = {"blessed": blessed, "reasons": [] if blessed else ["mAP@0.5 0.1 < 0.5"]}
        report["map50"] = 0.9 if blessed else 0.1
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(report).encode())
        if pushed_version is not None:
            s3.put_object(
                Bucket=bucket, Key=f"{models_key}/{pushed_version}/manifest.json", Body=b"{}"
            )

    return write


@pytest.fixture
def uploaded(kfp_server, package):
    fake, endpoint = kfp_server
    kfp_client.upload(_conn(endpoint), package, "litedet")
    return fake, endpoint


@pytest.mark.parametrize("blessed, code", [(True, 0), (False, 3)])
def test_run_wait_exits_by_the_gates_verdict(uploaded, s3_server, blessed, code, capsys):
    fake, endpoint = uploaded
    s3, bucket = s3_server["client"], s3_server["bucket"]
    fake.run_states = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    fake.on_final = _gate_writer(s3, bucket, f"wait-{blessed}", blessed)
    root = f"s3://{bucket}/wait-{blessed}"
    argv = ["kfp", "run", "--endpoint", endpoint, "--pipeline-root", root, "--wait", "--poll", "0"]
    assert _cli(argv) == code
    out = capsys.readouterr().out
    assert "RUNNING" in out and "SUCCEEDED" in out
    assert ("blessed (mAP@0.5 0.9" in out) if blessed else ("not blessed (mAP@0.5 0.1" in out)
    [run] = fake.runs
    assert len([r for r in fake.requests if r[1] == f"/apis/v2beta1/runs/{run['run_id']}"]) >= 4


def test_run_wait_reports_a_failed_run_with_its_failed_task(uploaded, capsys):
    fake, endpoint = uploaded
    fake.run_states = ["RUNNING", "FAILED"]

    def failed(run):
        run["run_details"] = {
            "task_details": [
                {"display_name": "Transform", "state": "SUCCEEDED"},
                {
                    "display_name": "Trainer",
                    "state": "FAILED",
                    "error": {"code": 2, "message": "training.backbone_weights=imagenet ..."},
                },
            ]
        }

    fake.on_final = failed
    assert _cli(["kfp", "run", "--endpoint", endpoint, "--wait", "--poll", "0"]) == 1
    err = capsys.readouterr().err
    assert "ended FAILED: Trainer: training.backbone_weights=imagenet" in err
    assert err.count("\n") == 1


def test_run_wait_without_a_root_asks_for_the_namespaces_default(uploaded, s3_server, capsys):
    """A run that names no root gets the namespace's kfp-launcher default, which the client
    cannot see: --wait says so, and --gate-root gives it."""
    fake, endpoint = uploaded
    s3, bucket = s3_server["client"], s3_server["bucket"]
    fake.run_states = ["SUCCEEDED"]
    fake.on_final = _gate_writer(s3, bucket, "launcher-default", True)
    argv = ["kfp", "run", "--endpoint", endpoint, "--wait", "--poll", "0"]
    assert _cli(argv) == 1
    assert "--gate-root" in capsys.readouterr().err
    assert "pipeline_root" not in fake.runs[0]["runtime_config"]
    gate_root = f"s3://{bucket}/launcher-default"
    assert _cli(argv + ["--gate-root", gate_root]) == 0
    assert "pipeline_root" not in fake.runs[1]["runtime_config"]  # still the namespace's root


def test_run_wait_gives_up_after_its_timeout(uploaded, capsys):
    fake, endpoint = uploaded
    fake.run_states = ["RUNNING"] * 1000
    argv = ["kfp", "run", "--endpoint", endpoint, "--wait", "--poll", "0.01", "--wait-timeout"]
    assert _cli(argv + ["0.05"]) == 1
    assert "still RUNNING after" in capsys.readouterr().err


def test_a_store_the_client_cannot_reach_is_a_clear_error(uploaded, capsys, monkeypatch):
    fake, endpoint = uploaded
    fake.run_states = ["SUCCEEDED"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    argv = ["kfp", "run", "--endpoint", endpoint, "--wait", "--poll", "0"]
    assert _cli(argv + ["--pipeline-root", "s3://nowhere/root"]) == 1
    err = capsys.readouterr().err
    assert "reading the gate's verdict under s3://nowhere/root/litedet/" in err
    assert "port-forward svc/seaweedfs" in err and err.count("\n") == 1


# --- schedules: pause, resume, delete ----------------------------------------------------------


def test_a_schedule_is_paused_resumed_and_deleted_by_name_or_id(uploaded, capsys):
    fake, endpoint = uploaded
    job_id = kfp_client.schedule(_conn(endpoint), "litedet", "0 3 * * *", {}, name="nightly")
    connection = ["--endpoint", endpoint]
    assert _cli(["kfp", "schedule", "--pause", "nightly"] + connection) == 0
    assert fake.recurring_runs[0]["mode"] == "DISABLE"
    assert f"Paused recurring run 'nightly' ({job_id})" in capsys.readouterr().out
    assert _cli(["kfp", "schedule", "--resume", job_id] + connection) == 0
    assert fake.recurring_runs[0]["mode"] == "ENABLE"
    assert _cli(["kfp", "schedule", "--delete", "nightly"] + connection) == 0
    assert fake.recurring_runs == []
    capsys.readouterr()
    assert _cli(["kfp", "schedule", "--pause", "nightly"] + connection) == 1
    assert "no recurring run named 'nightly'" in capsys.readouterr().err
    methods = {(m, p) for m, p, _, _ in fake.requests}
    assert ("POST", f"/apis/v2beta1/recurringruns/{job_id}:disable") in methods
    assert ("POST", f"/apis/v2beta1/recurringruns/{job_id}:enable") in methods
    assert ("DELETE", f"/apis/v2beta1/recurringruns/{job_id}") in methods


def test_two_schedules_of_one_name_need_the_id(uploaded, capsys):
    _, endpoint = uploaded
    for _ in range(2):
        kfp_client.schedule(_conn(endpoint), "litedet", "@daily", {}, name="twice")
    assert _cli(["kfp", "schedule", "--delete", "twice", "--endpoint", endpoint]) == 1
    assert "2 recurring runs are named 'twice'" in capsys.readouterr().err


def test_schedule_actions_exclude_each_other():
    with pytest.raises(SystemExit):
        _cli(["kfp", "schedule", "--pause", "a", "--delete", "a", "--endpoint", "http://x"])


# --- k8s/smoke.sh ------------------------------------------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
SMOKE = REPO / "k8s" / "smoke.sh"


def test_the_smoke_script_parses_and_passes_shellcheck():
    import shutil
    import subprocess

    subprocess.run(["bash", "-n", str(SMOKE)], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: `make system-deps` installs it (apt)"
    result = subprocess.run([shellcheck, str(SMOKE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _smoke(endpoint, s3_server, tmp_path, *args):
    import os
    import subprocess
    import sys

    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "LITEDET": os.path.join(bin_dir, "litedet"),
        "KFP_ENDPOINT": endpoint,
        "AWS_ENDPOINT_URL": s3_server["url"],
        "SMOKE_POLL_S": "0",
        "TMPDIR": str(tmp_path),
        "HOME": str(tmp_path),  # kfp.Client's context file
        **s3_server["keys"],
    }
    return subprocess.run(
        ["bash", str(SMOKE), "--dry-run", "--image", "localhost/litedet:smoke", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_the_smoke_script_dry_run_passes_against_loopback_kfp_and_s3(
    kfp_server, s3_server, tmp_path
):
    """Every call that talks to KFP or the store runs for real (compile, upload, run --wait
    without --pipeline-root, the store before and after) against the loopback API server and
    S3 server; the cluster-changing ones (kubectl apply, docker, kind) are printed."""
    fake, endpoint = kfp_server
    s3 = s3_server["client"]
    s3.create_bucket(Bucket="mlpipeline")
    # The standalone overlay's kfp-launcher root, where the run's artifacts land.
    fake.run_states = ["RUNNING", "SUCCEEDED"]
    fake.on_final = _gate_writer(
        s3, "mlpipeline", "v2/artifacts", True, pushed_version=1, models_key="litedet-smoke/models"
    )
    result = _smoke(endpoint, s3_server, tmp_path, "--kind", "kind")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "smoke: PASS: blessed, and one new version was pushed" in out
    assert "+ would run: kubectl apply -f" in out
    assert "+ would run: docker build -t localhost/litedet:smoke ." in out
    assert "+ would run: kind load docker-image localhost/litedet:smoke --name kind" in out
    assert "the pipeline root runs get: s3://mlpipeline/v2/artifacts" in out
    # The compiled pipeline was uploaded, and run with no root: the ConfigMap's applies.
    [pipeline] = fake.pipelines.values()
    assert pipeline["display_name"] == "litedet-smoke"
    [version] = fake.versions.values()
    assert len(version["pipeline_spec"]["root"]["dag"]["tasks"]) == 13
    [run] = fake.runs
    assert "pipeline_root" not in run["runtime_config"]
    assert "service_account" not in run  # KFP's default account runs it (pipeline-runner)
    assert set(run["runtime_config"]["parameters"]) == {"train_steps", "min_map50"}
    listed = s3.list_objects_v2(Bucket="mlpipeline", Prefix="litedet-smoke/datasets/")
    keys = [item["Key"] for item in listed["Contents"]]
    assert any(k.endswith("annotations/instances_train.json") for k in keys)


def test_the_smoke_script_fails_when_the_store_disagrees_with_the_verdict(
    kfp_server, s3_server, tmp_path
):
    """Multi-user: a blessed verdict but no pushed version is a FAIL."""
    fake, endpoint = kfp_server
    s3 = s3_server["client"]
    s3.create_bucket(Bucket="mlpipeline")
    fake.run_states = ["SUCCEEDED"]
    fake.on_final = _gate_writer(s3, "mlpipeline", "private-artifacts/team-a/v2/artifacts", True)
    result = _smoke(
        endpoint, s3_server, tmp_path, "--mode", "multi-user", "--namespace", "team-a", "--push"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "smoke: FAIL: blessed, but 0 new versions in the store (expected 1)" in result.stdout
    assert "+ would run: kubectl -n team-a patch configmap kfp-launcher --type merge" in (
        result.stdout
    )
    assert "the pipeline root runs get: s3://mlpipeline/private-artifacts/team-a/v2/artifacts" in (
        result.stdout
    )
    assert fake.requests[-1][2].get("namespace", "team-a") == "team-a"
