"""The MLflow registry's credentials (docs/security.md, item 8): sent to the tracking server's own
origin only, never over plain http:// unless allowed, never in the configuration.

MLflow's own client (MlflowClient) sends the requests; real HTTP on loopback: a recording MLflow
tracking server (it answers the few REST calls a registration makes, in MLflow's JSON) and a
second server (another port, so another origin) that a server response names as the run's
artifact location, or that a redirect points at; each records the Authorization header of every
request it receives. A real MLflow server cannot show which headers reached it, hence the
recording one. No mocking of requests or of MLflow's client.
"""

import http.server
import json
import os
import threading
import urllib.parse

import pytest

from litedet.components.pusher import registry as registry_lib
from litedet.components.pusher import store
from litedet.pipeline import configs
from tests.test_pusher import MODEL_NAME, exec_params, executor_inputs, make_files, pushed_output

TOKEN = "litedet-secret-token"


class RecordingServer:
    """A loopback HTTP server that records (method, path, Authorization) of every request and
    answers with `respond(method, path, body) -> dict`."""

    def __init__(self, respond):
        self.seen = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlparse(self.path).path
                recorder.seen.append((self.command, path, self.headers.get("Authorization")))
                payload = json.dumps(respond(self.command, path, body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.netloc = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def fake_mlflow(artifact_uri):
    """The REST answers MlflowRegistry.register needs, with the run's artifact location
    `artifact_uri[0]`."""

    def run():
        return {
            "info": {"run_id": "r1", "experiment_id": "1", "artifact_uri": artifact_uri[0]},
            "data": {},
        }

    def respond(method, path, body):
        if path.endswith("/model-versions/search"):
            return {"model_versions": []}
        if path.endswith("/experiments/get-by-name"):
            return {"experiment": {"experiment_id": "1", "name": "litedet"}}
        if path.endswith("/runs/create") or path.endswith("/runs/get"):
            return {"run": run()}
        if path.endswith("/runs/update"):
            return {"run_info": run()["info"]}
        if path.endswith("/model-versions/create"):
            return {"model_version": {"name": MODEL_NAME, "version": "1", "status": "READY"}}
        return {}

    return respond


def stored_version(tmp_path):
    _, uri = store.push_version(str(tmp_path / "store"), make_files(str(tmp_path / "src")), {})
    return uri, store.read_manifest(uri)


@pytest.mark.parametrize(
    "location",
    [
        "http://{other}/artifacts/1/r1",  # an http(s) artifact location on another host
        "mlflow-artifacts://{other}/1/r1/artifacts",  # a proxied location naming another host
    ],
)
def test_the_token_goes_to_the_tracking_server_only(tmp_path, monkeypatch, location):
    """A run whose artifact location is another HTTP server: MLflow's client would send that
    server the tracking credentials, so the registration stops before any upload, naming the
    setting; the other server never sees a request."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    uri, manifest = stored_version(tmp_path)
    artifact_uri = [""]
    with (
        RecordingServer(lambda *a: {}) as other,
        RecordingServer(fake_mlflow(artifact_uri)) as mlflow,
    ):
        artifact_uri[0] = location.format(other=other.netloc)
        registry = registry_lib.MlflowRegistry(
            mlflow.url, MODEL_NAME, retries=0, allow_insecure_http=True
        )

        with pytest.raises(registry_lib.RegistryError) as refused:
            registry.register(MODEL_NAME, uri, manifest)

    message = str(refused.value)
    assert "is another server" in message and "push.registry.artifact_location" in message
    assert "MLFLOW_TRACKING_TOKEN" in message and TOKEN not in message
    assert f"litedet register {manifest['version']}" in message
    assert other.seen == []
    assert mlflow.seen and all(auth == f"Bearer {TOKEN}" for _, _, auth in mlflow.seen)
    # The run that could not get its files is marked failed.
    assert ("POST", "/api/2.0/mlflow/runs/update", f"Bearer {TOKEN}") in mlflow.seen


def test_the_tracking_server_itself_still_gets_the_token_for_its_artifacts(tmp_path, monkeypatch):
    """`mlflow-artifacts:/...` without a host: the tracking server proxies the files, and it is
    the origin the credentials belong to."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    uri, manifest = stored_version(tmp_path)
    with RecordingServer(fake_mlflow(["mlflow-artifacts:/1/r1/artifacts"])) as mlflow:
        registry = registry_lib.MlflowRegistry(
            mlflow.url, MODEL_NAME, retries=0, allow_insecure_http=True
        )
        assert registry.register(MODEL_NAME, uri, manifest) == "1"

    uploads = [
        (path, auth)
        for method, path, auth in mlflow.seen
        if method == "PUT" and path.startswith("/api/2.0/mlflow-artifacts/artifacts/1/r1/")
    ]
    assert len(uploads) == len(manifest["files"]) + 1  # every file and the manifest
    assert {auth for _, auth in uploads} == {"Basic Y2k6cHc="}  # base64("ci:pw")
    assert {auth for _, _, auth in mlflow.seen} == {"Basic Y2k6cHc="}


def test_a_redirect_to_another_origin_loses_the_token(tmp_path, monkeypatch):
    """A tracking server (or a proxy before it) answering 307 to another origin: MLflow's client
    (requests) follows it without the Authorization header, so the other origin never sees the
    token; its answer (404) fails the registration, naming the call."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)

    class NotFound(http.server.BaseHTTPRequestHandler):
        seen = []

        def _handle(self):
            NotFound.seen.append((self.command, self.path, self.headers.get("Authorization")))
            payload = b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "no"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=other.serve_forever, daemon=True).start()

    class Redirect(http.server.BaseHTTPRequestHandler):
        def _handle(self):
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{other.server_address[1]}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _handle

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registry = registry_lib.MlflowRegistry(
            f"http://127.0.0.1:{server.server_address[1]}",
            MODEL_NAME,
            retries=0,
            allow_insecure_http=True,
        )
        with pytest.raises(registry_lib.RegistryError, match="search_model_versions failed"):
            registry.register(MODEL_NAME, "/store/1", {"version": 1})
    finally:
        for running in (server, other):
            running.shutdown()
            running.server_close()
    assert NotFound.seen, "the redirect was not followed: nothing was tested"
    assert [auth for _, _, auth in NotFound.seen] == [None] * len(NotFound.seen)


@pytest.mark.parametrize(
    "environment",
    [
        {"MLFLOW_TRACKING_TOKEN": TOKEN},
        {"MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": "pw"},
    ],
)
def test_plain_http_with_credentials_is_refused_unless_allowed(monkeypatch, environment):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="plain http://.*allow_insecure_http: true"):
        registry_lib.MlflowRegistry("http://mlflow.example:5000", MODEL_NAME)
    registry_lib.MlflowRegistry("https://mlflow.example", MODEL_NAME)
    registry_lib.MlflowRegistry("http://mlflow.example:5000", MODEL_NAME, allow_insecure_http=True)
    for key in environment:
        monkeypatch.delenv(key)
    registry_lib.MlflowRegistry("http://mlflow.example:5000", MODEL_NAME)  # nothing to leak


def test_a_kubeflow_token_over_plain_http_is_refused_unless_allowed(tmp_path, monkeypatch):
    """The Kubeflow Model Registry client sends its token with every request, secure or not: a
    token (given in code, or the file $KF_PIPELINES_SA_TOKEN_PATH names) over plain http is
    refused unless allowed; without a token there is nothing to leak."""
    from litedet.components.pusher import kubeflow_registry

    settings = {"kind": "kubeflow", "server_address": "http://mr.kubeflow", "author": "ci"}
    assert not os.path.exists(kubeflow_registry.POD_TOKEN_PATH)  # not in a pod here
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    registry_lib.make_registry(settings)  # no token anywhere
    token_file = tmp_path / "token"
    token_file.write_text("sa-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    with pytest.raises(
        ValueError, match=r"refusing to send the token in .*token .*allow_insecure_http: true"
    ):
        registry_lib.make_registry(settings)
    with pytest.raises(ValueError, match="refusing to send the user_token given in code"):
        registry_lib.KubeflowModelRegistry("http://mr", 8080, author="ci", user_token="t")
    registry_lib.make_registry(dict(settings, allow_insecure_http=True))
    registry_lib.make_registry(dict(settings, server_address="https://mr.kubeflow"))


def test_a_refused_registry_fails_the_step_before_anything_is_pushed(tmp_path, monkeypatch):
    from litedet.components.pusher import executor

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    inputs, _ = executor_inputs(tmp_path)
    params = exec_params(tmp_path, {"kind": "mlflow", "tracking_uri": "http://mlflow:5000"})
    with pytest.raises(ValueError, match="allow_insecure_http"):
        executor.Executor().Do(inputs, pushed_output(tmp_path), params)
    assert not os.path.exists(params["destination"])


@pytest.mark.parametrize(
    "key, value",
    [
        ("headers", {"Authorization": "Bearer x"}),
        ("user_token", "x"),
        ("api_key", "x"),
        ("password", "x"),
        ("tracking_token", "x"),
        ("tracking_uri", "https://ci:hunter2@mlflow.example"),
    ],
)
def test_secrets_in_the_registry_settings_are_refused_naming_the_key(key, value):
    registry = {"kind": "mlflow", "tracking_uri": "https://mlflow", key: value}
    with pytest.raises(
        configs.ConfigError, match=f"push.registry.{key}: (looks like a secret|the URL holds)"
    ):
        configs.validate(configs.load_config(None, ["push.registry=" + json.dumps(registry)]))
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_TOKEN.*Kubernetes Secret"):
        registry_lib.make_registry(registry)


def test_the_component_refuses_a_secret_before_it_enters_the_pipeline():
    from tfx import types
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.pusher import component

    with pytest.raises(ValueError, match="push.registry.headers: looks like a secret"):
        component.LitedetPusher(
            model=types.Channel(type=standard_artifacts.Model),
            model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            label_map=types.Channel(type=artifacts.LabelMap),
            destination="/models",
            registry={"kind": "mlflow", "tracking_uri": "https://m", "headers": {"X-Key": "k"}},
        )


def test_allow_insecure_http_must_be_a_boolean():
    registry = {"kind": "mlflow", "tracking_uri": "http://m", "allow_insecure_http": "yes"}
    with pytest.raises(configs.ConfigError, match="allow_insecure_http: 'yes' must be true"):
        configs.validate(configs.load_config(None, ["push.registry=" + json.dumps(registry)]))
