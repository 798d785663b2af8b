"""Small datasets laid out exactly as other tools write them, for the layout tests.

- COCO 2017 (cocodataset.org): `annotations/instances_{train,val}2017.json` (info, licenses,
  images with license/coco_url/flickr_url/date_captured, annotations with polygon segmentations,
  categories with supercategories and COCO's non-contiguous ids), images in `train2017/`,
  `val2017/` named by 12-digit id.
- Roboflow's COCO export: `train/`, `valid/`, `test/`, each holding its images and
  `_annotations.coco.json`; category 0 is the dataset itself (the supercategory of every class,
  used by no box); file names like `img_jpg.rf.<hash>.jpg`; README.roboflow.txt at the root.
- Pascal VOC devkit: `VOCdevkit/VOC2012/{Annotations,JPEGImages,ImageSets/Main}` with
  `train.txt`, `val.txt`, `trainval.txt` and per-class lists (`<class>_train.txt`, "id  1").
- Ultralytics YOLO: `images/{train,val}`, `labels/{train,val}` (`class cx cy w h`, fractions; a
  polygon line for a segment; an image without a label file is a background image) and a
  `data.yaml` (path, train, val, names as {index: name}).

Each writer returns {split: [(image file, [(class name, x, y, w, h) in pixels])]}: what a
reader must find.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import yaml

from tests.datasets import image_bytes

Expected = Dict[str, List[Tuple[str, List[Tuple[str, float, float, float, float]]]]]
CLASSES = ("cat", "dog", "bird")
# Per split: (width, height, [(class index, x, y, w, h)]) of each image.
IMAGES = {
    "train": [
        (96, 64, [(0, 8, 8, 30, 24), (1, 50, 20, 30, 30)]),
        (80, 80, [(2, 10, 40, 24, 20)]),
        (64, 96, [(1, 4, 4, 40, 50), (0, 20, 60, 30, 30)]),
        (72, 72, [(2, 30, 30, 20, 20)]),
    ],
    "val": [(96, 64, [(0, 40, 10, 30, 30)]), (64, 64, [(2, 6, 6, 28, 28)])],
}


def _write(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def _image(width, height, objects) -> bytes:
    return image_bytes(width, height, [o[1:] for o in objects])


def coco2017(root: str) -> Expected:
    category_ids = {0: 17, 1: 18, 2: 16}  # COCO's own ids for cat, dog, bird
    expected: Expected = {}
    image_id, ann_id = 139, 1000
    for split, images in IMAGES.items():
        doc = {
            "info": {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017},
            "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4}],
            "images": [],
            "annotations": [],
            "categories": [
                {"supercategory": "animal", "id": category_ids[i], "name": name}
                for i, name in enumerate(CLASSES)
            ],
        }
        expected[split] = []
        for width, height, objects in images:
            name = f"{image_id:012d}.jpg"
            _write(os.path.join(root, f"{split}2017", name), _image(width, height, objects))
            doc["images"].append(
                {
                    "license": 4,
                    "file_name": name,
                    "coco_url": f"http://images.cocodataset.org/{split}2017/{name}",
                    "height": height,
                    "width": width,
                    "date_captured": "2013-11-14 17:02:52",
                    "flickr_url": "http://farm7.staticflickr.com/6116/6255196340_da26cf2c9e_z.jpg",
                    "id": image_id,
                }
            )
            for c, x, y, w, h in objects:
                doc["annotations"].append(
                    {
                        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                        "area": float(w * h),
                        "iscrowd": 0,
                        "image_id": image_id,
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "category_id": category_ids[c],
                        "id": ann_id,
                    }
                )
                ann_id += 1
            expected[split].append((name, [(CLASSES[c], x, y, w, h) for c, x, y, w, h in objects]))
            image_id += 1
        _write(os.path.join(root, "annotations", f"instances_{split}2017.json"), json.dumps(doc))
    return expected


def roboflow_coco(root: str) -> Expected:
    dataset_name = "pets-x2c4"
    categories = [{"id": 0, "name": dataset_name, "supercategory": "none"}] + [
        {"id": i + 1, "name": name, "supercategory": dataset_name} for i, name in enumerate(CLASSES)
    ]
    expected: Expected = {}
    folders = {"train": "train", "val": "valid"}
    for split, images in IMAGES.items():
        folder = os.path.join(root, folders[split])
        doc = {
            "info": {"year": "2024", "version": "3", "description": "Exported from roboflow.com"},
            "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/"}],
            "categories": categories,
            "images": [],
            "annotations": [],
        }
        expected[split] = []
        for i, (width, height, objects) in enumerate(images):
            name = f"IMG_{i:04d}_jpg.rf.{(i + 7) * 982451653:x}.jpg"
            _write(os.path.join(folder, name), _image(width, height, objects))
            doc["images"].append(
                {
                    "id": i,
                    "license": 1,
                    "file_name": name,
                    "height": height,
                    "width": width,
                    "date_captured": "2024-05-01T10:00:00+00:00",
                }
            )
            for c, x, y, w, h in objects:
                doc["annotations"].append(
                    {
                        "id": len(doc["annotations"]),
                        "image_id": i,
                        "category_id": c + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "segmentation": [],
                        "iscrowd": 0,
                    }
                )
            expected[split].append((name, [(CLASSES[c], x, y, w, h) for c, x, y, w, h in objects]))
        _write(os.path.join(folder, "_annotations.coco.json"), json.dumps(doc))
    # Roboflow exports a test split too; the pipeline is told which splits to read.
    os.makedirs(os.path.join(root, "test"), exist_ok=True)
    _write(
        os.path.join(root, "test", "_annotations.coco.json"),
        json.dumps({"images": [], "annotations": [], "categories": categories}),
    )
    _write(os.path.join(root, "README.roboflow.txt"), "Pets - v3\nExported via roboflow.com\n")
    return expected


def voc_devkit(devkit: str) -> Expected:
    root = os.path.join(devkit, "VOC2012")
    expected: Expected = {}
    lists: Dict[str, List[str]] = {}
    n = 0
    for split, images in IMAGES.items():
        expected[split], lists[split] = [], []
        for width, height, objects in images:
            image_id = f"2008_{n:06d}"
            n += 1
            _write(
                os.path.join(root, "JPEGImages", image_id + ".jpg"), _image(width, height, objects)
            )
            parts = [
                "<annotation>",
                "\t<folder>VOC2012</folder>",
                f"\t<filename>{image_id}.jpg</filename>",
                "\t<source>\n\t\t<database>The VOC2008 Database</database>\n"
                "\t\t<annotation>PASCAL VOC2008</annotation>\n\t\t<image>flickr</image>\n"
                "\t</source>",
                f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
                "\t\t<depth>3</depth>\n\t</size>",
                "\t<segmented>0</segmented>",
            ]
            for c, x, y, w, h in objects:
                # VOC pixels are 1-based and inclusive.
                parts.append(
                    f"\t<object>\n\t\t<name>{CLASSES[c]}</name>\n\t\t<pose>Frontal</pose>\n"
                    "\t\t<truncated>0</truncated>\n\t\t<occluded>0</occluded>\n"
                    "\t\t<bndbox>\n"
                    f"\t\t\t<xmin>{x + 1}</xmin>\n\t\t\t<ymin>{y + 1}</ymin>\n"
                    f"\t\t\t<xmax>{x + w}</xmax>\n\t\t\t<ymax>{y + h}</ymax>\n"
                    "\t\t</bndbox>\n\t\t<difficult>0</difficult>\n\t</object>"
                )
            parts.append("</annotation>\n")
            _write(os.path.join(root, "Annotations", image_id + ".xml"), "\n".join(parts))
            lists[split].append(image_id)
            expected[split].append(
                (image_id + ".jpg", [(CLASSES[c], x, y, w, h) for c, x, y, w, h in objects])
            )
    main = os.path.join(root, "ImageSets", "Main")
    for split, ids in lists.items():
        _write(os.path.join(main, f"{split}.txt"), "".join(f"{i}\n" for i in ids))
        for name in CLASSES:  # the per-class lists sit beside them: "<id> <1|-1>"
            _write(os.path.join(main, f"{name}_{split}.txt"), "".join(f"{i} -1\n" for i in ids))
    _write(os.path.join(main, "trainval.txt"), "".join(f"{i}\n" for i in sum(lists.values(), [])))
    return expected


def ultralytics_yolo(root: str) -> Expected:
    expected: Expected = {}
    for split, images in IMAGES.items():
        expected[split] = []
        for i, (width, height, objects) in enumerate(images):
            name = f"{split}_{i:03d}.jpg"
            _write(os.path.join(root, "images", split, name), _image(width, height, objects))
            lines = []
            for j, (c, x, y, w, h) in enumerate(objects):
                if j == 1:  # a segment: the polygon of the box's corners
                    points = [x, y, x + w, y, x + w, y + h, x, y + h]
                    coords = [v / (width if k % 2 == 0 else height) for k, v in enumerate(points)]
                    lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in coords))
                else:
                    lines.append(
                        f"{c} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
                        f"{w / width:.6f} {h / height:.6f}"
                    )
            _write(os.path.join(root, "labels", split, name[:-4] + ".txt"), "\n".join(lines) + "\n")
            expected[split].append((name, [(CLASSES[c], x, y, w, h) for c, x, y, w, h in objects]))
        # A background image: no label file at all (Ultralytics' convention). Each split's own
        # (the same bytes in both would be left out of training as evaluation leakage).
        name = f"{split}_background.jpg"
        size = (64, 48) if split == "train" else (48, 64)
        _write(os.path.join(root, "images", split, name), image_bytes(*size))
        expected[split].append((name, []))
    data = {
        "path": "../datasets/pets",  # as Ultralytics writes it: relative to its datasets dir
        "train": "images/train",
        "val": "images/val",
        "test": None,
        "names": {i: name for i, name in enumerate(CLASSES)},
    }
    _write(os.path.join(root, "data.yaml"), yaml.safe_dump(data, sort_keys=False))
    return expected
