"""Center-size box coder, as the TF OD API ``FasterRcnnBoxCoder`` used by SSD.

Codes are (ty, tx, th, tw):
  ty = sy * (yc - yc_a) / h_a        th = sh * log(h / h_a)
  tx = sx * (xc - xc_a) / w_a        tw = sw * log(w / w_a)
with scale factors (sy, sx, sh, sw) = (10, 10, 5, 5). The TFLite detection
post-process op decodes with the same formula, so its y/x/h/w_scale attributes
must equal these factors.
"""

import tensorflow as tf

from litedet.components.detection.anchors import to_center_size, to_corners

DEFAULT_SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)

# Same guard as the TF OD API: keeps divisions and logs finite for zero-size boxes
# (e.g. padded all-zero rows) without visibly changing real boxes.
EPSILON = 1e-8


def encode(boxes, anchors, scale_factors=DEFAULT_SCALE_FACTORS):
    """Encodes corner boxes [..., 4] relative to broadcastable corner anchors -> [..., 4]."""
    yc, xc, h, w = tf.unstack(to_center_size(boxes), axis=-1)
    yc_a, xc_a, h_a, w_a = tf.unstack(to_center_size(anchors), axis=-1)
    h, w = h + EPSILON, w + EPSILON
    h_a, w_a = h_a + EPSILON, w_a + EPSILON
    sy, sx, sh, sw = scale_factors
    return tf.stack(
        [
            sy * (yc - yc_a) / h_a,
            sx * (xc - xc_a) / w_a,
            sh * tf.math.log(h / h_a),
            sw * tf.math.log(w / w_a),
        ],
        axis=-1,
    )


def decode(rel_codes, anchors, scale_factors=DEFAULT_SCALE_FACTORS):
    """Inverse of ``encode``: codes [..., 4] and anchors -> corner boxes [..., 4]."""
    ty, tx, th, tw = tf.unstack(rel_codes, axis=-1)
    yc_a, xc_a, h_a, w_a = tf.unstack(to_center_size(anchors), axis=-1)
    sy, sx, sh, sw = scale_factors
    center_size = tf.stack(
        [
            ty / sy * h_a + yc_a,
            tx / sx * w_a + xc_a,
            tf.exp(th / sh) * h_a,
            tf.exp(tw / sw) * w_a,
        ],
        axis=-1,
    )
    return to_corners(center_size)
