"""Multi-worker training on Kubeflow (components/trainer/tfjob.py): the TFJob the Trainer step
creates, checked against the Training Operator's published CRD and webhook, and the launcher
driven through the real `kubernetes` client against a loopback Kubernetes API that plays the
operator (tests/tfjob_cluster.py): its processes are the workers. The fast tests replace the
workers' command with a few lines of Python; the slow one trains for real: run_fn on two workers
under MultiWorkerMirroredStrategy, with TF_CONFIG as the operator sets it, artifacts on a
loopback S3 server (docs/distributed-training.md). No real cluster or operator is run here."""

from __future__ import annotations

import copy
import json
import os
import re
import types

import pytest

from litedet.components.trainer import tfjob
from litedet.components.trainer.config import WorkersConfig
from tests import tfjob_cluster
from tests.crd_schema import custom_object_problems

NAMESPACE = "kubeflow"
IMAGE = "registry.example.com/litedet:0.2.0"
SECRETS = {"mlpipeline-minio-artifact": {"accesskey": "key-id", "secretkey": "key-secret"}}
# The step's environment as KFP's driver builds the Trainer's pod: kubeflow.env as values,
# kubeflow.secret_env as secretKeyRef (PlatformSpec secretAsEnv), and KFP's own.
STEP_ENV = [
    {"name": "AWS_ENDPOINT_URL", "value": "http://seaweedfs.kubeflow:9000"},
    {"name": "AWS_REGION", "value": "us-east-1"},
    {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "accesskey"}},
    },
    {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}},
    },
    {"name": "KFP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
]


def _fn_args(root="s3://mlpipeline/v2/artifacts/litedet/run-1", **training):
    return types.SimpleNamespace(
        train_files=[f"{root}/DetectionExampleGen/examples/Split-train/*"],
        eval_files=[f"{root}/DetectionExampleGen/examples/Split-eval/*"],
        transform_output=f"{root}/Transform/transform_graph",
        transform_graph_path=f"{root}/Transform/transform_graph",
        serving_model_dir=f"{root}/Trainer/model/Format-Serving",
        eval_model_dir=f"{root}/Trainer/model/Format-TFMA",
        model_run_dir=f"{root}/Trainer/model_run",
        schema_path=f"{root}/SchemaImporter/schema/schema.pbtxt",
        hyperparameters={"values": {"train_steps": 4, **training}},
        custom_config={"code_fingerprint": "abc", tfjob.CUSTOM_CONFIG_KEY: {"count": 2}},
        data_accessor=object(),  # TFX's, not JSON: never sent
    )


def _step_pod(cluster=None):
    if cluster is not None:
        return cluster.add_step_pod("litedet-trainer-pod", IMAGE, STEP_ENV, "pipeline-runner")
    return tfjob_cluster.Cluster(NAMESPACE, "/nonexistent", SECRETS).add_step_pod(
        "litedet-trainer-pod", IMAGE, STEP_ENV, "pipeline-runner"
    )


def _body(workers):
    pod = _step_pod()
    args = tfjob.worker_fn_args(_fn_args())
    return tfjob.tfjob_body(
        tfjob.job_name(pod["metadata"]["uid"]), NAMESPACE, pod, args, workers
    ), pod


@pytest.mark.parametrize(
    "workers",
    [
        WorkersConfig(count=2),
        WorkersConfig(
            count=4,
            cpu=8,
            memory_gb=30.5,
            gpu=2,
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            timeout_s=7200,
            backoff_limit=1,
        ),
    ],
    ids=["cpu", "gpu"],
)
def test_the_tfjob_is_what_the_crd_and_the_operators_webhook_accept(workers):
    body, pod = _body(workers)
    assert custom_object_problems(body) == []
    assert tfjob_cluster.webhook_problems(body) == []
    worker = body["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == workers.count and worker["restartPolicy"] == "Never"
    [container] = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow" and container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "litedet.components.trainer.tfjob_worker"]
    assert json.loads(container["args"][0])["serving_model_dir"].startswith("s3://")
    assert container["resources"]["requests"] == container["resources"]["limits"]
    limits = container["resources"]["limits"]
    assert limits["cpu"] == f"{int(workers.cpu * 1000)}m"
    assert (limits.get("nvidia.com/gpu") or "0") == str(workers.gpu)
    # The step's environment as the pod got it: Secrets stay references, KFP's own is left out,
    # TF_CONFIG is the operator's to set.
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secretkey"
    assert "KFP_POD_NAME" not in env and "TF_CONFIG" not in env
    assert ("LITEDET_REQUIRED_ACCELERATOR" in env) == bool(workers.gpu)
    spec = worker["template"]["spec"]
    assert spec["serviceAccountName"] == "pipeline-runner"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == pod["spec"]["securityContext"]
    assert spec.get("nodeSelector", {}) == workers.node_selector
    policy = body["spec"]["runPolicy"]
    assert policy["activeDeadlineSeconds"] == workers.timeout_s
    assert policy["backoffLimit"] == workers.backoff_limit
    assert policy["cleanPodPolicy"] == "Running"
    [owner] = body["metadata"]["ownerReferences"]
    assert owner["uid"] == pod["metadata"]["uid"]
    # `<job>-worker-<i>` names the pods and Services: a DNS label.
    assert len(f"{body['metadata']['name']}-worker-{workers.count - 1}") <= 63


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda b: b["spec"].update(workers=2), "'workers' was unexpected"),
        (lambda b: b["spec"]["tfReplicaSpecs"]["Worker"].update(replicas="2"), "not of type"),
        (lambda b: b["spec"]["runPolicy"].update(backoffLimit=-1.5), "not of type"),
        (
            lambda b: b["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0][
                "resources"
            ]["limits"].update(cpu="four"),
            "does not match",
        ),
        (
            lambda b: b["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][
                0
            ].pop("name"),
            "'name' is a required property",
        ),
        (lambda b: b["metadata"]["ownerReferences"][0].pop("uid"), "metadata"),
    ],
)
def test_the_validation_refuses_what_the_api_server_refuses(change, expected):
    body, _ = _body(WorkersConfig(count=2))
    broken = copy.deepcopy(body)
    change(broken)
    problems = custom_object_problems(broken)
    assert problems and expected in " ".join(problems), problems


def test_the_operators_tf_config_makes_worker_0_the_chief_of_a_multi_worker_strategy(
    monkeypatch,
):
    from litedet.components.trainer import module

    body, _ = _body(WorkersConfig(count=3))
    name = body["metadata"]["name"]
    for index in range(3):
        tf_config = tfjob_cluster.operator_tf_config(body, "Worker", index)
        assert tf_config["cluster"] == {
            "worker": [f"{name}-worker-{i}.{NAMESPACE}.svc:2222" for i in range(3)]
        }
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
        assert module.is_chief() == (index == 0)
        assert module._task_name() == f"worker-{index}"
    # One replica: the operator sets no TF_CONFIG (isDistributed), the step would train alone.
    single = copy.deepcopy(body)
    single["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = 1
    assert tfjob_cluster.operator_tf_config(single, "Worker", 0) is None


def test_artifacts_the_workers_cannot_open_are_refused_before_anything_is_created():
    with pytest.raises(tfjob.TFJobError, match="object storage"):
        tfjob.worker_fn_args(_fn_args(root="/tmp/pipeline_root"))


@pytest.fixture
def cluster(tmp_path):
    with tfjob_cluster.Cluster(NAMESPACE, str(tmp_path), SECRETS) as running:
        yield running


def test_a_failed_worker_fails_the_step_naming_it_with_its_last_log_lines(cluster):
    cluster.commands = {
        0: "import time; print('worker 0 waits for its peer', flush=True); time.sleep(120)",
        1: "import sys\nfor i in range(40): print(f'line {i}')\n"
        "print('ValueError: the examples are gone', flush=True); sys.exit(3)",
    }
    lines = []
    pod = _step_pod(cluster)
    launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=0.2, log=lines.append)
    with pytest.raises(tfjob.TFJobError) as failed:
        launcher.run(_fn_args(), WorkersConfig(count=2), pod["metadata"]["name"])
    message = str(failed.value)
    [name] = cluster.deleted  # deleted on the way out
    assert f"TFJob {NAMESPACE}/{name} failed" in message
    assert "has failed because 1 Worker replica(s) failed" in message  # the operator's words
    assert f"worker-1 (pod {name}-worker-1) exited with code 3" in message
    assert message.endswith("ValueError: the examples are gone")
    assert "line 11" in message and "line 10\n" not in message  # the last 30 lines
    assert not cluster.jobs and not [p for p in cluster.processes.values() if p.poll() is None]
    # The workers' logs went into the step's log as they came, each line with its replica.
    assert "[worker-1] ValueError: the examples are gone" in lines
    assert cluster.refused == []
    # Exactly the calls k8s/components/tfjob-launcher grants (tests/test_k8s.py checks the Role).
    from tests.test_k8s import TFJOB_LAUNCHER_RULES

    granted = {(g, r, v) for g, r, verbs, _ in TFJOB_LAUNCHER_RULES for v in verbs}
    assert tfjob_cluster.rbac_requests(cluster.requests) == granted


def test_a_job_that_outlives_the_timeout_is_deleted_and_fails_the_step(cluster):
    cluster.commands = {i: "import time; time.sleep(120)" for i in range(2)}
    pod = _step_pod(cluster)
    launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=0.2, log=lambda _: None)
    with pytest.raises(tfjob.TFJobError, match="timeout_s=1 s; deleted"):
        launcher.run(_fn_args(), WorkersConfig(count=2, timeout_s=1), pod["metadata"]["name"])
    assert len(cluster.deleted) == 1 and not cluster.jobs
    assert all(p.poll() is not None for p in cluster.processes.values())
    # What was created is exactly what the CRD accepts, with the operator's TF_CONFIG set.
    [created] = cluster.created
    assert custom_object_problems(created) == []
    assert sorted(cluster.tf_configs) == [f"{cluster.deleted[0]}-worker-{i}" for i in range(2)]


def test_a_stopped_step_deletes_the_job(cluster):
    """SIGTERM (the step's pod stopped, a cancelled run) unwinds through the deletion."""
    import signal
    import threading

    cluster.commands = {i: "import time; time.sleep(120)" for i in range(2)}
    pod = _step_pod(cluster)
    launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=0.2, log=lambda _: None)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(tfjob.TFJobError, match="the step was stopped"):
            launcher.run(_fn_args(), WorkersConfig(count=2), pod["metadata"]["name"])
    finally:
        timer.cancel()
    assert len(cluster.deleted) == 1 and not cluster.jobs
    assert all(p.poll() is not None for p in cluster.processes.values())
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_trainer_executor_launches_from_its_own_pod_and_checks_the_model(cluster, monkeypatch):
    """tfjob_executor.Executor: TFX's fn_args to the launcher, in the pod named by HOSTNAME;
    the model checked after success. (TFX's _GetFnArgs and the in-cluster configuration are
    replaced: they need a TFX execution and a pod's service account files.)"""
    from litedet.components.trainer import tfjob_executor

    cluster.commands = {i: "print('trained')" for i in range(2)}
    pod = _step_pod(cluster)
    monkeypatch.setenv("HOSTNAME", pod["metadata"]["name"])
    launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=0.2, log=lambda _: None)
    monkeypatch.setattr(tfjob.Launcher, "in_cluster", classmethod(lambda cls: launcher))
    fn_args = _fn_args()
    monkeypatch.setattr(tfjob_executor.Executor, "_GetFnArgs", lambda self, *a: fn_args)
    checked = []
    monkeypatch.setattr(tfjob, "check_model_written", checked.append)
    tfjob_executor.Executor().Do({}, {}, {})
    [created] = cluster.created
    assert created["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    assert cluster.deleted == [created["metadata"]["name"]]
    assert checked == [fn_args.serving_model_dir]


@pytest.mark.parametrize(
    "refused, expected",
    [
        ({("POST", "tfjobs"): 404}, "no TFJob kind (kubeflow.org/v1): install the Kubeflow"),
        ({("POST", "tfjobs"): 403}, "may not (tfjobs); grant what"),
        ({("GET", "pods"): 403}, "could not read its own pod litedet-trainer-pod"),
    ],
    ids=["no-operator", "no-rbac-tfjobs", "no-rbac-pods"],
)
def test_a_cluster_without_the_operator_or_the_grant_fails_in_one_line(cluster, refused, expected):
    cluster.refuse = refused
    pod = _step_pod(cluster)
    launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=0.2, log=lambda _: None)
    with pytest.raises(tfjob.TFJobError, match=re.escape(expected)) as failed:
        launcher.run(_fn_args(), WorkersConfig(count=2), pod["metadata"]["name"])
    assert "\n" not in str(failed.value) and not cluster.processes


def test_a_few_failed_polls_do_not_fail_the_training(cluster):
    cluster.commands = {0: "import time; time.sleep(1); print('done')", 1: "print('done')"}
    cluster.unavailable = {("GET", "tfjobs"): tfjob.TRANSIENT_ERRORS - 1}
    pod = _step_pod(cluster)
    lines = []
    launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=0.1, log=lines.append)
    launcher.run(_fn_args(), WorkersConfig(count=2), pod["metadata"]["name"])
    assert sum("retrying" in line for line in lines) == tfjob.TRANSIENT_ERRORS - 1
    assert lines[-1].endswith(": succeeded") and len(cluster.deleted) == 1


def test_a_body_the_crd_refuses_is_refused_through_the_client(cluster):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    body, _ = _body(WorkersConfig(count=2))
    body["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "x"
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(cluster.api_client()).create_namespaced_custom_object(
            "kubeflow.org", "v1", NAMESPACE, "tfjobs", body
        )
    assert refused.value.status == 422 and "tensorflow" in refused.value.body
    assert not cluster.processes


def test_only_a_multi_worker_setting_changes_the_compiled_trainer():
    from tfx import types as tfx_types
    from tfx.components.trainer import executor as tfx_trainer
    from tfx.types import standard_artifacts as artifacts

    from litedet.components.trainer import component, tfjob_executor
    from litedet.pipeline import configs

    config = configs.load_config(None, [])
    inputs = [
        tfx_types.Channel(type=kind)
        for kind in (artifacts.Examples, artifacts.TransformGraph, artifacts.Schema)
    ]

    def trainer(workers):
        return component.create(config, {}, *inputs, workers=workers)[-1]

    for workers in (None, WorkersConfig(count=1)):
        plain = trainer(workers)
        assert plain.executor_spec.executor_class is tfx_trainer.GenericExecutor
        assert tfjob.CUSTOM_CONFIG_KEY not in json.loads(plain.exec_properties["custom_config"])
    launched = trainer(WorkersConfig(count=3, gpu=1))
    assert launched.executor_spec.executor_class is tfjob_executor.Executor
    carried = json.loads(launched.exec_properties["custom_config"])[tfjob.CUSTOM_CONFIG_KEY]
    assert tfjob.workers_setting({tfjob.CUSTOM_CONFIG_KEY: carried}) == WorkersConfig(
        count=3, gpu=1
    )


def test_a_multi_worker_pipeline_compiles_for_the_open_source_backend(tmp_path):
    """Compiled with workers: the Trainer runs the launcher executor in a small pod, the setting
    rides in its custom_config, and the package passes the backend's conformance rules."""
    from litedet.pipeline import configs
    from litedet.pipeline import kubeflow_v2_runner as kv2

    config = configs.load_config(
        None,
        [
            'dataset={"root": "gs://b/d", "format": "coco", "sources": {"train": "t.json"}}',
            "evaluation.num_classes=3",
            "kubeflow.trainer_workers.count=3",
            "kubeflow.trainer_workers.gpu=1",
        ],
    )
    path = kv2.compile_pipeline(config, str(tmp_path / "p.yaml"), IMAGE, "gs://b/root")
    spec = kv2.load_pipeline_spec(path)
    text = json.dumps(spec["deploymentSpec"]["executors"])
    assert "litedet.components.trainer.tfjob_executor.Executor" in text
    [trainer] = [
        e["container"] for n, e in spec["deploymentSpec"]["executors"].items() if "Trainer" in n
    ]
    assert trainer["resources"]["cpuLimit"] == 1.0, trainer["resources"]
    assert tfjob.CUSTOM_CONFIG_KEY in json.dumps(spec["root"])


def test_the_worker_runs_run_fn_with_the_steps_fn_args(monkeypatch):
    from litedet.components.trainer import module, tfjob_worker

    seen = []
    monkeypatch.setattr(module, "run_fn", seen.append)
    monkeypatch.delenv("LITEDET_REQUIRED_ACCELERATOR", raising=False)
    args = tfjob.worker_fn_args(_fn_args())
    tfjob_worker.main([json.dumps(args)])
    [fn_args] = seen
    assert vars(fn_args) == args
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"


# --- the real thing: run_fn on two workers, launched by the step --------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A few sample images through the project's ExampleGen and Transform code (128 px): the
    examples and the transform graph a Trainer gets (as tests/small_model.py makes them)."""
    from litedet.data import convert
    from litedet.data import sample as sample_data
    from litedet.pipeline import configs, local_runner
    from tests import small_model
    from tests.test_tflite import write_transform_graph

    root = tmp_path_factory.mktemp("tfjob_data")
    sample_data.generate(str(root / "data"), num_train=8, num_eval=4, seed=0)
    small_model.write_config(str(root / "config.yaml"), str(root / "data"), str(root / "out"))
    config = configs.load_config(str(root / "config.yaml"), [])
    convert.convert(
        local_runner.resolve_dataset(config), str(root / "run"), ["--direct_running_mode=in_memory"]
    )
    write_transform_graph(
        str(root / "run" / "examples" / "Split-train" / "*"), str(root / "run" / "transform_graph")
    )
    return root / "run"


def _upload(client, bucket, local, prefix):
    for folder, _, files in os.walk(local):
        for file in files:
            path = os.path.join(folder, file)
            client.upload_file(path, bucket, f"{prefix}/{os.path.relpath(path, local)}")


def _download(client, bucket, prefix, local):
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    for item in listed.get("Contents", []):
        path = os.path.join(local, os.path.relpath(item["Key"], prefix))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        client.download_file(bucket, item["Key"], path)
    return local


@pytest.mark.slow
def test_the_step_trains_on_two_workers_of_a_tfjob_into_one_model(tiny_data, s3_server, tmp_path):
    """The launcher creates the TFJob through the kubernetes client; the loopback operator starts
    two processes of the worker's command with the step's environment (the S3 keys only through
    the Secret references) and the operator's TF_CONFIG; run_fn trains under
    MultiWorkerMirroredStrategy with artifacts on S3; worker 0 writes the model. Both workers
    end with the same weights, which only synchronized training gives (this replaces the
    two-process test that tests/test_pipeline_local.py had)."""
    import numpy as np
    import tensorflow as tf

    client, bucket = s3_server["client"], s3_server["bucket"]
    _upload(client, bucket, str(tiny_data), "run")
    root = f"s3://{bucket}/run"
    fn_args = types.SimpleNamespace(
        train_files=[f"{root}/examples/Split-train/*"],
        eval_files=[f"{root}/examples/Split-eval/*"],
        transform_output=f"{root}/transform_graph",
        serving_model_dir=f"{root}/Trainer/model/Format-Serving",
        model_run_dir=f"{root}/Trainer/model_run",
        custom_config={"code_fingerprint": "test"},
        hyperparameters={
            "values": {
                "train_steps": 4,
                "eval_steps": 1,
                "batch_size": 4,
                "alpha": 0.35,
                "checkpoint_every_steps": 2,
                "log_every_steps": 1,
                "backbone_weights": "none",
            }
        },
    )
    secrets = {
        "mlpipeline-minio-artifact": {
            "accesskey": s3_server["keys"]["AWS_ACCESS_KEY_ID"],
            "secretkey": s3_server["keys"]["AWS_SECRET_ACCESS_KEY"],
        }
    }
    env = [dict(e) for e in STEP_ENV]
    env[0]["value"] = s3_server["url"]
    with tfjob_cluster.Cluster(NAMESPACE, str(tmp_path), secrets) as cluster:
        pod = cluster.add_step_pod("litedet-trainer-pod", IMAGE, env, "pipeline-runner")
        lines = []
        launcher = tfjob.Launcher(cluster.api_client(), NAMESPACE, poll_s=1, log=lines.append)
        launcher.run(fn_args, WorkersConfig(count=2, timeout_s=600), "litedet-trainer-pod")
        [name] = cluster.deleted
        assert cluster.refused == [] and not cluster.jobs
        log = "\n".join(lines)
        assert f"TFJob {NAMESPACE}/{name}: succeeded" in log
        for index in range(2):
            assert f"[worker-{index}] Training step 4/4" in log, log[-3000:]
        assert cluster.tf_configs[f"{name}-worker-1"] == {
            "cluster": {"worker": [f"{name}-worker-{i}.{NAMESPACE}.svc:2222" for i in range(2)]},
            "task": {"type": "worker", "index": 1},
            "environment": "cloud",
        }
        assert pod["metadata"]["uid"].replace("-", "")[:10] in name
    chief = tf.saved_model.load(
        _download(client, bucket, "run/Trainer/model/Format-Serving", str(tmp_path / "chief"))
    )
    worker = tf.saved_model.load(
        _download(
            client,
            bucket,
            "run/Trainer/model_run/worker_export/worker-1",
            str(tmp_path / "worker"),
        )
    )
    chief_weights = {v.name: v.numpy() for v in chief.model_variables}
    worker_weights = {v.name: v.numpy() for v in worker.model_variables}
    assert chief_weights.keys() == worker_weights.keys()
    for key, value in chief_weights.items():
        np.testing.assert_allclose(value, worker_weights[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # One training record, the chief's.
    client.head_object(Bucket=bucket, Key="run/Trainer/model_run/training.json")
