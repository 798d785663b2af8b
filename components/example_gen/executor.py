"""The Beam pipeline behind DetectionExampleGen.

records (COCO/VOC parsed up front; TFRecord entries parsed by the workers)
  -> optional re-split by hash -> check each image (read, sniff, decode, boxes, labels)
  -> good: tf.Examples written per split in the standard ExampleGen layout
  -> bad:  quarantine.jsonl with the reason, counted in summary.json
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import write_split
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from litedet.components.example_gen import annotations, records
from litedet.components.example_gen.config import DatasetConfig

EXAMPLES_KEY = "examples"
LABEL_MAP_KEY = "label_map"
QUARANTINE_KEY = "quarantine"
DATASET_KEY = "dataset"
INPUT_BASE_KEY = "input_base"
FINGERPRINT_KEY = "input_fingerprint"

QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "summary.json"


class EmptySplitError(RuntimeError):
    """A split ended with no usable example: training or evaluation on it would be meaningless."""


def hash_split(source_id: str, ratios: Dict[str, int]) -> str:
    """Deterministic split of an image by its id: the same id lands in the same split on every
    run and every machine (Python's hash() is salted per process, so it cannot be used)."""
    bucket = int(hashlib.md5(source_id.encode()).hexdigest()[:8], 16) % sum(ratios.values())
    for split, ratio in ratios.items():
        if bucket < ratio:
            return split
        bucket -= ratio
    raise AssertionError("unreachable: bucket < sum of ratios")


def _resplit(record, ratios):
    if isinstance(record, records.Quarantined):
        return record
    return dataclasses.replace(record, split=hash_split(record.source_id, ratios))


def _read_image(path: str):
    """The image's bytes; None when the file does not exist."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        return None


class _CheckImage(beam.DoFn):
    """Emits (split, serialized tf.Example) or, on the quarantine output, the reason."""

    def __init__(self, max_objects: int, clip_tolerance_px: float):
        self._max_objects = max_objects
        self._clip_tolerance_px = clip_tolerance_px

    def process(self, record, label_map):
        if isinstance(record, records.Quarantined):
            yield beam.pvalue.TaggedOutput(QUARANTINE_KEY, record)
            return
        data = record.image_bytes
        if record.image_path:
            try:
                data = _read_image(record.image_path)
            except tf.errors.OpError as e:
                yield beam.pvalue.TaggedOutput(
                    QUARANTINE_KEY,
                    records.Quarantined(
                        record.source_id,
                        record.split,
                        record.image_path,
                        "unreadable_image",
                        e.message,
                    ),
                )
                return
        outcome = records.check_or_quarantine(
            record, data, label_map, self._max_objects, self._clip_tolerance_px
        )
        if isinstance(outcome, records.Quarantined):
            yield beam.pvalue.TaggedOutput(QUARANTINE_KEY, outcome)
            return
        yield (
            outcome.record.split,
            outcome.texts,
            records.to_tf_example(outcome, data).SerializeToString(),
        )


def _count_keys(kind: str, item) -> List[str]:
    if kind == "examples":
        split, texts, _ = item
        return [f"examples/{split}"] + [f"objects/{t}" for t in texts]
    return [f"quarantined/{item.reason}"]


def _write_summary(counts, label_map, uri: str, splits: List[str]) -> None:
    summary = {
        "examples": {s: 0 for s in splits},
        "objects": {name: 0 for name in label_map.names},
        "quarantined": {},
    }
    for key, count in sorted(counts):
        group, name = key.split("/", 1)
        summary[group][name] = count
    with tf.io.gfile.GFile(os.path.join(uri, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True))


def write_label_map(label_map: annotations.LabelMap, uri: str) -> None:
    tf.io.gfile.makedirs(uri)
    with tf.io.gfile.GFile(os.path.join(uri, "label_map.json"), "w") as f:
        f.write(json.dumps(label_map.to_dict(), indent=2))
    with tf.io.gfile.GFile(os.path.join(uri, "labels.txt"), "w") as f:
        f.write("".join(name + "\n" for name in label_map.names))
    with tf.io.gfile.GFile(os.path.join(uri, "label_map.pbtxt"), "w") as f:
        f.write(
            "".join(
                f"item {{\n  id: {i + 1}\n  name: {json.dumps(name)}\n}}\n"
                for i, name in enumerate(label_map.names)
            )
        )


def _read_tfrecords(pipeline, config: DatasetConfig, root: str):
    """TF OD API TFRecords: entries parsed on the workers; the label map is gathered from the
    data itself (labels in numeric order, renumbered 1..K) and joined back as a side input."""
    parsed = []
    for split, pattern in config.sources.items():
        full = os.path.join(root, pattern)
        if not tf.io.gfile.glob(full):
            raise annotations.AnnotationError(f"{full}: no TFRecord file matches (split '{split}')")
        parsed.append(
            pipeline
            | f"ReadTFRecord[{split}]" >> beam.io.ReadFromTFRecord(full)
            | f"Parse[{split}]"
            >> beam.Map(
                lambda data, s: records.record_from_tf_example(
                    data, s, hashlib.sha256(data).hexdigest()[:16]
                ),
                s=split,
            )
        )
    parsed = parsed | "FlattenSources" >> beam.Flatten()
    items = parsed | "Records" >> beam.Map(lambda p: p[0] if isinstance(p, tuple) else p)
    label_map = (
        parsed
        | "LabelPairs" >> beam.FlatMap(lambda p: p[1] if isinstance(p, tuple) else [])
        | "DistinctLabels" >> beam.Distinct()
        | "AllLabels" >> beam.combiners.ToList()
        | "LabelMap" >> beam.Map(records.label_map_from_pairs)
    )
    return items, label_map


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads a COCO, VOC or TF OD API TFRecord dataset into detection tf.Examples."""

    def Do(
        self,
        input_dict: Dict[str, List[Any]],
        output_dict: Dict[str, List[Any]],
        exec_properties: Dict[str, Any],
    ) -> None:
        del input_dict
        config = DatasetConfig.from_json(exec_properties[DATASET_KEY])
        root = exec_properties.get(INPUT_BASE_KEY) or config.root
        splits = config.output_splits
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        examples.split_names = artifact_utils.encode_split_names(splits)
        label_map_uri = artifact_utils.get_single_uri(output_dict[LABEL_MAP_KEY])
        quarantine_uri = artifact_utils.get_single_uri(output_dict[QUARANTINE_KEY])
        tf.io.gfile.makedirs(quarantine_uri)

        with self._make_beam_pipeline() as pipeline:
            if config.format == "tfrecord":
                items, label_map = _read_tfrecords(pipeline, config, root)
            else:
                reader = annotations.read_coco if config.format == "coco" else annotations.read_voc
                parsed, static_label_map = reader(config.with_root(root))
                logging.info(
                    "Read %d image records from %s annotations under %s",
                    len(parsed),
                    config.format,
                    root,
                )
                items = pipeline | "Records" >> beam.Create(parsed, reshuffle=True)
                label_map = pipeline | "LabelMap" >> beam.Create([static_label_map])
            if config.split_ratios:
                items = items | "HashSplit" >> beam.Map(_resplit, config.split_ratios)

            checked = items | "CheckImages" >> beam.ParDo(
                _CheckImage(config.max_objects_per_image, config.clip_tolerance_px),
                label_map=beam.pvalue.AsSingleton(label_map),
            ).with_outputs(QUARANTINE_KEY, main=EXAMPLES_KEY)

            by_split = checked[EXAMPLES_KEY] | "PartitionSplits" >> beam.Partition(
                lambda item, n: splits.index(item[0]), len(splits)
            )
            for split, split_examples in zip(splits, by_split):
                (
                    split_examples
                    | f"Serialized[{split}]" >> beam.Map(lambda item: item[2])
                    | f"WriteSplit[{split}]"
                    >> write_split.WriteSplit(
                        artifact_utils.get_split_uri(output_dict[EXAMPLES_KEY], split),
                        "tfrecords_gzip",
                    )
                )

            # One file, written whole, even when nothing was quarantined: Beam's S3 sink cannot
            # write an empty file (a multipart upload of zero parts is refused as MalformedXML).
            _ = (
                checked[QUARANTINE_KEY]
                | "QuarantineJson" >> beam.Map(lambda q: json.dumps(q.to_dict(), sort_keys=True))
                | "QuarantineList" >> beam.combiners.ToList()
                | "WriteQuarantine"
                >> beam.Map(_write_lines, path=os.path.join(quarantine_uri, QUARANTINE_FILE))
            )

            count_keys = (
                (
                    checked[EXAMPLES_KEY]
                    | "ExampleKeys" >> beam.FlatMap(lambda item: _count_keys("examples", item)),
                    checked[QUARANTINE_KEY]
                    | "QuarantineKeys"
                    >> beam.FlatMap(lambda item: _count_keys("quarantine", item)),
                )
                | "AllKeys" >> beam.Flatten()
                | "Count" >> beam.combiners.Count.PerElement()
                | "CountList" >> beam.combiners.ToList()
            )
            _ = count_keys | "WriteSummary" >> beam.Map(
                _write_summary,
                label_map=beam.pvalue.AsSingleton(label_map),
                uri=quarantine_uri,
                splits=splits,
            )
            _ = label_map | "WriteLabelMap" >> beam.Map(write_label_map, uri=label_map_uri)

        summary = _report(quarantine_uri)
        quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        quarantine.set_int_custom_property("num_quarantined", sum(summary["quarantined"].values()))
        for split, count in summary["examples"].items():
            examples.set_int_custom_property(f"num_examples_{split}", count)


def _write_lines(lines: List[str], path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(f"{line}\n" for line in sorted(lines)))


def _report(quarantine_uri: str) -> dict:
    """Logs what was kept and what was set aside; fails on a split left empty."""
    with tf.io.gfile.GFile(os.path.join(quarantine_uri, SUMMARY_FILE)) as f:
        summary = json.load(f)
    kept = sum(summary["examples"].values())
    reasons = collections.Counter(summary["quarantined"])
    logging.info(
        "ExampleGen kept %d images (%s); quarantined %d%s",
        kept,
        ", ".join(f"{s}: {n}" for s, n in summary["examples"].items()),
        sum(reasons.values()),
        ""
        if not reasons
        else " ("
        + ", ".join(f"{r}: {n}" for r, n in reasons.most_common())
        + f"), see {quarantine_uri}",
    )
    empty = [split for split, count in summary["examples"].items() if count == 0]
    if empty:
        raise EmptySplitError(
            f"split(s) {', '.join(empty)} have no usable image; quarantined by reason: "
            f"{dict(reasons) or 'none'}; see {os.path.join(quarantine_uri, QUARANTINE_FILE)}"
        )
    return summary
