"""Anchor generation for a multi-level SSD-style head.

Anchor order contract (the model head must reshape its outputs the same way):
  level by level in the order of ``strides``, then row-major over the feature map
  (y, then x), then anchor index within the location. The anchor index is
  ``scale_index * len(aspect_ratios) + ratio_index``. A head conv producing
  ``[B, h, w, A * k]`` per level therefore lines up after
  ``reshape([B, h * w * A, k])`` and concatenation of the levels along axis 1.

Anchors are NOT clipped to the image: border anchors keep their full size so
their encoded targets stay consistent with interior ones (as in the TF OD API
multiscale grid anchor generator).
"""

import math

import tensorflow as tf


def feature_map_sizes(image_size, strides):
    """Returns [(h, w)] per stride: ceil(image_size / stride), as stride-2 'same' convs give."""
    return [(math.ceil(image_size / s), math.ceil(image_size / s)) for s in strides]


def num_anchors_per_location(scales_per_octave=2, aspect_ratios=(1.0, 2.0, 0.5)):
    """Number of anchors at every feature-map location (same for all levels)."""
    return scales_per_octave * len(aspect_ratios)


def _location_sizes(base_size, scales_per_octave, aspect_ratios):
    """Anchor (heights, widths) at one location, in anchor-index order.

    Aspect ratio is width / height; area stays (base_size * octave_scale)^2.
    """
    heights, widths = [], []
    for octave in range(scales_per_octave):
        size = base_size * 2.0 ** (octave / scales_per_octave)
        for ratio in aspect_ratios:
            heights.append(size / math.sqrt(ratio))
            widths.append(size * math.sqrt(ratio))
    return heights, widths


def _level_anchors(height, width, heights, widths):
    """Corner anchors [height * width * A, 4] for one level, row-major then anchor index."""
    num_anchors = len(heights)
    cy = (tf.range(height, dtype=tf.float32) + 0.5) / height
    cx = (tf.range(width, dtype=tf.float32) + 0.5) / width
    cy, cx = tf.meshgrid(cy, cx, indexing="ij")  # [h, w], y varies along axis 0
    grid_shape = [height, width, num_anchors]
    center_size = tf.stack(
        [
            tf.broadcast_to(cy[:, :, None], grid_shape),
            tf.broadcast_to(cx[:, :, None], grid_shape),
            tf.broadcast_to(tf.constant(heights, tf.float32), grid_shape),
            tf.broadcast_to(tf.constant(widths, tf.float32), grid_shape),
        ],
        axis=-1,
    )
    return to_corners(tf.reshape(center_size, [-1, 4]))


def generate_anchors(
    image_size,
    strides=(16, 32, 64, 128),
    anchor_scale=4.0,
    scales_per_octave=2,
    aspect_ratios=(1.0, 2.0, 0.5),
):
    """Corner-form anchors [N, 4] for a square input, ordered as the module docstring says.

    Per-level base size is ``anchor_scale * stride / image_size`` (RetinaNet style),
    with ``scales_per_octave`` sizes spaced by 2^(1/scales_per_octave) between levels.
    N = sum(h * w) * num_anchors_per_location(scales_per_octave, aspect_ratios).
    """
    levels = []
    for stride, (height, width) in zip(strides, feature_map_sizes(image_size, strides)):
        heights, widths = _location_sizes(
            anchor_scale * stride / image_size, scales_per_octave, aspect_ratios
        )
        levels.append(_level_anchors(height, width, heights, widths))
    return tf.concat(levels, axis=0)


def to_center_size(boxes):
    """(ymin, xmin, ymax, xmax) -> (ycenter, xcenter, h, w), over the last axis."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.stack([(ymin + ymax) / 2.0, (xmin + xmax) / 2.0, ymax - ymin, xmax - xmin], axis=-1)


def to_corners(center_size):
    """(ycenter, xcenter, h, w) -> (ymin, xmin, ymax, xmax), over the last axis."""
    cy, cx, h, w = tf.unstack(center_size, axis=-1)
    return tf.stack([cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0], axis=-1)
