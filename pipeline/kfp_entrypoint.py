"""The command every step of the compiled pipeline runs on Kubeflow Pipelines.

    python -m litedet.pipeline.kfp_entrypoint --executor_class_path ... \
        --json_serialized_invocation_args '{{$}}' --json_serialized_inputs_spec_args ... [beam args]

The arguments are TFX's (kfp_spec.adapt swaps only the command). This module mends the executor
input the open-source KFP v2 backend builds, then runs TFX's own Kubeflow V2 entrypoint:

- Input artifacts arrive without a type: the backend's driver reads upstream artifacts back from
  ML Metadata and leaves their schema empty (backend/src/v2/metadata/client.go). TFX rebuilds each
  artifact's Python class from that type and fails on an empty one. The types come back from the
  component's own input definitions, which TFX passes in --json_serialized_inputs_spec_args.
- The driver adds an `executor-logs` output (type system.Artifact) when it publishes logs, the
  backend's default; TFX cannot import such a class. It is not the component's output: dropped
  here, and the launcher still uploads the logs.
- Each artifact's type is handed to TFX as the import path of its class: TFX resolves a title it
  does not know (every type this project adds) by importing the title itself.
- Object storage: configured for this process (components/object_storage.py) before TFX starts.
- Executor output: values KFP's ML Metadata converter refuses (null) are left out.
- A step compiled with an accelerator (kubeflow.trainer_accelerator) fails at once when
  TensorFlow sees no GPU (`require_accelerator`), instead of training on the CPU.
- A pipeline root TensorFlow cannot open (KFP's fallback minio://...) fails at once, naming the
  kfp-launcher setting to fix (`check_artifact_uris`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

import yaml

EXECUTOR_LOGS = "executor-logs"


def schema_title(artifact_type: Dict[str, Any]) -> str:
    """The type title of a KFP ArtifactTypeSchema in JSON form ("" when it has none)."""
    if artifact_type.get("schemaTitle"):
        return artifact_type["schemaTitle"]
    schema = artifact_type.get("instanceSchema") or ""
    data = yaml.safe_load(schema) if schema else None
    return (data or {}).get("title", "")


def _project_types() -> Dict[str, str]:
    from litedet.components import artifacts

    return {
        cls.TYPE_NAME: f"{cls.__module__}.{cls.__qualname__}" for cls in artifacts.PROJECT_TYPES
    }


def class_path(title: str) -> Optional[str]:
    """The import path of the artifact class behind a type title; None when unknown."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils

    if title in compiler_utils.TITLE_TO_CLASS_PATH:
        return compiler_utils.TITLE_TO_CLASS_PATH[title]
    return _project_types().get(title)


def mend_executor_input(
    executor_input: Dict[str, Any], inputs_spec: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    """The executor input with every artifact typed by its class path and the driver's
    executor-logs output removed."""
    mended = json.loads(json.dumps(executor_input))
    declared = (inputs_spec or {}).get("artifacts", {})
    for key, artifact_list in mended.get("inputs", {}).get("artifacts", {}).items():
        title = schema_title(declared.get(key, {}).get("artifactType", {}))
        for artifact in artifact_list.get("artifacts", []):
            title = title or schema_title(artifact.get("type", {}))
            path = class_path(title)
            if path is None:
                raise ValueError(
                    f"input artifact {key!r}: no type to rebuild it from (title {title!r}); "
                    "was the pipeline compiled by `litedet compile`?"
                )
            artifact["type"] = {"schemaTitle": path}
    outputs = mended.get("outputs", {}).get("artifacts", {})
    outputs.pop(EXECUTOR_LOGS, None)
    for key, artifact_list in outputs.items():
        for artifact in artifact_list.get("artifacts", []):
            title = schema_title(artifact.get("type", {}))
            path = class_path(title)
            if path is None:
                raise ValueError(f"output artifact {key!r}: unknown type {title!r}")
            artifact["type"] = {"schemaTitle": path}
    return mended


class StepError(RuntimeError):
    """A step that cannot do its work here; the message says what to change."""


def require_accelerator(environ=None, list_gpus=None) -> None:
    """Fails when the compiler asked for an accelerator (kfp_spec.ACCELERATOR_ENV) and TensorFlow
    sees no GPU: a CPU-only image (build the GPU variant), or a node without the device."""
    from litedet.pipeline.kfp_spec import ACCELERATOR_ENV

    environ = os.environ if environ is None else environ
    wanted = environ.get(ACCELERATOR_ENV, "")
    if not wanted:
        return
    if list_gpus is None:
        import tensorflow as tf

        def list_gpus():
            return tf.config.list_physical_devices("GPU")

    found = list_gpus()
    if not found:
        raise StepError(
            f"kubeflow.trainer_accelerator is {wanted!r} but TensorFlow sees no GPU in this pod: "
            "build the image with --build-arg TENSORFLOW_VARIANT=gpu (docs/cluster.md, "
            '"Image"), check that the node has the NVIDIA driver and device plugin, or remove '
            "kubeflow.trainer_accelerator to train on the CPU"
        )


def check_artifact_uris(executor_input: Dict[str, Any]) -> None:
    """Output artifacts under a minio:// root: KFP's fallback pipeline root, used when neither the
    run nor the namespace's kfp-launcher ConfigMap names one. TensorFlow and Beam cannot open it;
    fail before any work, saying where the root comes from."""
    for key, artifact_list in executor_input.get("outputs", {}).get("artifacts", {}).items():
        for artifact in artifact_list.get("artifacts", []):
            uri = artifact.get("uri", "")
            if uri.startswith("minio://"):
                raise StepError(
                    f"output {key!r} is at {uri}: the run's pipeline root is minio://, KFP's "
                    "fallback when neither the run nor the namespace's kfp-launcher ConfigMap "
                    "(defaultPipelineRoot) names one, and TensorFlow cannot open it; set "
                    "defaultPipelineRoot to s3://... (k8s/overlays/kfp-standalone, "
                    "kfp-multi-user/kfp-launcher-patch.yaml) or run with --pipeline-root s3://..."
                )


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _clean_output_file(path: str) -> None:
    import tensorflow as tf

    if not path or not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as handle:
        output = json.load(handle)
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps(_without_nulls(output)))


def _replace_flag(argv: List[str], flag: str, value: str) -> List[str]:
    out = list(argv)
    for index, item in enumerate(out):
        if item == flag and index + 1 < len(out):
            out[index + 1] = value
            return out
        if item.startswith(flag + "="):
            out[index] = f"{flag}={value}"
            return out
    raise ValueError(f"{flag} is missing from the step's arguments")


def _flag(argv: List[str], flag: str) -> Optional[str]:
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(flag + "="):
            return item.split("=", 1)[1]
    return None


def main(argv: List[str]) -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from litedet.components import object_storage as storage

    if storage.ENDPOINT_ENV in os.environ or "AWS_ACCESS_KEY_ID" in os.environ:
        storage.configure()
    executor_input = json.loads(_flag(argv, "--json_serialized_invocation_args"))
    check_artifact_uris(executor_input)
    require_accelerator()
    spec_text = _flag(argv, "--json_serialized_inputs_spec_args")
    mended = mend_executor_input(executor_input, json.loads(spec_text) if spec_text else None)
    argv = _replace_flag(argv, "--json_serialized_invocation_args", json.dumps(mended))

    from absl import app
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as tfx_entry

    output_file = mended.get("outputs", {}).get("outputFile", "")
    try:
        app.run(tfx_entry.main, argv=[sys.argv[0], *argv], flags_parser=tfx_entry._parse_flags)
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    _clean_output_file(output_file)


if __name__ == "__main__":
    from litedet.components import object_storage as storage

    try:
        main(sys.argv[1:])
    except StepError as error:  # one line in the step's log, no traceback
        print(f"litedet step: error: {error}", file=sys.stderr, flush=True)
        storage.exit_process(1)
    storage.exit_process(0)  # any other exception above exits non-zero before this
