"""Property-based fuzzing of DetectionExampleGen (docs/security.md): generated COCO, VOC and
TFRecord datasets, valid and broken (missing, truncated and foreign files, FIFOs, sockets, symlink
loops, PNGs TensorFlow refuses, EXIF-rotated JPEGs, bad boxes, NaN and infinity, huge numbers,
unknown categories, `..` and absolute paths, symlinks out of the root, unencodable names,
duplicate ids, annotations of no image, iscrowd values of every type, copies across splits, wrong
types, JSON damaged at any depth; TFRecord entries damaged in their framing or their features),
through the real executor (Beam, in process) and, for a few, through `litedet data convert` as a
subprocess.

Properties, for every input:
- it ends, in time (a watchdog thread; a FIFO must not hang a worker);
- it either fails with AnnotationError naming the annotation file (and, for damaged JSON, the
  byte offset), exactly when the generator broke a file as a whole (a wrong type where the
  format wants a number or a name, malformed XML or JSON, an image-set id without its file), or
  runs to the end (possibly EmptySplitError, a split left without a usable image);
- every image of the annotations (every TFRecord entry; every image id annotations name without
  an image) is one example or one quarantine line with a known reason and a detail: summary.json's
  counts add up, the TFRecords and quarantine.jsonl agree;
- every example kept decodes with TensorFlow (the Transform's decoder) at its declared size;
- nothing outside the root is read: a sentinel image and annotation sit beside the root, reached
  by `..`, absolute paths and symlinks, and neither is ever opened (an audit hook watches every
  open() of this process, where the in-process Beam runner reads) nor found in an example.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
import types
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from litedet.components.example_gen import annotations, records
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.example_gen.executor import EmptySplitError
from tests import datasets
from tests.datasets import feature_values, image_bytes
from tests.test_example_gen import quarantine_lines, run_example_gen, summary

SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WATCHDOG_S = 120

# --- watching open() ----------------------------------------------------------------------------

_WATCHED = {"folder": None, "opened": []}


def _audit(event, args):
    folder = _WATCHED["folder"]
    if folder is None or event != "open" or not args or not isinstance(args[0], (str, bytes)):
        return
    path = os.fsdecode(args[0]) if isinstance(args[0], bytes) else args[0]
    if os.path.abspath(path).startswith(folder + os.sep):
        _WATCHED["opened"].append(path)


sys.addaudithook(_audit)  # process-wide and permanent: it records only while a folder is set


@contextlib.contextmanager
def watching_opens(folder):
    _WATCHED["folder"], _WATCHED["opened"] = os.path.abspath(folder), []
    try:
        yield _WATCHED["opened"]
    finally:
        _WATCHED["folder"] = None


# --- the world around a dataset -----------------------------------------------------------------


def make_world(base):
    """base/outside/{sentinel.jpg, evil.xml}: what no input may read. base/root: the dataset."""
    outside = os.path.join(base, "outside")
    os.makedirs(outside)
    sentinel = image_bytes(33, 17, [(3, 3, 9, 9), (20, 2, 8, 8)])
    with open(os.path.join(outside, "sentinel.jpg"), "wb") as f:
        f.write(sentinel)
    with open(os.path.join(outside, "evil.xml"), "w") as f:
        f.write(datasets.voc_xml("../../outside/sentinel.jpg", 33, 17, [("a", 2, 2, 9, 9, 0)]))
    root = os.path.join(base, "root")
    os.makedirs(root)
    return root, outside, sentinel


def write_content(path, kind, width, height, previous, fifos):
    """The file an annotation names, of one `kind`; returns its bytes (None: no regular file)."""
    if kind == "missing":
        return None
    if kind == "fifo":
        os.mkfifo(path)
        fifos.append(path)
        return None
    if kind == "folder":
        os.makedirs(path)
        return None
    if kind == "socket":  # the file stays a socket after the socket is closed
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)
        return None
    if kind == "loop":
        os.symlink(os.path.basename(path), path)
        return None
    if kind == "copy" and previous:
        data = previous[-1]
    elif kind == "png":
        data = image_bytes(width, height, [(1, 1, width / 2, height / 2)], fmt="PNG")
    elif kind == "gif":
        data = image_bytes(width, height, fmt="GIF")
    elif kind == "truncated":
        whole = image_bytes(width, height, [(0, 0, width / 3, height / 3)])
        data = whole[: max(4, len(whole) // 2)]
    elif kind == "bad_crc_png":
        data = datasets.png_with_bad_crc(width, height)
    elif kind == "no_iend_png":
        data = datasets.png_without_iend(width, height)
    elif kind.startswith("exif"):  # exif<orientation>: the upright picture is width x height
        upright = datasets.drawn(width, height, [(width / 4, height / 4, width / 2, height / 2)])
        data = datasets.exif_rotated_jpeg(upright, int(kind[4:]))
    elif kind == "garbage":
        data = b"\xff\xd8\xff" + os.urandom(64)
    elif kind == "empty":
        data = b""
    else:  # jpeg (and "copy" with nothing to copy yet)
        data = image_bytes(width, height, [(width / 4, height / 4, width / 2, height / 2)])
    with open(path, "wb") as f:
        f.write(data)
    previous.append(data)
    return data


def weighted(*choices):
    """One of `choices`, (value, weight) pairs: mostly valid input, so that the broken one in an
    example meets images that are kept, duplicated and leaked."""
    return st.sampled_from([value for value, weight in choices for _ in range(weight)])


CONTENT = weighted(
    ("jpeg", 12),
    ("copy", 3),
    ("png", 1),
    ("gif", 1),
    ("truncated", 1),
    ("garbage", 1),
    ("empty", 1),
    ("missing", 1),
    ("fifo", 1),
    ("folder", 1),
    ("socket", 1),
    ("loop", 1),
    ("bad_crc_png", 1),
    ("no_iend_png", 1),
    ("exif6", 1),
    ("exif3", 1),
    ("exif8", 1),
)
# Where a file name points: inside the root, or (trying to get) out of it.
NAMING = weighted(
    ("plain", 20),
    ("inside_dotdot", 1),
    ("dotdot_out", 1),
    ("absolute_out", 1),
    ("symlink_out", 1),
    ("symlink_dir_out", 1),
    ("surrogate", 1),
    ("nul", 1),
)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-100, 100),
    st.sampled_from([10**400, -(10**400), 1e308, -1e308, 0]),
)
# A box: inside the image (fractions of its size), or any four numbers.
BOX = st.one_of(
    st.tuples(st.just("inside"), st.floats(0, 0.4), st.floats(0, 0.4), st.floats(0.1, 0.5)),
    st.tuples(st.just("any"), NUMBER, NUMBER, NUMBER, NUMBER),
)


def coco_bbox(box, size):
    if box[0] == "inside":
        _, x, y, extent = box
        return [x * size, y * size, extent * size, extent * size]
    return list(box[1:])


def file_name_for(naming, index, ext, images_dir, outside):
    """(the name the annotation gives, the path to write the file at or None)."""
    plain = f"img{index}.{ext}"
    if naming == "inside_dotdot":
        os.makedirs(os.path.join(images_dir, "sub"), exist_ok=True)
        return f"sub/../{plain}", os.path.join(images_dir, plain)
    if naming == "dotdot_out":
        return "../../outside/sentinel.jpg", None
    if naming == "absolute_out":
        return os.path.join(outside, "sentinel.jpg"), None
    if naming == "symlink_out":
        link = os.path.join(images_dir, f"link{index}.jpg")
        os.symlink(os.path.join(outside, "sentinel.jpg"), link)
        return f"link{index}.jpg", None
    if naming == "symlink_dir_out":
        link = os.path.join(images_dir, f"dir{index}")
        os.symlink(outside, link)
        return f"dir{index}/sentinel.jpg", None
    if naming == "surrogate":
        return f"\ud800{index}.jpg", None
    if naming == "nul":
        return f"img{index}\x00.jpg", None
    return plain, os.path.join(images_dir, plain)


# --- COCO ---------------------------------------------------------------------------------------

coco_image = st.fixed_dictionaries(
    {
        "split": weighted(("train", 2), ("eval", 1)),
        "content": CONTENT,
        "naming": NAMING,
        "size": st.integers(8, 48),
        "declared": weighted(
            ("right", 15),
            ("wrong", 1),
            ("nan", 1),
            ("negative", 1),
            ("huge", 1),
            ("string", 1),
            ("absent", 2),
        ),
        "id": weighted(("fresh", 5), ("duplicate", 1)),
        "boxes": st.lists(BOX, max_size=2),
        "category": weighted((1, 4), (3, 4), (2, 1), ("x", 1)),
        # iscrowd: absent, strict values, and values a truthiness test would misread
        "crowd": weighted(
            ("absent", 8), (0, 2), (1, 1), (True, 1), (False, 1), ("0", 1), ("false", 1), (2, 1)
        ),
        "orphan": weighted((False, 8), (True, 1)),  # an annotation of an id no image has
    }
)
# One per example at most: a break of the file as a whole, which must fail the step naming it.
# ("json", damage, where): the file's text damaged at any depth (`where`, a fraction of the
# text, picks a position right after a `[`, `{`, `,` or `:`, which are never inside a string
# here): cut there, a value nested 20,000 deep, an integer of 5,000 digits or a byte that is not
# UTF-8 inserted there.
JSON_DAMAGE = st.tuples(
    st.just("json"),
    st.sampled_from(["truncated", "deep", "huge_number", "not_utf8"]),
    st.floats(0, 1),
)
COCO_BREAK = st.one_of(
    weighted(
        (None, 12), ("id_type", 1), ("file_name_type", 1), ("bbox_length", 1), ("bbox_type", 1)
    ),
    JSON_DAMAGE,
)


def damage_json(data: bytes, damage: str, where: float) -> bytes:
    positions = [i + 1 for i, c in enumerate(data) if c in b"[{,:"]
    at = positions[min(int(where * len(positions)), len(positions) - 1)]
    insert = {
        "truncated": None,
        "deep": b"[" * 20_000 + b"]" * 20_000,
        # An integer token of its own (before a float, "999...5.5" would be a valid float: inf).
        "huge_number": b"9" * 5000 + b", ",
        "not_utf8": b"\xff",
    }[damage]
    return data[:at] if insert is None else data[:at] + insert + data[at:]


def write_fuzzed_coco(root, outside, images, broken):
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    os.makedirs(os.path.join(root, "annotations"))
    docs = {
        split: {
            "images": [],
            "annotations": [],
            "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        }
        for split in ("train", "eval")
    }
    previous, fifos, next_id = [], [], 1
    for index, spec in enumerate(images):
        doc, size = docs[spec["split"]], spec["size"]
        ext = "png" if spec["content"] == "png" else "jpg"
        name, path = file_name_for(spec["naming"], index, ext, images_dir, outside)
        if path is not None:
            write_content(path, spec["content"], size, size, previous, fifos)
        if spec["id"] == "duplicate" and doc["images"]:
            image_id = doc["images"][-1]["id"]
        else:
            image_id, next_id = next_id, next_id + 1
        declared = {
            "right": size,
            "wrong": size + 1,
            "nan": float("nan"),
            "negative": -size,
            "huge": 10**30,
            "string": "wide",
        }
        entry = {"id": image_id, "file_name": name}
        if spec["declared"] != "absent":
            entry["width"] = entry["height"] = declared[spec["declared"]]
        if spec["content"] in ("exif6", "exif8") and spec["declared"] == "wrong":
            entry["width"], entry["height"] = size, size + 1  # neither upright nor stored
        doc["images"].append(entry)
        for box in spec["boxes"]:
            annotation = {
                "image_id": image_id,
                "bbox": coco_bbox(box, size),
                "category_id": spec["category"],
            }
            if spec["crowd"] != "absent":
                annotation["iscrowd"] = spec["crowd"]
            doc["annotations"].append(annotation)
        if spec["orphan"]:
            doc["annotations"].append(
                {"image_id": 10**6 + index, "bbox": [1, 1, 2, 2], "category_id": 1}
            )
    doc = docs["train"]
    if broken == "id_type":
        doc["images"].append({"id": "seven", "file_name": "x.jpg"})
    elif broken == "file_name_type":
        doc["images"].append({"id": 10**6, "file_name": 17})
    elif broken == "bbox_length":
        doc["annotations"].append({"image_id": 1, "bbox": [1, 2, 3], "category_id": 1})
    elif broken == "bbox_type":
        doc["annotations"].append({"image_id": 1, "bbox": [1, 2, "3", 4], "category_id": 1})
    sources = {}
    for split, content in docs.items():
        sources[split] = f"annotations/{split}.json"
        data = json.dumps(content).encode()  # NaN, Infinity and 401-digit integers as such
        if isinstance(broken, tuple) and split == "train":
            data = damage_json(data, *broken[1:])
        with open(os.path.join(root, sources[split]), "wb") as f:
            f.write(data)
    orphans = sum(1 for spec in images if spec["orphan"])
    return sources, fifos, orphans


# --- VOC ----------------------------------------------------------------------------------------

VOC_NUMBER = st.sampled_from(["nan", "inf", "-inf", "1e999", "-5", "0", "3.5", "1e308"])
# (name, xmin, ymin, xmax, ymax, difficult), VOC's 1-based pixels: inside the image, or odd.
VOC_OBJECT = st.tuples(
    weighted(("a", 4), ("b", 4), ("zebra", 1)),
    st.one_of(
        st.tuples(st.just("inside"), st.floats(0, 0.4), st.floats(0, 0.4), st.floats(0.1, 0.5)),
        st.tuples(st.just("any"), VOC_NUMBER, VOC_NUMBER, VOC_NUMBER, VOC_NUMBER),
    ),
    weighted(("0", 6), ("1", 2), ("2", 1), ("yes", 1)),  # difficult: only 0 and 1 are flags
)
voc_image = st.fixed_dictionaries(
    {
        "content": CONTENT,
        "naming": weighted(
            ("plain", 16),
            ("inside_dotdot", 1),
            ("dotdot_out", 1),
            ("absolute_out", 1),
            ("symlink_out", 1),
        ),
        "size": st.integers(8, 48),
        "declared": weighted(
            ("right", 12), ("wrong", 1), ("nan", 1), ("inf", 1), ("1e999", 1), ("absent", 2)
        ),
        "objects": st.lists(VOC_OBJECT, max_size=2),
        "listed": weighted(("once", 5), ("twice", 1)),
    }
)
VOC_EXTRA = st.lists(st.sampled_from(["../../outside/evil", "link_evil", "fifo_xml"]), max_size=1)
VOC_BREAK = weighted((None, 12), ("not_a_number", 1), ("malformed", 1), ("no_file", 1))


def voc_object(obj, size):
    name, box, difficult = obj
    if box[0] == "inside":
        _, x, y, extent = box
        xmin, ymin = int(x * size) + 1, int(y * size) + 1
        span = max(1, int(extent * size))
        return name, xmin, ymin, xmin + span, ymin + span, difficult
    return (name, *box[1:], difficult)


def write_fuzzed_voc(root, outside, images, extra_ids, broken):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub))
    images_dir = os.path.join(root, "JPEGImages")
    annotations_dir = os.path.join(root, "Annotations")
    previous, fifos, ids = [], [], []
    for index, spec in enumerate(images):
        size = spec["size"]
        name, path = file_name_for(spec["naming"], index, "jpg", images_dir, outside)
        if path is not None:
            write_content(path, spec["content"], size, size, previous, fifos)
        declared = {"right": str(size), "wrong": str(size + 2)}.get(
            spec["declared"], spec["declared"]
        )
        objects = [voc_object(obj, size) for obj in spec["objects"]]
        xml = datasets.voc_xml(name, declared, declared, objects)
        if spec["declared"] == "absent":
            xml = xml.replace(
                f"<size><width>{declared}</width><height>{declared}</height>", "<size>"
            )
            xml = xml.replace("<size><depth>3</depth></size>", "")
        with open(os.path.join(annotations_dir, f"img{index}.xml"), "w") as f:
            f.write(xml)
        ids += [f"img{index}"] * (2 if spec["listed"] == "twice" else 1)
    for extra in extra_ids:
        if extra == "link_evil" and not os.path.lexists(
            os.path.join(annotations_dir, "link_evil.xml")
        ):
            os.symlink(
                os.path.join(outside, "evil.xml"), os.path.join(annotations_dir, "link_evil.xml")
            )
        if extra == "fifo_xml" and not os.path.lexists(
            os.path.join(annotations_dir, "fifo_xml.xml")
        ):
            os.mkfifo(os.path.join(annotations_dir, "fifo_xml.xml"))
            fifos.append(os.path.join(annotations_dir, "fifo_xml.xml"))
        ids.append(extra)
    if broken == "not_a_number":
        with open(os.path.join(annotations_dir, "broken.xml"), "w") as f:
            f.write(datasets.voc_xml("x.jpg", "wide", 10, []))
        ids.append("broken")
    elif broken == "malformed":
        with open(os.path.join(annotations_dir, "broken.xml"), "w") as f:
            f.write("<annotation><filename>x.jpg</filename><object>")
        ids.append("broken")
    elif broken == "no_file":
        ids.append("nowhere")
    with open(os.path.join(root, "ImageSets/Main/train.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return {"train": "ImageSets/Main/train.txt"}, fifos, len(ids)


# --- TFRecord ----------------------------------------------------------------------------------

# One entry of a TFRecord file: a good one, or damaged in its framing or its features.
TF_ENTRY = weighted(
    ("good", 8),
    ("copy", 1),  # the previous entry again: a duplicate id
    ("damaged_data", 1),  # a byte of its data flipped: its checksum fails
    ("damaged_length", 1),  # a byte of its length flipped: the rest of the file is lost
    ("height_float", 1),
    ("label_float", 1),
    ("encoded_int", 1),
    ("crowd_2", 1),
    ("text_newline", 1),
    ("big", 1),
    ("not_a_proto", 1),
    ("nan_box", 1),
    ("bad_crc_png", 1),
)
tfrecord_file = st.fixed_dictionaries(
    {
        "entries": st.lists(TF_ENTRY, min_size=1, max_size=5),
        "gzip": weighted((False, 2), (True, 1)),
        "cut": st.one_of(st.none(), st.floats(0.01, 0.99)),  # where to cut the file (not GZIP)
    }
)
TF_MAX_IMAGE_BYTES = 20_000


def tf_entry(kind, index, size):
    import tensorflow as tf

    if kind == "not_a_proto":
        return b"\x0a\xff\xff not a protobuf"
    jpeg = image_bytes(size, size, [(size / 4, size / 4, size / 2, size / 2)])
    box = [(0.25, 0.25, 0.75, 0.75)]
    features = {}
    floats = tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
    ints = tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))
    texts, labels = ["cat"], [1]
    if kind == "height_float":
        features["image__height"] = floats
    elif kind == "label_float":
        features["image__object__class__label"] = floats
    elif kind == "encoded_int":
        features["image__encoded"] = ints
    elif kind == "crowd_2":
        features["image__object__is_crowd"] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[2])
        )
    elif kind == "text_newline":
        texts = ["c\nat"]
    elif kind == "nan_box":
        box = [(float("nan"),) * 4]
    elif kind == "bad_crc_png":
        jpeg = datasets.png_with_bad_crc(size, size)
    elif kind == "big":
        noise = np.random.default_rng(index).integers(0, 256, (120, 120, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(noise).save(out, format="PNG")
        jpeg = out.getvalue()
        size = 120
    return datasets.tf_example(
        jpeg, size, size, box, labels, texts, source_id=f"e{index}", **features
    )


def write_fuzzed_tfrecords(root, files):
    """Writes each file; returns how many quarantine lines or examples the entries must give:
    one per entry up to a damaged length or a cut, where the rest of the file is one line."""
    import gzip
    import struct

    os.makedirs(os.path.join(root, "records"))
    expected = 0
    for number, spec in enumerate(files):
        entries, previous = [], None
        for index, kind in enumerate(spec["entries"]):
            if kind == "copy" and previous is not None:
                entries.append(previous)
                continue
            previous = tf_entry(kind, number * 10 + index, 16 + index)
            entries.append(previous)
        raw = bytearray()
        lines = 0
        for kind, entry in zip(spec["entries"], entries):
            start = len(raw)
            raw += struct.pack("<Q", len(entry))
            raw += struct.pack("<I", _masked_crc(bytes(raw[start : start + 8])))
            raw += entry + struct.pack("<I", _masked_crc(entry))
            if kind == "damaged_data":
                raw[start + 12 + len(entry) // 2] ^= 0x01
            lines += 1
            if kind == "damaged_length":
                raw[start] ^= 0x01
                break  # nothing after it can be framed: one line for the rest
        if spec["cut"] is not None and not spec["gzip"]:
            at = max(1, int(spec["cut"] * len(raw)))
            boundaries, end = [], 0
            for entry in entries[:lines]:
                end += 12 + len(entry) + 4
                boundaries.append(end)
            whole = sum(1 for b in boundaries if b <= at)
            if whole < lines:  # cut inside an entry: that entry and the rest, one line
                lines = whole + (0 if at in boundaries else 1)
            raw = raw[:at]
        data = gzip.compress(bytes(raw), mtime=0) if spec["gzip"] else bytes(raw)
        name = f"f{number}.tfrecord" + (".gz" if spec["gzip"] else "")
        with open(os.path.join(root, "records", name), "wb") as f:
            f.write(data)
        expected += lines
    return expected


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C, written here independently of the reader under test."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_scenario(base, files):
    root, _, sentinel = make_world(base)
    expected = write_fuzzed_tfrecords(root, files)
    config = DatasetConfig(
        root=root,
        format="tfrecord",
        sources={"train": "records/*"},
        max_image_bytes=TF_MAX_IMAGE_BYTES,
    )
    return Scenario(config, [], expected, None, "", sentinel)


# --- two ways through the same checks -----------------------------------------------------------


@dataclasses.dataclass
class Scenario:
    config: DatasetConfig
    fifos: list
    images: int  # how many images the annotations name: each must be accounted for
    broken: Optional[str]  # a break of an annotation file as a whole, which must fail the step
    annotation_file: str  # the file the failure must name
    sentinel: bytes  # an image outside the root, which no example may hold


def coco_scenario(base, images, broken):
    root, outside, sentinel = make_world(base)
    sources, fifos, orphans = write_fuzzed_coco(root, outside, images, broken)
    return Scenario(
        DatasetConfig(root=root, format="coco", sources=sources),
        fifos,
        len(images) + orphans,  # each id without an image: one annotation_without_image line
        broken,
        os.path.join(root, "annotations", "train.json"),
        sentinel,
    )


def voc_scenario(base, images, extra_ids, broken):
    root, outside, sentinel = make_world(base)
    sources, fifos, listed = write_fuzzed_voc(root, outside, images, extra_ids, broken)
    problem_file = {"not_a_number": "broken.xml", "malformed": "broken.xml", "no_file": "nowhere"}
    return Scenario(
        DatasetConfig(root=root, format="voc", sources=sources, class_names=["a", "b"]),
        fifos,
        listed,
        broken,
        os.path.join(root, "Annotations", problem_file.get(broken, "")),
        sentinel,
    )


def watched(function, fifos):
    """Runs `function` under a watchdog; (its result, its exception), either None."""
    result = {}

    def target():
        try:
            result["value"] = function()
        except BaseException as e:  # noqa: BLE001 - judged by the caller
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WATCHDOG_S)
    hung = thread.is_alive()
    for fifo in fifos:  # free a reader that would be stuck in open(), so that the thread ends
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    thread.join(30)
    assert not hung, f"the ExampleGen did not finish within {WATCHDOG_S} s"
    return result.get("value"), result.get("error")


def checked_directly(config):
    """The executor's own steps without Beam, for many more inputs per second: the annotation
    reader (or, for TFRecords, the entry reader and parser), _CheckImage (read inside the root,
    every check) and the duplicate resolution. Returns (kept examples, quarantined)."""
    if config.format == "tfrecord":
        items, label_map = tfrecord_items(config)
    else:
        items, label_map = annotations.READERS[config.format](config)  # numbered as on Beam
    return check_and_resolve(config, items, label_map)


def tfrecord_items(config):
    """What executor._read_tfrecords hands to the checks, without Beam."""
    import tensorflow as tf

    from litedet.components.example_gen import executor

    items, pairs = [], set()
    for split, pattern in config.sources.items():
        for number, path in enumerate(sorted(tf.io.gfile.glob(os.path.join(config.root, pattern)))):
            for entry in executor._tfrecord_entries((split, number, path), config.max_image_bytes):
                parsed = executor._parse_tfrecord_entry(entry, config.max_image_bytes)
                if isinstance(parsed, tuple):
                    items.append(parsed[0])
                    pairs.update(parsed[1])
                else:
                    items.append(parsed)
    return items, records.label_map_from_pairs(sorted(pairs))


def check_and_resolve(config, items, label_map):
    import apache_beam as beam

    from litedet.components.example_gen import executor

    check = executor._CheckImage(
        config.root,
        config.max_objects_per_image,
        config.clip_tolerance_px,
        config.max_image_bytes,
        config.max_image_pixels,
    )
    examples, quarantined = [], []
    for record in items:
        for out in check.process(record, label_map):
            is_tagged = isinstance(out, beam.pvalue.TaggedOutput)
            (quarantined if is_tagged else examples).append(out.value if is_tagged else out)
    by_id, by_content, set_aside = {}, {}, {}
    for checked in examples:
        key, value = executor._id_key(checked)
        by_id.setdefault(key, []).append(value)
    for keyed in by_id.items():
        for out in executor._first_of_each_id(keyed):
            if isinstance(out, beam.pvalue.TaggedOutput):
                set_aside.update([out.value])
            else:
                by_content.setdefault(out[0], []).append(out[1])
    for keyed in by_content.items():
        set_aside.update(executor._training_copies_of_held_out_images(keyed))
    serialize = executor._Serialize(config.root, config.max_image_bytes)
    kept = []
    for checked in examples:
        if checked.ordinal in set_aside:
            continue
        for out in serialize.process(checked):  # the image read again and written
            if isinstance(out, beam.pvalue.TaggedOutput):
                quarantined.append(out.value)
            else:
                kept.append(types.SimpleNamespace(image=checked.image, serialized=out[2]))
    return kept, quarantined + list(set_aside.values())


def outcome_of_the_executor(config, out):
    """The real executor (Beam, in process); (kept examples' encoded images, quarantine lines),
    after checking that summary.json, the TFRecords and quarantine.jsonl agree."""
    try:
        run_example_gen(out, config)
    except EmptySplitError:
        pass  # a split left without a usable image: the counts are written all the same
    quarantine_uri = str(out / "out" / "quarantine")
    counts, lines = summary(quarantine_uri), quarantine_lines(quarantine_uri)
    assert len(lines) == sum(counts["quarantined"].values())
    encoded = []
    for split, count in counts["examples"].items():
        examples = datasets.read_examples(str(out / "out" / "examples" / f"Split-{split}"))
        assert len(examples) == count, split
        encoded += [feature_values(e, "image/encoded")[0] for e in examples]
    return encoded, [records.Quarantined(**line) for line in lines]


def check_scenario(scenario, run):
    """The properties, for `run(config) -> (kept, quarantined)`."""
    outside = os.path.join(os.path.dirname(scenario.config.root), "outside")
    with watching_opens(outside) as opened:
        outcome, error = watched(lambda: run(scenario.config), scenario.fifos)
    assert opened == [], f"read outside the root: {opened}"
    if scenario.broken:
        assert isinstance(error, annotations.AnnotationError), (scenario.broken, error)
        assert scenario.annotation_file in str(error), str(error)
        if isinstance(scenario.broken, tuple):  # damaged JSON: the byte offset is named
            assert "not valid JSON" in str(error) and " byte " in str(error), str(error)
        return
    if error is not None:
        raise error
    kept, quarantined = outcome
    assert len(kept) + len(quarantined) == scenario.images, (len(kept), quarantined)
    for entry in quarantined:
        assert entry.reason in records.QUARANTINE_REASONS and entry.detail, entry
    assert not any(scenario.sentinel in getattr(k, "serialized", k) for k in kept)
    for kept_example in kept:  # what is kept decodes as the Transform decodes it, at its size
        check_decodable(kept_example)


def check_decodable(example):
    """The example's image decodes with TensorFlow (the Transform's decoder) at the size the
    example declares: an EXIF-rotated image is stored upright, not merely declared so."""
    import tensorflow as tf

    if isinstance(example, bytes):  # the executor run gives the encoded image only
        tf.io.decode_image(example, channels=3, expand_animations=False)
        return
    parsed = tf.train.Example.FromString(example.serialized)
    (encoded,) = feature_values(parsed, "image/encoded")
    pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    size = feature_values(parsed, "image/height") + feature_values(parsed, "image/width")
    assert list(pixels.shape[:2]) == size, (example.image, pixels.shape, size)


def beam_run(base):
    return lambda config: outcome_of_the_executor(config, pathlib.Path(base) / "run")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --- the properties -----------------------------------------------------------------------------


def coco_spec(**changes):
    spec = {
        "split": "train",
        "content": "jpeg",
        "naming": "plain",
        "size": 24,
        "declared": "right",
        "id": "fresh",
        "boxes": [("inside", 0.1, 0.1, 0.3)],
        "category": 1,
        "crowd": "absent",
        "orphan": False,
    }
    return dict(spec, **changes)


# Always tried, besides the generated inputs: each policy at least once (a training image copied
# into eval, a duplicate id, a truncated file, a box without area).
POLICIES = [
    coco_spec(),
    coco_spec(split="eval", content="copy"),
    coco_spec(content="truncated"),
    coco_spec(size=30),
    coco_spec(size=31, id="duplicate"),
    coco_spec(size=32, boxes=[("any", 1, 1, 0, 5)]),
    # round two (docs/security.md, item 11): each class at least once
    coco_spec(size=33, crowd="0", orphan=True),
    coco_spec(size=34, content="exif6"),
    coco_spec(size=35, content="no_iend_png"),
    coco_spec(size=36, content="socket"),
    coco_spec(size=37, content="loop"),
]


@settings(max_examples=150, **SETTINGS)
@given(images=st.lists(coco_image, min_size=1, max_size=6), broken=COCO_BREAK)
@example(images=POLICIES, broken=None)
def test_fuzzed_coco_is_checked_without_crash_loss_or_leaving_the_root(fuzz_dir, images, broken):
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        check_scenario(coco_scenario(base, images, broken), checked_directly)


@settings(max_examples=100, **SETTINGS)
@given(images=st.lists(voc_image, min_size=1, max_size=5), extra_ids=VOC_EXTRA, broken=VOC_BREAK)
def test_fuzzed_voc_is_checked_without_crash_loss_or_leaving_the_root(
    fuzz_dir, images, extra_ids, broken
):
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        check_scenario(voc_scenario(base, images, extra_ids, broken), checked_directly)


@settings(max_examples=6, **SETTINGS)
@given(images=st.lists(coco_image, min_size=2, max_size=6), broken=COCO_BREAK)
@example(images=POLICIES, broken=None)
def test_fuzzed_coco_through_the_executor(fuzz_dir, images, broken):
    """Fewer inputs (a Beam run each): the wiring, summary.json and the written files."""
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        check_scenario(coco_scenario(base, images, broken), beam_run(base))


@settings(max_examples=4, **SETTINGS)
@given(images=st.lists(voc_image, min_size=2, max_size=5), extra_ids=VOC_EXTRA, broken=VOC_BREAK)
def test_fuzzed_voc_through_the_executor(fuzz_dir, images, extra_ids, broken):
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        check_scenario(voc_scenario(base, images, extra_ids, broken), beam_run(base))


@settings(max_examples=60, **SETTINGS)
@given(files=st.lists(tfrecord_file, min_size=1, max_size=2))
def test_fuzzed_tfrecords_are_checked_entry_by_entry(fuzz_dir, files):
    """Damaged framing, wrong feature types, bad flags and names, oversized and undecodable
    images: each entry is an example or a quarantine line (the rest of a file after a damaged
    length or a cut is one line), never a failed step."""
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        check_scenario(tfrecord_scenario(base, files), checked_directly)


@settings(max_examples=3, **SETTINGS)
@given(files=st.lists(tfrecord_file, min_size=1, max_size=2))
def test_fuzzed_tfrecords_through_the_executor(fuzz_dir, files):
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        check_scenario(tfrecord_scenario(base, files), beam_run(base))


# --- through the command line -------------------------------------------------------------------


def convert_by_cli(config, out):
    """`litedet data convert` in a fresh process on `config`: (exit code, stderr)."""
    import subprocess

    import yaml

    path = os.path.join(os.path.dirname(out), "dataset.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"dataset": json.loads(config.to_json())}, f)
    done = subprocess.run(
        [sys.executable, "-m", "litedet.cli", "data", "convert", "--config", path, "--out", out],
        capture_output=True,
        text=True,
        timeout=WATCHDOG_S * 2,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return done.returncode, done.stderr


@pytest.mark.slow  # a process start (TensorFlow's import) per example
@settings(max_examples=2, **SETTINGS)
@given(images=st.lists(coco_image, min_size=2, max_size=6), broken=COCO_BREAK)
@example(images=POLICIES, broken=("json", "deep", 0.5))
def test_fuzzed_coco_through_the_command_line(fuzz_dir, images, broken):
    """The real command, as a user runs it: exit 0 with every image accounted for in a whole
    output folder, or exit 2 with one line naming the annotation file (a broken file) or the
    empty split; never a traceback, never a partial folder."""
    from litedet.components.example_gen import completion

    with tempfile.TemporaryDirectory(dir=fuzz_dir) as base:
        scenario = coco_scenario(base, images, broken)
        out = os.path.join(base, "converted")
        code, stderr = convert_by_cli(scenario.config, out)
        assert "Traceback" not in stderr, stderr
        if code != 0:
            assert code == 2, stderr
            errors = [line for line in stderr.splitlines() if line.startswith("litedet: error:")]
            assert len(errors) == 1, stderr
            assert not os.path.exists(out)
            expected = scenario.annotation_file if scenario.broken else "have no usable image"
            assert expected in errors[0], errors[0]
            return
        assert not scenario.broken, scenario.broken
        marker = completion.check(out)
        counts = marker["summary"]
        assert sum(counts["examples"].values()) + sum(counts["quarantined"].values()) == (
            scenario.images
        )
        for split in counts["examples"]:
            for kept in datasets.read_examples(os.path.join(out, "examples", f"Split-{split}")):
                (encoded,) = feature_values(kept, "image/encoded")
                assert encoded != scenario.sentinel
                check_decodable(encoded)
