"""`litedet val`: one model scored on one split of a dataset with the ModelGate's own scorer.

The model is any that `litedet predict` takes (predict.Detector): a pushed version (its shipped
TFLite format, or `--format`, `saved_model` included), a SavedModel, or a TFLite file.

The dataset is read as the pipeline reads it: by the ExampleGen itself, through the code of
`litedet data convert` (litedet/data/convert.py: the same readers, checks, label map and
quarantine), into a temporary folder; an image the pipeline would set aside is set aside here
too, and counted. The split's examples then go through the gate's scoring
(components/evaluation: `device.Evaluation` for the ground truth, the detections and
pycocotools, `executor.figures` for gate.json's figures): a SavedModel scored here gets the
figures the gate writes for it on the same images.

Written into a new run folder (`<output_dir>/runs/<stamp>/`, beside config.yaml and run.log):
- `val.json`: the per-class table (coco.class_table), the figures as gate.json names them, and
  what was scored: the model, the dataset, the split, the images set aside;
- `predictions_coco.json`: the detections as COCO results (`image_id` and `category_id` the
  dataset's own ids where they are numbers, `bbox` [x, y, w, h] in the image's pixels, `score`),
  for pycocotools or any COCO tool;
- `metrics.json` (the key figures), `pr_curve.png`, `confusion_matrix.png`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

from litedet.pipeline.configs import ConfigError

VAL_FILE = "val.json"
RESULTS_FILE = "predictions_coco.json"
METRICS_FILE = "metrics.json"
QUARANTINE_FILE = "quarantine.jsonl"  # as the ExampleGen names it: the split's images set aside


def read_split(config, dataset, split: str, workdir: str):
    """(serialized raw tf.Examples of `split`, the label map's classes [{"id", "name",
    "source_key"}], the split's images set aside [{"source_id", "split", "image", "reason",
    "detail"}]): the dataset converted by the ExampleGen (litedet/data/convert.py) into
    `workdir`."""
    from litedet.components.evaluation import device
    from litedet.components.example_gen import fingerprint
    from litedet.data import convert
    from litedet.pipeline import configs

    if split not in dataset.output_splits:
        raise ConfigError(
            f"--split {split}: the dataset has no such split (splits: "
            f"{', '.join(dataset.output_splits)})"
        )
    _, _, size = fingerprint.scan(dataset, dataset.root)
    summary = convert.convert(dataset, workdir, configs.beam_args_for(config, size))
    with open(os.path.join(workdir, "label_map", "label_map.json")) as handle:
        classes = json.load(handle)["classes"]
    set_aside = []
    with open(os.path.join(workdir, "quarantine", QUARANTINE_FILE)) as handle:
        for line in handle:
            if line.strip() and json.loads(line)["split"] == split:
                set_aside.append(json.loads(line))
    if not summary["examples"].get(split):
        raise ConfigError(
            f"split {split}: no image left to score ({len(set_aside)} set aside, the first: "
            f"{set_aside[0]['image'] if set_aside else '-'}: "
            f"{set_aside[0]['detail'] if set_aside else 'no image in the annotations'})"
        )
    examples = device.read_examples(os.path.join(workdir, "examples", f"Split-{split}"))
    return examples, classes, set_aside


def _model_classes(detector) -> Optional[int]:
    """How many classes a SavedModel scores (its `detect_preprocessed` output), or None."""
    from litedet.components.detection import export

    if detector.module is None:
        return None
    outputs = detector.module.signatures[export.PREPROCESSED_SIGNATURE].structured_outputs
    return int(outputs["class_scores"].shape[-1]) - 1


def check_labels(detector, names: List[str]) -> None:
    """The model must score the dataset's classes, in the dataset's order: otherwise label k of
    the one is not label k of the other and every figure would be wrong."""
    if detector.labels:
        if list(detector.labels) != list(names):
            raise ConfigError(
                f"the model's classes ({', '.join(detector.labels)}) are not the dataset's "
                f"({', '.join(names)}), in that order"
            )
        return
    count = _model_classes(detector)
    if count is not None and count != len(names):
        raise ConfigError(f"the model scores {count} classes, the dataset has {len(names)}")


def _number_or_text(value: str):
    return int(value) if value.isdigit() else value


def coco_results(examples: Sequence[bytes], found, sizes, classes: List[dict]) -> List[dict]:
    """The detections as COCO results, in the dataset's own image and category ids."""
    import tensorflow as tf

    from litedet.components import features as f
    from litedet.components.evaluation import coco

    ids = tf.io.parse_example(
        tf.constant(list(examples)), {f.IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string)}
    )[f.IMAGE_SOURCE_ID].numpy()
    categories = [_number_or_text(c.get("source_key") or str(c["id"])) for c in classes]
    results = []
    for image_id, detections, (height, width) in zip(ids, found, sizes):
        image_id = _number_or_text(image_id.decode("utf-8", "replace"))
        for box, label, score in zip(
            detections["boxes"], detections["classes"], detections["scores"]
        ):
            if int(label) > 0:
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": categories[int(label) - 1],
                        "bbox": [round(v, 2) for v in coco._xywh(box, height, width)],
                        "score": round(float(score), 5),
                    }
                )
    return results


def _metrics(figures: dict, table: List[dict]) -> Dict[str, float]:
    """The key figures, named as the gate's metrics.json names them (executor.key_figures)."""
    out = {"map50": table[0]["ap50"], "map": figures["map"], "map75": figures["map75"]}
    for size, value in figures["ap_by_size"].items():
        if value is not None:
            out[f"ap_{size}"] = value
    for name, value in figures["map_per_class"].items():
        out[f"map_{name}"] = value
    return {k: float(v) for k, v in out.items() if v is not None}


def run(
    config,
    model: str,
    split: str,
    model_format: Optional[str],
    run_dir: str,
    progress: Callable[[str], None] = print,
) -> dict:
    """Scores `model` on `split` of the configured dataset and writes the files above into
    `run_dir`. Returns val.json's content, plus "files" (the paths written)."""
    from litedet import predict
    from litedet.components.evaluation import coco, device
    from litedet.components.evaluation import executor as gate_lib
    from litedet.components.report import render
    from litedet.pipeline import local_runner

    detector = predict.Detector(model, model_format)  # a wrong model stops before the data
    dataset = local_runner.resolve_dataset(config)
    progress(f"Reading split {split} of the {dataset.format} dataset at {dataset.root} ...")
    workdir = tempfile.mkdtemp(prefix="litedet-val-")
    try:
        examples, classes, set_aside = read_split(config, dataset, split, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    names = [c["name"] for c in classes]
    check_labels(detector, names)
    progress(
        f"Scoring {detector.kind} {detector.path} on {len(examples)} images"
        + (f" ({len(set_aside)} set aside: {QUARANTINE_FILE})" if set_aside else "")
        + " ..."
    )
    evaluation = device.Evaluation(examples, len(names), detector.module)
    started = time.time()
    if detector.module is not None:
        found = device.saved_model_detections(detector.module, examples)
    else:
        found = device.tflite_detections(
            detector.tflite_path, evaluation.images, detector.resize_mode
        )
    seconds = time.time() - started
    scores = evaluation.score(found, detailed=True)
    flat = dict(scores)
    figures = gate_lib.figures(scores, names)
    table = coco.class_table(evaluation.truth, figures["confusion"]["matrix"], flat, names)
    report = {
        "model": detector.path,
        "model_kind": detector.kind,
        "dataset": {"format": dataset.format, "root": dataset.root, "split": split},
        "num_images": len(examples),
        "set_aside": len(set_aside),
        "ms_per_image": 1000.0 * seconds / len(examples),
        "p_r_at": {
            "score_threshold": coco.CONFUSION_SCORE,
            "iou_threshold": coco.CONFUSION_IOU,
        },
        "table": table,
        **figures,
        "map50": flat["map50"],
    }
    files = [os.path.join(run_dir, name) for name in (VAL_FILE, RESULTS_FILE, METRICS_FILE)]
    with open(files[0], "w") as handle:
        json.dump(report, handle, indent=2)
    with open(files[1], "w") as handle:
        json.dump(coco_results(examples, found, evaluation.sizes, classes), handle)
    with open(files[2], "w") as handle:
        json.dump(_metrics(figures, table), handle, indent=2)
    if set_aside:
        files.append(os.path.join(run_dir, QUARANTINE_FILE))
        with open(files[-1], "w") as handle:
            handle.writelines(json.dumps(entry) + "\n" for entry in set_aside)
    files += render.write_pictures(run_dir, figures)
    return {**report, "files": files}


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(table: List[dict]) -> str:
    """The table as Ultralytics' val prints it."""
    width = max(12, max(len(row["class"]) for row in table) + 2)
    header = f"{'class':>{width}} {'images':>8} {'instances':>10} " + " ".join(
        f"{h:>7}" for h in ("P", "R", "AP50", "AP")
    )
    lines = [header]
    for row in table:
        lines.append(
            f"{row['class']:>{width}} {row['images']:>8} {row['instances']:>10} "
            + " ".join(f"{_cell(row[k]):>7}" for k in ("p", "r", "ap50", "ap"))
        )
    return "\n".join(lines)
