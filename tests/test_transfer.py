"""Transfer learning: where the backbone's weights come from (components/detection/weights.py),
and the freeze-then-fine-tune schedule of the Trainer (components/trainer/module.py). The
weights files are made here, in Keras' own cache format and naming; no network is needed, and
"no network" is a refused loopback connection, not a mock."""

import os
import time

import numpy as np
import pytest
import tensorflow as tf

from litedet.components.detection import model as model_lib
from litedet.components.detection import weights
from litedet.components.trainer import module as trainer_module
from litedet.components.trainer.config import TrainingConfig

SMALL = dict(num_classes=3, image_size=64, head_channels=16)
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, the refusal is instant


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights, "KERAS_WEIGHTS_URL", UNREACHABLE)
    return tmp_path / "keras" / "models"


def _imagenet_file(keras_home, alpha=0.35, size=96):
    """A MobileNetV2 no-top weights file under Keras' name for (alpha, size), with weights
    that are not what a fresh build gets, so loading is visible."""
    keras_home.mkdir(parents=True, exist_ok=True)
    backbone = tf.keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None
    )
    for variable in backbone.weights:
        variable.assign(tf.random.uniform(variable.shape, -0.1, 0.1, seed=7))
    path = keras_home / weights.imagenet_filename(alpha, size)
    backbone.save_weights(str(path))
    return str(path), [w.numpy() for w in backbone.weights]


def test_imagenet_weights_come_from_keras_cache_at_the_nearest_size(keras_home):
    path, _ = _imagenet_file(keras_home, size=96)
    assert weights.resolve("imagenet", 0.35, 64) == path  # 64 px: the 96 px file
    assert weights.nearest_size(256) == 224 and weights.nearest_size(112) == 128
    assert weights.resolve("none", 0.35, 64) is None
    with pytest.raises(weights.WeightsUnavailable, match="missing.h5 does not exist"):
        weights.resolve("/nowhere/missing.h5", 0.35, 64)


def test_no_network_and_no_cached_file_fails_at_once_naming_the_file(keras_home):
    started = time.time()
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.resolve("imagenet", 0.5, 224)
    assert time.time() - started < 10
    message = str(error.value)
    assert weights.imagenet_filename(0.5, 224) in message
    assert str(keras_home) in message and "training.backbone_weights" in message
    assert not list(keras_home.glob(".partial-*"))  # nothing half-downloaded left behind


def test_the_cached_file_is_what_the_backbone_loads(keras_home):
    path, expected = _imagenet_file(keras_home)
    detector = model_lib.build_detector(model_lib.DetectorConfig(**SMALL), path)
    loaded = detector.get_layer(model_lib.BACKBONE_NAME).weights
    assert len(loaded) == len(expected)
    for actual, wanted in zip(loaded, expected):
        np.testing.assert_array_equal(actual.numpy(), wanted)


def test_a_file_for_another_alpha_fails_clearly(keras_home):
    path, _ = _imagenet_file(keras_home, alpha=0.5)
    with pytest.raises(ValueError, match=r"do not fit MobileNetV2 alpha 0\.35"):
        model_lib.build_detector(model_lib.DetectorConfig(**SMALL), path)


def test_freezing_is_on_by_default_only_for_pretrained_weights():
    settings = TrainingConfig(train_steps=1000)
    assert settings.freeze_steps(pretrained=True) == 200
    assert settings.freeze_steps(pretrained=False) == 0
    assert TrainingConfig(train_steps=1000, freeze_backbone_steps=50).freeze_steps(True) == 50


def _batches(config, steps):
    anchors = config.anchors()
    images = tf.random.uniform([4, 64, 64, 3], -1.0, 1.0, seed=1)
    targets = {
        "box_targets": tf.random.normal([4, anchors.shape[0], 4], seed=2) * 0.1,
        "class_targets": tf.random.uniform([4, anchors.shape[0]], 0, 4, tf.int32, seed=3),
        "box_weights": tf.ones([4, anchors.shape[0]]),
        "class_weights": tf.ones([4, anchors.shape[0]]),
    }
    return tf.data.Dataset.from_tensors((images, targets)).repeat(steps)


def _values(variables):
    return {v.name: v.numpy().copy() for v in variables}


def _changed(before, variables):
    return {v.name for v in variables if not np.array_equal(before[v.name], v.numpy())}


def test_the_frozen_phase_trains_the_head_only_and_keeps_the_backbone_statistics(
    keras_home, tmp_path
):
    path, _ = _imagenet_file(keras_home)
    config = model_lib.DetectorConfig(**SMALL)
    detector = model_lib.build_detector(config, path)
    trainer = trainer_module.DetectorTrainer(detector)
    backbone = detector.get_layer(model_lib.BACKBONE_NAME)
    head = [v for v in detector.weights if not any(v is b for b in backbone.weights)]
    settings = TrainingConfig(train_steps=8, checkpoint_every_steps=4, batch_size=4)

    trainer_module.configure_backbone(detector, "frozen", settings)
    before = _values(detector.weights)
    trainer_module._fit_phase(
        trainer,
        "frozen",
        1e-2,
        0,
        1,
        4,
        _batches(config, 4),
        None,
        None,
        [],
        str(tmp_path / "resume"),
    )
    assert not _changed(before, backbone.weights)  # kernels and BN moving statistics alike
    assert _changed(before, head)

    trainer_module.configure_backbone(detector, "fine_tune", settings)
    before = _values(detector.weights)
    trainer_module._fit_phase(
        trainer,
        "fine_tune",
        1e-2,
        1,
        2,
        4,
        _batches(config, 4),
        None,
        None,
        [],
        str(tmp_path / "resume"),
    )
    changed = _changed(before, backbone.weights)
    kernels = {v.name for v in backbone.trainable_weights}
    statistics = {v.name for v in backbone.weights if "moving_" in v.name}
    assert kernels and kernels <= changed  # the backbone learns now
    assert not changed & statistics  # with pretrained statistics kept (fine_tune_batchnorm off)


def test_fine_tuning_from_a_block_leaves_the_earlier_blocks_frozen(keras_home):
    path, _ = _imagenet_file(keras_home)
    detector = model_lib.build_detector(model_lib.DetectorConfig(**SMALL), path)
    trainer_module.configure_backbone(
        detector, "fine_tune", TrainingConfig(fine_tune_from_block=13)
    )
    backbone = detector.get_layer(model_lib.BACKBONE_NAME)
    trainable = {layer.name for layer in backbone.layers if layer.trainable_weights}
    assert trainable and all(
        name.startswith(("block_13", "block_14", "block_15", "block_16", "Conv_1"))
        for name in trainable
    ), sorted(trainable)


def test_keras_home_default_is_the_users_keras_folder(monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    assert weights.keras_cache_dir() == os.path.join(os.path.expanduser("~"), ".keras", "models")
