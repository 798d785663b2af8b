"""The run report: what a person looks at after a run, as one self-contained HTML page.

The verdict and its reasons, what was pushed, mAP per format and per class, and three pictures
(embedded as PNG data, so the page is a single file the Kubeflow UI can render): precision-recall
curves per class (IoU 0.5, from the ModelGate's pycocotools scoring of the SavedModel), sample
detections on evaluation images (the SavedModel, score >= 0.3; ground truth in white), and the
training and validation losses (from the Trainer's TensorBoard logs).
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Dict, List, Optional

NUM_SAMPLES = 6
SAMPLE_THRESHOLD = 0.3


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_pr_curves(curves: Dict[str, List[float]]) -> Optional[bytes]:
    if not curves or len(curves) < 2:
        return None
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
    png = _png(figure)
    plt.close(figure)
    return png


def plot_confusion(confusion: dict) -> Optional[bytes]:
    """The confusion matrix (gate.json's "confusion") as a heat map: each row coloured by the
    share of its count (where that true class's objects went), the counts written in."""
    matrix = confusion.get("matrix") if confusion else None
    if not matrix:
        return None
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.5, 0.6 * len(confusion["columns"]) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size), dpi=110)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axes.text(
                column,
                row,
                str(int(count)),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[row, column] > 0.5 else "black",
            )
    axes.set_xticks(range(len(confusion["columns"])), confusion["columns"], rotation=45, ha="right")
    axes.set_yticks(range(len(confusion["rows"])), confusion["rows"])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(
        f"Confusion matrix (score >= {confusion['score_threshold']}, "
        f"IoU >= {confusion['iou_threshold']})"
    )
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the row")
    png = _png(figure)
    plt.close(figure)
    return png


PR_CURVE_FILE = "pr_curve.png"
CONFUSION_FILE = "confusion_matrix.png"
LOSSES_FILE = "losses.png"


def write_pictures(
    folder: str,
    figures: dict,
    curves: Optional[Dict[str, Dict[str, List[float]]]] = None,
    steps_per_epoch: int = 1,
) -> List[str]:
    """pr_curve.png and confusion_matrix.png of `figures` (gate.json's "pr_curves" and
    "confusion", or `litedet val`'s), and losses.png of the training `curves`
    (training_curves) when given, into `folder`: the files a person picks up. Returns the
    paths written (a picture without data is left out)."""
    pictures = {
        PR_CURVE_FILE: plot_pr_curves(figures.get("pr_curves", {})),
        CONFUSION_FILE: plot_confusion(figures.get("confusion", {})),
    }
    if curves is not None:
        pictures[LOSSES_FILE] = plot_training(curves, steps_per_epoch)
    written = []
    for name, png in pictures.items():
        if png:
            path = os.path.join(folder, name)
            with open(path, "wb") as handle:
                handle.write(png)
            written.append(path)
    return written


def training_curves(model_run_dir: str) -> Dict[str, Dict[str, List[float]]]:
    """{"train"|"validation": {"epoch_loss": [...], ...}} from Keras' TensorBoard event files."""
    import tensorflow as tf

    out: Dict[str, Dict[str, List[float]]] = {}
    for phase in ("train", "validation"):
        points: Dict[str, Dict[int, float]] = {}
        for path in sorted(tf.io.gfile.glob(os.path.join(model_run_dir, phase, "events.out.*"))):
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


def steps_per_epoch(training: dict) -> int:
    """Training steps between two points of the loss curves, from the Trainer's
    training.json: Keras logs an epoch at every checkpoint."""
    settings = training.get("settings", {})
    return min(settings.get("checkpoint_every_steps", 1), settings.get("train_steps", 1))


def plot_training(
    curves: Dict[str, Dict[str, List[float]]], steps_per_epoch: int
) -> Optional[bytes]:
    if not curves.get("train"):
        return None
    plt = _pyplot()
    tags = [t for t in ("epoch_loss", "epoch_class_loss", "epoch_box_loss") if t in curves["train"]]
    # Validation mAP (trainer_callbacks.ValidationMap): in the validation logs, "val_" dropped.
    tags += [t for t in ("epoch_map50", "epoch_map") if t in curves.get("validation", {})]
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
        title = {"epoch_map": "validation mAP@[.5:.95]", "epoch_map50": "validation mAP@0.5"}
        axis.set_title(title.get(tag, tag.replace("epoch_", "").replace("_", " ")))
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    png = _png(figure)
    plt.close(figure)
    return png


def _colour(label: int):
    palette = [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (0, 128, 128),
        (170, 110, 40),
    ]
    return palette[(label - 1) % len(palette)]


def draw(image, detections: List[dict]):
    """A copy of the PIL image with each detection's box, label and score drawn."""
    from PIL import ImageDraw

    canvas = image.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(min(canvas.size) / 200))
    for d in detections:
        x0, y0, x1, y1 = d["box_px"]
        colour = _colour(d["label"])
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{d['name']} {d['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text)
        lift = bottom - top + 2
        pen.rectangle([x0, y0 - lift, x0 + right - left + 4, y0], fill=colour)
        pen.text((x0 + 2, y0 - lift), text, fill=(255, 255, 255))
    return canvas


def plot_samples(model_dir: str, eval_split_uri: str, labels: List[str]) -> Optional[bytes]:
    """A grid of evaluation images with the SavedModel's detections and the ground truth."""
    from PIL import Image, ImageDraw

    from litedet.components.evaluation import device

    examples = device.read_examples(eval_split_uri, limit=NUM_SAMPLES)
    if not examples:
        return None
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
        tiles.append(draw(image, detections).resize((320, 320)))
    columns = 3
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * 320, rows * 320), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * 320, (i // columns) * 320))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _table(header: List[str], rows: List[List[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def page(
    gate: dict, push: Optional[dict], training: dict, pictures: Dict[str, Optional[bytes]]
) -> str:
    """The report page. `gate`: the ModelGate's gate.json; `push`: the pusher's push.json;
    `training`: the Trainer's training.json; `pictures`: {caption: PNG bytes or None}."""
    settings = training.get("settings", {})
    verdict = "blessed" if gate["blessed"] else "NOT blessed"
    baseline = gate.get("baseline") or {}
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>litedet run report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:right}th{background:#f4f4f4}"
        ".no{color:#b00}.yes{color:#070}img{max-width:100%}</style></head><body>",
        f"<h1>litedet: <span class='{'yes' if gate['blessed'] else 'no'}'>{verdict}</span></h1>",
        "<p>mAP@0.5 <b>{:.3f}</b>, mAP@[.5:.95] {:.3f} on {} evaluation images.".format(
            gate["map50"], gate.get("map") or 0.0, gate["num_eval_images"]
        ),
    ]
    if baseline.get("version"):
        lines.append(
            f" Baseline: store version {baseline['version']}, mAP@0.5 "
            f"{gate.get('baseline_map50') or 0.0:.3f} on the same images."
        )
    elif baseline.get("version") == 0:
        lines.append(" Baseline: none (the store was empty).")
    lines.append("</p>")
    if gate["reasons"]:
        lines.append(
            "<ul>"
            + "".join(f"<li class='no'>{html.escape(r)}</li>" for r in gate["reasons"])
            + "</ul>"
        )
    if push is not None:
        pushed = (
            f"version {push['pushed_version']} at {push['pushed_destination']}"
            if push.get("pushed")
            else f"nothing ({push.get('push_reason', '')})"
        )
        if push.get("registered"):
            pushed += f"; registered in {push['registry_kind']} as {push['registry_version']}"
        lines.append(f"<p>Pushed: {html.escape(pushed)}</p>")
    lines.append(
        "<p>Model: MobileNetV2 alpha {}, input {} px, {} classes, {} steps.</p>".format(
            settings.get("alpha", "?"),
            training.get("image_size", "?"),
            len(training.get("classes", [])),
            settings.get("train_steps", "?"),
        )
    )
    rows = [
        [
            fmt + (" (shipped)" if fmt == gate["ship_format"] else ""),
            f"{v['map50']:.3f}",
            f"{v['size_bytes'] / 1e6:.2f}",
            f"{v['latency_ms']:.1f}",
        ]
        for fmt, v in gate["formats"].items()
        if fmt != "saved_model"
    ]
    lines.append(_table(["format", "mAP@0.5", "size (MB)", "latency (ms, 1 thread)"], rows))
    per_class = gate.get("map_per_class", {})
    lines.append(
        _table(
            ["class", "AP@0.5", "AP@[.5:.95]"],
            [
                [name, f"{ap:.3f}", _number(per_class.get(name))]
                for name, ap in gate.get("ap50_per_class", {}).items()
            ],
        )
    )
    sizes = gate.get("ap_by_size") or {}
    if sizes:
        lines.append(
            "<p>AP@[.5:.95] by object size (COCO's areas, in the images' own pixels): "
            + ", ".join(f"{k} {_number(v)}" for k, v in sizes.items())
            + "</p>"
        )
    confusion = gate.get("confusion") or {}
    if confusion.get("matrix"):
        lines.append(
            f"<h2>Confusion matrix</h2><p>Detections scoring at least "
            f"{confusion['score_threshold']}, matched to ground truth at IoU >= "
            f"{confusion['iou_threshold']}; rows: the true class, columns: the predicted one. "
            "<i>missed</i>: objects nothing found; <i>background</i>: detections of nothing.</p>"
        )
        lines.append(
            _table(
                [""] + confusion["columns"],
                [
                    [row] + [str(n) for n in counts]
                    for row, counts in zip(confusion["rows"], confusion["matrix"])
                ],
            )
        )
    for caption, png in pictures.items():
        if png:
            data = base64.b64encode(png).decode("ascii")
            lines.append(
                f"<h2>{html.escape(caption)}</h2>"
                f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            )
    lines.append("</body></html>")
    return "\n".join(lines)
