"""What the detection ExampleGen reads: one dataset description, validated up front.

A dataset is a folder (`root`) in one of four formats:

- ``coco``: COCO JSON annotation files; images under ``images_dir`` (or, per split,
  ``images_dirs``: COCO 2017's ``train2017/``, ``val2017/``; Roboflow's ``train/``, ``valid/``),
  addressed by each image's ``file_name``.
- ``voc``: Pascal VOC XML files in ``annotations_dir``; images in ``images_dir``. A source is an
  image-set list (``ImageSets/Main/train.txt``) or the annotations folder itself (every XML).
- ``yolo``: Ultralytics YOLO txt labels. A source is an image folder or a list file of image
  paths, as in a ``data.yaml``; each image's labels are the ``.txt`` at the same path with its
  last ``images`` folder replaced by ``labels``; class names from ``class_names``, else the
  ``names`` of ``data.yaml`` at the root.
- ``tfrecord``: TFRecord files of tf.Examples already in TF Object Detection API form; a source is
  a glob pattern (``.gz`` files are read as GZIP).

``sources``, ``images_dir(s)`` and ``annotations_dir`` are relative to ``root`` and stay inside it:
every file the annotations name is read only when it lies under ``root`` (components/example_gen/
files.py), so the dataset folder is the one boundary to reason about.

``sources`` maps a split name to its source, relative to ``root``. When the dataset has its own
splits, name them here (``{"train": ..., "eval": ...}``). When ``split_ratios`` is set, every
source is pooled and split again by a deterministic hash of the image id, in those ratios.

No TensorFlow import here: the CLI validates configurations without paying for it.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import unicodedata
from typing import Dict, List, Optional

FORMATS = ("coco", "voc", "yolo", "tfrecord")
DEFAULT_MAX_OBJECTS_PER_IMAGE = 100
# 50 MiB: a camera JPEG is a few MB; anything far larger is a mistake or an attack on memory.
DEFAULT_MAX_IMAGE_BYTES = 50 * 2**20
# 40 megapixels (decoded RGB: 120 MB): well below PIL's own bomb limit (179 MP warns, 358 MP fails),
# which would let one image take gigabytes of a worker's memory.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# What to do with an image whose bytes are in the training split and in a held-out split
# (docs/data.md): leave the training copy out (evaluation leakage inflates the gate's mAP), or
# keep both (a deliberate "evaluate on what was trained on" check, as the pipeline tests do).
OVERLAP_POLICIES = ("leave_out_of_training", "allow")


class DatasetConfigError(ValueError):
    """A dataset description that cannot be used; the message names the field."""


# `root` of the generated sample dataset (litedet/data/sample.py): the runners replace it with
# the folder the sample was generated into. The sample is COCO, with these annotation files
# (also the default `sources`: a dataset laid out like the sample needs only its root).
SAMPLE_ROOT = "sample"
SAMPLE_SOURCES = {
    "train": "annotations/instances_train.json",
    "eval": "annotations/instances_eval.json",
}
# Fields every real dataset must give (a YAML `dataset:` section without them is refused).
REQUIRED = ("root", "format", "sources")


@dataclasses.dataclass
class DatasetSettings:
    """The `dataset:` section of a configuration, every key with its default (`litedet config`
    prints them). Checked when the pipeline is built, as a DatasetConfig."""

    root: str = SAMPLE_ROOT
    format: str = "coco"  # coco | voc | tfrecord
    # {split: source relative to root}: a COCO file, a VOC image-set list or folder, a TFRecord
    # glob.
    sources: Dict[str, str] = dataclasses.field(default_factory=lambda: dict(SAMPLE_SOURCES))
    split_ratios: Optional[Dict[str, int]] = None  # e.g. {"train": 4, "eval": 1}: re-split
    images_dir: str = ""  # empty: images/ (coco), JPEGImages/ (voc)
    # {split: folder}: a split's own image folder, over images_dir (COCO 2017: train2017/...).
    images_dirs: Dict[str, str] = dataclasses.field(default_factory=dict)
    annotations_dir: str = "Annotations"  # voc
    # VOC, YOLO, TFRecord: the class names in label order (YOLO: else data.yaml's names). COCO
    # takes its categories.
    class_names: Optional[List[str]] = None
    # 0: transform.max_boxes. Images with more objects are quarantined, never cut.
    max_objects_per_image: int = 0
    # Boxes may stick out of the image by this many pixels (rounding in the annotation tool) and
    # are clipped; further out, the image is quarantined as `box_outside_image`.
    clip_tolerance_px: float = 2.0
    # Larger files are quarantined (`file_too_large`) without being read whole.
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    # Images whose header declares more pixels (width x height) are quarantined
    # (`too_many_pixels`) before their pixels are decoded.
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    overlap_policy: str = OVERLAP_POLICIES[0]


@dataclasses.dataclass
class DatasetConfig(DatasetSettings):
    """A dataset as the ExampleGen reads it: DatasetSettings, checked on construction."""

    max_objects_per_image: int = DEFAULT_MAX_OBJECTS_PER_IMAGE

    def __post_init__(self):
        if self.format not in FORMATS:
            raise DatasetConfigError(
                f"dataset.format: {self.format!r} is not one of {', '.join(FORMATS)}"
            )
        if not self.root:
            raise DatasetConfigError("dataset.root: empty; give the dataset folder")
        if not self.sources or not isinstance(self.sources, dict):
            raise DatasetConfigError(
                "dataset.sources: give at least one split, e.g. "
                '{"train": "annotations/instances_train.json"}'
            )
        for split, source in self.sources.items():
            _check_split_name("dataset.sources", split)
            if not isinstance(source, str) or not source:
                raise DatasetConfigError(f"dataset.sources.{split}: must be a non-empty path")
        if self.split_ratios is not None:
            if not self.split_ratios:
                raise DatasetConfigError(
                    'dataset.split_ratios: empty; e.g. {"train": 4, "eval": 1}'
                )
            for split, ratio in self.split_ratios.items():
                _check_split_name("dataset.split_ratios", split)
                if not isinstance(ratio, int) or ratio <= 0:
                    raise DatasetConfigError(
                        f"dataset.split_ratios.{split}: {ratio!r} must be a positive integer"
                    )
        if self.root == SAMPLE_ROOT:
            raise DatasetConfigError(
                "dataset.root: 'sample' stands for the generated sample dataset; generate it "
                "first (the runners do), or give your dataset's folder"
            )
        if self.max_objects_per_image < 1:
            raise DatasetConfigError(
                f"dataset.max_objects_per_image: {self.max_objects_per_image} must be >= 1"
            )
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise DatasetConfigError("dataset.class_names: names must be unique")
        for i, name in enumerate(self.class_names or ()):
            problem = label_name_problem(name) if isinstance(name, str) else "not a string"
            if problem:
                raise DatasetConfigError(f"dataset.class_names[{i}]: {problem}")
        if self.clip_tolerance_px < 0:
            raise DatasetConfigError("dataset.clip_tolerance_px: must be >= 0")
        if self.overlap_policy not in OVERLAP_POLICIES:
            raise DatasetConfigError(
                f"dataset.overlap_policy: {self.overlap_policy!r} must be one of "
                f"{', '.join(OVERLAP_POLICIES)}"
            )
        for name in ("max_image_bytes", "max_image_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DatasetConfigError(f"dataset.{name}: {value!r} must be a positive integer")
        for name in ("images_dir", "annotations_dir"):
            _check_inside_root(f"dataset.{name}", getattr(self, name))
        if not isinstance(self.images_dirs, dict):
            raise DatasetConfigError("dataset.images_dirs: must map split names to folders")
        for split, folder in self.images_dirs.items():
            if split not in self.sources:
                raise DatasetConfigError(
                    f"dataset.images_dirs.{split}: no such split in dataset.sources "
                    f"({', '.join(self.sources)})"
                )
            if not isinstance(folder, str):
                raise DatasetConfigError(f"dataset.images_dirs.{split}: must be a folder path")
            _check_inside_root(f"dataset.images_dirs.{split}", folder)
        for split, source in self.sources.items():
            _check_inside_root(f"dataset.sources.{split}", source)

    @property
    def output_splits(self) -> List[str]:
        """The split names the ExampleGen writes, in a stable order."""
        return list(self.split_ratios or self.sources)

    def images_dir_for(self, split: str) -> str:
        """The folder (relative to root) a split's image file names are looked up in."""
        if split in self.images_dirs:
            return self.images_dirs[split]
        if self.images_dir:
            return self.images_dir
        return {"coco": "images", "voc": "JPEGImages"}.get(self.format, "")

    def with_root(self, root: str) -> DatasetConfig:
        return dataclasses.replace(self, root=root)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))  # key order = split order

    @classmethod
    def from_json(cls, text: str) -> DatasetConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, values: dict) -> DatasetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DatasetConfigError(
                f"dataset: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        check_required(values)
        return cls(**values)


def label_name_problem(name: str) -> Optional[str]:
    """Why `name` cannot be a class name, else None. Names become one line each of labels.txt
    (the TFLite models' metadata): a line break or another control character would shift every
    label after it, so such names are refused, not rewritten."""
    if not name.strip():
        return f"class name {name!r} is empty"
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        return (
            f"class name {name!r} holds a line break or control character "
            f"({', '.join(f'U+{ord(c):04X}' for c in bad)})"
        )
    return None


def check_required(values: dict) -> None:
    """A dataset description names at least root, format and sources."""
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        raise DatasetConfigError(
            f"dataset: missing {', '.join(missing)}; a dataset needs root, format "
            f"({', '.join(FORMATS)}) and sources, e.g. "
            '{"train": "annotations/train.json", "eval": "annotations/eval.json"}'
        )


def _check_inside_root(field: str, path: str) -> None:
    """A path relative to the root that stays inside it: the containment check of every file
    the annotations name is against the root, so the folders they are looked up in must be
    there too."""
    normalized = posixpath.normpath(path.replace("\\", "/")) if path else "."
    if path.startswith(("/", "\\")) or "://" in path or normalized.split("/")[0] == "..":
        raise DatasetConfigError(
            f"{field}: {path!r} must be a path relative to dataset.root that stays inside it "
            "(no absolute path, no '..' leaving the root)"
        )


def _check_split_name(field: str, split: str) -> None:
    if not isinstance(split, str) or not split.isidentifier():
        raise DatasetConfigError(
            f"{field}: split name {split!r} must be a simple identifier such as 'train' or 'eval'"
        )
