"""The Evaluator's TFMA configuration, and reading its results back.

TFMA computes one metric on the whole evaluation split: `map50`, COCO mAP@0.5
(COCOMeanAveragePrecision at IoU 0.5, boxes matched per class, greedy by score), the number the
gate's bound and the registry quote. The model is scored through its `detect_examples`
signature on the raw examples; the ground truth comes from its `eval_labels` signature
(crowd/difficult objects left out; components/detection/export.py).

Everything else (mAP@[.5:.95], per-class AP, AP by object size, the confusion matrix) is the
ModelGate's pycocotools pass over the same predictions (coco.py, device.py), which it runs
anyway for the TFLite formats and the baseline: computing it in TFMA too cost a separate pass
per class and per IoU threshold (61 AP computations for five classes) for figures the gate
already has. A test holds TFMA's mAP@0.5 within 0.005 of pycocotools'.

The candidate alone: TFMA 0.47's object-detection metrics cannot score a baseline model next to
it (with two models its preprocessor's predictions are not keyed by model and the metric fails:
`expected dict for "candidate" but found <class 'list'>`); the comparison lives in the gate.
"""

from __future__ import annotations

import json
from typing import Dict, List

MAP50 = "map50"
EVAL_SPLIT = "eval"
CANDIDATE = "candidate"
# Recall points per AP: COCO's 101. Score thresholds: TFMA bins the scores to draw each
# precision/recall curve; 1000 bins keep it within 0.005 of pycocotools' exact curve
# (tests/test_pipeline_local.py checks) at a seventh of the cost of 10000 (measured: 29 s vs
# 200 s for the Evaluator on 8 images on 2 cores).
NUM_RECALLS = 101
NUM_THRESHOLDS = 1000


def _coco_metric(name: str, num_classes: int, max_detections: int, **extra) -> dict:
    from litedet.components.detection import export

    return {
        "class_name": "COCOMeanAveragePrecision",
        "config": json.dumps(
            {
                "name": name,
                "class_ids": extra.pop("class_ids", list(range(1, num_classes + 1))),
                "max_num_detections": max_detections,
                "num_recalls": NUM_RECALLS,
                "num_thresholds": NUM_THRESHOLDS,
                "labels_to_stack": export.GROUND_TRUTH_COLUMNS,
                "predictions_to_stack": export.PREDICTION_COLUMNS,
                "num_detections_key": export.NUM_DETECTIONS,
                **extra,
            }
        ),
    }


def metric_configs(num_classes: int, max_detections: int = 100) -> List[dict]:
    if num_classes < 1:
        raise ValueError(f"num_classes: {num_classes} must be >= 1")
    return [_coco_metric(MAP50, num_classes, max_detections, iou_thresholds=[0.5])]


def eval_config(num_classes: int, max_detections: int = 100):
    """The tfma.EvalConfig of the Evaluator (the candidate model only; see the module doc)."""
    import tensorflow_model_analysis as tfma

    from litedet.components.detection import export

    metrics = [
        tfma.MetricConfig(class_name=c["class_name"], config=c["config"])
        for c in metric_configs(num_classes, max_detections)
    ]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=export.EVAL_SIGNATURE,
                preprocessing_function_names=[export.LABELS_SIGNATURE],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )


def read_metrics(evaluation_uri: str) -> Dict[str, float]:
    """Overall-slice scalar metrics of the Evaluator's evaluation: {"map50": ..., "map": ...,
    "ap50/1": ...}."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, float] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys or metrics.HasField("cross_slice_key"):
            continue
        for item in metrics.metric_keys_and_values:
            key, value = item.key, item.value
            if key.is_diff or key.model_name not in ("", CANDIDATE):
                continue
            if value.HasField("double_value"):
                number = value.double_value.value
            elif value.HasField("bounded_value"):
                number = value.bounded_value.value.value
            else:
                continue
            name = key.name + (f"/{key.output_name}" if key.output_name else "")
            if key.HasField("sub_key") and key.sub_key.HasField("class_id"):
                name += f"/class_{key.sub_key.class_id.value}"
            out[name] = float(number)
    return out
