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
