"""The dataset layouts users bring (tests/layouts.py builds each as its tool writes it), through
the `litedet` command as a subprocess: `data inspect` finds every image of every split, `data
convert` writes every image with its boxes on the right pixels and its class, and `litedet run`
reads the README's own example (COCO 2017) and a YOLO dataset end to end. A dataset whose split
points at the wrong image folder stops in one line, exit 2, with the quarantine list kept."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests import layouts
from tests.datasets import feature_values, read_examples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITEDET = os.path.join(os.path.dirname(sys.executable), "litedet")
SPLITS = {"train": "train", "eval": "val"}  # the pipeline's split -> the layouts' own


def readme_example(title_start: str) -> dict:
    """The YAML block under the README paragraph that starts with `title_start`."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    after = text[text.index(title_start) :]
    block = re.search(r"```yaml\n(.*?)```", after, re.S).group(1)
    return yaml.safe_load(block)


def _config(tmp_path, name: str, dataset: dict, **sections) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"dataset": dataset, **sections}))
    return str(path)


def layout_configs(tmp_path):
    """(name, config file, expected) for each layout, each config from the README."""
    cases = []
    for name, title, write, root in (
        ("coco2017", "COCO 2017 (", layouts.coco2017, "coco"),
        ("roboflow", "A Roboflow COCO export", layouts.roboflow_coco, "roboflow-export"),
        ("voc", "Pascal VOC (", layouts.voc_devkit, "VOCdevkit"),
        ("yolo", "Ultralytics YOLO (", layouts.ultralytics_yolo, "pets"),
    ):
        folder = tmp_path / root
        expected = write(str(folder))
        dataset = readme_example(title)["dataset"]
        dataset["root"] = str(folder / "VOC2012") if name == "voc" else str(folder)
        if name == "voc":  # the README lists VOC's 20 classes; these images hold three
            dataset["class_names"] = list(layouts.CLASSES)
        cases.append((name, _config(tmp_path, name, dataset), expected))
    return cases


def _litedet(*args, cwd=None, timeout=600):
    return subprocess.run(
        [LITEDET, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_inspect_finds_every_image_of_every_split_in_each_layout(tmp_path):
    for name, config, expected in layout_configs(tmp_path):
        result = _litedet("data", "inspect", "--config", config)
        assert result.returncode == 0, (name, result.stderr)
        for split, theirs in SPLITS.items():
            count = len(expected[theirs])
            assert f"  {split}: {count} images, {count} found, 0 missing" in result.stdout, (
                name,
                result.stdout,
            )
        classes = re.search(r"classes \(3\): (.*)", result.stdout)
        assert classes and sorted(classes.group(1).split(", ")) == sorted(layouts.CLASSES), (
            name,
            result.stdout,
        )


@pytest.mark.slow
def test_convert_writes_every_image_with_its_boxes_in_each_layout(tmp_path):
    for name, config, expected in layout_configs(tmp_path):
        out = tmp_path / f"out-{name}"
        result = _litedet("data", "convert", "--config", config, "--out", str(out))
        assert result.returncode == 0, (name, result.stderr[-2000:])
        summary = json.loads((out / "quarantine" / "summary.json").read_text())
        assert sum(summary["quarantined"].values()) == 0, (name, summary)
        labels = [
            c["name"]
            for c in json.loads((out / "label_map" / "label_map.json").read_text())["classes"]
        ]
        assert sorted(labels) == sorted(layouts.CLASSES), (name, labels)
        for split, theirs in SPLITS.items():
            examples = read_examples(str(out / "examples" / f"Split-{split}"))
            by_file = {feature_values(e, "image/filename")[0].decode(): e for e in examples}
            assert sorted(by_file) == sorted(f for f, _ in expected[theirs]), (name, split)
            for filename, objects in expected[theirs]:
                example = by_file[filename]
                width = feature_values(example, "image/width")[0]
                height = feature_values(example, "image/height")[0]
                got = sorted(
                    zip(
                        [t.decode() for t in feature_values(example, "image/object/class/text")],
                        feature_values(example, "image/object/bbox/xmin"),
                        feature_values(example, "image/object/bbox/ymin"),
                    )
                )
                want = sorted((c, x / width, y / height) for c, x, y, _, _ in objects)
                assert len(got) == len(want), (name, filename, got, want)
                for (c1, x1, y1), (c2, x2, y2) in zip(got, want):
                    assert c1 == c2 and abs(x1 - x2) < 1e-3 and abs(y1 - y2) < 1e-3, (
                        name,
                        filename,
                        got,
                        want,
                    )


TINY_RUN = [
    "--set", "training.train_steps=2",
    "--set", "training.checkpoint_every_steps=2",
    "--set", "training.batch_size=2",
    "--set", "training.backbone_weights=none",
    "--set", "transform.image_size=64",
    "--set", "tflite.formats=[\"float32\"]",
    "--set", "tflite.ship_format=float32",
    "--set", "evaluation.min_map50=0",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["coco2017", "yolo"])
def test_a_tiny_run_reads_every_image_of_the_layout(tmp_path, layout):
    name, config, expected = next(c for c in layout_configs(tmp_path) if c[0] == layout)
    out = tmp_path / "outputs"
    result = _litedet(
        "run", "--config", config, "--set", f"output_dir={out}", *TINY_RUN, cwd=str(tmp_path)
    )
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    counts = ", ".join(f"{s} {len(expected[t])}" for s, t in sorted(SPLITS.items()))
    assert f"images kept:       {counts}" in result.stdout, result.stdout
    [run_dir] = (out / "runs").iterdir()
    assert (run_dir / "quarantine.jsonl").read_text() == ""
    # Not a terminal: the Trainer's progress comes as plain lines, native logs go to run.log.
    assert "step 2/2" in result.stdout, result.stdout
    assert "W0000" not in result.stderr and "fully_quantize" not in result.stderr


@pytest.mark.slow
def test_a_split_whose_images_are_elsewhere_stops_in_one_line_before_the_run(tmp_path):
    name, config, expected = layout_configs(tmp_path)[0]  # COCO 2017
    settings = yaml.safe_load(open(config))
    settings["dataset"].pop("images_dirs")  # the old single images_dir: val2017 is not there
    settings["dataset"]["images_dir"] = "train2017"
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(settings))
    out = tmp_path / "outputs"
    result = _litedet(
        "run", "--config", str(path), "--set", f"output_dir={out}", *TINY_RUN, cwd=str(tmp_path)
    )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "split 'eval': none of its 2 images is there under" in line
    assert "dataset.images_dirs.eval" in line and "Traceback" not in result.stdout
    [run_dir] = (out / "runs").iterdir()
    kept = [json.loads(x) for x in (run_dir / "quarantine.jsonl").read_text().splitlines()]
    assert str(run_dir / "quarantine.jsonl") in line
    assert [(e["split"], e["reason"]) for e in kept] == [("eval", "missing_image")] * 2


@pytest.mark.slow
def test_a_split_left_empty_by_quarantine_fails_in_one_line_and_keeps_the_list(tmp_path):
    """Images that exist but are all unusable: the ExampleGen step fails; one line, exit 2, and
    the quarantine list in the run folder (TFX removes the failed step's own outputs)."""
    name, config, expected = layout_configs(tmp_path)[0]
    for image in (tmp_path / "coco" / "val2017").iterdir():
        image.write_bytes(b"not an image")
    out = tmp_path / "outputs"
    result = _litedet(
        "run", "--config", config, "--set", f"output_dir={out}", *TINY_RUN, cwd=str(tmp_path)
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("litedet: error: DetectionExampleGen failed: split(s) eval have no")
    [run_dir] = (out / "runs").iterdir()
    kept = [json.loads(x) for x in (run_dir / "quarantine.jsonl").read_text().splitlines()]
    assert len(kept) == len(expected["val"]) and str(run_dir / "quarantine.jsonl") in line
    assert {entry["split"] for entry in kept} == {"eval"}
    assert "Traceback" in (run_dir / "run.log").read_text()
