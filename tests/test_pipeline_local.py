"""The local pipeline end to end on a tiny sample dataset: real LocalDagRunner, SQLite ML
Metadata, Beam DirectRunner in multi-process mode, real training, as `litedet demo` runs it.

One training serves most tests here (the suite's budget allows one, plus a deliberately short
one): 32 sample images, trained until the detector has memorized them. That is the learning
test: scored by pycocotools, an implementation independent of ours, on the exported model's
serving signature. The evaluation split is those same 32 images, so that the Evaluator and the
ModelGate see a model with a known, high score; a third run with a 40-step model must then be
refused (a regression against the blessed one) and push nothing, to the store or the registry.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from litedet import paths as litedet_paths
from litedet import run_summary
from litedet.components import features as f
from litedet.components.detection import input_pipeline
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.example_gen.fingerprint import dataset_fingerprint
from litedet.pipeline import configs, local_runner
from tests import coco_check, datasets

pytestmark = pytest.mark.slow

NUM_TRAIN, NUM_EVAL = 32, 8
COMPONENTS = {
    "DetectionExampleGen",
    "StatisticsGen",
    "SchemaImporter",
    "ExampleValidator",
    "Transform",
    "RunParameters",
    "Trainer",
    "TFLiteConverter",
    "Evaluator",
    "ModelGate",
    "LitedetPusher",
    "RunReport",
}
# The gate's cache key holds the model store's state: the first run pushed version 1, so the
# second run's gate runs again (and compares the model with its own pushed copy), and so do the
# steps after it.
RERUN_AFTER_A_PUSH = {"ModelGate", "LitedetPusher", "RunReport"}
MODEL_NAME = "litedet-pipeline-test"
# The client virtualenvs (tests/client_venvs.py) live in the user's cache folder, read here before
# the pipeline fixture points LITEDET_CACHE at its own: they are built once, not once a run.
CLIENT_CACHE = str(litedet_paths.cache_dir())


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory, mlflow_server):
    """Runs the pipeline twice on unchanged inputs, then once with a worse model; returns the
    config, the three summaries, the sample dataset's folder and the registry server."""
    base = tmp_path_factory.mktemp("pipeline")
    environment = pytest.MonkeyPatch()
    environment.setenv("LITEDET_CACHE", str(base / "cache"))
    try:
        yield _run_three_times(base, mlflow_server)
    finally:
        environment.undo()


def _run_three_times(base, mlflow_server):
    settings = [
        f"output_dir={base / 'outputs'}",
        f"sample_data.num_train={NUM_TRAIN}",
        f"sample_data.num_eval={NUM_EVAL}",
        "training.batch_size=8",
        "training.train_steps=800",
        "training.checkpoint_every_steps=200",
        "training.augment=false",  # memorizing is the point here
        'tflite.formats=["float32","int8"]',
        "tflite.num_calibration_images=16",
        "tflite.ship_format=int8",
        "evaluation.min_map50=0.8",
        # 16 calibration images of 32: int8 may lose a few points on this tiny set.
        "evaluation.max_tflite_map_drop=0.1",
        f"push.model_name={MODEL_NAME}",
        'push.registry={"kind": "mlflow", "tracking_uri": "%s", "retries": 2}'
        % mlflow_server["url"],
        'beam_pipeline_args=["--direct_running_mode=multi_processing","--direct_num_workers=2",'
        '"--sdk_container_image=litedet:local"]',
    ]
    config = configs.load_config(None, settings)
    metadata = os.path.abspath(config.metadata_path)
    sample = local_runner.resolve_dataset(config)
    # The evaluation split is the training images (see the module docstring).
    dataset = dataclasses.replace(
        sample,
        sources={"train": sample.sources["train"], "eval": sample.sources["train"]},
        overlap_policy="allow",
    )
    local_runner.execute(local_runner.build(config, dataset))
    first = run_summary.latest_run(metadata)
    local_runner.execute(local_runner.build(config, dataset))
    second = run_summary.latest_run(metadata)
    # No absolute bound: only the comparison with the pushed model can refuse this one. Run as
    # a user runs it, the command itself, whose exit code says "not blessed".
    command = [os.path.join(os.path.dirname(sys.executable), "litedet"), "run"]
    for item in settings + [
        "training.train_steps=40",
        "evaluation.min_map50=0",
        "training.backbone_weights=none",
        "dataset="
        + json.dumps(
            {
                "root": str(sample.root),
                "format": "coco",
                "sources": dataset.sources,
                "overlap_policy": "allow",
            }
        ),
    ]:
        command += ["--set", item]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    third = run_summary.latest_run(metadata)
    return {
        "config": config,
        "first": first,
        "second": second,
        "third": third,
        "third_exit_code": finished.returncode,
        "third_output": finished.stdout + finished.stderr,
        "root": sample.root,
        "registry": mlflow_server,
    }


def test_every_step_runs_and_the_data_passes_validation(pipeline_runs):
    first = pipeline_runs["first"]
    assert {name: c.state for name, c in first.components.items()} == {
        name: "ran" for name in COMPONENTS
    }
    assert first.quarantine_summary()["examples"] == {"train": NUM_TRAIN, "eval": NUM_TRAIN}
    assert first.anomalies() == {"train": [], "eval": []}


def test_a_second_run_on_unchanged_inputs_is_served_from_the_cache(pipeline_runs):
    first, second = pipeline_runs["first"], pipeline_runs["second"]
    assert second.run_id != first.run_id
    assert {name: c.state for name, c in second.components.items()} == {
        name: "ran" if name in RERUN_AFTER_A_PUSH else "cached" for name in COMPONENTS
    }
    assert second.components["Trainer"].outputs == first.components["Trainer"].outputs
    gate = second.gate_report()
    assert gate["blessed"], gate["reasons"]
    assert gate["baseline"]["version"] == 1
    # The baseline is the pushed copy of the same model: the same score on the same images.
    assert gate["baseline_map50"] == pytest.approx(gate["formats"]["saved_model"]["map50"])
    push = second.push_record()
    assert push["pushed"] == 0 and push["pushed_version"] == 1, push
    assert "already version 1" in push["push_reason"]


def _raw_examples(summary, split):
    return datasets.read_examples(
        os.path.join(summary.components["DetectionExampleGen"].uri("examples"), f"Split-{split}")
    )


def test_the_trainer_reads_model_inputs_and_padded_targets_through_the_transform_graph(
    pipeline_runs,
):
    import tensorflow_transform as tft

    first = pipeline_runs["first"]
    output = tft.TFTransformOutput(first.components["Transform"].uri("transform_graph"))
    raw = _raw_examples(first, "eval")
    records = tf.data.Dataset.from_tensor_slices([e.SerializeToString() for e in raw])
    transformed = list(
        input_pipeline.transformed_examples(records, output, materialized=False, deterministic=True)
    )
    assert len(transformed) == NUM_TRAIN  # the eval split is the training images
    for source, example in zip(raw, transformed):
        assert example[f.IMAGE].shape == (256, 256, 3)
        assert example[f.BOXES].shape == (100, 4)
        labels = datasets.feature_values(source, "image/object/class/label")
        assert int(example[f.NUM_BOXES]) == len(labels)
        assert example[f.CLASSES].numpy()[: len(labels)].tolist() == labels
        np.testing.assert_allclose(
            example[f.BOXES].numpy()[: len(labels), 1],
            datasets.feature_values(source, "image/object/bbox/xmin"),
            atol=1e-6,
        )
        assert not example[f.BOXES].numpy()[len(labels) :].any()


def test_the_transform_graph_serves_raw_encoded_images(pipeline_runs):
    import tensorflow_transform as tft

    first = pipeline_runs["first"]
    output = tft.TFTransformOutput(first.components["Transform"].uri("transform_graph"))
    encoded = datasets.feature_values(_raw_examples(first, "eval")[0], "image/encoded")[0]
    served = output.transform_features_layer()({f.IMAGE_ENCODED: tf.constant([encoded])})
    assert set(served) == {f.IMAGE, f.CONTENT_WINDOW}
    assert served[f.IMAGE].shape == (1, 256, 256, 3)


def _label_to_category(summary):
    with open(
        os.path.join(summary.components["DetectionExampleGen"].uri("label_map"), "label_map.json")
    ) as handle:
        return {c["id"]: int(c["source_key"]) for c in json.load(handle)["classes"]}


def test_the_detector_memorizes_its_training_images(pipeline_runs):
    """Learning test: mAP@0.5 >= 0.9 on the 32 training images, scored by pycocotools."""
    first, root = pipeline_runs["first"], pipeline_runs["root"]
    model = os.path.join(first.components["Trainer"].uri("model"), "Format-Serving")
    annotations = os.path.join(root, "annotations", "instances_train.json")
    detections = coco_check.coco_detections(
        model, annotations, os.path.join(root, "images"), _label_to_category(first)
    )
    scores = coco_check.coco_map(annotations, detections)
    print("pycocotools on the training images:", scores)
    assert scores["map50"] >= 0.9, scores


def test_serving_default_finds_the_objects_in_a_raw_jpeg(pipeline_runs):
    first, root = pipeline_runs["first"], pipeline_runs["root"]
    with open(os.path.join(root, "annotations", "instances_train.json")) as handle:
        coco = json.load(handle)
    image = max(
        coco["images"],
        key=lambda i: sum(
            1 for a in coco["annotations"] if a["image_id"] == i["id"] and not a["iscrowd"]
        ),
    )
    truth = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
    serve = tf.saved_model.load(
        os.path.join(first.components["Trainer"].uri("model"), "Format-Serving")
    ).signatures["serving_default"]
    with open(os.path.join(root, "images", image["file_name"]), "rb") as handle:
        out = serve(image_bytes=tf.constant([handle.read()]))
    to_category = _label_to_category(first)
    # Focal-loss detectors score modestly (small objects ~0.2-0.5 here): 0.15 keeps the
    # clutter out while every real object should clear it.
    kept = out["detection_scores"][0].numpy() >= 0.15
    found = [
        (to_category[int(c)], box)
        for c, box in zip(
            out["detection_classes"][0].numpy()[kept], out["detection_boxes"][0].numpy()[kept]
        )
    ]
    w, h = image["width"], image["height"]
    matched = 0
    for a in truth:
        x, y, bw, bh = a["bbox"]
        gt = np.array([y / h, x / w, (y + bh) / h, (x + bw) / w])
        ious = [_iou(gt, box) for category, box in found if category == a["category_id"]]
        matched += bool(ious) and max(ious) >= 0.5
    assert matched >= 0.8 * len(truth), (matched, len(truth), found)


def test_the_pushed_int8_tflite_model_finds_the_objects_and_carries_its_labels(pipeline_runs):
    from PIL import Image

    from litedet.components.tflite import converter
    from litedet.components.tflite.interpreter import TFLiteDetector

    first, root = pipeline_runs["first"], pipeline_runs["root"]
    # The copy that was pushed: what a device downloads.
    path = os.path.join(first.push_record()["pushed_destination"], "model_int8.tflite")
    with open(
        os.path.join(first.components["DetectionExampleGen"].uri("label_map"), "labels.txt")
    ) as handle:
        assert converter.read_metadata(path)["labels"] == handle.read().splitlines()
    with open(os.path.join(root, "annotations", "instances_train.json")) as handle:
        coco = json.load(handle)
    detector = TFLiteDetector(path)
    to_category = _label_to_category(first)
    matched = total = 0
    for image in coco["images"][:8]:
        truth = [
            a for a in coco["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]
        ]
        pixels = np.asarray(
            Image.open(os.path.join(root, "images", image["file_name"])).convert("RGB")
        )
        out = detector.detect(pixels)
        kept = out["scores"] >= 0.15
        found = [(to_category[int(c)], b) for c, b in zip(out["classes"][kept], out["boxes"][kept])]
        w, h = image["width"], image["height"]
        for a in truth:
            x, y, bw, bh = a["bbox"]
            gt = np.array([y / h, x / w, (y + bh) / h, (x + bw) / w])
            matched += any(c == a["category_id"] and _iou(gt, b) >= 0.5 for c, b in found)
            total += 1
    assert total and matched >= 0.8 * total, (matched, total)


def test_on_device_clients_score_what_the_interpreter_scores(pipeline_runs, tmp_path):
    """Client parity: every pushed TFLite format runs in each on-device client (MediaPipe Tasks,
    the current release and the oldest one docs/clients.md claims; the TFLite Task Library), each
    in its own virtualenv, over the whole evaluation split without a crash, and scores
    (pycocotools, the same ground truth) within the gate's TFLite budget (mAP@0.5) of what the
    gate measured with tf.lite.Interpreter. A client that cannot be installed fails the test."""
    from tests import client_parity

    first = pipeline_runs["first"]
    parity = client_parity.measure(
        first.push_record()["pushed_destination"],  # what a device downloads
        os.path.join(first.components["DetectionExampleGen"].uri("examples"), "Split-eval"),
        budget=configs.EvaluationConfig().max_tflite_map_drop,
        cache=CLIENT_CACHE,
        scratch=str(tmp_path),
    )
    print("\n" + parity.table())
    assert not parity.failures, "\n".join(parity.failures)
    formats = {row.fmt for row in parity.rows}
    assert formats == set(pipeline_runs["config"].tflite.formats)
    assert len(parity.rows) == len(formats) * 4  # the interpreter and three clients


def test_tfma_map_agrees_with_pycocotools_on_the_same_predictions(pipeline_runs):
    from litedet.components.evaluation import coco, device, metrics

    first, root = pipeline_runs["first"], pipeline_runs["root"]
    tfma = metrics.read_metrics(first.components["Evaluator"].uri("evaluation"))
    model = tf.saved_model.load(
        os.path.join(first.components["Trainer"].uri("model"), "Format-Serving")
    )
    examples = device.read_examples(
        os.path.join(first.components["DetectionExampleGen"].uri("examples"), "Split-eval")
    )
    truth = device.ground_truth(model, examples)
    # The ground truth TFMA scored against is the annotation file's, crowd objects left out.
    with open(os.path.join(root, "annotations", "instances_train.json")) as handle:
        annotations = json.load(handle)["annotations"]
    assert sum(len(t["classes"]) for t in truth) == sum(not a["iscrowd"] for a in annotations)
    found = device.saved_model_detections(model, examples)
    sizes = device.image_sizes(examples)
    ours = coco.coco_map(truth, found, len(_label_to_category(first)), image_sizes=sizes)
    print("TFMA:", tfma, "pycocotools:", ours)
    assert ours["map50"] > 0.5  # a model worth comparing on
    assert tfma["map50"] == pytest.approx(ours["map50"], abs=0.005)
    # The gate's report is this same pycocotools pass: mAP, by size, per class, in pixels.
    gate = first.gate_report()
    assert gate["map"] == pytest.approx(ours["map"], abs=1e-9)
    for size in ("small", "medium", "large"):
        assert gate["ap_by_size"][size] == ours[f"ap_{size}"]
    names = {int(label): name for label, name in enumerate(gate["ap50_per_class"], start=1)}
    for label, name in names.items():
        assert gate["map_per_class"][name] == pytest.approx(ours[f"map/{label}"], abs=1e-9)
    # Every ground-truth object is in exactly one cell of its row of the confusion matrix.
    matrix = gate["confusion"]["matrix"]
    assert sum(sum(row) for row in matrix[:-1]) == sum(len(t["classes"]) for t in truth)


def test_the_first_model_is_blessed_pushed_and_registered(pipeline_runs):
    from litedet.components.pusher import store
    from tests.mlflow_server import registered_versions

    first = pipeline_runs["first"]
    gate = first.gate_report()
    assert gate["blessed"], gate["reasons"]
    assert gate["map50"] >= 0.8 and gate["baseline_map50"] is None  # first run: no baseline
    assert gate["baseline"]["version"] == 0  # the store was empty
    assert set(gate["formats"]) == {"saved_model", "float32", "int8"}
    assert gate["formats"]["int8"]["latency_ms"] > 0
    push = first.push_record()
    assert push["pushed"] == 1 and push["pushed_version"] == 1 and push["registered"] == 1
    manifest = store.read_manifest(push["pushed_destination"])
    store.verify(push["pushed_destination"])
    assert manifest["metrics"]["map50"] == pytest.approx(gate["map50"])
    assert manifest["ship_format"] == "int8"
    assert manifest["gate"]["blessed"] is True
    assert registered_versions(pipeline_runs["registry"], MODEL_NAME) == [1]
    # The Kubeflow run page's metrics: a system.Metrics artifact with the key numbers.
    with open(os.path.join(first.components["ModelGate"].uri("metrics"), "metrics.json")) as handle:
        figures = json.load(handle)
    assert figures["blessed"] == 1.0 and figures["map50"] == pytest.approx(gate["map50"])
    assert figures["map"] == pytest.approx(gate["map"])
    # The run report: one self-contained page, the Kubeflow UI's system.HTML.
    with open(first.components["RunReport"].uri("report")) as handle:
        page = handle.read()
    assert page.startswith("<!doctype html>") and "Confusion matrix" in page
    assert page.count("data:image/png;base64,") == 3  # PR curves, samples, losses


def test_a_worse_model_is_not_blessed_and_nothing_is_pushed(pipeline_runs):
    from litedet.components.pusher import store
    from tests.mlflow_server import registered_versions

    first, third = pipeline_runs["first"], pipeline_runs["third"]
    assert third.components["Trainer"].state == "ran"
    gate = third.gate_report()
    assert not gate["blessed"]
    assert gate["baseline"]["version"] == 1
    assert gate["baseline_map50"] == pytest.approx(
        first.gate_report()["formats"]["saved_model"]["map50"]
    )
    assert gate["formats"]["saved_model"]["map50"] < gate["baseline_map50"]
    assert any(
        r.startswith("regression against the latest pushed model") for r in gate["reasons"]
    ), gate["reasons"]
    push = third.push_record()
    assert push["pushed"] == 0 and "not blessed" in push["push_reason"]
    # `litedet run` finished the pipeline and says "not blessed" with its exit code.
    assert pipeline_runs["third_exit_code"] == 3, pipeline_runs["third_output"][-3000:]
    assert "blessed:           NO" in pipeline_runs["third_output"]
    destination = pipeline_runs["config"].push_destination
    assert store.list_versions(destination) == [1]
    assert registered_versions(pipeline_runs["registry"], MODEL_NAME) == [1]


def test_the_run_folder_holds_what_a_user_picks_up(pipeline_runs):
    """The third run, `litedet run` as a command: its run folder has the gate's figures and
    the pictures beside the configuration, the log and the report."""
    lines = [line for line in pipeline_runs["third_output"].splitlines() if "results:" in line]
    assert len(lines) == 1, pipeline_runs["third_output"]
    folder = lines[0].rsplit(" in ", 1)[1]
    expected = {
        "config.yaml",
        "run.log",
        "report.html",
        "quarantine.jsonl",
        "metrics.json",
        "confusion_matrix.png",
        "losses.png",
    }
    # A picture without data is left out: this 40-step model may have no precision-recall
    # curve at all (no class with a detection), and then there is no pr_curve.png.
    gate = pipeline_runs["third"].gate_report()
    if len(gate.get("pr_curves") or {}) >= 2:
        expected.add("pr_curve.png")
    assert expected <= set(os.listdir(folder)), os.listdir(folder)
    with open(os.path.join(folder, "metrics.json")) as handle:
        figures = json.load(handle)
    assert figures["map50"] == pipeline_runs["third"].gate_report()["map50"]


def test_predict_draws_the_right_boxes_on_a_sample_image(pipeline_runs, tmp_path):
    from PIL import Image

    from litedet import cli

    first, root = pipeline_runs["first"], pipeline_runs["root"]
    with open(os.path.join(root, "annotations", "instances_train.json")) as handle:
        coco = json.load(handle)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    image = max(
        coco["images"],
        key=lambda i: sum(
            1 for a in coco["annotations"] if a["image_id"] == i["id"] and not a["iscrowd"]
        ),
    )
    truth = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
    source = os.path.join(root, "images", image["file_name"])
    # The pushed SavedModel (the pushed int8 model has its own check above).
    version = first.push_record()["pushed_destination"]
    out = tmp_path / "predictions"
    assert (
        cli.main(
            [
                "predict",
                os.path.join(version, "saved_model"),
                source,
                "--out",
                str(out),
                "--threshold",
                "0.15",
            ]
        )
        == 0
    )
    with open(out / "1" / "predictions.json") as handle:  # the first call's folder
        (result,) = json.load(handle)["images"]
    matched = 0
    for a in truth:
        x, y, w, h = a["bbox"]
        gt = [x, y, x + w, y + h]  # pixel corners, as the JSON's box_px
        matched += any(
            d["name"] == names[a["category_id"]] and _iou_xyxy(gt, d["box_px"]) >= 0.5
            for d in result["detections"]
        )
    assert matched >= 0.8 * len(truth), (matched, len(truth), result["detections"])
    drawn = Image.open(result["drawn"])
    assert drawn.size == (image["width"], image["height"])
    original = np.asarray(Image.open(source).convert("RGB"), np.float32)
    assert np.abs(np.asarray(drawn, np.float32) - original).mean() > 1.0  # boxes were drawn


def _iou_xyxy(a, b):
    return _iou([a[1], a[0], a[3], a[2]], [b[1], b[0], b[3], b[2]])


def _iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _trainer_args(first, tmp_path, name, steps, checkpoint_every, batch_size=4, **training):
    """run_fn arguments over the fixture's examples and transform graph."""
    examples = first.components["DetectionExampleGen"].uri("examples")
    return {
        "train_files": [os.path.join(examples, "Split-train", "*")],
        "eval_files": [os.path.join(examples, "Split-eval", "*")],
        "transform_output": first.components["Transform"].uri("transform_graph"),
        "serving_model_dir": str(tmp_path / name / "serving"),
        "model_run_dir": str(tmp_path / name / "model_run" / "1"),
        "custom_config": {},
        # The one carrier of the training settings, as RunParameters writes it.
        "hyperparameters": {
            "values": {
                "train_steps": steps,
                "eval_steps": 1,
                "batch_size": batch_size,
                "alpha": 0.35,
                "checkpoint_every_steps": checkpoint_every,
                "backbone_weights": "none",
                **training,
            }
        },
    }


def _start_worker(args: dict, args_path, env=None):
    args_path.write_text(json.dumps(args))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.multi_worker_train", str(args_path)],
        env=env or dict(os.environ),
        cwd=os.path.dirname(os.path.dirname(__file__)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_a_killed_training_resumes_from_its_last_checkpoint(pipeline_runs, tmp_path):
    import glob
    import signal
    import time

    first = pipeline_runs["first"]
    args = _trainer_args(first, tmp_path, "resume", steps=60, checkpoint_every=4)
    resume_root = tmp_path / "resume" / "resume"
    process = _start_worker(args, tmp_path / "args.json")
    deadline = time.time() + 300
    # BackupAndRestore writes a checkpoint at each epoch's end (every 4 steps here).
    while not glob.glob(str(resume_root / "*" / "full" / "**" / "*.index"), recursive=True):
        assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.5)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, as with a preempted pod
    process.wait()
    assert not os.path.exists(args["serving_model_dir"])

    rerun = _start_worker(args, tmp_path / "args.json")
    output = rerun.communicate(timeout=600)[0].decode(errors="replace")
    assert rerun.returncode == 0, output[-3000:]
    resumed = [
        int(line.rsplit(" ", 1)[1])
        for line in output.splitlines()
        if line.startswith("Resumed from the checkpoint at step ")
    ]
    assert resumed and resumed[0] >= 4, f"did not resume: {output[-2000:]}"
    assert "Training step 60/60" in output  # and ran to the end
    assert tf.io.gfile.exists(os.path.join(args["serving_model_dir"], "saved_model.pb"))
    # Exported: nothing may resume from this training any more.
    assert glob.glob(str(resume_root / "*")) == []


def test_the_fingerprint_notices_a_changed_image(tmp_path):
    sources = datasets.write_coco(
        str(tmp_path), {"train": [{"file_name": "a.jpg", "width": 20, "height": 20, "anns": []}]}
    )
    config = DatasetConfig(root=str(tmp_path), format="coco", sources=sources)
    before = dataset_fingerprint(config, str(tmp_path))
    assert dataset_fingerprint(config, str(tmp_path)) == before
    (tmp_path / "images" / "a.jpg").write_bytes(datasets.image_bytes(20, 20, [(1, 1, 5, 5)]))
    assert dataset_fingerprint(config, str(tmp_path)) != before


def test_pretrained_weights_train_frozen_then_fine_tune_and_the_best_checkpoint_is_exported(
    pipeline_runs, tmp_path, monkeypatch, caplog
):
    """`backbone_weights: imagenet` with the file in Keras' cache (made here, in its naming):
    loaded, a frozen phase, a fine-tuning phase, validation mAP at every checkpoint, and the
    best checkpoint exported; the resume folder is gone after the export."""
    import logging
    import types

    from litedet.components.detection import weights
    from litedet.components.trainer import module as trainer_module

    keras_home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    (keras_home / "models").mkdir(parents=True)
    tf.keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=0.35, include_top=False, weights=None
    ).save_weights(str(keras_home / "models" / weights.imagenet_filename(0.35, 224)))
    args = _trainer_args(
        pipeline_runs["first"],
        tmp_path,
        "transfer",
        steps=8,
        checkpoint_every=2,
        backbone_weights="imagenet",
        freeze_backbone_steps=4,
    )
    with caplog.at_level(logging.INFO):
        trainer_module.run_fn(types.SimpleNamespace(**args))
    log = caplog.text
    assert "from " + str(keras_home / "models") in log  # the cached file, for a 256 px input
    assert "Training phase frozen: epochs 1-2" in log
    assert "Training phase fine_tune: epochs 3-4" in log
    assert log.count("Validation at step") == 4
    with open(os.path.join(args["model_run_dir"], "training.json")) as handle:
        record = json.load(handle)
    assert [v["step"] for v in record["validation"]] == [2, 4, 6, 8]
    best = max(record["validation"], key=lambda v: v["map"])
    assert record["best"]["step"] == best["step"] and record["best"]["map"] == best["map"]
    assert f"Exporting the best checkpoint: step {best['step']}" in log
    assert tf.saved_model.load(args["serving_model_dir"]).signatures["serving_default"]
    resume_root = tmp_path / "transfer" / "resume"
    assert not resume_root.exists() or not any(resume_root.iterdir())
