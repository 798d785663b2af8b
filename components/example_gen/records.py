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
import re
from typing import List, Optional, Tuple

from PIL import Image

from litedet.components.example_gen.annotations import ImageRecord, LabelMap, ObjectAnnotation
from litedet.components.example_gen.config import DEFAULT_MAX_IMAGE_PIXELS, label_name_problem

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
    "ambiguous_image_id": "several images of one COCO file share this id: whose boxes are whose "
    "is unknown",
    "annotation_without_image": "annotations name an image id that no image of their file has",
    "invalid_flag": "an object's iscrowd or difficult flag is not 0, 1, true or false",
    "symlink_loop": "the file named is a symlink loop (too many levels of symbolic links)",
    "also_in_evaluation": "a training image whose bytes are also in an evaluation split",
    "image_changed": "the image file changed (or went) between its check and its writing",
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
    # The bytes to store when they are not the input's: an EXIF-rotated image, turned upright.
    upright: Optional[bytes] = None


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


# EXIF orientations (tag 0x0112) whose upright image swaps width and height.
_TRANSPOSED = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class _Decoded:
    width: int  # of the stored pixels, as TensorFlow decodes them (EXIF ignored)
    height: int
    orientation: int  # EXIF orientation, 1 (none) .. 8


def _decoded_size(data: bytes, max_pixels: int) -> _Decoded:
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
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if not isinstance(orientation, int) or not 1 <= orientation <= 8:
                orientation = 1  # an invalid tag: viewers show the stored pixels, as we do
            return _Decoded(width, height, orientation)
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


def check_decodes_in_tensorflow(data: bytes) -> None:
    """Decodes `data` exactly as the Transform does (components/detection/preprocessing.py):
    PIL accepts bytes TensorFlow refuses (a PNG chunk with a bad CRC, a PNG without its IEND
    chunk), and one such image would fail the Transform for the whole dataset."""
    import tensorflow as tf

    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", e.message).strip()
        raise _Problem(
            "corrupt_image", f"TensorFlow's decoder (the Transform's) refuses it: {message}"
        ) from e


def _upright(data: bytes, image_format: str) -> bytes:
    """The image turned as its EXIF orientation says, re-encoded without EXIF: TensorFlow's
    decoders ignore the tag, so the stored pixels must already be upright."""
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as image:
        turned = ImageOps.exif_transpose(image)
        out = io.BytesIO()
        if image_format == "jpeg":
            turned.save(out, format="JPEG", quality=95)
        else:
            turned.save(out, format="PNG")
        return out.getvalue()


def _orient(record: ImageRecord, data: bytes, image_format: str, decoded: _Decoded):
    """(width, height, upright bytes or None) of the image the boxes are on.

    An EXIF orientation is applied when the declared size is the upright one (or cannot tell:
    absent, or a square image, or a flip that keeps the size): photo viewers and annotation tools
    show the image upright, so that is what boxes are drawn on. When the declared size is the
    stored pixels' and not the upright one, the annotation was made on the stored pixels, which
    are kept as they are. Any other declared size is a size_mismatch naming both."""
    stored = (decoded.width, decoded.height)
    declared = (record.width, record.height)
    if decoded.orientation == 1:
        if None not in declared and declared != stored:
            raise _Problem(
                "size_mismatch",
                f"declared {record.width}x{record.height}, pixels are {stored[0]}x{stored[1]}",
            )
        return stored[0], stored[1], None
    upright = stored[::-1] if decoded.orientation in _TRANSPOSED else stored
    if None in declared or declared == upright:
        return upright[0], upright[1], _upright(data, image_format)
    if declared == stored:
        return stored[0], stored[1], None
    raise _Problem(
        "size_mismatch",
        f"declared {record.width}x{record.height}; the pixels are {stored[0]}x{stored[1]}, "
        f"{upright[0]}x{upright[1]} upright (EXIF orientation {decoded.orientation})",
    )


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
    width, height, upright = _orient(record, data, image_format, _decoded_size(data, max_pixels))
    check_decodes_in_tensorflow(upright or data)
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
        upright=upright,
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


# The kind each TF OD API feature must have (tf.train.Feature's oneof); any other is a
# malformed_record, never a TypeError in a Beam worker.
_FEATURE_KINDS = {
    "image/encoded": "bytes_list",
    "image/source_id": "bytes_list",
    "image/height": "int64_list",
    "image/width": "int64_list",
    "image/object/bbox/xmin": "float_list",
    "image/object/bbox/ymin": "float_list",
    "image/object/bbox/xmax": "float_list",
    "image/object/bbox/ymax": "float_list",
    "image/object/class/label": "int64_list",
    "image/object/class/text": "bytes_list",
    "image/object/is_crowd": "int64_list",
    "image/object/difficult": "int64_list",
}


class _Malformed(Exception):
    pass


def record_from_tf_example(
    serialized: bytes, split: str, index_hint: str, max_image_bytes: Optional[int] = None
):
    """A TF OD API tf.Example (TFRecord input) -> (ImageRecord, [(label key, text)]), or a
    `Quarantined` when the entry is not usable (`malformed_record`; an inline image over
    `max_image_bytes`: `file_too_large`). Boxes come back to pixels so that every format goes
    through the same checks."""
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
        if kind is None:
            return []
        if kind != _FEATURE_KINDS[key]:
            raise _Malformed(f"{key} is a {kind}, not a {_FEATURE_KINDS[key]}")
        return list(getattr(feature[key], kind).value)

    def refused(source_id, detail, reason="malformed_record"):
        return Quarantined(source_id, split, "", reason, detail)

    try:
        source_id = (values("image/source_id") or [b""])[0].decode("utf-8", "replace")
    except _Malformed as e:
        return refused(index_hint, str(e))
    try:
        encoded = values("image/encoded")
        if not source_id:
            source_id = hashlib.sha256(encoded[0] if encoded else serialized).hexdigest()[:16]
        return _record_from_features(values, source_id, split, encoded, max_image_bytes)
    except _Malformed as e:
        return refused(source_id or index_hint, str(e))
    except Exception as e:  # noqa: BLE001 - whatever else a crafted entry trips: one entry,
        # never the whole step (a raw error from a Beam worker).
        return refused(source_id or index_hint, f"{type(e).__name__}: {e}")


def _record_from_features(values, source_id, split, encoded, max_image_bytes):
    if len(encoded) != 1:
        raise _Malformed("image/encoded must hold exactly one value")
    if max_image_bytes is not None and len(encoded[0]) > max_image_bytes:
        return Quarantined(
            source_id,
            split,
            "",
            "file_too_large",
            f"the inline image holds {len(encoded[0])} bytes, more than "
            f"max_image_bytes={max_image_bytes}",
        )
    height, width = values("image/height"), values("image/width")
    if len(height) != 1 or len(width) != 1 or height[0] <= 0 or width[0] <= 0:
        raise _Malformed("image/height and image/width must each hold one positive integer")
    box_keys = [f"image/object/bbox/{c}" for c in ("xmin", "ymin", "xmax", "ymax")]
    xmin, ymin, xmax, ymax = (values(k) for k in box_keys)
    labels = values("image/object/class/label")
    texts = [t.decode("utf-8", "replace") for t in values("image/object/class/text")]
    crowd, difficult = values("image/object/is_crowd"), values("image/object/difficult")
    n = len(labels)
    lengths = {len(xmin), len(ymin), len(xmax), len(ymax), n}
    if len(lengths) != 1 or any(len(v) not in (0, n) for v in (texts, crowd, difficult)):
        raise _Malformed("box coordinate, label, text and flag lists have different lengths")
    for key, flags in (("is_crowd", crowd), ("difficult", difficult)):
        if any(v not in (0, 1) for v in flags):
            raise _Malformed(f"image/object/{key} holds {sorted(set(flags))}: only 0 and 1")
    for text in texts:
        problem = label_name_problem(text)
        if problem:
            raise _Malformed(f"image/object/class/text: {problem}")
    w, h = width[0], height[0]
    objects = tuple(
        ObjectAnnotation(
            category=str(labels[i]),
            box=(xmin[i] * w, ymin[i] * h, xmax[i] * w, ymax[i] * h),
            is_crowd=bool(crowd[i]) if crowd else False,
            difficult=bool(difficult[i]) if difficult else False,
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
