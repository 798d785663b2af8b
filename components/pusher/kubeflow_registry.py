"""`KubeflowModelRegistry`: pushed versions registered in a Kubeflow Model Registry through its
official Python client, `model-registry` (0.3.8, REST API v1alpha3; imported on first use).

A store version becomes a model version named after it ("7") of the registered model `name`,
with these artifacts:

- the server artifact, registered first through the client's `register_model`: a model artifact
  whose URI is the SavedModel in TensorFlow Serving's layout (`<store version>/serving`, holding
  `1/saved_model.pb`), `model_format_name: tensorflow`, `model_format_version: "2"`: what KServe's
  TensorFlow runtime serves (k8s/examples/inferenceservice.yaml);
- one model artifact per TFLite file (`<store version>/model_int8.tflite` ...),
  `model_format_name: tflite`, with custom properties `litedet.role: device` and
  `litedet.servable: false`: files for the TFLite interpreter on a device, not for KServe;

and the version's custom properties: the store URI and version, the metrics, the params (alpha,
input size, classes), the gate's verdict and the lineage (registry.py computes them).

Idempotent on the store version: a version of that name whose server artifact points at the same
URI is completed (artifacts a failed registration left out are added) and returned; one that
points elsewhere is an error (two stores pushing under one model name). Failures (a connection
error, a timeout, HTTP 408/429/5xx) are retried `retries` times with exponential backoff.

Credentials: the client reads the pod's service-account token itself (or the file
$KF_PIPELINES_SA_TOKEN_PATH names); nothing secret is in the configuration. `user_token` exists
for code only (registry_settings.py refuses it in settings). A token is not sent over plain http
(`is_secure` false) unless `allow_insecure_http`, as for MLflow.

No Kubeflow Model Registry server runs on the development machines: tests/test_pusher.py runs
this class against a loopback server that checks every request against the registry's published
OpenAPI document of the same release (tests/model_registry_server.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Mapping, Optional

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

CLIENT_REQUIREMENT = "model-registry==0.3.8"
# Where the client looks for a token when none is given (model_registry._client).
TOKEN_PATH_VARIABLE = "KF_PIPELINES_SA_TOKEN_PATH"
POD_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVER_FORMAT = ("tensorflow", "2")  # model_format_name / _version of the SavedModel
DEVICE_FORMAT = ("tflite", "3")


def _retriable(error: BaseException) -> bool:
    # aiohttp's connection errors and asyncio timeouts are OSError / TimeoutError subclasses;
    # the generated client raises ApiException subclasses with the HTTP `status`.
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return status in RETRY_STATUS
    return isinstance(error, (OSError, TimeoutError))


def token_source(user_token: Optional[str]) -> str:
    """Which token the client will send, in words ("" when none): the one given in code, the
    file $KF_PIPELINES_SA_TOKEN_PATH names, or the pod's service-account token."""
    if user_token:
        return "the user_token given in code"
    if os.environ.get(TOKEN_PATH_VARIABLE):
        return f"the token in {os.environ[TOKEN_PATH_VARIABLE]} ({TOKEN_PATH_VARIABLE})"
    if os.path.exists(POD_TOKEN_PATH):
        return f"the pod's service-account token ({POD_TOKEN_PATH})"
    return ""


def _join(version_uri: str, path: str) -> str:
    return version_uri.rstrip("/") + "/" + path


class KubeflowModelRegistry:
    """Registers pushed versions in a Kubeflow Model Registry; see the module's docstring."""

    kind = "kubeflow"

    def __init__(
        self,
        server_address: str,
        port: Optional[int] = None,
        *,
        author: str,
        model_name: str = "",
        is_secure: Optional[bool] = None,
        custom_ca: Optional[str] = None,
        user_token: Optional[str] = None,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        allow_insecure_http: bool = False,
    ):
        if not str(server_address).startswith(("http://", "https://")):
            raise ValueError(
                f"push.registry.server_address: {server_address!r} must be the registry's "
                "http(s)://host (its port in push.registry.port)"
            )
        self.server_address = server_address.rstrip("/")
        secure = server_address.startswith("https://") if is_secure is None else bool(is_secure)
        token = token_source(user_token)
        if token and not secure and not allow_insecure_http:
            raise ValueError(
                f"Kubeflow Model Registry at {server_address}: refusing to send {token} over "
                "plain http, where anyone on the network path can read it; use https:// "
                "(push.registry.is_secure), or set push.registry.allow_insecure_http: true for a "
                "network you trust (e.g. a cluster-internal service behind the mesh's mTLS)"
            )
        self.port = int(port) if port else (443 if secure else 8080)
        self.is_secure = secure
        self.author = author
        self.model_name = model_name
        self.custom_ca = custom_ca
        self.user_token = user_token
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._client = None
        self._version_uri = ""
        self._manifest: Mapping[str, Any] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def _fail(self, what: str):
        def make(reason: str, attempts: int) -> RegistryError:
            return RegistryError(
                f"Kubeflow Model Registry at {self.server_address}:{self.port} "
                f"(push.registry.server_address, port): {what} failed "
                f"after {attempts} attempt(s): {reason}. "
                f"{recovery_hint(self._version_uri, self._manifest)}",
                endpoint=what,
                attempts=attempts,
                version_uri=self._version_uri,
            )

        return make

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        return retrying(
            what,
            call,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            retriable=_retriable,
            fail=self._fail(what),
        )

    def client(self):
        """The official client, connected (its constructor lists the registered models once)."""
        if self._client is None:
            try:
                from model_registry import ModelRegistry
            except ImportError as e:
                raise RegistryError(
                    "Kubeflow Model Registry: the client is not installed "
                    f"(pip install {CLIENT_REQUIREMENT}, in requirements.lock): {e}. "
                    f"{recovery_hint(self._version_uri, self._manifest)}",
                    endpoint="import model_registry",
                    version_uri=self._version_uri,
                ) from e
            self._client = self._retry(
                "connect",
                lambda: ModelRegistry(
                    self.server_address,
                    self.port,
                    author=self.author,
                    is_secure=self.is_secure,
                    user_token=self.user_token,
                    custom_ca=self.custom_ca,
                ),
            )
        return self._client

    def _run(self, what: str, make_coroutine: Callable[[Any], Any]) -> Any:
        """A call of the client's API layer (`ModelRegistryAPIClient`, model_registry.core),
        for what the high-level client has no method for: more than one artifact per version."""
        client = self.client()
        return self._retry(what, lambda: client.async_runner(make_coroutine(client._api)))

    # -- what is registered --------------------------------------------------------------------

    def version_properties(self, version_uri: str, manifest: Mapping[str, Any]) -> Dict[str, Any]:
        properties: Dict[str, Any] = {
            "litedet.store_uri": version_uri,
            "litedet.store_version": str(manifest.get("version", "")),
        }
        properties.update(model_metrics(manifest))
        properties.update(model_params(manifest))
        properties.update({f"gate.{k}": v for k, v in gate_verdict(manifest).items()})
        properties.update({f"lineage.{k}": v for k, v in lineage(manifest).items()})
        return properties

    def _artifacts(self, version_uri: str, manifest: Mapping[str, Any]):
        """(server artifact description or None, [device artifact descriptions])."""
        server, devices = None, []
        for artifact in model_artifacts(manifest):
            if artifact["role"] == "server":
                server = artifact
            else:
                devices.append(artifact)
        return server, devices

    def _device_artifact(self, version_uri: str, artifact: Mapping[str, Any]):
        from model_registry.types import ModelArtifact

        return ModelArtifact(
            name=artifact["name"],
            uri=_join(version_uri, artifact["path"]),
            model_format_name=DEVICE_FORMAT[0],
            model_format_version=DEVICE_FORMAT[1],
            description=f"TFLite model ({artifact['quantization'] or 'tflite'}) for the TFLite "
            "interpreter on a device; not servable by KServe",
            custom_properties={
                "litedet.role": "device",
                "litedet.servable": False,
                "litedet.shipped": bool(artifact.get("shipped")),
                "litedet.sha256": artifact.get("sha256", ""),
                "litedet.bytes": int(artifact.get("bytes", 0)),
            },
        )

    # -- the protocol ----------------------------------------------------------------------------

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        name = name or self.model_name
        if not name:
            raise ValueError("push.model_name: no model name to register the version under")
        self._version_uri = version_uri
        self._manifest = manifest
        version_name = str(manifest.get("version", ""))
        server, devices = self._artifacts(version_uri, manifest)
        if server is None:
            raise self._fail("register_model")(
                f"the store version at {version_uri} has no SavedModel to register", 1
            )
        server_uri = _join(version_uri, server["path"])
        client = self.client()

        def existing():
            if client.get_registered_model(name) is None:
                return None
            return client.get_model_version(name, version_name)

        version = self._retry("get_model_version", existing)
        if version is None:
            self._retry(
                "register_model",
                lambda: client.register_model(
                    name,
                    server_uri,
                    version=version_name,
                    model_format_name=SERVER_FORMAT[0],
                    model_format_version=SERVER_FORMAT[1],
                    version_description=(
                        f"litedet store version {version_name} at {version_uri}: a TensorFlow "
                        "SavedModel for KServe's TensorFlow runtime and TFLite models for devices"
                    ),
                    metadata=self.version_properties(version_uri, manifest),
                ),
            )
            version = self._retry("get_model_version", existing)
            if version is None or not version.id:
                raise self._fail("register_model")("the new version cannot be read back", 1)
        present = {
            a.name: a
            for a in self._run(
                "get_model_version_artifacts",
                lambda api: api.get_model_version_artifacts(version.id),
            )
        }
        registered = present.get(name)
        if registered is None or getattr(registered, "uri", None) != server_uri:
            raise self._fail("register_model")(
                f"model {name!r} already has a version {version_name!r} whose server artifact "
                f"is {getattr(registered, 'uri', None)}, not {server_uri} (two stores pushing "
                "under one model name? give each its own push.model_name)",
                1,
            )
        for artifact in devices:
            if artifact["name"] in present:
                continue
            model = self._device_artifact(version_uri, artifact)
            self._run(
                "upsert_model_version_artifact",
                lambda api, model=model: api.upsert_model_version_artifact(model, version.id),
            )
        log.info(
            "Registered %s version %s in the Kubeflow Model Registry (id %s) for %s",
            name,
            version_name,
            version.id,
            version_uri,
        )
        return str(version.id)
