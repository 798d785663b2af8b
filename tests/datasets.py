"""Tiny datasets with known content, written in each input format, for the data tests."""

from __future__ import annotations

import io
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

BACKGROUND = (90, 90, 90)
COLORS = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 20)]


def image_bytes(
    width: int,
    height: int,
    rects: Sequence[Tuple[float, float, float, float]] = (),
    fmt: str = "JPEG",
    mode: str = "RGB",
) -> bytes:
    """A flat background with filled rectangles (x, y, w, h in pixels), one colour each."""
    pixels = np.zeros((height, width, 3), np.uint8) + np.array(BACKGROUND, np.uint8)
    for i, (x, y, w, h) in enumerate(rects):
        pixels[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = COLORS[i % 4]
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def write_coco(
    root: str, split_images: Dict[str, List[dict]], categories=((3, "square"), (7, "circle"))
) -> Dict[str, str]:
    """split -> images, each {"file_name", "width", "height", "anns": [(x, y, w, h, cat_id,
    iscrowd)], optional "bytes" (else drawn), optional "declared" (width, height) to lie}.
    Returns the `sources` mapping for a DatasetConfig."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    sources = {}
    next_image_id, next_ann_id = 1, 1
    for split, images in split_images.items():
        doc = {
            "images": [],
            "annotations": [],
            "categories": [{"id": c, "name": n} for c, n in categories],
        }
        for img in images:
            data = img.get("bytes")
            if data is None:
                data = image_bytes(img["width"], img["height"], [a[:4] for a in img["anns"]])
            if data is not False:  # False: leave the file missing
                with open(os.path.join(root, "images", img["file_name"]), "wb") as f:
                    f.write(data)
            width, height = img.get("declared", (img["width"], img["height"]))
            doc["images"].append(
                {
                    "id": next_image_id,
                    "file_name": img["file_name"],
                    "width": width,
                    "height": height,
                }
            )
            for x, y, w, h, cat, crowd in img["anns"]:
                doc["annotations"].append(
                    {
                        "id": next_ann_id,
                        "image_id": next_image_id,
                        "category_id": cat,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": crowd,
                    }
                )
                next_ann_id += 1
            next_image_id += 1
        path = f"annotations/{split}.json"
        with open(os.path.join(root, path), "w") as f:
            json.dump(doc, f)
        sources[split] = path
    return sources


def voc_xml(filename: str, width: int, height: int, objects) -> str:
    """objects: (name, xmin, ymin, xmax, ymax, difficult) with VOC's 1-based inclusive pixels."""
    parts = [
        f"<annotation><filename>{filename}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    ]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def write_voc(root: str, images: List[dict], image_sets: Dict[str, List[str]]) -> Dict[str, str]:
    """images: {"id", "width", "height", "objects": [(name, xmin, ymin, xmax, ymax, difficult)]}.
    Returns `sources` pointing at ImageSets/Main/<split>.txt."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for img in images:
        rects = [(o[1] - 1, o[2] - 1, o[3] - o[1] + 1, o[4] - o[2] + 1) for o in img["objects"]]
        with open(os.path.join(root, "JPEGImages", img["id"] + ".jpg"), "wb") as f:
            f.write(image_bytes(img["width"], img["height"], rects))
        with open(os.path.join(root, "Annotations", img["id"] + ".xml"), "w") as f:
            f.write(voc_xml(img["id"] + ".jpg", img["width"], img["height"], img["objects"]))
    sources = {}
    for split, ids in image_sets.items():
        with open(os.path.join(root, "ImageSets/Main", split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        sources[split] = f"ImageSets/Main/{split}.txt"
    return sources


def read_examples(split_dir: str) -> List:
    """Every tf.Example in one output split folder (gzipped TFRecords)."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, "*.gz")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(r.numpy()) for r in dataset]


def feature_values(example, key: str) -> list:
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


# --- hostile bytes (tests/test_bad_input_cli.py, tests/test_ingestion_fuzz.py) ------------------


def png_chunks(data: bytes) -> List[Tuple[bytes, int, int]]:
    """(chunk type, offset of the chunk's length field, offset of its CRC) of a PNG."""
    import struct

    chunks, at = [], 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], at, at + 8 + length))
        at += 12 + length
    return chunks


def png_with_bad_crc(width: int, height: int) -> bytes:
    """A PNG whose IDAT chunk fails its CRC: PIL decodes it, TensorFlow refuses it."""
    data = bytearray(image_bytes(width, height, [(1, 1, width / 2, height / 2)], fmt="PNG"))
    (_, _, crc_at), *_ = [c for c in png_chunks(bytes(data)) if c[0] == b"IDAT"]
    data[crc_at] ^= 0xFF
    return bytes(data)


def png_without_iend(width: int, height: int) -> bytes:
    """A PNG cut before its IEND chunk: PIL decodes it, TensorFlow refuses it."""
    data = image_bytes(width, height, [(1, 1, width / 2, height / 2)], fmt="PNG")
    (_, iend_at, _), *_ = [c for c in png_chunks(data) if c[0] == b"IEND"]
    return data[:iend_at]


def exif_rotated_jpeg(upright: Image.Image, orientation: int = 6) -> bytes:
    """A JPEG whose stored pixels, turned as its EXIF `orientation` says, are `upright`."""
    from PIL import ImageOps

    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = upright.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(out.getvalue())) as check:  # the helper's own inverse is right
        assert ImageOps.exif_transpose(check).size == upright.size
    return out.getvalue()


def drawn(width: int, height: int, rects) -> Image.Image:
    """The picture image_bytes encodes, as a PIL image (before encoding)."""
    return Image.open(io.BytesIO(image_bytes(width, height, rects, fmt="PNG"))).convert("RGB")


def tf_example(
    encoded: bytes, width: int, height: int, boxes=(), labels=(), texts=(), **overrides
) -> bytes:
    """A serialized TF OD API tf.Example; `overrides` replace features by key (with "/" as
    "__"), given as tf.train.Feature."""
    import tensorflow as tf

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    def strings(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    columns = list(zip(*boxes)) if boxes else [(), (), (), ()]
    feature = {
        "image/encoded": strings([encoded]),
        "image/format": strings([b"jpeg"]),
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/source_id": strings([str(overrides.pop("source_id", "")).encode()]),
        "image/object/bbox/xmin": floats(columns[0]),
        "image/object/bbox/ymin": floats(columns[1]),
        "image/object/bbox/xmax": floats(columns[2]),
        "image/object/bbox/ymax": floats(columns[3]),
        "image/object/class/label": ints(labels),
        "image/object/class/text": strings([t.encode() for t in texts]),
    }
    for key, value in overrides.items():
        feature[key.replace("__", "/")] = value
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
