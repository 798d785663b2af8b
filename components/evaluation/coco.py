"""COCO mAP with pycocotools over in-memory detections: the independent scorer of the project.

Inputs are per image, in the project's coordinates (ymin, xmin, ymax, xmax, normalized):
  ground truth: {"boxes": [M, 4], "classes": [M] 1-based} with ignored objects (crowd, difficult)
    already left out, exactly as the Evaluator's `eval_labels` signature leaves them out (class 0);
  detections:   {"boxes": [K, 4], "classes": [K] 1-based, "scores": [K]}, padding rows class 0.
So TFMA's COCOMeanAveragePrecision and this function score the same thing; a detection on a crowd
region counts as a false positive in both (COCO proper would ignore it). Boxes are scaled to a
1000 x 1000 canvas, which changes no IoU; area buckets are therefore not COCO's pixel ones.
"""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Sequence

import numpy as np

CANVAS = 1000.0


def _xywh(box) -> List[float]:
    ymin, xmin, ymax, xmax = (float(v) * CANVAS for v in box)
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def coco_map(
    ground_truth: Sequence[Dict[str, np.ndarray]],
    detections: Sequence[Dict[str, np.ndarray]],
    num_classes: int,
    max_detections: int = 100,
    curves: bool = False,
) -> Dict:
    """{"map": mAP@[.5:.95], "map50": mAP@0.5, "ap50/<k>": AP@0.5 of label k} over the images,
    in order (ground_truth[i] and detections[i] are image i). Classes without any ground truth
    are left out of the means, as pycocotools does. With `curves`, also "pr50": {"recall": the
    101 recall points, "<k>": interpolated precision at each, IoU 0.5} per class."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground truths but {len(detections)} detections")
    images, annotations, results = [], [], []
    for image_id, (truth, found) in enumerate(zip(ground_truth, detections), start=1):
        images.append({"id": image_id, "width": CANVAS, "height": CANVAS})
        for box, label in zip(np.reshape(truth["boxes"], [-1, 4]), truth["classes"]):
            if int(label) > 0:
                xywh = _xywh(box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": xywh,
                        "iscrowd": 0,
                        "area": xywh[2] * xywh[3],
                    }
                )
        for box, label, score in zip(
            np.reshape(found["boxes"], [-1, 4]), found["classes"], found["scores"]
        ):
            if int(label) > 0:
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": _xywh(box),
                        "score": float(score),
                    }
                )
    categories = [{"id": k} for k in range(1, num_classes + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        if not results:
            return {"map": 0.0, "map50": 0.0, **({"pr50": {}} if curves else {})}
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.maxDets = [1, 10, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    out = {"map": float(evaluation.stats[0]), "map50": float(evaluation.stats[1])}
    # precision[T, R, K, A, M]: IoU 0.5 is T=0, area "all" A=0, the largest maxDets M=-1.
    precision = evaluation.eval["precision"][0, :, :, 0, -1]
    for index, category in enumerate(evaluation.params.catIds):
        column = precision[:, index]
        if (column > -1).any():
            out[f"ap50/{category}"] = float(np.mean(column[column > -1]))
    out = {k: max(v, 0.0) for k, v in out.items()}  # pycocotools reports -1 for "no data"
    if curves:
        out["pr50"] = {"recall": [round(float(r), 2) for r in evaluation.params.recThrs]}
        for index, category in enumerate(evaluation.params.catIds):
            if (precision[:, index] > -1).any():
                out["pr50"][str(category)] = [
                    round(max(float(p), 0.0), 4) for p in precision[:, index]
                ]
    return out
