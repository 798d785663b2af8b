"""The Beam pipeline behind DetectionExampleGen.

records, read by the workers from the sources' paths (the driver holds no record): a COCO file
     whole, VOC annotation files and YOLO images one by one, TFRecord files entry by entry
  -> optional re-split by hash -> check each image (read inside the root, sniff, decode, boxes,
     labels); what goes on is the check's result and the image's hash, not its bytes
  -> duplicates: one id twice in a split keeps the first; bytes in training and in an evaluation
     split stay in evaluation only (a shuffle of ids and hashes, never of the images)
  -> good: each image read again (its hash must not have changed) and written as a tf.Example
     per split in the standard ExampleGen layout
  -> bad:  quarantine.jsonl with the reason, counted in summary.json

Why the second read: the duplicate checks are a side input that needs every image checked, so
whatever flows into them waits, whole, in the runner. With the bytes inside, Beam's
FnApiRunner (the DirectRunner, the portable runner's local job service) held the whole dataset
in memory and sent each worker its share as one gRPC message, which fails above 2 GB: 20,000
COCO-sized images did (benchmarks/scale.py). Reading a file again costs a read and a hash; the
decode is not repeated. For the same reason the examples are shuffled before they are
serialized, not after (TFX's WriteSplit shuffles the serialized ones), and written with Beam's
TFRecord sink in TFX's layout.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import stat
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import write_split
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from litedet.components.example_gen import annotations, completion, files, records
from litedet.components.example_gen.config import DatasetConfig

EXAMPLES_KEY = "examples"
# The outputs of the steps that read annotation files (besides the quarantine's).
RECORDS_KEY, FILES_KEY, CATEGORIES_KEY, ERRORS_KEY = "records", "files", "categories", "errors"
LABEL_MAP_KEY = "label_map"
QUARANTINE_KEY = "quarantine"
DATASET_KEY = "dataset"
INPUT_BASE_KEY = "input_base"
FINGERPRINT_KEY = "input_fingerprint"

QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "summary.json"
# Written instead of the summary when an annotation file could not be read; the step then fails.
ANNOTATION_ERROR_FILE = "annotation_error.txt"
# The split the Trainer learns from (TFX's default train_args split). Every other split is held
# out (the Evaluator's "eval", a "test"...): an image in both is left out of training.
TRAINING_SPLIT = "train"


class EmptySplitError(RuntimeError):
    """A split ended with no usable example: training or evaluation on it would be meaningless.

    Carries the quarantine list (`quarantine_lines`, JSON lines) and the summary: TFX removes a
    failed step's outputs, so whoever catches this keeps them (the CLI writes them into the run
    folder)."""

    def __init__(self, message: str, quarantine_lines: str = "", summary: Optional[dict] = None):
        super().__init__(message)
        self.quarantine_lines, self.summary = quarantine_lines, summary or {}


def hash_split(source_id: str, ratios: Dict[str, int]) -> str:
    """Deterministic split of an image by its id: the same id lands in the same split on every
    run and every machine (Python's hash() is salted per process, so it cannot be used)."""
    # surrogatepass: the same bytes as plain UTF-8 for every valid id, and no crash for others.
    digest = hashlib.md5(source_id.encode("utf-8", "surrogatepass")).hexdigest()
    bucket = int(digest[:8], 16) % sum(ratios.values())
    for split, ratio in ratios.items():
        if bucket < ratio:
            return split
        bucket -= ratio
    raise AssertionError("unreachable: bucket < sum of ratios")


def _resplit(record, ratios):
    if isinstance(record, records.Quarantined):
        return record
    return dataclasses.replace(record, split=hash_split(record.source_id, ratios))


@dataclasses.dataclass(frozen=True)
class _Example:
    """A checked image on its way to its split, with what the duplicate checks need. Small:
    the image's bytes stay in their file unless they cannot be read from it again."""

    split: str
    source_id: str
    ordinal: Tuple[int, int]
    image: str
    sha256: str
    texts: Tuple[str, ...]
    checked: records.CheckedImage  # without bytes (record.image_bytes and upright emptied)
    # The bytes to store when no file holds them: a TFRecord input's, an EXIF-rotated image
    # turned upright. None: read image `checked.record.image_path` again.
    data: Optional[bytes] = None


class _CheckImage(beam.DoFn):
    """Emits an `_Example` or, on the quarantine output, the reason."""

    def __init__(
        self,
        root: str,
        max_objects: int,
        clip_tolerance_px: float,
        max_bytes: int,
        max_pixels: int,
    ):
        self._root = root
        self._max_objects = max_objects
        self._clip_tolerance_px = clip_tolerance_px
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels

    def _read(self, record):
        """(bytes or None, None) or (None, Quarantined)."""
        if not record.image_path or record.problem:
            return record.image_bytes, None
        try:
            return files.read_file(self._root, record.image_path, self._max_bytes), None
        except files.FileProblem as problem:
            return None, records.quarantined(record, problem.reason, problem.detail)
        except tf.errors.OpError as e:
            return None, records.quarantined(record, "unreadable_image", e.message)

    def process(self, record, label_map):
        if isinstance(label_map, _Unreadable):  # the step fails: no image is worth reading
            return
        if isinstance(record, records.Quarantined):
            yield beam.pvalue.TaggedOutput(QUARANTINE_KEY, record)
            return
        data, refused = self._read(record)
        if refused is not None:
            yield beam.pvalue.TaggedOutput(QUARANTINE_KEY, refused)
            return
        outcome = records.check_or_quarantine(
            record, data, label_map, self._max_objects, self._clip_tolerance_px, self._max_pixels
        )
        if isinstance(outcome, records.Quarantined):
            yield beam.pvalue.TaggedOutput(QUARANTINE_KEY, outcome)
            return
        stored = outcome.upright or data  # an EXIF-rotated image is stored upright
        rereadable = record.image_path and outcome.upright is None
        yield _Example(
            split=record.split,
            source_id=record.source_id,
            ordinal=record.ordinal,
            image=record.image_path or "(inline image bytes)",
            sha256=hashlib.sha256(stored).hexdigest(),
            texts=outcome.texts,
            checked=dataclasses.replace(
                outcome, record=dataclasses.replace(record, image_bytes=b""), upright=None
            ),
            data=None if rereadable else stored,
        )


class _Serialize(beam.DoFn):
    """A kept `_Example` -> (split, object texts, serialized tf.Example), the image read again
    from its file; or, on the quarantine output, `image_changed` when the file no longer holds
    the bytes that were checked."""

    def __init__(self, root: str, max_bytes: int):
        self._root = root
        self._max_bytes = max_bytes

    def process(self, example: _Example):
        data = example.data
        if data is None:
            record = example.checked.record
            try:
                # None: the file is gone.
                data = files.read_file(self._root, record.image_path, self._max_bytes) or b""
            except (files.FileProblem, tf.errors.OpError):
                data = b""
            if hashlib.sha256(data).hexdigest() != example.sha256:
                yield beam.pvalue.TaggedOutput(
                    QUARANTINE_KEY,
                    records.quarantined(
                        record,
                        "image_changed",
                        f"the file changed while ExampleGen ran: checked with sha256 "
                        f"{example.sha256}, then read back "
                        + ("with other bytes" if data else "empty or unreadable"),
                    ),
                )
                return
        serialized = records.to_tf_example(example.checked, data, example.sha256)
        yield example.split, example.texts, serialized.SerializeToString()


# -- duplicates ----------------------------------------------------------------------------------
# Both checks shuffle only (key, ordinal, hash, path) tuples; the examples themselves stay where
# they are and are filtered against the (usually empty) dict of what to set aside.


def _id_key(example: _Example):
    return (example.split, example.source_id), (example.ordinal, example.sha256, example.image)


def _first_of_each_id(keyed):
    """Of the images sharing one id in one split, the first (input order) goes on, keyed by its
    content hash; the later ones are set aside as `duplicate_image_id`."""
    (split, source_id), entries = keyed
    (ordinal, sha256, image), *later = sorted(entries)
    yield sha256, (split, source_id, ordinal, image)
    for other_ordinal, _, other_image in later:
        yield beam.pvalue.TaggedOutput(
            QUARANTINE_KEY,
            (
                other_ordinal,
                records.Quarantined(
                    source_id,
                    split,
                    other_image,
                    "duplicate_image_id",
                    f"image id {source_id!r} is already used in split {split!r} by {image}, "
                    "which is kept",
                ),
            ),
        )


def _training_copies_of_held_out_images(keyed):
    """The training copies of bytes that are also in a held-out split, set aside as
    `also_in_evaluation`: evaluated on an image it was trained on, a model's mAP (and so the
    gate's verdict) is inflated; without it, training merely has one image less."""
    sha256, entries = keyed
    held_out = sorted({(s, i) for s, i, _, _ in entries if s != TRAINING_SPLIT})
    if not held_out:
        return
    where = ", ".join(f"split {s!r} as id {i!r}" for s, i in held_out[:5])
    for split, source_id, ordinal, image in entries:
        if split == TRAINING_SPLIT:
            yield (
                ordinal,
                records.Quarantined(
                    source_id,
                    split,
                    image,
                    "also_in_evaluation",
                    f"the same image (sha256 {sha256}) is in {where}"
                    f"{' ...' if len(held_out) > 5 else ''}: kept there, left out of training",
                ),
            )


class _SetAside(beam.DoFn):
    """Passes an example on unless the duplicate checks set it aside."""

    def process(self, example: _Example, set_aside):
        quarantined = set_aside.get(example.ordinal)
        if quarantined is not None:
            yield beam.pvalue.TaggedOutput(QUARANTINE_KEY, quarantined)
        else:
            yield example


def _resolve_duplicates(examples, overlap_policy: str):
    """(examples kept, examples set aside as Quarantined)."""
    by_id = (
        examples
        | "IdKeys" >> beam.Map(_id_key)
        | "GroupById" >> beam.GroupByKey()
        | "FirstOfEachId"
        >> beam.FlatMap(_first_of_each_id).with_outputs(QUARANTINE_KEY, main="first")
    )
    set_aside = [by_id[QUARANTINE_KEY]]
    if overlap_policy == "leave_out_of_training":
        set_aside.append(
            by_id["first"]
            | "GroupByContent" >> beam.GroupByKey()
            | "HeldOutCopies" >> beam.FlatMap(_training_copies_of_held_out_images)
        )
    set_aside = tuple(set_aside) | "SetAside" >> beam.Flatten()
    resolved = examples | "Resolve" >> beam.ParDo(
        _SetAside(), set_aside=beam.pvalue.AsDict(set_aside)
    ).with_outputs(QUARANTINE_KEY, main=EXAMPLES_KEY)
    return resolved[EXAMPLES_KEY], resolved[QUARANTINE_KEY]


def _count_keys(kind: str, item) -> List[str]:
    if kind == "examples":
        split, texts, _ = item
        return [f"examples/{split}"] + [f"objects/{t}" for t in texts]
    return [f"quarantined/{item.reason}"]


def _write_summary(counts, label_map, uri: str, splits: List[str]) -> None:
    if isinstance(label_map, _Unreadable):  # no summary: the error, for the driver to raise
        with tf.io.gfile.GFile(os.path.join(uri, ANNOTATION_ERROR_FILE), "w") as f:
            f.write(label_map.message)
        return
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


# A TFRecord entry: uint64 length, uint32 masked CRC-32C of the length, the data, uint32 masked
# CRC-32C of the data (tensorflow/core/lib/io/record_writer.h).
_HEADER_BYTES = 12
_FOOTER_BYTES = 4
# An entry may hold its image and this much more (boxes, names, ids) before it is too large.
_ENTRY_OVERHEAD_BYTES = 1 << 20
_SKIP_CHUNK = 1 << 20


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_exact(stream, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(min(left, _SKIP_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _skip(stream, size: int) -> bool:
    """Reads past `size` bytes without keeping them; False when the file ends first."""
    while size > 0:
        chunk = stream.read(min(size, _SKIP_CHUNK))
        if not chunk:
            return False
        size -= len(chunk)
    return True


def _tfrecord_entries(source, max_image_bytes: int):
    """(split, file number, path) -> (split, (file number, entry number), serialized entry) for
    every entry: the position is the entry's ordinal, so that of two entries with one id the
    first is kept, run after run. The framing is read here, not by TensorFlow's reader, which
    stops at the first damage with an error that would fail the whole step: an entry whose data
    fails its checksum is a `malformed_record` and the next one is read; a damaged length (the
    rest of the file cannot be framed), a truncated end or broken GZIP make the rest of the file
    one `malformed_record`; an entry too large for `max_image_bytes` is `file_too_large`,
    skipped without being held."""
    import gzip
    import struct
    import zlib

    split, file_number, path = source
    limit = max_image_bytes + _ENTRY_OVERHEAD_BYTES
    number = offset = 0

    def broken(reason, detail):
        return records.Quarantined(
            f"{os.path.basename(path)}#{number}", split, path, reason, f"entry {number}: {detail}"
        )

    if not files.is_remote(path):  # a FIFO matched by the glob would block the open forever
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            loop = e.errno == errno.ELOOP
            yield broken("symlink_loop" if loop else "unreadable_image", f"{path}: {e.strerror}")
            return
        if not stat.S_ISREG(mode):
            yield broken("not_a_regular_file", f"{path} is a {files.kind_of(mode)}, not a file")
            return

    def cut():
        return broken("malformed_record", f"the file ends inside the entry at byte {offset}")

    try:
        with tf.io.gfile.GFile(path, "rb") as raw:
            # `.gz` files are GZIP, as Beam's reader took them (docs/data.md).
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
            while True:
                header = _read_exact(stream, _HEADER_BYTES)
                if not header:
                    return
                if len(header) < _HEADER_BYTES:
                    yield cut()
                    return
                (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
                if _masked_crc(header[:8]) != crc:
                    yield broken(
                        "malformed_record",
                        f"damaged length at byte {offset}: the rest of the file cannot be read",
                    )
                    return
                if length > limit:
                    if not _skip(stream, length + _FOOTER_BYTES):
                        yield cut()
                        return
                    yield broken(
                        "file_too_large",
                        f"{length} bytes, more than max_image_bytes={max_image_bytes} plus "
                        f"{_ENTRY_OVERHEAD_BYTES} for its other features; skipped unread",
                    )
                else:
                    data = _read_exact(stream, length)
                    footer = _read_exact(stream, _FOOTER_BYTES)
                    if len(footer) < _FOOTER_BYTES:
                        yield cut()
                        return
                    if _masked_crc(data) != struct.unpack("<I", footer)[0]:
                        yield broken("malformed_record", f"data at byte {offset}: bad checksum")
                    else:
                        yield split, (file_number, number), data
                number += 1
                offset += _HEADER_BYTES + length + _FOOTER_BYTES
    except (OSError, EOFError, zlib.error, tf.errors.OpError) as e:  # broken GZIP, a read error
        yield broken("malformed_record", f"the rest of the file cannot be read ({e})")


def _parse_tfrecord_entry(entry, max_image_bytes: int):
    if isinstance(entry, records.Quarantined):
        return entry
    split, ordinal, data = entry
    parsed = records.record_from_tf_example(
        data, split, hashlib.sha256(data).hexdigest()[:16], max_image_bytes
    )
    if isinstance(parsed, tuple):
        record, pairs = parsed
        return dataclasses.replace(record, ordinal=ordinal), pairs
    return parsed


def _read_tfrecords(pipeline, config: DatasetConfig, root: str):
    """TF OD API TFRecords: entries parsed on the workers; the label map is gathered from the
    data itself (labels in numeric order, renumbered 1..K) and joined back as a side input."""
    sources = []
    for split, pattern in config.sources.items():
        full = os.path.join(root, pattern)
        matched = sorted(tf.io.gfile.glob(full))
        if not matched:
            raise annotations.AnnotationError(f"{full}: no TFRecord file matches (split '{split}')")
        try:  # the output of a `litedet data convert` that did not finish is refused
            completion.check_sources(matched, root)
        except completion.IncompleteOutput as e:
            raise annotations.AnnotationError(str(e)) from e
        sources.extend((split, len(sources) + i, path) for i, path in enumerate(matched))
    parsed = (
        pipeline
        | "TFRecordFiles" >> beam.Create(sources, reshuffle=True)
        | "ReadTFRecords" >> beam.FlatMap(_tfrecord_entries, config.max_image_bytes)
        | "Parse" >> beam.Map(_parse_tfrecord_entry, config.max_image_bytes)
    )
    items = parsed | "Records" >> beam.Map(lambda p: p[0] if isinstance(p, tuple) else p)
    label_map = (
        parsed
        | "LabelPairs" >> beam.FlatMap(lambda p: p[1] if isinstance(p, tuple) else [])
        | "DistinctLabels" >> beam.Distinct()
        | "AllLabels" >> beam.combiners.ToList()
        | "LabelMap" >> beam.Map(records.label_map_from_pairs)
    )
    return items, label_map


# -- annotation files: read on the workers ------------------------------------------------------
# The driver hands Beam only the sources' paths (annotations.sources); a worker reads a COCO file,
# or lists a VOC/YOLO source, and the records (or the files) are spread over the workers before
# their images are read: one split's records must not all be checked by the worker that read it.


@dataclasses.dataclass(frozen=True)
class _Unreadable:
    """The label map side input of a dataset whose annotations could not be read: the first
    AnnotationError in input order. No image is read, and the driver raises it once the job
    ends (_raise_annotation_error)."""

    message: str


class _ReadAnnotations(beam.DoFn):
    """Runs `read(config, part)` (an iterable of outputs) on a worker. An AnnotationError goes out
    on ERRORS_KEY as (the part's ordinal, its message) instead of failing the job: raised on a
    worker it would reach the driver as whatever the runner makes of it (in worker processes, a
    RuntimeError holding the traceback as text) and be logged with Beam's traceback; as data it
    reaches the driver whole, and `litedet` prints its one line."""

    def __init__(self, read, config: DatasetConfig):
        self._read, self._config = read, config

    def process(self, part: annotations.Part):
        try:
            yield from self._read(self._config, part)
        except annotations.AnnotationError as e:
            yield beam.pvalue.TaggedOutput(ERRORS_KEY, (part.ordinal, str(e)))


def _label_map(errors, build, gathered):
    """The label map side input: `build(what the workers gathered)`, or _Unreadable with the
    first AnnotationError (by the ordinal of the part it came from; then one `build` raises,
    such as two COCO files naming one category id differently)."""
    return (
        errors
        | "AllErrors" >> beam.combiners.ToList()  # one list, empty when every part was read
        | "LabelMap" >> beam.Map(_label_map_or_error, build, gathered=beam.pvalue.AsList(gathered))
    )


def _label_map_or_error(errors, build, gathered):
    if errors:
        return _Unreadable(min(errors)[1])
    try:
        return build(gathered)
    except annotations.AnnotationError as e:
        return _Unreadable(str(e))


def _coco_file_outputs(config: DatasetConfig, source: annotations.Part):
    """A COCO file's categories (for the label map), then its records."""
    categories, records_of_file = annotations.read_coco_file(config, source)
    yield beam.pvalue.TaggedOutput(CATEGORIES_KEY, categories)
    yield from records_of_file


def _read_coco(pipeline, config: DatasetConfig, root: str):
    """COCO: one worker reads each split's file, whole (an image's objects can sit anywhere in
    it); the label map merges the files' categories."""
    config = config.with_root(root)
    read = (
        pipeline
        | "AnnotationFiles" >> beam.Create(annotations.sources(config), reshuffle=True)
        | "ReadAnnotationFiles"
        >> beam.ParDo(_ReadAnnotations(_coco_file_outputs, config)).with_outputs(
            ERRORS_KEY, CATEGORIES_KEY, main=RECORDS_KEY
        )
    )
    items = read[RECORDS_KEY] | "SpreadRecords" >> beam.Reshuffle()
    return items, _label_map(read[ERRORS_KEY], annotations.coco_label_map, read[CATEGORIES_KEY])


def _read_files(pipeline, config: DatasetConfig, list_files, read_file):
    """(records, errors) of a format with one annotation file per image (VOC, YOLO): a worker
    lists each source, and its files are spread over the workers and read one by one."""
    listed = (
        pipeline
        | "Sources" >> beam.Create(annotations.sources(config), reshuffle=True)
        | "ListFiles"
        >> beam.ParDo(_ReadAnnotations(list_files, config)).with_outputs(ERRORS_KEY, main=FILES_KEY)
    )
    read = (
        listed[FILES_KEY]
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadFiles"
        >> beam.ParDo(
            _ReadAnnotations(lambda config, part: [read_file(config, part)], config)
        ).with_outputs(ERRORS_KEY, main=RECORDS_KEY)
    )
    errors = (listed[ERRORS_KEY], read[ERRORS_KEY]) | "ReadErrors" >> beam.Flatten()
    return read[RECORDS_KEY], errors


def _read_voc(pipeline, config: DatasetConfig, root: str):
    """VOC: labels from `class_names`, else from the names the objects use."""
    config = config.with_root(root)
    items, errors = _read_files(pipeline, config, annotations.voc_files, annotations.read_voc_file)
    names = (
        items
        | "ObjectNames" >> beam.FlatMap(lambda record: [o.category for o in record.objects])
        | "DistinctNames" >> beam.Distinct()
    )
    return items, _label_map(errors, functools.partial(annotations.voc_label_map, config), names)


def _read_yolo(pipeline, config: DatasetConfig, root: str):
    """YOLO: the label map comes from the class names (data.yaml: read here, a few names)."""
    config = config.with_root(root)
    label_map = annotations.yolo_label_map(config)
    read = functools.partial(annotations.read_yolo_file, num_classes=len(label_map.names))
    items, errors = _read_files(pipeline, config, annotations.yolo_files, read)
    nothing = pipeline | "NoCategories" >> beam.Create([])
    return items, _label_map(errors, lambda _: label_map, nothing)


# dataset.format -> how its records enter the pipeline: (records, label map) PCollections.
SOURCES = {"coco": _read_coco, "voc": _read_voc, "yolo": _read_yolo, "tfrecord": _read_tfrecords}


def _records(pipeline, config: DatasetConfig, root: str):
    """(records, label map) PCollections of the dataset, re-split when `split_ratios` says."""
    items, label_map = SOURCES[config.format](pipeline, config, root)
    if config.split_ratios:
        items = items | "HashSplit" >> beam.Map(_resplit, config.split_ratios)
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
            items, label_map = _records(pipeline, config, root)
            checked = items | "CheckImages" >> beam.ParDo(
                _CheckImage(
                    root,
                    config.max_objects_per_image,
                    config.clip_tolerance_px,
                    config.max_image_bytes,
                    config.max_image_pixels,
                ),
                label_map=beam.pvalue.AsSingleton(label_map),
            ).with_outputs(QUARANTINE_KEY, main=EXAMPLES_KEY)
            kept, duplicates = _resolve_duplicates(checked[EXAMPLES_KEY], config.overlap_policy)
            # Shuffled here, where an example is its check result, not its bytes (TFX's
            # WriteSplit shuffles the serialized examples: the whole dataset through the
            # runner's shuffle, in memory on the FnApiRunner).
            serialized = (
                kept
                | "Shuffle" >> beam.Reshuffle()
                | "Serialize"
                >> beam.ParDo(_Serialize(root, config.max_image_bytes)).with_outputs(
                    QUARANTINE_KEY, main=EXAMPLES_KEY
                )
            )
            kept = serialized[EXAMPLES_KEY]
            quarantined = (
                checked[QUARANTINE_KEY],
                duplicates,
                serialized[QUARANTINE_KEY],
            ) | "AllQuarantined" >> beam.Flatten()

            by_split = kept | "PartitionSplits" >> beam.Partition(
                lambda item, n: splits.index(item[0]), len(splits)
            )
            for split, split_examples in zip(splits, by_split):
                (
                    split_examples
                    | f"Serialized[{split}]" >> beam.Map(lambda item: item[2])
                    | f"WriteSplit[{split}]"
                    >> beam.io.WriteToTFRecord(
                        # TFX's layout (write_split.WriteSplit): data_tfrecord-*-of-*.gz, GZIP.
                        os.path.join(
                            artifact_utils.get_split_uri(output_dict[EXAMPLES_KEY], split),
                            write_split.DEFAULT_TF_RECORD_FILE_NAME,
                        ),
                        file_name_suffix=".gz",
                    )
                )

            # One file, written whole, even when nothing was quarantined: Beam's S3 sink cannot
            # write an empty file (a multipart upload of zero parts is refused as MalformedXML).
            _ = (
                quarantined
                | "QuarantineJson" >> beam.Map(lambda q: json.dumps(q.to_dict(), sort_keys=True))
                | "QuarantineList" >> beam.combiners.ToList()
                | "WriteQuarantine"
                >> beam.Map(_write_lines, path=os.path.join(quarantine_uri, QUARANTINE_FILE))
            )

            count_keys = (
                (
                    kept
                    | "ExampleKeys" >> beam.FlatMap(lambda item: _count_keys("examples", item)),
                    quarantined
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
            _ = (
                label_map
                | "Readable" >> beam.Filter(lambda m: not isinstance(m, _Unreadable))
                | "WriteLabelMap" >> beam.Map(write_label_map, uri=label_map_uri)
            )

        _raise_annotation_error(quarantine_uri)
        summary = _report(quarantine_uri)
        quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        quarantine.set_int_custom_property("num_quarantined", sum(summary["quarantined"].values()))
        for split, count in summary["examples"].items():
            examples.set_int_custom_property(f"num_examples_{split}", count)
        # What data the model learned from, for the pusher's lineage (components/pusher).
        if exec_properties.get(FINGERPRINT_KEY):
            label_map_artifact = artifact_utils.get_single_instance(output_dict[LABEL_MAP_KEY])
            label_map_artifact.set_string_custom_property(
                "data_fingerprint", str(exec_properties[FINGERPRINT_KEY])
            )


def _write_lines(lines: List[str], path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(f"{line}\n" for line in sorted(lines)))


def _raise_annotation_error(quarantine_uri: str) -> None:
    """Raises the AnnotationError the workers met (_ReadAnnotations), if they met one."""
    path = os.path.join(quarantine_uri, ANNOTATION_ERROR_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            raise annotations.AnnotationError(f.read())


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
        with tf.io.gfile.GFile(os.path.join(quarantine_uri, QUARANTINE_FILE)) as f:
            lines = f.read()
        first = json.loads(lines.splitlines()[0]) if lines.strip() else None
        example = f"; e.g. {first['image']}: {first['reason']} ({first['detail']})" if first else ""
        raise EmptySplitError(
            f"split(s) {', '.join(empty)} have no usable image; quarantined by reason: "
            f"{dict(reasons) or 'none'}{example}",
            quarantine_lines=lines,
            summary=summary,
        )
    return summary
