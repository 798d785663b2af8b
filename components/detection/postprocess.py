"""Turns detector outputs into final detections, for serving signatures and evaluation.

Outputs follow the TF OD API detection dict. The TFLite model does the same job with the
``TFLite_Detection_PostProcess`` op instead; its scale attributes must be ``scale_factors``.
"""

import tensorflow as tf

from litedet.components.detection import box_coder


def decode_detections(
    box_encodings,
    class_logits,
    anchors,
    score_threshold=0.05,
    iou_threshold=0.5,
    max_detections=100,
    scale_factors=box_coder.DEFAULT_SCALE_FACTORS,
    class_agnostic=True,
):
    """Decodes boxes, scores each class with a sigmoid and runs NMS.

    Args:
      box_encodings: [B, N, 4] box codes, as the model's "box_encodings".
      class_logits: [B, N, C + 1] logits, background column 0 (ignored, as in training).
      anchors: [N, 4] corner anchors the codes refer to.
      score_threshold, iou_threshold: NMS thresholds.
      max_detections: K, the static number of rows per image in every output.
      scale_factors: the box coder's (y, x, h, w) scale factors.
      class_agnostic: True (the default): each anchor keeps its best class and NMS runs over all
        boxes at once, as the shipped TFLite models' post-process op does (its fast NMS, one
        class per box: docs/clients.md), so the SavedModel, the validation mAP and the TFLite
        files are scored alike. False: per-class NMS (one box may come out once per class).

    Returns:
      dict of float32 tensors, rows past ``num_detections`` zero-padded:
        detection_boxes [B, K, 4]: (ymin, xmin, ymax, xmax) normalized, clipped to [0, 1];
        detection_scores [B, K];
        detection_classes [B, K]: 1-based labels (0 on padding rows);
        num_detections [B].
    """
    return select_detections(
        box_encodings,
        tf.sigmoid(tf.cast(class_logits, tf.float32)[..., 1:]),
        anchors,
        score_threshold,
        iou_threshold,
        max_detections,
        scale_factors,
        class_agnostic,
    )


def select_detections(
    box_encodings,
    scores,
    anchors,
    score_threshold=0.05,
    iou_threshold=0.5,
    max_detections=100,
    scale_factors=box_coder.DEFAULT_SCALE_FACTORS,
    class_agnostic=True,
):
    """decode_detections from the object classes' scores [B, N, C] (sigmoid, the background
    column left out) instead of the logits: what the ONNX export (litedet/export.py) wraps
    around the `detect_preprocessed` signature, whose `class_scores` are these (and the
    background's)."""
    boxes = box_coder.decode(
        tf.cast(box_encodings, tf.float32), tf.cast(anchors, tf.float32), scale_factors
    )
    scores = tf.cast(scores, tf.float32)
    if class_agnostic:
        best = tf.reduce_max(scores, axis=-1)

        def one_image(inputs):
            image_boxes, image_scores = inputs
            kept = tf.image.non_max_suppression(
                image_boxes, image_scores, max_detections, iou_threshold, score_threshold
            )
            count = tf.shape(kept)[0]
            return tf.pad(kept, [[0, max_detections - count]]), count

        # Image by image: the batched non_max_suppression_padded took 25 s for 112 images of
        # the stride-8 model on 2 cores even with nothing above the threshold; this takes 1 s.
        indices, valid = tf.map_fn(
            one_image,
            (boxes, best),
            fn_output_signature=(
                tf.TensorSpec([max_detections], tf.int32),
                tf.TensorSpec([], tf.int32),
            ),
        )
        kept_boxes = tf.clip_by_value(tf.gather(boxes, indices, batch_dims=1), 0.0, 1.0)
        kept_scores = tf.gather(best, indices, batch_dims=1)
        kept_classes = tf.cast(
            tf.gather(tf.argmax(scores, axis=-1, output_type=tf.int32), indices, batch_dims=1),
            tf.float32,
        )
    else:
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, tf.newaxis, :],  # one box per anchor, shared by all classes
            scores,
            max_output_size_per_class=max_detections,
            max_total_size=max_detections,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            clip_boxes=True,
        )
        kept_boxes, kept_scores, kept_classes = nms.nmsed_boxes, nms.nmsed_scores, nms.nmsed_classes
        valid = nms.valid_detections
    # Classes are numbered from 0 (column 1 of the logits); padding rows would read as label 1,
    # so they get 0, the project's padding label, and zero boxes and scores.
    is_detection = tf.range(max_detections)[tf.newaxis, :] < valid[:, tf.newaxis]
    return {
        "detection_boxes": tf.where(is_detection[..., tf.newaxis], kept_boxes, 0.0),
        "detection_scores": tf.where(is_detection, kept_scores, 0.0),
        "detection_classes": tf.where(is_detection, kept_classes + 1.0, 0.0),
        "num_detections": tf.cast(valid, tf.float32),
    }
