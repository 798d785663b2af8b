"""Independent scoring with pycocotools: the exported model's serving signature on raw image
bytes, scored against the dataset's own COCO annotation file (crowd boxes handled by
pycocotools, not by us)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def coco_detections(
    model_dir: str,
    annotation_file: str,
    images_dir: str,
    label_to_category: Dict[int, int],
    limit: int = 0,
) -> List[dict]:
    """Runs `serving_default` on every image of the annotation file; COCO result dicts."""
    with open(annotation_file) as f:
        images = json.load(f)["images"][: limit or None]
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    results = []
    for image in images:
        with open(os.path.join(images_dir, image["file_name"]), "rb") as f:
            out = serve(image_bytes=tf.constant([f.read()]))
        count = int(out["num_detections"][0])
        boxes = out["detection_boxes"][0, :count].numpy()
        for (ymin, xmin, ymax, xmax), label, score in zip(
            boxes,
            out["detection_classes"][0, :count].numpy(),
            out["detection_scores"][0, :count].numpy(),
        ):
            w, h = image["width"], image["height"]
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": label_to_category[int(label)],
                    "bbox": [
                        float(xmin * w),
                        float(ymin * h),
                        float((xmax - xmin) * w),
                        float((ymax - ymin) * h),
                    ],
                    "score": float(score),
                }
            )
    return results


def coco_map(annotation_file: str, detections: List[dict], image_ids=None) -> Dict[str, float]:
    """{'map': mAP@[.5:.95], 'map50': mAP@0.5} as pycocotools computes them."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(annotation_file)
        if not detections:
            return {"map": 0.0, "map50": 0.0}
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        if image_ids is not None:
            evaluation.params.imgIds = list(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {
        "map": float(np.round(evaluation.stats[0], 4)),
        "map50": float(np.round(evaluation.stats[1], 4)),
    }
