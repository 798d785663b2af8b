"""Image preprocessing shared by training (through tf.Transform) and serving: pure TF functions.

One graph does both, so what the model sees in training is what it sees on a raw JPEG in serving.
"""

import tensorflow as tf

from litedet.components.features import RESIZE_MODES


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG or PNG bytes -> uint8 [H, W, 3]; grayscale and RGBA become RGB."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def normalize(image: tf.Tensor) -> tf.Tensor:
    """[0, 255] -> [-1, 1], the range MobileNetV2 was built for."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def resize_to_input(image: tf.Tensor, size: int, mode: str):
    """uint8 [H, W, 3] -> (float32 [size, size, 3] in [-1, 1], content window [4]).

    `stretch` scales each axis on its own: boxes keep their normalized coordinates.
    `letterbox` keeps the aspect ratio and pads with mid-gray (0 after normalization); the
    content window (ymin, xmin, ymax, xmax), normalized, says where the pixels landed.
    Bilinear without antialiasing, as on-device runtimes resize, so training sees what devices do.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if mode == "stretch":
        resized = tf.image.resize(image, [size, size], method="bilinear")
        return normalize(resized), tf.constant([0.0, 0.0, 1.0, 1.0])
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_max(shape)
    new_hw = tf.cast(tf.maximum(tf.round(shape * scale), 1.0), tf.int32)
    resized = normalize(tf.image.resize(image, new_hw, method="bilinear"))
    offset = (size - new_hw) // 2
    padded = tf.image.pad_to_bounding_box(resized, offset[0], offset[1], size, size)
    window = tf.cast(tf.concat([offset, offset + new_hw], axis=0), tf.float32) / size
    return padded, window


def preprocess_encoded(encoded: tf.Tensor, size: int, mode: str):
    """Image bytes -> (model input, content window): the whole per-image preprocessing."""
    return resize_to_input(decode_rgb(encoded), size, mode)


def _window_affine(window: tf.Tensor, boxes: tf.Tensor):
    """(origin, extent) of the window, shaped to broadcast against `boxes`."""
    ymin, xmin, ymax, xmax = tf.unstack(window, axis=-1)
    origin = tf.stack([ymin, xmin, ymin, xmin], axis=-1)
    extent = tf.stack([ymax - ymin, xmax - xmin, ymax - ymin, xmax - xmin], axis=-1)
    if boxes.shape.rank == window.shape.rank + 1:  # a list of boxes per window
        origin, extent = origin[..., tf.newaxis, :], extent[..., tf.newaxis, :]
    return origin, extent


def boxes_to_window(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Boxes normalized to the original image [..., 4] -> normalized to the model input."""
    origin, extent = _window_affine(window, boxes)
    return origin + boxes * extent


def boxes_from_window(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """The inverse of `boxes_to_window`: model-input boxes back to the original image, clipped."""
    origin, extent = _window_affine(window, boxes)
    return tf.clip_by_value((boxes - origin) / extent, 0.0, 1.0)
