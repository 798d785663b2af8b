"""The run report: what a person looks at after a run, written next to its outputs.

`<output_dir>/runs/<started>/report.md` with three pictures: precision-recall curves per class
(IoU 0.5, from the ModelGate's pycocotools scoring of the SavedModel), sample detections on
evaluation images (the SavedModel, score >= 0.3; ground truth in white), and the training and
validation losses per epoch (from the Trainer's TensorBoard logs).
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List

REPORT_FILE = "report.md"
NUM_SAMPLES = 6
SAMPLE_THRESHOLD = 0.3


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(curves: Dict[str, List[float]], path: str) -> bool:
    if not curves or len(curves) < 2:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=110)
    recall = curves["recall"]
    for name, precision in curves.items():
        if name != "recall":
            axes.plot(recall, precision, label=name)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title("Precision-recall per class (IoU 0.5, evaluation split)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def training_curves(model_run_dir: str) -> Dict[str, Dict[str, List[float]]]:
    """{"train"|"validation": {"epoch_loss": [...], ...}} from Keras' TensorBoard event files."""
    import tensorflow as tf

    out: Dict[str, Dict[str, List[float]]] = {}
    for phase in ("train", "validation"):
        points: Dict[str, Dict[int, float]] = {}
        for path in sorted(glob.glob(os.path.join(model_run_dir, phase, "events.out.*"))):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag.startswith("epoch_"):
                        number = (
                            float(tf.make_ndarray(value.tensor))
                            if value.HasField("tensor")
                            else value.simple_value
                        )
                        points.setdefault(value.tag, {})[event.step] = number
        out[phase] = {tag: [v for _, v in sorted(steps.items())] for tag, steps in points.items()}
    return out


def plot_training(
    curves: Dict[str, Dict[str, List[float]]], steps_per_epoch: int, path: str
) -> bool:
    if not curves.get("train"):
        return False
    plt = _pyplot()
    tags = [t for t in ("epoch_loss", "epoch_class_loss", "epoch_box_loss") if t in curves["train"]]
    figure, axes = plt.subplots(1, len(tags), figsize=(4 * len(tags), 3.5), dpi=110)
    axes = axes if len(tags) > 1 else [axes]
    for axis, tag in zip(axes, tags):
        for phase, style in (("train", "o-"), ("validation", "s--")):
            values = curves.get(phase, {}).get(tag)
            if values:
                axis.plot(
                    [(i + 1) * steps_per_epoch for i in range(len(values))],
                    values,
                    style,
                    label=phase,
                )
        axis.set_title(tag.replace("epoch_", "").replace("_", " "))
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def plot_samples(model_dir: str, eval_split_uri: str, labels: List[str], path: str) -> bool:
    """A grid of evaluation images with the SavedModel's detections and the ground truth."""
    import numpy as np
    from PIL import Image, ImageDraw

    from litedet import predict
    from litedet.components.evaluation import device

    examples = device.read_examples(eval_split_uri, limit=NUM_SAMPLES)
    if not examples:
        return False
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    truth = device.ground_truth(model, examples)
    found = device.saved_model_detections(model, examples)
    images = device.decode_images(examples)
    tiles = []
    for pixels, gt, det in zip(images, truth, found):
        image = Image.fromarray(pixels)
        h, w = pixels.shape[:2]
        pen = ImageDraw.Draw(image)
        for ymin, xmin, ymax, xmax in gt["boxes"]:
            pen.rectangle([xmin * w, ymin * h, xmax * w, ymax * h], outline=(255, 255, 255))
        detections = [
            {
                "label": int(c),
                "score": float(s),
                "name": labels[int(c) - 1] if 0 < int(c) <= len(labels) else str(int(c)),
                "box_px": [b[1] * w, b[0] * h, b[3] * w, b[2] * h],
            }
            for b, c, s in zip(det["boxes"], det["classes"], det["scores"])
            if s >= SAMPLE_THRESHOLD
        ]
        tiles.append(predict.draw(image, detections).resize((320, 320)))
    columns = 3
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * 320, rows * 320), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * 320, (i // columns) * 320))
    sheet.save(path)
    return bool(np.asarray(sheet).size)


def write(summary, config, out_dir: str) -> str:
    """Writes the report of a finished run (a run_summary.RunSummary) into `out_dir` (the run
    folder) and returns its path."""
    gate = summary.gate_report()
    os.makedirs(out_dir, exist_ok=True)
    trainer = summary.components["Trainer"]
    model_dir = os.path.join(trainer.uri("model"), "Format-Serving")
    eval_split = os.path.join(
        summary.components["DetectionExampleGen"].uri("examples"), "Split-eval"
    )
    labels = list(gate.get("ap50_per_class", {}))
    pictures = {
        "pr_curves.png": plot_pr_curves(
            gate.get("pr_curves", {}), os.path.join(out_dir, "pr_curves.png")
        ),
        "samples.png": plot_samples(
            model_dir, eval_split, labels, os.path.join(out_dir, "samples.png")
        ),
        "training.png": plot_training(
            training_curves(trainer.uri("model_run")),
            min(config.training.checkpoint_every_steps, config.training.train_steps),
            os.path.join(out_dir, "training.png"),
        ),
    }
    push = summary.push_record()
    lines = [
        f"# litedet run {summary.run_id}",
        "",
        f"- **mAP@0.5** {gate['map50']:.3f}, mAP@[.5:.95] {gate['map']:.3f} on "
        f"{gate['num_eval_images']} evaluation images"
        + (
            f" (last blessed model: {gate['baseline_map50']:.3f})"
            if gate.get("baseline_map50") is not None
            else ""
        ),
        f"- **blessed**: {'yes' if gate['blessed'] else 'no'}"
        + "".join(f"\n  - {r}" for r in gate["reasons"]),
        "- **pushed**: "
        + (
            f"`{push['pushed_destination']}` (version {push['pushed_version']})"
            if push["pushed"]
            else f"nothing ({push['push_reason']})"
        ),
        f"- model: alpha {config.training.alpha:g}, input {config.transform.image_size} "
        f"px, {config.training.train_steps} steps; SavedModel `{model_dir}`",
        "",
        "| format | mAP@0.5 | size (MB) | latency (ms, 1 thread) |",
        "|---|---|---|---|",
    ]
    for fmt, values in gate["formats"].items():
        if fmt != "saved_model":
            lines.append(
                f"| {fmt}{' (shipped)' if fmt == gate['ship_format'] else ''} "
                f"| {values['map50']:.3f} | {values['size_bytes'] / 1e6:.2f} "
                f"| {values['latency_ms']:.1f} |"
            )
    lines += ["", "| class | AP@0.5 |", "|---|---|"]
    lines += [f"| {name} | {ap:.3f} |" for name, ap in gate.get("ap50_per_class", {}).items()]
    captions = {
        "pr_curves.png": "Precision-recall per class",
        "samples.png": "Evaluation images: detections (score >= 0.3) in colour, "
        "ground truth in white",
        "training.png": "Losses per epoch",
    }
    for name, written in pictures.items():
        if written:
            lines += ["", f"## {captions[name]}", "", f"![{captions[name]}]({name})"]
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
