"""Tests for components.detection.model (detector architecture) and postprocess."""

import logging
import math

import numpy as np
import pytest
import tensorflow as tf

from litedet.components.detection import losses, postprocess
from litedet.components.detection import model as model_lib

NUM_CLASSES = 3
# 64 px is the smallest valid input: levels 4x4, 2x2, 1x1, 1x1 keep builds and calls fast.
SMALL = dict(num_classes=NUM_CLASSES, image_size=64)


@pytest.fixture(scope="module")
def small_config():
    return model_lib.DetectorConfig(**SMALL)


@pytest.fixture(scope="module")
def small_model(small_config):
    return model_lib.build_detector(small_config)


@pytest.fixture
def empty_keras_cache(tmp_path, monkeypatch):
    """HOME without ~/.keras/models, so the build cannot pick up cached ImageNet weights."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".keras" / "models"


def backbone_weights(model):
    return [w.numpy() for w in model.get_layer(model_lib.BACKBONE_NAME).weights]


def assert_same_weights(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize(
    "alpha, image_size, feature_pyramid",
    [(0.35, 64, True), (0.35, 96, False), (0.5, 128, True)],
)
def test_outputs_line_up_with_anchors(alpha, image_size, feature_pyramid):
    config = model_lib.DetectorConfig(
        num_classes=NUM_CLASSES,
        alpha=alpha,
        image_size=image_size,
        feature_pyramid=feature_pyramid,
    )
    model = model_lib.build_detector(config)
    images = tf.random.uniform([2, image_size, image_size, 3], -1.0, 1.0)
    outputs = model(images, training=False)

    num_anchors = config.anchors().shape[0]
    assert config.num_anchors == num_anchors
    assert outputs["box_encodings"].shape == (2, num_anchors, 4)
    # Column 0 (background) is produced, for the TFLite post-process op's layout.
    assert outputs["class_logits"].shape == (2, num_anchors, NUM_CLASSES + 1)


def test_loss_ignores_background_column(small_model, small_config):
    logits = small_model(tf.zeros([1, 64, 64, 3]), training=False)["class_logits"]
    targets = tf.zeros([1, small_config.num_anchors], tf.int32)
    changed = tf.concat([logits[..., :1] + 5.0, logits[..., 1:]], axis=-1)
    np.testing.assert_allclose(
        losses.sigmoid_focal_loss(changed, targets), losses.sigmoid_focal_loss(logits, targets)
    )


def test_object_scores_start_at_the_prior(small_model):
    images = tf.random.uniform([2, 64, 64, 3], -1.0, 1.0)
    logits = small_model(images, training=False)["class_logits"][..., 1:]
    mean_probability = float(tf.reduce_mean(tf.sigmoid(logits)))
    assert mean_probability == pytest.approx(model_lib.CLASS_PRIOR_PROBABILITY, rel=0.5)


def test_parameter_count_falls_with_alpha():
    counts = [
        model_lib.build_detector(model_lib.DetectorConfig(**SMALL, alpha=alpha)).count_params()
        for alpha in (1.0, 0.75, 0.5, 0.35)
    ]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts)


@pytest.mark.parametrize("alpha", [0.6, 0.25, 2.0])
def test_invalid_alpha_lists_valid_values(alpha):
    with pytest.raises(ValueError, match=r"choose one of 0\.35, 0\.5, 0\.75, 1\.0, 1\.3, 1\.4"):
        model_lib.DetectorConfig(num_classes=1, alpha=alpha)


def test_without_the_top_conv_the_backbone_stops_at_the_last_expansion():
    """backbone_top_conv False: stride 32 reads block 16's expansion; block 16's projection and
    the 1280-channel top conv are not in the model, and the outputs still line up."""
    config = model_lib.DetectorConfig(**SMALL, backbone_top_conv=False)
    model = model_lib.build_detector(config)
    backbone = model.get_layer(model_lib.BACKBONE_NAME)
    names = {layer.name for layer in backbone.layers}
    assert model_lib.STRIDE_32_WITHOUT_TOP_CONV in names
    assert not names & {"Conv_1", "out_relu", "block_16_project"}
    assert backbone.outputs[-1].shape[-1] == 336  # 0.35 x 960 channels, rounded to 8 by Keras
    outputs = model(tf.zeros([1, 64, 64, 3]), training=False)
    assert outputs["box_encodings"].shape == (1, config.num_anchors, 4)
    with_top = model_lib.build_detector(model_lib.DetectorConfig(**SMALL))
    top_conv = with_top.get_layer(model_lib.BACKBONE_NAME).get_layer("Conv_1").count_params()
    assert model.count_params() <= with_top.count_params() - top_conv


def test_finest_head_depth_drops_the_tower_at_the_finest_level_only():
    config = model_lib.DetectorConfig(**SMALL, head_depth=1, finest_head_depth=0)
    names = {layer.name for layer in model_lib.build_detector(config).layers}
    finest, next_level = config.strides[0], config.strides[1]
    for head in ("box_encodings", "class_logits"):
        assert f"{head}_tower_0_bn_{finest}" not in names
        assert f"{head}_tower_0_bn_{next_level}" in names
    default_names = {
        layer.name for layer in model_lib.build_detector(model_lib.DetectorConfig(**SMALL)).layers
    }
    assert f"box_encodings_tower_0_bn_{finest}" in default_names


@pytest.mark.parametrize(
    "overrides",
    [
        dict(image_size=100),
        dict(image_size=32),
        dict(num_classes=0),
        dict(strides=(16, 64)),
        dict(finest_head_depth=2),
        dict(finest_head_depth=-2),
    ],
)
def test_invalid_config(overrides):
    with pytest.raises(ValueError):
        model_lib.DetectorConfig(**{**SMALL, **overrides})


def test_every_batch_norm_has_configured_momentum():
    model = model_lib.build_detector(model_lib.DetectorConfig(**SMALL, bn_momentum=0.8))
    momenta = [
        layer.momentum
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    backbone_bns = [
        layer
        for layer in model.get_layer(model_lib.BACKBONE_NAME).layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    assert len(backbone_bns) > 40  # the backbone's are included
    assert momenta and set(momenta) == {0.8}


def test_set_backbone_trainable_toggles_trainable_weights(small_model):
    all_trainable = len(small_model.trainable_weights)
    model_lib.set_backbone_trainable(small_model, False)
    try:
        head_only = len(small_model.trainable_weights)
        assert 0 < head_only < all_trainable
        assert not small_model.get_layer(model_lib.BACKBONE_NAME).trainable_weights
    finally:
        model_lib.set_backbone_trainable(small_model, True)
    assert len(small_model.trainable_weights) == all_trainable


def test_backbone_weights_file_loads(small_model, tmp_path, empty_keras_cache):
    path = str(tmp_path / "backbone.h5")
    small_model.get_layer(model_lib.BACKBONE_NAME).save_weights(path)
    loaded = model_lib.build_detector(model_lib.DetectorConfig(**SMALL), backbone_weights=path)
    assert_same_weights(backbone_weights(loaded), backbone_weights(small_model))


def test_backbone_weights_for_other_alpha_fail_clearly(tmp_path, empty_keras_cache):
    path = str(tmp_path / "alpha_0.5.h5")
    tf.keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.5, include_top=False, weights=None
    ).save_weights(path)
    with pytest.raises(ValueError, match=r"do not fit MobileNetV2 alpha 0\.35"):
        model_lib.build_detector(model_lib.DetectorConfig(**SMALL), backbone_weights=path)
    with pytest.raises(FileNotFoundError):
        model_lib.build_detector(
            model_lib.DetectorConfig(**SMALL), backbone_weights=str(tmp_path / "missing.h5")
        )


def test_backbone_random_init_says_so(caplog):
    # Where the weights come from (Keras' cache, a download, a file) is weights.resolve's job
    # (tests/test_transfer.py); the builder loads what it is given, or nothing.
    with caplog.at_level(logging.INFO):
        model_lib.build_detector(model_lib.DetectorConfig(**SMALL))
    assert "Backbone: random init" in caplog.text


# Post-processing on hand-made outputs: 4 anchors, 3 classes.
ANCHORS = tf.constant(
    [
        [0.1, 0.1, 0.4, 0.4],
        [0.5, 0.5, 0.9, 0.8],
        [0.12, 0.1, 0.42, 0.4],  # near-duplicate of anchor 0 (IoU ~0.88)
        [-0.2, 0.6, 0.3, 1.1],  # reaches past the image: must come back clipped
    ]
)
LOW = -10.0


def logits_with(*hits):
    """[1, 4, 4] logits: LOW everywhere, `value` at (anchor, class column) for each hit."""
    logits = np.full([1, 4, NUM_CLASSES + 1], LOW, np.float32)
    for anchor, column, value in hits:
        logits[0, anchor, column] = value
    return tf.constant(logits)


def decode(logits, **kwargs):
    return postprocess.decode_detections(tf.zeros([1, 4, 4]), logits, ANCHORS, **kwargs)


def test_decode_single_confident_anchor():
    detections = decode(logits_with((1, 2, 5.0)), max_detections=10)
    assert detections["num_detections"].numpy().tolist() == [1.0]
    np.testing.assert_allclose(detections["detection_boxes"][0, 0], ANCHORS[1], atol=1e-6)
    assert detections["detection_classes"][0, 0] == 2.0
    expected_score = 1.0 / (1.0 + math.exp(-5.0))
    assert float(detections["detection_scores"][0, 0]) == pytest.approx(expected_score)
    # Padding rows: zero score, zero box, label 0.
    assert not np.any(detections["detection_scores"][0, 1:])
    assert not np.any(detections["detection_classes"][0, 1:])


def test_background_column_is_not_a_detection():
    assert decode(logits_with((1, 0, 5.0)))["num_detections"].numpy().tolist() == [0.0]


def test_per_class_nms_removes_duplicate_of_same_class_only():
    detections = decode(logits_with((0, 1, 3.0), (2, 1, 4.0), (2, 3, 2.0)), class_agnostic=False)
    assert detections["num_detections"].numpy().tolist() == [2.0]
    # The higher-scoring duplicate (anchor 2) wins; class 3 on it is not suppressed by class 1.
    np.testing.assert_allclose(detections["detection_boxes"][0, :2], [ANCHORS[2]] * 2, atol=1e-6)
    assert detections["detection_classes"][0, :2].numpy().tolist() == [1.0, 3.0]


def test_class_agnostic_nms_keeps_one_class_per_box():
    """The default, as the shipped TFLite op: each anchor keeps its best class, and one box
    suppresses an overlapping box of any class."""
    detections = decode(logits_with((0, 1, 3.0), (2, 1, 4.0), (2, 3, 2.0), (1, 2, 1.0)))
    assert detections["num_detections"].numpy().tolist() == [2.0]
    # Anchor 2 (class 1, its best) wins over anchor 0; anchor 1 does not overlap it.
    np.testing.assert_allclose(
        detections["detection_boxes"][0, :2], np.asarray(ANCHORS)[[2, 1]], atol=1e-6
    )
    assert detections["detection_classes"][0].numpy().tolist()[:3] == [1.0, 2.0, 0.0]
    assert not np.any(detections["detection_boxes"][0, 2:])


def test_decode_clips_boxes():
    detections = decode(logits_with((3, 1, 5.0)))
    np.testing.assert_allclose(detections["detection_boxes"][0, 0], [0.0, 0.6, 0.3, 1.0], atol=1e-6)


def test_decode_in_serving_signature_has_static_k():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4, 4], tf.float32),
            tf.TensorSpec([None, 4, NUM_CLASSES + 1], tf.float32),
        ]
    )
    def serve(box_encodings, class_logits):
        return postprocess.decode_detections(box_encodings, class_logits, ANCHORS, max_detections=7)

    concrete = serve.get_concrete_function()
    assert concrete.structured_outputs["detection_boxes"].shape.as_list() == [None, 7, 4]
    assert concrete.structured_outputs["detection_classes"].shape.as_list() == [None, 7]
    detections = serve(tf.zeros([2, 4, 4]), tf.concat([logits_with((1, 2, 5.0))] * 2, axis=0))
    assert detections["num_detections"].numpy().tolist() == [1.0, 1.0]


def test_the_detector_defaults_are_the_training_sections():
    """DetectorConfig's own defaults describe the model the Trainer builds at the default
    settings (from_training), so a benchmark or test that builds one gets today's detector."""
    from litedet.components.trainer.config import TrainingConfig

    built = model_lib.DetectorConfig.from_training(TrainingConfig(), num_classes=5, image_size=256)
    assert built == model_lib.DetectorConfig(num_classes=5, image_size=256)
    custom = model_lib.DetectorConfig.from_training(
        TrainingConfig(alpha=0.5, finest_stride=16, head_channels=64), 3, 320
    )
    assert (custom.alpha, custom.strides[0], custom.head_channels) == (0.5, 16, 64)
