"""Unit tests for components.detection: anchors, box coder, matcher, losses."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from litedet.components.detection import anchors as anchors_lib
from litedet.components.detection import box_coder, losses, matcher

# Small input keeps anchor counts (and test time) low: levels 8x8, 4x4, 2x2, 1x1.
IMAGE_SIZE = 128
STRIDES = (16, 32, 64, 128)
RATIOS = (1.0, 2.0, 0.5)
NUM_PER_LOCATION = 6  # 2 scales per octave x 3 aspect ratios
NUM_CLASSES = 3

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def anchors():
    return anchors_lib.generate_anchors(IMAGE_SIZE, STRIDES)


def center_size_boxes(n):
    """Strategy: [n, 4] float32 corner boxes from centers in [0, 1] and sizes in [0.01, 1]."""
    center = st.floats(0.0, 1.0, allow_nan=False)
    size = st.floats(0.01, 1.0, allow_nan=False)
    row = st.tuples(center, center, size, size)
    return st.lists(row, min_size=n, max_size=n).map(
        lambda rows: anchors_lib.to_corners(tf.constant(rows, tf.float32))
    )


def image_targets(anchors, boxes, labels, is_crowd=None, num_boxes=None):
    boxes = tf.constant(boxes, tf.float32)
    labels = tf.constant(labels, tf.int32)
    is_crowd = tf.zeros_like(labels) if is_crowd is None else tf.constant(is_crowd, tf.int32)
    num_boxes = len(labels) if num_boxes is None else num_boxes
    return matcher.assign_targets(anchors, boxes, labels, is_crowd, num_boxes)


def perfect_predictions(box_targets, class_targets, confidence=20.0):
    """Exact box codes, and logits +confidence on the true class, -confidence elsewhere."""
    one_hot = tf.one_hot(class_targets, NUM_CLASSES + 1)
    return box_targets, confidence * (2.0 * one_hot - 1.0)


# ---------------------------------------------------------------- anchors


def test_feature_map_sizes_use_ceil():
    assert anchors_lib.feature_map_sizes(320, STRIDES) == [(20, 20), (10, 10), (5, 5), (3, 3)]
    assert anchors_lib.feature_map_sizes(300, (16, 32)) == [(19, 19), (10, 10)]


def test_num_anchors_per_location():
    assert anchors_lib.num_anchors_per_location(2, RATIOS) == NUM_PER_LOCATION
    assert anchors_lib.num_anchors_per_location(3, (1.0,)) == 3


@pytest.mark.parametrize("image_size", [128, 320])
def test_anchor_count_and_shape(image_size):
    generated = anchors_lib.generate_anchors(image_size, STRIDES)
    expected = sum(h * w for h, w in anchors_lib.feature_map_sizes(image_size, STRIDES))
    assert generated.shape == (expected * NUM_PER_LOCATION, 4)
    assert generated.dtype == tf.float32


def test_first_level_centers_and_row_major_order(anchors):
    h, w = 8, 8
    level = anchors_lib.to_center_size(anchors[: h * w * NUM_PER_LOCATION])
    grid = tf.reshape(level, [h, w, NUM_PER_LOCATION, 4]).numpy()
    rows = (np.arange(h) + 0.5) / h
    cols = (np.arange(w) + 0.5) / w
    shape = (h, w, NUM_PER_LOCATION)
    np.testing.assert_allclose(grid[..., 0], np.broadcast_to(rows[:, None, None], shape), atol=1e-6)
    np.testing.assert_allclose(grid[..., 1], np.broadcast_to(cols[None, :, None], shape), atol=1e-6)
    flat = level.numpy()
    # x varies faster than y; all anchors of one location are contiguous.
    np.testing.assert_allclose(flat[NUM_PER_LOCATION, :2], [rows[0], cols[1]], atol=1e-6)
    np.testing.assert_allclose(flat[w * NUM_PER_LOCATION, :2], [rows[1], cols[0]], atol=1e-6)


def test_anchor_index_is_scale_major_then_aspect_ratio(anchors):
    base = 4.0 * 16 / IMAGE_SIZE
    sizes = anchors_lib.to_center_size(anchors[:NUM_PER_LOCATION]).numpy()[:, 2:]
    expected = []
    for octave_scale in (1.0, 2**0.5):
        for ratio in RATIOS:
            size = base * octave_scale
            expected.append([size / np.sqrt(ratio), size * np.sqrt(ratio)])
    np.testing.assert_allclose(sizes, expected, rtol=1e-6)


def test_levels_follow_stride_order(anchors):
    first_level = 8 * 8 * NUM_PER_LOCATION
    second = anchors_lib.to_center_size(anchors[first_level : first_level + 1]).numpy()[0]
    np.testing.assert_allclose(second, [0.125, 0.125, 1.0, 1.0], atol=1e-6)
    last = anchors_lib.to_center_size(anchors[-1:]).numpy()[0]
    # The single 1x1 location at stride 128; anchors are not clipped to the image.
    np.testing.assert_allclose(last[:2], [0.5, 0.5], atol=1e-6)
    assert last[2] > 1.0


@PROPERTY_SETTINGS
@given(center_size_boxes(6))
def test_center_size_round_trip(boxes):
    round_trip = anchors_lib.to_corners(anchors_lib.to_center_size(boxes))
    np.testing.assert_allclose(round_trip.numpy(), boxes.numpy(), atol=1e-6)


# ---------------------------------------------------------------- box coder


@PROPERTY_SETTINGS
@given(center_size_boxes(8), center_size_boxes(8))
def test_encode_decode_round_trip(boxes, anchor_boxes):
    codes = box_coder.encode(boxes, anchor_boxes)
    assert codes.shape == (8, 4)
    decoded = box_coder.decode(codes, anchor_boxes)
    np.testing.assert_allclose(decoded.numpy(), boxes.numpy(), atol=1e-4)


def test_encode_known_values():
    anchor = tf.constant([[0.2, 0.2, 0.6, 0.6]])
    assert np.allclose(box_coder.encode(anchor, anchor).numpy(), 0.0, atol=1e-5)
    shifted = tf.constant([[0.3, 0.2, 0.7, 1.0]])  # center moved by (0.1, 0.2), width doubled
    expected = [10 * 0.1 / 0.4, 10 * 0.2 / 0.4, 0.0, 5 * np.log(2.0)]
    np.testing.assert_allclose(box_coder.encode(shifted, anchor).numpy()[0], expected, atol=1e-5)


def test_encode_zero_size_box_is_finite():
    codes = box_coder.encode(tf.zeros([1, 4]), tf.constant([[0.2, 0.2, 0.6, 0.6]]))
    assert np.all(np.isfinite(codes.numpy()))


# ---------------------------------------------------------------- IoU and matching


def test_iou_known_values():
    a = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    b = tf.constant(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 1.0, 1.5], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    )
    expected = [[1.0, 1.0 / 3.0, 0.0, 0.0], [0.25, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(matcher.iou(a, b).numpy(), expected, atol=1e-6)


@PROPERTY_SETTINGS
@given(center_size_boxes(5), center_size_boxes(3))
def test_iou_symmetric_and_bounded(a, b):
    ab = matcher.iou(a, b).numpy()
    np.testing.assert_allclose(ab, matcher.iou(b, a).numpy().T, atol=1e-6)
    assert ab.shape == (5, 3)
    assert np.all((ab >= 0.0) & (ab <= 1.0 + 1e-6))
    np.testing.assert_allclose(np.diag(matcher.iou(a, a).numpy()), 1.0, atol=1e-5)


def test_match_thresholds_and_ignore_band():
    anchor_boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.45], [0.0, 0.0, 1.0, 0.3]])
    gt = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    matches = matcher.match(anchor_boxes, gt, tf.constant([True]), force_match_for_each_gt=False)
    assert matches.numpy().tolist() == [0, matcher.IGNORE, matcher.NEGATIVE]


def test_force_match_below_threshold(anchors):
    tiny = tf.constant([[0.50, 0.50, 0.52, 0.52]])  # best IoU far below 0.4
    assert tf.reduce_max(matcher.iou(anchors, tiny)) < 0.4
    matches = matcher.match(anchors, tiny, tf.constant([True]))
    assert np.sum(matches.numpy() == 0) == 1
    unforced = matcher.match(anchors, tiny, tf.constant([True]), force_match_for_each_gt=False)
    assert np.all(unforced.numpy() == matcher.NEGATIVE)


@PROPERTY_SETTINGS
@given(center_size_boxes(4), st.integers(1, 4))
def test_every_valid_gt_gets_an_anchor(anchors, gt_boxes, num_valid):
    ious = matcher.iou(anchors, gt_boxes).numpy()[:, :num_valid]
    # A shared best anchor can serve only one ground truth (documented limitation).
    assume(len(set(ious.argmax(axis=0))) == num_valid)
    gt_valid = tf.range(4) < num_valid
    matches = matcher.match(anchors, gt_boxes, gt_valid).numpy()
    for g in range(num_valid):
        assert np.any(matches == g)
    assert np.all(matches < num_valid)


def test_padded_gt_never_matched_even_if_it_overlaps(anchors):
    # Row 1 is past num_boxes; it equals an anchor exactly but must stay unmatched.
    gt = tf.stack([tf.constant([0.1, 0.1, 0.4, 0.4]), anchors[100], tf.zeros([4])])
    matches = matcher.match(anchors, gt, tf.constant([True, False, False])).numpy()
    assert np.any(matches == 0)
    assert not np.any(matches >= 1)


def test_no_ground_truth_gives_all_negatives(anchors):
    for gt_boxes, num_boxes in [(tf.zeros([0, 4]), 0), (tf.zeros([5, 4]), 0)]:
        labels = tf.zeros([gt_boxes.shape[0]], tf.int32)
        box_t, cls_t, box_w, cls_w = matcher.assign_targets(
            anchors, gt_boxes, labels, labels, num_boxes
        )
        assert np.all(cls_t.numpy() == 0) and np.all(box_w.numpy() == 0)
        assert np.all(cls_w.numpy() == 1) and np.all(box_t.numpy() == 0)


def test_assign_targets_positive_negative_values(anchors):
    gt = anchors[40:41].numpy()
    box_t, cls_t, box_w, cls_w = image_targets(anchors, gt, [2])
    assert cls_t.numpy()[40] == 2 and box_w.numpy()[40] == 1 and cls_w.numpy()[40] == 1
    np.testing.assert_allclose(box_t.numpy()[40], 0.0, atol=1e-4)
    negatives = cls_w.numpy() * (1 - box_w.numpy()) > 0
    assert np.all(cls_t.numpy()[negatives] == 0) and np.all(box_t.numpy()[negatives] == 0)
    assert np.all(cls_t.numpy()[box_w.numpy() > 0] == 2)


def test_ignore_band_anchor_has_no_class_weight():
    anchor_boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.45], [0.0, 0.0, 1.0, 0.3]])
    _, cls_t, box_w, cls_w = image_targets(anchor_boxes, [[0.0, 0.0, 1.0, 1.0]], [2])
    assert cls_t.numpy().tolist() == [2, 0, 0]
    assert box_w.numpy().tolist() == [1.0, 0.0, 0.0]
    assert cls_w.numpy().tolist() == [1.0, 0.0, 1.0]


def test_crowd_matched_anchors_are_ignored(anchors):
    boxes = [anchors[40].numpy(), [0.6, 0.6, 0.9, 0.9]]
    box_t, cls_t, box_w, cls_w = image_targets(anchors, boxes, [1, 3], is_crowd=[1, 0])
    matches = matcher.match(anchors, tf.constant(boxes), tf.constant([True, True])).numpy()
    crowd_matches = matches == 0
    assert crowd_matches[40]
    for values in (cls_t, box_w, cls_w):
        assert np.all(values.numpy()[crowd_matches] == 0)
    # The non-crowd box still gets positives.
    assert np.any(cls_t.numpy() == 3) and np.sum(box_w.numpy()) > 0


def test_assign_targets_in_tf_data_and_batched(anchors):
    boxes = np.array(
        [[[0.1, 0.1, 0.5, 0.4], [0, 0, 0, 0]], [[0.2, 0.5, 0.9, 0.9], [0.0, 0.0, 0.3, 0.3]]],
        np.float32,
    )
    labels = np.array([[1, 0], [2, 3]], np.int32)
    crowd = np.zeros_like(labels)
    num_boxes = np.array([1, 2], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((boxes, labels, crowd, num_boxes)).map(
        lambda *gt: matcher.assign_targets(anchors, *gt)
    )
    per_image = list(dataset.as_numpy_iterator())
    batched = tf.function(matcher.batch_assign_targets)(anchors, boxes, labels, crowd, num_boxes)
    num_anchors = anchors.shape[0]
    assert [t.shape for t in batched] == [(2, num_anchors, 4)] + [(2, num_anchors)] * 3
    for b, image in enumerate(per_image):
        for single, stacked in zip(image, batched):
            np.testing.assert_allclose(single, stacked.numpy()[b])


# ---------------------------------------------------------------- losses


def batch_targets(anchors, boxes, labels, num_boxes):
    labels = tf.constant(labels, tf.int32)
    boxes = tf.constant(boxes, tf.float32)
    num_boxes = tf.constant(num_boxes, tf.int32)
    return matcher.batch_assign_targets(anchors, boxes, labels, tf.zeros_like(labels), num_boxes)


GT_BOXES = [
    [[0.1, 0.1, 0.5, 0.4], [0.5, 0.5, 0.95, 0.9], [0, 0, 0, 0]],
    [[0.3, 0.2, 0.7, 0.8], [0, 0, 0, 0], [0, 0, 0, 0]],
]
GT_LABELS = [[1, 3, 0], [2, 0, 0]]
GT_COUNTS = [2, 1]


def random_predictions(num_anchors, seed=0):
    rng = np.random.default_rng(seed)
    boxes = rng.normal(size=(2, num_anchors, 4)).astype(np.float32)
    logits = rng.normal(size=(2, num_anchors, NUM_CLASSES + 1)).astype(np.float32)
    return tf.constant(boxes), tf.constant(logits)


def test_focal_loss_known_value_and_background_column_unused():
    label = tf.constant([[1]])
    loss = losses.sigmoid_focal_loss(tf.constant([[[5.0, 0.0, -30.0]]]), label).numpy()
    # Column 1: p = 0.5, target 1 -> 0.25 * 0.5^2 * log 2; column 2 is ~0.
    np.testing.assert_allclose(loss, [[0.25 * 0.25 * np.log(2.0)]], rtol=1e-5)
    other_background = losses.sigmoid_focal_loss(tf.constant([[[-7.0, 0.0, -30.0]]]), label)
    np.testing.assert_allclose(other_background.numpy(), loss)


def test_huber_loss_known_values():
    pred = tf.constant([[[0.5, -2.0, 0.0, 0.0]]])
    # 0.5 * 0.5^2 inside delta, 1 * (2 - 0.5) outside.
    np.testing.assert_allclose(losses.huber_loss(pred, tf.zeros([1, 1, 4])).numpy(), [[1.625]])


def test_loss_finite(anchors):
    targets = batch_targets(anchors, GT_BOXES, GT_LABELS, GT_COUNTS)
    result = losses.detection_loss(*random_predictions(anchors.shape[0]), *targets)
    for value in result.values():
        assert np.isfinite(value.numpy())
    assert result["total_loss"].numpy() > 0


def test_loss_near_zero_for_perfect_predictions(anchors):
    box_t, cls_t, box_w, cls_w = batch_targets(anchors, GT_BOXES, GT_LABELS, GT_COUNTS)
    box_pred, logits = perfect_predictions(box_t, cls_t)
    result = losses.detection_loss(box_pred, logits, box_t, cls_t, box_w, cls_w)
    assert result["num_positives"].numpy() >= 3
    assert result["total_loss"].numpy() < 1e-4


def test_loss_blind_to_padding(anchors):
    padded_boxes = [rows + [[0, 0, 0, 0]] * 4 for rows in GT_BOXES]
    padded_labels = [rows + [0] * 4 for rows in GT_LABELS]
    predictions = random_predictions(anchors.shape[0])
    base_targets = batch_targets(anchors, GT_BOXES, GT_LABELS, GT_COUNTS)
    padded_targets = batch_targets(anchors, padded_boxes, padded_labels, GT_COUNTS)
    base = losses.detection_loss(*predictions, *base_targets)
    padded = losses.detection_loss(*predictions, *padded_targets)
    for key in base:
        np.testing.assert_allclose(padded[key].numpy(), base[key].numpy(), rtol=1e-6)


def test_ignored_anchors_contribute_nothing(anchors):
    box_t, cls_t, box_w, cls_w = batch_targets(anchors, GT_BOXES, GT_LABELS, GT_COUNTS)
    box_pred, logits = perfect_predictions(box_t, cls_t)
    ignored = tf.tile(tf.one_hot([7], anchors.shape[0]) > 0, [2, 1])  # anchor 7 of each image
    wild_logits = tf.where(ignored[..., None], 50.0, logits)
    cls_w = tf.where(ignored, 0.0, cls_w)
    result = losses.detection_loss(box_pred, wild_logits, box_t, cls_t, box_w, cls_w)
    assert result["total_loss"].numpy() < 1e-4


@pytest.mark.parametrize("num_positives", [1, 2, 5])
def test_loss_normalized_by_positives(num_positives):
    num_anchors = 10
    positive = tf.constant([[1.0] * num_positives + [0.0] * (num_anchors - num_positives)])
    cls_t = tf.cast(positive, tf.int32)  # positives have label 1
    box_t = tf.zeros([1, num_anchors, 4])
    _, logits = perfect_predictions(box_t, cls_t)
    box_pred = tf.constant([[[0.5, 0.0, 0.0, 0.0]]]) * positive[..., None]  # Huber 0.125 each
    result = losses.detection_loss(
        box_pred, logits, box_t, cls_t, positive, tf.ones([1, num_anchors])
    )
    np.testing.assert_allclose(result["box_loss"].numpy(), 0.125, rtol=1e-5)
    assert result["num_positives"].numpy() == num_positives


def test_loss_without_positives_uses_unit_normalizer():
    logits = tf.zeros([1, 4, NUM_CLASSES + 1])
    boxes = tf.zeros([1, 4, 4])
    all_negative = tf.zeros([1, 4], tf.int32)
    result = losses.detection_loss(
        boxes, logits, boxes, all_negative, tf.zeros([1, 4]), tf.ones([1, 4])
    )
    # Each negative column: (1 - alpha) * 0.5^2 * log 2; 4 anchors x 3 object columns.
    expected = 12 * 0.75 * 0.25 * np.log(2.0)
    np.testing.assert_allclose(result["class_loss"].numpy(), expected, rtol=1e-5)
    assert result["box_loss"].numpy() == 0.0


def test_loss_normalized_over_the_whole_batch(anchors):
    # Two copies of an image have twice the loss sum and twice the positives.
    one = batch_targets(anchors, GT_BOXES[:1], GT_LABELS[:1], GT_COUNTS[:1])
    two = batch_targets(anchors, GT_BOXES[:1] * 2, GT_LABELS[:1] * 2, GT_COUNTS[:1] * 2)
    box_pred, logits = random_predictions(anchors.shape[0])
    single = losses.detection_loss(box_pred[:1], logits[:1], *one)
    doubled = losses.detection_loss(
        tf.concat([box_pred[:1]] * 2, 0), tf.concat([logits[:1]] * 2, 0), *two
    )
    np.testing.assert_allclose(
        doubled["total_loss"].numpy(), single["total_loss"].numpy(), rtol=1e-5
    )
    assert doubled["num_positives"].numpy() == 2 * single["num_positives"].numpy()


def test_giou_loss_is_zero_for_a_perfect_box_and_grows_with_distance():
    from litedet.components.detection import losses

    target = tf.constant([[[0.2, 0.2, 0.6, 0.6]]] * 3)
    predicted = tf.constant(
        [
            [[0.2, 0.2, 0.6, 0.6]],  # the same box: GIoU 1
            [[0.2, 0.4, 0.6, 0.8]],  # half overlapping: IoU 1/3, hull = union
            [[0.7, 0.7, 0.9, 0.9]],  # disjoint: IoU 0, hull larger than the union
        ]
    )
    loss = losses.giou_loss(predicted, target).numpy()[:, 0]
    np.testing.assert_allclose(loss[:2], [0.0, 1.0 - 1.0 / 3.0], atol=1e-6)
    union, hull = 0.16 + 0.04, 0.7 * 0.7
    np.testing.assert_allclose(loss[2], 1.0 + (hull - union) / hull, atol=1e-6)
    # An inverted predicted box is scored as the box its corners span.
    inverted = tf.constant([[[0.6, 0.6, 0.2, 0.2]]])
    np.testing.assert_allclose(losses.giou_loss(inverted, target[:1]).numpy(), [[0.0]], atol=1e-6)


def test_the_giou_term_joins_the_box_loss_on_positive_anchors_only():
    from litedet.components.detection import box_coder, losses

    anchors = tf.constant([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]])
    boxes = tf.constant([[[0.12, 0.1, 0.5, 0.52], [0.5, 0.5, 0.9, 0.9]]])
    targets = box_coder.encode(boxes, anchors)
    predicted = targets + 0.5
    logits = tf.zeros([1, 2, 3])
    classes = tf.constant([[1, 0]])
    weights = tf.constant([[1.0, 0.0]])
    plain = losses.detection_loss(predicted, logits, targets, classes, weights, tf.ones([1, 2]))
    with_giou = losses.detection_loss(
        predicted,
        logits,
        targets,
        classes,
        weights,
        tf.ones([1, 2]),
        anchors=anchors,
        giou_weight=2.0,
    )
    decoded = [box_coder.decode(c, anchors) for c in (predicted, targets)]
    expected = 2.0 * float(losses.giou_loss(*decoded)[0, 0])
    assert float(with_giou["box_loss"] - plain["box_loss"]) == pytest.approx(expected, rel=1e-5)
