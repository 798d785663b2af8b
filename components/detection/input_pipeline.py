"""tf.data input for training and evaluation: examples -> (images, anchor targets).

Two sources, one result: the raw examples with the Transform graph applied here, in parallel
batches (the default: nothing but the JPEG bytes on disk), or the Transform's materialized
examples. Then the training split alone is augmented, and anchor targets are assigned in the
parallel map, so the training step never waits on Python.
"""

from typing import Dict, List

import tensorflow as tf

from litedet.components import features as f
from litedet.components.detection import matcher

# Objects left with less than this fraction of their area inside a random crop are too cut to
# be learned as the class; they become ignored (neither object nor background).
MIN_VISIBLE_FRACTION = 0.3


def _valid_rows(example) -> tf.Tensor:
    rows = tf.shape(example[f.CLASSES])[0]
    return tf.range(rows) < tf.cast(example[f.NUM_BOXES], tf.int32)


def random_flip(example: Dict[str, tf.Tensor], seed=None) -> Dict[str, tf.Tensor]:
    """Horizontal flip of image and boxes, with probability 1/2."""
    flip = tf.random.uniform([], seed=seed) < 0.5
    ymin, xmin, ymax, xmax = tf.unstack(example[f.BOXES], axis=-1)
    flipped = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
    flipped = tf.where(_valid_rows(example)[:, None], flipped, 0.0)  # padding stays zero
    out = dict(example)
    out[f.IMAGE] = tf.cond(
        flip, lambda: tf.image.flip_left_right(example[f.IMAGE]), lambda: example[f.IMAGE]
    )
    out[f.BOXES] = tf.where(flip, flipped, example[f.BOXES])
    return out


def crop_to_window(example: Dict[str, tf.Tensor], window: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Crops to `window` (ymin, xmin, ymax, xmax, normalized) and resizes back; boxes follow,
    clipped; objects mostly cut away are marked ignored."""
    image = example[f.IMAGE]
    size = tf.shape(image)[:2]
    cropped = tf.image.crop_and_resize(image[tf.newaxis], window[tf.newaxis], [0], size)[0]
    origin = tf.stack([window[0], window[1], window[0], window[1]])
    extent = tf.stack([window[2] - window[0], window[3] - window[1]] * 2)
    moved = (example[f.BOXES] - origin) / extent
    clipped = tf.clip_by_value(moved, 0.0, 1.0)

    def area(b):
        return tf.maximum(b[:, 2] - b[:, 0], 0.0) * tf.maximum(b[:, 3] - b[:, 1], 0.0)

    visible = tf.math.divide_no_nan(area(clipped), area(moved))
    valid = _valid_rows(example)
    out = dict(example)
    out[f.IMAGE] = tf.reshape(cropped, tf.shape(image))
    out[f.BOXES] = tf.where(valid[:, None], clipped, 0.0)
    cut = valid & (visible < MIN_VISIBLE_FRACTION)
    out[f.IGNORE] = tf.where(cut, tf.ones_like(example[f.IGNORE]), example[f.IGNORE])
    return out


def random_crop(
    example: Dict[str, tf.Tensor], min_scale: float = 0.6, probability: float = 0.5, seed=None
) -> Dict[str, tf.Tensor]:
    """Scale/crop jitter: with `probability`, a random window of side min_scale..1 (each axis
    drawn on its own, so the aspect ratio jitters too), resized back to the input size."""
    side = tf.random.uniform([2], min_scale, 1.0, seed=seed)
    start = tf.random.uniform([2], seed=seed) * (1.0 - side)
    window = tf.concat([start, start + side], axis=0)
    apply = tf.random.uniform([], seed=seed) < probability
    return tf.cond(apply, lambda: crop_to_window(example, window), lambda: dict(example))


def random_photometric(example: Dict[str, tf.Tensor], seed=None) -> Dict[str, tf.Tensor]:
    out = dict(example)
    image = tf.image.random_brightness(example[f.IMAGE], 0.15, seed=seed)
    image = tf.image.random_contrast(image, 0.8, 1.2, seed=seed)
    out[f.IMAGE] = tf.clip_by_value(image, -1.0, 1.0)
    return out


def augment(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return random_photometric(random_crop(random_flip(example)))


def targets_for(example: Dict[str, tf.Tensor], anchors: tf.Tensor):
    # Only the real rows: matching against all max_boxes padded rows would cost ~20x the IoU
    # work for the same targets (padding never matches).
    count = tf.cast(example[f.NUM_BOXES], tf.int32)
    box_targets, class_targets, box_weights, class_weights = matcher.assign_targets(
        anchors,
        example[f.BOXES][:count],
        example[f.CLASSES][:count],
        example[f.IGNORE][:count],
        count,
    )
    return example[f.IMAGE], {
        "box_targets": box_targets,
        "class_targets": class_targets,
        "box_weights": box_weights,
        "class_weights": class_weights,
    }


TRAINING_FEATURES = (f.IMAGE, f.BOXES, f.CLASSES, f.IGNORE, f.NUM_BOXES)
# Raw records go through the Transform graph in batches of this size: one graph call per batch
# instead of per image.
TRANSFORM_BATCH = 16


def transformed_examples(
    records: tf.data.Dataset, tf_transform_output, materialized: bool, deterministic: bool
) -> tf.data.Dataset:
    """Serialized records -> one dict of transformed training features per image."""
    if materialized:
        spec = {
            k: v
            for k, v in tf_transform_output.transformed_feature_spec().items()
            if k in TRAINING_FEATURES
        }
        return records.map(
            lambda r: tf.io.parse_single_example(r, spec),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    raw_spec = tf_transform_output.raw_feature_spec()
    tft_layer = tf_transform_output.transform_features_layer()

    def transform(batch):
        transformed = tft_layer(tf.io.parse_example(batch, raw_spec))
        return {k: transformed[k] for k in TRAINING_FEATURES}

    return (
        records.batch(TRANSFORM_BATCH)
        .map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        .unbatch()
    )


def make_dataset(
    file_patterns: List[str],
    tf_transform_output,
    anchors: tf.Tensor,
    batch_size: int,
    training: bool,
    materialized: bool = False,
    augmentation: bool = True,
    shuffle_buffer: int = 256,
    seed=None,
) -> tf.data.Dataset:
    """Batches of (images [B, S, S, 3], targets dict of [B, A, ...]); repeats when training.
    `file_patterns`: raw examples, or the Transform's output when `materialized`."""
    files = tf.data.Dataset.list_files(file_patterns, shuffle=training, seed=seed)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training,
    )
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        records = records.repeat()
    examples = transformed_examples(
        records, tf_transform_output, materialized, deterministic=not training
    )
    if training and augmentation:
        examples = examples.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    batches = examples.map(
        lambda e: targets_for(e, anchors),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training,
    )
    options = tf.data.Options()
    # Few, large files: shard by element so every worker of a multi-worker job gets data.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (
        batches.batch(batch_size, drop_remainder=training)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )


def evaluation_batches(
    file_patterns: List[str], tf_transform_output, batch_size: int, materialized: bool = False
) -> tf.data.Dataset:
    """Batches of the evaluation split's transformed features (TRAINING_FEATURES: images and
    padded boxes, labels, ignore flags, counts) for the validation mAP, in file order, once."""
    files = tf.data.Dataset.list_files(file_patterns, shuffle=False)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    examples = transformed_examples(records, tf_transform_output, materialized, deterministic=True)
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
