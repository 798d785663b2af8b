"""tf.Transform module: raw TF OD API examples -> fixed-size model inputs and padded targets.

Transform loads `preprocessing_fn` by name (pipeline/pipeline.py); its settings arrive in
`custom_config` (pipeline/configs.py: image_size, resize_mode, max_boxes). The same graph serves
raw encoded images: given only `image/encoded`, tf.Transform prunes every output that needs a
label and returns the image and its content window.
"""

from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from litedet.components import features as f
from litedet.components.detection import preprocessing

DEFAULTS = {"image_size": 256, "resize_mode": "stretch", "max_boxes": 100}
# A vocabulary of the training split's "label:name" pairs: how the Trainer learns the number of
# classes and their names from the data rather than from a setting that could disagree.
LABEL_VOCABULARY = "label_names"


def transform_settings(custom_config: Dict[str, Any] = None) -> Dict[str, Any]:
    settings = dict(DEFAULTS)
    settings.update({k: v for k, v in (custom_config or {}).items() if k in DEFAULTS})
    return settings


def _images(encoded: tf.Tensor, size: int, mode: str):
    return tf.map_fn(
        lambda e: preprocessing.preprocess_encoded(e, size, mode),
        encoded,
        fn_output_signature=(
            tf.TensorSpec([size, size, 3], tf.float32),
            tf.TensorSpec([4], tf.float32),
        ),
    )


def _padded(sparse: tf.SparseTensor, max_boxes: int, dtype) -> tf.Tensor:
    """Variable-length per-image list [B, None] -> [B, max_boxes], zeros past the end."""
    values = tf.cast(sparse.values, dtype)
    batch = sparse.dense_shape[0]
    resized = tf.SparseTensor(sparse.indices, values, tf.stack([batch, max_boxes]))
    dense = tf.sparse.to_dense(resized, default_value=tf.zeros([], dtype))
    dense.set_shape([None, max_boxes])  # tf.Transform infers the output schema from static shapes
    return dense


def _object_count(sparse: tf.SparseTensor) -> tf.Tensor:
    ones = tf.SparseTensor(
        sparse.indices, tf.ones_like(sparse.values, tf.int64), sparse.dense_shape
    )
    count = tf.sparse.reduce_sum(ones, axis=1)
    count.set_shape([None])
    return count


def _targets(inputs, windows: tf.Tensor, max_boxes: int) -> Dict[str, tf.Tensor]:
    labels = inputs[f.CLASS_LABEL]
    num_boxes = _object_count(labels)
    # DetectionExampleGen quarantines images with more objects than this; a violation here means
    # the two settings drifted apart, and cutting boxes silently would corrupt training.
    check = tf.debugging.assert_less_equal(
        tf.reduce_max(tf.concat([num_boxes, [0]], axis=0)),
        tf.constant(max_boxes, tf.int64),
        message=f"an image has more than max_boxes={max_boxes} objects; raise max_boxes "
        f"(it also sets the ExampleGen's max_objects_per_image)",
    )
    with tf.control_dependencies([check]):
        boxes = tf.stack([_padded(inputs[k], max_boxes, tf.float32) for k in f.BBOX_KEYS], -1)
    valid = tf.sequence_mask(num_boxes, max_boxes, dtype=tf.float32)[..., tf.newaxis]
    ignore = tf.maximum(
        _padded(inputs[f.IS_CROWD], max_boxes, tf.int64),
        _padded(inputs[f.DIFFICULT], max_boxes, tf.int64),
    )
    return {
        f.BOXES: preprocessing.boxes_to_window(boxes, windows) * valid,
        f.CLASSES: _padded(labels, max_boxes, tf.int64),
        f.IGNORE: ignore,
        f.NUM_BOXES: num_boxes,
        f.SOURCE_ID: inputs[f.IMAGE_SOURCE_ID],
        f.ORIGINAL_HEIGHT: inputs[f.IMAGE_HEIGHT],
        f.ORIGINAL_WIDTH: inputs[f.IMAGE_WIDTH],
    }


def transform_features(inputs: Dict[str, Any], custom_config: Dict[str, Any] = None):
    """Decode, resize, normalize; pad boxes and labels: every output, no analyzer (so it also
    runs outside tf.Transform)."""
    settings = transform_settings(custom_config)
    images, windows = _images(
        inputs[f.IMAGE_ENCODED], settings["image_size"], settings["resize_mode"]
    )
    outputs = {f.IMAGE: images, f.CONTENT_WINDOW: windows}
    outputs.update(_targets(inputs, windows, settings["max_boxes"]))
    return outputs


def preprocessing_fn(inputs: Dict[str, Any], custom_config: Dict[str, Any] = None):
    """tf.Transform entry point: `transform_features`, plus the label vocabulary analyzer."""
    outputs = transform_features(inputs, custom_config)
    labels = inputs[f.CLASS_LABEL]
    tft.vocabulary(
        tf.strings.join(
            [tf.strings.as_string(labels.values), inputs[f.CLASS_TEXT].values], separator=":"
        ),
        vocab_filename=LABEL_VOCABULARY,
    )
    return outputs
