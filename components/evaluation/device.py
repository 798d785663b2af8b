"""Scoring the models that ship: the converted TFLite detectors next to the SavedModel they came
from, on the same evaluation images and with the same scorer (coco.py), plus their size and
single-thread latency on the stock TFLite interpreter."""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from litedet.components import features as f
from litedet.components.detection import export
from litedet.components.evaluation import coco
from litedet.components.tflite import interpreter as tflite_interpreter

BATCH = 16


def read_examples(split_uri: str, limit: int = 0) -> List[bytes]:
    """Serialized raw tf.Examples of one split (DetectionExampleGen's gzipped TFRecords)."""
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"no examples under {split_uri}")
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit:
        records = records.take(limit)
    return [record.numpy() for record in records]


def _batches(items: Sequence, size: int = BATCH) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ground_truth(model, examples: Sequence[bytes]) -> List[Dict[str, np.ndarray]]:
    """Per image {"boxes", "classes"} from the model's `eval_labels` signature (what TFMA
    scores against), class 0 rows dropped. `model` None (a TFLite file scored alone): the
    function that signature is traced from (export.ground_truth_columns), run here."""
    out = []
    for batch in _batches(examples):
        labels = (
            model.signatures[export.LABELS_SIGNATURE]
            if model is not None
            else export.ground_truth_columns
        )
        columns = {k: v.numpy() for k, v in labels(examples=tf.constant(batch)).items()}
        for i in range(len(batch)):
            keep = columns["gt_class"][i] > 0
            boxes = np.stack(
                [columns[k][i] for k in ("gt_ymin", "gt_xmin", "gt_ymax", "gt_xmax")], axis=-1
            )
            out.append({"boxes": boxes[keep], "classes": columns["gt_class"][i][keep]})
    return out


def saved_model_detections(model, examples: Sequence[bytes]) -> List[Dict[str, np.ndarray]]:
    """Per image {"boxes", "classes", "scores"} from `detect_examples` (what TFMA scores)."""
    out = []
    for batch in _batches(examples):
        columns = {
            k: v.numpy()
            for k, v in model.signatures[export.EVAL_SIGNATURE](examples=tf.constant(batch)).items()
        }
        for i in range(len(batch)):
            count = int(columns[export.NUM_DETECTIONS][i])
            boxes = np.stack(
                [columns[k][i][:count] for k in ("ymin", "xmin", "ymax", "xmax")], axis=-1
            )
            out.append(
                {
                    "boxes": boxes,
                    "classes": columns["class_id"][i][:count],
                    "scores": columns["scores"][i][:count],
                }
            )
    return out


def image_sizes(examples: Sequence[bytes]) -> List[Tuple[int, int]]:
    """(height, width) in pixels of each raw example's image, as the ExampleGen recorded it."""
    spec = {
        f.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        f.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_example(tf.constant(list(examples)), spec)
    return list(
        zip(parsed[f.IMAGE_HEIGHT].numpy().tolist(), parsed[f.IMAGE_WIDTH].numpy().tolist())
    )


def decode_images(examples: Sequence[bytes]) -> List[np.ndarray]:
    """RGB uint8 images of the raw examples, decoded as the Transform graph decodes them."""
    from litedet.components.detection import preprocessing

    spec = {f.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)}
    return [
        preprocessing.decode_rgb(tf.io.parse_single_example(e, spec)[f.IMAGE_ENCODED]).numpy()
        for e in examples
    ]


def tflite_detections(
    path: str, images: Sequence[np.ndarray], resize_mode: str
) -> List[Dict[str, np.ndarray]]:
    detector = tflite_interpreter.TFLiteDetector(path, num_threads=1, resize_mode=resize_mode)
    out = []
    for image in images:
        found = detector.detect(image)
        count = found["count"]
        out.append(
            {
                "boxes": found["boxes"][:count],
                "classes": found["classes"][:count],
                "scores": found["scores"][:count],
            }
        )
    return out


class Evaluation:
    """The evaluation images of one scoring, read once: ground truth (`truth`), sizes in pixels
    (`sizes`) and, when a TFLite model needs them, the decoded RGB images (`images`). `score`
    turns one model's detections into the figures: the gate scores the SavedModel, each TFLite
    format and the baseline with it, `litedet val` the one model it is given."""

    def __init__(self, examples: Sequence[bytes], num_classes: int, model=None):
        self.examples = examples
        self.num_classes = num_classes
        self.truth = ground_truth(model, examples)
        self.sizes = image_sizes(examples)
        self._images: Optional[List[np.ndarray]] = None

    @property
    def images(self) -> List[np.ndarray]:
        if self._images is None:
            self._images = decode_images(self.examples)
        return self._images

    def score(self, found: Sequence[Dict[str, np.ndarray]], detailed: bool = False) -> Dict:
        """coco.coco_map's figures, boxes scored in each image's own pixels; `detailed` adds
        "pr50" (the precision-recall curves) and "confusion" (coco.confusion_matrix)."""
        scores = coco.coco_map(
            self.truth, found, self.num_classes, curves=detailed, image_sizes=self.sizes
        )
        if detailed:
            scores["confusion"] = coco.confusion_matrix(self.truth, found, self.num_classes)
        return scores


def score_saved_model(
    saved_model_dir: str, examples: Sequence[bytes], num_classes: int
) -> Dict[str, float]:
    """coco.coco_map's figures of a SavedModel on the examples (e.g. the baseline model)."""
    model = tf.saved_model.load(saved_model_dir)
    return Evaluation(examples, num_classes, model).score(saved_model_detections(model, examples))


def score_formats(
    saved_model_dir: str,
    tflite_paths: Dict[str, str],
    examples: Sequence[bytes],
    num_classes: int,
    resize_mode: str,
    latency_runs: int = 30,
) -> Dict[str, Dict[str, float]]:
    """{"saved_model": {coco.coco_map's figures, "pr50", "confusion"}, "<format>": {the same
    figures, "size_bytes", "latency_ms"}} on the given evaluation examples, boxes scored in each
    image's own pixels."""
    model = tf.saved_model.load(saved_model_dir)
    evaluation = Evaluation(examples, num_classes, model)
    results = {
        "saved_model": evaluation.score(saved_model_detections(model, examples), detailed=True)
    }
    for fmt, path in tflite_paths.items():
        scores = evaluation.score(tflite_detections(path, evaluation.images, resize_mode))
        scores["size_bytes"] = float(tf.io.gfile.stat(path).length)
        scores["latency_ms"] = tflite_interpreter.measure_latency(
            path, threads=1, runs=latency_runs
        )
        results[fmt] = scores
    return results
