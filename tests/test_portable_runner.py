"""Beam's portable runner as docs/flink.md sets it up on Flink, run on this machine: the pipeline's
data steps (DetectionExampleGen, StatisticsGen, ExampleValidator, Transform) submit their Beam
jobs to Beam's local job service, whose workers come from a separate worker-pool process started
as k8s/flink's TaskManager sidecar is (its command and environment variables), with the
configuration k8s/examples/flink-config.yaml and the dataset and the pipeline root on a real
S3-compatible server on loopback. The same steps on the DirectRunner are the reference: the
examples, the quarantine, the statistics and Transform's outputs must be the same.

Not run here: Flink, Beam's Flink job server (Java) and the Flink Kubernetes operator. The local
job service stands in for the job server: the same job API, the same EXTERNAL environment, the
same worker pool; tests/test_k8s.py checks the manifests that wire the real ones together. The
first tests, fast, check the pool's worker start-up alone.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from litedet.components import beam_worker_pool
from litedet.components.transform.module import LABEL_VOCABULARY
from litedet.run_summary import latest_run
from tests import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "k8s", "examples", "flink-config.yaml")
FLINK_DEPLOYMENT = os.path.join(REPO, "k8s", "flink", "flinkdeployment.yaml")
BUCKET = "litedet"
STEPS = ("DetectionExampleGen", "SchemaImporter", "StatisticsGen", "ExampleValidator", "Transform")
# The Beam jobs a run submits: one per Beam step.
BEAM_STEPS = ("DetectionExampleGen", "StatisticsGen", "Transform")
NUM_TRAIN, NUM_EVAL = 12, 4
# Replaced by bytes no decoder reads: the quarantine has something to compare.
BROKEN_IMAGE = "train_000000.jpg"


def test_the_worker_executable_runs_the_pools_worker_in_this_python(tmp_path):
    path = beam_worker_pool.worker_executable(str(tmp_path))
    assert os.access(path, os.X_OK)
    shown = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    # Its stdout goes to stderr (Beam's pool never reads the worker's stdout).
    assert shown.stdout == "" and "--provision_endpoint" in shown.stderr


def test_a_worker_hands_sdk_worker_main_the_jobs_options_as_beams_boot_does(tmp_path, monkeypatch):
    """What the pool's worker puts in the environment, read by Beam's own sdk_worker_main (a dry
    run: everything parsed, the job's --beam_plugins imported, no harness started)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.worker import sdk_worker_main

    (tmp_path / "litedet_test_plugin.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    info = beam_provision_api_pb2.ProvisionInfo(runner_capabilities=["beam:protocol:a:v1"])
    info.pipeline_options.update({"beam:option:beam_plugins:v1": ["litedet_test_plugin"]})
    args = argparse.Namespace(
        id="worker_3",
        control_endpoint="localhost:1",
        logging_endpoint="localhost:2",
        semi_persist_dir=str(tmp_path),
    )
    environment = beam_worker_pool.harness_environment(args, info)
    assert environment["WORKER_ID"] == "worker_3"
    assert environment["CONTROL_API_SERVICE_DESCRIPTOR"].strip() == 'url: "localhost:1"'
    assert environment["RUNNER_CAPABILITIES"] == "beam:protocol:a:v1"
    del environment["LOGGING_API_SERVICE_DESCRIPTOR"]  # nothing listens there
    sdk_worker_main.create_harness(environment, dry_run=True)
    assert "litedet_test_plugin" in sys.modules


def sidecar():
    """The worker-pool container of the TaskManagers' pod template."""
    with open(FLINK_DEPLOYMENT) as f:
        deployment = yaml.safe_load(f)
    containers = deployment["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "beam-worker-pool")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sidecar_command(port: int):
    """The sidecar's command, with this interpreter for `python` and a free port."""
    command = sidecar()["command"]
    assert command[0] == "python" and command[-1] == "--service_port=50000", command
    return [sys.executable, *command[1:-1], f"--service_port={port}"]


def _sidecar_environment(s3_server, home: str) -> dict:
    """The sidecar's environment variables, each as a pod would get it, with the loopback
    server's endpoint and keys in place of the cluster's; plus what runs Python here."""
    values = {**s3_server["keys"], "AWS_ENDPOINT_URL": s3_server["url"]}
    environment = {
        variable["name"]: values.get(variable["name"], variable.get("value"))
        for variable in sidecar()["env"]
    }
    assert None not in environment.values(), environment
    kept = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return {**kept, "HOME": home, **environment}


def _start(command, log_path: str, **kwargs) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )


def _wait_for_port(process: subprocess.Popen, port: int, log_path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, open(log_path).read()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port}: {open(log_path).read()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stops a service and everything it started (the pool's SDK workers)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def services(s3_server, tmp_path_factory):
    """Beam's local job service and the sidecar's worker pool, each a process of its own."""
    work = tmp_path_factory.mktemp("portable-services")
    job_port, pool_port = _free_port(), _free_port()
    job_log, pool_log = str(work / "job-service.log"), str(work / "worker-pool.log")
    job_service = _start(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            f"--port={job_port}",
        ],
        job_log,
    )
    pool = _start(
        _sidecar_command(pool_port),
        pool_log,
        env=_sidecar_environment(s3_server, str(work)),
        cwd=str(work),
    )
    try:
        _wait_for_port(job_service, job_port, job_log)
        _wait_for_port(pool, pool_port, pool_log)
        yield {
            "job_endpoint": f"localhost:{job_port}",
            "worker_pool": f"localhost:{pool_port}",
            "pool_log": pool_log,
        }
    finally:
        _stop(pool)
        _stop(job_service)


def _upload(client, folder: str, prefix: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            client.upload_file(path, BUCKET, f"{prefix}/{os.path.relpath(path, folder)}")


def _download(client, uri: str, folder: str) -> str:
    """Every object under an s3://litedet/... folder, into `folder`; returns it."""
    prefix = uri[len(f"s3://{BUCKET}/") :].rstrip("/") + "/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    for item in (item for page in pages for item in page.get("Contents", [])):
        path = os.path.join(folder, item["Key"][len(prefix) :])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        client.download_file(BUCKET, item["Key"], path)
    return folder


def _run_data_steps(work, name: str, overrides) -> dict:
    """One run (tests/data_steps_run.py) under pipeline root s3://litedet/portable/<name>;
    returns its result with each step's state and output folders, downloaded."""
    arguments = {
        "config": CONFIG,
        "overrides": [f"output_dir={work / name}", *overrides],
        "pipeline_root": f"s3://{BUCKET}/portable/{name}",
        "result": str(work / f"{name}.json"),
    }
    (work / f"{name}-args.json").write_text(json.dumps(arguments))
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-m", "tests.data_steps_run", str(work / f"{name}-args.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-5000:]
    result = json.loads((work / f"{name}.json").read_text())
    result["seconds"] = time.monotonic() - started
    result["components"] = latest_run(result["metadata"]).components
    return result


@pytest.fixture(scope="module")
def runs(s3_server, services, tmp_path_factory):
    from litedet.data import sample

    work = tmp_path_factory.mktemp("portable-runs")
    data = str(work / "data")
    sample.generate(data, num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=5)
    with open(os.path.join(data, "images", BROKEN_IMAGE), "wb") as f:
        f.write(b"not an image")
    _upload(s3_server["client"], data, "portable/dataset")
    common = [
        'dataset={"root": "s3://%s/portable/dataset", "format": "coco", "sources": {"train": '
        '"annotations/instances_train.json", "eval": "annotations/instances_eval.json"}}' % BUCKET,
        "evaluation.num_classes=5",
        f"push.destination=s3://{BUCKET}/portable/models",
        "transform.image_size=128",
        "transform.materialize=true",  # Transform's examples are compared too
    ]
    direct = _run_data_steps(work, "direct", [*common, "beam.runner=direct"])
    portable = _run_data_steps(
        work,
        "portable",
        [
            *common,
            f"beam.job_endpoint={services['job_endpoint']}",
            f"beam.worker_pool={services['worker_pool']}",
            # A pool started from this installation: any image name turns TFX's staging off.
            "beam.sdk_container_image=litedet:local",
        ],
    )
    return {"direct": direct, "portable": portable, "client": s3_server["client"], "work": work}


def _outputs(runs, step: str, key: str) -> dict:
    """{runner: local copy of the step's output folder}."""
    copies = {}
    for runner in ("direct", "portable"):
        uri = runs[runner]["components"][step].uri(key)
        copies[runner] = _download(runs["client"], uri, str(runs["work"] / runner / step / key))
    return copies


def _records(folder: str, split: str):
    """A split's tf.Examples, comparable: the same features serialize in the same order (map
    entries otherwise come in any order), in a fixed order of examples."""
    examples = datasets.read_examples(f"{folder}/Split-{split}")
    return sorted(e.SerializeToString(deterministic=True) for e in examples)


@pytest.mark.slow
def test_every_data_step_runs_on_both_runners(runs):
    for runner in ("direct", "portable"):
        states = {step: runs[runner]["components"][step].state for step in STEPS}
        assert states == {step: "ran" for step in STEPS}, runner


def test_the_staging_count_sees_a_build(tmp_path, monkeypatch):
    """The count tests/data_steps_run.py keeps: Beam args naming no workers' code make TFX
    build its package once (a real build, in a temporary folder of this test)."""
    import tempfile

    from tfx.utils import dependency_utils

    from tests.data_steps_run import _count_ephemeral_builds

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Set to itself so that monkeypatch puts the original back after the counter replaces it.
    monkeypatch.setattr(
        dependency_utils, "build_ephemeral_package", dependency_utils.build_ephemeral_package
    )
    counter = {"ephemeral_builds": 0}
    _count_ephemeral_builds(counter)
    args = dependency_utils.make_beam_dependency_flags(["--direct_running_mode=in_memory"])
    assert counter["ephemeral_builds"] == 1
    assert any(a.startswith("--extra_package=") for a in args), args


@pytest.mark.slow
def test_the_portable_run_uses_the_worker_pool_and_stages_nothing(runs, services):
    # TFX stages a package of its own installation with every Beam job that names no workers'
    # image; both runs name one (the DirectRunner's default args too: configs.beam_args_for).
    # test_the_staging_count_sees_a_build shows the count works.
    assert runs["direct"]["ephemeral_builds"] == 0
    assert runs["portable"]["ephemeral_builds"] == 0
    # Every Beam job's code ran in the sidecar's pool, each worker started as Beam's container
    # contract says (the pool's worker executable), not in the step's process.
    with open(services["pool_log"]) as f:
        started = [line for line in f if "Starting worker with command" in line]
    assert len(started) >= len(BEAM_STEPS), started
    assert all("litedet-beam-worker" in line for line in started), started


def _same_lines(copies: dict, name: str) -> list:
    """The file's lines (sorted: workers write in any order) in both runs' copies, equal."""
    lines = {
        runner: sorted(open(os.path.join(folder, name)).read().splitlines())
        for runner, folder in copies.items()
    }
    assert lines["portable"] == lines["direct"], name
    return lines["direct"]


@pytest.mark.slow
def test_the_examples_and_the_quarantine_are_the_same(runs):
    examples = _outputs(runs, "DetectionExampleGen", "examples")
    for split, count in (("train", NUM_TRAIN - 1), ("eval", NUM_EVAL)):
        direct = _records(examples["direct"], split)
        assert len(direct) == count
        assert _records(examples["portable"], split) == direct, split
    quarantine = _outputs(runs, "DetectionExampleGen", "quarantine")
    (entry,) = _same_lines(quarantine, "quarantine.jsonl")
    assert BROKEN_IMAGE in entry
    _same_lines(quarantine, "summary.json")
    label_map = _outputs(runs, "DetectionExampleGen", "label_map")
    for name in ("label_map.json", "labels.txt", "label_map.pbtxt"):
        assert _same_lines(label_map, name)


def _statistics(folder: str, split: str):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    with open(os.path.join(folder, f"Split-{split}", "FeatureStats.pb"), "rb") as f:
        return statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())


@pytest.mark.slow
def test_the_statistics_and_the_validation_are_the_same(runs):
    statistics = _outputs(runs, "StatisticsGen", "statistics")
    for split, count in (("train", NUM_TRAIN - 1), ("eval", NUM_EVAL)):
        direct = _statistics(statistics["direct"], split)
        assert direct.datasets[0].num_examples == count
        assert _statistics(statistics["portable"], split) == direct, split
    anomalies = _outputs(runs, "ExampleValidator", "anomalies")
    for split in ("train", "eval"):
        found = {
            runner: open(os.path.join(folder, f"Split-{split}", "SchemaDiff.pb"), "rb").read()
            for runner, folder in anomalies.items()
        }
        assert found["portable"] == found["direct"], split


@pytest.mark.slow
def test_transform_writes_the_same_vocabulary_and_transformed_examples(runs):
    graph = _outputs(runs, "Transform", "transform_graph")
    vocabulary = {
        runner: open(os.path.join(folder, "transform_fn", "assets", LABEL_VOCABULARY)).read()
        for runner, folder in graph.items()
    }
    assert vocabulary["direct"].split() and vocabulary["portable"] == vocabulary["direct"]
    examples = _outputs(runs, "Transform", "transformed_examples")
    for split in ("train", "eval"):
        direct = _records(examples["direct"], split)
        assert direct and _records(examples["portable"], split) == direct, split
