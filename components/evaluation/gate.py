"""ModelGate: the one place that decides whether a trained model may ship.

Blessed only when all of these hold (each failure is written down as a reason):
1. the SavedModel's mAP@0.5 (TFMA, the Evaluator) >= `min_map50`;
2. no regression: against the latest blessed model (the Resolver's `baseline_model`, when there
   is one), scored here on the same images with the same scorer, mAP@0.5 drops by at most
   `max_map_drop` (TFMA 0.47 cannot score a baseline next to the candidate for detection
   metrics: components/evaluation/metrics.py);
3. every converted TFLite format scores within `max_tflite_map_drop` mAP@0.5 of the SavedModel
   on the same images and scorer (device.score_formats);
4. optional device budgets for the shipped format (`ship_format`): median single-thread
   latency <= `max_latency_ms`, file size <= `max_size_mb` (0 turns a budget off).

Outputs: `blessing` (a ModelBlessing as TFX's Evaluator writes it: BLESSED / NOT_BLESSED file and
the `blessed`, `current_model`, `current_model_id` properties that LatestBlessedModelStrategy and
Pusher read; plus the figures as custom properties and `gate.json`) and `metrics` (the key figures
as a KFP `system.Metrics` artifact, for the Kubeflow run page). `min_map50` and the budgets are
plain parameters, so a Kubeflow run can set them without recompiling.
"""

import json
import logging
import os
import shutil
import tempfile
from typing import Dict, List, Optional

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from litedet.components import artifacts
from litedet.components.tflite import FORMATS
from litedet.components.tflite.artifacts import TFLiteModels

GATE_FILE = "gate.json"
METRICS_FILE = "metrics.json"


def decide(
    map50: float,
    scores: Dict[str, Dict[str, float]],
    *,
    min_map50: float,
    max_tflite_map_drop: float,
    ship_format: str,
    baseline_map50: Optional[float] = None,
    max_map_drop: float = 0.0,
    max_latency_ms: float = 0.0,
    max_size_mb: float = 0.0,
) -> List[str]:
    """The reasons not to bless (empty: bless). `map50`: TFMA's; `scores`: device.score_formats'
    result; `baseline_map50`: the latest blessed model by the same scorer as scores."""
    reasons = []
    if map50 < min_map50:
        reasons.append(f"mAP@0.5 {map50:.4f} is below the bound min_map50={min_map50:.4f}")
    current = scores["saved_model"]["map50"]
    # 1e-9: the same model scored twice is no regression, float noise aside.
    if baseline_map50 is not None and current < baseline_map50 - max_map_drop - 1e-9:
        reasons.append(
            f"regression against the last blessed model: mAP@0.5 {current:.4f} < "
            f"{baseline_map50:.4f} (allowed drop {max_map_drop:.4f})"
        )
    for fmt in sorted(k for k in scores if k != "saved_model"):
        drop = current - scores[fmt]["map50"]
        if drop > max_tflite_map_drop:
            reasons.append(
                f"TFLite {fmt} mAP@0.5 {scores[fmt]['map50']:.4f} is {drop:.4f} below "
                f"the SavedModel's {current:.4f} (budget {max_tflite_map_drop:.4f})"
            )
    shipped = scores.get(ship_format)
    if shipped is None:
        reasons.append(
            f"ship_format {ship_format!r} was not converted "
            f"(converted: {', '.join(sorted(set(scores) - {'saved_model'}))})"
        )
    else:
        if max_latency_ms > 0 and shipped["latency_ms"] > max_latency_ms:
            reasons.append(
                f"{ship_format} latency {shipped['latency_ms']:.1f} ms exceeds the "
                f"budget {max_latency_ms:.1f} ms"
            )
        if max_size_mb > 0 and shipped["size_bytes"] > max_size_mb * 1e6:
            reasons.append(
                f"{ship_format} size {shipped['size_bytes'] / 1e6:.2f} MB exceeds the "
                f"budget {max_size_mb:.2f} MB"
            )
    return reasons


def _local_copy(uri: str, workdir: str) -> str:
    """The TFLite interpreter reads local files only; models on gs:// or s3:// are copied."""
    import tensorflow as tf

    if "://" not in uri:
        return uri
    local = os.path.join(workdir, os.path.basename(uri))
    tf.io.gfile.copy(uri, local, overwrite=True)
    return local


@component
def ModelGate(
    model: InputArtifact[standard_artifacts.Model],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    tflite_models: InputArtifact[TFLiteModels],
    examples: InputArtifact[standard_artifacts.Examples],
    label_map: InputArtifact[artifacts.LabelMap],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    metrics: OutputArtifact[artifacts.KfpMetrics],
    baseline_model: InputArtifact[standard_artifacts.Model] = None,
    min_map50: Parameter[float] = 0.5,
    max_map_drop: Parameter[float] = 0.0,
    max_tflite_map_drop: Parameter[float] = 0.015,
    ship_format: Parameter[str] = "int8",
    max_latency_ms: Parameter[float] = 0.0,
    max_size_mb: Parameter[float] = 0.0,
    latency_runs: Parameter[int] = 30,
    code_fingerprint: Parameter[str] = "",  # not read: part of the cache key (pipeline.py)
) -> None:
    import tensorflow as tf
    from tfx.types import artifact_utils
    from tfx.utils import path_utils

    from litedet.components.evaluation import device
    from litedet.components.evaluation import metrics as metrics_lib

    if ship_format not in FORMATS:
        raise ValueError(f"ship_format: {ship_format!r} is not one of {', '.join(FORMATS)}")
    with tf.io.gfile.GFile(os.path.join(tflite_models.uri, "conversion.json")) as handle:
        conversion = json.load(handle)
    labels = conversion["labels"]
    candidate = metrics_lib.read_metrics(evaluation.uri)
    if metrics_lib.MAP50 not in candidate:
        raise ValueError(
            f"evaluation {evaluation.uri} has no {metrics_lib.MAP50!r} metric "
            f"(found: {', '.join(sorted(candidate)) or 'none'})"
        )
    per_class_keys = [k for k in candidate if k.startswith(metrics_lib.PER_CLASS_PREFIX)]
    if len(per_class_keys) != len(labels):
        raise ValueError(
            f"the Evaluator scored {len(per_class_keys)} classes but the label map "
            f"has {len(labels)} ({', '.join(labels)}): set evaluation.num_classes "
            "(or dataset.class_names) to match the data and run again"
        )

    split_uri = artifact_utils.get_split_uri([examples], metrics_lib.EVAL_SPLIT)
    eval_examples = device.read_examples(split_uri)
    workdir = tempfile.mkdtemp(prefix="litedet-gate-")
    try:
        paths = {
            fmt: _local_copy(os.path.join(tflite_models.uri, name), workdir)
            for fmt, name in conversion["files"].items()
        }
        scores = device.score_formats(
            path_utils.serving_model_path(model.uri),
            paths,
            eval_examples,
            len(labels),
            conversion["resize_mode"],
            latency_runs,
        )
        baseline_map50 = None
        if baseline_model is not None:
            baseline_map50 = (
                scores["saved_model"]["map50"]
                if baseline_model.id == model.id
                else device.score_saved_model(
                    path_utils.serving_model_path(baseline_model.uri), eval_examples, len(labels)
                )["map50"]
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    map50 = candidate[metrics_lib.MAP50]
    reasons = decide(
        map50,
        scores,
        min_map50=min_map50,
        max_tflite_map_drop=max_tflite_map_drop,
        ship_format=ship_format,
        baseline_map50=baseline_map50,
        max_map_drop=max_map_drop,
        max_latency_ms=max_latency_ms,
        max_size_mb=max_size_mb,
    )
    blessed = not reasons
    per_class = {
        labels[int(k.split("/")[1]) - 1]: v
        for k, v in candidate.items()
        if k.startswith(metrics_lib.PER_CLASS_PREFIX)
    }
    curves = scores["saved_model"].pop("pr50", {})
    report = {
        "blessed": blessed,
        "reasons": reasons,
        "map50": map50,
        "map": candidate.get(metrics_lib.MAP),
        "baseline_map50": baseline_map50,
        "baseline_model": baseline_model.uri if baseline_model is not None else None,
        "ap50_per_class": per_class,
        "num_eval_images": len(eval_examples),
        "ship_format": ship_format,
        "formats": scores,
        # Precision at 101 recall points, IoU 0.5, per class name (pycocotools, SavedModel).
        "pr_curves": {
            ("recall" if k == "recall" else labels[int(k) - 1]): v for k, v in curves.items()
        },
        "budgets": {
            "min_map50": min_map50,
            "max_map_drop": max_map_drop,
            "max_tflite_map_drop": max_tflite_map_drop,
            "max_latency_ms": max_latency_ms,
            "max_size_mb": max_size_mb,
        },
    }
    logging.info(
        "ModelGate: %s (mAP@0.5 %.4f)%s",
        "BLESSED" if blessed else "NOT blessed",
        map50,
        "".join(f"\n  - {r}" for r in reasons),
    )

    with tf.io.gfile.GFile(
        os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w"
    ) as handle:
        handle.write("")
    with tf.io.gfile.GFile(os.path.join(blessing.uri, GATE_FILE), "w") as handle:
        handle.write(json.dumps(report, indent=2))
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("reasons", "; ".join(reasons))

    key_figures = {
        "map50": map50,
        "map": candidate.get(metrics_lib.MAP, 0.0),
        "blessed": float(blessed),
    }
    for fmt, values in scores.items():
        if fmt == "saved_model":
            continue
        key_figures[f"{fmt}_map50"] = values["map50"]
        key_figures[f"{fmt}_latency_ms"] = values["latency_ms"]
        key_figures[f"{fmt}_size_mb"] = values["size_bytes"] / 1e6
    for name, value in key_figures.items():
        metrics.set_float_custom_property(name, float(value))
        if name != "blessed":  # an int on the blessing: TFX's readers take it as one
            blessing.set_float_custom_property(name, float(value))
    with tf.io.gfile.GFile(os.path.join(metrics.uri, METRICS_FILE), "w") as handle:
        handle.write(json.dumps(key_figures, indent=2))
