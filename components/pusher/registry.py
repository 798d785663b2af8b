"""Model registries the Pusher announces a pushed version to.

The store (components/pusher/store.py) holds the files; a registry records "model X has a version
N whose files are at <uri>" where people and deployment tools look. Registration happens *after*
the files are in the store, so a registry failure never loses a model: `RegistryError` says which
call failed, where the files already are, and the command that registers them later
(`litedet register VERSION`, litedet/register.py).

- `MlflowRegistry` (mlflow_registry.py): an MLflow 2.x or 3.x tracking server through MLflow's own
  client, `MlflowClient` (mlflow-skinny).
- `KubeflowModelRegistry` (kubeflow_registry.py): the Kubeflow Model Registry through its official
  Python client (`model-registry`).
- `NoRegistry`: registers nothing.

What both registries record for a version, from the store's manifest, is computed here once:
its numbers (`model_metrics`), short descriptive values (`model_params`), the gate's verdict
(`gate_verdict`), where it came from (`lineage`) and each model file with its true format
(`model_artifacts`: the SavedModel is `tensorflow` and served by a server, the TFLite files are
`tflite` and run on devices).

`make_registry(config)` builds one from a JSON-able dict: {"kind": "mlflow"|"kubeflow"|"none", ...}.
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, runtime_checkable

from litedet.components.pusher import registry_settings, store

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429, 500, 502, 503, 504}

# The TensorFlow Serving layout of the SavedModel in a store version (`serving/1/saved_model.pb`,
# written by the pusher, executor.py): what KServe's TensorFlow runtime loads from a storageUri.
SERVING_DIR = store.SERVING_DIR


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
    kind: str

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        """Registers the store version at `version_uri` (described by `manifest`) under model
        `name`; returns the registry's id of the new version. Raises RegistryError."""


class NoRegistry:
    kind = "none"

    def register(self, name: str, version_uri: str, manifest: Mapping[str, Any]) -> str:
        return ""


def recovery_hint(version_uri: str, manifest: Optional[Mapping[str, Any]] = None) -> str:
    """The sentence every RegistryError ends with: where the files are and how to register them
    once the registry works."""
    version = str((manifest or {}).get("version") or "VERSION")
    if not version_uri:
        return "Nothing was pushed to the store."
    return (
        f"The model files are already in the store at {version_uri}; once the registry works, "
        f"register them with `litedet register {version} --config YOUR_CONFIG` (or delete them)."
    )


# -- what a registered version says --------------------------------------------------------------


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
    for key in ("model_name", "alpha", "input_size", "ship_format"):
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


def gate_verdict(manifest: Mapping[str, Any]) -> Dict[str, str]:
    """The ModelGate's decision as short texts: blessed, why not (empty when blessed), and the
    store version it was compared with. Empty when the manifest has no gate report."""
    gate = manifest.get("gate")
    if not isinstance(gate, Mapping):
        return {}
    baseline = (gate.get("baseline") or {}).get("version")
    return {
        "blessed": "true" if gate.get("blessed") else "false",
        "reasons": "; ".join(str(r) for r in gate.get("reasons") or [])[:5000],
        "baseline_version": "" if baseline is None else str(baseline),
        "ship_format": str(gate.get("ship_format") or manifest.get("ship_format") or ""),
    }


def lineage(manifest: Mapping[str, Any]) -> Dict[str, str]:
    """Where the version came from: pipeline, run, execution, the dataset's fingerprint (when the
    pipeline recorded it) and the ML Metadata ids and URIs of the pusher's input artifacts."""
    source = manifest.get("source") or {}
    out = {
        key: str(source[key])
        for key in ("pipeline_name", "pipeline_run_id", "execution_id", "node_id")
        if source.get(key) not in (None, "")
    }
    if source.get("data_fingerprint"):
        out["data_fingerprint"] = str(source["data_fingerprint"])
    for key, artifact in sorted((source.get("artifacts") or {}).items()):
        if isinstance(artifact, Mapping):
            if artifact.get("id") is not None:
                out[f"artifact.{key}.id"] = str(artifact["id"])
            if artifact.get("uri"):
                out[f"artifact.{key}.uri"] = str(artifact["uri"])
    return out


def model_artifacts(manifest: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Each model file of a store version with its true format, from the manifest's file list:

    - the SavedModel, `format: tensorflow`, `role: server`: `path` is the TensorFlow Serving
      layout (`serving`, holding `1/saved_model.pb`) when the version has it — KServe's
      TensorFlow runtime serves that folder — else `saved_model` (the same model, not in a
      layout TensorFlow Serving loads, so `servable: ""`);
    - every `*.tflite` file, `format: tflite`, `role: device`: for the TFLite interpreter on a
      device (MediaPipe Tasks, the TFLite Task Library), never for a server; `shipped` marks the
      format the gate's device budgets were checked on.
    """
    files = manifest.get("files") or {}
    ship = str(manifest.get("ship_format") or (manifest.get("gate") or {}).get("ship_format") or "")
    out: List[Dict[str, Any]] = []
    has_serving = any(name.startswith(SERVING_DIR + "/") for name in files)
    has_saved = any(name.startswith(store.SAVED_MODEL_DIR + "/") for name in files)
    if has_serving or has_saved:
        path = SERVING_DIR if has_serving else store.SAVED_MODEL_DIR
        out.append(
            {
                "name": "saved_model",
                "path": path,
                "format": "tensorflow",
                "format_version": "2",
                "role": "server",
                "servable": "kserve-tensorflow-serving" if has_serving else "",
                "bytes": sum(
                    int(info.get("bytes", 0))
                    for name, info in files.items()
                    if name.startswith(path + "/")
                ),
            }
        )
    for name in sorted(files):
        if "/" in name or not name.endswith(".tflite"):
            continue
        fmt = name[len("model_") : -len(".tflite")] if name.startswith("model_") else ""
        out.append(
            {
                "name": name,
                "path": name,
                "format": "tflite",
                "format_version": "3",  # the TFLite flatbuffer schema version (TFL3)
                "role": "device",
                "servable": "",
                "quantization": fmt,
                "shipped": bool(ship) and fmt == ship,
                "bytes": int(files[name].get("bytes", 0)),
                "sha256": str(files[name].get("sha256", "")),
            }
        )
    return out


# -- retries -------------------------------------------------------------------------------------


def retrying(
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
            reason = f"{type(e).__name__}: {_one_line(e)}"
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


def _one_line(error: BaseException, limit: int = 600) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        from litedet.components.pusher.mlflow_registry import MlflowRegistry

        return MlflowRegistry(**config)
    if kind == "kubeflow":
        from litedet.components.pusher.kubeflow_registry import KubeflowModelRegistry

        return KubeflowModelRegistry(**config)
    raise ValueError(f"unknown registry kind {kind!r}: use 'mlflow', 'kubeflow' or 'none'")


def __getattr__(name: str):
    """`registry.MlflowRegistry` and `registry.KubeflowModelRegistry`, imported on first use
    (their modules import this one; neither imports its client library until it is used)."""
    if name == "MlflowRegistry":
        from litedet.components.pusher.mlflow_registry import MlflowRegistry

        return MlflowRegistry
    if name == "KubeflowModelRegistry":
        from litedet.components.pusher.kubeflow_registry import KubeflowModelRegistry

        return KubeflowModelRegistry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
