"""All settings of a litedet pipeline: one typed tree composed of the steps' own sections.

Each step's section lives beside its code (`components/<step>/config.py`: dataset, transform,
training, tflite, evaluation, push) and checks itself; this module composes them with the
runners' own settings (sample data, Kubeflow, where Beam runs) into PipelineConfig, which is
handed whole to `pipeline.create_pipeline`. A run's configuration is the defaults, then a YAML
file (`litedet run --config my.yaml`), then `--set key.sub=value` flags; `litedet config` prints
every key with its value. Nothing here imports TFX or TensorFlow: the CLI reads and checks
configurations before paying for those imports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Optional

from litedet.components.evaluation.config import EvaluationConfig
from litedet.components.example_gen.config import (
    SAMPLE_ROOT,
    DatasetConfig,
    DatasetConfigError,
    DatasetSettings,
    check_required,
)
from litedet.components.pusher.config import PushConfig
from litedet.components.tflite.config import TFLiteConfig
from litedet.components.trainer.config import TrainingConfig, WorkersConfig
from litedet.components.transform.config import TransformConfig

PIPELINE_NAME = "litedet"
# `dataset.root: sample` stands for the generated sample dataset (litedet/data/sample.py).
SAMPLE_DATASET = SAMPLE_ROOT


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclasses.dataclass
class SampleDataConfig:
    num_train: int = 400
    num_eval: int = 100
    seed: int = 0


@dataclasses.dataclass
class KubeflowConfig:
    """How the compiled pipeline's steps run on a cluster (pipeline/kubeflow_v2_runner.py).

    Everything here is written into the compiled pipeline: no secret values, only the names of
    the Kubernetes Secrets that hold them."""

    # Plain environment of every step, e.g. {"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:
    # 9000"} for artifacts in MinIO (components/object_storage.py).
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Environment from Secrets, {VARIABLE: "secret-name/key"}, e.g. {"AWS_ACCESS_KEY_ID":
    # "litedet-s3/AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "litedet-s3/AWS_SECRET_ACCESS_KEY"}.
    secret_env: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Per step, merged over secret_env for that step only: {step: {VARIABLE: "secret/key"}}, e.g.
    # {"LitedetPusher": {"AWS_ACCESS_KEY_ID": "litedet-store-writer/AWS_ACCESS_KEY_ID", ...}}:
    # the one credential that may write the model store, given to the pusher alone
    # (docs/cluster.md, "One credential per duty").
    step_secret_env: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    # Where the Trainer runs: an accelerator (a Kubernetes resource name, e.g. nvidia.com/gpu)
    # and how many, node selector labels, tolerations. Empty: anywhere, CPU only.
    trainer_accelerator: str = ""
    trainer_accelerator_count: int = 1
    trainer_node_selector: Dict[str, str] = dataclasses.field(default_factory=dict)
    trainer_tolerations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    # count > 1: the Trainer trains on that many workers, a TFJob of the Kubeflow Training
    # Operator (docs/distributed-training.md); count 1: in its own pod. Ignored locally.
    trainer_workers: WorkersConfig = dataclasses.field(default_factory=WorkersConfig)
    # s3:// locations (pipeline root, dataset, model store) need an endpoint in `env`
    # (AWS_ENDPOINT_URL) and credentials in `secret_env` (AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY), or `litedet compile` refuses them. true: the target is AWS S3 and the
    # pods have ambient AWS credentials (IRSA, EKS Pod Identity, an instance profile): no endpoint,
    # no Secret needed.
    aws_s3_ambient_credentials: bool = False


BEAM_RUNNERS = ("direct", "portable")
# HOST:PORT of a gRPC service: a DNS name or an IPv4 address, then the port.
ENDPOINT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}")
# A container image reference: registry/name:tag, optionally pinned by digest.
# The image name a local run's DirectRunner args carry (beam_args_for): never pulled.
LOCAL_IMAGE = "litedet:local"
IMAGE_REFERENCE = re.compile(r"[a-z0-9][A-Za-z0-9._/:-]*(@sha256:[0-9a-f]{64})?")
ENDPOINT_EXAMPLES = {
    "job_endpoint": "litedet-flink-job-server.litedet:8099",
    "worker_pool": "localhost:50000",
}


@dataclasses.dataclass
class BeamConfig:
    """Where the Beam steps (DetectionExampleGen, StatisticsGen, Transform, Evaluator) run:
    docs/flink.md. How these combine with beam_pipeline_args: `beam_args_for` below."""

    # direct: Beam's DirectRunner inside each step's own process (sized to the data locally, to
    # the step's CPU limit on Kubeflow). portable: Beam's PortableRunner: each step submits its
    # Beam job to a job service (Beam's Flink job server, k8s/flink/), whose workers have the
    # code run by an SDK worker pool beside them (Beam's EXTERNAL environment:
    # `python -m litedet.components.beam_worker_pool`).
    runner: str = "direct"
    # portable: the job service as the steps reach it, HOST:PORT.
    job_endpoint: str = ""
    # portable: the worker pool as the runner's workers reach it, HOST:PORT; a Flink
    # TaskManager's sidecar (k8s/flink/) is at localhost:50000.
    worker_pool: str = "localhost:50000"
    # portable: the image the worker pool runs. Naming it tells TFX the code is already where
    # the workers run, so it stages nothing (otherwise every Beam job builds and uploads a
    # `tfx_ephemeral` package of this installation: tfx/utils/dependency_utils.py). Empty: the
    # image `litedet compile --image` gives the steps; a local run must name one (for a worker
    # pool started from this installation any name will do, e.g. litedet:local).
    sdk_container_image: str = ""
    # portable: the longest one Beam job (one step's) may run, in seconds. Beam 2.60's
    # PortableRunner uses it (--job_server_timeout) both as the wait for the job service when
    # submitting and as the deadline of the job's state stream: a job still running then fails
    # with DEADLINE_EXCEEDED (apache/beam#35867; Beam's default of 60 s failed a longer job
    # here). So a wrong job_endpoint also makes a step wait this long before it fails.
    job_timeout_s: int = 6 * 3600

    def check(self) -> None:
        if self.runner not in BEAM_RUNNERS:
            raise ValueError(
                f"beam.runner: {self.runner!r} is not one of {', '.join(BEAM_RUNNERS)}"
            )
        for name, example in ENDPOINT_EXAMPLES.items():
            value = getattr(self, name)
            if (value or self.runner == "portable") and not (
                isinstance(value, str) and ENDPOINT.fullmatch(value)
            ):
                raise ValueError(
                    f"beam.{name}: {value!r} is not HOST:PORT (a portable run needs it), "
                    f"e.g. {example}"
                )
        image = self.sdk_container_image
        if image and not (isinstance(image, str) and IMAGE_REFERENCE.fullmatch(image)):
            raise ValueError(
                f"beam.sdk_container_image: {image!r} is not an image reference such as "
                "registry.example.com/litedet:0.2.0"
            )
        if self.job_timeout_s < 1:
            raise ValueError(f"beam.job_timeout_s: {self.job_timeout_s} must be >= 1")


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = PIPELINE_NAME
    # Local runs keep everything (artifacts, ML Metadata SQLite) under this folder.
    output_dir: str = "outputs"
    dataset: DatasetSettings = dataclasses.field(default_factory=DatasetSettings)
    sample_data: SampleDataConfig = dataclasses.field(default_factory=SampleDataConfig)
    transform: TransformConfig = dataclasses.field(default_factory=TransformConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    tflite: TFLiteConfig = dataclasses.field(default_factory=TFLiteConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    push: PushConfig = dataclasses.field(default_factory=PushConfig)
    kubeflow: KubeflowConfig = dataclasses.field(default_factory=KubeflowConfig)
    beam: BeamConfig = dataclasses.field(default_factory=BeamConfig)
    schema_path: str = ""  # empty: the curated schemas/detection_raw.pbtxt
    enable_cache: bool = True
    # Beam arguments of every Beam step. With beam.runner direct they replace what litedet
    # chooses, e.g. ["--runner=DataflowRunner", ...]; with portable they follow the beam
    # section's (e.g. ["--sdk_worker_parallelism=2"]; a flag given twice keeps its last value).
    # Precedence in full: beam_args_for below.
    beam_pipeline_args: List[str] = dataclasses.field(default_factory=list)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.sqlite")

    @property
    def push_destination(self) -> str:
        return self.push.destination or os.path.abspath(os.path.join(self.output_dir, "models"))

    @property
    def uses_sample_data(self) -> bool:
        return self.dataset.root == SAMPLE_DATASET

    def dataset_config(self, sample_root: Optional[str] = None) -> DatasetConfig:
        """The dataset as the ExampleGen reads it, checked; `sample_root` replaces the sample
        marker."""
        values = dataclasses.asdict(self.dataset)
        if self.uses_sample_data:
            if sample_root is None:
                raise ConfigError("dataset.root is 'sample': generate the sample data first")
            values["root"] = sample_root
        values["max_objects_per_image"] = (
            values["max_objects_per_image"] or self.transform.max_boxes
        )
        try:
            return DatasetConfig(**values)
        except (DatasetConfigError, TypeError) as e:
            raise ConfigError(str(e)) from e

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Settings whose value is a free-form mapping rather than a section of fixed fields.
MAPPING_SETTINGS = (
    "dataset.sources",
    "dataset.images_dirs",
    "dataset.split_ratios",
    "push.registry",
    "kubeflow.env",
    "kubeflow.secret_env",
    "kubeflow.step_secret_env",
    "kubeflow.trainer_node_selector",
    "kubeflow.trainer_workers.node_selector",
)
# Names of environment variables that carry secrets: refused in kubeflow.env, which is written
# into the compiled pipeline in the clear.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


# Below this much data the DirectRunner runs in this process: starting its worker processes
# (each imports TensorFlow) costs more than they save (benchmarks/run_overhead.py).
IN_MEMORY_BEAM_BYTES = 256 * 2**20


def beam_args_for(
    config: PipelineConfig,
    dataset_bytes: Optional[int] = None,
    cpus: Optional[int] = None,
    image: str = "",
) -> List[str]:
    """The Beam arguments of a run.

    beam.runner portable: the PortableRunner's (portable_beam_args), then beam_pipeline_args.
    beam.runner direct: beam_pipeline_args when given, as they are (any runner); otherwise the
    DirectRunner, in this process for a dataset under IN_MEMORY_BEAM_BYTES, else in one worker
    process per core (`cpus`, default: all this process sees). `image`: the image the steps run
    in (Kubeflow), the default of beam.sdk_container_image."""
    if config.beam.runner == "portable":
        return portable_beam_args(config.beam, image) + list(config.beam_pipeline_args)
    if config.beam_pipeline_args:
        return list(config.beam_pipeline_args)
    # The DirectRunner's workers are this installation's own Python: nothing is staged. Naming
    # the image the steps run in says so to TFX, which otherwise copies its installation and
    # builds a `tfx_ephemeral` sdist for every Beam job (~1.7 s and ~49 MB of /tmp that nothing
    # removes; tfx/utils/dependency_utils.py). Beam reads the image only for a DOCKER
    # environment, which the DirectRunner never uses.
    no_staging = f"--sdk_container_image={image or LOCAL_IMAGE}"
    if dataset_bytes is not None and dataset_bytes < IN_MEMORY_BEAM_BYTES:
        return ["--direct_running_mode=in_memory", no_staging]
    return [
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={cpus or 0}",
        no_staging,
    ]


def portable_beam_args(beam: BeamConfig, image: str = "") -> List[str]:
    """The PortableRunner with the job service and the worker pool (an EXTERNAL environment)
    of the beam section, and the image the workers run, which also keeps TFX from staging its
    own installation with every job."""
    image = beam.sdk_container_image or image
    if not image:
        raise ConfigError(
            "beam.sdk_container_image: a portable run outside Kubeflow must name the image its "
            "worker pool runs (for a pool started from this installation any name will do, e.g. "
            "litedet:local); without it TFX builds and stages a package of this installation "
            "with every Beam job"
        )
    return [
        "--runner=PortableRunner",
        f"--job_endpoint={beam.job_endpoint}",
        "--environment_type=EXTERNAL",
        # Not --environment_options=external_service_address=...: Beam 2.60's EXTERNAL
        # environment reads --environment_config unconditionally (a TypeError without it).
        f"--environment_config={beam.worker_pool}",
        f"--sdk_container_image={image}",
        f"--job_server_timeout={beam.job_timeout_s}",
    ]


def _merge(target, values: dict, path: str = "") -> None:
    """Sets dataclass fields from a nested dict (a YAML file), refusing unknown keys and wrong
    types. A mapping setting (MAPPING_SETTINGS) given replaces the default one. A `dataset`
    section describes a whole dataset: unless it is the sample, it must name root, format and
    sources (nothing of the sample's may leak into it)."""
    known = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        where = f"{path}{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown setting; known here: {', '.join(sorted(known))}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
            if where == "dataset" and value.get("root", SAMPLE_DATASET) != SAMPLE_DATASET:
                try:
                    check_required(value)
                except DatasetConfigError as e:
                    raise ConfigError(str(e)) from None
            _merge(current, value, where + ".")
        elif where in MAPPING_SETTINGS:
            if not isinstance(value, dict) and not (value is None and current is None):
                raise ConfigError(f"{where}: expected a mapping, got {value!r}")
            setattr(target, key, None if value is None else dict(value))
        else:
            setattr(target, key, _coerce(where, current, value))


def _coerce(where: str, current, value):
    if isinstance(current, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(current, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if isinstance(current, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(current, list) and isinstance(value, str):
        return json.loads(value) if value.startswith("[") else value.split()
    return value


def _apply_override(config: PipelineConfig, item: str) -> None:
    """One `--set key.sub=value`: a section's field, or one key inside a mapping setting
    (`--set dataset.root=gs://b/d` changes only the root). JSON values are allowed."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. transform.image_size=320")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(
            f"--set {item!r}: {key!r} is not a setting name such as "
            "training.alpha (see `litedet config`)"
        )
    target, path = config, ""
    for index, part in enumerate(parts):
        where = path + part
        known = {f.name for f in dataclasses.fields(target)}
        if part not in known:
            raise ConfigError(f"{where}: unknown setting; known here: {', '.join(sorted(known))}")
        current = getattr(target, part)
        rest = parts[index + 1 :]
        if where in MAPPING_SETTINGS and rest:
            updated = dict(current)
            node = updated
            for inner in rest[:-1]:
                node[inner] = dict(node.get(inner) or {})
                node = node[inner]
            node[rest[-1]] = value
            setattr(target, part, updated)
            return
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ConfigError(
                    f"{where}: is a single value ({current!r}), it has no "
                    f"'{rest[0]}'; give --set {where}=VALUE"
                )
            target, path = current, where + "."
            continue
        _merge(target, {part: value}, path)
        return


def load_config(
    path: Optional[str] = None, overrides: Optional[List[str]] = None
) -> PipelineConfig:
    config = PipelineConfig()
    if path:
        import yaml  # PyYAML comes with the TFX stack

        try:
            with open(path) as f:
                values = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the configuration file ({e.strerror})") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        _merge(config, values)
        chosen = "backbone_weights" in (values.get("training") or {})
    else:
        chosen = False
    for item in overrides or []:
        _apply_override(config, item)
        chosen = chosen or item.strip().startswith(("training.backbone_weights", "training="))
    if config.uses_sample_data and not chosen:
        # Synthetic shapes need no ImageNet features, and the demo must run offline.
        config.training.backbone_weights = "none"
    validate(config)
    return config


# The steps' sections; each checks itself (`check()`, a ValueError naming the setting).
STEP_SECTIONS = ("transform", "training", "tflite", "evaluation", "push")


def validate(config: PipelineConfig) -> None:
    for name in STEP_SECTIONS + ("beam",):
        try:
            getattr(config, name).check()
        except ValueError as e:
            raise ConfigError(str(e)) from None
    _validate_beam_args(config)
    _validate_kubeflow(config.kubeflow)
    # The sample set's folder is only known once generated; its description is checked anyway.
    config.dataset_config(sample_root="/sample" if config.uses_sample_data else None)


def _validate_beam_args(config: PipelineConfig) -> None:
    """beam_pipeline_args come after the portable runner's arguments: another runner there would
    silently replace it."""
    runners = [a for a in config.beam_pipeline_args if a.startswith("--runner")]
    if config.beam.runner == "portable" and runners:
        raise ConfigError(
            f"beam_pipeline_args: {runners[0]} conflicts with beam.runner: portable; give the "
            "runner in one place (beam.runner: direct lets beam_pipeline_args choose any runner)"
        )


def _validate_kubeflow(k: KubeflowConfig) -> None:
    for name, value in k.env.items():
        if SECRET_NAME.search(name):
            raise ConfigError(
                f"kubeflow.env.{name}: looks like a secret, and kubeflow.env is written into the "
                f"compiled pipeline in the clear; give it as kubeflow.secret_env.{name}="
                "SECRET_NAME/KEY (a Kubernetes Secret) instead"
            )
        if not isinstance(value, str):
            raise ConfigError(f"kubeflow.env.{name}: {value!r} must be a string")
    references = [(f"kubeflow.secret_env.{n}", r) for n, r in k.secret_env.items()]
    for step, variables in k.step_secret_env.items():
        if not isinstance(variables, dict):
            raise ConfigError(
                f"kubeflow.step_secret_env.{step}: {variables!r} must map VARIABLE to "
                "SECRET_NAME/KEY"
            )
        references += [(f"kubeflow.step_secret_env.{step}.{n}", r) for n, r in variables.items()]
        # A step's own Secret must not also reach every step through secret_env.
        shared = {r.split("/")[0] for r in k.secret_env.values() if isinstance(r, str)}
        for name, reference in variables.items():
            if isinstance(reference, str) and reference.split("/")[0] in shared:
                raise ConfigError(
                    f"kubeflow.step_secret_env.{step}.{name}: the Secret "
                    f"{reference.split('/')[0]!r} is also in kubeflow.secret_env, which gives it "
                    "to every step; a step's own credential needs a Secret of its own"
                )
    for field, reference in references:
        if not (
            isinstance(reference, str) and re.fullmatch(r"[a-z0-9.-]+/[-._a-zA-Z0-9]+", reference)
        ):
            raise ConfigError(
                f"{field}: {reference!r} must be SECRET_NAME/KEY, e.g. "
                "litedet-s3/AWS_SECRET_ACCESS_KEY"
            )
    if k.trainer_accelerator and not re.fullmatch(
        r"[a-z0-9.-]+/[a-z0-9.-]+", k.trainer_accelerator
    ):
        raise ConfigError(
            f"kubeflow.trainer_accelerator: {k.trainer_accelerator!r} must be a Kubernetes "
            "resource name such as nvidia.com/gpu"
        )
    if not isinstance(k.aws_s3_ambient_credentials, bool):
        raise ConfigError(
            f"kubeflow.aws_s3_ambient_credentials: {k.aws_s3_ambient_credentials!r} must be "
            "true or false"
        )
    if k.trainer_accelerator_count < 1:
        raise ConfigError("kubeflow.trainer_accelerator_count: must be >= 1")
    try:
        k.trainer_workers.check()
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if k.trainer_workers.count > 1 and k.trainer_accelerator:
        raise ConfigError(
            "kubeflow.trainer_accelerator: with kubeflow.trainer_workers.count > 1 the Trainer "
            "step only launches and watches the workers; give their GPUs as "
            "kubeflow.trainer_workers.gpu instead"
        )
    for toleration in k.trainer_tolerations:
        unknown = set(toleration) - {"key", "operator", "value", "effect", "tolerationSeconds"}
        if not isinstance(toleration, dict) or unknown:
            raise ConfigError(
                f"kubeflow.trainer_tolerations: {toleration!r}: give Kubernetes tolerations "
                "(key, operator, value, effect, tolerationSeconds)"
            )
