"""Compiles the litedet pipeline for Kubeflow Pipelines (the KFP v2 engine).

The graph is `pipeline.pipeline.create_pipeline`, the same one the local runner executes; this
module adds only what differs on a cluster:

- run-time parameters (RUNTIME_PARAMETERS below), settable per run without recompiling;
- the container image every step runs in;
- CPU/memory requests and limits per component (COMPONENT_RESOURCES below), which the KFP v2
  driver copies into each step's pod (see docs/kubeflow.md for what enforces them);
- Beam's DirectRunner sized to each step's CPU limit instead of the node's core count.

No ML Metadata connection is configured: on Kubeflow the KFP backend owns ML Metadata. Nothing
TFX is imported at module level, so the CLI can read RUNTIME_PARAMETERS cheaply.

Output: a `.yaml` file holds the KFP PipelineSpec (what the KFP API server accepts for upload);
a `.json` file holds TFX's PipelineJob (`displayName`, `labels`, `pipelineSpec`,
`runtimeConfig`), the form Vertex AI Pipelines submits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Dict, NamedTuple

from litedet.pipeline import configs


class RunParameter(NamedTuple):
    ptype: type  # str, int or float: what KFP's parameter types can carry
    default: Callable[[configs.PipelineConfig], Any]  # read from the configuration at compile time
    help: str


# The run-time parameters of the compiled pipeline: shown with their defaults in the KFP UI's
# "create run" form, set with `litedet kfp run --param NAME=VALUE`.
#
# To add one, add one line here. Its name must also be a keyword argument of
# `pipeline.pipeline.create_pipeline`, which receives a `tfx.dsl.experimental.RuntimeParameter`
# for it here (and a plain value, or nothing, from the local runner) and passes it to its
# component as an exec property. TFX's Kubeflow V2 compiler resolves RuntimeParameters only as
# whole, top-level exec properties of type str, int or float, not inside protos (such as
# Trainer's TrainArgs) or dicts (custom_config): give such a setting its own exec property.
# Trainer's settings reach it through components/run_parameters.py for that reason.
RUNTIME_PARAMETERS: Dict[str, RunParameter] = {
    "input_base": RunParameter(
        str,
        lambda c: c.dataset["root"],
        "dataset root the ExampleGen reads: gs://... or a path mounted in every step",
    ),
    "alpha": RunParameter(
        float,
        lambda c: c.training.alpha,
        "MobileNetV2 depth multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4",
    ),
    "train_steps": RunParameter(int, lambda c: c.training.train_steps, "training steps"),
    "min_map50": RunParameter(
        float,
        lambda c: c.evaluation.min_map50,
        "mAP@0.5 a model must reach on the evaluation split to be blessed and pushed",
    ),
}


class Resources(NamedTuple):
    cpu: float  # cores; request = limit, so Beam's worker count below matches what the pod gets
    memory_gb: float  # KFP's unit for these fields is G (10^9 bytes), not Gi


# Per component id. Unlisted components (a new one before it is sized) get DEFAULT_RESOURCES.
# The Trainer is the heaviest step; Evaluator runs the model over the eval split.
COMPONENT_RESOURCES: Dict[str, Resources] = {
    "DetectionExampleGen": Resources(cpu=2, memory_gb=4),
    "StatisticsGen": Resources(cpu=2, memory_gb=4),
    "SchemaImporter": Resources(cpu=0.5, memory_gb=1),
    "ExampleValidator": Resources(cpu=1, memory_gb=2),
    "Transform": Resources(cpu=2, memory_gb=8),
    "RunParameters": Resources(cpu=0.5, memory_gb=1),
    "Trainer": Resources(cpu=4, memory_gb=16),
    "TFLiteConverter": Resources(cpu=2, memory_gb=8),
    "Evaluator": Resources(cpu=2, memory_gb=8),
    "ModelGate": Resources(cpu=2, memory_gb=4),
    "LitedetPusher": Resources(cpu=0.5, memory_gb=2),
}
DEFAULT_RESOURCES = Resources(cpu=1, memory_gb=4)

# The project's folder inside the image (Dockerfile: WORKDIR). Files the pipeline names by path,
# such as the curated schema, are addressed there: this machine's paths mean nothing in a pod.
IMAGE_PROJECT_DIR = "/opt/litedet"

# The KFP v2 launcher keeps a pipeline root only in an object store (gs://, s3://, minio://), and
# TFX steps read and write artifacts at those URIs themselves, through TensorFlow's file system
# layer: in this stack (TF 2.16 without tensorflow-io) that knows gs:// but not s3:// or
# minio://. See docs/kubeflow.md, "Storage".
PIPELINE_ROOT_SCHEMES = ("gs://",)
DATASET_SCHEMES = ("gs://",)
_NO_S3 = (
    "s3:// and minio:// are not readable by this image's TensorFlow (no tensorflow-io); "
    "see docs/kubeflow.md, Storage"
)


class KubeflowConfigError(configs.ConfigError):
    """A setting that cannot work on a cluster; the message says what to use instead."""


def check_dataset_root(root: str) -> None:
    """A dataset on Kubeflow must be readable from every step's pod."""
    if root == configs.SAMPLE_DATASET:
        raise KubeflowConfigError(
            "dataset.root is 'sample', which exists only on this machine; on Kubeflow give a "
            "location every step can read: gs://bucket/path, or an absolute path on a volume "
            "mounted in every step (e.g. /mnt/datasets/coco, k8s/overlays/local-pvc), via "
            "--config or --set"
        )
    if root.startswith(("s3://", "minio://")):
        raise KubeflowConfigError(f"dataset.root {root!r}: {_NO_S3}")
    if not (root.startswith(DATASET_SCHEMES) or os.path.isabs(root)):
        raise KubeflowConfigError(
            f"dataset.root {root!r} is a path on this machine; on Kubeflow use gs://... or an "
            "absolute path on a volume mounted in every step"
        )


def check_pipeline_root(root: str) -> None:
    if root.startswith(("s3://", "minio://")):
        raise KubeflowConfigError(f"pipeline root {root!r}: {_NO_S3}")
    if not root.startswith(PIPELINE_ROOT_SCHEMES):
        raise KubeflowConfigError(
            f"pipeline root {root!r}: the KFP v2 launcher keeps artifacts only in an object "
            "store, not on a volume; use gs://bucket/path"
        )


def _schema_in_image(config: configs.PipelineConfig) -> str:
    """The schema file as a step sees it: the curated one inside the image, or a given one that
    must be gs:// or an absolute path mounted in the step."""
    from litedet import schemas

    if not config.schema_path:
        relative = os.path.relpath(
            schemas.RAW_SCHEMA, os.path.dirname(os.path.dirname(os.path.abspath(schemas.__file__)))
        )
        return f"{IMAGE_PROJECT_DIR}/{relative}"
    if not (config.schema_path.startswith("gs://") or os.path.isabs(config.schema_path)):
        raise KubeflowConfigError(
            f"schema_path {config.schema_path!r}: on Kubeflow use gs://... "
            "or an absolute path inside the image or a mounted volume"
        )
    return config.schema_path


def _push_destination(config: configs.PipelineConfig, pipeline_root: str) -> str:
    """Where blessed models go from a pod: push.destination (gs:// or an absolute path on a
    mounted volume), by default a `models` folder beside the pipeline root's runs."""
    destination = config.push.destination
    if not destination:
        return pipeline_root.rstrip("/") + "/models"
    if destination.startswith(("s3://", "minio://")):
        raise KubeflowConfigError(f"push.destination {destination!r}: {_NO_S3}")
    if not (destination.startswith("gs://") or os.path.isabs(destination)):
        raise KubeflowConfigError(
            f"push.destination {destination!r} is a path on this machine; "
            "on Kubeflow use gs://... or an absolute path on a volume"
        )
    return destination


def _num_classes(config: configs.PipelineConfig) -> int:
    """The class count per-class AP is set up for (TFMA's metrics are fixed when compiling):
    evaluation.num_classes, dataset.class_names, or the compile-time dataset's COCO files."""
    if config.evaluation.num_classes:
        return config.evaluation.num_classes
    from litedet.components.example_gen import annotations

    try:
        return annotations.count_classes(config.dataset_config())
    except Exception as error:  # unreadable from here (no credentials), or not COCO
        raise KubeflowConfigError(
            f"cannot count the dataset's classes when compiling ({error}); set "
            "evaluation.num_classes or dataset.class_names"
        ) from error


def _direct_workers(beam_args, cpu: float):
    """Per-step Beam args: the DirectRunner's default worker count (0) means one per core the
    process sees, which in a pod is the node's cores, not the pod's CPU limit."""
    if any(a.startswith("--runner=") and a != "--runner=DirectRunner" for a in beam_args):
        return []
    if "--direct_num_workers=0" not in beam_args:
        return []
    return [f"--direct_num_workers={max(1, int(cpu))}"]


def _sized(component, beam_args) -> None:
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.dsl.components.base import base_beam_component

    size = COMPONENT_RESOURCES.get(component.id, DEFAULT_RESOURCES)
    component.with_platform_config(
        pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
            cpu_limit=size.cpu,
            cpu_request=size.cpu,
            memory_limit=size.memory_gb,
            memory_request=size.memory_gb,
        )
    )
    if isinstance(component, base_beam_component.BaseBeamComponent):
        extra = _direct_workers(beam_args, size.cpu)
        if extra:
            # Appended after the pipeline-level args, so this value is the one Beam keeps.
            component.with_beam_pipeline_args(extra)


def _with_parameter_defaults(job: dict, defaults: Dict[str, Any]) -> dict:
    """TFX writes the defaults only into the PipelineJob's runtimeConfig, which the KFP API
    server never sees (it takes the PipelineSpec alone). Record each default and description in
    the spec's root inputs too, as the KFP SDK does, so a run that omits a parameter gets its
    default and the UI shows it."""
    inputs = (
        job["pipelineSpec"]["root"].setdefault("inputDefinitions", {}).setdefault("parameters", {})
    )
    for name, value in defaults.items():
        inputs[name].update(
            defaultValue=value, isOptional=True, description=RUNTIME_PARAMETERS[name].help
        )
    return job


def compile_pipeline(
    config: configs.PipelineConfig, output_path: str, image: str, pipeline_root: str
) -> str:
    """Writes the compiled pipeline to `output_path` (.yaml: PipelineSpec for KFP;
    .json: PipelineJob) and returns that path. Reads nothing over the network.

    `config.dataset["root"]` becomes the default of the input_base run-time parameter."""
    if not re.fullmatch(r"[a-z0-9][A-Za-z0-9._/:-]*(@sha256:[0-9a-f]{64})?", image or ""):
        raise KubeflowConfigError(
            f"image {image!r}: give a container image reference such as "
            "registry.example.com/litedet:0.1.0"
        )
    check_pipeline_root(pipeline_root)
    check_dataset_root(config.dataset.get("root", ""))
    if not output_path.endswith((".yaml", ".yml", ".json")):
        raise KubeflowConfigError(f"{output_path}: the output must end in .yaml or .json")

    from tfx import v1 as tfx

    from litedet.pipeline import pipeline as pipeline_def

    config = dataclasses.replace(
        config,
        schema_path=_schema_in_image(config),
        push=dataclasses.replace(config.push, destination=_push_destination(config, pipeline_root)),
    )
    num_classes = _num_classes(config)
    defaults = {name: p.default(config) for name, p in RUNTIME_PARAMETERS.items()}
    runtime_parameters = {
        name: tfx.dsl.experimental.RuntimeParameter(
            name=name, ptype=p.ptype, default=defaults[name]
        )
        for name, p in RUNTIME_PARAMETERS.items()
    }
    definition = pipeline_def.create_pipeline(
        config,
        config.dataset_config(),
        pipeline_root=pipeline_root,
        num_classes=num_classes,
        **runtime_parameters,
    )
    for component in definition.components:
        if hasattr(component, "with_platform_config"):  # not the resolver: it runs no container
            _sized(component, definition.beam_pipeline_args)

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        # Schema 2.1 (`parameterType`, `constant` values): the KFP v2 backend reads only these;
        # TFX's default 2.0 form (`type`, `constantValue`) is Vertex AI's legacy dialect.
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=True
        ),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path),
    )
    # write_out=False: the defaults are added to the spec first, then the file is written here
    # in the runner's own two formats.
    job = _with_parameter_defaults(
        runner.run(definition, parameter_values=defaults, write_out=False), defaults
    )
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w") as f:
        if output_path.endswith(".json"):
            json.dump(job, f, sort_keys=True, indent=2)
        else:
            import yaml

            f.write("# litedet for Kubeflow Pipelines: upload with `litedet kfp upload`\n")
            yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
    return output_path


def load_pipeline_spec(path: str) -> dict:
    """The PipelineSpec inside a compiled file, whichever of the two formats it is."""
    with open(path) as f:
        if path.endswith(".json"):
            document = json.load(f)
            return document.get("pipelineSpec", document)
        import yaml

        return yaml.safe_load(f)
