"""The exported SavedModel: one model, three signatures.

- `serving_default`: encoded JPEG/PNG bytes [B] -> `detection_boxes` [B, K, 4] (ymin, xmin, ymax,
  xmax, normalized to the ORIGINAL image), `detection_classes` [B, K] (1-based labels, float as in
  the TF OD API), `detection_scores` [B, K], `num_detections` [B]. Decoding, resizing and
  normalization come from the Transform graph; non-max suppression is inside.
- `detect_examples`: serialized raw tf.Examples [B] -> the same detections as columns `xmin`,
  `ymin`, `xmax`, `ymax`, `class_id`, `scores` [B, K] and `num_detections` [B]: the form
  `tfma.metrics.COCOMeanAveragePrecision(predictions_to_stack=PREDICTION_COLUMNS,
  num_detections_key="num_detections")` stacks, against the labels of `eval_labels`.
- `detect_preprocessed`: model-input images [B, S, S, 3] in [-1, 1] -> raw `box_encodings`
  [B, N, 4] and sigmoid `class_scores` [B, N, C + 1]: what the TFLite conversion wraps with the
  TFLite detection post-process op. The anchors are saved as the `anchors` variable (a plain
  tf.constant attribute would be dropped by tf.saved_model.save).
- `eval_labels`: serialized raw tf.Examples [B] -> the ground truth as columns
  GROUND_TRUTH_COLUMNS [B, M] (xmin, ymin, xmax, ymax, class), padded with class 0. Crowd and
  difficult objects get class 0 too: COCO and Pascal VOC scoring ignore them, and TFMA's
  per-class matching drops class-0 rows (components/evaluation). TFMA runs it as a
  preprocessing function and stacks its columns as the labels.
"""

from __future__ import annotations

import tensorflow as tf

from litedet.components import features as f
from litedet.components.detection import postprocess, preprocessing

SERVING_SIGNATURE = "serving_default"
EVAL_SIGNATURE = "detect_examples"
PREPROCESSED_SIGNATURE = "detect_preprocessed"
LABELS_SIGNATURE = "eval_labels"
PREDICTION_COLUMNS = ["xmin", "ymin", "xmax", "ymax", "class_id", "scores"]
NUM_DETECTIONS = "num_detections"
GROUND_TRUTH_COLUMNS = ["gt_xmin", "gt_ymin", "gt_xmax", "gt_ymax", "gt_class"]


class DetectorExport(tf.Module):
    def __init__(
        self,
        detector: tf.keras.Model,
        tf_transform_output,
        anchors: tf.Tensor,
        image_size: int,
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        class_agnostic_nms: bool = True,
    ):
        super().__init__()
        # Only the detector's variables are tracked, not the Keras model: a tracked Keras model
        # makes tf.saved_model.save trace every layer's call for Keras' own loading path, which
        # nothing here uses (most of the export's time). The signatures capture the variables.
        self.__dict__["detector"] = detector
        self.model_variables = list(detector.variables)
        # Tracked as an attribute so the Transform graph and its assets are saved with us.
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.anchors = tf.Variable(anchors, trainable=False, dtype=tf.float32, name="anchors")
        self._image_size = image_size
        self._nms = dict(
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            class_agnostic=class_agnostic_nms,
        )

    def _detect(self, encoded: tf.Tensor):
        transformed = self.tft_layer({f.IMAGE_ENCODED: encoded})
        outputs = self.detector(transformed[f.IMAGE], training=False)
        detections = postprocess.decode_detections(
            outputs["box_encodings"], outputs["class_logits"], self.anchors, **self._nms
        )
        # Letterbox: boxes come back from the model-input frame to the original image.
        detections["detection_boxes"] = preprocessing.boxes_from_window(
            detections["detection_boxes"], transformed[f.CONTENT_WINDOW]
        )
        return detections

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False
    )
    def serve(self, image_bytes):
        return self._detect(image_bytes)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False
    )
    def detect_examples(self, examples):
        parsed = tf.io.parse_example(
            examples, {f.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)}
        )
        detections = self._detect(parsed[f.IMAGE_ENCODED])
        ymin, xmin, ymax, xmax = tf.unstack(detections["detection_boxes"], axis=-1)
        return {
            "xmin": xmin,
            "ymin": ymin,
            "xmax": xmax,
            "ymax": ymax,
            "class_id": detections["detection_classes"],
            "scores": detections["detection_scores"],
            # An integer: TFMA slices the stacked predictions with it.
            "num_detections": tf.cast(detections["num_detections"], tf.int32),
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False
    )
    def eval_labels(self, examples):
        return ground_truth_columns(examples)

    def signatures(self):
        preprocessed = tf.function(
            lambda images: self._raw_outputs(images),
            input_signature=[
                tf.TensorSpec(
                    [None, self._image_size, self._image_size, 3], tf.float32, name="images"
                )
            ],
            autograph=False,
        )
        return {
            SERVING_SIGNATURE: self.serve,
            EVAL_SIGNATURE: self.detect_examples,
            PREPROCESSED_SIGNATURE: preprocessed,
            LABELS_SIGNATURE: self.eval_labels,
        }

    def _raw_outputs(self, images):
        outputs = self.detector(images, training=False)
        return {
            "box_encodings": outputs["box_encodings"],
            "class_scores": tf.sigmoid(outputs["class_logits"]),
        }


def ground_truth_columns(examples: tf.Tensor) -> dict:
    """Serialized raw tf.Examples [B] -> GROUND_TRUTH_COLUMNS, each [B, M] (M: the most objects
    in the batch), class 0 for padding and for crowd/difficult objects."""
    spec = {key: tf.io.VarLenFeature(tf.float32) for key in f.BBOX_KEYS}
    spec.update(
        {key: tf.io.VarLenFeature(tf.int64) for key in (f.CLASS_LABEL, f.IS_CROWD, f.DIFFICULT)}
    )
    parsed = {
        key: tf.sparse.to_dense(value) for key, value in tf.io.parse_example(examples, spec).items()
    }
    labels = parsed[f.CLASS_LABEL]

    def flag(key):  # records without the flag: no object is ignored
        value = parsed[key]
        return tf.pad(value, [[0, 0], [0, tf.shape(labels)[1] - tf.shape(value)[1]]]) > 0

    scored = tf.logical_not(flag(f.IS_CROWD) | flag(f.DIFFICULT))
    return {
        "gt_xmin": parsed[f.BBOX_XMIN],
        "gt_ymin": parsed[f.BBOX_YMIN],
        "gt_xmax": parsed[f.BBOX_XMAX],
        "gt_ymax": parsed[f.BBOX_YMAX],
        "gt_class": tf.where(scored, labels, tf.zeros_like(labels)),
    }


def save(export: DetectorExport, path: str) -> None:
    tf.saved_model.save(export, path, signatures=export.signatures())
