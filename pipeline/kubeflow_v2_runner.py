"""Compiles the litedet pipeline for Kubeflow Pipelines (the KFP v2 engine).

The graph is `pipeline.pipeline.create_pipeline`, the same one the local runner executes; this
module adds only what differs on a cluster:

- run-time parameters (components/run_time.py), settable per run without recompiling;
- the container image every step runs in;
- CPU/memory requests and limits per component (each step's `RESOURCES`), which the KFP v2
  driver copies into each step's pod (see docs/kubeflow.md for what enforces them);
- Beam's DirectRunner sized to each step's CPU limit instead of the node's core count (a
  portable run, `beam.runner: portable`, submits to its job service instead: nothing to size).

No ML Metadata connection is configured: on Kubeflow the KFP backend owns ML Metadata. Nothing
TFX is imported at module level, so the CLI can import this module cheaply.

Output: a `.yaml` file holds the KFP PipelineSpec (what the KFP API server accepts for upload);
a `.json` file holds TFX's PipelineJob (`displayName`, `labels`, `pipelineSpec`,
`runtimeConfig`), the form Vertex AI Pipelines submits.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict

from litedet.components import resources, run_time
from litedet.components.resources import Resources
from litedet.pipeline import configs


def component_resources() -> Dict[str, Resources]:
    """{node id: Resources}, from every step folder's component.py (`RESOURCES`). A node that
    no step sizes gets DEFAULT_RESOURCES. Imports the components (TFX)."""
    import importlib
    import pkgutil

    from litedet import components

    sizes: Dict[str, Resources] = {}
    for step in pkgutil.iter_modules(components.__path__):
        if not step.ispkg:
            continue
        try:
            module = importlib.import_module(f"litedet.components.{step.name}.component")
        except ModuleNotFoundError as e:
            if e.name != f"litedet.components.{step.name}.component":
                raise
            continue  # a library folder (detection/), not a step
        sizes.update(getattr(module, "RESOURCES", {}))
    return sizes


DEFAULT_RESOURCES = resources.DEFAULT

# The project's folder inside the image (Dockerfile: WORKDIR). Files the pipeline names by path,
# such as the curated schema, are addressed there: this machine's paths mean nothing in a pod.
IMAGE_PROJECT_DIR = "/opt/litedet"

# The KFP v2 launcher keeps a pipeline root only in an object store; TFX steps then read and
# write their artifacts at those URIs themselves: gs:// through TensorFlow, s3:// (AWS, MinIO)
# through tensorflow-io and Beam's S3 file system (components/object_storage.py). KFP's own minio://
# scheme is known to neither: give the same bucket as s3:// with the MinIO endpoint.
OBJECT_STORE_SCHEMES = ("gs://", "s3://")
_MINIO = (
    "minio:// is KFP's name for its in-cluster store, which TensorFlow and Beam cannot open; "
    "use s3://BUCKET/... and kubeflow.env.AWS_ENDPOINT_URL=http://seaweedfs.kubeflow:9000 "
    "(KFP 2.16+; http://minio-service.kubeflow:9000 before) (docs/kubeflow.md)"
)


class KubeflowConfigError(configs.ConfigError):
    """A setting that cannot work on a cluster; the message says what to use instead."""


def check_dataset_root(root: str) -> None:
    """A dataset on Kubeflow must be readable from every step's pod."""
    if root == configs.SAMPLE_DATASET:
        raise KubeflowConfigError(
            "dataset.root is 'sample', which exists only on this machine; on Kubeflow give a "
            "location every step can read: gs://bucket/path, s3://bucket/path, or an absolute "
            "path on a volume mounted in every step (e.g. /mnt/datasets/coco, "
            "k8s/overlays/local-pvc), via --config or --set"
        )
    if root.startswith("minio://"):
        raise KubeflowConfigError(f"dataset.root {root!r}: {_MINIO}")
    if not (root.startswith(OBJECT_STORE_SCHEMES) or os.path.isabs(root)):
        raise KubeflowConfigError(
            f"dataset.root {root!r} is a path on this machine; on Kubeflow use gs://..., "
            "s3://... or an absolute path on a volume mounted in every step"
        )


def check_pipeline_root(root: str) -> None:
    if root.startswith("minio://"):
        raise KubeflowConfigError(f"pipeline root {root!r}: {_MINIO}")
    if not root.startswith(OBJECT_STORE_SCHEMES):
        raise KubeflowConfigError(
            f"pipeline root {root!r}: the KFP v2 launcher keeps artifacts only in an object "
            "store, not on a volume; use gs://bucket/path or s3://bucket/path"
        )


S3_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def check_s3_settings(config: configs.PipelineConfig, pipeline_root: str) -> None:
    """Every step opens s3:// itself (tensorflow-io, Beam's boto3) with the AWS environment the
    compiled pipeline gives it: an s3:// location without an endpoint and credentials there
    would fail in every pod, so it is refused here, unless the configuration says the target is
    AWS S3 with the pods' ambient credentials."""
    k = config.kubeflow
    locations = [
        ("--pipeline-root", pipeline_root),
        ("dataset.root", config.dataset.root),
        ("push.destination", config.push.destination or ""),
    ]
    on_s3 = [(name, uri) for name, uri in locations if uri.startswith("s3://")]
    if not on_s3 or k.aws_s3_ambient_credentials:
        return
    name, uri = on_s3[0]
    if not k.env.get("AWS_ENDPOINT_URL"):
        raise KubeflowConfigError(
            f"{name} {uri}: s3:// needs kubeflow.env.AWS_ENDPOINT_URL (e.g. "
            "http://seaweedfs.kubeflow:9000 on KFP 2.16+) and kubeflow.secret_env for "
            f"{' and '.join(S3_CREDENTIALS)}; for AWS S3 with the pods' own credentials set "
            "kubeflow.aws_s3_ambient_credentials: true (k8s/examples/)"
        )
    missing = [v for v in S3_CREDENTIALS if v not in k.secret_env]
    if missing:
        raise KubeflowConfigError(
            f"{name} {uri}: s3:// needs kubeflow.secret_env.{missing[0]} (SECRET/KEY of a "
            "Kubernetes Secret, e.g. mlpipeline-minio-artifact/accesskey and "
            "mlpipeline-minio-artifact/secretkey); for AWS S3 with the pods' own credentials "
            "set kubeflow.aws_s3_ambient_credentials: true"
        )


def _schema_in_image(config: configs.PipelineConfig, project_dir: str) -> str:
    """The schema file as a step sees it: the curated one inside the image, or a given one that
    must be gs:// or an absolute path mounted in the step."""
    from litedet import schemas

    if not config.schema_path:
        relative = os.path.relpath(
            schemas.RAW_SCHEMA, os.path.dirname(os.path.dirname(os.path.abspath(schemas.__file__)))
        )
        return f"{project_dir}/{relative}"
    if not (
        config.schema_path.startswith(OBJECT_STORE_SCHEMES) or os.path.isabs(config.schema_path)
    ):
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
    if destination.startswith("minio://"):
        raise KubeflowConfigError(f"push.destination {destination!r}: {_MINIO}")
    if not (destination.startswith(OBJECT_STORE_SCHEMES) or os.path.isabs(destination)):
        raise KubeflowConfigError(
            f"push.destination {destination!r} is a path on this machine; "
            "on Kubeflow use gs://..., s3://... or an absolute path on a volume"
        )
    return destination


def _num_classes(config: configs.PipelineConfig) -> int:
    """The class count per-class AP is set up for (TFMA's metrics are fixed when compiling):
    evaluation.num_classes, dataset.class_names, or the compile-time dataset's COCO files."""
    if config.evaluation.num_classes:
        return config.evaluation.num_classes
    if config.dataset.class_names:
        return len(config.dataset.class_names)
    root = config.dataset.root
    # Compiling reads nothing over the network: a store may be unreachable from here (and
    # tensorflow-io's S3 client waits minutes on an unknown host), and the steps read the
    # dataset at run time anyway.
    if root.startswith(OBJECT_STORE_SCHEMES) or not os.path.isdir(root):
        raise KubeflowConfigError(
            f"evaluation.num_classes: the compiler does not read the dataset at {root} (it is "
            "not on this machine); set evaluation.num_classes or dataset.class_names"
        )
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
    process sees, which in a pod is the node's cores, not the pod's CPU limit. Any other runner
    (beam.runner portable: the job service's cluster sizes its own workers) gets nothing."""
    if any(a.startswith("--runner=") and a != "--runner=DirectRunner" for a in beam_args):
        return []
    if "--direct_num_workers=0" not in beam_args:
        return []
    return [f"--direct_num_workers={max(1, int(cpu))}"]


def _sized(component, beam_args, sizes: Dict[str, Resources]) -> None:
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.dsl.components.base import base_beam_component

    size = sizes.get(component.id, DEFAULT_RESOURCES)
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
            defaultValue=value, isOptional=True, description=run_time.PARAMETERS[name].help
        )
    return job


def preflight(
    config: configs.PipelineConfig, output_path: str, image: str, pipeline_root: str
) -> int:
    """Every check `compile_pipeline` makes before its slow imports, at once and offline; returns
    the class count. Raises KubeflowConfigError naming the setting."""
    if not configs.IMAGE_REFERENCE.fullmatch(image or ""):
        raise KubeflowConfigError(
            f"image {image!r}: give a container image reference such as "
            "registry.example.com/litedet:0.1.0"
        )
    check_pipeline_root(pipeline_root)
    check_dataset_root(config.dataset.root)
    check_s3_settings(config, pipeline_root)
    if not output_path.endswith((".yaml", ".yml", ".json")):
        raise KubeflowConfigError(f"{output_path}: the output must end in .yaml or .json")
    return _num_classes(config)


def compile_pipeline(
    config: configs.PipelineConfig,
    output_path: str,
    image: str,
    pipeline_root: str,
    image_project_dir: str = IMAGE_PROJECT_DIR,
) -> str:
    """Writes the compiled pipeline to `output_path` (.yaml: PipelineSpec for KFP, with the
    PlatformSpec as a second document when there is one; .json: PipelineJob) and returns that
    path. Reads nothing over the network. `image_project_dir`: where the project lives inside
    the image (the Dockerfile's WORKDIR); the tests that run the steps outside an image give
    the repository.

    `config.dataset.root` becomes the default of the input_base run-time parameter."""
    num_classes = preflight(config, output_path, image, pipeline_root)

    from tfx import v1 as tfx

    from litedet.pipeline import pipeline as pipeline_def

    config = dataclasses.replace(
        config,
        schema_path=_schema_in_image(config, image_project_dir),
        push=dataclasses.replace(config.push, destination=_push_destination(config, pipeline_root)),
    )
    defaults = {name: run_time.setting(config, name) for name in run_time.PARAMETERS}
    runtime_parameters = {
        name: tfx.dsl.experimental.RuntimeParameter(
            name=name, ptype=p.ptype, default=defaults[name]
        )
        for name, p in run_time.PARAMETERS.items()
    }
    from litedet.components import object_storage as storage

    # Beam's worker processes need s3:// too when anything lives there. A portable run's workers
    # run this image too (beam.sdk_container_image's default).
    beam_args = configs.beam_args_for(config, image=image) + storage.beam_args(
        pipeline_root, config.push.destination, defaults["input_base"]
    )
    definition = pipeline_def.create_pipeline(
        config,
        config.dataset_config(),
        pipeline_root=pipeline_root,
        num_classes=num_classes,
        beam_pipeline_args=beam_args,
        run_time_values=runtime_parameters,
        trainer_workers=config.kubeflow.trainer_workers,
    )
    sizes = component_resources()
    if config.kubeflow.trainer_workers.count > 1:
        # The step only launches and watches the workers (components/trainer/tfjob.py).
        from litedet.components.trainer.component import LAUNCHER_RESOURCES

        sizes["Trainer"] = LAUNCHER_RESOURCES
    for component in definition.components:
        _sized(component, definition.beam_pipeline_args, sizes)

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
    job["pipelineSpec"], platform = _for_open_source_kfp(
        job["pipelineSpec"], config, pipeline_def.stateful_steps(definition.components)
    )
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w") as f:
        if output_path.endswith(".json"):
            json.dump(job, f, sort_keys=True, indent=2)
        else:
            import yaml

            f.write("# litedet for Kubeflow Pipelines: upload with `litedet kfp upload`\n")
            yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
            if platform:
                # KFP's second document: Kubernetes settings (Secrets as env, node placement).
                f.write("---\n")
                yaml.safe_dump(platform, f, sort_keys=True)
    return output_path


def _for_open_source_kfp(spec: dict, config: configs.PipelineConfig, stateful_steps):
    """TFX's spec adapted for the open-source backend (pipeline/kfp_spec.py), checked."""
    from litedet.pipeline import kfp_spec

    k = config.kubeflow
    placement = {}
    if k.trainer_accelerator or k.trainer_node_selector or k.trainer_tolerations:
        placement["Trainer"] = {
            "accelerator": k.trainer_accelerator,
            "accelerator_count": k.trainer_accelerator_count,
            "node_selector": k.trainer_node_selector,
            "tolerations": k.trainer_tolerations,
        }
    spec, platform = kfp_spec.adapt(
        spec,
        not_cached=stateful_steps,
        env=k.env,
        secret_env=k.secret_env,
        step_secret_env=k.step_secret_env,
        placement=placement,
    )
    found = kfp_spec.problems(spec, platform)
    if found:
        raise KubeflowConfigError(
            "the compiled pipeline would not run on the open-source KFP backend:\n  - "
            + "\n  - ".join(found)
        )
    return spec, platform


def load_pipeline_spec(path: str) -> dict:
    """The PipelineSpec inside a compiled file, whichever of the two formats it is."""
    return load_package(path)[0]


def load_package(path: str):
    """(PipelineSpec, PlatformSpec or None) of a compiled file."""
    with open(path) as f:
        if path.endswith(".json"):
            document = json.load(f)
            return document.get("pipelineSpec", document), None
        import yaml

        documents = [d for d in yaml.safe_load_all(f) if d]
    dicts = [d for d in documents if isinstance(d, dict)]
    spec = next((d for d in dicts if "root" in d), documents[0] if documents else None)
    platform = next((d for d in dicts if "platforms" in d), None)
    return spec, platform
