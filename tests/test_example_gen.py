"""DetectionExampleGen: each input format, COCO's realities, every quarantine reason, splits."""

import json
import os
import re

import pytest

from litedet.components.example_gen import annotations, records
from litedet.components.example_gen.config import DatasetConfig, DatasetConfigError
from litedet.components.example_gen.executor import EmptySplitError, hash_split
from tests import datasets
from tests.datasets import feature_values, image_bytes


def run_example_gen(tmp_path, config: DatasetConfig, fingerprint: str = "", beam_args=()):
    """Runs the real executor (Beam DirectRunner, in process unless `beam_args` say otherwise)
    into fresh artifact folders."""
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.example_gen.executor import Executor

    outputs = {
        "examples": [standard_artifacts.Examples()],
        "label_map": [artifacts.LabelMap()],
        "quarantine": [artifacts.QuarantinedRecords()],
    }
    for key, (artifact,) in outputs.items():
        artifact.uri = str(tmp_path / "out" / key)
    properties = {"dataset": config.to_json(), "input_base": config.root}
    if fingerprint:
        properties["input_fingerprint"] = fingerprint
    Executor(Executor.Context(beam_pipeline_args=list(beam_args))).Do({}, outputs, properties)
    return {key: artifact.uri for key, (artifact,) in outputs.items()}, outputs


def quarantine_lines(uri):
    with open(os.path.join(uri, "quarantine.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary(uri):
    with open(os.path.join(uri, "summary.json")) as f:
        return json.load(f)


GOOD = {
    "file_name": "good.jpg",
    "width": 200,
    "height": 100,
    "anns": [(10, 20, 50, 40, 7, 0), (100, 10, 60, 80, 3, 0)],
}
# Another image for the evaluation split: the same bytes in training and evaluation would be left
# out of training (also_in_evaluation).
GOOD_EVAL = dict(GOOD, file_name="good_eval.jpg", height=110)


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_boxes_labels_and_crowd(tmp_path):
    crowd = {
        "file_name": "crowd.jpg",
        "width": 120,
        "height": 160,
        "anns": [(0, 0, 30, 30, 3, 0), (40, 50, 60, 100, 7, 1)],
    }
    empty = {"file_name": "empty.jpg", "width": 64, "height": 48, "anns": []}
    sources = datasets.write_coco(str(tmp_path / "d"), {"train": [GOOD, crowd], "eval": [empty]})
    config = DatasetConfig(root=str(tmp_path / "d"), format="coco", sources=sources)
    uris, outputs = run_example_gen(tmp_path, config, fingerprint="sha256:d474")
    # The dataset's fingerprint travels on the label map, for the pusher's lineage.
    label_map = outputs["label_map"][0]
    assert label_map.get_string_custom_property("data_fingerprint") == "sha256:d474"

    train = {
        feature_values(e, "image/filename")[0]: e
        for e in datasets.read_examples(os.path.join(uris["examples"], "Split-train"))
    }
    assert set(train) == {b"good.jpg", b"crowd.jpg"}
    good = train[b"good.jpg"]
    # bbox [x, y, w, h] px -> normalized (ymin, xmin, ymax, xmax); non-contiguous ids 3, 7 -> 1, 2
    assert feature_values(good, "image/object/bbox/xmin") == pytest.approx([10 / 200, 100 / 200])
    assert feature_values(good, "image/object/bbox/ymax") == pytest.approx([60 / 100, 90 / 100])
    assert feature_values(good, "image/object/class/label") == [2, 1]
    assert feature_values(good, "image/object/class/text") == [b"circle", b"square"]
    assert feature_values(good, "image/height") == [100]
    assert feature_values(good, "image/format") == [b"jpeg"]
    assert feature_values(train[b"crowd.jpg"], "image/object/is_crowd") == [0, 1]
    (empty_example,) = datasets.read_examples(os.path.join(uris["examples"], "Split-eval"))
    assert feature_values(empty_example, "image/object/class/label") == []

    with open(os.path.join(uris["label_map"], "label_map.json")) as f:
        assert [c["name"] for c in json.load(f)["classes"]] == ["square", "circle"]
    with open(os.path.join(uris["label_map"], "labels.txt")) as f:
        assert f.read() == "square\ncircle\n"
    assert outputs["examples"][0].split_names == '["train", "eval"]'
    # TFX's file layout, GZIP-compressed, which StatisticsGen and Transform glob for.
    for split in ("train", "eval"):
        (name,) = os.listdir(os.path.join(uris["examples"], f"Split-{split}"))
        assert re.fullmatch(r"data_tfrecord-\d{5}-of-\d{5}\.gz", name), name
        with open(os.path.join(uris["examples"], f"Split-{split}", name), "rb") as f:
            assert f.read(2) == b"\x1f\x8b"
    assert summary(uris["quarantine"])["examples"] == {"train": 2, "eval": 1}
    assert quarantine_lines(uris["quarantine"]) == []


def _bad_images():
    """One image per per-image problem, with the reason it must be quarantined for."""
    png = image_bytes(40, 40, fmt="PNG")
    truncated = image_bytes(200, 100, [(10, 10, 50, 50)])
    return [
        (
            {"file_name": "missing.jpg", "width": 50, "height": 50, "anns": [], "bytes": False},
            "missing_image",
        ),
        (
            {
                "file_name": "corrupt.jpg",
                "width": 50,
                "height": 50,
                "anns": [],
                "bytes": b"\xff\xd8\xff" + b"garbage" * 50,
            },
            "corrupt_image",
        ),
        (
            {
                "file_name": "truncated.jpg",
                "width": 200,
                "height": 100,
                "anns": [],
                "bytes": truncated[: len(truncated) // 2],
            },
            "truncated_image",
        ),
        (
            {
                "file_name": "anim.gif",
                "width": 50,
                "height": 50,
                "anns": [],
                "bytes": image_bytes(50, 50, fmt="GIF"),
            },
            "unsupported_format",
        ),
        (
            {
                "file_name": "lies.png",
                "width": 40,
                "height": 40,
                "anns": [],
                "bytes": png,
                "declared": (80, 40),
            },
            "size_mismatch",
        ),
        (
            {
                "file_name": "unknown.jpg",
                "width": 60,
                "height": 60,
                "anns": [(5, 5, 10, 10, 99, 0)],
            },
            "unknown_category",
        ),
        (
            {
                "file_name": "outside.jpg",
                "width": 60,
                "height": 60,
                "anns": [(50, 50, 30, 30, 3, 0)],
            },
            "box_outside_image",
        ),
        (
            {"file_name": "flat.jpg", "width": 60, "height": 60, "anns": [(10, 10, 0, 20, 3, 0)]},
            "zero_area_box",
        ),
        (
            {
                "file_name": "crowded.jpg",
                "width": 60,
                "height": 60,
                "anns": [(i, i, 5, 5, 3, 0) for i in range(4)],
            },
            "too_many_objects",
        ),
    ]


def test_every_bad_image_is_counted_and_quarantined_and_the_run_goes_on(tmp_path):
    bad = _bad_images()
    rounding = {
        "file_name": "rounding.jpg",
        "width": 60,
        "height": 60,
        "anns": [(-1.2, 30, 20, 31.5, 3, 0)],
    }  # sticks out by < 2 px: clipped, kept
    sources = datasets.write_coco(
        str(tmp_path / "d"),
        {"train": [GOOD, rounding] + [image for image, _ in bad], "eval": [GOOD_EVAL]},
    )
    config = DatasetConfig(
        root=str(tmp_path / "d"), format="coco", sources=sources, max_objects_per_image=3
    )
    uris, outputs = run_example_gen(tmp_path, config)

    lines = quarantine_lines(uris["quarantine"])
    reasons = {os.path.basename(q["image"]): q["reason"] for q in lines}
    assert reasons == {image["file_name"]: reason for image, reason in bad}
    assert all(q["detail"] and q["split"] == "train" and q["source_id"] for q in lines)
    counts = summary(uris["quarantine"])
    assert counts["quarantined"] == {reason: 1 for _, reason in bad}
    assert counts["examples"] == {"train": 2, "eval": 1}
    assert outputs["quarantine"][0].get_int_custom_property("num_quarantined") == len(bad)
    assert set(reasons.values()) <= set(records.QUARANTINE_REASONS)

    kept = {
        feature_values(e, "image/filename")[0]: e
        for e in datasets.read_examples(os.path.join(uris["examples"], "Split-train"))
    }
    clipped = kept[b"rounding.jpg"]
    assert feature_values(clipped, "image/object/bbox/xmin") == [0.0]
    assert feature_values(clipped, "image/object/bbox/ymax") == [1.0]  # 61.5 px clipped to 60


def test_a_split_left_empty_fails_with_the_reasons(tmp_path):
    missing = {"file_name": "gone.jpg", "width": 50, "height": 50, "anns": [], "bytes": False}
    sources = datasets.write_coco(str(tmp_path / "d"), {"train": [GOOD], "eval": [missing]})
    config = DatasetConfig(root=str(tmp_path / "d"), format="coco", sources=sources)
    with pytest.raises(EmptySplitError, match="eval.*missing_image"):
        run_example_gen(tmp_path, config)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"images": [], "annotations": []}', "missing list field 'categories'"),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "a"}],'
            ' "annotations": [{"id": 5, "image_id": 1, "bbox": [1, 2]}]}',
            r"annotations\[0\] \(id 5\): 'bbox' must be \[x, y, width, height\]",
        ),
    ],
)
def test_malformed_coco_file_fails_naming_the_file(tmp_path, content, message):
    path = tmp_path / "instances.json"
    path.write_text(content)
    config = DatasetConfig(root=str(tmp_path), format="coco", sources={"train": "instances.json"})
    with pytest.raises(annotations.AnnotationError, match=message) as error:
        annotations.read_coco(config)
    assert str(path) in str(error.value)


def test_missing_coco_file_fails_naming_the_file(tmp_path):
    config = DatasetConfig(root=str(tmp_path), format="coco", sources={"train": "nope.json"})
    with pytest.raises(annotations.AnnotationError, match="nope.json: annotation file not found"):
        annotations.read_coco(config)


# --- Pascal VOC ---------------------------------------------------------------------------------


def test_voc_image_sets_pixels_and_difficult(tmp_path):
    images = [
        {
            "id": "a",
            "width": 100,
            "height": 80,
            "objects": [("dog", 11, 21, 50, 60, 0), ("cat", 1, 1, 100, 80, 1)],
        },
        {"id": "b", "width": 90, "height": 90, "objects": [("cat", 5, 5, 40, 40, 0)]},
    ]
    sources = datasets.write_voc(str(tmp_path / "voc"), images, {"train": ["a"], "val": ["b"]})
    config = DatasetConfig(root=str(tmp_path / "voc"), format="voc", sources=sources)
    uris, _ = run_example_gen(tmp_path, config)
    (a,) = datasets.read_examples(os.path.join(uris["examples"], "Split-train"))
    # VOC pixels are 1-based and inclusive: xmin 11 -> 10 px from the left edge.
    assert feature_values(a, "image/object/bbox/xmin") == pytest.approx([10 / 100, 0.0])
    assert feature_values(a, "image/object/bbox/xmax") == pytest.approx([50 / 100, 1.0])
    assert feature_values(a, "image/object/class/text") == [b"dog", b"cat"]
    assert feature_values(a, "image/object/class/label") == [2, 1]  # sorted names: cat, dog
    assert feature_values(a, "image/object/difficult") == [0, 1]
    assert summary(uris["quarantine"])["examples"] == {"train": 1, "val": 1}


def test_voc_class_names_order_and_unknown_names(tmp_path):
    images = [
        {"id": "a", "width": 50, "height": 50, "objects": [("dog", 1, 1, 20, 20, 0)]},
        {"id": "b", "width": 50, "height": 50, "objects": [("bird", 1, 1, 20, 20, 0)]},
    ]
    sources = datasets.write_voc(str(tmp_path / "voc"), images, {"train": ["a", "b"]})
    config = DatasetConfig(
        root=str(tmp_path / "voc"), format="voc", sources=sources, class_names=["cat", "dog"]
    )
    uris, _ = run_example_gen(tmp_path, config)
    (a,) = datasets.read_examples(os.path.join(uris["examples"], "Split-train"))
    assert feature_values(a, "image/object/class/label") == [2]
    assert [q["reason"] for q in quarantine_lines(uris["quarantine"])] == ["unknown_category"]


def test_malformed_voc_xml_fails_naming_the_file(tmp_path):
    sources = datasets.write_voc(
        str(tmp_path), [{"id": "a", "width": 50, "height": 50, "objects": []}], {"train": ["a"]}
    )
    bad = tmp_path / "Annotations" / "a.xml"
    bad.write_text("<annotation><filename>a.jpg</filename><object>")
    config = DatasetConfig(root=str(tmp_path), format="voc", sources=sources)
    with pytest.raises(annotations.AnnotationError, match=f"{bad}: malformed XML"):
        annotations.read_voc(config)


# --- TF OD API TFRecords ------------------------------------------------------------------------


def test_tfrecord_input_round_trips_our_own_output(tmp_path):
    """Our output is TF OD API TFRecords; read back as input it must give the same examples."""
    sources = datasets.write_coco(
        str(tmp_path / "d"),
        {
            "train": [
                GOOD,
                {
                    "file_name": "x.png",
                    "width": 30,
                    "height": 40,
                    "anns": [(1, 2, 10, 20, 3, 1)],
                    "bytes": image_bytes(30, 40, [(1, 2, 10, 20)], fmt="PNG", mode="RGBA"),
                },
            ]
        },
    )
    first, _ = run_example_gen(
        tmp_path / "first", DatasetConfig(root=str(tmp_path / "d"), format="coco", sources=sources)
    )
    config = DatasetConfig(
        root=first["examples"], format="tfrecord", sources={"train": "Split-train/*.gz"}
    )
    second, _ = run_example_gen(tmp_path / "second", config)

    def by_id(uri):
        return {
            feature_values(e, "image/source_id")[0]: e
            for e in datasets.read_examples(os.path.join(uri, "Split-train"))
        }

    original, again = by_id(first["examples"]), by_id(second["examples"])
    assert original.keys() == again.keys()
    for source_id, example in original.items():
        for key in (
            "image/encoded",
            "image/object/bbox/xmin",
            "image/object/bbox/ymax",
            "image/object/class/text",
            "image/object/is_crowd",
            "image/format",
        ):
            assert feature_values(again[source_id], key) == feature_values(example, key), key
    # Labels 1 (square) and 2 (circle) in the data: renumbered in numeric order, names kept.
    with open(os.path.join(second["label_map"], "labels.txt")) as f:
        assert f.read() == "square\ncircle\n"


def test_tfrecord_garbage_entry_is_quarantined(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "data.tfrecord")
    good = records.to_tf_example(
        records.check_image(
            annotations.ImageRecord(
                "1", "train", image_bytes=image_bytes(20, 20), width=20, height=20
            ),
            image_bytes(20, 20),
            annotations.LabelMap((), ()),
            10,
            2.0,
        ),
        image_bytes(20, 20),
    )
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(good.SerializeToString())
        writer.write(b"this is not a protobuf")
    config = DatasetConfig(root=str(tmp_path), format="tfrecord", sources={"train": "*.tfrecord"})
    uris, _ = run_example_gen(tmp_path, config)
    assert [q["reason"] for q in quarantine_lines(uris["quarantine"])] == ["malformed_record"]
    assert summary(uris["quarantine"])["examples"] == {"train": 1}


# --- Splits and configuration -------------------------------------------------------------------


def test_hash_split_is_deterministic_and_follows_the_ratios():
    ratios = {"train": 4, "eval": 1}
    ids = [str(i) for i in range(5000)]
    first = [hash_split(i, ratios) for i in ids]
    assert first == [hash_split(i, ratios) for i in ids]
    assert 0.77 < first.count("train") / len(ids) < 0.83
    assert hash_split("42", ratios) == hash_split("42", dict(ratios))


def test_pooled_sources_are_resplit_by_hash(tmp_path):
    # Sizes differ so that every image has its own bytes.
    images = [
        {"file_name": f"{i}.jpg", "width": 32 + i, "height": 32, "anns": []} for i in range(40)
    ]
    sources = datasets.write_coco(str(tmp_path / "d"), {"all": images})
    config = DatasetConfig(
        root=str(tmp_path / "d"),
        format="coco",
        sources=sources,
        split_ratios={"train": 3, "eval": 1},
    )
    uris, outputs = run_example_gen(tmp_path, config)
    counts = summary(uris["quarantine"])["examples"]
    assert sum(counts.values()) == 40 and counts["eval"] > 0 and counts["train"] > counts["eval"]
    assert outputs["examples"][0].split_names == '["train", "eval"]'
    for split, count in counts.items():
        split_examples = datasets.read_examples(os.path.join(uris["examples"], f"Split-{split}"))
        assert len(split_examples) == count
        assert all(
            hash_split(feature_values(e, "image/source_id")[0].decode(), config.split_ratios)
            == split
            for e in split_examples
        )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"format": "yaml"}, "dataset.format: 'yaml' is not one of coco, voc, yolo, tfrecord"),
        ({"sources": {}}, "dataset.sources"),
        ({"split_ratios": {"train": 0}}, "dataset.split_ratios.train"),
        ({"sources": {"my split": "a.json"}}, "split name 'my split'"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_dataset_config_names_the_field(values, message):
    base = {"root": "/data", "format": "coco", "sources": {"train": "a.json"}}
    with pytest.raises(DatasetConfigError, match=message):
        DatasetConfig.from_dict({**base, **values})


def test_data_convert_writes_the_examples_the_pipeline_would(tmp_path, capsys):
    import yaml

    from litedet import cli

    root = tmp_path / "d"
    sources = datasets.write_coco(
        str(root),
        {"train": [GOOD], "eval": [GOOD_EVAL, dict(GOOD, file_name="missing.jpg", bytes=None)]},
    )
    os.remove(root / "images" / "missing.jpg")
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump({"dataset": {"root": str(root), "format": "coco", "sources": sources}})
    )
    out = tmp_path / "converted"
    assert (
        cli.main(
            [
                "data",
                "convert",
                "--config",
                str(config),
                "--out",
                str(out),
                "--set",
                "beam_pipeline_args=[]",
            ]
        )
        == 0
    )
    assert "quarantined {'missing_image': 1}" in capsys.readouterr().out
    train = datasets.read_examples(str(out / "examples" / "Split-train"))
    assert [feature_values(e, "image/object/class/label") for e in train] == [[2, 1]]
    assert summary(str(out / "quarantine"))["examples"] == {"train": 1, "eval": 1}
    assert (out / "label_map" / "label_map.pbtxt").exists()


# --- Annotations read on the workers ------------------------------------------------------------


def _coco_of(root: str, num_images: int) -> DatasetConfig:
    images = [
        {"file_name": f"{i:05d}.jpg", "width": 64, "height": 48, "anns": [(1, 2, 10, 20, 3, 0)]}
        for i in range(num_images)
    ]
    images = [dict(image, bytes=False) for image in images]  # the graph is built, never run
    sources = datasets.write_coco(root, {"train": images[1:], "eval": images[:1]})
    return DatasetConfig(root=root, format="coco", sources=sources)


def _voc_of(root: str, num_images: int) -> DatasetConfig:
    os.makedirs(os.path.join(root, "Annotations"))
    for i in range(num_images):
        with open(os.path.join(root, "Annotations", f"{i:05d}.xml"), "w") as f:
            f.write(datasets.voc_xml(f"{i:05d}.jpg", 64, 48, [("dog", 1, 1, 20, 20, 0)]))
    return DatasetConfig(root=root, format="voc", sources={"train": "Annotations"})


def _yolo_of(root: str, num_images: int) -> DatasetConfig:
    for folder in ("images", "labels"):
        os.makedirs(os.path.join(root, folder))
    for i in range(num_images):
        open(os.path.join(root, "images", f"{i:05d}.jpg"), "wb").close()
        with open(os.path.join(root, "labels", f"{i:05d}.txt"), "w") as f:
            f.write("0 0.5 0.5 0.2 0.2\n")
    return DatasetConfig(root=root, format="yolo", sources={"train": "images"}, class_names=["a"])


@pytest.mark.parametrize("dataset_of", [_coco_of, _voc_of, _yolo_of])
def test_the_job_graph_does_not_grow_with_the_dataset(tmp_path, dataset_of):
    """The driver hands Beam the sources' paths only: the ExampleGen's job graph up to the
    records, as a runner receives it, is the same size for 10 images as for 1000 (with the
    records handed over by beam.Create, it grew by 10 KB, compressed, for these tiny ones)."""
    import apache_beam as beam

    from litedet.components.example_gen import executor

    def graph_bytes(config):
        pipeline = beam.Pipeline()
        executor._records(pipeline, config, config.root)
        return len(pipeline.to_runner_api().SerializeToString())

    small = graph_bytes(dataset_of(str(tmp_path / "small"), 10))
    large = graph_bytes(dataset_of(str(tmp_path / "large"), 1000))  # paths of the same length
    assert abs(large - small) < 1024, (small, large)


def _coco_with_conflicting_category(root: str) -> DatasetConfig:
    sources = datasets.write_coco(root, {"train": [GOOD]})
    sources.update(datasets.write_coco(root, {"eval": [GOOD_EVAL]}, categories=((3, "box"),)))
    return DatasetConfig(root=root, format="coco", sources=sources)


def _coco_with_broken_second_file(root: str) -> DatasetConfig:
    sources = datasets.write_coco(root, {"train": [GOOD], "eval": [GOOD_EVAL]})
    with open(os.path.join(root, sources["eval"]), "w") as f:
        f.write('{"images": [], "annotations": [], "categories": [{"id": 1}]}')
    return DatasetConfig(root=root, format="coco", sources=sources)


def _voc_with_malformed_xml(root: str) -> DatasetConfig:
    images = [{"id": i, "width": 50, "height": 50, "objects": []} for i in ("a", "b")]
    sources = datasets.write_voc(root, images, {"train": ["a"], "val": ["b"]})
    with open(os.path.join(root, "Annotations", "b.xml"), "w") as f:
        f.write("<annotation><filename>b.jpg</filename><object>")
    return DatasetConfig(root=root, format="voc", sources=sources)


def _voc_without_its_image_set(root: str) -> DatasetConfig:
    images = [{"id": "a", "width": 50, "height": 50, "objects": []}]
    sources = datasets.write_voc(root, images, {"train": ["a"]})
    return DatasetConfig(root=root, format="voc", sources=dict(sources, val="ImageSets/x.txt"))


@pytest.mark.parametrize(
    "broken",
    [
        _coco_with_conflicting_category,
        _coco_with_broken_second_file,
        _voc_with_malformed_xml,
        _voc_without_its_image_set,
    ],
)
def test_an_annotation_file_a_worker_cannot_read_fails_the_step_with_the_readers_message(
    tmp_path, broken
):
    """Read on a worker, a broken annotation file still fails the step with the AnnotationError
    the readers raise on one machine (`litedet data inspect`), word for word: no traceback, no
    label map written."""
    config = broken(str(tmp_path / "d"))
    with pytest.raises(annotations.AnnotationError) as on_one_machine:
        annotations.READERS[config.format](config)
    with pytest.raises(annotations.AnnotationError) as on_the_workers:
        run_example_gen(tmp_path, config)
    assert str(on_the_workers.value) == str(on_one_machine.value)
    assert not os.path.exists(os.path.join(tmp_path / "out" / "label_map", "labels.txt"))


@pytest.mark.slow  # starts Beam's worker processes (~30 s)
def test_an_annotation_error_reaches_the_driver_from_worker_processes(tmp_path):
    """In Beam's worker processes (the local runner's mode for a large dataset, as on a cluster)
    an exception raised by a worker would reach the driver as a RuntimeError holding a traceback:
    the AnnotationError travels as data instead, and is raised whole."""
    config = _coco_with_broken_second_file(str(tmp_path / "d"))
    processes = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    with pytest.raises(annotations.AnnotationError) as error:
        run_example_gen(tmp_path, config, beam_args=processes)
    assert str(error.value) == (
        f"{config.root}/annotations/eval.json: categories[0] needs an integer 'id' and a string "
        "'name'"
    )


# --- what waits for the duplicate checks --------------------------------------------------------


def _noisy_jpeg(seed: int) -> bytes:
    """A 320x240 JPEG of noise: ~60 KB, so that carrying its bytes would show."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _checked_example(root, data: bytes):
    from litedet.components.example_gen import executor

    with open(os.path.join(root, "a.jpg"), "wb") as f:
        f.write(data)
    record = annotations.ImageRecord(
        source_id="1",
        split="train",
        image_path=os.path.join(root, "a.jpg"),  # as the readers build it
        width=320,
        height=240,
        objects=(annotations.ObjectAnnotation("7", (10.0, 20.0, 110.0, 120.0)),),
    )
    check = executor._CheckImage(str(root), 100, 1.0, 10**8, 10**8)
    (example,) = check.process(record, annotations.LabelMap(("7",), ("cat",)))
    return example


def test_what_waits_for_the_duplicate_checks_holds_no_image_bytes(tmp_path):
    """Every checked image waits in the runner until the duplicate checks are done: it must be
    the check's result and hash, not the image (20,000 COCO-sized images as bytes were one 3 GB
    gRPC message per worker, over protobuf's 2 GB limit). The bytes are read again to write."""
    import pickle

    import tensorflow as tf

    from litedet.components.example_gen import executor

    data = _noisy_jpeg(0)
    example = _checked_example(tmp_path, data)
    assert example.data is None and example.checked.record.image_bytes == b""
    assert len(data) > 30_000 and len(pickle.dumps(example)) < 2_000
    split, texts, serialized = next(executor._Serialize(str(tmp_path), 10**8).process(example))
    assert (split, texts) == ("train", ("cat",))
    parsed = tf.train.Example.FromString(serialized)
    assert feature_values(parsed, "image/encoded") == [data]
    assert feature_values(parsed, "image/object/class/text") == [b"cat"]


def test_an_image_changed_between_its_check_and_its_writing_is_quarantined(tmp_path):
    import apache_beam as beam

    from litedet.components.example_gen import executor

    example = _checked_example(tmp_path, _noisy_jpeg(0))
    with open(tmp_path / "a.jpg", "wb") as f:
        f.write(_noisy_jpeg(1))  # a valid image, other bytes
    (changed,) = executor._Serialize(str(tmp_path), 10**8).process(example)
    assert isinstance(changed, beam.pvalue.TaggedOutput)
    assert changed.value.reason == "image_changed"
    assert "read back with other bytes" in changed.value.detail
    os.remove(tmp_path / "a.jpg")
    (gone,) = executor._Serialize(str(tmp_path), 10**8).process(example)
    assert "empty or unreadable" in gone.value.detail
