"""DetectionExampleGen on hostile or broken annotations (docs/security.md, items 1-3): nothing
outside the dataset root is read, no file hangs or floods a worker, non-finite numbers and
unencodable names quarantine one image, duplicates are resolved by the documented policy."""

import json
import os
import threading

import pytest

from litedet.components.example_gen.config import DatasetConfig, DatasetConfigError
from tests import datasets
from tests.datasets import feature_values, image_bytes
from tests.test_example_gen import GOOD, GOOD_EVAL, quarantine_lines, run_example_gen, summary


def examples_of(uris, split):
    return datasets.read_examples(os.path.join(uris["examples"], f"Split-{split}"))


def encoded_images(uris, splits):
    return [feature_values(e, "image/encoded")[0] for s in splits for e in examples_of(uris, s)]


def reasons_by_image(uris):
    return {os.path.basename(q["image"]): q["reason"] for q in quarantine_lines(uris["quarantine"])}


def coco_config(root, sources, **settings):
    return DatasetConfig(root=str(root), format="coco", sources=sources, **settings)


def rewrite_coco(root, split, edit):
    """Applies `edit` to the COCO document of `split` (written by datasets.write_coco)."""
    path = os.path.join(root, "annotations", f"{split}.json")
    with open(path) as f:
        doc = json.load(f)
    edit(doc)
    with open(path, "w") as f:
        json.dump(doc, f)


# --- 1. the dataset root is the boundary --------------------------------------------------------


def test_files_outside_the_root_are_quarantined_and_never_read(tmp_path):
    """`..`, an absolute path and a symlink out of the root all name a perfectly good JPEG outside
    it: each image is quarantined as path_outside_root, and those bytes are in no example. A
    symlink that stays inside the root is followed."""
    secret = image_bytes(30, 30, [(5, 5, 10, 10)])
    (tmp_path / "secret.jpg").write_bytes(secret)
    root = tmp_path / "d"
    sources = datasets.write_coco(str(root), {"train": [GOOD], "eval": [GOOD_EVAL]})
    os.symlink(tmp_path / "secret.jpg", root / "images" / "link_out.jpg")
    os.symlink(root / "images" / "good.jpg", root / "images" / "link_in.jpg")

    def add_images(doc):
        for i, name in enumerate(
            ["../../secret.jpg", str(tmp_path / "secret.jpg"), "link_out.jpg", "link_in.jpg"]
        ):
            doc["images"].append({"id": 100 + i, "file_name": name, "width": 30, "height": 30})
        doc["images"][-1].update(width=200, height=100)

    rewrite_coco(str(root), "train", add_images)
    uris, _ = run_example_gen(tmp_path, coco_config(root, sources))

    assert {q["source_id"]: q["reason"] for q in quarantine_lines(uris["quarantine"])} == {
        "100": "path_outside_root",
        "101": "path_outside_root",
        "102": "path_outside_root",
    }
    assert secret not in encoded_images(uris, ["train", "eval"])
    assert summary(uris["quarantine"])["examples"] == {"train": 2, "eval": 1}  # good, link_in


def test_voc_image_set_ids_cannot_leave_the_root(tmp_path):
    """An image-set id `../../evil` would read an annotation file outside the root (which names
    an image inside it): quarantined, not read."""
    images = [{"id": "a", "width": 50, "height": 40, "objects": [("cat", 5, 5, 20, 20, 0)]}]
    root = tmp_path / "voc"
    sources = datasets.write_voc(str(root), images, {"train": ["a", "../../evil"]})
    (tmp_path / "evil.xml").write_text(
        datasets.voc_xml("a.jpg", 50, 40, [("cat", 5, 5, 20, 20, 0)])
    )
    config = DatasetConfig(root=str(root), format="voc", sources=sources)

    uris, _ = run_example_gen(tmp_path, config)

    (line,) = quarantine_lines(uris["quarantine"])
    assert line["reason"] == "path_outside_root" and line["image"].endswith("evil.xml")
    assert summary(uris["quarantine"])["examples"] == {"train": 1}


def run_with_timeout(function, timeout_s, unblock):
    """Runs `function` in a thread; (finished in time, its exception or None). `unblock` is
    called afterwards either way, so that a hung reader can end."""
    outcome = {}

    def target():
        try:
            function()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    finished = not thread.is_alive()
    unblock()
    thread.join(30)
    return finished, outcome.get("error")


def test_a_fifo_named_like_an_image_is_quarantined_without_hanging(tmp_path):
    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root),
        {
            "train": [GOOD, {"file_name": "x.jpg", "width": 50, "height": 50, "anns": []}],
            "eval": [GOOD_EVAL],
        },
    )
    fifo = root / "images" / "x.jpg"
    os.remove(fifo)
    os.mkfifo(fifo)

    def unblock():
        try:  # a reader blocked in open() gets its writer, then end of file
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waiting: nothing hung
            pass

    result = {}
    finished, error = run_with_timeout(
        lambda: result.update(uris=run_example_gen(tmp_path, coco_config(root, sources))[0]),
        timeout_s=120,
        unblock=unblock,
    )

    assert finished, "the ExampleGen hung on a FIFO"
    assert error is None, error
    assert reasons_by_image(result["uris"]) == {"x.jpg": "not_a_regular_file"}
    (line,) = quarantine_lines(result["uris"]["quarantine"])
    assert "FIFO" in line["detail"]


def test_byte_and_pixel_limits_quarantine_before_decoding(tmp_path):
    """Files over max_image_bytes and images over max_image_pixels are quarantined. The pixel
    limit is read from the header: a tiny PNG that declares 2000 x 2000 pixels is
    too_many_pixels, not a decode attempt (that would call it truncated)."""
    import struct
    import zlib

    def png_header(width, height):
        """A PNG that declares width x height pixels but holds a few bytes of them."""

        def chunk(kind, data):
            crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            return struct.pack(">I", len(data)) + kind + data + crc

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\0" * 64)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)

    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (110, 120, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG")
    big = out.getvalue()  # noise does not compress: ~40 KB, where the JPEGs here are ~2 KB
    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root),
        {
            "train": [
                GOOD,
                {"file_name": "wide.jpg", "width": 150, "height": 100, "anns": []},
                {"file_name": "heavy.png", "width": 120, "height": 110, "anns": [], "bytes": big},
                {
                    "file_name": "bomb.png",
                    "width": 2000,
                    "height": 2000,
                    "anns": [],
                    "bytes": png_header(2000, 2000),
                },
            ],
            "eval": [GOOD_EVAL],
        },
    )
    limits = {"max_image_bytes": len(big) - 1, "max_image_pixels": 200 * 110}
    good_size = len((root / "images" / "good.jpg").read_bytes())
    assert good_size <= limits["max_image_bytes"], "the kept image must fit the byte limit"

    uris, _ = run_example_gen(tmp_path, coco_config(root, sources, **limits))

    assert reasons_by_image(uris) == {
        "heavy.png": "file_too_large",
        "bomb.png": "too_many_pixels",
    }
    assert summary(uris["quarantine"])["examples"] == {"train": 2, "eval": 1}  # good, wide


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_image_bytes": 0}, "dataset.max_image_bytes: 0 must be a positive integer"),
        ({"max_image_pixels": "big"}, "dataset.max_image_pixels: 'big' must be a positive"),
        ({"max_image_pixels": True}, "dataset.max_image_pixels: True must be a positive"),
        ({"images_dir": "../elsewhere"}, "dataset.images_dir: '../elsewhere' must be a path"),
        ({"annotations_dir": "/abs/Annotations"}, "dataset.annotations_dir: '/abs/Annotations'"),
        ({"sources": {"train": "../up.json"}}, "dataset.sources.train: '../up.json' must be"),
        ({"class_names": ["cat", "do\ng"]}, r"dataset.class_names\[1\]: class name .* line break"),
        ({"class_names": ["cat", " "]}, r"dataset.class_names\[1\]: class name ' ' is empty"),
    ],
)
def test_limits_and_folders_are_validated_naming_the_field(values, message):
    base = {"root": "/data", "format": "coco", "sources": {"train": "a.json"}}
    with pytest.raises(DatasetConfigError, match=message):
        DatasetConfig.from_dict({**base, **values})


def test_defaults_of_the_limits():
    config = DatasetConfig(root="/d", format="coco", sources={"train": "a.json"})
    assert config.max_image_bytes == 50 * 2**20
    assert config.max_image_pixels == 40_000_000


@pytest.mark.parametrize(
    "path, inside",
    [
        ("gs://bucket/data/images/a.jpg", True),
        ("gs://bucket/data/images/../images/a.jpg", True),
        ("gs://bucket/data/images/../../secret.jpg", False),
        ("gs://bucket/data/../data2/a.jpg", False),  # `..` taken literally: key data/../...
        ("gs://bucket/data2/a.jpg", False),  # a sibling prefix, not a subfolder
        ("gs://other/data/images/a.jpg", False),
        ("s3://bucket/data/images/a.jpg", False),
        ("/etc/passwd", False),  # an absolute file_name joined to a remote images_dir
    ],
)
def test_object_store_containment_is_on_the_normalized_key(path, inside):
    from litedet.components.example_gen import files

    if inside:
        files.check_inside("gs://bucket/data", path)
    else:
        with pytest.raises(files.FileProblem) as problem:
            files.check_inside("gs://bucket/data", path)
        assert problem.value.reason == "path_outside_root"


def test_an_object_store_root_reads_nothing_outside_it(tmp_path):
    """End to end on TensorFlow's in-memory file system (`ram://`, standing in for a bucket):
    `..` in a key and an absolute local path are quarantined; the image inside is kept."""
    import uuid

    import tensorflow as tf

    secret = image_bytes(30, 30, [(5, 5, 10, 10)])
    bucket = f"ram://litedet-{uuid.uuid4().hex}"
    root = f"{bucket}/data"
    (tmp_path / "secret.jpg").write_bytes(secret)
    for path, data in {
        f"{bucket}/outside/secret.jpg": secret,
        f"{root}/images/good.jpg": image_bytes(200, 100, [(10, 20, 50, 40)]),
    }.items():
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
    doc = {
        "images": [
            {"id": 1, "file_name": "good.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "../../outside/secret.jpg", "width": 30, "height": 30},
            {"id": 3, "file_name": str(tmp_path / "secret.jpg"), "width": 30, "height": 30},
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "square"}],
    }
    tf.io.gfile.makedirs(f"{root}/annotations")
    with tf.io.gfile.GFile(f"{root}/annotations/train.json", "w") as f:
        f.write(json.dumps(doc))

    config = DatasetConfig(root=root, format="coco", sources={"train": "annotations/train.json"})
    uris, _ = run_example_gen(tmp_path, config)

    assert {q["source_id"]: q["reason"] for q in quarantine_lines(uris["quarantine"])} == {
        "2": "path_outside_root",
        "3": "path_outside_root",
    }
    assert secret not in encoded_images(uris, ["train"])
    assert summary(uris["quarantine"])["examples"] == {"train": 1}


# --- 2. numbers that are not numbers, names that are not text -----------------------------------


def test_non_finite_and_overflowing_numbers_quarantine_the_image(tmp_path):
    """JSON NaN / Infinity and an integer too large for a float in a COCO bbox: the image is set
    aside as non_finite_number (NaN used to become a full-image box, the integer used to fail the
    whole run)."""
    root = tmp_path / "d"
    names = ["nan.jpg", "inf.jpg", "huge.jpg", "nan_size.jpg"]
    train = [GOOD] + [
        {"file_name": n, "width": 60, "height": 60, "anns": [(5, 5, 10, 10, 3, 0)]} for n in names
    ]
    sources = datasets.write_coco(str(root), {"train": train, "eval": [GOOD_EVAL]})
    nan, inf = float("nan"), float("inf")
    boxes = {"nan.jpg": [nan] * 4, "inf.jpg": [0, 0, inf, 10], "huge.jpg": [0, 0, 10**400, 10]}

    def break_numbers(doc):  # json.dump writes NaN, Infinity and the 401 digits as such
        names = {img["id"]: img["file_name"] for img in doc["images"]}
        for ann in doc["annotations"]:
            ann["bbox"] = boxes.get(names[ann["image_id"]], ann["bbox"])
        doc["images"][-1]["width"] = nan

    rewrite_coco(str(root), "train", break_numbers)
    uris, _ = run_example_gen(tmp_path, coco_config(root, sources))

    assert reasons_by_image(uris) == {name: "non_finite_number" for name in names}
    assert summary(uris["quarantine"])["examples"] == {"train": 1, "eval": 1}


def test_non_finite_voc_numbers_quarantine_the_image(tmp_path):
    images = [
        {"id": "a", "width": 50, "height": 40, "objects": [("cat", 5, 5, 20, 20, 0)]},
        {"id": "b", "width": 50, "height": 40, "objects": [("cat", 5, 5, 20, 20, 0)]},
        {"id": "c", "width": 50, "height": 40, "objects": [("cat", 5, 5, 20, 20, 0)]},
    ]
    root = tmp_path / "voc"
    sources = datasets.write_voc(str(root), images, {"train": ["a", "b", "c"]})
    (root / "Annotations" / "b.xml").write_text(
        datasets.voc_xml("b.jpg", 50, 40, [("cat", "nan", 5, "inf", 20, 0)])
    )
    (root / "Annotations" / "c.xml").write_text(datasets.voc_xml("c.jpg", "nan", "1e999", []))
    config = DatasetConfig(root=str(root), format="voc", sources=sources)

    uris, _ = run_example_gen(tmp_path, config)

    assert reasons_by_image(uris) == {"b.jpg": "non_finite_number", "c.jpg": "non_finite_number"}
    assert summary(uris["quarantine"])["examples"] == {"train": 1}


def test_a_file_name_that_is_not_text_quarantines_only_its_image(tmp_path):
    """A lone surrogate is valid JSON (\\ud800) but no file name: that image is quarantined, the
    run goes on."""
    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root),
        {
            "train": [GOOD, {"file_name": "PLACEHOLDER.jpg", "width": 9, "height": 9, "anns": []}],
            "eval": [GOOD_EVAL],
        },
    )
    path = root / "annotations" / "train.json"
    path.write_text(path.read_text().replace("PLACEHOLDER", "\\ud800"))

    uris, _ = run_example_gen(tmp_path, coco_config(root, sources))

    (line,) = quarantine_lines(uris["quarantine"])
    assert line["reason"] == "unencodable_file_name" and "train.json" in line["detail"]
    assert summary(uris["quarantine"])["examples"] == {"train": 1, "eval": 1}


# --- 3. duplicates ------------------------------------------------------------------------------


def test_images_sharing_an_id_in_a_coco_file_are_all_set_aside(tmp_path):
    """COCO annotations name their image by id: of three images with one id, whose boxes are
    whose is unknown. All three are set aside (before, the first was kept with all the boxes of
    the three); an image with an id of its own is kept."""
    root = tmp_path / "d"
    other = dict(GOOD, file_name="other.jpg", width=190)
    third = dict(GOOD, file_name="third.jpg", width=180)
    fine = dict(GOOD, file_name="fine.jpg", width=170)
    sources = datasets.write_coco(
        str(root), {"train": [GOOD, other, third, fine], "eval": [GOOD_EVAL]}
    )

    def same_id(doc):  # other.jpg and third.jpg both claim good.jpg's id
        first = doc["images"][0]["id"]
        for image in doc["images"][1:3]:
            for ann in doc["annotations"]:
                if ann["image_id"] == image["id"]:
                    ann["image_id"] = first
            image["id"] = first

    rewrite_coco(str(root), "train", same_id)
    uris, _ = run_example_gen(tmp_path, coco_config(root, sources))

    assert reasons_by_image(uris) == {
        "good.jpg": "ambiguous_image_id",
        "other.jpg": "ambiguous_image_id",
        "third.jpg": "ambiguous_image_id",
    }
    (kept,) = examples_of(uris, "train")
    assert feature_values(kept, "image/filename") == [b"fine.jpg"]
    assert len(feature_values(kept, "image/object/bbox/xmin")) == 2
    assert summary(uris["quarantine"])["quarantined"] == {"ambiguous_image_id": 3}


def test_a_duplicate_id_from_two_files_keeps_the_first(tmp_path):
    """Pooled sources (split_ratios) may bring one id from two files into one split: each image
    has its own file's boxes, so the first is kept and the later one is duplicate_image_id."""
    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root), {"a": [GOOD], "b": [dict(GOOD_EVAL, file_name="second.jpg")]}
    )
    config = coco_config(root, sources, split_ratios={"train": 1})

    def renumber(doc):  # both files call their image 1
        for image in doc["images"]:
            image["id"] = 1
        for ann in doc["annotations"]:
            ann["image_id"] = 1

    for split in ("a", "b"):
        rewrite_coco(str(root), split, renumber)

    uris, _ = run_example_gen(tmp_path, config)

    assert reasons_by_image(uris) == {"second.jpg": "duplicate_image_id"}
    (kept,) = examples_of(uris, "train")
    assert feature_values(kept, "image/filename") == [b"good.jpg"]
    assert len(feature_values(kept, "image/object/bbox/xmin")) == 2


def test_a_tfrecord_shard_read_twice_keeps_one_copy_of_each_entry(tmp_path):
    """The same shard under two names (a copied file): every entry's id appears twice; the first
    file's copy is kept."""
    import shutil

    first, _ = run_example_gen(
        tmp_path / "first",
        coco_config(tmp_path / "d", datasets.write_coco(str(tmp_path / "d"), {"train": [GOOD]})),
    )
    (shard,) = [n for n in os.listdir(os.path.join(first["examples"], "Split-train"))]
    shard_dir = os.path.join(first["examples"], "Split-train")
    shutil.copy(os.path.join(shard_dir, shard), os.path.join(shard_dir, "copy-" + shard))
    config = DatasetConfig(
        root=first["examples"], format="tfrecord", sources={"train": "Split-train/*.gz"}
    )

    uris, _ = run_example_gen(tmp_path / "second", config)

    assert [q["reason"] for q in quarantine_lines(uris["quarantine"])] == ["duplicate_image_id"]
    assert summary(uris["quarantine"])["examples"] == {"train": 1}


def test_an_image_in_training_and_evaluation_stays_in_evaluation_only(tmp_path):
    """The same bytes under another name and id in both splits: the training copy is set aside
    (evaluating on a training image inflates the mAP the gate relies on); the count is in
    summary.json."""
    root = tmp_path / "d"
    leaked = dict(GOOD_EVAL, file_name="leaked_copy.jpg")
    sources = datasets.write_coco(str(root), {"train": [GOOD, leaked], "eval": [GOOD_EVAL]})

    uris, _ = run_example_gen(tmp_path, coco_config(root, sources))

    (line,) = quarantine_lines(uris["quarantine"])
    assert (line["reason"], line["split"]) == ("also_in_evaluation", "train")
    assert line["image"].endswith("leaked_copy.jpg") and "'eval'" in line["detail"]
    counts = summary(uris["quarantine"])
    assert counts["examples"] == {"train": 1, "eval": 1}
    assert counts["quarantined"] == {"also_in_evaluation": 1}
    (kept,) = examples_of(uris, "eval")
    assert feature_values(kept, "image/filename") == [b"good_eval.jpg"]


def test_overlap_policy_allow_keeps_both_copies(tmp_path):
    """`dataset.overlap_policy: allow` is the deliberate choice to evaluate on training images
    (the pipeline tests do): nothing is set aside; an unknown policy is refused by name."""
    root = tmp_path / "d"
    leaked = dict(GOOD_EVAL, file_name="leaked_copy.jpg")
    sources = datasets.write_coco(str(root), {"train": [GOOD, leaked], "eval": [GOOD_EVAL]})
    config = coco_config(root, sources, overlap_policy="allow")

    uris, _ = run_example_gen(tmp_path, config)

    assert quarantine_lines(uris["quarantine"]) == []
    assert summary(uris["quarantine"])["examples"] == {"train": 2, "eval": 1}
    with pytest.raises(DatasetConfigError, match="dataset.overlap_policy: 'keep' must be one of"):
        coco_config(root, sources, overlap_policy="keep")


def test_class_names_with_a_line_break_are_refused_in_every_format(tmp_path):
    """labels.txt has one line per class: a COCO category, a VOC <name> or a YOLO data.yaml name
    with a line break is refused naming the file and the entry (item 11)."""
    from litedet.components.example_gen import annotations

    root = tmp_path / "d"
    sources = datasets.write_coco(str(root), {"train": [GOOD]}, categories=((3, "sq\x1fuare"),))
    with pytest.raises(annotations.AnnotationError, match=r"train.json: categories\[0\] .*U\+001F"):
        annotations.read_coco(coco_config(root, sources))
    images = [{"id": "a", "width": 50, "height": 40, "objects": [("c\nat", 5, 5, 20, 20, 0)]}]
    voc = tmp_path / "voc"
    voc_sources = datasets.write_voc(str(voc), images, {"train": ["a"]})
    with pytest.raises(annotations.AnnotationError, match=r"a.xml: <object><name>: .*line break"):
        annotations.read_voc(DatasetConfig(root=str(voc), format="voc", sources=voc_sources))
    yolo = tmp_path / "yolo"
    yolo.mkdir()
    (yolo / annotations.YOLO_DATA_FILES[0]).write_text('names: ["cat", "do\\u2028g"]\n')
    config = DatasetConfig(root=str(yolo), format="yolo", sources={"train": "images"})
    with pytest.raises(annotations.AnnotationError, match=r"names\[1\]: .*U\+2028"):
        annotations.yolo_class_names(config)
