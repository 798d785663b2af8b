"""Detection losses: sigmoid focal classification loss and Huber box loss.

Background column: the head outputs ``num_classes + 1`` logits per anchor with
background at index 0, because ``TFLite_Detection_PostProcess`` expects scores of
shape [1, N, C + 1] and skips column 0. The loss does NOT train that column: with
independent sigmoids, background is already "every object score low" (RetinaNet),
and a background column would add an easy, dominant term that inference never
reads. Its logit is therefore left free; only columns 1..C enter the focal loss.

Both losses are summed over anchors and divided by max(1, number of positive
anchors in the batch), as in RetinaNet and the TF OD API SSD. Anchors with weight 0
(padding never reaches an anchor; ignore band and crowd matches do) add nothing.
"""

import tensorflow as tf


def sigmoid_focal_loss(class_logits, class_targets, alpha=0.25, gamma=2.0):
    """Per-anchor focal loss [B, A] for logits [B, A, C + 1] and int targets [B, A].

    Target 0 (background) means every object column has target 0.
    """
    class_logits = tf.cast(class_logits, tf.float32)[..., 1:]
    num_object_classes = tf.shape(class_logits)[-1]
    # one_hot of label - 1 is all zeros for background (index -1).
    labels = tf.one_hot(tf.cast(class_targets, tf.int32) - 1, num_object_classes)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=class_logits)
    probs = tf.sigmoid(class_logits)
    p_t = labels * probs + (1.0 - labels) * (1.0 - probs)
    alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)
    return tf.reduce_sum(alpha_t * (1.0 - p_t) ** gamma * cross_entropy, axis=-1)


def huber_loss(box_predictions, box_targets, delta=1.0):
    """Per-anchor smooth-L1 loss [B, A] on encoded boxes [B, A, 4], summed over coordinates."""
    abs_error = tf.abs(tf.cast(box_predictions, tf.float32) - box_targets)
    quadratic = tf.minimum(abs_error, delta)
    # 0.5 * x^2 inside [-delta, delta], delta * (|x| - 0.5 * delta) outside.
    return tf.reduce_sum(0.5 * quadratic**2 + delta * (abs_error - quadratic), axis=-1)


def giou_loss(predicted_boxes, target_boxes):
    """Per-anchor 1 - GIoU [B, A] of corner boxes [B, A, 4] (ymin, xmin, ymax, xmax): the IoU,
    less the share of the smallest enclosing box that neither covers (Rezatofighi et al.). It
    scores boxes as the evaluation does, by overlap, where Huber on the codes weighs each
    coordinate alike whatever the box's size."""
    p = tf.cast(predicted_boxes, tf.float32)
    t = tf.cast(target_boxes, tf.float32)
    # A predicted box may come out inverted early in training: order its corners.
    p = tf.concat([tf.minimum(p[..., :2], p[..., 2:]), tf.maximum(p[..., :2], p[..., 2:])], -1)

    def area(b):
        return tf.maximum(b[..., 2] - b[..., 0], 0.0) * tf.maximum(b[..., 3] - b[..., 1], 0.0)

    top_left = tf.maximum(p[..., :2], t[..., :2])
    bottom_right = tf.minimum(p[..., 2:], t[..., 2:])
    intersection = tf.reduce_prod(tf.maximum(bottom_right - top_left, 0.0), axis=-1)
    union = area(p) + area(t) - intersection
    iou = tf.math.divide_no_nan(intersection, union)
    hull = tf.reduce_prod(
        tf.maximum(p[..., 2:], t[..., 2:]) - tf.minimum(p[..., :2], t[..., :2]), axis=-1
    )
    return 1.0 - (iou - tf.math.divide_no_nan(hull - union, hull))


def detection_loss(
    box_predictions,
    class_logits,
    box_targets,
    class_targets,
    box_weights,
    class_weights,
    alpha=0.25,
    gamma=2.0,
    delta=1.0,
    box_loss_weight=1.0,
    anchors=None,
    giou_weight=0.0,
):
    """Total detection loss for a batch.

    Arguments are box-first, like the TFLite post-process op inputs, so that
    ``detection_loss(box_pred, logits, *matcher.batch_assign_targets(...))`` works.

    Args:
      box_predictions: [B, A, 4] predicted box codes.
      class_logits: [B, A, C + 1] logits, background column at index 0 (not trained).
      box_targets, class_targets, box_weights, class_weights: [B, A, 4] float32,
        [B, A] int32, [B, A] float32, [B, A] float32, as ``batch_assign_targets`` returns.
      anchors, giou_weight: with a giou_weight > 0, the anchors [A, 4] decode the predicted and
        target codes and giou_weight * (1 - GIoU) joins the box loss.

    Returns:
      dict with "total_loss" = class_loss + box_loss_weight * box_loss, "class_loss",
      "box_loss" and "num_positives" (float32 scalars).
    """
    num_positives = tf.reduce_sum(box_weights)
    normalizer = tf.maximum(1.0, num_positives)
    class_loss = (
        tf.reduce_sum(class_weights * sigmoid_focal_loss(class_logits, class_targets, alpha, gamma))
        / normalizer
    )
    per_anchor = huber_loss(box_predictions, box_targets, delta)
    if giou_weight:
        from litedet.components.detection import box_coder

        # Clipped before exp(): an early, wild size code would otherwise overflow to inf.
        predicted = tf.clip_by_value(tf.cast(box_predictions, tf.float32), -20.0, 20.0)
        decoded = [box_coder.decode(codes, anchors) for codes in (predicted, box_targets)]
        per_anchor += giou_weight * giou_loss(*decoded)
    box_loss = tf.reduce_sum(box_weights * per_anchor) / normalizer
    return {
        "total_loss": class_loss + box_loss_weight * box_loss,
        "class_loss": class_loss,
        "box_loss": box_loss,
        "num_positives": num_positives,
    }
