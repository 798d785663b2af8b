"""The Kubeflow build: pipeline/kubeflow_v2_runner.py's compiled pipeline, the `compile` verb,
and the Dockerfile the steps run in. Offline: the compile runs with sockets blocked."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from litedet.pipeline import configs
from litedet.pipeline import kubeflow_v2_runner as kv2
from litedet.pipeline.kubeflow_v2_runner import KubeflowConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/litedet:test"
PIPELINE_ROOT = "gs://litedet-test/pipeline-root"
DATASET = {
    "root": "gs://litedet-test/datasets/shapes",
    "format": "coco",
    "sources": {
        "train": "annotations/instances_train.json",
        "eval": "annotations/instances_eval.json",
    },
}
TFX_ENTRYPOINT = [
    "python",
    "-m",
    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
]


def _config(**dataset):
    # No gs:// is reachable here to count the COCO categories: the class count is given.
    return configs.load_config(
        None,
        [
            f"dataset={json.dumps(dict(DATASET, **dataset))}",
            "transform.image_size=96",
            "evaluation.num_classes=5",
        ],
    )


def _refuse_connections(self, *args, **kwargs):
    raise AssertionError(f"compiling tried to open a network connection: {args}")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiles to both formats with outbound connections refused; returns (job, spec from the
    .yaml, the TFX pipeline object create_pipeline built)."""
    out = tmp_path_factory.mktemp("kubeflow")
    config = _config()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse_connections)
        mp.setattr(socket.socket, "connect_ex", _refuse_connections)
        json_path = kv2.compile_pipeline(config, str(out / "litedet.json"), IMAGE, PIPELINE_ROOT)
        yaml_path = kv2.compile_pipeline(config, str(out / "litedet.yaml"), IMAGE, PIPELINE_ROOT)
    from litedet.pipeline import pipeline as pipeline_def

    definition = pipeline_def.create_pipeline(
        config, config.dataset_config(), pipeline_root=PIPELINE_ROOT
    )
    with open(json_path) as f:
        job = json.load(f)
    return job, kv2.load_pipeline_spec(yaml_path), definition


def test_the_output_is_a_pipeline_job_whose_spec_parses_strictly(compiled):
    job, spec_from_yaml, _ = compiled
    assert set(job) == {"displayName", "labels", "pipelineSpec", "runtimeConfig"}
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(job["pipelineSpec"], spec)  # unknown fields raise
    # Schema 2.1 (parameterType, `constant` values) is the form the KFP v2 backend reads.
    assert (spec.schema_version, spec.sdk_version) == ("2.1.0", "tfx-1.16.0")
    assert spec.pipeline_info.name == "litedet"
    # The .yaml is that same PipelineSpec alone: the document the KFP API server accepts.
    assert spec_from_yaml == job["pipelineSpec"]


def test_the_dag_has_every_component_under_its_tfx_name_with_its_edges(compiled):
    job, _, definition = compiled
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    resolver = "latest_blessed_model_resolver"
    # The resolver becomes two KFP resolver tasks: the latest blessing, then its model.
    task_of = {resolver: f"{resolver}-model-resolver"}
    ids = [c.id for c in definition.components if c.id != resolver]
    # Task names are the TFX component ids: the KFP UI's graph shows these names.
    assert sorted(tasks) == sorted(
        ids + [f"{resolver}-model-blessing-resolver", f"{resolver}-model-resolver"]
    )
    for component in definition.components:
        if component.id == resolver:
            continue
        assert tasks[component.id]["taskInfo"]["name"] == component.id
        assert sorted(tasks[component.id].get("dependentTasks", [])) == sorted(
            task_of.get(n.id, n.id) for n in component.upstream_nodes
        )
    # The data half as it stands today (later components only add to this).
    edges = {(up, name) for name, t in tasks.items() for up in t.get("dependentTasks", [])}
    assert {
        ("DetectionExampleGen", "StatisticsGen"),
        ("StatisticsGen", "ExampleValidator"),
        ("SchemaImporter", "ExampleValidator"),
        ("DetectionExampleGen", "Transform"),
        ("SchemaImporter", "Transform"),
    } <= edges
    consumed = tasks["Transform"]["inputs"]["artifacts"]
    assert consumed["examples"]["taskOutputArtifact"] == {
        "producerTask": "DetectionExampleGen",
        "outputArtifactKey": "examples",
    }


def test_run_time_parameters_exist_with_their_defaults(compiled):
    job, _, _ = compiled
    declared = job["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE"}
    config = _config()
    assert set(declared) == set(kv2.RUNTIME_PARAMETERS)
    for name, parameter in kv2.RUNTIME_PARAMETERS.items():
        default = parameter.default(config)
        assert declared[name]["parameterType"] == kinds[parameter.ptype]
        assert declared[name]["defaultValue"] == default and declared[name]["isOptional"]
        assert job["runtimeConfig"]["parameterValues"][name] == default
    assert declared["input_base"]["defaultValue"] == DATASET["root"]
    example_gen = job["pipelineSpec"]["root"]["dag"]["tasks"]["DetectionExampleGen"]
    assert example_gen["inputs"]["parameters"]["input_base"] == {
        "componentInputParameter": "input_base"
    }
    run_parameters = job["pipelineSpec"]["root"]["dag"]["tasks"]["RunParameters"]
    for name in ("alpha", "train_steps"):
        assert run_parameters["inputs"]["parameters"][name] == {"componentInputParameter": name}
    trainer_inputs = job["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"]["artifacts"]
    assert (
        trainer_inputs["hyperparameters"]["taskOutputArtifact"]["producerTask"] == "RunParameters"
    )
    assert job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT
    gate = job["pipelineSpec"]["root"]["dag"]["tasks"]["ModelGate"]
    assert gate["inputs"]["parameters"]["min_map50"] == {"componentInputParameter": "min_map50"}


def test_evaluation_gates_the_push_and_its_figures_reach_the_run_page(compiled):
    job, _, _ = compiled
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    edges = {(up, name) for name, t in tasks.items() for up in t.get("dependentTasks", [])}
    assert {
        ("Trainer", "Evaluator"),
        ("Evaluator", "ModelGate"),
        ("TFLiteConverter", "ModelGate"),
        ("ModelGate", "LitedetPusher"),
    } <= edges
    pusher = tasks["LitedetPusher"]["inputs"]
    assert pusher["artifacts"]["model_blessing"]["taskOutputArtifact"] == {
        "producerTask": "ModelGate",
        "outputArtifactKey": "blessing",
    }
    destination = pusher["parameters"]["destination"]["runtimeValue"]["constant"]
    assert destination == PIPELINE_ROOT + "/models"
    # The gate's `metrics` output has the artifact type system.Metrics (TFX writes the type as
    # an instance schema titled so; KFP records that title as the ML Metadata type), whose
    # custom properties (mAP, blessed, per-format size and latency) the run page lists as
    # scalar metrics. Not seen rendered: there is no KFP server here.
    component = job["pipelineSpec"]["components"][tasks["ModelGate"]["componentRef"]["name"]]
    metrics = component["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]
    assert yaml.safe_load(metrics["instanceSchema"])["title"] == "system.Metrics"


def test_every_executor_runs_the_configured_image_with_its_resources(compiled):
    from tfx.dsl.components.base.base_beam_component import BaseBeamComponent

    job, _, definition = compiled
    beam_steps = {c.id for c in definition.components if isinstance(c, BaseBeamComponent)}
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert len(executors) == len(job["pipelineSpec"]["root"]["dag"]["tasks"])
    resolvers = {k for k, e in executors.items() if "resolver" in e}
    assert len(resolvers) == 2  # ML Metadata queries, no container
    for label, executor in executors.items():
        if label in resolvers:
            continue
        container = executor["container"]
        assert container["image"] == IMAGE
        assert container["command"] == TFX_ENTRYPOINT
        size = kv2.COMPONENT_RESOURCES.get(label.replace("_executor", ""), kv2.DEFAULT_RESOURCES)
        assert container["resources"] == {
            "cpuLimit": size.cpu,
            "cpuRequest": size.cpu,
            "memoryLimit": size.memory_gb,
            "memoryRequest": size.memory_gb,
        }
        workers = [a for a in container["args"] if a.startswith("--direct_num_workers=")]
        if label.replace("_executor", "") in beam_steps:  # Beam keeps the last value
            assert workers[-1] == f"--direct_num_workers={max(1, int(size.cpu))}"
    assert {"DetectionExampleGen", "StatisticsGen", "Transform"} <= beam_steps


def test_files_the_steps_read_are_named_by_their_path_in_the_image(compiled):
    job, _, _ = compiled
    schema_file = job["pipelineSpec"]["root"]["dag"]["tasks"]["SchemaImporter"]["inputs"][
        "parameters"
    ]["schema_file"]["runtimeValue"]["constant"]
    assert schema_file == f"{kv2.IMAGE_PROJECT_DIR}/schemas/detection_raw.pbtxt"
    assert str(REPO) not in json.dumps(job)  # nothing points at this machine


@pytest.mark.parametrize(
    "root, message",
    [
        ("sample", "exists only on this machine"),
        ("data/shapes", "path on this machine"),
        ("s3://bucket/shapes", "no tensorflow-io"),
    ],
)
def test_dataset_roots_a_step_cannot_read_are_refused_up_front(root, message, tmp_path):
    config = configs.load_config(None) if root == "sample" else _config(root=root)
    with pytest.raises(KubeflowConfigError, match=message):
        kv2.compile_pipeline(config, str(tmp_path / "p.yaml"), IMAGE, PIPELINE_ROOT)


@pytest.mark.parametrize("root", ["/mnt/pipeline-root", "minio://mlpipeline/v2", "outputs"])
def test_pipeline_roots_other_than_gcs_are_refused(root, tmp_path):
    with pytest.raises(KubeflowConfigError, match="pipeline root"):
        kv2.compile_pipeline(_config(), str(tmp_path / "p.yaml"), IMAGE, root)


def test_custom_artifact_types_have_kfp_schema_titles():
    """KFP v2 names an artifact type by a schema title `namespace.Name`; TFX's compiler refuses
    others ('Invalid custom artifact type name')."""
    from tfx.types.artifact import Artifact

    from litedet.components import artifacts

    custom = [
        c
        for c in vars(artifacts).values()
        if isinstance(c, type) and issubclass(c, Artifact) and c is not Artifact
    ]
    assert custom
    for artifact_type in custom:
        assert re.fullmatch(
            r"[a-z][a-z0-9-_]{2,20}[.][A-Z][a-zA-Z0-9-_]{2,49}", artifact_type.TYPE_NAME
        ), artifact_type


def test_the_compile_verb_writes_the_spec_and_names_its_parameters(compiled, tmp_path, capsys):
    import argparse

    from litedet.kfp import cli as kfp_cli

    parser = argparse.ArgumentParser(prog="litedet")
    kfp_cli.add_verbs(parser.add_subparsers(dest="verb", required=True))
    out = tmp_path / "litedet-kfp.yaml"
    args = parser.parse_args(
        [
            "compile",
            "--image",
            IMAGE,
            "--pipeline-root",
            PIPELINE_ROOT,
            "--output",
            str(out),
            "--set",
            f"dataset={json.dumps(DATASET)}",
            "--set",
            "evaluation.num_classes=5",
        ]
    )
    assert kfp_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert f"run-time parameter input_base = '{DATASET['root']}'" in printed
    assert yaml.safe_load(out.read_text())["pipelineInfo"]["name"] == "litedet"
    args = parser.parse_args(
        ["compile", "--image", IMAGE, "--pipeline-root", PIPELINE_ROOT, "--output", str(out)]
    )
    assert kfp_cli.main(args) == 2  # the default dataset is the local sample
    assert "'sample'" in capsys.readouterr().err


def test_building_the_parser_imports_neither_tfx_nor_kfp():
    code = (
        "import argparse, sys; from pipeline import kfp_cli; "
        "p = argparse.ArgumentParser(); kfp_cli.add_verbs(p.add_subparsers(dest='verb')); "
        "p.format_help(); bad = [m for m in ('tfx', 'kfp', 'tensorflow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# --- the Dockerfile (no image can be built here: these are its static checks) ---------------


def _dockerfile():
    lines, current = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                instruction, _, rest = current.strip().partition(" ")
                lines.append((instruction.upper(), rest.strip()))
            current = ""
    return lines


def test_the_image_is_built_on_the_tfx_version_the_lock_pins():
    pinned = re.search(r"^tfx==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)
    [base] = [rest for instruction, rest in _dockerfile() if instruction == "FROM"]
    assert base == f"tensorflow/tfx:{pinned}"
    assert f"tfx.__version__ == '{pinned}'" in (REPO / "Dockerfile").read_text()


def test_the_image_sets_legacy_keras_and_runs_as_a_numeric_non_root_user():
    instructions = _dockerfile()
    env = " ".join(rest for instruction, rest in instructions if instruction == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
    user = [rest for instruction, rest in instructions if instruction == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: lets Kubernetes verify runAsNonRoot
    workdirs = [rest for instruction, rest in instructions if instruction == "WORKDIR"]
    assert workdirs[-1] == kv2.IMAGE_PROJECT_DIR


def test_every_copied_path_exists_and_is_in_the_build_context():
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # an allow-list: nothing else reaches the build context
    copied = []
    for instruction, rest in _dockerfile():
        if instruction == "COPY":
            sources = [p for p in rest.split()[:-1] if not p.startswith("--")]
            copied += sources
    assert {"requirements.lock", "components", "pipeline", "schemas", "setup.py"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
    # setup.py reads these at install time.
    assert {"README.md", "requirements.in"} <= set(copied)
    assert os.path.exists(REPO / "schemas" / "detection_raw.pbtxt")
