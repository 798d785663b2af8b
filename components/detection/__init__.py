"""Detection internals for the litedet SSD-style detector, as small pure TF functions.

Modules:
  anchors    -- anchor grid generation and corner <-> center-size conversion.
  box_coder  -- center-size box encoding / decoding (TF OD API scale factors).
  matcher    -- IoU, anchor-to-ground-truth matching and per-anchor training targets.
  losses     -- sigmoid focal classification loss, Huber box loss, total detection loss.
  model      -- MobileNetV2 backbone (alpha), FPN-lite neck, SSDLite head.
  postprocess -- decoding and non-max suppression.
  input_pipeline -- tf.data for training: transform graph, augmentation, anchor targets.
  export     -- the SavedModel's signatures.

This file imports no TensorFlow: configuration checks (alpha) use it on light paths.

Conventions (kept by every function in this package):
  * Boxes are float32 ``(ymin, xmin, ymax, xmax)`` normalized to [0, 1] relative to
    the model input image. Anchors use the same corner form; the TFLite
    post-process op wants ``(ycenter, xcenter, h, w)``, see ``anchors.to_center_size``.
  * Class labels are int, 1-based for objects; 0 means background.
  * Ground truth is padded to a fixed number of rows per image. Padded rows have
    label 0 and an all-zero box and are marked invalid by a per-image count
    ``num_boxes``: rows ``[0, num_boxes)`` are real, the rest are padding.
  * Crowd / ignore ground truths are flagged by an int or bool ``is_crowd`` tensor
    aligned with the boxes; anchors matched to them are neither positive nor negative.
  * Class logits have ``num_classes + 1`` columns with background at index 0, the
    layout ``TFLite_Detection_PostProcess`` expects; see ``losses`` for how the
    background column is treated in training.
"""

# The depth multipliers Keras' MobileNetV2 is built (and publishes ImageNet weights) for.
VALID_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def check_alpha(alpha):
    """Raises ValueError unless MobileNetV2 (and its ImageNet weights) exist for this alpha."""
    if alpha not in VALID_ALPHAS:
        valid = ", ".join(str(a) for a in VALID_ALPHAS)
        raise ValueError(f"alpha {alpha} is not supported by MobileNetV2; choose one of {valid}")


def check_finest_head_depth(finest_head_depth, head_depth):
    """Raises ValueError unless the finest level's tower depth is -1 (head_depth) or in
    [0, head_depth]: that level runs the first convs of the shared tower."""
    if not -1 <= finest_head_depth <= head_depth:
        raise ValueError(
            f"finest_head_depth: {finest_head_depth} must be in [0, head_depth {head_depth}], "
            "or -1 (head_depth)"
        )


# MobileNetV2 halves the resolution five times: a side that is not a multiple of 32 loses
# border pixels, and below 64 the coarsest feature map vanishes.
IMAGE_SIZE_MULTIPLE = 32
MIN_IMAGE_SIZE = 64


def check_image_size(size):
    """Raises ValueError unless the detector can take a square input of this side."""
    if size < MIN_IMAGE_SIZE or size % IMAGE_SIZE_MULTIPLE:
        raise ValueError(f"{size} must be a multiple of {IMAGE_SIZE_MULTIPLE}, >= {MIN_IMAGE_SIZE}")


# Non-max suppression of the exported models (SavedModel and TFLite); training.* settings.
DEFAULT_MAX_DETECTIONS = 100
DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_NMS_IOU_THRESHOLD = 0.5
