"""Image preprocessing and the tf.Transform module: boxes stay on their pixels through the resize,
every image mode becomes RGB, padding is explicit and never cuts objects."""

import numpy as np
import pytest
import tensorflow as tf

from litedet.components import features as f
from litedet.components.detection import preprocessing
from litedet.components.transform import module as transform_module
from tests.datasets import image_bytes

SIZE = 128


def _colour_extent(image: np.ndarray, channel: int):
    """Pixel rows/cols where one colour dominates, as a (ymin, xmin, ymax, xmax) box in pixels."""
    others = [c for c in range(3) if c != channel]
    mask = (image[..., channel] > 0.3) & np.all(image[..., others] < -0.2, axis=-1)
    rows, cols = np.nonzero(mask)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], np.float32)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize("width, height", [(300, 150), (120, 260), (200, 200)])
def test_a_box_covers_the_same_pixels_after_the_resize(mode, width, height):
    # A red rectangle drawn at a known box; after the transform, the red pixels must lie where
    # the transformed box says, within the blur of one resampled pixel.
    x, y, w, h = 0.3 * width, 0.2 * height, 0.4 * width, 0.5 * height
    encoded = image_bytes(width, height, [(x, y, w, h)], fmt="PNG")
    image, window = preprocessing.preprocess_encoded(tf.constant(encoded), SIZE, mode)
    box = tf.constant([[y / height, x / width, (y + h) / height, (x + w) / width]])
    expected = preprocessing.boxes_to_window(box, window).numpy()[0] * SIZE
    found = _colour_extent(image.numpy(), channel=0)
    np.testing.assert_allclose(found, expected, atol=1.5)
    assert image.shape == (SIZE, SIZE, 3)
    assert -1.0 <= image.numpy().min() and image.numpy().max() <= 1.0


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_mid_gray():
    image, window = preprocessing.preprocess_encoded(
        tf.constant(image_bytes(256, 128, fmt="PNG")), SIZE, "letterbox"
    )
    np.testing.assert_allclose(window.numpy(), [0.25, 0.0, 0.75, 1.0])
    assert np.all(image.numpy()[:30] == 0.0)  # the padding band above the content
    back = preprocessing.boxes_from_window(
        preprocessing.boxes_to_window(tf.constant([[0.1, 0.2, 0.6, 0.9]]), window), window
    )
    np.testing.assert_allclose(back.numpy(), [[0.1, 0.2, 0.6, 0.9]], atol=1e-6)


@pytest.mark.parametrize(
    "fmt, mode", [("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "L"), ("JPEG", "RGB")]
)
def test_grayscale_and_rgba_become_rgb(fmt, mode):
    image = preprocessing.decode_rgb(
        tf.constant(image_bytes(40, 30, [(5, 5, 10, 10)], fmt=fmt, mode=mode))
    )
    assert image.shape == (30, 40, 3) and image.dtype == tf.uint8


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="resize mode 'crop' is not one of stretch, letterbox"):
        preprocessing.resize_to_input(tf.zeros([4, 4, 3], tf.uint8), 32, "crop")


def _raw_batch(object_counts):
    """A batch of raw features as tf.Transform hands them to preprocessing_fn."""
    indices, boxes, labels = [], [], []
    for row, count in enumerate(object_counts):
        for i in range(count):
            indices.append([row, i])
            boxes.append([0.1 * i, 0.1, 0.1 * i + 0.2, 0.5])
            labels.append(i % 3 + 1)
    shape = [len(object_counts), max(object_counts + [1])]
    idx = tf.constant(indices or np.zeros([0, 2]), tf.int64)

    def sparse(values, dtype):
        return tf.SparseTensor(idx, tf.constant(values, dtype), shape)

    coords = np.array(boxes, np.float32).reshape(-1, 4)
    raw = {key: sparse(coords[:, i], tf.float32) for i, key in enumerate(f.BBOX_KEYS)}
    raw.update(
        {
            f.CLASS_LABEL: sparse(labels, tf.int64),
            f.IS_CROWD: sparse([1 if i == 0 else 0 for i in range(len(labels))], tf.int64),
            f.DIFFICULT: sparse([0] * len(labels), tf.int64),
            f.IMAGE_ENCODED: tf.constant([image_bytes(64, 32)] * len(object_counts)),
            f.IMAGE_SOURCE_ID: tf.constant([str(i).encode() for i in range(len(object_counts))]),
            f.IMAGE_HEIGHT: tf.constant([32] * len(object_counts), tf.int64),
            f.IMAGE_WIDTH: tf.constant([64] * len(object_counts), tf.int64),
        }
    )
    return raw


def test_transform_features_pads_boxes_and_counts_objects():
    out = transform_module.transform_features(
        _raw_batch([2, 0, 3]), {"image_size": 64, "max_boxes": 4, "resize_mode": "stretch"}
    )
    assert out[f.IMAGE].shape == (3, 64, 64, 3)
    assert out[f.BOXES].shape == (3, 4, 4)
    np.testing.assert_array_equal(out[f.NUM_BOXES].numpy(), [2, 0, 3])
    np.testing.assert_array_equal(out[f.CLASSES].numpy(), [[1, 2, 0, 0], [0] * 4, [1, 2, 3, 0]])
    np.testing.assert_allclose(out[f.BOXES].numpy()[2, 1], [0.1, 0.1, 0.3, 0.5], atol=1e-6)
    assert not out[f.BOXES].numpy()[1].any() and not out[f.BOXES].numpy()[0, 2:].any()
    assert out[f.IGNORE].numpy()[0].tolist() == [1, 0, 0, 0]  # crowd objects are marked


def test_transform_features_refuse_to_cut_objects():
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_boxes=2 objects"):
        transform_module.transform_features(_raw_batch([3]), {"image_size": 64, "max_boxes": 2})


def test_anchor_targets_ignore_the_padding_rows():
    """The input pipeline matches against the real boxes only; padding must change nothing."""
    from litedet.components.detection import anchors, input_pipeline, matcher

    grid = anchors.generate_anchors(64, strides=(16, 32))
    example = {
        f.IMAGE: tf.zeros([64, 64, 3]),
        f.BOXES: tf.constant([[0.1, 0.1, 0.5, 0.5], [0.4, 0.3, 0.9, 0.8]] + [[0.0] * 4] * 6),
        f.CLASSES: tf.constant([1, 2] + [0] * 6, tf.int64),
        f.IGNORE: tf.constant([0, 1] + [0] * 6, tf.int64),
        f.NUM_BOXES: tf.constant(2, tf.int64),
    }
    _, targets = input_pipeline.targets_for(example, grid)
    padded = matcher.assign_targets(
        grid, example[f.BOXES], example[f.CLASSES], example[f.IGNORE], example[f.NUM_BOXES]
    )
    for name, expected in zip(
        ("box_targets", "class_targets", "box_weights", "class_weights"), padded
    ):
        np.testing.assert_allclose(targets[name].numpy(), expected.numpy(), err_msg=name)
    assert targets["box_weights"].numpy().sum() > 0  # the non-crowd box has positives
