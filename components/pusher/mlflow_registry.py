"""`MlflowRegistry`: pushed versions registered in an MLflow tracking server (2.x or 3.x) through
MLflow's own client, `MlflowClient` (the `mlflow-skinny` package, imported on first use).

Per push: an experiment (`experiment_name`, created when missing), one run that carries the
version's files as artifacts under `model/` (every file of the store version and its
`manifest.json`), its metrics (mAP, per-class AP, latency, sizes), params (alpha, input size,
classes, where it came from) and tags (store URI and version, the gate's verdict, lineage, each
model file's format); then the registered model (created when missing) and a model version whose
source is `runs:/<run_id>/model`, tagged with the store URI and version, the gate's verdict,
lineage, the metrics (JSON) and, per model file, its format and role:
`litedet.artifact.serving.format = tensorflow` / `role = server` (TensorFlow Serving's layout of
the SavedModel, what KServe's TensorFlow runtime loads) and `litedet.artifact.<file>.tflite.
format = tflite` / `role = device` (never servable by a model server).

Credentials: MLflow's client reads them from the environment (MLFLOW_TRACKING_TOKEN, or
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD); the configuration refuses them
(registry_settings.py). With credentials set: plain `http://` is refused unless
`allow_insecure_http`, and a run whose artifact location is an HTTP server other than the tracking
server (`mlflow-artifacts://other-host/...`, `http(s)://other-host/...`) is refused before any
upload, because MLflow's client would send that server the same credentials. A redirect to
another origin is followed by `requests` without the Authorization header.

Failures: MLflow's own HTTP retries are switched off for these calls
(MLFLOW_HTTP_REQUEST_MAX_RETRIES is 0 while they run) and each client call is retried here
instead: a connection error, a timeout or HTTP 408/429/5xx `retries` times with exponential
backoff from `backoff_s`; any other error fails at once. The result is a one-line RegistryError
naming the call, the error, where the files are and the `litedet register` command.
Registering is idempotent on the store version: a model version whose `litedet.store_uri` tag is
`version_uri` already is returned as it is (no new run, no new version); creating the model
version is idempotent on the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping

from litedet.components.pusher import store
from litedet.components.pusher.registry import (
    RETRY_STATUS,
    RegistryError,
    gate_verdict,
    lineage,
    model_artifacts,
    model_metrics,
    model_params,
    recovery_hint,
    retrying,
)

log = logging.getLogger(__name__)

CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
TAG_VALUE_LIMIT = 5000  # MLflow 2.x's limit on a model version tag's value


def _key(name: str) -> str:
    return _KEY.sub("_", name)[:250]


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


def _credentials_in_environment() -> List[str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    names = ["MLFLOW_TRACKING_TOKEN"] if token else []
    if user and password:
        names += ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
    return names


def _retriable(error: BaseException) -> bool:
    """A connection error, a timeout, or an HTTP 408/429/5xx answer (MLflow's client wraps
    the requests exception it caught: the chain is walked)."""
    import requests

    seen = error
    while seen is not None:
        if isinstance(
            seen,
            (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.RetryError,
                ConnectionError,
                TimeoutError,
            ),
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    get_status = getattr(error, "get_http_status_code", None)
    if callable(get_status):
        try:
            return int(get_status()) in RETRY_STATUS
        except (TypeError, ValueError):
            return False
    return False


def _error_code(error: BaseException) -> str:
    return str(getattr(error, "error_code", "") or "")


class MlflowRegistry:
    """Registers pushed versions in an MLflow tracking server; see the module's docstring."""

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
        ready_timeout_s: float = 60.0,
        allow_insecure_http: bool = False,
    ):
        if not str(tracking_uri).startswith(("http://", "https://")):
            raise ValueError(
                f"push.registry.tracking_uri: {tracking_uri!r} must be the tracking server's "
                "http(s)://host:port"
            )
        credentials = _credentials_in_environment()
        if credentials and tracking_uri.startswith("http://") and not allow_insecure_http:
            raise ValueError(
                f"MLflow registry at {tracking_uri}: refusing to send the credentials "
                f"({' / '.join(credentials)}) over plain http://, where anyone on the network "
                "path can read them; use https://, or set push.registry.allow_insecure_http: "
                "true for a network you trust (e.g. a cluster-internal service)"
            )
        self.tracking_uri = tracking_uri.rstrip("/")
        self.model_name = model_name
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.ready_timeout_s = float(ready_timeout_s)
        self.has_credentials = bool(credentials)
        self.last_run_id = ""
        self._client = None
        self._version_uri = ""
        self._manifest: Mapping[str, Any] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def client(self):
        """MLflow's client for this tracking server (and its model registry)."""
        if self._client is None:
            try:
                from mlflow import MlflowClient
            except ImportError as e:
                raise RegistryError(
                    f"MLflow registry: MLflow's client is not installed ({e}); install "
                    f"requirements.lock (mlflow-skinny). {recovery_hint(self._version_uri)}",
                    endpoint="import mlflow",
                    version_uri=self._version_uri,
                ) from e
            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    @contextlib.contextmanager
    def _http_settings(self):
        """MLflow's own retries off and our timeout on, for the calls made inside (MLflow reads
        these variables at each request)."""
        wanted = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(round(self.timeout_s)))),
        }
        saved = {name: os.environ.get(name) for name in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _fail(self, what: str):
        def make(reason: str, attempts: int) -> RegistryError:
            return RegistryError(
                f"MLflow registry at {self.tracking_uri} (push.registry.tracking_uri): {what} "
                f"failed after {attempts} "
                f"attempt(s): {reason}. {recovery_hint(self._version_uri, self._manifest)}",
                endpoint=what,
                attempts=attempts,
                version_uri=self._version_uri,
            )

        return make

    def _call(self, what: str, call: Callable[[], Any], *, ok_codes=()) -> Any:
        """One client call with retries. An MLflow error whose code is in `ok_codes` is
        returned (not raised)."""

        def once():
            with self._http_settings():
                try:
                    return call()
                except Exception as e:  # noqa: BLE001 - MlflowException / RestException
                    if ok_codes and _error_code(e) in ok_codes:
                        return e
                    raise

        return retrying(
            what,
            once,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            retriable=_retriable,
            fail=self._fail(what),
        )

    # -- steps -----------------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        client = self.client()
        found = self._call(
            "get_experiment_by_name", lambda: client.get_experiment_by_name(self.experiment_name)
        )
        if found is not None:
            return found.experiment_id
        created = self._call(
            "create_experiment",
            lambda: client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location or None
            ),
            ok_codes=("RESOURCE_ALREADY_EXISTS",),
        )
        if isinstance(created, str):
            return created
        # Created by a concurrent push meanwhile.
        return self._call(
            "get_experiment_by_name", lambda: client.get_experiment_by_name(self.experiment_name)
        ).experiment_id

    def _check_artifact_location(self, artifact_uri: str) -> None:
        """With credentials set, the run's artifacts must go to the tracking server itself (or to
        a store this step writes with its own credentials): MLflow's client sends the tracking
        credentials to any HTTP artifact server."""
        if not self.has_credentials:
            return
        parsed = urllib.parse.urlparse(artifact_uri)
        if parsed.scheme == "mlflow-artifacts":
            if not parsed.netloc:
                return  # proxied by the tracking server
            target = f"{urllib.parse.urlparse(self.tracking_uri).scheme}://{parsed.netloc}"
        elif parsed.scheme in ("http", "https"):
            target = artifact_uri
        else:
            return  # a path, gs://, s3://: written with that store's own credentials
        if _origin(target) != _origin(self.tracking_uri):
            raise RegistryError(
                f"MLflow registry at {self.tracking_uri}: the run's artifact location "
                f"{artifact_uri} is another server, and MLflow's client would send it the "
                f"tracking credentials ({', '.join(_credentials_in_environment())}); serve the "
                "artifacts through the tracking server (`mlflow server` with its default "
                "--serve-artifacts) or set push.registry.artifact_location to a bucket or folder "
                f"this step writes itself. {recovery_hint(self._version_uri, self._manifest)}",
                endpoint="artifact location",
                attempts=1,
                version_uri=self._version_uri,
            )

    def _log_files(self, run_id: str, version_uri: str, manifest: Mapping[str, Any]) -> None:
        """The store version's files (and manifest) as the run's artifacts under `model/`,
        staged through a local folder (the store may be a bucket)."""
        fs = store.filesystem(version_uri)
        names = list(manifest.get("files") or {}) + [store.MANIFEST]
        client = self.client()
        with tempfile.TemporaryDirectory(prefix="litedet-mlflow-") as staging:
            for name in names:
                target = os.path.join(staging, *name.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with fs.open(fs.join(version_uri, *name.split("/")), "rb") as src:
                    with open(target, "wb") as dst:
                        dst.write(src.read())
            self._call("log_artifacts", lambda: client.log_artifacts(run_id, staging, "model"))

    def _version_tags(self, version_uri: str, manifest: Mapping[str, Any]) -> Dict[str, str]:
        tags = {
            "litedet.store_uri": version_uri,
            "litedet.store_version": str(manifest.get("version", "")),
        }
        tags.update({f"litedet.gate.{k}": v for k, v in gate_verdict(manifest).items()})
        tags.update({f"litedet.lineage.{k}": v for k, v in lineage(manifest).items()})
        for artifact in model_artifacts(manifest):
            prefix = f"litedet.artifact.{artifact['path']}."
            tags[prefix + "format"] = artifact["format"]
            tags[prefix + "role"] = artifact["role"]
            if artifact["servable"]:
                tags[prefix + "servable"] = artifact["servable"]
            if artifact.get("shipped"):
                tags[prefix + "shipped"] = "true"
        metrics = json.dumps(model_metrics(manifest), sort_keys=True)
        if len(metrics) <= TAG_VALUE_LIMIT:
            tags["litedet.metrics"] = metrics
        return {_key(k): str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items()}

    def _description(self, version_uri: str, manifest: Mapping[str, Any]) -> str:
        parts = []
        for artifact in model_artifacts(manifest):
            if artifact["role"] == "server":
                parts.append(
                    f"TensorFlow SavedModel at model/{artifact['path']} (format tensorflow"
                    + (
                        "; TensorFlow Serving layout, served by KServe's TensorFlow runtime"
                        if artifact["servable"]
                        else ""
                    )
                    + ")"
                )
        devices = [a["path"] for a in model_artifacts(manifest) if a["role"] == "device"]
        if devices:
            parts.append(f"TFLite models for devices (format tflite): {', '.join(devices)}")
        return (
            f"litedet store version {manifest.get('version', '')} at {version_uri}. "
            + "; ".join(parts)
        )

    def _model_version(self, name: str, run_id: str, tags: Dict[str, str], description: str):
        client = self.client()
        self._call(
            "create_registered_model",
            lambda: client.create_registered_model(
                name,
                description="litedet object detector: a TensorFlow SavedModel for servers and "
                "TFLite models for devices",
            ),
            ok_codes=("RESOURCE_ALREADY_EXISTS",),
        )
        # Idempotent: a create that timed out may have been done; never register a run twice.
        existing = self._call(
            "search_model_versions",
            lambda: client.search_model_versions(f"name='{name}' and run_id='{run_id}'"),
        )
        if existing:
            return self._ready(name, existing[0])
        created = self._call(
            "create_model_version",
            lambda: client.create_model_version(
                name,
                f"runs:/{run_id}/model",
                run_id=run_id,
                tags=tags,
                description=description,
                await_creation_for=0,
            ),
        )
        return self._ready(name, created)

    def _ready(self, name: str, version):
        """`version` once the server has finished registering it; RegistryError if it failed."""
        client = self.client()
        deadline = time.monotonic() + self.ready_timeout_s
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.5)
            number = version.version
            version = self._call(
                "get_model_version", lambda number=number: client.get_model_version(name, number)
            )
        if version.status not in (None, "", "READY"):
            raise self._fail("create_model_version")(
                f"version {version.version} is {version.status}: {version.status_message or ''}",
                1,
            )
        return version

    def registered_for(self, name: str, version_uri: str):
        """The model version of `name` already registered for the store version at
        `version_uri` (its `litedet.store_uri` tag), or None. The versions are listed page by
        page and their tags compared here: MLflow's search filters on tags differ between server
        versions."""
        client = self.client()
        token = None
        while True:
            page = self._call(
                "search_model_versions",
                lambda token=token: client.search_model_versions(
                    f"name='{name}'", max_results=1000, page_token=token
                ),
            )
            for version in page:
                if (version.tags or {}).get(
                    "litedet.store_uri"
                ) == version_uri and version.status != "FAILED_REGISTRATION":
                    return version
            token = getattr(page, "token", None)
            if not token:
                return None

    # -- the protocol ----------------------------------------------------------------------------

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        name = name or self.model_name
        if not name:
            raise ValueError("push.model_name: no model name to register the version under")
        self._version_uri = version_uri
        self._manifest = manifest
        existing = self.registered_for(name, version_uri)
        if existing is not None:
            version = self._ready(name, existing)
            log.info(
                "%s version %s in MLflow is already registered for %s",
                name,
                version.version,
                version_uri,
            )
            return str(version.version)
        from mlflow.entities import Metric, Param

        client = self.client()
        now_ms = int(time.time() * 1000)
        store_version = str(manifest.get("version", ""))
        run_tags = {
            "litedet.store_uri": version_uri,
            "litedet.store_version": store_version,
            "litedet.model_name": name,
        }
        source = manifest.get("source") or {}
        if source.get("pipeline_run_id"):
            run_tags["litedet.pipeline_run_id"] = str(source["pipeline_run_id"])
        version_tags = self._version_tags(version_uri, manifest)
        run_tags.update({k: v for k, v in version_tags.items() if k != "litedet.metrics"})
        experiment_id = self._experiment_id()
        run = self._call(
            "create_run",
            lambda: client.create_run(
                experiment_id,
                start_time=now_ms,
                tags=run_tags,
                run_name=f"push-{name}-v{store_version}",
            ),
        )
        run_id = run.info.run_id
        self.last_run_id = run_id
        try:
            self._check_artifact_location(run.info.artifact_uri)
            self._log_files(run_id, version_uri, manifest)
            metrics = [
                Metric(_key(k), v, now_ms, 0) for k, v in sorted(model_metrics(manifest).items())
            ]
            params = [Param(_key(k), v[:6000]) for k, v in sorted(model_params(manifest).items())]
            for start in range(0, max(len(metrics), 1), 900):  # log_batch takes 1000 at most
                chunk = metrics[start : start + 900]
                self._call(
                    "log_batch",
                    lambda chunk=chunk, first=start == 0: client.log_batch(
                        run_id, metrics=chunk, params=params if first else [], tags=[]
                    ),
                )
            self._call("set_terminated", lambda: client.set_terminated(run_id, "FINISHED"))
        except RegistryError:
            self._mark_failed(run_id)
            raise
        version = self._model_version(
            name, run_id, version_tags, self._description(version_uri, manifest)
        )
        log.info(
            "Registered %s version %s in MLflow (run %s) for %s",
            name,
            version.version,
            run_id,
            version_uri,
        )
        return str(version.version)

    def _mark_failed(self, run_id: str) -> None:
        try:  # best effort, once: the run is useless without its files
            with self._http_settings():
                self.client().set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001
            pass


__all__ = ["MlflowRegistry", "CREDENTIAL_VARIABLES"]
