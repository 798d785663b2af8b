"""Tests for the synthetic "shapes" COCO dataset generator."""

import json
from pathlib import Path

import pytest
from PIL import Image

from litedet.data import sample as sample_data
from litedet.data.sample import CLASSES, ensure_sample_dataset, generate
from litedet.paths import cache_dir

SPLITS = ("train", "eval")
# 30 + 10 images with seed 0 contain every feature checked below (2 crowd boxes, 2 empty images).
NUM_TRAIN, NUM_EVAL, SEED = 30, 10, 0


def _files(root):
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _touches_border(annotation, image):
    x, y, w, h = annotation["bbox"]
    return (
        x == 0
        or y == 0
        or x + w == pytest.approx(image["width"])
        or y + h == pytest.approx(image["height"])
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    summary = generate(root, num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=SEED)
    coco = {
        split: json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        for split in SPLITS
    }
    return root, summary, coco


def _objects(coco):
    """(annotation, image) pairs over both splits."""
    for data in coco.values():
        images = {image["id"]: image for image in data["images"]}
        for annotation in data["annotations"]:
            yield annotation, images[annotation["image_id"]]


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = generate(tmp_path / "a", num_train=6, num_eval=3, seed=5)
    second = generate(tmp_path / "b", num_train=6, num_eval=3, seed=5)
    assert first == second
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    assert len([name for name in files if name.endswith(".jpg")]) == 9


def test_different_seed_gives_different_files(tmp_path):
    generate(tmp_path / "a", num_train=3, num_eval=2, seed=5)
    generate(tmp_path / "b", num_train=3, num_eval=2, seed=6)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith(".jpg") or name.endswith(".json"):
            assert a[name] != b[name], name


def test_images_do_not_depend_on_split_sizes(tmp_path):
    # Per-image seeds: a larger dataset starts with exactly the images of a smaller one.
    generate(tmp_path / "small", num_train=2, num_eval=1, seed=5)
    generate(tmp_path / "large", num_train=4, num_eval=2, seed=5)
    small, large = _files(tmp_path / "small"), _files(tmp_path / "large")
    for name in ("images/train_000000.jpg", "images/train_000001.jpg", "images/eval_000000.jpg"):
        assert small[name] == large[name]


# --- COCO structure -------------------------------------------------------------------------


def test_layout(dataset):
    root, _, _ = dataset
    assert (root / "README.txt").read_text().startswith('litedet "shapes"')
    for split in SPLITS:
        assert (root / "annotations" / f"instances_{split}.json").is_file()
    assert len(list((root / "images").glob("*.jpg"))) == NUM_TRAIN + NUM_EVAL


def test_coco_structure_is_valid(dataset):
    root, _, coco = dataset
    image_ids = []
    for split, count in zip(SPLITS, (NUM_TRAIN, NUM_EVAL)):
        data = coco[split]
        assert {"images", "annotations", "categories"} <= data.keys()
        assert len(data["images"]) == count
        category_ids = {category["id"] for category in data["categories"]}
        images = {}
        for image in data["images"]:
            assert set(image) == {"id", "file_name", "width", "height"}
            assert image["file_name"].startswith(f"{split}_") and image["file_name"].endswith(
                ".jpg"
            )
            with Image.open(root / "images" / image["file_name"]) as opened:
                assert opened.format == "JPEG"
                assert opened.size == (image["width"], image["height"])
            images[image["id"]] = image
        image_ids += images
        annotation_ids = [annotation["id"] for annotation in data["annotations"]]
        assert len(set(annotation_ids)) == len(annotation_ids)
        for annotation in data["annotations"]:
            assert set(annotation) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
            assert annotation["image_id"] in images
            assert annotation["category_id"] in category_ids
            assert annotation["iscrowd"] in (0, 1)
            assert annotation["area"] > 0
            x, y, w, h = annotation["bbox"]
            image = images[annotation["image_id"]]
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0
            assert x + w <= image["width"] + 1e-6 and y + h <= image["height"] + 1e-6
            # area is the visible pixel count: at most the box, give or take edge pixels.
            assert annotation["area"] <= (w + 2) * (h + 2)
    assert len(set(image_ids)) == len(image_ids), "image ids must be unique across splits"


def test_category_ids_are_non_contiguous(dataset):
    _, _, coco = dataset
    for data in coco.values():
        categories = [(category["id"], category["name"]) for category in data["categories"]]
        assert categories == list(CLASSES)
    ids = [coco_id for coco_id, _ in CLASSES]
    assert ids != list(range(1, len(ids) + 1)) and ids != list(range(len(ids)))
    assert len({name for _, name in CLASSES}) == len(CLASSES) >= 5


def test_every_class_is_present(dataset):
    _, summary, coco = dataset
    present = {
        annotation["category_id"] for annotation, _ in _objects(coco) if not annotation["iscrowd"]
    }
    assert present == {coco_id for coco_id, _ in CLASSES}
    assert all(count > 0 for count in summary["objects"].values())


# --- dataset realities ----------------------------------------------------------------------


def test_has_small_and_large_objects(dataset):
    _, _, coco = dataset
    sides = [max(a["bbox"][2:]) for a, _ in _objects(coco) if not a["iscrowd"]]
    assert any(side < 16 for side in sides)
    assert any(side > 100 for side in sides)


def test_has_objects_cut_by_the_border(dataset):
    _, _, coco = dataset
    assert sum(_touches_border(a, image) for a, image in _objects(coco) if not a["iscrowd"]) >= 3


def test_has_empty_images_and_crowd(dataset):
    _, summary, coco = dataset
    annotated = {a["image_id"] for a, _ in _objects(coco)}
    empty = [
        image for data in coco.values() for image in data["images"] if image["id"] not in annotated
    ]
    assert len(empty) == summary["empty_images"] >= 1
    crowd = [a for a, _ in _objects(coco) if a["iscrowd"]]
    assert len(crowd) == summary["crowd"] >= 1
    circle_id = {name: coco_id for coco_id, name in CLASSES}["circle"]
    assert all(a["category_id"] == circle_id for a in crowd)


def test_objects_per_image_at_most_eight(dataset):
    _, _, coco = dataset
    per_image = {}
    for annotation, image in _objects(coco):
        if not annotation["iscrowd"]:
            per_image[image["id"]] = per_image.get(image["id"], 0) + 1
    assert max(per_image.values()) <= 8


def test_image_sizes_and_aspect_ratios_vary(dataset):
    _, _, coco = dataset
    images = [image for data in coco.values() for image in data["images"]]
    sizes = {(image["width"], image["height"]) for image in images}
    assert len(sizes) >= 10
    aspects = [image["width"] / image["height"] for image in images]
    assert all(200 <= side <= 480 for size in sizes for side in size)
    assert all(0.6 <= aspect <= 1.7 for aspect in aspects)
    assert min(aspects) < 0.9 and max(aspects) > 1.2


def test_summary_matches_annotations(dataset):
    _, summary, coco = dataset
    names = dict(CLASSES)
    counts = {name: 0 for _, name in CLASSES}
    for annotation, _ in _objects(coco):
        if not annotation["iscrowd"]:
            counts[names[annotation["category_id"]]] += 1
    assert summary["objects"] == counts
    assert summary["images"] == {"train": NUM_TRAIN, "eval": NUM_EVAL}


# --- cache ----------------------------------------------------------------------------------


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LITEDET_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LITEDET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "litedet"


def test_ensure_sample_dataset_generates_once(monkeypatch, tmp_path):
    monkeypatch.setenv("LITEDET_CACHE", str(tmp_path))
    path = ensure_sample_dataset(num_train=3, num_eval=2, seed=1)
    assert path == tmp_path / "datasets" / "shapes-v1-n3-2-s1"
    assert (path / ".complete").is_file()
    assert len(list((path / "images").glob("*.jpg"))) == 5
    before = _files(path)

    def fail(*args, **kwargs):
        raise AssertionError("a cached dataset must not be regenerated")

    monkeypatch.setattr(sample_data, "generate", fail)
    assert ensure_sample_dataset(num_train=3, num_eval=2, seed=1) == path
    assert _files(path) == before
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == [path.name], (
        "no staging leftovers"
    )


def test_ensure_sample_dataset_ignores_crash_leftovers(tmp_path):
    datasets = tmp_path / "datasets"
    # A staging folder left by a crashed run, and a marker-less folder at the final path.
    leftover = datasets / ".shapes-v1-n3-2-s1.tmp-crashed"
    (leftover / "annotations").mkdir(parents=True)
    (leftover / "annotations" / "instances_train.json").write_text("{")
    (datasets / "shapes-v1-n3-2-s1" / "images").mkdir(parents=True)

    path = ensure_sample_dataset(num_train=3, num_eval=2, seed=1, cache_dir=tmp_path)
    assert path == datasets / "shapes-v1-n3-2-s1"
    assert (path / ".complete").is_file()
    assert len(list((path / "images").glob("*.jpg"))) == 5
    json.loads((path / "annotations" / "instances_train.json").read_text())
    assert (leftover / "annotations" / "instances_train.json").read_text() == "{"


def test_ensure_sample_dataset_failure_leaves_no_dataset(monkeypatch, tmp_path):
    def crash(root, **kwargs):
        (Path(root) / "images").mkdir(parents=True)
        (Path(root) / "images" / "train_000000.jpg").write_bytes(b"partial")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(sample_data, "generate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_sample_dataset(num_train=3, num_eval=2, seed=1, cache_dir=tmp_path)
    assert list((tmp_path / "datasets").iterdir()) == []
