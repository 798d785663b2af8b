"""MobileNetV2 SSDLite detector: backbone, optional FPN-lite neck and a head shared across levels.

The model maps the Transform's ``image`` (float32 [B, S, S, 3] in [-1, 1]) to
  box_encodings  [B, N, 4]      box_coder codes relative to each anchor,
  class_logits   [B, N, C + 1]  column 0 = background, left untrained (see losses),
with N = ``DetectorConfig.num_anchors`` rows in the anchor order of ``anchors``.

Layer names the trainer can rely on: the nested backbone model "backbone" (see
``set_backbone_trainable``) and the output layers "box_encodings" and "class_logits".
"""

from __future__ import annotations

import dataclasses
import logging
import math

import tensorflow as tf

from litedet.components import features
from litedet.components.detection import (  # noqa: F401  (VALID_ALPHAS: re-exported)
    VALID_ALPHAS,
    check_alpha,
    check_finest_head_depth,
    check_image_size,
)
from litedet.components.detection import anchors as anchors_lib

BACKBONE_NAME = "backbone"
# MobileNetV2 layers giving the feature map of each backbone stride: the expansion layer of the
# first block at the next stride (as SSDLite takes stride 16), and the last layer for 32.
BACKBONE_FEATURES = {8: "block_6_expand_relu", 16: "block_13_expand_relu", 32: "out_relu"}
# Stride 32 without MobileNetV2's top conv (backbone_top_conv False): the last block's
# expansion, as the finer levels are tapped. The backbone then ends there: block 16's projection
# and the 1x1 conv to 1280 channels (Conv_1) are not run, and the neck reads 336 channels
# instead of 1280 at alpha 0.35 (TF Model Garden's MobileNet FPNs tap block outputs, not the
# top conv, either).
STRIDE_32_WITHOUT_TOP_CONV = "block_16_expand_relu"

# Input sizes Keras publishes ImageNet MobileNetV2 weights for. The no-top weights fit any
# input size; the size only says which resolution they were trained at.

# Focal-loss practice (RetinaNet): every object score starts near this probability, so the
# thousands of background anchors don't swamp the loss in the first steps.
CLASS_PRIOR_PROBABILITY = 0.01


def strides_from(finest: int) -> tuple:
    """The feature-map strides for a finest level of 8 or 16 px (training.finest_stride)."""
    return (8, 16, 32, 64, 128) if finest == 8 else (16, 32, 64, 128)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    """Architecture of the detector; anchor fields default to ``anchors.generate_anchors``'.

    Attributes:
      num_classes: number of object classes C (labels 1..C), required.
      alpha: MobileNetV2 depth multiplier, one of VALID_ALPHAS.
      image_size: square input side S in pixels, a multiple of 32 (the backbone's stride), >= 64.
      strides: feature-map strides, doubling from level to level; those up to 32 come from the
        backbone (the finest may be 8 or 16), each further one from an SSDLite extra layer.
      anchor_scale, scales_per_octave, aspect_ratios: anchor shapes, see ``anchors``.
      head_channels: width of the neck and of the box/class towers.
      head_depth: depthwise-separable conv layers in each of the box and class towers before
        the predictor. 1 keeps the head cheap on CPUs; see the tower in ``_shared_head``.
      finest_head_depth: the towers' depth at the finest level (its first convs, shared);
        -1: head_depth. The finest level holds most of the locations (3/4 of them at stride
        8), so its tower is most of the head's cost.
      backbone_top_conv: the stride-32 level taps MobileNetV2's top conv (out_relu, 1280
        channels); False: the last block's expansion (STRIDE_32_WITHOUT_TOP_CONV).
      feature_pyramid: FPN-lite neck (top-down upsample-and-add, separable 3x3 smoothing);
        False feeds each level to the head after a 1x1 projection only.
      bn_momentum: momentum of EVERY BatchNormalization layer, backbone included; see
        ``build_detector``.
    """

    # The defaults are the `training:` section's (components/trainer/config.py, which explains
    # each choice); tests/test_model.py holds them equal. The Trainer builds its config with
    # `from_training`, never from these.
    num_classes: int
    alpha: float = 0.35
    image_size: int = 256
    strides: tuple = (8, 16, 32, 64, 128)
    # 2 (not RetinaNet's 4): the smallest anchors are 2x the finest stride (16 px at stride 8);
    # at 4 they would be twice that and every small object a poor, forced match.
    anchor_scale: float = 2.0
    scales_per_octave: int = 2
    aspect_ratios: tuple = (1.0, 2.0, 0.5)
    head_channels: int = 96
    head_depth: int = 1
    finest_head_depth: int = -1
    backbone_top_conv: bool = True
    feature_pyramid: bool = True
    bn_momentum: float = 0.9

    @classmethod
    def from_training(cls, training, num_classes: int, image_size: int) -> DetectorConfig:
        """The architecture a `training:` section (TrainingConfig) describes, for `num_classes`
        classes at `image_size` (both read from the Transform output)."""
        return cls(
            num_classes=num_classes,
            alpha=training.alpha,
            image_size=image_size,
            feature_pyramid=training.feature_pyramid,
            head_channels=training.head_channels,
            head_depth=training.head_depth,
            finest_head_depth=training.finest_head_depth,
            backbone_top_conv=training.backbone_top_conv,
            strides=strides_from(training.finest_stride),
            scales_per_octave=training.scales_per_octave,
        )

    def __post_init__(self):
        # Configs often come from JSON (lists); tuples keep the frozen config hashable.
        object.__setattr__(self, "strides", tuple(self.strides))
        object.__setattr__(self, "aspect_ratios", tuple(self.aspect_ratios))
        check_alpha(self.alpha)
        try:
            check_image_size(self.image_size)
        except ValueError as e:
            raise ValueError(f"image_size {e}") from None
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        check_finest_head_depth(self.finest_head_depth, self.head_depth)
        doubling = all(b == 2 * a for a, b in zip(self.strides, self.strides[1:]))
        if self.strides[0] not in (8, 16) or 32 not in self.strides or not doubling:
            raise ValueError(
                f"strides {self.strides} must start with 8 or 16, include 32 (the backbone) "
                "and double at every further level"
            )

    @property
    def anchors_per_location(self):
        return anchors_lib.num_anchors_per_location(self.scales_per_octave, self.aspect_ratios)

    @property
    def num_anchors(self):
        """N, the number of rows of ``anchors()`` and of the model outputs."""
        sizes = anchors_lib.feature_map_sizes(self.image_size, self.strides)
        return sum(h * w for h, w in sizes) * self.anchors_per_location

    def anchors(self):
        """Corner-form anchors [N, 4] in the order of the model outputs."""
        return anchors_lib.generate_anchors(
            self.image_size,
            self.strides,
            self.anchor_scale,
            self.scales_per_octave,
            self.aspect_ratios,
        )


def build_detector(config, backbone_weights=None):
    """Builds the detector as a functional tf.keras.Model (not compiled).

    Args:
      config: DetectorConfig.
      backbone_weights: path of a Keras .h5 weights file for MobileNetV2 (no top) with this
        alpha, e.g. Keras' ImageNet file (weights.resolve finds it); None: random init.

    Returns:
      Model with input "image" [B, S, S, 3] and dict outputs "box_encodings" [B, N, 4],
      "class_logits" [B, N, C + 1].

    Raises:
      FileNotFoundError: backbone_weights does not exist.
      ValueError: backbone_weights does not fit MobileNetV2 with this alpha.
    """
    image = tf.keras.Input((config.image_size, config.image_size, 3), name=features.IMAGE)
    levels = _neck(config, _backbone(config, backbone_weights)(image))
    outputs = {
        "box_encodings": _shared_head(config, levels, "box_encodings", 4, "zeros"),
        "class_logits": _shared_head(
            config,
            levels,
            "class_logits",
            config.num_classes + 1,
            tf.keras.initializers.Constant(
                -math.log((1.0 - CLASS_PRIOR_PROBABILITY) / CLASS_PRIOR_PROBABILITY)
            ),
        ),
    }
    model = tf.keras.Model(image, outputs, name=f"ssdlite_mobilenetv2_{config.alpha}")
    # Keras' MobileNetV2 uses momentum 0.999: trained from random init, its moving statistics
    # lag so far behind that the model scored mAP 0 in inference mode after ~750 steps, while
    # 0.9 on every layer reached mAP@0.5 0.65 in ~500 steps (docs/toolchain.md). Setting the
    # attribute works because Keras 2 reads it on every call.
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    return model


def set_backbone_trainable(model, trainable):
    """Freezes (False) or unfreezes (True) the backbone; recompile the model afterwards.

    In Keras 2 a frozen BatchNormalization layer also runs in inference mode: the backbone
    then uses, and keeps, its loaded moving statistics.
    """
    model.get_layer(BACKBONE_NAME).trainable = trainable


def _backbone(config, weights_path):
    """Nested model "backbone": image -> the feature maps of the backbone strides, finest first."""
    size = config.image_size
    mobilenet = tf.keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=config.alpha, include_top=False, weights=None
    )
    weights_path = _backbone_weights_path(config, weights_path)
    if weights_path:
        try:
            # Loads by topology, like Keras' own ImageNet loading: every layer must match in
            # count and shape, so a file for another alpha fails instead of loading partly.
            mobilenet.load_weights(weights_path)
        except ValueError as error:
            raise ValueError(
                f"backbone weights {weights_path} do not fit MobileNetV2 alpha "
                f"{config.alpha} (no top): {error}"
            ) from error
    taps = dict(BACKBONE_FEATURES)
    if not config.backbone_top_conv:
        taps[32] = STRIDE_32_WITHOUT_TOP_CONV
    outputs = [
        mobilenet.get_layer(taps[stride]).output for stride in config.strides if stride <= 32
    ]
    return tf.keras.Model(mobilenet.input, outputs, name=BACKBONE_NAME)


def _backbone_weights_path(config, weights_path):
    """The weights file to load (weights.resolve finds it for a setting), or None: random
    init."""
    if weights_path is None:
        logging.info("Backbone: random init (training.backbone_weights=none)")
        return None
    if not tf.io.gfile.exists(weights_path):
        raise FileNotFoundError(f"backbone weights file {weights_path} does not exist")
    return weights_path


def _conv_bn_relu6(x, filters, name, activation=True):
    """1x1 conv, BatchNormalization and (optionally) ReLU6."""
    x = tf.keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _separable_bn_relu6(x, filters, name, strides=1):
    """3x3 depthwise + 1x1 pointwise conv, BatchNormalization, ReLU6 (MobileNet style)."""
    x = tf.keras.layers.SeparableConv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _neck(config, backbone_maps):
    """Feature maps [B, h, w, head_channels], one per stride in config.strides."""
    channels = config.head_channels
    backbone_strides = [s for s in config.strides if s <= 32]
    # SSDLite extra layers: 1x1 bottleneck, then a stride-2 depthwise-separable conv.
    extras, x = [], backbone_maps[-1]
    for stride in config.strides[len(backbone_strides) :]:
        x = _conv_bn_relu6(x, channels // 2, f"extra_{stride}_bottleneck")
        x = _separable_bn_relu6(x, channels, f"extra_{stride}", strides=2)
        extras.append(x)
    if not config.feature_pyramid:
        return [
            _conv_bn_relu6(c, channels, f"project_{s}")
            for s, c in zip(backbone_strides, backbone_maps)
        ] + extras

    # FPN: linear 1x1 laterals, then top-down from the coarsest level. The top-down path
    # carries the merged maps; the smoothed ones go to the head (as in the FPN paper).
    laterals = [
        _conv_bn_relu6(c, channels, f"lateral_{s}", activation=False)
        for s, c in zip(backbone_strides, backbone_maps)
    ] + extras
    merged = laterals[-1]
    levels = [merged]
    for stride, lateral in reversed(list(zip(config.strides, laterals[:-1]))):
        top_down = tf.keras.layers.UpSampling2D(2, name=f"fpn_upsample_{stride}")(merged)
        # Stride-2 'same' convs round sizes up (5 -> 3), so doubling can overshoot by a row
        # and column; the extra ones lie past the image edge.
        extra_rows = top_down.shape[1] - lateral.shape[1]
        extra_cols = top_down.shape[2] - lateral.shape[2]
        if extra_rows or extra_cols:
            top_down = tf.keras.layers.Cropping2D(
                ((0, extra_rows), (0, extra_cols)), name=f"fpn_crop_{stride}"
            )(top_down)
        merged = tf.keras.layers.Add(name=f"fpn_add_{stride}")([lateral, top_down])
        levels.insert(0, _separable_bn_relu6(merged, channels, f"fpn_smooth_{stride}"))
    return levels


def _shared_head(config, levels, name, outputs_per_anchor, bias_initializer):
    """SSDLite predictor with conv weights shared by all levels -> [B, N, outputs_per_anchor].

    Only the conv weights are shared (RetinaNet / KerasCV): each level keeps its own
    BatchNormalization, since feature statistics differ per level and one set of moving
    statistics for all of them would not match any level in inference mode (EfficientDet).
    """
    tower = [
        tf.keras.layers.SeparableConv2D(
            config.head_channels, 3, padding="same", use_bias=False, name=f"{name}_tower_{depth}"
        )
        for depth in range(config.head_depth)
    ]
    predictor = tf.keras.layers.SeparableConv2D(
        config.anchors_per_location * outputs_per_anchor,
        3,
        padding="same",
        # Small weights so that initial outputs are ~the bias (RetinaNet).
        pointwise_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer=bias_initializer,
        name=f"{name}_predictor",
    )
    finest_depth = config.head_depth if config.finest_head_depth < 0 else config.finest_head_depth
    per_level = []
    for stride, x in zip(config.strides, levels):
        depth_here = finest_depth if stride == config.strides[0] else config.head_depth
        for depth, conv in enumerate(tower[:depth_here]):
            x = conv(x)
            x = tf.keras.layers.BatchNormalization(name=f"{name}_tower_{depth}_bn_{stride}")(x)
            x = tf.keras.layers.ReLU(6.0, name=f"{name}_tower_{depth}_relu6_{stride}")(x)
        x = predictor(x)
        # [B, h, w, A * k] -> [B, h * w * A, k]: row-major, then anchor index (anchors order).
        # Static sizes, not -1: TFLite keeps -1 as an unknown dimension, and its detection
        # post-process op needs the number of anchors.
        rows = x.shape[1] * x.shape[2] * config.anchors_per_location
        per_level.append(
            tf.keras.layers.Reshape((rows, outputs_per_anchor), name=f"{name}_reshape_{stride}")(x)
        )
    return tf.keras.layers.Concatenate(axis=1, name=name)(per_level)
