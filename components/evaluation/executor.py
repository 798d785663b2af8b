"""ModelGate's executor: the one place that decides whether a trained model may ship.

Blessed only when all of these hold (each failure is written down as a reason):
1. the SavedModel's mAP@0.5 (TFMA, the Evaluator) >= `min_map50`, and every metric is finite;
2. no regression against the baseline, the model store's latest version (baseline.py), scored
   here on the same images with the same scorer: mAP@0.5 drops by at most `max_map_drop`. A
   store that cannot be read fails the gate (fail closed); an empty store means a first model;
3. every converted TFLite format scores within `max_tflite_map_drop` mAP@0.5 of the SavedModel
   on the same images and scorer (device.score_formats);
4. optional device budgets for the shipped format (`ship_format`): median single-thread latency
   <= `max_latency_ms`, file size <= `max_size_mb` (0 turns a budget off).

Outputs: `blessing` (a ModelBlessing: a BLESSED or NOT_BLESSED file, `gate.json` with every
figure, the reasons and the baseline version the decision was made against, which the pusher
pushes only on top of; and the usual custom properties) and `metrics` (the key figures as a KFP
`system.Metrics` artifact, for the Kubeflow run page). `min_map50` and the budgets are plain
parameters, so a Kubeflow run can set them without recompiling. The component gathers them into
one `GateBudgets`: `run_gate` checks it, `decide` reads it, gate.json reports it ("budgets").
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from typing import Dict, List, Optional

from litedet.components.tflite import FORMATS

GATE_FILE = "gate.json"
METRICS_FILE = "metrics.json"
BLESSED_FILE, NOT_BLESSED_FILE = "BLESSED", "NOT_BLESSED"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateBudgets:
    """What a model must reach to be blessed (the module's docstring says how each is used):
    the ModelGate's run-time parameters, gathered once by the component."""

    # Declared in gate.json's order, which `as_report` keeps; keyword-only, so that fields with
    # and without a default can stand in that order.
    min_map50: float
    max_map_drop: float = 0.0
    max_tflite_map_drop: float
    # 0: no budget.
    max_latency_ms: float = 0.0
    max_size_mb: float = 0.0
    ship_format: str

    def check(self) -> None:
        """Run-time parameters are checked where they are used: a Kubeflow run can set them."""
        for name in ("min_map50", "max_map_drop", "max_tflite_map_drop"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: {value} must be a number in [0, 1]")
        for name in ("max_latency_ms", "max_size_mb"):
            value = getattr(self, name)
            # A NaN budget compares false with everything: it would switch the budget off silently.
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name}: {value} must be a finite number >= 0 (0: no budget)")
        if self.ship_format not in FORMATS:
            raise ValueError(
                f"ship_format: {self.ship_format!r} is not one of {', '.join(FORMATS)}"
            )

    def as_report(self) -> Dict[str, object]:
        """gate.json's "budgets"."""
        return dataclasses.asdict(self)


def decide(
    map50: float,
    scores: Dict[str, Dict[str, float]],
    budgets: GateBudgets,
    baseline_map50: Optional[float] = None,
) -> List[str]:
    """The reasons not to bless (empty: bless). `map50`: TFMA's; `scores`: device.score_formats'
    result; `baseline_map50`: the baseline's by the same scorer as `scores`."""
    reasons = []
    numbers = {"mAP@0.5 (TFMA)": map50}
    numbers.update({f"{fmt} mAP@0.5": values["map50"] for fmt, values in scores.items()})
    if baseline_map50 is not None:
        numbers["baseline mAP@0.5"] = baseline_map50
    shipped = scores.get(budgets.ship_format)
    if shipped is not None:  # the budgets compare these: a NaN would pass them
        numbers[f"{budgets.ship_format} latency_ms"] = shipped["latency_ms"]
        numbers[f"{budgets.ship_format} size_bytes"] = shipped["size_bytes"]
    broken = [name for name, value in numbers.items() if not math.isfinite(value)]
    if broken:
        # A NaN compares false with every bound: without this, it would pass them all.
        return [f"not a finite number: {', '.join(broken)}"]
    if map50 < budgets.min_map50:
        reasons.append(f"mAP@0.5 {map50:.4f} is below the bound min_map50={budgets.min_map50:.4f}")
    current = scores["saved_model"]["map50"]
    # 1e-9: the same model scored twice is no regression, float noise aside.
    if baseline_map50 is not None and current < baseline_map50 - budgets.max_map_drop - 1e-9:
        reasons.append(
            f"regression against the latest pushed model: mAP@0.5 {current:.4f} < "
            f"{baseline_map50:.4f} (allowed drop {budgets.max_map_drop:.4f})"
        )
    for fmt in sorted(k for k in scores if k != "saved_model"):
        drop = current - scores[fmt]["map50"]
        if drop > budgets.max_tflite_map_drop:
            reasons.append(
                f"TFLite {fmt} mAP@0.5 {scores[fmt]['map50']:.4f} is {drop:.4f} below "
                f"the SavedModel's {current:.4f} (budget {budgets.max_tflite_map_drop:.4f})"
            )
    if shipped is None:
        reasons.append(
            f"ship_format {budgets.ship_format!r} was not converted "
            f"(converted: {', '.join(sorted(set(scores) - {'saved_model'}))})"
        )
    else:
        if budgets.max_latency_ms > 0 and shipped["latency_ms"] > budgets.max_latency_ms:
            reasons.append(
                f"{budgets.ship_format} latency {shipped['latency_ms']:.1f} ms exceeds the "
                f"budget {budgets.max_latency_ms:.1f} ms"
            )
        if budgets.max_size_mb > 0 and shipped["size_bytes"] > budgets.max_size_mb * 1e6:
            reasons.append(
                f"{budgets.ship_format} size {shipped['size_bytes'] / 1e6:.2f} MB exceeds the "
                f"budget {budgets.max_size_mb:.2f} MB"
            )
    return reasons


def _read_candidate(evaluation_uri: str, tflite_uri: str, num_classes: int):
    """(conversion.json of the TFLite step, the Evaluator's metrics), checked against each
    other."""
    import tensorflow as tf

    from litedet.components.evaluation import metrics as metrics_lib

    with tf.io.gfile.GFile(os.path.join(tflite_uri, "conversion.json")) as handle:
        conversion = json.load(handle)
    candidate = metrics_lib.read_metrics(evaluation_uri)
    if metrics_lib.MAP50 not in candidate:
        raise ValueError(
            f"evaluation {evaluation_uri} has no {metrics_lib.MAP50!r} metric "
            f"(found: {', '.join(sorted(candidate)) or 'none'})"
        )
    labels = conversion["labels"]
    if num_classes != len(labels):
        raise ValueError(
            f"the Evaluator scored {num_classes} classes but the label map has "
            f"{len(labels)} ({', '.join(labels)}): set evaluation.num_classes (or "
            "dataset.class_names) to match the data and run again"
        )
    return conversion, candidate


def _local_copy(uri: str, workdir: str) -> str:
    """The TFLite interpreter reads local files only; models on gs:// or s3:// are copied."""
    import tensorflow as tf

    if "://" not in uri:
        return uri
    local = os.path.join(workdir, os.path.basename(uri))
    tf.io.gfile.copy(uri, local, overwrite=True)
    return local


def _score(model_uri, tflite_uri, conversion, eval_examples, baseline, latency_runs):
    """(scores per format, the baseline's mAP@0.5 or None)."""
    from tfx.utils import path_utils

    from litedet.components.evaluation import device

    num_classes = len(conversion["labels"])
    workdir = tempfile.mkdtemp(prefix="litedet-gate-")
    try:
        paths = {
            fmt: _local_copy(os.path.join(tflite_uri, name), workdir)
            for fmt, name in conversion["files"].items()
        }
        scores = device.score_formats(
            path_utils.serving_model_path(model_uri),
            paths,
            eval_examples,
            num_classes,
            conversion["resize_mode"],
            latency_runs,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if baseline is None or baseline.version == 0:
        return scores, None
    if baseline.model_uri == model_uri:  # the pushed model itself, re-evaluated
        return scores, scores["saved_model"]["map50"]
    baseline_scores = device.score_saved_model(baseline.saved_model, eval_examples, num_classes)
    return scores, baseline_scores["map50"]


def _by_name(scores: dict, prefix: str, labels: List[str]) -> Dict[str, float]:
    return {labels[int(k[len(prefix) :]) - 1]: v for k, v in scores.items() if k.startswith(prefix)}


def figures(scores: dict, labels: List[str]) -> dict:
    """One model's figures as gate.json names them, from Evaluation.score(..., detailed=True):
    mAP, by size, per class, the confusion matrix and the PR curves. Takes "pr50" and
    "confusion" out of `scores` (what is left is that model's row of "formats"). The gate and
    `litedet val` both report these."""
    from litedet.components.evaluation import coco

    curves = scores.pop("pr50", {})
    matrix = scores.pop("confusion", [])
    return {
        "map": scores["map"],
        "map75": scores.get("map75"),
        "ap_by_size": {k[len("ap_") :]: scores.get(k) for k in coco.AREA_KEYS},
        "ap50_per_class": _by_name(scores, "ap50/", labels),
        "map_per_class": _by_name(scores, "map/", labels),
        # Rows: the true class, then background; columns: the predicted class, then missed.
        "confusion": {
            "rows": labels + ["background"],
            "columns": labels + ["missed"],
            "matrix": matrix,
            "score_threshold": coco.CONFUSION_SCORE,
            "iou_threshold": coco.CONFUSION_IOU,
        },
        # Precision at 101 recall points, IoU 0.5, per class name (pycocotools).
        "pr_curves": {
            ("recall" if k == "recall" else labels[int(k) - 1]): v for k, v in curves.items()
        },
    }


def _report(
    blessed,
    reasons,
    map50,
    scores,
    conversion,
    baseline,
    baseline_map50,
    budgets,
    num_images,
    model_store,
):
    from litedet.components.evaluation import baseline as baseline_lib

    saved = figures(scores["saved_model"], conversion["labels"])
    return {
        "blessed": blessed,
        "reasons": reasons,
        # TFMA's mAP@0.5 is the bound's figure; everything else is pycocotools' (coco.py).
        "map50": map50,
        "map": saved["map"],
        "map75": saved["map75"],
        "ap_by_size": saved["ap_by_size"],
        "baseline_map50": baseline_map50,
        "baseline": baseline_lib.describe(baseline),
        "model_store": model_store,
        "ap50_per_class": saved["ap50_per_class"],
        "map_per_class": saved["map_per_class"],
        "confusion": saved["confusion"],
        "num_eval_images": num_images,
        "ship_format": budgets.ship_format,
        "formats": scores,
        # Of the SavedModel.
        "pr_curves": saved["pr_curves"],
        "budgets": budgets.as_report(),
    }


def key_figures(report: dict) -> Dict[str, float]:
    """The scalars a run page lists (KFP system.Metrics): mAP, by object size and per class,
    and per format mAP, latency and size. A size without any object is left out."""
    figures = {"map50": report["map50"], "map": report["map"], "blessed": float(report["blessed"])}
    for size, value in report["ap_by_size"].items():
        if value is not None:
            figures[f"ap_{size}"] = value
    for name, value in report["map_per_class"].items():
        figures[f"map_{name}"] = value
    for fmt, values in report["formats"].items():
        if fmt == "saved_model":
            continue
        figures[f"{fmt}_map50"] = values["map50"]
        figures[f"{fmt}_latency_ms"] = values["latency_ms"]
        figures[f"{fmt}_size_mb"] = values["size_bytes"] / 1e6
    return {k: float(v) for k, v in figures.items()}


def _write_outputs(blessing, metrics, report: dict, model) -> None:
    import tensorflow as tf

    blessed = report["blessed"]
    with tf.io.gfile.GFile(
        os.path.join(blessing.uri, BLESSED_FILE if blessed else NOT_BLESSED_FILE), "w"
    ) as handle:
        handle.write("")
    with tf.io.gfile.GFile(os.path.join(blessing.uri, GATE_FILE), "w") as handle:
        handle.write(json.dumps(report, indent=2))
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("reasons", "; ".join(report["reasons"]))
    baseline_version = report["baseline"].get("version")
    blessing.set_int_custom_property("baseline_version", int(baseline_version or 0))

    figures = key_figures(report)
    for name, value in figures.items():
        metrics.set_float_custom_property(name, value)
        if name != "blessed":  # an int on the blessing: TFX's readers take it as one
            blessing.set_float_custom_property(name, value)
    with tf.io.gfile.GFile(os.path.join(metrics.uri, METRICS_FILE), "w") as handle:
        handle.write(json.dumps(figures, indent=2))


def run_gate(
    model,
    evaluation,
    tflite_models,
    examples,
    blessing,
    metrics,
    *,
    budgets: GateBudgets,
    model_store: str,
    num_classes: int,
    latency_runs: int,
) -> None:
    """The gate's whole execution: score, decide, write `blessing` and `metrics`."""
    from tfx.types import artifact_utils

    from litedet.components.evaluation import baseline as baseline_lib
    from litedet.components.evaluation import device
    from litedet.components.evaluation import metrics as metrics_lib

    budgets.check()
    conversion, candidate = _read_candidate(evaluation.uri, tflite_models.uri, num_classes)
    eval_examples = device.read_examples(
        artifact_utils.get_split_uri([examples], metrics_lib.EVAL_SPLIT)
    )
    store_problem, baseline = None, None
    try:
        baseline = baseline_lib.latest_pushed(model_store)
    except baseline_lib.BaselineError as error:
        store_problem = f"no baseline: {error} (the gate fails closed)"
    scores, baseline_map50 = _score(
        model.uri, tflite_models.uri, conversion, eval_examples, baseline, latency_runs
    )
    map50 = candidate[metrics_lib.MAP50]
    reasons = decide(map50, scores, budgets, baseline_map50)
    if store_problem:
        reasons.insert(0, store_problem)
    report = _report(
        not reasons,
        reasons,
        map50,
        scores,
        conversion,
        baseline,
        baseline_map50,
        budgets,
        len(eval_examples),
        model_store,
    )
    logging.info(
        "ModelGate: %s (mAP@0.5 %.4f, baseline: version %s)%s",
        "BLESSED" if not reasons else "NOT blessed",
        map50,
        report["baseline"].get("version"),
        "".join(f"\n  - {r}" for r in reasons),
    )
    _write_outputs(blessing, metrics, report, model)
