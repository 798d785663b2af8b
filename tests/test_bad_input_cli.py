"""Hostile and malformed datasets through the real command line (docs/security.md, item 11):
`litedet data convert` run as a subprocess, one test per class of bad input. Every class ends as
a quarantine line with a true reason, or as one line naming the file (and the byte offset) with
exit code 2: never a traceback, silently wrong boxes or labels, or a lost annotation. The output
folder is whole or absent, and readers refuse a folder a convert did not finish.

Each dataset holds several classes and is converted once (a module fixture), so that the tests
cost a few convert runs, not one per class.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from litedet.components.example_gen import completion
from tests import datasets
from tests.datasets import feature_values, image_bytes
from tests.test_example_gen import GOOD, GOOD_EVAL

# A dozen `litedet data convert` processes (each imports TensorFlow and runs Beam): minutes on
# 2 cores, so outside `make test-fast`; `make test` and CI run them.
pytestmark = pytest.mark.slow

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
RED = datasets.COLORS[0]


def litedet(*args, timeout=300):
    """`python -m litedet.cli ARGS` in a fresh process: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "litedet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    return done.returncode, done.stdout, done.stderr


def write_config(path, **dataset):
    path.write_text(yaml.safe_dump({"dataset": dataset}))
    return str(path)


def convert(config, out, *extra):
    return litedet("data", "convert", "--config", config, "--out", str(out), *extra)


def assert_one_line_error(code, stderr, *fragments):
    """Exit 2 and one line `litedet: error: ...` holding every fragment; no traceback."""
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("litedet: error:")]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def quarantine(out):
    with open(os.path.join(out, "quarantine", "quarantine.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary_of(out):
    with open(os.path.join(out, "quarantine", "summary.json")) as f:
        return json.load(f)


def examples(out, split):
    return datasets.read_examples(os.path.join(out, "examples", f"Split-{split}"))


def by_file(out, split):
    return {feature_values(e, "image/filename")[0].decode(): e for e in examples(out, split)}


def reasons(out):
    return {os.path.basename(q["image"]): q["reason"] for q in quarantine(out)}


def decoded(example):
    """The pixels as the Transform decodes them (EXIF ignored)."""
    import tensorflow as tf

    encoded = feature_values(example, "image/encoded")[0]
    return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()


def pixels_under_boxes(example):
    """The mean colour inside each box of `example`, in the decoded pixels."""
    pixels = decoded(example)
    height, width = pixels.shape[:2]
    means = []
    for ymin, xmin, ymax, xmax in zip(
        *(
            feature_values(example, f"image/object/bbox/{c}")
            for c in ("ymin", "xmin", "ymax", "xmax")
        )
    ):
        # The inner half of the box: clear of JPEG ringing at its edges.
        y0, y1 = ymin * height, ymax * height
        x0, x1 = xmin * width, xmax * width
        dy, dx = (y1 - y0) / 4, (x1 - x0) / 4
        inner = pixels[int(y0 + dy) : int(y1 - dy), int(x0 + dx) : int(x1 - dx)]
        means.append(inner.reshape(-1, 3).mean(axis=0))
    return means


def close_to(colour, expected, tolerance=40):
    return bool(np.all(np.abs(np.asarray(colour, float) - np.asarray(expected)) < tolerance))


# --- a COCO dataset holding most classes --------------------------------------------------------

UPRIGHT = (40, 60)  # width, height of the EXIF-rotated photo as a viewer shows it
UPRIGHT_BOX = (5, 30, 20, 20)  # x, y, w, h on the upright picture


@pytest.fixture(scope="module")
def hostile_coco(tmp_path_factory):
    """One COCO dataset with a bad PNG CRC, a PNG without IEND, EXIF-rotated JPEGs, iscrowd
    values that are not booleans, two images sharing an id, an annotation of no image, a socket
    and a symlink loop named as images, and a file name that is not UTF-8 plus a folder symlink
    loop elsewhere under the root (the fingerprint scan); converted once."""
    base = tmp_path_factory.mktemp("coco")
    root = base / "d"
    upright = datasets.drawn(*UPRIGHT, [UPRIGHT_BOX])
    rotated = datasets.exif_rotated_jpeg(upright, orientation=6)

    def plain(name, anns, **more):
        return dict({"file_name": name, "width": 50, "height": 40, "anns": anns}, **more)

    box = (5, 5, 20, 20, 3, 0)
    train = [
        GOOD,
        plain("bad_crc.png", [box], bytes=datasets.png_with_bad_crc(50, 40)),
        plain("no_iend.png", [box], bytes=datasets.png_without_iend(50, 40)),
        # Declared as viewers show it (40x60): turned upright, the box on its pixels.
        dict(plain("exif_upright.jpg", [(*UPRIGHT_BOX, 3, 0)], bytes=rotated), width=40, height=60),
        # Declared as stored (60x40), the box drawn on the stored pixels: kept as stored.
        dict(
            plain("exif_stored.jpg", [(30, 15, 20, 20, 3, 0)], bytes=rotated), width=60, height=40
        ),
        plain("crowd_string0.jpg", [(5, 5, 20, 20, 3, "0")]),
        plain("crowd_false.jpg", [(5, 5, 20, 20, 3, "false")]),
        plain("crowd_two.jpg", [(5, 5, 20, 20, 3, 2)]),
        plain("crowd_true.jpg", [(5, 5, 20, 20, 3, True)], height=41),
        plain("dup_a.jpg", [(1, 1, 10, 10, 3, 0)], height=42),
        plain("dup_b.jpg", [(30, 20, 15, 15, 7, 0)], height=43),
        plain("socket.jpg", [], bytes=False),
        plain("loop.jpg", [], bytes=False),
    ]
    sources = datasets.write_coco(str(root), {"train": train, "eval": [GOOD_EVAL]})
    path = root / "annotations" / "train.json"
    doc = json.loads(path.read_text())
    ids = {img["file_name"]: img["id"] for img in doc["images"]}
    for img in doc["images"]:
        if img["file_name"] == "dup_b.jpg":
            img["id"] = ids["dup_a.jpg"]
    for ann in doc["annotations"]:
        if ann["image_id"] == ids["dup_b.jpg"]:
            ann["image_id"] = ids["dup_a.jpg"]
    doc["annotations"].append(
        {"id": 900, "image_id": 999, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}
    )
    path.write_text(json.dumps(doc))
    images = root / "images"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(images / "socket.jpg"))
    os.symlink("loop.jpg", images / "loop.jpg")
    (images / os.fsdecode(b"\xff\xfe-not-utf8.jpg")).write_bytes(b"not referenced")
    os.makedirs(root / "loops")
    os.symlink("b", root / "loops" / "a")
    os.symlink("a", root / "loops" / "b")
    config = write_config(base / "c.yaml", root=str(root), format="coco", sources=sources)
    out = base / "out"
    try:
        code, stdout, stderr = convert(config, out)
    finally:
        sock.close()
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": str(out), "root": root}


def test_the_hostile_coco_dataset_converts_with_every_image_accounted_for(hostile_coco):
    assert hostile_coco["code"] == 0, hostile_coco["stderr"]
    assert "Traceback" not in hostile_coco["stderr"]
    out = hostile_coco["out"]
    assert sorted(by_file(out, "train")) == [
        "crowd_true.jpg",
        "exif_stored.jpg",
        "exif_upright.jpg",
        "good.jpg",
    ]
    counts = summary_of(out)
    assert counts["examples"] == {"train": 4, "eval": 1}
    assert sum(counts["quarantined"].values()) == len(quarantine(out)) == 10


def test_images_tensorflow_cannot_decode_are_quarantined(hostile_coco):
    """PIL decodes both; TensorFlow (the Transform's decoder) refuses them."""
    lines = {os.path.basename(q["image"]): q for q in quarantine(hostile_coco["out"])}
    for name in ("bad_crc.png", "no_iend.png"):
        assert lines[name]["reason"] == "corrupt_image"
        assert "TensorFlow's decoder" in lines[name]["detail"]


def test_exif_rotated_images_have_their_boxes_on_the_right_pixels(hostile_coco):
    """Declared upright: stored upright (no EXIF left), 40x60, the box on the red square. Declared
    as stored: kept as stored, 60x40, the box on the red square there. Neither size_mismatch."""
    kept = by_file(hostile_coco["out"], "train")
    upright = kept["exif_upright.jpg"]
    assert decoded(upright).shape[:2] == (60, 40)
    assert feature_values(upright, "image/width") == [40]
    assert feature_values(upright, "image/height") == [60]
    encoded = feature_values(upright, "image/encoded")[0]
    with Image.open(io.BytesIO(encoded)) as image:
        assert image.getexif().get(0x0112) in (None, 1)
    stored = kept["exif_stored.jpg"]
    assert decoded(stored).shape[:2] == (40, 60)
    for example in (upright, stored):
        (colour,) = pixels_under_boxes(example)
        assert close_to(colour, RED), colour


def test_iscrowd_must_be_0_1_true_or_false(hostile_coco):
    out = hostile_coco["out"]
    lines = {os.path.basename(q["image"]): q for q in quarantine(out)}
    for name, shown in (("crowd_string0.jpg", "'0'"), ("crowd_false.jpg", "'false'")):
        assert lines[name]["reason"] == "invalid_flag"
        assert f"iscrowd is {shown}" in lines[name]["detail"]
    assert lines["crowd_two.jpg"]["reason"] == "invalid_flag"
    assert feature_values(by_file(out, "train")["crowd_true.jpg"], "image/object/is_crowd") == [1]
    assert feature_values(by_file(out, "train")["good.jpg"], "image/object/is_crowd") == [0, 0]


def test_images_sharing_an_id_do_not_share_boxes(hostile_coco):
    """Whose annotation is whose is unknown: both set aside, neither kept with the other's box."""
    out = hostile_coco["out"]
    assert reasons(out)["dup_a.jpg"] == reasons(out)["dup_b.jpg"] == "ambiguous_image_id"
    assert not {"dup_a.jpg", "dup_b.jpg"} & set(by_file(out, "train"))


def test_an_annotation_of_no_image_is_counted(hostile_coco):
    out = hostile_coco["out"]
    (line,) = [q for q in quarantine(out) if q["reason"] == "annotation_without_image"]
    assert line["source_id"] == "999" and "1 annotation(s) name image id 999" in line["detail"]
    assert summary_of(out)["quarantined"]["annotation_without_image"] == 1


def test_a_socket_and_a_symlink_loop_get_their_true_reasons(hostile_coco):
    lines = {os.path.basename(q["image"]): q for q in quarantine(hostile_coco["out"])}
    assert lines["socket.jpg"]["reason"] == "not_a_regular_file"
    assert "socket" in lines["socket.jpg"]["detail"]
    assert lines["loop.jpg"]["reason"] == "symlink_loop"


def test_names_that_are_not_utf8_and_loops_under_the_root_do_not_stop_the_scan(
    hostile_coco, caplog
):
    """The convert scans every file under the root (the dataset fingerprint, which chooses the
    Beam runner): a name that is not UTF-8 and symlink loops are in the fingerprint, counted in
    a warning, not a crash."""
    import logging

    from litedet.components.example_gen.config import DatasetConfig
    from litedet.components.example_gen.fingerprint import scan

    assert hostile_coco["code"] == 0, hostile_coco["stderr"]
    root = str(hostile_coco["root"])
    config = DatasetConfig(root=root, format="coco", sources={"train": "annotations/train.json"})
    with caplog.at_level(logging.WARNING):
        digest, count, _ = scan(config, root)
    every_name = [n for _, _, names in os.walk(os.fsencode(root)) for n in names]
    assert b"\xff\xfe-not-utf8.jpg" in every_name and count == len(every_name)
    assert "3 entries could not be followed (symlink loop: 3)" in caplog.text
    os.remove(os.path.join(os.fsencode(root), b"images", b"\xff\xfe-not-utf8.jpg"))
    assert scan(config, root)[0] != digest  # the file was in the fingerprint


# --- VOC: an annotations folder with a name that is not UTF-8 and a loop ------------------------


def test_voc_folder_with_a_non_utf8_name_a_loop_and_a_bad_flag(tmp_path):
    images = [
        {"id": "a", "width": 50, "height": 40, "objects": [("cat", 5, 5, 20, 20, 0)]},
        {"id": "b", "width": 50, "height": 40, "objects": [("cat", 5, 5, 20, 20, "yes")]},
    ]
    root = tmp_path / "voc"
    datasets.write_voc(str(root), images, {"train": ["a", "b"]})
    annotations_dir = os.fsencode(root / "Annotations")
    with open(os.path.join(annotations_dir, b"\xffbad.xml"), "wb") as f:
        f.write(datasets.voc_xml("a.jpg", 50, 40, []).encode())
    os.symlink("loop.xml", root / "Annotations" / "loop.xml")
    config = write_config(
        tmp_path / "c.yaml", root=str(root), format="voc", sources={"train": "Annotations"}
    )

    code, _, stderr = convert(config, tmp_path / "out")

    assert code == 0 and "Traceback" not in stderr, stderr
    lines = {q["reason"]: q for q in quarantine(str(tmp_path / "out"))}
    assert set(lines) == {"unencodable_file_name", "symlink_loop", "invalid_flag"}
    assert "\\xffbad.xml" in lines["unencodable_file_name"]["image"]
    assert lines["symlink_loop"]["image"].endswith("loop.xml")
    assert "<difficult> is 'yes'" in lines["invalid_flag"]["detail"]
    assert summary_of(str(tmp_path / "out"))["examples"] == {"train": 1}


# --- TFRecord sources -------------------------------------------------------------------------


def test_tfrecord_damage_and_wrong_types_are_quarantined_entry_by_entry(tmp_path):
    """A damaged entry, features of the wrong type, a flag of 2, a class name with a newline and
    an inline image over max_image_bytes: each one `malformed_record` (or `file_too_large`), and
    the entries after them are still read; a file cut in its last entry loses only that one. A
    FIFO and a symlink loop matched by the glob are set aside without blocking."""
    import tensorflow as tf

    jpeg = image_bytes(40, 30, [(10, 5, 20, 15)])
    box = [(10 / 40, 5 / 30, 30 / 40, 20 / 30)]

    def good(source_id):
        return datasets.tf_example(jpeg, 40, 30, box, [1], ["cat"], source_id=source_id)

    noise = np.random.default_rng(0).integers(0, 256, (110, 120, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, format="PNG")
    floats = tf.train.Feature(float_list=tf.train.FloatList(value=[30.0]))
    ints2 = tf.train.Feature(int64_list=tf.train.Int64List(value=[2]))
    entries = [
        good("first"),
        good("damaged"),
        datasets.tf_example(
            jpeg, 40, 30, box, [1], ["cat"], source_id="float_h", image__height=floats
        ),
        datasets.tf_example(
            jpeg, 40, 30, box, [1], ["cat"], source_id="crowd2", image__object__is_crowd=ints2
        ),
        datasets.tf_example(jpeg, 40, 30, box, [1], ["c\nat"], source_id="newline"),
        datasets.tf_example(big.getvalue(), 120, 110, source_id="big"),
        good("last"),
    ]
    root = tmp_path / "records"
    root.mkdir()
    path = str(root / "a.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for entry in entries:
            writer.write(entry)
    data = bytearray(open(path, "rb").read())
    at = data.index(b"damaged")  # inside the second entry's data: its checksum fails
    data[at] ^= 0x20
    open(path, "wb").write(bytes(data))
    with tf.io.TFRecordWriter(str(root / "b.tfrecord")) as writer:
        writer.write(good("in_b"))
        writer.write(good("cut"))
    cut = open(root / "b.tfrecord", "rb").read()
    (root / "b.tfrecord").write_bytes(cut[: len(cut) - 10])
    os.mkfifo(root / "c.tfrecord")  # matched by the glob: must not block the reader
    os.symlink("d.tfrecord", root / "d.tfrecord")
    config = write_config(
        tmp_path / "c.yaml",
        root=str(root),
        format="tfrecord",
        sources={"train": "*.tfrecord"},
        max_image_bytes=len(big.getvalue()) - 1,
    )

    code, _, stderr = convert(config, tmp_path / "out")

    assert code == 0 and "Traceback" not in stderr, stderr
    out = str(tmp_path / "out")
    kept = sorted(feature_values(e, "image/source_id")[0].decode() for e in examples(out, "train"))
    assert kept == ["first", "in_b", "last"]
    got = {q["source_id"]: (q["reason"], q["detail"]) for q in quarantine(out)}
    assert got["a.tfrecord#1"][0] == "malformed_record" and "checksum" in got["a.tfrecord#1"][1]
    assert got["float_h"] == ("malformed_record", "image/height is a float_list, not a int64_list")
    assert got["crowd2"][0] == "malformed_record" and "is_crowd holds [2]" in got["crowd2"][1]
    assert got["newline"][0] == "malformed_record" and "line break" in got["newline"][1]
    assert got["big"][0] == "file_too_large"
    assert got["b.tfrecord#1"][0] == "malformed_record" and "ends inside" in got["b.tfrecord#1"][1]
    assert got["c.tfrecord#0"][0] == "not_a_regular_file" and "FIFO" in got["c.tfrecord#0"][1]
    assert got["d.tfrecord#0"][0] == "symlink_loop"
    assert len(got) == 8
    with open(os.path.join(out, "label_map", "labels.txt")) as f:
        assert f.read() == "cat\n"


# --- whole-input refusals: one line, the file, the offset, exit 2 -------------------------------


def _coco_text(tmp_path):
    root = tmp_path / "d"
    sources = datasets.write_coco(str(root), {"train": [GOOD, dict(GOOD, file_name="b.jpg")]})
    return root, sources, (root / sources["train"])


@pytest.mark.parametrize("damage", ["truncated", "deep", "huge_number"])
def test_json_errors_inside_the_arrays_name_the_file_and_the_byte(tmp_path, damage):
    root, sources, path = _coco_text(tmp_path)
    text = path.read_text()
    at = text.index('"bbox"', text.index('"annotations"'))  # inside the annotations array
    if damage == "truncated":
        text = text[:at]
    elif damage == "deep":
        text = text[:at] + '"deep": ' + "[" * 50_000 + "]" * 50_000 + ", " + text[at:]
    else:
        text = text[:at] + '"area2": ' + "9" * 5000 + ", " + text[at:]
    path.write_text(text)
    config = write_config(tmp_path / "c.yaml", root=str(root), format="coco", sources=sources)

    code, _, stderr = convert(config, tmp_path / "out")

    line = assert_one_line_error(code, stderr, str(path), "not valid JSON", "byte ")
    expected = {"truncated": "the file ends at byte", "deep": "nested too deeply"}
    assert expected.get(damage, "cannot be read") in line
    assert not os.path.exists(tmp_path / "out")


def test_a_category_name_with_a_line_break_is_refused(tmp_path):
    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root), {"train": [GOOD]}, categories=((3, "square"), (7, "cir\ncle"))
    )
    config = write_config(tmp_path / "c.yaml", root=str(root), format="coco", sources=sources)

    code, _, stderr = convert(config, tmp_path / "out")

    assert_one_line_error(code, stderr, str(root / sources["train"]), "categories[1]", "U+000A")


# --- whole or absent ----------------------------------------------------------------------------


def small_dataset(tmp_path, n=24):
    root = tmp_path / "d"
    train = [dict(GOOD, file_name=f"g{i}.jpg", height=200 + i) for i in range(n)]
    sources = datasets.write_coco(str(root), {"train": train, "eval": [GOOD_EVAL]})
    return write_config(tmp_path / "c.yaml", root=str(root), format="coco", sources=sources)


def leftovers(parent, name):
    return [e for e in os.listdir(parent) if e.startswith(f".{name}.")]


def test_a_non_empty_out_is_refused_without_overwrite(tmp_path):
    config = small_dataset(tmp_path, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    code, _, stderr = convert(config, out)

    assert_one_line_error(code, stderr, str(out), "not empty", "--overwrite")
    assert os.listdir(out) == ["keep.txt"]


def test_a_failing_convert_leaves_nothing(tmp_path):
    """A step that fails (every evaluation image missing: EmptySplitError) leaves no --out and no
    temporary folder."""
    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root), {"train": [GOOD], "eval": [dict(GOOD_EVAL, bytes=False)]}
    )
    config = write_config(tmp_path / "c.yaml", root=str(root), format="coco", sources=sources)

    code, _, stderr = convert(config, tmp_path / "out")

    assert_one_line_error(code, stderr, "eval", "missing_image")
    assert not os.path.exists(tmp_path / "out") and leftovers(tmp_path, "out") == []


def test_a_killed_convert_leaves_whole_output_or_none_and_readers_refuse_a_partial_one(tmp_path):
    """SIGKILL at several points of a run: --out is then absent (or, past the rename, whole);
    the next run removes the killed run's temporary folder and writes it whole. A reader of a
    convert output refuses one without its marker, or with a shard its convert did not write."""
    config = small_dataset(tmp_path)
    out = tmp_path / "out"
    for delay in (0.0, 1.5):
        before = set(leftovers(tmp_path, "out"))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "litedet.cli",
                "data",
                "convert",
                "--config",
                config,
                "--out",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        deadline = time.time() + 240
        while set(leftovers(tmp_path, "out")) <= before and process.poll() is None:
            assert time.time() < deadline, "no temporary folder appeared"
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if os.path.exists(out):  # finished before the kill: whole
            completion.check(str(out))
        else:
            (partial,) = set(leftovers(tmp_path, "out")) - before
            with pytest.raises(completion.IncompleteOutput, match="incomplete"):
                completion.check(str(tmp_path / partial))

    code, stdout, stderr = convert(config, out, "--overwrite")

    assert code == 0, stderr
    assert leftovers(tmp_path, "out") == []
    marker = completion.check(str(out))
    assert marker["summary"]["examples"] == {"train": 24, "eval": 1}
    assert len(examples(str(out), "train")) == 24

    # Readers: the ExampleGen on tfrecord sources inside a convert output checks its marker.
    shard_dir = out / "examples" / "Split-train"
    (shard,) = os.listdir(shard_dir)
    (shard_dir / ("stale-" + shard)).write_bytes((shard_dir / shard).read_bytes())
    reader = write_config(
        tmp_path / "r.yaml",
        root=str(out),
        format="tfrecord",
        sources={"train": "examples/Split-train/*.gz"},
    )
    code, _, stderr = convert(reader, tmp_path / "again")
    assert_one_line_error(code, stderr, str(out), "not written by it", "stale-")
    os.remove(shard_dir / ("stale-" + shard))
    os.remove(out / completion.COMPLETE_MARKER)
    code, _, stderr = convert(reader, tmp_path / "again")
    assert_one_line_error(code, stderr, str(out), "incomplete `litedet data convert` output")
