"""What a step checks in its first second on a cluster, before any work: the GPU it was placed
for (pipeline/kfp_entrypoint.py, require_accelerator), a pipeline root TensorFlow can open
(check_artifact_uris), and ImageNet weights baked into the image for the run's alpha
(components/detection/weights.py, check_image_weights). No TFX import; TensorFlow only where a
real device listing is the point."""

import socket
import time

import pytest

from litedet.components.detection import weights
from litedet.pipeline import kfp_entrypoint, kfp_spec

# --- the accelerator -----------------------------------------------------------------------


def test_a_step_placed_on_a_gpu_fails_at_once_when_tensorflow_sees_none():
    environ = {kfp_spec.ACCELERATOR_ENV: "nvidia.com/gpu"}
    with pytest.raises(kfp_entrypoint.StepError) as error:
        kfp_entrypoint.require_accelerator(environ, list_gpus=lambda: [])
    message = str(error.value)
    assert "kubeflow.trainer_accelerator is 'nvidia.com/gpu'" in message
    assert "TENSORFLOW_VARIANT=gpu" in message and "\n" not in message
    kfp_entrypoint.require_accelerator(environ, list_gpus=lambda: ["/physical_device:GPU:0"])


def test_a_step_without_an_accelerator_checks_nothing():
    def must_not_list():
        raise AssertionError("listed devices although no accelerator was asked for")

    kfp_entrypoint.require_accelerator({}, list_gpus=must_not_list)


def test_the_check_uses_tensorflows_own_device_list():
    """On this machine (TensorFlow's CPU build, no GPU) the real listing finds none."""
    import tensorflow as tf

    environ = {kfp_spec.ACCELERATOR_ENV: "nvidia.com/gpu"}
    if tf.config.list_physical_devices("GPU"):
        kfp_entrypoint.require_accelerator(environ)  # a machine with a GPU: passes
    else:
        with pytest.raises(kfp_entrypoint.StepError, match="sees no GPU"):
            kfp_entrypoint.require_accelerator(environ)


def test_the_compiler_tells_only_the_placed_step_to_check():
    spec = {
        "root": {"dag": {"tasks": {"Trainer": {"componentRef": {"name": "comp-Trainer"}}}}},
        "components": {"comp-Trainer": {"executorLabel": "Trainer_executor"}},
        "deploymentSpec": {
            "executors": {
                "Trainer_executor": {"container": {"image": "i", "command": ["python"]}},
                "Transform_executor": {"container": {"image": "i", "command": ["python"]}},
            }
        },
    }
    adapted, _ = kfp_spec.adapt(
        spec, env={"A": "1"}, placement={"Trainer": {"accelerator": "nvidia.com/gpu"}}
    )
    executors = adapted["deploymentSpec"]["executors"]
    trainer = {e["name"]: e["value"] for e in executors["Trainer_executor"]["container"]["env"]}
    assert trainer == {"A": "1", kfp_spec.ACCELERATOR_ENV: "nvidia.com/gpu"}
    transform = {e["name"]: e["value"] for e in executors["Transform_executor"]["container"]["env"]}
    assert transform == {"A": "1"}


# --- the pipeline root ---------------------------------------------------------------------


def _executor_input(uri):
    return {"outputs": {"artifacts": {"examples": {"artifacts": [{"name": "x", "uri": uri}]}}}}


def test_an_output_under_kfps_fallback_minio_root_fails_naming_the_launcher_setting():
    uri = "minio://mlpipeline/private-artifacts/team-a/v2/artifacts/litedet/r/Transform/u/x"
    with pytest.raises(kfp_entrypoint.StepError) as error:
        kfp_entrypoint.check_artifact_uris(_executor_input(uri))
    message = str(error.value)
    assert "defaultPipelineRoot" in message and "--pipeline-root s3://" in message
    kfp_entrypoint.check_artifact_uris(_executor_input("s3://mlpipeline/v2/artifacts/x"))


# --- ImageNet weights in the image ---------------------------------------------------------


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_in_the_image_an_alpha_not_baked_fails_at_once_with_the_build_argument(
    keras_home, monkeypatch
):
    (keras_home / weights.imagenet_filename(0.35, 224)).write_bytes(b"h5")
    monkeypatch.setenv(weights.IMAGE_WEIGHTS_ENV, "0.35:224")

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download inside the image")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    started = time.monotonic()
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.resolve("imagenet", 0.5, 256)
    assert time.monotonic() - started < 1.0
    message = str(error.value)
    assert weights.imagenet_filename(0.5, 224) in message
    assert "it bakes: 0.35:224" in message
    assert '--build-arg BACKBONE_WEIGHTS="0.35:224 0.5:224"' in message
    # The baked alpha resolves to the baked file, and random init needs nothing.
    assert weights.resolve("imagenet", 0.35, 256) == str(
        keras_home / weights.imagenet_filename(0.35, 224)
    )
    assert weights.resolve("none", 0.5, 256) is None


def test_an_image_built_without_weights_says_so(keras_home):
    with pytest.raises(weights.WeightsUnavailable, match=r"it bakes: none\)"):
        weights.check_image_weights("imagenet", 0.75, 160, {weights.IMAGE_WEIGHTS_ENV: ""})


def test_outside_the_image_nothing_is_checked(keras_home):
    weights.check_image_weights("imagenet", 0.75, 160, {})  # may download: the local runner
