"""COCO mAP with pycocotools over in-memory detections: the independent scorer of the project.

Inputs are per image, in the project's coordinates (ymin, xmin, ymax, xmax, normalized):
  ground truth: {"boxes": [M, 4], "classes": [M] 1-based} with ignored objects (crowd, difficult)
    already left out, exactly as the Evaluator's `eval_labels` signature leaves them out (class 0);
  detections:   {"boxes": [K, 4], "classes": [K] 1-based, "scores": [K]}, padding rows class 0.
So TFMA's COCOMeanAveragePrecision and this function score the same thing; a detection on a crowd
region counts as a false positive in both (COCO proper would ignore it).

Boxes are scaled to each image's size in pixels (`image_sizes`), so COCO's area buckets mean
what they mean in COCO: small < 32², medium < 96², large above, in pixels of the original image.
Without sizes every image is taken as 1000 x 1000, which changes no IoU but makes the buckets
meaningless: they are then left out.
"""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CANVAS = 1000.0
# pycocotools' stats[]: 0 mAP, 1 mAP@0.5, 2 mAP@0.75, 3-5 AP small/medium/large, 8 AR@100.
_STATS = {
    "map": 0,
    "map50": 1,
    "map75": 2,
    "ap_small": 3,
    "ap_medium": 4,
    "ap_large": 5,
    "ar100": 8,
}
AREA_KEYS = ("ap_small", "ap_medium", "ap_large")
# The confusion matrix: detections at or above this score, matched at IoU >= 0.5.
CONFUSION_SCORE = 0.3
CONFUSION_IOU = 0.5


def _xywh(box, height: float, width: float) -> List[float]:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height]


def _coco_inputs(ground_truth, detections, sizes):
    images, annotations, results = [], [], []
    for image_id, (truth, found, (height, width)) in enumerate(
        zip(ground_truth, detections, sizes), start=1
    ):
        images.append({"id": image_id, "width": width, "height": height})
        for box, label in zip(np.reshape(truth["boxes"], [-1, 4]), truth["classes"]):
            if int(label) > 0:
                xywh = _xywh(box, height, width)
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
                        "bbox": _xywh(box, height, width),
                        "score": float(score),
                    }
                )
    return images, annotations, results


def coco_map(
    ground_truth: Sequence[Dict[str, np.ndarray]],
    detections: Sequence[Dict[str, np.ndarray]],
    num_classes: int,
    max_detections: int = 100,
    curves: bool = False,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> Dict:
    """COCO figures over the images, in order (ground_truth[i] and detections[i] are image i):

    "map" (mAP@[.5:.95]), "map50", "map75", "ar100"; with `image_sizes` ((height, width) in
    pixels per image) also "ap_small", "ap_medium", "ap_large" (None where no object has that
    size); per label k, "ap50/<k>" (AP@0.5) and "map/<k>" (AP@[.5:.95]). Classes without any
    ground truth are left out of the means and of the per-class figures, as pycocotools does.
    With `curves`, also "pr50": {"recall": the 101 recall points, "<k>": interpolated precision
    at each, IoU 0.5} per class."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground truths but {len(detections)} detections")
    sizes = list(image_sizes) if image_sizes is not None else [(CANVAS, CANVAS)] * len(detections)
    if len(sizes) != len(detections):
        raise ValueError(f"{len(sizes)} image sizes for {len(detections)} images")
    images, annotations, results = _coco_inputs(ground_truth, detections, sizes)
    categories = [{"id": k} for k in range(1, num_classes + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        if not results:
            empty = {k: 0.0 for k in _STATS}
            if image_sizes is None:
                empty = {k: v for k, v in empty.items() if k not in AREA_KEYS}
            return {**empty, **({"pr50": {}} if curves else {})}
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.maxDets = [1, 10, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    out: Dict = {}
    for name, index in _STATS.items():
        value = float(evaluation.stats[index])
        if name in AREA_KEYS:
            if image_sizes is None:
                continue
            out[name] = value if value > -1 else None  # -1: no object of that size
        else:
            out[name] = max(value, 0.0)  # -1: no data at all
    # precision[T, R, K, A, M]: IoU 0.5 is T=0, area "all" A=0, the largest maxDets M=-1.
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    for index, category in enumerate(evaluation.params.catIds):
        at50, every = precision[0, :, index], precision[:, :, index]
        if (at50 > -1).any():
            out[f"ap50/{category}"] = float(np.mean(at50[at50 > -1]))
            out[f"map/{category}"] = float(np.mean(every[every > -1]))
    if curves:
        out["pr50"] = {"recall": [round(float(r), 2) for r in evaluation.params.recThrs]}
        for index, category in enumerate(evaluation.params.catIds):
            if (precision[0, :, index] > -1).any():
                out["pr50"][str(category)] = [
                    round(max(float(p), 0.0), 4) for p in precision[0, :, index]
                ]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4] against every box in b [M, 4] (ymin, xmin, ymax, xmax)."""
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def confusion_matrix(
    ground_truth: Sequence[Dict[str, np.ndarray]],
    detections: Sequence[Dict[str, np.ndarray]],
    num_classes: int,
    score_threshold: float = CONFUSION_SCORE,
    iou_threshold: float = CONFUSION_IOU,
) -> List[List[int]]:
    """[num_classes + 1][num_classes + 1] counts: row = true label 1..C then "background",
    column = predicted label 1..C then "missed". Per image, detections scoring at least
    `score_threshold` are matched greedily, highest score first, to the unmatched ground-truth
    box of largest IoU (at least `iou_threshold`, whatever the class): a match counts at [true,
    predicted] (off the diagonal: the right place, the wrong class); a ground-truth box left
    unmatched at [true, missed]; a detection left unmatched at [background, predicted]."""
    size = num_classes + 1
    matrix = np.zeros([size, size], dtype=np.int64)
    for truth, found in zip(ground_truth, detections):
        gt_boxes = np.reshape(np.asarray(truth["boxes"], np.float64), [-1, 4])
        gt_classes = np.asarray(truth["classes"], np.int64).reshape(-1)
        keep = gt_classes > 0
        gt_boxes, gt_classes = gt_boxes[keep], gt_classes[keep]
        scores = np.asarray(found["scores"], np.float64).reshape(-1)
        classes = np.asarray(found["classes"], np.int64).reshape(-1)
        boxes = np.reshape(np.asarray(found["boxes"], np.float64), [-1, 4])
        chosen = (scores >= score_threshold) & (classes > 0)
        order = np.argsort(-scores[chosen], kind="stable")
        boxes, classes = boxes[chosen][order], classes[chosen][order]
        overlaps = _iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else None
        matched = np.zeros(len(gt_boxes), bool)
        for i, predicted in enumerate(classes):
            if overlaps is not None:
                candidates = np.where(matched, -1.0, overlaps[i])
                best = int(np.argmax(candidates))
                if candidates[best] >= iou_threshold:
                    matched[best] = True
                    matrix[gt_classes[best] - 1, predicted - 1] += 1
                    continue
            matrix[num_classes, predicted - 1] += 1  # background
        for label in gt_classes[~matched]:
            matrix[label - 1, num_classes] += 1  # missed
    return matrix.tolist()


def class_table(
    ground_truth: Sequence[Dict[str, np.ndarray]],
    confusion: Sequence[Sequence[int]],
    scores: Dict,
    labels: Sequence[str],
) -> List[Dict]:
    """Rows of `litedet val`'s table, as Ultralytics' val prints them: "all", then one per
    class: images (holding at least one of its objects), instances (its objects), P and R (at
    the confusion matrix's score and IoU thresholds, from `confusion`: the diagonal over the
    column, over the row), AP50 and AP (mAP@[.5:.95]) from `scores` (coco_map's). A class
    without objects has P and R None when nothing was predicted for it, and AP None. "all": P
    and R are the means over the classes with objects; AP50 and AP are mAP@0.5 and mAP."""
    matrix = np.asarray(confusion, np.int64)
    images = np.zeros(len(labels), np.int64)
    instances = np.zeros(len(labels), np.int64)
    for truth in ground_truth:
        classes = np.asarray(truth["classes"], np.int64).reshape(-1)
        classes = classes[classes > 0]
        instances += np.bincount(classes - 1, minlength=len(labels))[: len(labels)]
        images[np.unique(classes) - 1] += 1
    rows = []
    for k, name in enumerate(labels):
        hits = int(matrix[k, k]) if matrix.size else 0
        predicted = int(matrix[:, k].sum()) if matrix.size else 0
        actual = int(matrix[k, :].sum()) if matrix.size else 0
        rows.append(
            {
                "class": name,
                "images": int(images[k]),
                "instances": int(instances[k]),
                "p": hits / predicted if predicted else (0.0 if actual else None),
                "r": hits / actual if actual else None,
                "ap50": scores.get(f"ap50/{k + 1}"),
                "ap": scores.get(f"map/{k + 1}"),
            }
        )
    present = [r for r in rows if r["instances"]]
    every = {
        "class": "all",
        "images": len(ground_truth),
        "instances": int(instances.sum()),
        "p": float(np.mean([r["p"] for r in present])) if present else None,
        "r": float(np.mean([r["r"] for r in present])) if present else None,
        "ap50": scores.get("map50"),
        "ap": scores.get("map"),
    }
    return [every] + rows
