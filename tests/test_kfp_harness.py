"""The compiled Kubeflow pipeline, executed end to end as the open-source KFP v2 backend executes
it (tests/kfp_harness.py), with the pipeline root, the dataset and the model store on a real
S3-compatible server on loopback (moto) and the model registry a real MLflow server.

Three runs of one compiled package, as a recurring run would make them:
1. first data, a short training: every step runs; the store is empty, so the model is the
   first version, pushed to s3:// and registered;
2. images added to the dataset under the same root, a longer training: the dataset's
   fingerprint changes, so the ExampleGen reads it again and everything after it reruns; the
   better model becomes version 2;
3. the same data, a one-step training: the data steps come from KFP's cache; the worse model is
   refused against version 2, and neither the store nor the registry changes.
"""

import io
import json
import os

import pytest
import yaml

from litedet.pipeline import configs
from litedet.pipeline import kubeflow_v2_runner as kv2
from tests import kfp_harness, kfp_pod
from tests.conftest import S3_KEYS

pytestmark = pytest.mark.slow

BUCKET = "mlpipeline"  # KFP's own bucket, as k8s/examples/kfp-standalone-config.yaml uses it
IMAGE = "registry.example.com/litedet:harness"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_NAME = "litedet-kfp-harness"
# The cluster's SeaweedFS, as the shipped overlay and example config name it; here the loopback
# S3 server stands in for it.
SEAWEEDFS = "seaweedfs.kubeflow:9000"
# Set in this process only: a pod must not see it.
HOST_ONLY = "LITEDET_HARNESS_HOST_ONLY"


def _upload(client, folder: str, prefix: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            key = prefix + "/" + os.path.relpath(path, folder)
            client.upload_file(path, BUCKET, key)


def _keys(client, prefix: str):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _versions(client):
    """Complete store versions: numbered folders holding a manifest."""
    return sorted(
        int(k.split("/")[2])
        for k in _keys(client, "harness/models/")
        if k.count("/") == 3 and k.endswith("/manifest.json")
    )


def _namespace(s3_url: str) -> kfp_harness.Namespace:
    """The `kubeflow` namespace of a standalone install with k8s/overlays/kfp-standalone applied:
    the overlay's kfp-launcher ConfigMap as shipped (SeaweedFS' address pointed at the loopback
    server), KFP's own artifact Secret, and a Secret only the pusher is given."""
    with open(os.path.join(REPO, "k8s/overlays/kfp-standalone/kfp-launcher.yaml")) as f:
        configmap = yaml.safe_load(f.read().replace(SEAWEEDFS, s3_url[len("http://") :]))
    return kfp_harness.Namespace(
        configmaps={configmap["metadata"]["name"]: configmap["data"]},
        secrets={
            "mlpipeline-minio-artifact": {
                "accesskey": S3_KEYS["AWS_ACCESS_KEY_ID"],
                "secretkey": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            },
            "litedet-registry": {"token": "registry-token"},
        },
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, s3_server, mlflow_server):
    from litedet.data import sample

    work = tmp_path_factory.mktemp("kfp-harness")
    client = s3_server["client"]
    client.create_bucket(Bucket=BUCKET)
    data = str(work / "data")
    sample.generate(data, num_train=24, num_eval=8, seed=3)
    _upload(client, data, "harness/datasets/shapes")
    # The shipped standalone example configuration, with the test's dataset, model and store.
    # Beam keeps the compiled default: the DirectRunner's worker processes, reading and writing
    # s3:// themselves.
    settings = [
        'dataset={"root": "s3://%s/harness/datasets/shapes", "format": "coco", "sources": '
        '{"train": "annotations/instances_train.json", "eval": "annotations/instances_eval.json"}}'
        % BUCKET,
        "evaluation.num_classes=5",
        "transform.image_size=128",
        "training.batch_size=8",
        "training.checkpoint_every_steps=100",
        "training.augment=false",
        "training.backbone_weights=none",
        'tflite.formats=["float32","int8"]',
        "tflite.num_calibration_images=8",
        "evaluation.max_tflite_map_drop=1.0",
        f"push.destination=s3://{BUCKET}/harness/models",
        f"push.model_name={MODEL_NAME}",
        # The loopback MLflow server is plain http, and the pusher has a token to send.
        'push.registry={"kind": "mlflow", "tracking_uri": "%s", "retries": 2, '
        '"allow_insecure_http": true}' % mlflow_server["url"],
        'kubeflow.env={"AWS_ENDPOINT_URL": "%s", "AWS_REGION": "us-east-1"}' % s3_server["url"],
        'kubeflow.step_secret_env={"LitedetPusher": '
        '{"MLFLOW_TRACKING_TOKEN": "litedet-registry/token"}}',
    ]
    config = configs.load_config(
        os.path.join(REPO, "k8s/examples/kfp-standalone-config.yaml"), settings
    )
    package = str(work / "litedet-kfp.yaml")
    # As a user compiles it: the image's paths (/opt/litedet), the example's root.
    kv2.compile_pipeline(config, package, IMAGE, "s3://mlpipeline/v2/artifacts")
    harness = kfp_harness.Harness(
        package,
        str(work / "harness"),
        namespace=_namespace(s3_server["url"]),
        image=kfp_pod.PodImage.from_dockerfile(os.path.join(REPO, "Dockerfile")),
    )
    results = {"harness": harness, "client": client, "registry": mlflow_server, "package": package}
    marker = pytest.MonkeyPatch()
    marker.setenv(HOST_ONLY, "1")
    try:
        # Runs made as the KFP UI makes them: no root named, so the namespace's.
        results["first"] = harness.run(None, {"train_steps": 20, "min_map50": 0.0})
        results["store_after_first"] = _versions(client)
        # New images under the same root: more training images, the annotation file rewritten.
        sample.generate(data, num_train=40, num_eval=8, seed=3)
        _upload(client, data, "harness/datasets/shapes")
        results["second"] = harness.run(None, {"train_steps": 300, "min_map50": 0.0})
        results["store_after_second"] = _versions(client)
        results["third"] = harness.run(None, {"train_steps": 1, "min_map50": 0.0})
        results["store_after_third"] = _versions(client)
    finally:
        marker.undo()
    return results


def _gate(runs, run):
    uri = runs[run]["tasks"]["ModelGate"]["outputs"]["blessing"] + "/gate.json"
    bucket, _, key = uri[len("s3://") :].partition("/")
    body = runs["client"].get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(body)


def test_the_first_run_executes_every_step_and_pushes_version_one(runs):
    first = runs["first"]["tasks"]
    assert {name: t["state"] for name, t in first.items()} == {name: "ran" for name in first}
    gate = _gate(runs, "first")
    assert gate["blessed"], gate["reasons"]
    assert gate["baseline"]["version"] == 0  # an empty store: a first model
    assert runs["store_after_first"] == [1]


def test_changed_data_under_the_same_root_is_read_again_and_retrains(runs):
    first, second = runs["first"]["tasks"], runs["second"]["tasks"]
    assert (
        second["DatasetFingerprint"]["parameters"]["fingerprint"]
        != first["DatasetFingerprint"]["parameters"]["fingerprint"]
    )
    for step in ("DetectionExampleGen", "Transform", "Trainer", "ModelGate", "LitedetPusher"):
        assert second[step]["state"] == "ran", step
    gate = _gate(runs, "second")
    assert gate["blessed"], gate["reasons"]
    assert gate["baseline"]["version"] == 1
    assert gate["formats"]["saved_model"]["map50"] >= gate["baseline_map50"]
    assert runs["store_after_second"] == [1, 2]


def test_an_unchanged_dataset_is_a_cache_hit_and_a_worse_model_is_refused(runs):
    third = runs["third"]["tasks"]
    for step in ("DetectionExampleGen", "StatisticsGen", "SchemaImporter", "Transform"):
        assert third[step]["state"] == "cached", step
    for step in ("DatasetFingerprint", "Trainer", "ModelGate", "LitedetPusher"):
        assert third[step]["state"] == "ran", step
    gate = _gate(runs, "third")
    assert not gate["blessed"]
    assert gate["baseline"]["version"] == 2
    assert any("regression against the latest pushed model" in r for r in gate["reasons"])
    assert runs["store_after_third"] == [1, 2]


def test_pushed_versions_are_registered_and_the_refused_one_is_not(runs):
    from tests import mlflow_server

    registry = runs["registry"]
    versions = mlflow_server.registered_versions(registry, MODEL_NAME)
    assert len(versions) == 2
    stores = sorted(
        mlflow_server.read_back(registry, MODEL_NAME, v)["tags"]["litedet.store_uri"]
        for v in versions
    )
    assert stores == [f"s3://{BUCKET}/harness/models/1", f"s3://{BUCKET}/harness/models/2"]


def test_the_run_page_artifacts_are_one_file_each_where_the_ui_reads_them(runs):
    from PIL import Image

    client = runs["client"]
    tasks = runs["second"]["tasks"]
    report_uri = tasks["RunReport"]["outputs"]["report"]
    bucket, _, key = report_uri[len("s3://") :].partition("/")
    page = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "version 2" in page
    state = runs["harness"].state["artifacts"]
    titles = {a["title"] for a in state.values()}
    assert {"system.Metrics", "system.HTML", "tfx.ModelRun"} <= titles
    metrics = [a for a in state.values() if a["title"] == "system.Metrics"][-1]
    assert metrics["custom"]["display_name"] == "metrics"
    assert 0.0 <= metrics["custom"]["map50"] <= 1.0
    # The pushed int8 model is a real TFLite file in the store.
    tflite = client.get_object(Bucket=BUCKET, Key="harness/models/2/model_int8.tflite")[
        "Body"
    ].read()
    assert tflite[4:8] == b"TFL3"
    assert Image.open(
        io.BytesIO(
            client.get_object(
                Bucket=BUCKET,
                Key="harness/datasets/shapes/images/"
                + _keys(client, "harness/datasets/shapes/images/")[0].rsplit("/", 1)[1],
            )["Body"].read()
        )
    )


def test_runs_that_name_no_root_get_the_namespace_root(runs):
    for run in ("first", "second", "third"):
        assert runs[run]["root"] == "s3://mlpipeline/v2/artifacts"
        for task in runs[run]["tasks"].values():
            for uri in task["outputs"].values():
                assert uri.startswith("s3://mlpipeline/v2/artifacts/"), uri


def test_each_step_gets_only_the_pods_environment_and_its_own_secrets(runs):
    tasks = runs["first"]["tasks"]
    for name, task in tasks.items():
        assert HOST_ONLY not in task["env"], name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TF_USE_LEGACY_KERAS"} <= set(
            task["env"]
        ), name
        # kubeflow.step_secret_env: the registry's token reaches the pusher and no other step.
        assert ("MLFLOW_TRACKING_TOKEN" in task["env"]) == (name == "LitedetPusher"), name


def test_beam_steps_ran_in_worker_processes_with_the_compiled_arguments(runs):
    from litedet.pipeline.kubeflow_v2_runner import load_package

    spec, _ = load_package(runs["package"])
    executors = spec["deploymentSpec"]["executors"]
    for step in ("DetectionExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = " ".join(executors[f"{step}_executor"]["container"]["args"])
        assert "--direct_running_mode=multi_processing" in args, step
        assert "--direct_num_workers=2" in args, step
        assert "--beam_plugins=litedet.components.object_storage" in args, step
        assert runs["first"]["tasks"][step]["state"] == "ran"


def test_a_missing_secret_fails_the_step_as_the_kubelet_does(runs):
    harness = runs["harness"]
    shipped = harness.namespace
    harness.namespace = kfp_harness.Namespace(configmaps=shipped.configmaps)
    try:
        with pytest.raises(kfp_harness.StepFailed, match='secret "litedet-registry" not found'):
            harness._secret_env("LitedetPusher_executor", "LitedetPusher")
        with pytest.raises(kfp_harness.StepFailed, match='"mlpipeline-minio-artifact" not found'):
            harness.namespace.s3_session("mlpipeline", "v2/artifacts", "DetectionExampleGen")
    finally:
        harness.namespace = shipped
