"""The compiled pipeline against what the open-source KFP v2 backend executes
(pipeline/kfp_spec.py), and the step entrypoint that mends what its driver hands a step
(pipeline/kfp_entrypoint.py). The harness test (test_kfp_harness.py) runs the whole thing."""

import copy
import json

import pytest
import yaml

from litedet.pipeline import configs, kfp_entrypoint, kfp_spec
from litedet.pipeline import kubeflow_v2_runner as kv2

IMAGE = "registry.example.com/litedet:test"
ROOT = "s3://litedet/pipeline-root"
DATASET = {
    "root": "s3://litedet/datasets/shapes",
    "format": "coco",
    "sources": {
        "train": "annotations/instances_train.json",
        "eval": "annotations/instances_eval.json",
    },
}
SETTINGS = [
    f"dataset={json.dumps(DATASET)}",
    "evaluation.num_classes=5",
    'kubeflow.env={"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000"}',
    'kubeflow.secret_env={"AWS_ACCESS_KEY_ID": "litedet-s3/accesskey", '
    '"AWS_SECRET_ACCESS_KEY": "litedet-s3/secretkey"}',
    'kubeflow.step_secret_env={"LitedetPusher": {"AWS_ACCESS_KEY_ID": "store-writer/id", '
    '"AWS_SECRET_ACCESS_KEY": "store-writer/key"}}',
    "kubeflow.trainer_accelerator=nvidia.com/gpu",
    'kubeflow.trainer_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}',
    'kubeflow.trainer_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", '
    '"effect": "NoSchedule"}]',
]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("kfp") / "litedet-kfp.yaml"
    kv2.compile_pipeline(configs.load_config(None, SETTINGS), str(path), IMAGE, ROOT)
    return path


def test_the_compiled_package_conforms(package):
    spec, platform = kv2.load_package(str(package))
    assert kfp_spec.problems(spec, platform) == []
    assert len([d for d in yaml.safe_load_all(package.read_text()) if d]) == 2


def test_tfxs_own_output_does_not_conform_and_each_rule_names_its_task(package):
    spec, platform = kv2.load_package(str(package))
    broken = copy.deepcopy(spec)
    executors = broken["deploymentSpec"]["executors"]
    executors["Trainer_executor"]["container"]["command"] = [
        "python",
        "-m",
        kfp_spec.TFX_ENTRYPOINT_MODULE,
    ]
    executors["Trainer_executor"]["container"]["lifecycle"] = {"preCacheCheck": {}}
    executors["Evaluator_executor"] = {"resolver": {"outputArtifactQueries": {}}}
    tasks = broken["root"]["dag"]["tasks"]
    tasks["Latest_model"] = copy.deepcopy(tasks["Evaluator"])
    tasks["DetectionExampleGen"]["inputs"]["parameters"]["input_fingerprint"][
        "taskOutputParameter"
    ]["producerTask"] = "DatasetFingerprint_task"
    del broken["root"]["inputDefinitions"]["parameters"]["alpha"]["defaultValue"]
    broken["root"]["inputDefinitions"]["parameters"]["alpha"]["isOptional"] = False
    executors["Trainer_executor"]["container"]["resources"]["accelerator"] = {
        "type": "NVIDIA_TESLA_T4",
        "count": "1",
    }
    found = "\n".join(kfp_spec.problems(broken, platform))
    for expected in (
        "executor Trainer_executor: command",
        "executor Trainer_executor: lifecycle hooks",
        "executor Evaluator_executor: kind 'resolver'",
        "task 'Latest_model': Argo needs task names",
        "reads DatasetFingerprint_task.fingerprint, which no task produces",
        "run-time parameter alpha: no default",
        "accelerator 'NVIDIA_TESLA_T4' is not a Kubernetes resource name",
    ):
        assert expected in found, (expected, found)


def test_a_real_tfx_resolver_is_refused(tmp_path):
    """What TFX compiles a latest-blessed-model resolver into: executors of kind resolver."""
    from tfx import v1 as tfx

    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed")
    definition = tfx.dsl.Pipeline(
        pipeline_name="resolver-only", pipeline_root=ROOT, components=[resolver]
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=IMAGE, use_pipeline_spec_2_1=True
        ),
        output_dir=str(tmp_path),
        output_filename="p.json",
    )
    spec = runner.run(definition, write_out=False)["pipelineSpec"]
    found = "\n".join(kfp_spec.problems(spec))
    assert "kind 'resolver' is not run by the open-source backend" in found
    assert "latest_blessed" in found  # its task names carry the "_" Argo refuses


def test_steps_get_their_environment_secrets_and_the_trainer_its_placement(package):
    spec, platform = kv2.load_package(str(package))
    executors = spec["deploymentSpec"]["executors"]
    platform_executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for label, executor in executors.items():
        env = {e["name"]: e["value"] for e in executor["container"]["env"]}
        expected_env = {"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000"}
        if label == "Trainer_executor":  # checks at its start that TensorFlow sees the GPU
            expected_env[kfp_spec.ACCELERATOR_ENV] = "nvidia.com/gpu"
        assert env == expected_env
        [secret] = platform_executors[label]["secretAsEnv"]
        # The store-writer credential reaches the pusher only; it replaces the shared one there.
        expected = "store-writer" if label == "LitedetPusher_executor" else "litedet-s3"
        assert secret["secretName"] == expected
        keys = ("id", "key") if expected == "store-writer" else ("accesskey", "secretkey")
        assert {p["envVar"]: p["secretKey"] for p in secret["keyToEnv"]} == dict(
            zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), keys)
        )
    trainer = platform_executors["Trainer_executor"]
    assert trainer["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}
    assert trainer["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    accelerator = executors["Trainer_executor"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
    assert "nodeSelector" not in platform_executors["Transform_executor"]
    # No secret value anywhere in the package, only the Secret's name and keys.
    assert "secretkey" in package.read_text() and "minio123" not in package.read_text()
    # Beam's worker processes import the storage module first (s3:// inside them too).
    args = executors["Transform_executor"]["container"]["args"]
    assert "--beam_plugins=litedet.components.object_storage" in args


def test_a_step_secret_for_a_step_that_does_not_exist_is_refused(package):
    spec, _ = kv2.load_package(str(package))
    with pytest.raises(ValueError, match="step_secret_env for 'Pusher': no such container task"):
        kfp_spec.adapt(spec, step_secret_env={"Pusher": {"AWS_ACCESS_KEY_ID": "w/id"}})


def test_secrets_in_the_plain_environment_are_refused():
    with pytest.raises(configs.ConfigError, match="kubeflow.env.AWS_SECRET_ACCESS_KEY: looks"):
        configs.load_config(None, ['kubeflow.env={"AWS_SECRET_ACCESS_KEY": "minio123"}'])
    with pytest.raises(configs.ConfigError, match="must be SECRET_NAME/KEY"):
        configs.load_config(None, ['kubeflow.secret_env={"AWS_ACCESS_KEY_ID": "just-a-value"}'])
    with pytest.raises(configs.ConfigError, match="also in kubeflow.secret_env"):
        configs.load_config(
            None,
            [
                'kubeflow.secret_env={"AWS_ACCESS_KEY_ID": "shared/id"}',
                'kubeflow.step_secret_env={"LitedetPusher": {"AWS_ACCESS_KEY_ID": "shared/w"}}',
            ],
        )
    with pytest.raises(configs.ConfigError, match="step_secret_env.LitedetPusher.X: 'oops'"):
        configs.load_config(None, ['kubeflow.step_secret_env={"LitedetPusher": {"X": "oops"}}'])


# --- the entrypoint -----------------------------------------------------------------------------


def _inputs_spec(package, task):
    spec, _ = kv2.load_package(str(package))
    component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    return spec, component


def test_the_entrypoint_types_untyped_inputs_and_drops_executor_logs(package):
    spec, component = _inputs_spec(package, "ModelGate")
    executor_input = {
        "inputs": {
            "artifacts": {
                key: {
                    "artifacts": [
                        {
                            "name": "17",
                            "uri": f"s3://b/{key}",
                            "type": {"instanceSchema": ""},
                            "metadata": {},
                        }
                    ]
                }
                for key in component["inputDefinitions"]["artifacts"]
            }
        },
        "outputs": {
            "artifacts": {
                **{
                    key: {
                        "artifacts": [
                            {"name": key, "uri": f"s3://b/out/{key}", "type": d["artifactType"]}
                        ]
                    }
                    for key, d in component["outputDefinitions"]["artifacts"].items()
                },
                "executor-logs": {
                    "artifacts": [
                        {"uri": "s3://b/logs", "type": {"schemaTitle": "system.Artifact"}}
                    ]
                },
            }
        },
    }
    mended = kfp_entrypoint.mend_executor_input(executor_input, component["inputDefinitions"])
    inputs = mended["inputs"]["artifacts"]
    assert inputs["model"]["artifacts"][0]["type"] == {
        "schemaTitle": "tfx.types.standard_artifacts.Model"
    }
    assert inputs["tflite_models"]["artifacts"][0]["type"] == {
        "schemaTitle": "litedet.components.artifacts.TFLiteModels"
    }
    outputs = mended["outputs"]["artifacts"]
    assert set(outputs) == {"blessing", "metrics"}
    assert outputs["metrics"]["artifacts"][0]["type"] == {
        "schemaTitle": "litedet.components.artifacts.KfpMetrics"
    }
    # TFX's own parser rebuilds every artifact from the mended input.
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as utils

    parsed = pipeline_spec_pb2.ExecutorInput()
    json_format.ParseDict(mended, parsed)
    rebuilt = utils.parse_raw_artifact_dict(parsed.inputs.artifacts)
    assert type(rebuilt["tflite_models"][0]).TYPE_NAME == "litedet.TFLiteModels"
    # Unmended, TFX's parser fails on the empty type: the reason the entrypoint exists.
    raw = pipeline_spec_pb2.ExecutorInput()
    json_format.ParseDict(executor_input, raw)
    with pytest.raises(AttributeError):  # yaml.safe_load("") is None; None.get(...)
        utils.parse_raw_artifact_dict(raw.inputs.artifacts)
