"""`litedet export`: a pushed version (or a SavedModel) in the form a runtime takes.

The targets are TARGETS below; `litedet export --help` prints them as a table.

The store's own formats are copied out, each file checked against the version's manifest. ONNX
is converted here from the version's SavedModel: its `detect_preprocessed` signature (the
detector on model-input images) followed by the same box decoding and class-agnostic NMS as the
SavedModel and the TFLite models (`select_detections` in components/detection/postprocess.py),
with the version's NMS settings (its conversion.json). The ONNX model:

  input   images             float32 [N, S, S, 3], RGB resized to S x S as the Transform does
                             (`resize_mode` in export.json: stretch, bilinear without
                             antialiasing; letterbox: aspect kept, gray padding), scaled to
                             [-1, 1] (pixel / 127.5 - 1)
  outputs detection_boxes    [N, K, 4] ymin, xmin, ymax, xmax in [0, 1] of the model input
          detection_classes  [N, K] 1-based labels (labels.txt line k is label k), 0 on padding
          detection_scores   [N, K]
          num_detections     [N]

OnnxDetector runs it on RGB images of any size, preprocessing as TFLiteDetector does.
tf2onnx, onnx and onnxruntime live in the project's virtualenv (requirements.in: these releases
install beside protobuf 3.20.3 and numpy 1.26; docs/export.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Dict, Optional

import numpy as np

from litedet.components.tflite import FORMATS as TFLITE_FORMATS

ONNX = "onnx"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
EXPORT_FILE = "export.json"
SAVED_MODEL = "saved_model"
TARGETS = {  # --format: (file, made by, runs on)
    SAVED_MODEL: ("saved_model/", "the Trainer (in the store)", "TensorFlow, TF Serving"),
    **{
        fmt: (
            f"model_{fmt}.tflite",
            "the TFLiteConverter (in the store)",
            "TFLite, MediaPipe Tasks, Task Library",
        )
        for fmt in TFLITE_FORMATS
    },
    ONNX: (ONNX_FILE, f"converted here (tf2onnx, opset {ONNX_OPSET})", "ONNX Runtime"),
}


def targets_table() -> str:
    rows = [("--format", "file", "made by", "runs on")] + [
        (name, *values) for name, values in TARGETS.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _nms_settings(model_dir: str) -> Dict:
    """The NMS settings the version was converted with (its conversion.json, beside the
    SavedModel's folder), else the project's defaults."""
    from litedet.components.detection import (
        DEFAULT_MAX_DETECTIONS,
        DEFAULT_NMS_IOU_THRESHOLD,
        DEFAULT_SCORE_THRESHOLD,
    )

    settings = {
        "max_detections": DEFAULT_MAX_DETECTIONS,
        "score_threshold": DEFAULT_SCORE_THRESHOLD,
        "iou_threshold": DEFAULT_NMS_IOU_THRESHOLD,
        "resize_mode": "stretch",
    }
    conversion = os.path.join(os.path.dirname(model_dir.rstrip("/")), "conversion.json")
    if os.path.exists(conversion):
        with open(conversion) as handle:
            recorded = json.load(handle)
        settings.update({k: recorded[k] for k in settings if k in recorded})
    return settings


def to_onnx(saved_model_dir: str, path: str, settings: Dict) -> Dict:
    """Converts the SavedModel's detector and its detection post-processing into ONNX at `path`;
    returns the model's input and outputs as export.json records them."""
    import tensorflow as tf
    import tf2onnx

    from litedet.components.detection import export, postprocess

    loaded = tf.saved_model.load(saved_model_dir)
    if export.PREPROCESSED_SIGNATURE not in loaded.signatures or not hasattr(loaded, "anchors"):
        raise ValueError(
            f"{saved_model_dir}: no {export.PREPROCESSED_SIGNATURE} signature and anchors: not "
            "a litedet detector export"
        )
    raw = loaded.signatures[export.PREPROCESSED_SIGNATURE]
    size = int(raw.structured_input_signature[1]["images"].shape[1])
    anchors = loaded.anchors.numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, "images")])
    def detect(images):
        outputs = raw(images=images)
        # The anchors as a constant of the graph (a captured tensor would become an input).
        return postprocess.select_detections(
            outputs["box_encodings"],
            outputs["class_scores"][..., 1:],
            tf.constant(anchors),
            settings["score_threshold"],
            settings["iou_threshold"],
            settings["max_detections"],
        )

    tf2onnx.logging.set_level(tf2onnx.logging.ERROR)
    tf2onnx.convert.from_function(
        detect, input_signature=detect.input_signature, opset=ONNX_OPSET, output_path=path
    )
    return {
        "input": {"name": "images", "shape": ["N", size, size, 3], "range": [-1.0, 1.0]},
        "outputs": [
            "detection_boxes",
            "detection_classes",
            "detection_scores",
            "num_detections",
        ],
        "image_size": size,
        "opset": ONNX_OPSET,
        "tf2onnx": tf2onnx.__version__,
    }


def run(model: str, fmt: str, out_dir: str) -> Dict:
    """Writes `model` (a pushed version, or a SavedModel for ONNX) in format `fmt` into
    `out_dir`, with labels.txt and export.json (what, from where, sha256, how to feed it).
    Returns export.json's content."""
    from litedet.predict import Detector

    if fmt not in TARGETS:
        raise ValueError(f"--format {fmt}: not one of {', '.join(TARGETS)}")
    # ONNX is made from the SavedModel; the others are the version's own files, checked.
    detector = Detector(model, SAVED_MODEL if fmt == ONNX else fmt)
    os.makedirs(out_dir, exist_ok=True)
    info: Dict = {"source": model, "format": fmt}
    if fmt == ONNX:
        settings = _nms_settings(detector.path)
        target = os.path.join(out_dir, ONNX_FILE)
        info.update(to_onnx(detector.path, target, settings))
        info.update(settings)
    elif fmt == SAVED_MODEL:
        target = os.path.join(out_dir, SAVED_MODEL)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(detector.path, target)
    else:
        target = os.path.join(out_dir, os.path.basename(detector.tflite_path))
        shutil.copyfile(detector.tflite_path, target)
        info["resize_mode"] = detector.resize_mode
    if detector.labels:
        with open(os.path.join(out_dir, "labels.txt"), "w") as handle:
            handle.write("".join(name + "\n" for name in detector.labels))
    info["labels"] = list(detector.labels)
    info["file"] = target
    if os.path.isfile(target):
        info["sha256"] = _sha256(target)
        info["bytes"] = os.path.getsize(target)
    with open(os.path.join(out_dir, EXPORT_FILE), "w") as handle:
        json.dump(info, handle, indent=2)
    return info


class OnnxDetector:
    """An exported ONNX detector on RGB uint8 images of any size, in ONNX Runtime: `detect`
    returns what TFLiteDetector.detect returns (boxes on the original image, 1-based classes,
    scores, count)."""

    def __init__(self, path: str, resize_mode: str = "stretch"):
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # errors only (not its opset notices)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        (model_input,) = self.session.get_inputs()
        self.image_size = int(model_input.shape[1])
        self.resize_mode = resize_mode
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, model_inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Model inputs float32 [N, S, S, 3] in [-1, 1] -> the outputs by name."""
        values = self.session.run(None, {"images": np.asarray(model_inputs, np.float32)})
        return dict(zip(self.output_names, values))

    def detect(self, image: np.ndarray, window: Optional[np.ndarray] = None) -> Dict:
        import tensorflow as tf

        from litedet.components.detection import preprocessing

        model_input, window = preprocessing.resize_to_input(
            tf.convert_to_tensor(np.asarray(image), tf.uint8), self.image_size, self.resize_mode
        )
        out = self.run(model_input.numpy()[np.newaxis])
        count = int(out["num_detections"][0])
        boxes = preprocessing.boxes_from_window(
            tf.constant(out["detection_boxes"][0]), tf.cast(window, tf.float32)
        ).numpy()
        return {
            "boxes": boxes[:count],
            "classes": out["detection_classes"][0][:count],
            "scores": out["detection_scores"][0][:count],
            "count": count,
        }
