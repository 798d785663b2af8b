"""Annotation parsers: COCO JSON, Pascal VOC XML and YOLO txt labels into format-neutral
`ImageRecord`s.

A malformed annotation file raises `AnnotationError` naming the file and what is wrong: one bad
file means the dataset description itself is broken, so the component fails rather than guessing.
Problems of a single image (an unknown category, say) are not errors here; they travel with the
record and the image is quarantined later, with everything else that is wrong with it.

Each reader is made of functions over one `Part` of the dataset, so that the ExampleGen's Beam
workers read it part by part (executor.py): a COCO file whole (`read_coco_file`: an image's
objects can sit anywhere in it), VOC annotation files and YOLO images one by one, once a worker
has listed them (`voc_files`, `yolo_files`). READERS puts them together to read a whole dataset
on one machine.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import math
import os
import xml.etree.ElementTree as ElementTree
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from litedet.components.example_gen import files, json_stream
from litedet.components.example_gen.config import DatasetConfig, label_name_problem
from litedet.components.example_gen.files import is_remote


class AnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class ObjectAnnotation:
    category: str  # the dataset's own key: a COCO category id, a VOC class name, a TFRecord label
    # Pixel box (xmin, ymin, xmax, ymax), continuous coordinates: the image spans [0, width].
    box: Tuple[float, float, float, float]
    is_crowd: bool = False
    difficult: bool = False


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    source_id: str
    split: str
    image_path: str = ""  # empty when the bytes travel with the record (TFRecord input)
    image_bytes: bytes = b""
    width: Optional[int] = None  # as declared by the annotation, checked against the pixels
    height: Optional[int] = None
    objects: Tuple[ObjectAnnotation, ...] = ()
    # Where the image comes in the input, unique per run: (source, image in its file) for COCO,
    # (source, file in its listing) for VOC and YOLO, (file, entry) for TFRecords. Of two images
    # with one id in a split, the first is kept (executor.py).
    ordinal: Tuple[int, int] = (0, 0)
    # (reason, detail) of a problem found in the annotation itself: the image is quarantined
    # for it without being read.
    problem: Tuple[str, ...] = ()
    # True: the objects' boxes are fractions of the image's size (YOLO), scaled to pixels once
    # the image is decoded (records.check_image).
    normalized_boxes: bool = False


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Dataset category keys -> contiguous 1-based labels, in a stable order."""

    keys: Tuple[str, ...]
    names: Tuple[str, ...]

    def label_of(self, key: str) -> Optional[int]:
        try:
            return self.keys.index(key) + 1
        except ValueError:
            return None

    def name_of(self, label: int) -> str:
        return self.names[label - 1]

    def to_dict(self) -> dict:
        return {
            "classes": [
                {"id": i + 1, "name": name, "source_key": key}
                for i, (key, name) in enumerate(zip(self.keys, self.names))
            ]
        }


def _stream_json(path: str) -> Iterator[Tuple[str, Any]]:
    """The top-level members of a JSON object file, arrays element by element
    (json_stream.py: a COCO 2017 file is never held whole)."""
    # tf.io.gfile reads local, gs:// and s3:// alike; imported here to keep module import light.
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            for key, value in json_stream.top_level(f.read):
                yield key, _guarded(value, path) if isinstance(value, Iterator) else value
    except tf.errors.NotFoundError as e:
        raise AnnotationError(f"{path}: annotation file not found") from e
    except json_stream.JSONStreamError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from e


def _guarded(items: Iterator[Any], path: str) -> Iterator[Any]:
    """A top-level array's elements, decoded as the caller asks for them, outside
    `_stream_json`'s own try: broken JSON deep inside an array (a truncated file, nesting too
    deep, a number of thousands of digits) must fail naming the file as well."""
    try:
        yield from items
    except json_stream.JSONStreamError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from e


def _coco_arrays(path: str, wanted: Tuple[str, ...]) -> Iterator[Tuple[str, Iterator[Any]]]:
    """(field, its elements) for the `wanted` COCO fields, in file order; a wanted field that is
    missing or not a list fails naming it."""
    found = set()
    for key, value in _stream_json(path):
        if key in wanted:
            _require(isinstance(value, Iterator), path, f"missing list field '{key}'")
            found.add(key)
            yield key, value
    for key in wanted:
        _require(key in found, path, f"missing list field '{key}'")


def _require(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise AnnotationError(f"{path}: {message}")


def _require_id_and_text(entry, key: str, where: str, path: str) -> None:
    """A COCO entry (an image, a category) needs an integer `id` and a string `key`."""
    _require(
        isinstance(entry, dict)
        and isinstance(entry.get("id"), int)
        and isinstance(entry.get(key), str),
        path,
        f"{where} needs an integer 'id' and a string '{key}'",
    )


def _number_list(value, length: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _as_float(value) -> float:
    """A JSON number as a float; integers too large for one become inf (quarantined later as
    non-finite) instead of raising OverflowError in the middle of a file."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def file_name_problem(name: str, where: str) -> Tuple[str, ...]:
    """(reason, detail) when `name` cannot be a file name, else (): a lone surrogate (valid in
    JSON, not encodable) or a NUL would fail the whole run where the file is opened."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        return ("unencodable_file_name", f"{where}: {name!r} is not valid Unicode text ({e})")
    if "\x00" in name:
        return ("unencodable_file_name", f"{where}: {name!r} holds a NUL character")
    return ()


@dataclasses.dataclass(frozen=True)
class Part:
    """A piece of a dataset's annotations that one worker reads by itself, described by paths
    only (all the driver hands to Beam): a split's source (a COCO file, a VOC image-set file or
    annotations folder, a YOLO image folder or list file), or one file a worker listed in such a
    source (a VOC annotation file, a YOLO image)."""

    split: str
    path: str  # under the dataset's root
    # (the source's place in dataset.sources, the file's place in the source's listing; 0 for a
    # source itself): the ordinal of the part's first record.
    ordinal: Tuple[int, int]


def sources(config: DatasetConfig) -> List[Part]:
    """The dataset's sources, one part per split, in the order of `dataset.sources`."""
    return [
        Part(split, os.path.join(config.root, relative), (index, 0))
        for index, (split, relative) in enumerate(config.sources.items())
    ]


def _numbered(source: Part, paths: Iterable[str]) -> List[Part]:
    """The files listed in a source, as parts numbered in the listing's order."""
    return [
        Part(source.split, path, (source.ordinal[0], number)) for number, path in enumerate(paths)
    ]


def _read_each_file(config: DatasetConfig, list_files, read_file) -> List[ImageRecord]:
    """Every record of a dataset read file by file (VOC, YOLO), on one machine."""
    return [
        read_file(config, part) for source in sources(config) for part in list_files(config, source)
    ]


@dataclasses.dataclass(frozen=True)
class CocoCategories:
    """The categories of one COCO file, gathered with those of the other files into the label
    map (coco_label_map)."""

    path: str
    ordinal: Tuple[int, int]  # its source's: the files' categories merge in the sources' order
    names: Dict[int, str]
    parents: Dict[int, Any]  # category id -> its `supercategory`


def read_coco_file(
    config: DatasetConfig, source: Part
) -> Tuple[CocoCategories, Iterator[ImageRecord]]:
    """Reads one split's COCO file: its categories, and its image records (made as they are
    taken, numbered from the source's ordinal in file order).

    The file is read as a stream: only the fields used here are kept per image and object
    (segmentations, areas and URLs are dropped as they are read), so the peak memory follows the
    records, not the file's text (docs/data.md, "Large annotation files").

    Annotations belong to images by id, so within one file: several images sharing an id are all
    `ambiguous_image_id` (whose boxes are whose is unknown), and the annotations of an id that no
    image has become one `annotation_without_image` record per such id (counted, not lost).
    """
    path = source.path
    images: List[Tuple[int, dict]] = []
    objects_by_image: Dict[int, List[ObjectAnnotation]] = {}
    # image id -> (reason, detail) of the first problem found in one of its annotations
    problems: Dict[int, Tuple[str, str]] = {}
    category_keys: Dict[Any, str] = {}  # one string per category, not one per object
    categories = CocoCategories(path, source.ordinal, {}, {})
    for field, items in _coco_arrays(path, ("images", "annotations", "categories")):
        for i, item in enumerate(items):
            if field == "categories":
                _add_category(categories.names, item, i, path)
                categories.parents[item["id"]] = item.get("supercategory")
            elif field == "annotations":
                _add_object(objects_by_image, problems, category_keys, item, i, path)
            else:
                _require_id_and_text(item, "file_name", f"images[{i}]", path)
                keep = ("id", "file_name", "width", "height")
                images.append((i, {k: item.get(k) for k in keep}))
    return categories, _coco_records(config, source, images, objects_by_image, problems)


def _coco_records(config, source: Part, images, objects_by_image, problems):
    """The records of one COCO file's images, then one per image id that only annotations name."""
    path, split = source.path, source.split
    images_dir = os.path.join(config.root, config.images_dir_for(split))
    numbers = itertools.count()  # the records' place in the file, after the source's number
    shared = collections.Counter(img["id"] for _, img in images)
    for i, img in images:
        image_id = img["id"]
        problem = file_name_problem(
            img["file_name"], f"{path}: images[{i}] (id {image_id}) file_name"
        )
        if not problem and shared[image_id] > 1:
            problem = (
                "ambiguous_image_id",
                f"{path}: {shared[image_id]} images have id {image_id}: which of them each "
                "of its annotations belongs to is unknown, so none is used",
            )
        yield ImageRecord(
            source_id=str(image_id),
            split=split,
            image_path=os.path.join(images_dir, img["file_name"]),
            width=img["width"],
            height=img["height"],
            objects=tuple(objects_by_image.get(image_id, ())),
            ordinal=(source.ordinal[0], next(numbers)),
            problem=problem or problems.get(image_id, ()),
        )
    for image_id in sorted(set(objects_by_image) - set(shared)):
        yield ImageRecord(
            source_id=str(image_id),
            split=split,
            image_path=path,
            ordinal=(source.ordinal[0], next(numbers)),
            problem=(
                "annotation_without_image",
                f"{path}: {len(objects_by_image[image_id])} annotation(s) name image id "
                f"{image_id}, which no image in this file has",
            ),
        )


def coco_label_map(files: Iterable[CocoCategories]) -> LabelMap:
    """The label map of a dataset's COCO files, read one by one in any order: their categories
    merged in the sources' order (an id named differently in two files fails, naming the later
    one); labels follow the category ids' order, placeholders left out."""
    names: Dict[int, str] = {}
    parents: Dict[int, Any] = {}
    for categories in sorted(files, key=lambda c: c.ordinal):
        for category_id, name in categories.names.items():
            _merge_category(names, category_id, name, categories.path)
        parents.update(categories.parents)
    skipped = placeholders(names, parents)
    ordered = [c for c in sorted(names) if c not in skipped]
    return LabelMap(keys=tuple(str(c) for c in ordered), names=tuple(names[c] for c in ordered))


def read_coco(config: DatasetConfig) -> Tuple[List[ImageRecord], LabelMap]:
    """Reads every COCO file in `config.sources`, one after the other (read_coco_file)."""
    records: List[ImageRecord] = []
    files = []
    for source in sources(config):
        categories, file_records = read_coco_file(config, source)
        files.append(categories)
        records.extend(file_records)
    return records, coco_label_map(files)


def placeholders(categories: Dict[int, str], parents: Dict[int, Any]) -> set:
    """Category ids that are not classes: Roboflow's COCO export lists the dataset itself as a
    category (id 0), the `supercategory` of every other one, and no box uses it. Left out of
    the label map (a class that can never be detected would still cost a head output and drag
    the per-class mAP); a box that names one quarantines its image as `unknown_category`.
    COCO 2017's own supercategories ("person" over "person") are not categories of others."""
    return {
        c
        for c, name in categories.items()
        if any(parent == name and other != c for other, parent in parents.items())
    }


def _add_category(categories: Dict[int, str], cat, i: int, path: str) -> None:
    _require_id_and_text(cat, "name", f"categories[{i}]", path)
    problem = label_name_problem(cat["name"])
    _require(problem is None, path, f"categories[{i}] (id {cat['id']}): {problem}")
    _merge_category(categories, cat["id"], cat["name"], path)


def _merge_category(categories: Dict[int, str], category_id: int, name: str, path: str) -> None:
    if categories.setdefault(category_id, name) != name:
        raise AnnotationError(
            f"{path}: category id {category_id} is named {name!r} here but "
            f"{categories[category_id]!r} in another annotation file"
        )


def _flag(value) -> Optional[bool]:
    """A COCO `iscrowd`, strictly: 0, 1, true or false (None: anything else, such as "0",
    "false", 2 or 1.0, which Python would have taken as truthy or falsy)."""
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
        return bool(value)
    return None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _add_object(objects_by_image, problems, category_keys, ann, i: int, path: str) -> None:
    _require(
        isinstance(ann, dict) and isinstance(ann.get("image_id"), int),
        path,
        f"annotations[{i}] needs an integer 'image_id'",
    )
    _require(
        _number_list(ann.get("bbox"), 4),
        path,
        f"annotations[{i}] (id {ann.get('id')}): 'bbox' must be [x, y, width, height]",
    )
    x, y, w, h = (_as_float(v) for v in ann["bbox"])
    category = ann.get("category_id")
    key = category_keys.get(category) if isinstance(category, (int, str)) else None
    if key is None:
        key = str(category)
        if isinstance(category, (int, str)):
            category_keys[category] = key
    is_crowd = _flag(ann.get("iscrowd", 0))
    if is_crowd is None:
        problems.setdefault(
            ann["image_id"],
            (
                "invalid_flag",
                f"{path}: annotations[{i}] (id {ann.get('id')}): iscrowd is "
                f"{_short(ann['iscrowd'])}; it must be 0, 1, true or false",
            ),
        )
    objects_by_image.setdefault(ann["image_id"], []).append(
        ObjectAnnotation(category=key, box=(x, y, x + w, y + h), is_crowd=bool(is_crowd))
    )


def _voc_text(node: ElementTree.Element, tag: str, path: str) -> str:
    child = node.find(tag)
    _require(
        child is not None and child.text is not None and child.text.strip(),
        path,
        f"<{node.tag}> has no <{tag}>",
    )
    return child.text.strip()


def _voc_number(node: ElementTree.Element, tag: str, path: str) -> float:
    text = _voc_text(node, tag, path)
    try:
        return float(text)
    except ValueError as e:
        raise AnnotationError(f"{path}: <{tag}> is {text!r}, not a number") from e


def parse_voc_xml(path: str, xml_bytes: bytes, images_dir: str, split: str) -> ImageRecord:
    """One VOC annotation file -> record. VOC pixels are 1-based and inclusive: a box over pixels
    1..W covers [0, W] in continuous coordinates, hence the `- 1` on the minimum corner."""
    try:
        root = ElementTree.fromstring(xml_bytes)
    except ElementTree.ParseError as e:
        raise AnnotationError(f"{path}: malformed XML ({e})") from e
    _require(root.tag == "annotation", path, f"root element is <{root.tag}>, not <annotation>")
    filename = _voc_text(root, "filename", path)
    size = root.find("size")
    width = height = None
    problem = file_name_problem(filename, f"{path}: <filename>")
    if size is not None:
        declared = _voc_number(size, "width", path), _voc_number(size, "height", path)
        if all(math.isfinite(v) for v in declared):
            width, height = (int(v) for v in declared)
        else:  # "nan", "inf" and "1e999" parse as floats; int() of them would raise
            problem = problem or ("non_finite_number", f"{path}: <size> is {declared}")
    objects = []
    for obj in root.findall("object"):
        bndbox = obj.find("bndbox")
        _require(bndbox is not None, path, "<object> has no <bndbox>")
        xmin, ymin = _voc_number(bndbox, "xmin", path), _voc_number(bndbox, "ymin", path)
        xmax, ymax = _voc_number(bndbox, "xmax", path), _voc_number(bndbox, "ymax", path)
        name = _voc_text(obj, "name", path)
        name_problem = label_name_problem(name)
        _require(name_problem is None, path, f"<object><name>: {name_problem}")
        difficult = obj.find("difficult")
        flag = "0" if difficult is None else (difficult.text or "0").strip()
        if flag not in ("0", "1"):
            problem = problem or (
                "invalid_flag",
                f"{path}: <difficult> is {_short(flag)}; it must be 0 or 1",
            )
        objects.append(
            ObjectAnnotation(
                category=name, box=(xmin - 1.0, ymin - 1.0, xmax, ymax), difficult=flag == "1"
            )
        )
    return ImageRecord(
        source_id=os.path.splitext(filename)[0],
        split=split,
        image_path=os.path.join(images_dir, filename),
        width=width,
        height=height,
        objects=tuple(objects),
        problem=problem,
    )


def _voc_annotation_files(config: DatasetConfig, path: str) -> List[str]:
    """The annotation files a VOC source names: the `.xml` files of a folder (sorted), or one
    per id of an image-set file."""
    import tensorflow as tf

    annotations_dir = os.path.join(config.root, config.annotations_dir)
    if tf.io.gfile.isdir(path):
        if files.is_remote(path):
            names = tf.io.gfile.listdir(path)
        else:  # as bytes: a name that is not UTF-8 must not fail the listing (it is quarantined)
            names = [os.fsdecode(name) for name in os.listdir(os.fsencode(path))]
        return sorted(os.path.join(path, name) for name in names if name.endswith(".xml"))
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except tf.errors.NotFoundError as e:
        raise AnnotationError(f"{path}: image-set file not found") from e
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from e
    # Image-set lines are "<id>" or "<id> <flag>" (the per-class lists).
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    return [os.path.join(annotations_dir, image_id + ".xml") for image_id in ids]


def _voc_record(config: DatasetConfig, path: str, images_dir: str, split: str) -> ImageRecord:
    """The record of one VOC annotation file, read only when it is a regular file inside the
    root (an image-set id is data: `../../x` or a planted symlink must not be followed)."""
    image_id = os.path.splitext(os.path.basename(path))[0]
    problem = file_name_problem(image_id, f"{path!r}: annotation file name")
    if problem:  # a name that is not UTF-8 (os.fsdecode's surrogates): counted, not read

        def printable(text):
            return os.fsencode(text).decode("utf-8", "backslashreplace")

        return ImageRecord(printable(image_id), split, image_path=printable(path), problem=problem)
    try:
        xml_bytes = files.read_file(config.root, path, config.max_image_bytes)
    except files.FileProblem as problem:
        return ImageRecord(
            image_id, split, image_path=path, problem=(problem.reason, problem.detail)
        )
    if xml_bytes is None:
        raise AnnotationError(f"{path}: annotation file not found")
    return parse_voc_xml(path, xml_bytes, images_dir, split)


def voc_files(config: DatasetConfig, source: Part) -> List[Part]:
    """The annotation files of one VOC source, numbered in the source's order."""
    return _numbered(source, _voc_annotation_files(config, source.path))


def read_voc_file(config: DatasetConfig, part: Part) -> ImageRecord:
    """The record of one VOC annotation file (a file that may not be read is a record with its
    `problem`, quarantined later). Image-set ids and annotation files are read under `root`
    only."""
    images_dir = os.path.join(config.root, config.images_dir_for(part.split))
    record = _voc_record(config, part.path, images_dir, part.split)
    return dataclasses.replace(record, ordinal=part.ordinal)


def voc_label_map(config: DatasetConfig, categories: Iterable[str]) -> LabelMap:
    """Labels follow `class_names`, else the names the objects use (`categories`), sorted."""
    names = config.class_names or sorted(set(categories))
    return LabelMap(keys=tuple(names), names=tuple(names))


def read_voc(config: DatasetConfig) -> Tuple[List[ImageRecord], LabelMap]:
    """Reads every VOC file the sources name, in the sources' order."""
    records = _read_each_file(config, voc_files, read_voc_file)
    return records, voc_label_map(config, (o.category for r in records for o in r.objects))


# Ultralytics' image suffixes (its IMG_FORMATS): every such file in a YOLO source folder is an
# image of the dataset; one this project cannot decode is quarantined, never skipped.
YOLO_IMAGE_SUFFIXES = (
    ".bmp",
    ".dng",
    ".jpeg",
    ".jpg",
    ".mpo",
    ".png",
    ".tif",
    ".tiff",
    ".webp",
    ".pfm",
    ".heic",
)
YOLO_DATA_FILES = ("data.yaml", "data.yml")


def yolo_label_path(image_path: str) -> str:
    """Ultralytics' rule: the last `/images/` of the path becomes `/labels/`, the suffix `.txt`."""
    head, sep, tail = image_path.rpartition("/images/")
    path = head + "/labels/" + tail if sep else image_path
    return os.path.splitext(path)[0] + ".txt"


def yolo_class_names(config: DatasetConfig) -> List[str]:
    """`class_names`, else the `names` of the data.yaml at the root (a list, or {index: name})."""
    import tensorflow as tf
    import yaml

    if config.class_names:
        return list(config.class_names)
    for name in YOLO_DATA_FILES:
        path = os.path.join(config.root, name)
        if not tf.io.gfile.exists(path):
            continue
        try:
            with tf.io.gfile.GFile(path) as f:
                data = yaml.safe_load(f.read())
        except yaml.YAMLError as e:
            raise AnnotationError(f"{path}: not valid YAML ({e})") from e
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict) and sorted(names) == list(range(len(names))):
            names = [names[i] for i in range(len(names))]
        _require(
            isinstance(names, list) and names and all(isinstance(n, str) for n in names),
            path,
            "'names' must be a list of class names or a mapping {0: name, 1: ...}",
        )
        for i, name in enumerate(names):
            problem = label_name_problem(name)
            _require(problem is None, path, f"names[{i}]: {problem}")
        return names
    raise AnnotationError(
        f"dataset.class_names: a yolo dataset names its classes in {YOLO_DATA_FILES[0]} at the "
        f"root ({config.root}), and there is none; list them in dataset.class_names"
    )


def _yolo_images(config: DatasetConfig, path: str, split: str) -> List[str]:
    """The image paths of a YOLO source: every image file under a folder (sorted), or the lines
    of a list file (`./x` relative to the list's folder, else to the root)."""
    import tensorflow as tf

    if tf.io.gfile.isdir(path):
        found = []
        for folder, _, names in tf.io.gfile.walk(path):
            found += [
                os.path.join(folder, n) for n in names if n.lower().endswith(YOLO_IMAGE_SUFFIXES)
            ]
        return sorted(found)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except tf.errors.NotFoundError as e:
        raise AnnotationError(
            f"{path}: dataset.sources.{split} is neither an image folder nor a list file"
        ) from e
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from e
    base = os.path.dirname(path)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [
        os.path.normpath(os.path.join(base, line[2:]))
        if line.startswith("./")
        else os.path.join(config.root, line)  # absolute ones stay as written: refused later
        for line in lines
    ]


def parse_yolo_labels(path: str, text: str, num_classes: int) -> Tuple[list, Tuple[str, ...]]:
    """(objects, problem) of one label file: `class cx cy w h` per line, fractions of the image;
    a line of more numbers is a polygon (`class x1 y1 x2 y2 ...`), boxed by its extremes."""
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            values = [float(v) for v in fields[1:]]
            index = int(fields[0])
        except ValueError:
            return [], ("malformed_label", f"{where}: {line.strip()!r} is not 'class x y w h'")
        if not 0 <= index < num_classes:
            return [], (
                "unknown_category",
                f"{where}: class {index} is not in 0..{num_classes - 1} (the dataset's names)",
            )
        if len(values) == 4:
            cx, cy, w, h = values
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        else:
            return [], ("malformed_label", f"{where}: {len(values)} numbers after the class")
        if not all(math.isfinite(v) for v in values) or min(values) < 0 or max(values) > 1:
            return [], (
                "malformed_label",
                f"{where}: coordinates must be fractions of the image in [0, 1], got {values}",
            )
        objects.append(ObjectAnnotation(category=str(index), box=box))
    return objects, ()


def yolo_files(config: DatasetConfig, source: Part) -> List[Part]:
    """The images of one YOLO source (each read with its label file), numbered in its order."""
    return _numbered(source, _yolo_images(config, source.path, source.split))


def read_yolo_file(config: DatasetConfig, part: Part, num_classes: int) -> ImageRecord:
    """The record of one YOLO image, with the objects of its label file (a label file that may
    not be read or parsed is the record's `problem`, quarantined later)."""
    image_path, split = part.path, part.split
    relative = (
        os.path.relpath(image_path, config.root)
        if not is_remote(image_path)
        else (image_path[len(config.root.rstrip("/")) + 1 :])
    )
    label_path = yolo_label_path(image_path)
    problem: Tuple[str, ...] = file_name_problem(image_path, f"dataset.sources.{split}")
    objects: list = []
    if not problem:
        try:
            data = files.read_file(config.root, label_path, config.max_image_bytes)
        except files.FileProblem as e:
            data, problem = None, (e.reason, f"label file {e.detail}")
        if data is not None:  # no label file: an image with no object (Ultralytics' rule)
            try:
                objects, problem = parse_yolo_labels(label_path, data.decode("utf-8"), num_classes)
            except UnicodeDecodeError as e:
                problem = ("malformed_label", f"{label_path}: not UTF-8 text ({e})")
    return ImageRecord(
        source_id=relative,
        split=split,
        image_path=image_path,
        objects=tuple(objects),
        ordinal=part.ordinal,
        problem=problem,
        normalized_boxes=True,
    )


def yolo_label_map(config: DatasetConfig) -> LabelMap:
    """Labels follow the class indices (0 -> label 1), named by yolo_class_names."""
    names = yolo_class_names(config)
    return LabelMap(keys=tuple(str(i) for i in range(len(names))), names=tuple(names))


def read_yolo(config: DatasetConfig) -> Tuple[List[ImageRecord], LabelMap]:
    """Reads an Ultralytics YOLO dataset: every image of each source with its label file."""
    label_map = yolo_label_map(config)
    read = functools.partial(read_yolo_file, num_classes=len(label_map.names))
    return _read_each_file(config, yolo_files, read), label_map


# Every format with annotation files: dataset.format -> a reader of the whole dataset into image
# records and the label map, on one machine (`litedet data inspect`, `litedet run`'s check). The
# ExampleGen reads the same formats part by part on its Beam workers, with the per-part functions
# these readers are made of (executor.SOURCES); tfrecord sources are read only there.
READERS = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo}


def count_classes(config: DatasetConfig) -> int:
    """How many classes the ExampleGen's label map will have, without reading the images: the
    `class_names` when given, else the COCO files' categories. VOC and TFRecord datasets name
    their classes only per object, so they need `class_names` for this."""
    if config.class_names:
        return len(config.class_names)
    if config.format == "yolo":
        return len(yolo_class_names(config))
    if config.format != "coco":
        raise AnnotationError(
            f"dataset.class_names: needed for a {config.format} dataset, to set up per-class "
            "evaluation before the data is read (list the class names in label order)"
        )
    names: Dict[int, str] = {}
    parents: Dict[int, Any] = {}
    for relative in config.sources.values():
        path = os.path.join(config.root, relative)
        # Streamed, and only the categories kept: the compile step reads a COCO 2017 file too.
        for _, items in _coco_arrays(path, ("categories",)):
            for c in items:
                if isinstance(c, dict) and isinstance(c.get("id"), int):
                    names[c["id"]] = c.get("name")
                    parents[c["id"]] = c.get("supercategory")
    _require(
        bool(names),
        os.path.join(config.root, next(iter(config.sources.values()))),
        "no categories",
    )
    return len(set(names) - placeholders(names, parents))
