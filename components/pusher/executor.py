"""LitedetPusher's executor: a blessed model -> a new version in the store -> the model registry.

Not blessed: nothing is written anywhere; `pushed_model` records pushed=0 and the reason, and the
step succeeds (a model that fails its evaluation is a normal outcome, not an error). Blessed but
already the store's newest version (the same Trainer output, re-evaluated by a rerun, or a retry
after a registry failure): nothing new in the store; the record names that version, and the
version is registered (registration is idempotent: an already registered version is found and
reused), so that store and registry stay in step.

Blessed:
1. The files: every file of `tflite_models` (`model_<format>.tflite`, `labels.txt`,
   `conversion.json`, at the version's top level), the label map files (`label_map.json`,
   `labels.txt`, `label_map.pbtxt`; a file both inputs carry must be byte-identical) and the
   serving SavedModel under `saved_model/` (the next run's gate compares with it) and again
   under `serving/1/`, TensorFlow Serving's layout (what KServe's TensorFlow runtime loads).
2. The manifest: model name; alpha and input size (from `extra_manifest`, the TFLite step's
   conversion.json or custom properties, or the Model's custom properties); the label map;
   evaluation metrics (mAP ...; left out without an `evaluation`); the ModelGate's report
   (`gate.json` beside the blessing: TFLite mAP, latency, size per format, budgets) when the
   blessing has one; sizes in bytes per format;
   latency (custom properties of `tflite_models` whose name holds "latency", or
   `extra_manifest`); the TFLite step's conversion.json and custom properties; and where it came
   from: pipeline name, pipeline run id, execution id, node id, the dataset's fingerprint (the
   label map's `data_fingerprint` property, set by the ExampleGen) and the ML Metadata id, type
   and URI of every input artifact. `extra_manifest` (JSON) is merged last.
3. store.push_version (atomic, concurrency-safe; see store.py) as the version right after the
   baseline the gate compared against (gate.json's baseline version): if another run pushed
   meanwhile, nothing is pushed and the record says why. Then the registry. A registry failure
   fails the step with RegistryError *after* the files are in the store (its message names the
   version's URI).

Output `pushed_model` custom properties: pushed (0/1), push_reason, store_destination (the store
root), pushed_destination (the version's URI, "" when not pushed), pushed_version (0 when not
pushed), registered (0/1), registry_kind, registry_version (the registry's id of the version).
The same, as JSON, in `<pushed_model.uri>/push.json`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from litedet.components.pusher import registry as registry_lib
from litedet.components.pusher import store

MODEL_KEY = "model"
TFLITE_MODELS_KEY = "tflite_models"
MODEL_BLESSING_KEY = "model_blessing"
LABEL_MAP_KEY = "label_map"
EVALUATION_KEY = "evaluation"
PUSHED_MODEL_KEY = "pushed_model"

DESTINATION_KEY = "destination"
REGISTRY_KEY = "registry"
MODEL_NAME_KEY = "model_name"
EXTRA_MANIFEST_KEY = "extra_manifest"
PIPELINE_RUN_ID_KEY = "pipeline_run_id"

LABEL_MAP_FILES = ("label_map.json", "labels.txt", "label_map.pbtxt")
CONVERSION_FILE = "conversion.json"  # the TFLite step's summary (components/tflite)
GATE_FILE = "gate.json"  # ModelGate's report (components/evaluation/executor.py)
DATA_FINGERPRINT_PROPERTY = "data_fingerprint"  # on the ExampleGen's label_map
PUSH_RECORD = "push.json"  # in pushed_model.uri: what happened, for people and later steps


def _single(input_dict, key) -> Optional[types.Artifact]:
    artifacts = input_dict.get(key) or []
    return artifact_utils.get_single_instance(artifacts) if artifacts else None


def scalar_custom_properties(artifact: types.Artifact) -> Dict[str, Any]:
    """The artifact's custom properties that are plain numbers or text."""
    out = {}
    for key in sorted(artifact.mlmd_artifact.custom_properties):
        value = artifact.get_custom_property(key)
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def _same_bytes(a: str, b: str) -> bool:
    if tf.io.gfile.isdir(a) or tf.io.gfile.isdir(b):
        return False
    with tf.io.gfile.GFile(a, "rb") as fa, tf.io.gfile.GFile(b, "rb") as fb:
        return fa.read() == fb.read()


def _read_json(uri: str, name: str) -> Optional[dict]:
    path = os.path.join(uri, name)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _is_blessed(blessing) -> bool:
    """The gate's verdict, from its files: custom properties do not survive every orchestrator's
    metadata round trip as typed values (on Kubeflow they come back as structs)."""
    if tf.io.gfile.exists(os.path.join(blessing.uri, "BLESSED")):
        return True
    if tf.io.gfile.exists(os.path.join(blessing.uri, "NOT_BLESSED")):
        return False
    return model_utils.is_model_blessed(blessing)


def _label_map(uri: str) -> Dict[str, str]:
    return {
        name: os.path.join(uri, name)
        for name in LABEL_MAP_FILES
        if tf.io.gfile.exists(os.path.join(uri, name))
    }


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
        blessing = _single(input_dict, MODEL_BLESSING_KEY)
        destination = exec_properties[DESTINATION_KEY]
        model_name = exec_properties.get(MODEL_NAME_KEY) or "litedet"

        if blessing is None or not _is_blessed(blessing):
            reason = "model not blessed" + (
                f" (ModelBlessing {blessing.id} at {blessing.uri})" if blessing is not None else ""
            )
            logging.info("Not pushing: %s", reason)
            self._record(pushed, pushed=0, reason=reason, destination=destination)
            return

        # Built before anything is pushed: a registry configuration it refuses fails the step
        # with the store untouched.
        registry = registry_lib.make_registry(
            json.loads(exec_properties.get(REGISTRY_KEY) or "{}"), model_name
        )
        model = _single(input_dict, MODEL_KEY)
        already = self._already_pushed(destination, model)
        if already is not None:
            version, uri = already
            reason = f"this model is already version {version} in the store"
            logging.info("Not pushing: %s (%s)", reason, uri)
            self._record(
                pushed, pushed=0, reason=reason, destination=destination, version=version, uri=uri
            )
            # A previous run may have pushed it and then failed to register it.
            self._register(pushed, registry, model_name, uri)
            return

        files, manifest = self._collect(input_dict, exec_properties, model_name)
        # The gate compared this model with the store's latest version: push only on top of it,
        # so a concurrent run that pushed meanwhile is never overtaken by a model it never saw.
        expected = (manifest.get("gate") or {}).get("baseline", {}).get("version")
        try:
            version, uri = store.push_version(
                destination, files, manifest, expected_latest=expected
            )
        except store.StoreMoved as moved:
            reason = f"not pushed, the store moved on: {moved}; a new run compares with it"
            logging.warning("Not pushing: %s", reason)
            self._record(pushed, pushed=0, reason=reason, destination=destination)
            return
        logging.info("Pushed %s version %d to %s", model_name, version, uri)
        self._record(
            pushed, pushed=1, reason="blessed", destination=destination, version=version, uri=uri
        )

        self._register(pushed, registry, model_name, uri)

    # -- helpers ---------------------------------------------------------------------------------

    def _register(self, pushed, registry, model_name: str, uri: str) -> None:
        """Registers the store version at `uri` (idempotent: an already registered version is
        reused) and records it in `pushed`. RegistryError propagates: the step fails, with the
        files in the store, and a rerun registers them."""
        if isinstance(registry, registry_lib.NoRegistry):
            return
        registered = registry.register(model_name, uri, store.read_manifest(uri))
        pushed.set_string_custom_property("registry_kind", registry.kind)
        pushed.set_string_custom_property("registry_version", registered)
        pushed.set_int_custom_property("registered", 1)
        self._write_record(pushed)

    @staticmethod
    def _already_pushed(destination: str, model) -> Optional[tuple]:
        """(version, uri) when the store's newest version came from this very Trainer output:
        a rerun that re-evaluates an unchanged model (now its own baseline) adds no version."""
        newest = store.latest(destination)
        if newest is None:
            return None
        source = store.read_manifest(newest[1]).get("source", {}).get("artifacts", {})
        return newest if source.get(MODEL_KEY, {}).get("uri") == model.uri else None

    def _collect(self, input_dict, exec_properties, model_name):
        files: Dict[str, str] = {}

        def add(name, path):
            if name in files:
                if _same_bytes(files[name], path):
                    return  # e.g. labels.txt both beside the TFLite models and in the label map
                raise ValueError(
                    f"two inputs push different files named {name!r}: {files[name]}, {path}"
                )
            files[name] = path

        tflite = _single(input_dict, TFLITE_MODELS_KEY)
        if tflite is not None:
            fs = store.filesystem(tflite.uri)
            for rel in fs.walk_files(tflite.uri):
                add(rel, fs.join(tflite.uri, *rel.split("/")))
        label_map = _single(input_dict, LABEL_MAP_KEY)
        for name, path in _label_map(label_map.uri).items():
            add(name, path)
        model = _single(input_dict, MODEL_KEY)
        # Always: the next run's gate scores its candidate against it (evaluation/baseline.py).
        add(store.SAVED_MODEL_DIR, path_utils.serving_model_path(model.uri))
        # And in TensorFlow Serving's layout, which a model server loads (KServe's TensorFlow
        # runtime: storageUri <version>/serving); the registries point servers there.
        add(f"{store.SERVING_DIR}/1", path_utils.serving_model_path(model.uri))

        manifest: Dict[str, Any] = {"model_name": model_name}
        tflite_props = scalar_custom_properties(tflite) if tflite is not None else {}
        conversion = _read_json(tflite.uri, CONVERSION_FILE) if tflite is not None else None
        model_props = scalar_custom_properties(model)
        for key, aliases in (("alpha", ("alpha",)), ("input_size", ("input_size", "image_size"))):
            for props in (conversion or {}, tflite_props, model_props):
                found = next((props[a] for a in aliases if a in props), None)
                if found is not None:
                    manifest[key] = found
                    break
        sizes = (conversion or {}).get("sizes_bytes") or {
            k[len("size_bytes_") :]: v
            for k, v in tflite_props.items()
            if k.startswith("size_bytes_")
        }
        if sizes:
            manifest["sizes_bytes"] = sizes
        label_json = os.path.join(label_map.uri, "label_map.json")
        if tf.io.gfile.exists(label_json):
            with tf.io.gfile.GFile(label_json) as f:
                manifest["label_map"] = json.load(f)
        evaluation = _single(input_dict, EVALUATION_KEY)
        if evaluation is not None:
            from litedet.components.evaluation import metrics as evaluation_metrics

            metrics = evaluation_metrics.read_metrics(evaluation.uri)
            if metrics:
                manifest["metrics"] = metrics
        blessing = _single(input_dict, MODEL_BLESSING_KEY)
        gate = _read_json(blessing.uri, GATE_FILE)
        if gate is not None:  # ModelGate's report: TFLite mAP, latency and size per format
            manifest["gate"] = gate
            formats = {fmt: v for fmt, v in gate.get("formats", {}).items() if fmt != "saved_model"}
            manifest.setdefault("metrics", {}).update(
                {f"{fmt}.map50": v["map50"] for fmt, v in formats.items()}
            )
            # mAP@[.5:.95], by object size and per class: the gate's pycocotools figures.
            for key in ("map", "map75"):
                if gate.get(key) is not None:
                    manifest["metrics"][key] = gate[key]
            for size, value in (gate.get("ap_by_size") or {}).items():
                if value is not None:
                    manifest["metrics"][f"ap_{size}"] = value
            for name, value in (gate.get("map_per_class") or {}).items():
                manifest["metrics"][f"map/{name}"] = value
            gate_latency = {fmt: v["latency_ms"] for fmt, v in formats.items()}
        if tflite is not None:
            manifest["tflite"] = {"properties": tflite_props}
            if conversion is not None:
                manifest["tflite"]["conversion"] = conversion
            latency = {
                k: v
                for k, v in tflite_props.items()
                if "latency" in k and isinstance(v, (int, float))
            }
            if gate is not None:
                latency.update(gate_latency)
            if latency:
                manifest["latency_ms"] = latency
        manifest["source"] = self._source(input_dict, exec_properties)
        extra = json.loads(exec_properties.get(EXTRA_MANIFEST_KEY) or "{}")
        manifest.update(extra)
        return files, manifest

    def _source(self, input_dict, exec_properties) -> Dict[str, Any]:
        context = self._context
        source: Dict[str, Any] = {}
        run_id = getattr(context, "pipeline_run_id", None) or exec_properties.get(
            PIPELINE_RUN_ID_KEY
        )
        if run_id:
            source["pipeline_run_id"] = str(run_id)
        info = getattr(context, "pipeline_info", None)
        if info is not None and info.id:
            source["pipeline_name"] = info.id
        node = getattr(context, "pipeline_node", None)
        if node is not None and node.node_info.id:
            source["node_id"] = node.node_info.id
        unique_id = getattr(context, "_unique_id", None)
        if unique_id:
            # The ML Metadata execution id under the local runner; the task id on Kubeflow.
            source["execution_id"] = str(unique_id)
        label_map = _single(input_dict, LABEL_MAP_KEY)
        if label_map is not None:  # the ExampleGen records the dataset's fingerprint on it
            fingerprint = scalar_custom_properties(label_map).get(DATA_FINGERPRINT_PROPERTY)
            if isinstance(fingerprint, str) and fingerprint:
                source["data_fingerprint"] = fingerprint
        source["artifacts"] = {
            key: {"id": artifact.id, "type": artifact.type_name, "uri": artifact.uri}
            for key in (
                MODEL_KEY,
                TFLITE_MODELS_KEY,
                LABEL_MAP_KEY,
                MODEL_BLESSING_KEY,
                EVALUATION_KEY,
            )
            for artifact in [_single(input_dict, key)]
            if artifact is not None
        }
        return source

    @staticmethod
    def _record(
        artifact, *, pushed: int, reason: str, destination: str, version: int = 0, uri: str = ""
    ) -> None:
        artifact.set_int_custom_property("pushed", pushed)
        artifact.set_string_custom_property("push_reason", reason)
        artifact.set_string_custom_property("store_destination", destination)
        artifact.set_string_custom_property("pushed_destination", uri)
        artifact.set_int_custom_property("pushed_version", version)
        artifact.set_int_custom_property("registered", 0)
        artifact.set_string_custom_property("registry_kind", "none")
        artifact.set_string_custom_property("registry_version", "")
        Executor._write_record(artifact)

    @staticmethod
    def _write_record(artifact) -> None:
        record = {
            key: artifact.get_custom_property(key)
            for key in (
                "pushed",
                "push_reason",
                "store_destination",
                "pushed_destination",
                "pushed_version",
                "registered",
                "registry_kind",
                "registry_version",
            )
        }
        tf.io.gfile.makedirs(artifact.uri)
        with tf.io.gfile.GFile(os.path.join(artifact.uri, PUSH_RECORD), "w") as f:
            f.write(json.dumps(record, indent=2, sort_keys=True))
