"""One image record -> a TF Object Detection API tf.Example, or a quarantine entry with a reason.

The policy (also in docs/data.md):
- An image with any problem is quarantined whole. Dropping just the bad box would teach the model
  that the object it covered is background.
- Boxes sticking out of the image by at most `clip_tolerance_px` (annotation-tool rounding) are
  clipped to the image, not dropped.
- COCO `iscrowd` and VOC `difficult` objects are kept and flagged; training and evaluation ignore
  them instead of learning them as single objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from typing import List, Optional, Tuple

from PIL import Image

from litedet.components.example_gen.annotations import ImageRecord, LabelMap, ObjectAnnotation
from litedet.components.example_gen.config import DEFAULT_MAX_IMAGE_PIXELS

# Every reason an image can be quarantined for, with what it means; docs and tests use this list.
QUARANTINE_REASONS = {
    "missing_image": "the image file named by the annotation does not exist",
    "unreadable_image": "the image file exists but could not be read",
    "unsupported_format": "the image is neither JPEG nor PNG",
    "corrupt_image": "the image bytes do not decode",
    "truncated_image": "the image file ends before its pixel data does",
    "size_mismatch": "the declared width/height differ from the decoded pixels",
    "unknown_category": "an object's category is not in the label map",
    "box_outside_image": "a box lies outside the image by more than the clipping tolerance",
    "zero_area_box": "a box has zero or negative width or height (after clipping)",
    "too_many_objects": "more objects than max_objects_per_image: they would be cut in Transform",
    "malformed_record": "a TFRecord entry is not a usable TF OD API tf.Example",
    "malformed_label": "a YOLO label line is not 'class x y w h' (or a polygon) in [0, 1]",
    "path_outside_root": "the file named lies outside the dataset root (.., absolute, symlink)",
    "not_a_regular_file": "the file named is a folder, FIFO, device or socket",
    "file_too_large": "the file is larger than max_image_bytes",
    "too_many_pixels": "the image header declares more pixels than max_image_pixels",
    "non_finite_number": "a box coordinate or image size is NaN or infinite",
    "unencodable_file_name": "the file name is not valid text (a lone surrogate, a NUL)",
    "duplicate_image_id": "an earlier image of the same split has the same id",
    "also_in_evaluation": "a training image whose bytes are also in an evaluation split",
}

_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"RIFF", "webp"),
)
SUPPORTED_FORMATS = ("jpeg", "png")


@dataclasses.dataclass(frozen=True)
class Quarantined:
    source_id: str
    split: str
    image: str
    reason: str
    detail: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckedImage:
    """A record that passed every check, with boxes normalized to [0, 1]."""

    record: ImageRecord
    image_format: str
    width: int
    height: int
    boxes: Tuple[Tuple[float, float, float, float], ...]  # (ymin, xmin, ymax, xmax), normalized
    labels: Tuple[int, ...]
    texts: Tuple[str, ...]
    is_crowd: Tuple[int, ...]
    difficult: Tuple[int, ...]


class _Problem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sniff_format(data: bytes) -> str:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return "unknown"


def _decoded_size(data: bytes, max_pixels: int) -> Tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                # Before load(): the decoded pixels are what would take the memory.
                raise _Problem(
                    "too_many_pixels",
                    f"{width}x{height} = {width * height} pixels > max_image_pixels={max_pixels}",
                )
            image.load()  # forces a full decode: a header alone does not prove the pixels are there
            return image.size
    except _Problem:
        raise
    except OSError as e:
        if "truncated" in str(e):
            raise _Problem("truncated_image", str(e)) from e
        raise _Problem("corrupt_image", str(e)) from e
    except Image.DecompressionBombError as e:  # only when max_pixels is above PIL's own limit
        raise _Problem("too_many_pixels", str(e)) from e
    except (ValueError, SyntaxError) as e:
        raise _Problem("corrupt_image", str(e)) from e
    except Exception as e:  # noqa: BLE001 - PIL's decoders raise more kinds (EOFError,
        # struct.error, ...) on crafted bytes: one image's bytes must never fail the run.
        raise _Problem("corrupt_image", f"{type(e).__name__}: {e}") from e


def _normalized_box(
    obj: ObjectAnnotation, width: int, height: int, tolerance: float
) -> Tuple[float, float, float, float]:
    xmin, ymin, xmax, ymax = obj.box
    if not all(math.isfinite(v) for v in obj.box):
        # NaN compares false with every bound: unchecked, [NaN]*4 became a full-image box.
        raise _Problem("non_finite_number", f"box (xmin, ymin, xmax, ymax) = {obj.box} px")
    if (
        xmin < -tolerance
        or ymin < -tolerance
        or xmax > width + tolerance
        or ymax > height + tolerance
    ):
        raise _Problem(
            "box_outside_image",
            f"box (xmin, ymin, xmax, ymax) = {obj.box} px lies outside the "
            f"{width}x{height} image by more than {tolerance} px",
        )
    xmin, xmax = max(0.0, xmin), min(float(width), xmax)
    ymin, ymax = max(0.0, ymin), min(float(height), ymax)
    if xmax <= xmin or ymax <= ymin:
        raise _Problem("zero_area_box", f"box {obj.box} px has no area inside the image")
    return ymin / height, xmin / width, ymax / height, xmax / width


def _in_pixels(record: ImageRecord, width: int, height: int):
    """The record's objects with pixel boxes (YOLO labels are fractions of the image)."""
    if not record.normalized_boxes:
        return record.objects
    return tuple(
        dataclasses.replace(
            o, box=(o.box[0] * width, o.box[1] * height, o.box[2] * width, o.box[3] * height)
        )
        for o in record.objects
    )


def check_image(
    record: ImageRecord,
    data: bytes,
    label_map: LabelMap,
    max_objects: int,
    clip_tolerance_px: float,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> CheckedImage:
    """Runs every check on one image; raises `_Problem` (via `check_or_quarantine`) on the first."""
    image_format = sniff_format(data)
    if image_format not in SUPPORTED_FORMATS:
        raise _Problem(
            "unsupported_format",
            f"detected {image_format}; supported: {', '.join(SUPPORTED_FORMATS)}",
        )
    declared = (record.width, record.height)
    if any(isinstance(v, float) and not math.isfinite(v) for v in declared):
        raise _Problem("non_finite_number", f"declared size {record.width}x{record.height}")
    width, height = _decoded_size(data, max_pixels)
    if None not in declared and declared != (width, height):
        raise _Problem(
            "size_mismatch", f"declared {record.width}x{record.height}, pixels are {width}x{height}"
        )
    if len(record.objects) > max_objects:
        raise _Problem(
            "too_many_objects",
            f"{len(record.objects)} objects > max_objects_per_image={max_objects}",
        )
    boxes, labels, texts = [], [], []
    for obj in _in_pixels(record, width, height):
        label = label_map.label_of(obj.category)
        if label is None:
            raise _Problem(
                "unknown_category",
                f"category {obj.category!r} is not in the label map ({', '.join(label_map.keys)})",
            )
        boxes.append(_normalized_box(obj, width, height, clip_tolerance_px))
        labels.append(label)
        texts.append(label_map.name_of(label))
    return CheckedImage(
        record=record,
        image_format=image_format,
        width=width,
        height=height,
        boxes=tuple(boxes),
        labels=tuple(labels),
        texts=tuple(texts),
        is_crowd=tuple(int(o.is_crowd) for o in record.objects),
        difficult=tuple(int(o.difficult) for o in record.objects),
    )


def quarantined(record: ImageRecord, reason: str, detail: str) -> Quarantined:
    """The quarantine entry of `record` for `reason`."""
    return Quarantined(
        record.source_id, record.split, record.image_path or "(inline image bytes)", reason, detail
    )


def check_or_quarantine(
    record: ImageRecord,
    data: Optional[bytes],
    label_map: LabelMap,
    max_objects: int,
    clip_tolerance_px: float,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
):
    """Returns a `CheckedImage`, or a `Quarantined` saying why the image cannot be used.
    `data` is None when the image file is missing (or was never read: `record.problem`)."""
    where = record.image_path or "(inline image bytes)"
    if record.problem:
        return quarantined(record, *record.problem)
    if data is None:
        return Quarantined(
            record.source_id, record.split, where, "missing_image", f"{where} does not exist"
        )
    try:
        return check_image(record, data, label_map, max_objects, clip_tolerance_px, max_pixels)
    except _Problem as problem:
        return Quarantined(record.source_id, record.split, where, problem.reason, problem.detail)


def to_tf_example(checked: CheckedImage, data: bytes, sha256: Optional[str] = None):
    """The TF Object Detection API keys, plus is_crowd/difficult flags for ignored objects.
    `sha256`: the hex digest of `data` when the caller has it already."""
    import tensorflow as tf

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    record = checked.record
    columns = list(zip(*checked.boxes)) if checked.boxes else [(), (), (), ()]
    ymin, xmin, ymax, xmax = columns
    filename = record.image_path.rsplit("/", 1)[-1] if record.image_path else ""
    feature = {
        "image/encoded": strings([data]),
        "image/format": strings([checked.image_format.encode()]),
        "image/height": ints([checked.height]),
        "image/width": ints([checked.width]),
        "image/source_id": strings([record.source_id.encode()]),
        "image/filename": strings([filename.encode()]),
        "image/key/sha256": strings([(sha256 or hashlib.sha256(data).hexdigest()).encode()]),
        "image/object/bbox/ymin": floats(ymin),
        "image/object/bbox/xmin": floats(xmin),
        "image/object/bbox/ymax": floats(ymax),
        "image/object/bbox/xmax": floats(xmax),
        "image/object/class/label": ints(checked.labels),
        "image/object/class/text": strings([t.encode() for t in checked.texts]),
        "image/object/is_crowd": ints(checked.is_crowd),
        "image/object/difficult": ints(checked.difficult),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def record_from_tf_example(serialized: bytes, split: str, index_hint: str):
    """A TF OD API tf.Example (TFRecord input) -> (ImageRecord, [(label key, text)]), or a
    `Quarantined` when the entry is not usable. Boxes come back to pixels so that every format
    goes through the same checks."""
    import tensorflow as tf

    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as e:  # protobuf raises DecodeError, a bare Exception subclass
        return Quarantined(index_hint, split, "", "malformed_record", f"not a tf.Example: {e}")
    feature = example.features.feature

    def values(key):
        if key not in feature:
            return []
        kind = feature[key].WhichOneof("kind")
        return list(getattr(feature[key], kind).value) if kind else []

    encoded = values("image/encoded")
    source_id = (values("image/source_id") or [b""])[0].decode("utf-8", "replace")
    if not source_id:
        source_id = hashlib.sha256(encoded[0] if encoded else serialized).hexdigest()[:16]
    if len(encoded) != 1:
        return Quarantined(
            source_id, split, "", "malformed_record", "image/encoded must hold exactly one value"
        )
    height, width = values("image/height"), values("image/width")
    if len(height) != 1 or len(width) != 1 or height[0] <= 0 or width[0] <= 0:
        return Quarantined(
            source_id,
            split,
            "",
            "malformed_record",
            "image/height and image/width must each hold one positive integer",
        )
    box_keys = [f"image/object/bbox/{c}" for c in ("xmin", "ymin", "xmax", "ymax")]
    xmin, ymin, xmax, ymax = (values(k) for k in box_keys)
    labels = values("image/object/class/label")
    texts = [t.decode("utf-8", "replace") for t in values("image/object/class/text")]
    crowd, difficult = values("image/object/is_crowd"), values("image/object/difficult")
    n = len(labels)
    lengths = {len(xmin), len(ymin), len(xmax), len(ymax), n}
    if len(lengths) != 1 or (texts and len(texts) != n) or (crowd and len(crowd) != n):
        return Quarantined(
            source_id,
            split,
            "",
            "malformed_record",
            "box coordinate, label and text lists have different lengths",
        )
    w, h = width[0], height[0]
    objects = tuple(
        ObjectAnnotation(
            category=str(labels[i]),
            box=(xmin[i] * w, ymin[i] * h, xmax[i] * w, ymax[i] * h),
            is_crowd=bool(crowd[i]) if crowd else False,
            difficult=bool(difficult[i]) if difficult and len(difficult) == n else False,
        )
        for i in range(n)
    )
    pairs = [(str(labels[i]), texts[i] if texts else f"class_{labels[i]}") for i in range(n)]
    record = ImageRecord(
        source_id=source_id, split=split, image_bytes=encoded[0], width=w, height=h, objects=objects
    )
    return record, pairs


def label_map_from_pairs(pairs: List[Tuple[str, str]]) -> LabelMap:
    """Label map of a TFRecord dataset: its labels in numeric order, renumbered 1..K."""
    names = {}
    for key, text in pairs:
        names.setdefault(key, text)
    keys = sorted(names, key=int)
    return LabelMap(keys=tuple(keys), names=tuple(names[k] for k in keys))
