"""Model registries the Pusher announces a pushed version to.

The store (components/pusher/store.py) holds the files; a registry records "model X has a version
N whose files are at <uri>" where people and deployment tools look. Registration happens *after*
the files are in the store, so a registry failure never loses a model: `RegistryError` says which
call failed and where the files already are.

- `MlflowRegistry`: an MLflow 2.x tracking server, spoken to over its REST API with `requests`
  (the TFX 1.16 environment cannot install the `mlflow` package: protobuf 3 vs 4+). One MLflow run
  per push carries the pushed files as artifacts under `model/`, the metrics and the params; the
  registered model version points at `runs:/<run_id>/model` (the server refuses a bare path as a
  version source) and is tagged with the store's URI and version.
- `KubeflowModelRegistry`: the Kubeflow Model Registry through its official Python client
  (`model-registry` on PyPI), imported only when used. Untested against a real server here.
- `NoRegistry`: registers nothing.

`make_registry(config)` builds one from a JSON-able dict: {"kind": "mlflow"|"kubeflow"|"none", ...}.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import posixpath
import random
import re
import time
import urllib.parse
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, runtime_checkable

import requests

from litedet.components.pusher import registry_settings, store

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class RegistryError(RuntimeError):
    """Registering a pushed version failed; the files are in the store at `version_uri`."""

    def __init__(
        self, message: str, *, endpoint: str = "", attempts: int = 0, version_uri: str = ""
    ):
        super().__init__(message)
        self.endpoint = endpoint
        self.attempts = attempts
        self.version_uri = version_uri


@runtime_checkable
class ModelRegistry(Protocol):
    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        """Registers the store version at `version_uri` (described by `manifest`) under model
        `name`; returns the registry's id of the new version. Raises RegistryError."""


class NoRegistry:
    kind = "none"

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        return ""


def _numeric_items(mapping: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
    """Flattens nested numbers ({"a": {"b": 1}} -> {"a.b": 1.0}); booleans and text are left out."""
    out: Dict[str, float] = {}
    for key, value in (mapping or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_numeric_items(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def model_metrics(manifest: Mapping[str, Any]) -> Dict[str, float]:
    """The numbers a registry should show for a version: `metrics` (mAP ...), `latency_ms`,
    `sizes_bytes`."""
    metrics = _numeric_items(manifest.get("metrics") or {})
    if isinstance(manifest.get("latency_ms"), Mapping):
        metrics.update(_numeric_items(manifest["latency_ms"], "latency_ms."))
    metrics.update(_numeric_items(manifest.get("sizes_bytes") or {}, "size_bytes."))
    if isinstance(manifest.get("latency_ms"), (int, float)):
        metrics["latency_ms"] = float(manifest["latency_ms"])
    return metrics


def model_params(manifest: Mapping[str, Any]) -> Dict[str, str]:
    """Short descriptive values: alpha, input size, classes, where it came from."""
    params: Dict[str, str] = {}
    for key in ("model_name", "alpha", "input_size"):
        if manifest.get(key) is not None:
            value = manifest[key]
            params[key] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    classes = [c.get("name") for c in (manifest.get("label_map") or {}).get("classes", [])]
    if classes:
        params["classes"] = ",".join(str(c) for c in classes)[:500]
    for key, value in (manifest.get("source") or {}).items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            params[f"source.{key}"] = str(value)
    params["store.version"] = str(manifest.get("version", ""))
    params["store.uri"] = str(manifest.get("uri", ""))
    return params


def _retrying(
    what: str,
    call: Callable[[], Any],
    *,
    retries: int,
    backoff_s: float,
    max_backoff_s: float,
    retriable: Callable[[BaseException], bool],
    fail: Callable[[str, int], RegistryError],
) -> Any:
    """Runs `call`; retries a retriable failure `retries` times with exponential backoff (and a
    little jitter), then raises `fail(reason, attempts)`."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return call()
        except RegistryError:
            raise
        except Exception as e:  # noqa: BLE001 - classified just below
            reason = f"{type(e).__name__}: {e}"
            if not retriable(e) or attempts > retries:
                raise fail(reason, attempts) from e
            delay = min(max_backoff_s, backoff_s * 2 ** (attempts - 1))
            delay *= 1 + 0.1 * random.random()
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                what,
                attempts,
                retries + 1,
                reason,
                delay,
            )
            time.sleep(delay)


# ---------------------------------------------------------------------------------------------
# MLflow


class _HttpStatusError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body
        try:
            self.error_code = json.loads(body).get("error_code", "")
        except ValueError:
            self.error_code = ""


def _http_retriable(e: BaseException) -> bool:
    if isinstance(e, _HttpStatusError):
        return e.status in _RETRY_STATUS
    return isinstance(e, (requests.ConnectionError, requests.Timeout))


_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


class MlflowRegistry:
    """Registers pushed versions in an MLflow 2.x tracking server over its REST API.

    Per push: an experiment (`experiment_name`, created when missing), one run with the pushed
    files uploaded as artifacts under `model/` (plus `manifest.json`), metrics (mAP, latency) and
    params (alpha, input size, classes, pipeline run id), then the registered model (created when
    missing) and a model version with source `runs:/<run_id>/model`, run_id, and tags
    `litedet.store_uri` / `litedet.store_version`.

    Artifacts: when the run's artifact location is proxied by the server
    (`mlflow-artifacts:/...`, what `mlflow server` gives by default with `--serve-artifacts`,
    on by default in 2.x, and no `--default-artifact-root`) the files are PUT to
    `/api/2.0/mlflow-artifacts/artifacts/<path>`. Otherwise the location is a store this process
    must reach directly, as MLflow's own client does (a local path, or `gs://` / `s3://` through
    `tf.io.gfile`).

    Auth as MLflow's client: `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME` /
    `MLFLOW_TRACKING_PASSWORD` (basic), unless `headers` is given (in code only: the configuration
    refuses secrets, registry_settings.py). The credentials go to the tracking server's own
    origin (scheme, host, port) and nowhere else: not to an artifact location on another host
    that a server response names, and not along a redirect (refused). Over plain `http://` they
    are refused unless `allow_insecure_http` (a trusted network, e.g. a cluster-internal service).

    Failures: a connection error, a timeout or HTTP 408/429/5xx is retried `retries` times with
    exponential backoff from `backoff_s`; any other HTTP error fails at once. Either way the
    result is a RegistryError naming the endpoint, the error and the store URI of the files.
    Registering is idempotent on the store version: a model version whose `litedet.store_uri`
    tag is `version_uri` already is returned as it is (no new run, no new version), so a pusher
    run again after a failed registration registers the store's version once. Creating the model
    version is idempotent too (an existing version for the same run is reused), so a retried
    create cannot register the push twice.
    """

    kind = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        model_name: str = "",
        *,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 60.0,
        experiment_name: str = "litedet",
        artifact_location: str = "",
        headers: Optional[Mapping[str, str]] = None,
        ready_timeout_s: float = 60.0,
        allow_insecure_http: bool = False,
    ):
        if not tracking_uri.startswith(("http://", "https://")):
            raise ValueError(f"tracking_uri must be http(s)://host:port, not {tracking_uri!r}")
        self._auth = dict(headers) if headers is not None else _mlflow_auth()
        if self._auth and tracking_uri.startswith("http://") and not allow_insecure_http:
            raise ValueError(
                f"MLflow registry at {tracking_uri}: refusing to send the credentials "
                "(MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD) over plain http://, "
                "where anyone on the network path can read them; use https://, or set "
                "push.registry.allow_insecure_http: true for a network you trust (e.g. a "
                "cluster-internal service)"
            )
        self.tracking_uri = tracking_uri.rstrip("/")
        self.model_name = model_name
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.ready_timeout_s = ready_timeout_s
        self._origin = _origin(self.tracking_uri)
        # No session-wide headers: credentials are added per request, for this origin only.
        self._session = requests.Session()
        self.last_run_id = ""
        self._version_uri = ""

    # -- plumbing ------------------------------------------------------------------------------

    def _fail(self, endpoint: str):
        def make(reason: str, attempts: int) -> RegistryError:
            return RegistryError(
                f"MLflow registry at {self.tracking_uri}: {endpoint} failed after {attempts} "
                f"attempt(s): {reason}. The model files are already in the store at "
                f"{self._version_uri or '(not pushed)'}; register that version once the registry "
                "works (python -m litedet.components.pusher.registry CONFIG NAME URI) or delete "
                "it.",
                endpoint=endpoint,
                attempts=attempts,
                version_uri=self._version_uri,
            )

        return make

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One HTTP request; the credentials only when `url` is on the tracking server's origin.
        Redirects are not followed: requests would carry custom headers along to wherever the
        answer points, and MLflow's API never redirects."""
        headers = dict(self._auth) if _origin(url) == self._origin else {}
        response = self._session.request(
            method, url, headers=headers, timeout=self.timeout_s, allow_redirects=False, **kwargs
        )
        if response.is_redirect:
            raise _HttpStatusError(
                response.status_code,
                f"redirect to {response.headers.get('Location')!r} refused (credentials are sent "
                f"to {self.tracking_uri} only; give the final URL as tracking_uri)",
            )
        return response

    def _call(self, method: str, path: str, *, ok_codes=(), **kwargs) -> dict:
        """One REST call with retries; returns the JSON body ({} when empty). An error whose
        MLflow `error_code` is in `ok_codes` is returned as {"error_code": ...} instead."""
        url = self.tracking_uri + path
        endpoint = f"{method} {path.split('?')[0]}"

        def once():
            response = self._request(method, url, **kwargs)
            if response.status_code >= 400:
                error = _HttpStatusError(response.status_code, response.text)
                if error.error_code and error.error_code in ok_codes:
                    return {"error_code": error.error_code}
                raise error
            return response.json() if response.content else {}

        return _retrying(
            endpoint,
            once,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            retriable=_http_retriable,
            fail=self._fail(endpoint),
        )

    # -- steps -----------------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        found = self._call(
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": self.experiment_name},
            ok_codes=("RESOURCE_DOES_NOT_EXIST",),
        )
        if "experiment" in found:
            return found["experiment"]["experiment_id"]
        body = {"name": self.experiment_name}
        if self.artifact_location:
            body["artifact_location"] = self.artifact_location
        created = self._call(
            "POST",
            "/api/2.0/mlflow/experiments/create",
            json=body,
            ok_codes=("RESOURCE_ALREADY_EXISTS",),
        )
        if "experiment_id" in created:
            return created["experiment_id"]
        # Created by a concurrent push meanwhile.
        found = self._call(
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": self.experiment_name},
        )
        return found["experiment"]["experiment_id"]

    def _upload(self, artifact_uri: str, relative: str, data: bytes) -> None:
        parsed = urllib.parse.urlparse(artifact_uri)
        if parsed.scheme == "mlflow-artifacts":
            base = (
                f"{self.tracking_uri}"
                if not parsed.netloc
                else f"{urllib.parse.urlparse(self.tracking_uri).scheme}://{parsed.netloc}"
            )
            url = f"{base}/api/2.0/mlflow-artifacts/artifacts/{parsed.path.strip('/')}"
        elif parsed.scheme in ("http", "https"):
            url = artifact_uri.rstrip("/")
        else:
            self._write_direct(artifact_uri, relative, data)
            return
        url = url + "/" + urllib.parse.quote(relative)
        endpoint = "PUT /api/2.0/mlflow-artifacts/artifacts"

        def once():
            response = self._request("PUT", url, data=data)
            if response.status_code >= 400:
                raise _HttpStatusError(response.status_code, response.text)

        _retrying(
            f"{endpoint} {relative}",
            once,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            retriable=_http_retriable,
            fail=self._fail(f"{endpoint}/<run>/{relative}"),
        )

    def _write_direct(self, artifact_uri: str, relative: str, data: bytes) -> None:
        root = artifact_uri
        target = root.rstrip("/") + "/" + relative
        fs = store.filesystem(store._strip_file_scheme(target))
        target = store._strip_file_scheme(target)
        try:
            fs.makedirs(posixpath.dirname(target))
            with fs.open(target, "wb") as f:
                f.write(data)
        except Exception as e:  # noqa: BLE001
            raise RegistryError(
                f"MLflow registry at {self.tracking_uri}: writing run artifact {target} directly "
                f"(the run's artifact location {artifact_uri} is not served by the tracking "
                f"server) failed: {type(e).__name__}: {e}. The model files are already in the "
                f"store at {self._version_uri}.",
                endpoint=f"write {artifact_uri}",
                attempts=1,
                version_uri=self._version_uri,
            ) from e

    def _log_files(self, artifact_uri: str, version_uri: str, manifest: Mapping[str, Any]):
        fs = store.filesystem(version_uri)
        names = list(manifest.get("files") or {}) + [store.MANIFEST]
        for name in names:
            with fs.open(fs.join(version_uri, *name.split("/")), "rb") as f:
                data = f.read()
            self._upload(artifact_uri, f"model/{name}", data)

    def _model_version(self, name: str, run_id: str, tags, description: str) -> dict:
        self._call(
            "POST",
            "/api/2.0/mlflow/registered-models/create",
            json={"name": name, "description": "litedet object detector (TFLite)"},
            ok_codes=("RESOURCE_ALREADY_EXISTS",),
        )
        # Idempotent: a create that timed out may have been done; never register a run twice.
        existing = self._call(
            "GET",
            "/api/2.0/mlflow/model-versions/search",
            params={"filter": f"name='{name}' and run_id='{run_id}'"},
        )
        if existing.get("model_versions"):
            return existing["model_versions"][0]
        created = self._call(
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            json={
                "name": name,
                "source": f"runs:/{run_id}/model",
                "run_id": run_id,
                "tags": tags,
                "description": description,
            },
        )
        return self._ready(name, created["model_version"])

    def _ready(self, name: str, version: dict) -> dict:
        """`version` once the server has finished registering it; RegistryError if it failed."""
        deadline = time.monotonic() + self.ready_timeout_s
        while version.get("status") == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.5)
            version = self._call(
                "GET",
                "/api/2.0/mlflow/model-versions/get",
                params={"name": name, "version": version["version"]},
            )
            version = version["model_version"]
        if version.get("status") not in (None, "READY"):
            raise self._fail("model-versions/create")(
                f"version {version.get('version')} is {version.get('status')}: "
                f"{version.get('status_message', '')}",
                1,
            )
        return version

    def _registered_for(self, name: str, version_uri: str) -> Optional[dict]:
        """The model version of `name` already registered for the store version at `version_uri`
        (its `litedet.store_uri` tag), or None. The versions are listed page by page and their
        tags compared here: MLflow's search filters on tags differ between server versions."""
        page_token = ""
        while True:
            params = {"filter": f"name='{name}'", "max_results": 1000}
            if page_token:
                params["page_token"] = page_token
            page = self._call("GET", "/api/2.0/mlflow/model-versions/search", params=params)
            for version in page.get("model_versions") or []:
                tags = {t.get("key"): t.get("value") for t in version.get("tags") or []}
                if (
                    tags.get("litedet.store_uri") == version_uri
                    and version.get("status") != "FAILED_REGISTRATION"
                ):
                    return version
            page_token = page.get("next_page_token") or ""
            if not page_token:
                return None

    # -- the protocol ----------------------------------------------------------------------------

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        name = name or self.model_name
        if not name:
            raise ValueError("no model name")
        self._version_uri = version_uri
        existing = self._registered_for(name, version_uri)
        if existing is not None:
            version = self._ready(name, existing)
            log.info(
                "%s version %s in MLflow is already registered for %s",
                name,
                version["version"],
                version_uri,
            )
            return str(version["version"])
        now_ms = int(time.time() * 1000)
        store_version = str(manifest.get("version", ""))
        source = manifest.get("source") or {}
        run_tags = [
            {"key": "litedet.store_uri", "value": version_uri},
            {"key": "litedet.store_version", "value": store_version},
            {"key": "litedet.model_name", "value": name},
        ]
        if source.get("pipeline_run_id"):
            run_tags.append(
                {"key": "litedet.pipeline_run_id", "value": str(source["pipeline_run_id"])}
            )
        experiment_id = self._experiment_id()
        run = self._call(
            "POST",
            "/api/2.0/mlflow/runs/create",
            json={
                "experiment_id": experiment_id,
                "start_time": now_ms,
                "run_name": f"push-{name}-v{store_version}",
                "tags": run_tags,
            },
        )["run"]
        run_id = run["info"]["run_id"]
        self.last_run_id = run_id
        try:
            self._log_files(run["info"]["artifact_uri"], version_uri, manifest)
            metrics = [
                {"key": _METRIC_KEY.sub("_", k)[:250], "value": v, "timestamp": now_ms, "step": 0}
                for k, v in sorted(model_metrics(manifest).items())
            ]
            params = [
                {"key": _METRIC_KEY.sub("_", k)[:250], "value": v[:6000]}
                for k, v in sorted(model_params(manifest).items())
            ]
            self._call(
                "POST",
                "/api/2.0/mlflow/runs/log-batch",
                json={"run_id": run_id, "metrics": metrics, "params": params},
            )
            self._call(
                "POST",
                "/api/2.0/mlflow/runs/update",
                json={"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)},
            )
        except RegistryError:
            self._mark_failed(run_id)
            raise
        version = self._model_version(
            name,
            run_id,
            tags=[
                {"key": "litedet.store_uri", "value": version_uri},
                {"key": "litedet.store_version", "value": store_version},
            ],
            description=f"litedet store version {store_version} at {version_uri}",
        )
        log.info(
            "Registered %s version %s in MLflow (run %s) for %s",
            name,
            version["version"],
            run_id,
            version_uri,
        )
        return str(version["version"])

    def _mark_failed(self, run_id: str) -> None:
        try:  # best effort, once: the run is useless without its files
            self._request(
                "POST",
                self.tracking_uri + "/api/2.0/mlflow/runs/update",
                json={"run_id": run_id, "status": "FAILED", "end_time": int(time.time() * 1000)},
            )
        except (requests.RequestException, _HttpStatusError):
            pass


def _origin(url: str) -> tuple:
    """(scheme, host, port) of a URL, default ports filled in: what "the same server" means for
    credentials (a browser's same-origin rule)."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    try:
        port = parsed.port
    except ValueError:  # a malformed port: matches no origin
        return (scheme, parsed.netloc, None)
    return (scheme, (parsed.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme))


def _mlflow_auth() -> Dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}
    return {}


# ---------------------------------------------------------------------------------------------
# Kubeflow Model Registry


def _kubeflow_retriable(e: BaseException) -> bool:
    # aiohttp's connection errors and asyncio timeouts are OSError / TimeoutError subclasses;
    # the generated client raises ServiceException (HTTP 5xx) with a `status`.
    status = getattr(e, "status", None)
    if isinstance(status, int):
        return status in _RETRY_STATUS
    return isinstance(e, (OSError, TimeoutError))


class KubeflowModelRegistry:
    """Registers pushed versions in a Kubeflow Model Registry (the in-cluster target).

    Uses the official client, `model-registry` (0.3.18 resolves beside TFX 1.16; it is imported
    only here). The registered model `name` gets a version named after the store version
    ("7"), whose model artifact URI is the store URI (`gs://.../7`, servable by KServe), with
    `model_format_name`/`model_format_version` and the manifest's numbers and ids as metadata.
    Returns the server's id of the model version. A version name that already exists is reused
    when it points at the same URI (a retried push) and is an error otherwise.

    UNTESTED against a real server: none can run on the development machines (no cluster, no
    container engine). Only the failure path (server unreachable) is exercised by the tests.
    """

    kind = "kubeflow"

    def __init__(
        self,
        server_address: str,
        port: Optional[int] = None,
        *,
        author: str,
        model_name: str = "",
        is_secure: Optional[bool] = None,
        user_token: Optional[str] = None,
        custom_ca: Optional[str] = None,
        model_format_name: str = "tflite",
        model_format_version: str = "2",
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ):
        self.server_address = server_address
        self.port = port
        self.author = author
        self.model_name = model_name
        self.is_secure = is_secure
        self.user_token = user_token
        self.custom_ca = custom_ca
        self.model_format_name = model_format_name
        self.model_format_version = model_format_version
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client = None
        self._version_uri = ""

    def _fail(self, endpoint: str):
        def make(reason: str, attempts: int) -> RegistryError:
            where = f"{self.server_address}" + (f":{self.port}" if self.port else "")
            return RegistryError(
                f"Kubeflow Model Registry at {where}: {endpoint} failed after {attempts} "
                f"attempt(s): {reason}. The model files are already in the store at "
                f"{self._version_uri or '(not pushed)'}; register that version once the registry "
                "works (python -m litedet.components.pusher.registry CONFIG NAME URI) or delete "
                "it.",
                endpoint=endpoint,
                attempts=attempts,
                version_uri=self._version_uri,
            )

        return make

    def _retry(self, endpoint: str, call: Callable[[], Any]) -> Any:
        return _retrying(
            endpoint,
            call,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            retriable=_kubeflow_retriable,
            fail=self._fail(endpoint),
        )

    def _connect(self):
        if self._client is None:
            try:
                from model_registry import ModelRegistry as Client
            except ImportError as e:
                raise RegistryError(
                    "The Kubeflow Model Registry client is not installed (pip install "
                    f"model-registry==0.3.18): {e}. The model files are already in the store at "
                    f"{self._version_uri}.",
                    endpoint="import model_registry",
                    version_uri=self._version_uri,
                ) from e
            self._client = self._retry(
                "connect",
                lambda: Client(
                    self.server_address,
                    self.port,
                    author=self.author,
                    is_secure=self.is_secure,
                    user_token=self.user_token,
                    custom_ca=self.custom_ca,
                ),
            )
        return self._client

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        name = name or self.model_name
        if not name:
            raise ValueError("no model name")
        self._version_uri = version_uri
        client = self._connect()
        version_name = str(manifest.get("version", ""))
        metadata: Dict[str, Any] = {
            "litedet.store_uri": version_uri,
            "litedet.store_version": version_name,
        }
        metadata.update({k: v for k, v in model_metrics(manifest).items()})
        metadata.update({k: v for k, v in model_params(manifest).items()})

        def existing():
            if client.get_registered_model(name) is None:
                return None
            return client.get_model_version(name, version_name)

        found = self._retry("get model version", existing)
        if found is None:
            self._retry(
                "register_model",
                lambda: client.register_model(
                    name,
                    version_uri,
                    version=version_name,
                    model_format_name=self.model_format_name,
                    model_format_version=self.model_format_version,
                    version_description=f"litedet store version {version_name} at {version_uri}",
                    metadata=metadata,
                ),
            )
            found = self._retry("get model version", existing)
        else:
            artifact = self._retry(
                "get model artifact", lambda: client.get_model_artifact(name, version_name)
            )
            if artifact is None or artifact.uri != version_uri:
                raise self._fail("register_model")(
                    f"model {name!r} already has a version {version_name!r} pointing at "
                    f"{getattr(artifact, 'uri', None)}, not {version_uri} (two stores pushing "
                    f"under one model name?)",
                    1,
                )
        if found is None or not found.id:
            raise self._fail("register_model")("the new version cannot be read back", 1)
        return str(found.id)


# ---------------------------------------------------------------------------------------------


def make_registry(config: Optional[Mapping[str, Any]], model_name: str = "") -> ModelRegistry:
    """A registry from its config: {"kind": "none"} (or empty),
    {"kind": "mlflow", "tracking_uri": ..., "retries"?, "backoff_s"?, "experiment_name"?, ...},
    {"kind": "kubeflow", "server_address": ..., "port"?, "author": ..., ...}.
    Every key but "kind" is passed to the class's constructor."""
    config = dict(config or {})
    registry_settings.check_registry_settings(config)
    kind = config.pop("kind", "none")
    if kind == "none":
        if config:
            raise ValueError(f"registry kind 'none' takes no settings, got {sorted(config)}")
        return NoRegistry()
    config.setdefault("model_name", model_name)
    if kind == "mlflow":
        return MlflowRegistry(**config)
    if kind == "kubeflow":
        return KubeflowModelRegistry(**config)
    raise ValueError(f"unknown registry kind {kind!r}: use 'mlflow', 'kubeflow' or 'none'")


def main(argv=None) -> int:
    """`python -m litedet.components.pusher.registry CONFIG NAME VERSION_URI`: registers a
    version that is already in the store (e.g. after a RegistryError); CONFIG is the registry's
    JSON config. Prints the registry's version id."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config", help='e.g. \'{"kind": "mlflow", "tracking_uri": "http://..."}\'')
    parser.add_argument("name", help="registered model name")
    parser.add_argument("version_uri", help="the store version's folder, e.g. gs://b/models/7")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    registry = make_registry(json.loads(args.config), args.name)
    print(registry.register(args.name, args.version_uri, store.read_manifest(args.version_uri)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
