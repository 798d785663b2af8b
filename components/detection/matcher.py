"""IoU, argmax anchor matching and per-anchor training targets (TF OD API ArgMaxMatcher style).

All single-image functions use only shape-agnostic TF ops, so they run inside a
``tf.data`` map (graph mode); ``batch_assign_targets`` wraps them for [B, ...] inputs.
"""

import tensorflow as tf

from litedet.components.detection import box_coder

NEGATIVE = -1  # matched_gt_index of background anchors
IGNORE = -2  # matched_gt_index of anchors whose best IoU falls between the thresholds


def iou(boxes_a, boxes_b):
    """Pairwise IoU of corner boxes [N, 4] x [M, 4] -> [N, M]; 0 where the union is empty."""
    ymin_a, xmin_a, ymax_a, xmax_a = tf.split(boxes_a, 4, axis=-1)  # each [N, 1]
    ymin_b, xmin_b, ymax_b, xmax_b = tf.unstack(boxes_b, axis=-1)  # each [M]
    inter_h = tf.maximum(0.0, tf.minimum(ymax_a, ymax_b) - tf.maximum(ymin_a, ymin_b))
    inter_w = tf.maximum(0.0, tf.minimum(xmax_a, xmax_b) - tf.maximum(xmin_a, xmin_b))
    intersection = inter_h * inter_w
    area_a = (ymax_a - ymin_a) * (xmax_a - xmin_a)
    area_b = (ymax_b - ymin_b) * (xmax_b - xmin_b)
    return tf.math.divide_no_nan(intersection, area_a + area_b - intersection)


def match(
    anchors,
    gt_boxes,
    gt_valid,
    matched_threshold=0.5,
    unmatched_threshold=0.4,
    force_match_for_each_gt=True,
):
    """Matches each anchor [A, 4] to at most one ground truth [G, 4] -> int32 [A].

    Result per anchor: index of the matched ground truth (>= 0) when its best IoU is
    >= matched_threshold, NEGATIVE (-1) when below unmatched_threshold, IGNORE (-2)
    in between. Invalid (padded) ground truths never match.

    With ``force_match_for_each_gt`` every valid ground truth that overlaps any anchor
    also claims its best-IoU anchor, whatever that IoU. A ground truth with zero
    overlap everywhere (a degenerate box) is not forced: it would only yield huge
    regression targets. When several ground truths share the same best anchor, that
    anchor goes to the one it overlaps most, so the others may end up unmatched.
    """
    # An always-invalid sentinel row keeps every reduction below non-empty when the
    # image has no ground truth at all (G == 0).
    gt_boxes = tf.concat([gt_boxes, tf.zeros([1, 4], gt_boxes.dtype)], axis=0)
    gt_valid = tf.concat([tf.cast(gt_valid, tf.bool), [False]], axis=0)

    # -1 is below any threshold, so invalid ground truths can only produce negatives.
    ious = tf.where(gt_valid[None, :], iou(anchors, gt_boxes), -1.0)  # [A, G + 1]
    best_gt = tf.argmax(ious, axis=1, output_type=tf.int32)
    best_iou = tf.reduce_max(ious, axis=1)
    matches = tf.where(
        best_iou >= matched_threshold,
        best_gt,
        tf.where(best_iou < unmatched_threshold, NEGATIVE, IGNORE),
    )
    if not force_match_for_each_gt:
        return matches

    best_anchor = tf.argmax(ious, axis=0, output_type=tf.int32)  # [G + 1]
    claims = tf.logical_and(
        tf.one_hot(best_anchor, tf.shape(anchors)[0], on_value=True, off_value=False),
        (gt_valid & (tf.reduce_max(ious, axis=0) > 0.0))[:, None],
    )  # [G + 1, A]: ground truth g forces anchor a
    claimed_iou = tf.where(tf.transpose(claims), ious, -1.0)  # [A, G + 1]
    forced_gt = tf.argmax(claimed_iou, axis=1, output_type=tf.int32)
    return tf.where(tf.reduce_any(claims, axis=0), forced_gt, matches)


def assign_targets(
    anchors,
    gt_boxes,
    gt_labels,
    gt_is_crowd,
    num_boxes,
    matched_threshold=0.5,
    unmatched_threshold=0.4,
    force_match_for_each_gt=True,
    scale_factors=box_coder.DEFAULT_SCALE_FACTORS,
):
    """Per-anchor training targets for one image.

    Args:
      anchors: [A, 4] corner anchors.
      gt_boxes: [G, 4] corner boxes, padded rows after the first ``num_boxes``.
      gt_labels: [G] int, 1-based; 0 on padded rows.
      gt_is_crowd: [G] int or bool.
      num_boxes: scalar int, number of real rows.

    Returns:
      box_targets: [A, 4] float32 encoded boxes; zeros where not positive.
      class_targets: [A] int32, matched label for positives, 0 otherwise.
      box_weights: [A] float32, 1 for positives, else 0.
      class_weights: [A] float32, 1 for positives and negatives, 0 for anchors in the
        IoU ignore band or matched to a crowd box.
    """
    # One extra padded row keeps the gathers below in range when G == 0; padding is
    # never matched, so it changes nothing else.
    gt_boxes = tf.pad(gt_boxes, [[0, 1], [0, 0]])
    gt_labels = tf.pad(tf.cast(gt_labels, tf.int32), [[0, 1]])
    gt_is_crowd = tf.pad(tf.cast(gt_is_crowd, tf.int32), [[0, 1]])
    gt_valid = tf.range(tf.shape(gt_boxes)[0]) < tf.cast(num_boxes, tf.int32)
    matches = match(
        anchors,
        gt_boxes,
        gt_valid,
        matched_threshold,
        unmatched_threshold,
        force_match_for_each_gt,
    )
    # Gather with a clamped index; the value is discarded wherever matches < 0.
    safe_index = tf.maximum(matches, 0)
    matched = matches >= 0
    # Crowd boxes take part in matching so that anchors covering them are not
    # trained as background; such anchors are then dropped from both losses.
    crowd = matched & (tf.gather(gt_is_crowd, safe_index) > 0)
    positive = matched & ~crowd

    encoded = box_coder.encode(tf.gather(gt_boxes, safe_index), anchors, scale_factors)
    box_targets = tf.where(positive[:, None], encoded, 0.0)
    class_targets = tf.where(positive, tf.gather(gt_labels, safe_index), 0)
    box_weights = tf.cast(positive, tf.float32)
    class_weights = tf.cast(positive | tf.equal(matches, NEGATIVE), tf.float32)
    return box_targets, class_targets, box_weights, class_weights


def batch_assign_targets(anchors, gt_boxes, gt_labels, gt_is_crowd, num_boxes, **kwargs):
    """``assign_targets`` over a batch: [B, G, ...] ground truth and [B] counts -> [B, A, ...]."""
    return tf.map_fn(
        lambda args: assign_targets(anchors, *args, **kwargs),
        (gt_boxes, gt_labels, gt_is_crowd, num_boxes),
        fn_output_signature=(tf.float32, tf.int32, tf.float32, tf.float32),
    )
