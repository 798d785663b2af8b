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
):
    """Decodes boxes, scores each class with a sigmoid and runs per-class NMS.

    Args:
      box_encodings: [B, N, 4] box codes, as the model's "box_encodings".
      class_logits: [B, N, C + 1] logits, background column 0 (ignored, as in training).
      anchors: [N, 4] corner anchors the codes refer to.
      score_threshold, iou_threshold: NMS thresholds.
      max_detections: K, the static number of rows per image in every output.
      scale_factors: the box coder's (y, x, h, w) scale factors.

    Returns:
      dict of float32 tensors, rows past ``num_detections`` zero-padded:
        detection_boxes [B, K, 4]: (ymin, xmin, ymax, xmax) normalized, clipped to [0, 1];
        detection_scores [B, K];
        detection_classes [B, K]: 1-based labels (0 on padding rows);
        num_detections [B].
    """
    boxes = box_coder.decode(
        tf.cast(box_encodings, tf.float32), tf.cast(anchors, tf.float32), scale_factors
    )
    scores = tf.sigmoid(tf.cast(class_logits, tf.float32)[..., 1:])
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :],  # one box per anchor, shared by all classes
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        clip_boxes=True,
    )
    # NMS numbers classes from 0 (column 1 of the logits); padding rows would read as
    # label 1, so they get 0, the project's padding label.
    is_detection = tf.range(max_detections)[tf.newaxis, :] < nms.valid_detections[:, tf.newaxis]
    classes = tf.where(is_detection, nms.nmsed_classes + 1.0, 0.0)
    return {
        "detection_boxes": nms.nmsed_boxes,
        "detection_scores": nms.nmsed_scores,
        "detection_classes": classes,
        "num_detections": tf.cast(nms.valid_detections, tf.float32),
    }
