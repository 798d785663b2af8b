"""`litedet val`, `litedet export`, `litedet predict`'s folders and the run folder's files, on a
small real exported detector (tests/small_model.py: built once for the module, about a minute)
and a small generated COCO dataset. The commands run as a user runs them: subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from tests import small_model

pytestmark = pytest.mark.slow

TIMEOUT_S = 600
# ONNX Runtime against TensorFlow on the same model input: float32 kernels that sum in another
# order. Boxes are normalized to the image, scores are probabilities.
BOX_ATOL = 1e-4
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return small_model.build(str(tmp_path_factory.mktemp("small_model")))


def litedet(*args, cwd):
    """`litedet ARGS` in a subprocess, in a user's environment (without the log level the
    test process sets for itself): (exit code, stdout, stderr)."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "litedet.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return done.returncode, done.stdout, done.stderr


def run_folder(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.startswith("Results in ")]
    return line[len("Results in ") :].split("/:", 1)[0]


def eval_annotations(small) -> dict:
    with open(os.path.join(small.data, "annotations", "instances_eval.json")) as handle:
        return json.load(handle)


def eval_examples(small):
    from litedet.components.evaluation import device

    return device.read_examples(os.path.join(small.examples, "Split-eval"))


@pytest.fixture(scope="module")
def val_saved_model(small, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("val")
    code, out, err = litedet(
        "val", small.saved_model, "--config", small.config, "--output-dir", str(cwd), cwd=cwd
    )
    assert code == 0, out + err
    folder = run_folder(out)
    with open(os.path.join(folder, "val.json")) as handle:
        return {"stdout": out, "folder": folder, "report": json.load(handle)}


def test_val_prints_the_per_class_table_and_writes_its_files(small, val_saved_model):
    out, folder = val_saved_model["stdout"], val_saved_model["folder"]
    header = next(line for line in out.splitlines() if line.split()[:1] == ["class"])
    assert header.split() == ["class", "images", "instances", "P", "R", "AP50", "AP"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert set(small.labels) | {"all"} <= set(rows)
    assert sorted(os.listdir(folder)) == sorted(
        [
            "config.yaml",
            "run.log",
            "val.json",
            "predictions_coco.json",
            "metrics.json",
            "pr_curve.png",
            "confusion_matrix.png",
        ]
    )
    # Images and instances per class, counted here from the dataset's own annotation file
    # (crowd objects are not scored, as in the gate).
    coco = eval_annotations(small)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    scored = [a for a in coco["annotations"] if not a["iscrowd"]]
    instances = Counter(names[a["category_id"]] for a in scored)
    images = Counter(
        name
        for image in coco["images"]
        for name in {names[a["category_id"]] for a in scored if a["image_id"] == image["id"]}
    )
    table = {row["class"]: row for row in val_saved_model["report"]["table"]}
    for name in small.labels:
        assert (table[name]["instances"], table[name]["images"]) == (
            instances[name],
            images[name],
        )
        assert rows[name][1:3] == [str(images[name]), str(instances[name])]
    assert table["all"]["images"] == len(coco["images"])
    assert table["all"]["instances"] == sum(instances.values())


def test_val_scores_a_savedmodel_exactly_as_the_gate_does(small, val_saved_model):
    """The gate's own scoring of the SavedModel (device.score_formats, then the figures
    gate.json holds) on the split the pipeline's ExampleGen writes: val reports the same."""
    from litedet.components.evaluation import device
    from litedet.components.evaluation import executor as gate

    scores = device.score_formats(small.saved_model, {}, eval_examples(small), 5, "stretch")
    expected = gate.figures(scores["saved_model"], small.labels)
    report = val_saved_model["report"]
    assert report["num_images"] == small_model.NUM_EVAL
    assert report["map50"] == scores["saved_model"]["map50"]
    # The same computation on the same images: equal, not close (JSON keeps floats exactly).
    for key in ("map", "ap_by_size", "ap50_per_class", "map_per_class", "confusion", "pr_curves"):
        assert report[key] == expected[key], key
    # P and R come from that confusion matrix: the diagonal over its column and its row.
    matrix = np.asarray(report["confusion"]["matrix"])
    assert matrix.sum() > 0  # the model does detect
    for k, row in enumerate(report["table"][1:]):
        if matrix[:, k].sum():
            assert row["p"] == pytest.approx(matrix[k, k] / matrix[:, k].sum())
        if matrix[k].sum():
            assert row["r"] == pytest.approx(matrix[k, k] / matrix[k].sum())


def test_val_coco_results_are_the_models_detections_in_the_datasets_ids(small, val_saved_model):
    """predictions_coco.json against the dataset's annotation file and the SavedModel's
    serving_default run here on each image file."""
    import tensorflow as tf

    from litedet.components.detection import export

    coco = eval_annotations(small)
    with open(os.path.join(val_saved_model["folder"], "predictions_coco.json")) as handle:
        results = json.load(handle)
    assert results
    names = {c["name"]: c["id"] for c in coco["categories"]}
    serve = tf.saved_model.load(small.saved_model).signatures[export.SERVING_SIGNATURE]
    for image in coco["images"]:
        with open(os.path.join(small.data, "images", image["file_name"]), "rb") as handle:
            found = serve(image_bytes=tf.constant([handle.read()]))
        count = int(found["num_detections"][0])
        expected = []
        for box, label, score in zip(
            found["detection_boxes"][0, :count].numpy(),
            found["detection_classes"][0, :count].numpy(),
            found["detection_scores"][0, :count].numpy(),
        ):
            ymin, xmin, ymax, xmax = box
            w, h = image["width"], image["height"]
            expected.append(
                (
                    names[small.labels[int(label) - 1]],
                    [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h],
                    float(score),
                )
            )
        mine = [r for r in results if r["image_id"] == image["id"]]
        assert len(mine) == len(expected), image["file_name"]
        for r, (category, bbox, score) in zip(
            sorted(mine, key=lambda r: -r["score"]), sorted(expected, key=lambda e: -e[2])
        ):
            assert r["category_id"] == category
            np.testing.assert_allclose(r["bbox"], bbox, atol=0.02)
            assert r["score"] == pytest.approx(score, abs=1e-4)


def test_val_of_a_pushed_version_scores_its_shipped_tflite_file(small, val_saved_model, tmp_path):
    code, out, err = litedet(
        "val",
        small.version_uri,
        "--config",
        small.config,
        "--output-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert code == 0, out + err
    with open(os.path.join(run_folder(out), "val.json")) as handle:
        report = json.load(handle)
    assert report["model_kind"] == "tflite"
    assert report["model"].endswith("model_float32.tflite")
    # float32 TFLite and its SavedModel on the same images: within the gate's TFLite budget.
    saved = val_saved_model["report"]
    assert abs(report["map50"] - saved["map50"]) <= 0.015
    assert [r["instances"] for r in report["table"]] == [r["instances"] for r in saved["table"]]


def test_val_refuses_a_split_the_dataset_lacks_and_a_model_of_other_classes(small, tmp_path):
    import shutil

    code, out, err = litedet(
        "val", small.saved_model, "--config", small.config, "--split", "test", cwd=tmp_path
    )
    assert code == 2, out + err
    assert err.strip().splitlines() == [
        "litedet: error: --split test: the dataset has no such split (splits: train, eval)"
    ]
    other = tmp_path / "other_model"
    shutil.copytree(os.path.dirname(small.saved_model), other)
    (other / "labels.txt").write_text("".join(n + "\n" for n in reversed(small.labels)))
    code, out, err = litedet(
        "val", str(other / "Format-Serving"), "--config", small.config, cwd=tmp_path
    )
    assert code == 2, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith("litedet: error: the model's classes (cross, star") and "dataset" in line


def test_export_onnx_runs_in_onnx_runtime_as_the_savedmodel_detects(small, tmp_path):
    """The exported ONNX model in ONNX Runtime on the evaluation images, against the
    SavedModel's serving_default on the same JPEG files: the same detections, boxes and scores
    within BOX_ATOL and SCORE_ATOL."""
    import tensorflow as tf

    from litedet import export
    from litedet.components.detection import export as model_export
    from litedet.components.detection import preprocessing

    out = tmp_path / "exports"
    code, stdout, err = litedet(
        "export", small.version_uri, "--format", "onnx", "--out", str(out), cwd=tmp_path
    )
    assert code == 0, stdout + err
    with open(out / "export.json") as handle:
        info = json.load(handle)
    assert info["labels"] == small.labels and info["input"]["shape"][1:] == [128, 128, 3]
    assert (out / "labels.txt").read_text().split() == small.labels

    detector = export.OnnxDetector(str(out / "model.onnx"), info["resize_mode"])
    serve = tf.saved_model.load(small.saved_model).signatures[model_export.SERVING_SIGNATURE]
    folder = os.path.join(small.data, "images")
    total = 0
    for name in sorted(n for n in os.listdir(folder) if n.startswith("eval_")):
        with open(os.path.join(folder, name), "rb") as handle:
            encoded = handle.read()
        rgb = preprocessing.decode_rgb(tf.constant(encoded)).numpy()
        mine = detector.detect(rgb)
        theirs = serve(image_bytes=tf.constant([encoded]))
        count = int(theirs["num_detections"][0])
        assert mine["count"] == count, name
        total += count
        unused = set(range(count))
        for box, label, score in zip(
            theirs["detection_boxes"][0, :count].numpy(),
            theirs["detection_classes"][0, :count].numpy(),
            theirs["detection_scores"][0, :count].numpy(),
        ):
            candidates = [i for i in unused if mine["classes"][i] == label]
            assert candidates, (name, label)
            best = min(candidates, key=lambda i: np.abs(mine["boxes"][i] - box).max())
            np.testing.assert_allclose(mine["boxes"][best], box, atol=BOX_ATOL)
            assert mine["scores"][best] == pytest.approx(score, abs=SCORE_ATOL)
            unused.remove(best)
    assert total >= small_model.NUM_EVAL  # detections to compare, not empty lists


def test_export_copies_a_stored_format_checked_against_the_manifest(small, tmp_path):
    from litedet.components.pusher import store

    code, out, err = litedet(
        "export", small.version_uri, "--format", "float32", "--out", str(tmp_path), cwd=tmp_path
    )
    assert code == 0, out + err
    manifest = store.read_manifest(small.version_uri)
    with open(tmp_path / "export.json") as handle:
        info = json.load(handle)
    assert info["sha256"] == manifest["files"]["model_float32.tflite"]["sha256"]
    assert (tmp_path / "model_float32.tflite").exists()
    code, out, err = litedet("export", small.version_uri, "--format", "float16", cwd=tmp_path)
    assert code == 2 and err.strip().startswith("litedet: error: ") and "float16" in err
    assert len(err.strip().splitlines()) == 1


def test_predict_writes_a_new_folder_per_call(small, tmp_path):
    image = os.path.join(small.data, "images", "eval_000000.jpg")
    firsts = []
    # The version, then the store (its latest version: the same one).
    for n, model in ((1, small.version_uri), (2, small.store)):
        code, out, err = litedet("predict", model, image, "--out", "predictions", cwd=tmp_path)
        assert code == 0, out + err
        result = tmp_path / "predictions" / str(n) / "predictions.json"
        assert f"{result}" in out or f"predictions/{n}/predictions.json" in out, out
        firsts.append(result.read_bytes())
        assert (tmp_path / "predictions" / str(n) / "eval_000000.jpg").exists()
    # The second call left the first one's results as they were; the same model found the same.
    assert (tmp_path / "predictions" / "1" / "predictions.json").read_bytes() == firsts[0]
    first, second = (json.loads(content)["images"][0]["detections"] for content in firsts)
    assert first == second
    assert sorted(os.listdir(tmp_path / "predictions")) == ["1", "2"]


def test_the_run_folder_gets_the_gates_figures_and_pictures(small, tmp_path):
    """run_folder.write_results over real ModelGate outputs (the gate's own report and writer,
    on the small model's SavedModel and float32 TFLite) and TensorBoard logs as Keras writes
    them."""
    import tensorflow as tf
    from PIL import Image
    from tfx.types import standard_artifacts

    from litedet import run_folder
    from litedet.components import artifacts
    from litedet.components.evaluation import baseline, device
    from litedet.components.evaluation import executor as gate
    from litedet.run_summary import ComponentRun, RunSummary

    scores = device.score_formats(
        small.saved_model,
        {"float32": small.tflite},
        eval_examples(small),
        5,
        "stretch",
        latency_runs=2,
    )
    budgets = gate.GateBudgets(min_map50=0.0, max_tflite_map_drop=1.0, ship_format="float32")
    conversion = {"labels": small.labels}
    report = gate._report(
        True, [], 0.1, scores, conversion, baseline.Baseline(0), None, budgets, 8, "store"
    )
    # gate.json's fields, in their order, as before the gate's scoring was shared with `val`.
    assert list(report) == [
        "blessed",
        "reasons",
        "map50",
        "map",
        "map75",
        "ap_by_size",
        "baseline_map50",
        "baseline",
        "model_store",
        "ap50_per_class",
        "map_per_class",
        "confusion",
        "num_eval_images",
        "ship_format",
        "formats",
        "pr_curves",
        "budgets",
    ]
    assert set(report["formats"]["saved_model"]).isdisjoint({"pr50", "confusion"})
    blessing, metrics, model = (
        standard_artifacts.ModelBlessing(),
        artifacts.KfpMetrics(),
        standard_artifacts.Model(),
    )
    for artifact, name in ((blessing, "blessing"), (metrics, "metrics"), (model, "model")):
        artifact.uri = str(tmp_path / name)
        os.makedirs(artifact.uri)
    gate._write_outputs(blessing, metrics, report, model)
    model_run = tmp_path / "model_run"
    writer = tf.summary.create_file_writer(str(model_run / "train"))
    with writer.as_default():
        for step, loss in enumerate([3.0, 2.0, 1.5]):
            tf.summary.scalar("epoch_loss", loss, step=step)
    writer.flush()
    (model_run / "training.json").write_text(
        json.dumps({"settings": {"checkpoint_every_steps": 10, "train_steps": 30}})
    )
    summary = RunSummary(
        "run",
        {
            "ModelGate": ComponentRun(
                "ran", {"blessing": [blessing.uri], "metrics": [metrics.uri]}
            ),
            "Trainer": ComponentRun("ran", {"model_run": [str(model_run)]}),
        },
    )
    folder = tmp_path / "run"
    folder.mkdir()
    written = run_folder.write_results(summary, str(folder))
    assert sorted(os.path.basename(p) for p in written) == [
        "confusion_matrix.png",
        "losses.png",
        "metrics.json",
        "pr_curve.png",
    ]
    with open(folder / "metrics.json") as handle:
        figures = json.load(handle)
    assert figures == gate.key_figures(report) and "float32_map50" in figures
    for name in ("confusion_matrix.png", "losses.png", "pr_curve.png"):
        with Image.open(folder / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 200
    # A run without a gate leaves nothing to write.
    assert run_folder.write_results(RunSummary("run", {}), str(folder)) == []
