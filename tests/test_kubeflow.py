"""The Kubeflow build: pipeline/kubeflow_v2_runner.py's compiled pipeline, the `compile` verb,
and the Dockerfile the steps run in. Offline: the compile runs with sockets blocked."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from litedet.components import run_time
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
    # Task names are the TFX component ids (the KFP UI's graph shows these names), plus the
    # step that fingerprints the dataset at the start of every run.
    ids = [c.id for c in definition.components]
    assert sorted(tasks) == sorted(ids) and "DatasetFingerprint" in ids
    for component in definition.components:
        assert tasks[component.id]["taskInfo"]["name"] == component.id
        expected = {n.id for n in component.upstream_nodes}
        assert set(tasks[component.id].get("dependentTasks", [])) == expected
    # The local runner computes the fingerprint when it builds the pipeline: no such step.
    from litedet.pipeline import pipeline as pipeline_def

    local = pipeline_def.create_pipeline(
        _config(),
        _config().dataset_config(),
        pipeline_root="/tmp/root",
        dataset_fingerprint="0" * 64,
    )
    assert "DatasetFingerprint" not in [c.id for c in local.components]
    edges = {(up, name) for name, t in tasks.items() for up in t.get("dependentTasks", [])}
    assert {
        ("DatasetFingerprint", "DetectionExampleGen"),
        ("DetectionExampleGen", "StatisticsGen"),
        ("SchemaImporter", "StatisticsGen"),  # image_domain: images profiled as bytes
        ("StatisticsGen", "ExampleValidator"),
        ("SchemaImporter", "ExampleValidator"),
        ("DetectionExampleGen", "Transform"),
        ("SchemaImporter", "Transform"),
        ("LitedetPusher", "RunReport"),
    } <= edges
    consumed = tasks["Transform"]["inputs"]["artifacts"]
    assert consumed["examples"]["taskOutputArtifact"] == {
        "producerTask": "DetectionExampleGen",
        "outputArtifactKey": "examples",
    }
    # The ExampleGen's cache key holds the fingerprint as a parameter from that step.
    assert tasks["DetectionExampleGen"]["inputs"]["parameters"]["input_fingerprint"] == {
        "taskOutputParameter": {
            "producerTask": "DatasetFingerprint",
            "outputParameterKey": "fingerprint",
        }
    }


def test_only_steps_that_depend_on_nothing_outside_their_inputs_are_cached(compiled):
    job, _, _ = compiled
    STATEFUL_STEPS = ("DatasetFingerprint", "ModelGate", "LitedetPusher", "RunReport")
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        assert cached == (name not in STATEFUL_STEPS), name


def test_run_time_parameters_exist_with_their_defaults(compiled):
    job, _, _ = compiled
    declared = job["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE"}
    config = _config()
    assert set(declared) == set(run_time.PARAMETERS)
    for name, parameter in run_time.PARAMETERS.items():
        default = run_time.setting(config, name)
        assert declared[name]["parameterType"] == kinds[parameter.ptype]
        assert declared[name]["defaultValue"] == default and declared[name]["isOptional"]
        assert job["runtimeConfig"]["parameterValues"][name] == default
    assert declared["input_base"]["defaultValue"] == DATASET["root"]
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    for task in ("DatasetFingerprint", "DetectionExampleGen"):
        assert tasks[task]["inputs"]["parameters"]["input_base"] == {
            "componentInputParameter": "input_base"
        }
    for name in ("alpha", "train_steps"):
        assert tasks["RunParameters"]["inputs"]["parameters"][name] == {
            "componentInputParameter": name
        }
    trainer_inputs = tasks["Trainer"]["inputs"]["artifacts"]
    assert (
        trainer_inputs["hyperparameters"]["taskOutputArtifact"]["producerTask"] == "RunParameters"
    )
    assert job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT
    gate = tasks["ModelGate"]
    assert gate["inputs"]["parameters"]["min_map50"] == {"componentInputParameter": "min_map50"}


def test_the_gate_compares_with_the_store_the_pusher_pushes_to(compiled):
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
    store = tasks["ModelGate"]["inputs"]["parameters"]["model_store"]["runtimeValue"]
    assert store["constant"] == destination
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert not [label for label, e in executors.items() if "resolver" in e]


def test_the_run_page_gets_the_metrics_and_the_report(compiled):
    """The gate's `metrics` output is a system.Metrics artifact (its float custom properties:
    the run's scalar metrics) and the report a system.HTML one (the UI reads the object at its
    URI and renders it). TFX writes the types as instance schemas with these titles, which the
    KFP launcher records as the ML Metadata type names the UI matches on."""
    job, _, _ = compiled
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    components = job["pipelineSpec"]["components"]

    def title(task, key):
        component = components[tasks[task]["componentRef"]["name"]]
        artifact_type = component["outputDefinitions"]["artifacts"][key]["artifactType"]
        return yaml.safe_load(artifact_type["instanceSchema"])["title"]

    assert title("ModelGate", "metrics") == "system.Metrics"
    assert title("RunReport", "report") == "system.HTML"
    assert title("Trainer", "model_run") == "tfx.ModelRun"  # the TensorBoard logs


def test_every_executor_runs_the_configured_image_and_entrypoint_with_its_resources(compiled):
    from tfx.dsl.components.base.base_beam_component import BaseBeamComponent

    from litedet.pipeline import kfp_spec

    job, _, definition = compiled
    sizes = kv2.component_resources()
    beam_steps = {c.id for c in definition.components if isinstance(c, BaseBeamComponent)}
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert len(executors) == len(job["pipelineSpec"]["root"]["dag"]["tasks"])
    for label, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE
        assert container["command"] == kfp_spec.ENTRYPOINT
        size = sizes.get(label.replace("_executor", ""), kv2.DEFAULT_RESOURCES)
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
        ("minio://mlpipeline/shapes", "use s3://BUCKET"),
    ],
)
def test_dataset_roots_a_step_cannot_read_are_refused_up_front(root, message, tmp_path):
    config = configs.load_config(None) if root == "sample" else _config(root=root)
    with pytest.raises(KubeflowConfigError, match=message):
        kv2.compile_pipeline(config, str(tmp_path / "p.yaml"), IMAGE, PIPELINE_ROOT)


@pytest.mark.parametrize("root", ["/mnt/pipeline-root", "minio://mlpipeline/v2", "outputs"])
def test_pipeline_roots_outside_an_object_store_tf_can_open_are_refused(root, tmp_path):
    with pytest.raises(KubeflowConfigError, match="pipeline root"):
        kv2.compile_pipeline(_config(), str(tmp_path / "p.yaml"), IMAGE, root)


def test_custom_artifact_types_have_kfp_schema_titles():
    """KFP v2 names an artifact type by a schema title `namespace.Name`; TFX's compiler refuses
    others ('Invalid custom artifact type name')."""
    from tfx.types.artifact import Artifact

    from litedet.components import artifacts

    custom = list(artifacts.PROJECT_TYPES)
    defined = [
        c
        for c in vars(artifacts).values()
        if isinstance(c, type) and issubclass(c, Artifact) and c.__module__ == artifacts.__name__
    ]
    assert sorted(c.__name__ for c in defined) == sorted(c.__name__ for c in custom)
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
        "import argparse, sys; from litedet.kfp import cli as kfp_cli; "
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


def _final_stage():
    instructions = _dockerfile()
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from:]


def _lock_names():
    from packaging.utils import canonicalize_name

    return {
        canonicalize_name(re.match(r"([A-Za-z0-9._-]+)==", line).group(1)): line
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }


def _runtime_closure():
    """Every package the runtime requirements need, from the installed distributions' metadata:
    requirements.in less setup.py's test-only entries (its `test` extra), with their extras."""
    import ast
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    setup_py = (REPO / "setup.py").read_text()
    test_only = ast.literal_eval(
        re.search(r"^TEST_ONLY = (\(.*?\))\s*$", setup_py, re.M | re.S).group(1)
    )
    wanted = [
        Requirement(line)
        for line in (REPO / "requirements.in").read_text().splitlines()
        if line and not line.startswith("#") and not line.startswith(test_only)
    ]
    seen, stack = set(), [(canonicalize_name(r.name), frozenset(r.extras)) for r in wanted]
    while stack:
        name, extras = stack.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is in the runtime requirements but not installed here")
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
            ):
                stack.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_the_image_is_built_on_the_tfx_version_the_lock_pins():
    pinned = re.search(r"^tfx==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)
    froms = [rest for instruction, rest in _dockerfile() if instruction == "FROM"]
    base, _, stage = froms[0].partition(" AS ")
    assert base == f"tensorflow/tfx:{pinned}${{TFX_IMAGE_DIGEST:+@}}${{TFX_IMAGE_DIGEST}}"
    stages = {stage}
    for later in froms[1:]:  # every later stage starts from an earlier one, not another image
        image, _, name = later.partition(" AS ")
        assert image in stages, later
        stages.add(name)
    assert f"tfx.__version__ == '{pinned}'" in (REPO / "Dockerfile").read_text()


def test_the_image_base_digest_is_a_build_argument_recorded_in_a_label():
    """No digest of the TFX image could be verified offline: the build takes it as an argument
    (docs/cluster.md, "Image"); a default written in later must be a full sha256 digest."""
    instructions = _dockerfile()
    first_from = [instruction for instruction, _ in instructions].index("FROM")
    [argument] = [
        rest
        for instruction, rest in instructions[:first_from]
        if instruction == "ARG" and rest.split("=")[0] == "TFX_IMAGE_DIGEST"
    ]
    default = argument.partition("=")[2].strip('"')
    assert default == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", default), default
    final = _final_stage()
    assert ("ARG", "TFX_IMAGE_DIGEST") in final  # visible in the final stage
    labels = " ".join(rest for instruction, rest in final if instruction == "LABEL")
    assert 'org.opencontainers.image.base.digest="${TFX_IMAGE_DIGEST}"' in labels


def test_the_image_sets_legacy_keras_and_runs_as_a_numeric_non_root_user():
    instructions = _dockerfile()
    env = " ".join(rest for instruction, rest in instructions if instruction == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
    user = [rest for instruction, rest in instructions if instruction == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: lets Kubernetes verify runAsNonRoot
    workdirs = [rest for instruction, rest in _final_stage() if instruction == "WORKDIR"]
    assert workdirs[-1] == kv2.IMAGE_PROJECT_DIR


def test_every_copied_path_exists_and_is_in_the_build_context():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore  # an allow-list: nothing else reaches the build context
    copied = []
    for instruction, rest in _dockerfile():
        words = rest.split()
        if instruction == "COPY" and not any(w.startswith("--from=") for w in words):
            copied += [p for p in words[:-1] if not p.startswith("--")]
    assert {"requirements.lock", "litedet", "components", "pipeline", "schemas"} <= set(copied)
    # What setup.py and the build backend read at build time.
    assert {"setup.py", "pyproject.toml", "README.md", "requirements.in"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists(), source
        assert source.split("/")[0] in allowed, f"{source} is excluded by .dockerignore"
    assert os.path.exists(REPO / "schemas" / "detection_raw.pbtxt")


def test_the_image_installs_only_runtime_packages_from_the_lock():
    """The lock minus exactly the packages only the tests and the linter use: setup.py's test
    extra and whatever nothing else requires (what `pip show NAME` reports as Required-by)."""
    from packaging.utils import canonicalize_name

    text = (REPO / "Dockerfile").read_text()
    match = re.search(r"test_only='([^']+)'", text)
    assert match, "the Dockerfile filters the lock through a test_only pattern"
    pattern = re.compile(match.group(1), re.IGNORECASE)
    lock = _lock_names()
    removed = {name for name, line in lock.items() if pattern.search(line)}
    assert removed == set(lock) - _runtime_closure()
    kept = set(lock) - removed
    assert {"tensorflow-io", "apache-beam", "boto3", "tfx", "kfp"} <= kept  # s3:// in TF and Beam
    assert {canonicalize_name(n) for n in ("pytest", "ruff", "moto", "Flask")} <= removed
    runs = " ".join(rest for instruction, rest in _final_stage() if instruction == "RUN")
    assert (
        'grep -v -i -E "$test_only" /tmp/requirements.lock > /tmp/requirements-runtime.txt' in runs
    )
    assert "pip install --requirement /tmp/requirements-runtime.txt" in runs
    assert "pip uninstall --yes --requirement /tmp/requirements-test-only.txt" in runs
    assert "--requirement /tmp/requirements.lock" not in runs  # never the whole lock


def test_the_image_installs_litedet_as_a_package_not_its_source_tree():
    from litedet import schemas
    from litedet.pipeline import kfp_spec

    final = _final_stage()
    runs = " ".join(rest for instruction, rest in final if instruction == "RUN")
    assert "--editable" not in runs and " -e " not in runs
    assert "pip install --no-deps /tmp/wheels/*.whl" in runs
    # Only the lock, the wheel and the schema file reach the final stage: no package folder
    # under the working directory could shadow the installed `litedet` (`python -m` puts the
    # working directory first on sys.path).
    copies = [rest.split() for instruction, rest in final if instruction == "COPY"]
    local = [words[:-1] for words in copies if not any(w.startswith("--from=") for w in words)]
    schema = pathlib.Path(schemas.RAW_SCHEMA).relative_to(pathlib.Path(schemas.__file__).parents[1])
    assert sorted(local) == sorted([["requirements.lock"], [str(schema)]])
    [schema_copy] = [words for words in copies if words[0] == str(schema)]
    assert os.path.normpath(schema_copy[-1]) == str(schema.parent)  # relative to WORKDIR
    # The build imports the module every step runs, and checks the schema against the package's.
    assert f"import filecmp, {kfp_spec.ENTRYPOINT[-1]}" in runs
    assert "command -v litedet" in runs


def test_the_image_wheel_holds_every_module_of_the_package(tmp_path):
    """Builds the wheel the image installs from a copy of the build context (the .dockerignore
    allow-list) and checks that every module of the four folders setup.py maps is in it."""
    import ast
    import shutil
    import zipfile

    context = tmp_path / "context"
    context.mkdir()
    for line in (REPO / ".dockerignore").read_text().splitlines():
        if line.startswith("!"):
            source = REPO / line[1:].rstrip("/")
            if source.is_dir():
                shutil.copytree(
                    source, context / source.name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(source, context / source.name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(context),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = (tmp_path / "wheels").glob("litedet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    setup_py = (REPO / "setup.py").read_text()
    folders = ast.literal_eval(re.search(r"^FOLDERS = (\{.*?\})$", setup_py, re.M | re.S).group(1))
    expected = [
        f"{package.replace('.', '/')}/{path.relative_to(REPO / folder)}"
        for package, folder in folders.items()
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".pbtxt") and "__pycache__" not in path.parts
    ]
    missing = [name for name in expected if name not in names]
    assert not missing, f"not in the wheel (a folder without __init__.py?): {missing}"


def test_the_image_sets_no_secret():
    names = []
    for instruction, rest in _dockerfile():
        if instruction in ("ENV", "ARG"):
            names += [
                word.split("=")[0] for word in rest.split() if "=" in word or instruction == "ARG"
            ]
    assert names
    for name in names:
        assert not configs.SECRET_NAME.search(name), name
        assert not name.startswith(("AWS_", "GOOGLE_", "MLFLOW_", "KFP_")), name


def _arg_default(name):
    [argument] = [
        rest
        for instruction, rest in _final_stage()
        if instruction == "ARG" and rest.split("=")[0] == name
    ]
    return argument.partition("=")[2].strip('"')


def test_the_image_bakes_the_default_alphas_weights_and_then_stops_downloading():
    """Pods of a cluster without egress train with the ImageNet weights the image holds: by
    default those of the configuration's default alpha at the ImageNet size nearest its default
    input size. LITEDET_IMAGE_WEIGHTS (what the Trainer checks) is set after the download, or
    the build's own download would be refused."""
    from litedet.components.detection import weights
    from litedet.pipeline.configs import TrainingConfig, TransformConfig

    expected = f"{TrainingConfig().alpha}:{weights.nearest_size(TransformConfig().image_size)}"
    assert _arg_default("BACKBONE_WEIGHTS") == expected == "0.35:224"
    assert TrainingConfig().backbone_weights == weights.IMAGENET
    final = _final_stage()
    download = next(
        i
        for i, (instruction, rest) in enumerate(final)
        if instruction == "RUN" and "litedet.components.detection.weights" in rest
    )
    [marker] = [
        i
        for i, (instruction, rest) in enumerate(final)
        if instruction == "ENV" and rest.startswith(weights.IMAGE_WEIGHTS_ENV + "=")
    ]
    assert marker > download
    assert final[marker][1] == f'{weights.IMAGE_WEIGHTS_ENV}="${{BACKBONE_WEIGHTS}}"'
    user = max(i for i, (instruction, _) in enumerate(final) if instruction == "USER")
    assert download > user  # into the step user's Keras cache (HOME), not root's
    readme = (REPO / "README.md").read_text()
    assert f'--build-arg BACKBONE_WEIGHTS="{expected}' in readme  # the build line matches


def test_the_gpu_variant_installs_the_cuda_build_of_the_pinned_tensorflow():
    from importlib import metadata

    pinned = re.search(r"^tensorflow==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    text = (REPO / "Dockerfile").read_text()
    assert _arg_default("TENSORFLOW_VARIANT") == "cpu"
    assert f'"tensorflow[and-cuda]=={pinned.group(1)}"' in text
    assert f"tf.__version__ == '{pinned.group(1)}'" in text
    # The extra exists for this TensorFlow release and brings the CUDA libraries the build
    # checks for.
    tf_metadata = metadata.metadata("tensorflow")
    assert tf_metadata["Version"] == pinned.group(1)
    cuda = [r for r in tf_metadata.get_all("Requires-Dist") if "extra == 'and-cuda'" in r]
    assert any(r.startswith("nvidia-cudnn-cu12") for r in cuda)
    assert any(r.startswith("nvidia-cublas-cu12") for r in cuda)
    assert "'nvidia.cudnn', 'nvidia.cublas'" in text
    assert "--build-arg TENSORFLOW_VARIANT=gpu" in (REPO / "README.md").read_text()


# --- `litedet compile` as a user runs it: no network, refusals in one line ----------------------

NO_NETWORK = """
import socket
def _refuse(self, *args, **kwargs):
    raise OSError("litedet compile opened a network connection: %r" % (args,))
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


def _litedet(tmp_path, *argv, timeout=180):
    """The `litedet` command in a subprocess whose sockets cannot connect anywhere."""
    site = tmp_path / "no-network"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LITEDET_", "S3_"))}
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}"
    started = time.monotonic()
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "litedet"), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )
    return result, time.monotonic() - started


REFUSED = [
    (
        ["--pipeline-root", "s3://b/root", "--set", "dataset.root=gs://b/d"],
        "--pipeline-root s3://b/root: s3:// needs kubeflow.env.AWS_ENDPOINT_URL",
    ),
    (
        [
            "--pipeline-root",
            "gs://b/root",
            "--set",
            "dataset.root=s3://b/d",
            "--set",
            "kubeflow.env.AWS_ENDPOINT_URL=http://seaweedfs.kubeflow:9000",
        ],
        "dataset.root s3://b/d: s3:// needs kubeflow.secret_env.AWS_ACCESS_KEY_ID",
    ),
    (
        ["--pipeline-root", "gs://b/root", "--set", "push.destination=s3://b/models"],
        "push.destination s3://b/models: s3:// needs kubeflow.env.AWS_ENDPOINT_URL",
    ),
    (  # the README's old example: counting classes used to wait on the S3 host, then abort
        [
            "--config",
            "k8s/examples/minio-config.yaml",
            "--set",
            "evaluation.num_classes=0",
            "--pipeline-root",
            "s3://mlpipeline/litedet/pipeline-root",
        ],
        "evaluation.num_classes: the compiler does not read the dataset at "
        "s3://mlpipeline/datasets/coco",
    ),
]


@pytest.mark.parametrize("argv, message", REFUSED, ids=["root", "dataset", "store", "classes"])
def test_compile_refuses_s3_without_endpoint_and_credentials_in_one_line(tmp_path, argv, message):
    default_dataset = [] if "--config" in argv else ["--set", f"dataset={json.dumps(DATASET)}"]
    result, seconds = _litedet(
        tmp_path,
        "compile",
        "--image",
        IMAGE,
        "--output",
        str(tmp_path / "p.yaml"),
        "--set",
        "evaluation.num_classes=5",
        *default_dataset,
        *argv,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("litedet: error: ")
    assert message in result.stderr
    assert "Compiling" not in result.stdout  # refused before TFX is imported
    assert seconds < 30  # the CLI's own imports only; no store, no TFX
    assert not (tmp_path / "p.yaml").exists()


def test_aws_s3_with_ambient_credentials_needs_no_endpoint_or_secret():
    config = configs.load_config(
        None,
        [
            f"dataset={json.dumps(dict(DATASET, root='s3://b/d'))}",
            "evaluation.num_classes=5",
            "kubeflow.aws_s3_ambient_credentials=true",
        ],
    )
    assert kv2.preflight(config, "p.yaml", IMAGE, "s3://b/root") == 5
    with pytest.raises(configs.ConfigError, match="aws_s3_ambient_credentials"):
        configs.load_config(None, ['kubeflow={"aws_s3_ambient_credentials": "maybe"}'])


@pytest.mark.parametrize(
    "example, root",
    [
        ("kfp-standalone-config.yaml", "s3://mlpipeline/v2/artifacts"),
        (
            "kfp-multi-user-config.yaml",
            "s3://mlpipeline/private-artifacts/kubeflow-user-example-com/v2/artifacts",
        ),
        ("minio-config.yaml", "s3://mlpipeline/litedet/pipeline-root"),
    ],
)
def test_the_example_configs_compile_offline(tmp_path, example, root):
    """As the README and each file's header give the command, with every socket refused."""
    out = tmp_path / "litedet-kfp.yaml"
    result, seconds = _litedet(
        tmp_path,
        "compile",
        "--image",
        IMAGE,
        "--config",
        f"k8s/examples/{example}",
        "--pipeline-root",
        root,
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Wrote" in result.stdout and seconds < 150
    spec, platform = kv2.load_package(str(out))
    assert len(spec["root"]["dag"]["tasks"]) == 13
    # Every step gets the store's endpoint and the Secret's keys.
    for executor in spec["deploymentSpec"]["executors"].values():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env["AWS_ENDPOINT_URL"].startswith("http://"), example
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == len(spec["deploymentSpec"]["executors"])
    assert f"--pipeline-root {root}" in (REPO / "k8s" / "examples" / example).read_text()


def test_the_flink_example_compiles_its_beam_steps_to_the_portable_runner(tmp_path):
    """Every Beam step submits to the job server with the compiled image as the workers' (TFX
    then stages nothing), and no step gets DirectRunner arguments."""
    config = configs.load_config(str(REPO / "k8s" / "examples" / "flink-config.yaml"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse_connections)
        mp.setattr(socket.socket, "connect_ex", _refuse_connections)
        path = kv2.compile_pipeline(
            config, str(tmp_path / "p.yaml"), IMAGE, "s3://mlpipeline/litedet/pipeline-root"
        )
    portable = configs.portable_beam_args(config.beam, IMAGE)
    assert f"--sdk_container_image={IMAGE}" in portable
    executors = kv2.load_pipeline_spec(path)["deploymentSpec"]["executors"]
    for label, executor in executors.items():
        assert not [a for a in executor["container"]["args"] if a.startswith("--direct_")], label
    for step in ("DetectionExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = executors[f"{step}_executor"]["container"]["args"]
        assert all(a in args for a in portable), step
        assert "--beam_plugins=litedet.components.object_storage" in args, step
