"""`litedet predict`: a trained detector on images -> JSON detections and pictures with boxes.

A model is any of:
- a pushed version folder (it has `manifest.json`): its shipped TFLite format, or `--format`; a
  model store folder means its latest version;
- a `.tflite` file from the TFLite step (labels from its metadata; resize mode from the
  `conversion.json` beside it);
- a SavedModel folder (the Trainer's `Format-Serving`, or a pushed `saved_model/`): its
  `serving_default`, which decodes and resizes inside; labels from a `labels.txt` beside it.
Boxes are (ymin, xmin, ymax, xmax) normalized to the image, as everywhere in the project; the JSON
adds pixel corners for convenience.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from litedet.components.report.render import draw

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PREDICTIONS_FILE = "predictions.json"
SAVED_MODEL = "saved_model"  # --format of a pushed version's SavedModel


class Detector:
    """A loaded model: `detect(encoded_bytes, rgb)` -> {"boxes", "classes", "scores"} (numpy,
    valid rows only, 1-based labels) and `labels` (names of labels 1..C)."""

    def __init__(self, model_path: str, tflite_format: Optional[str] = None):
        self.path = model_path
        self.labels: List[str] = []
        self.module = None  # the loaded SavedModel, when the model is one
        self.resize_mode = "stretch"  # a TFLite file's, from the conversion.json beside it
        self._tflite = None
        self._serve = None
        self._workdir = None
        if (
            "://" in model_path
            or os.path.isfile(os.path.join(model_path, "manifest.json"))
            or _is_store(model_path)
        ):
            model_path = self._from_store(model_path, tflite_format)
        elif tflite_format == SAVED_MODEL and model_path.endswith(".tflite"):
            raise FileNotFoundError(f"{model_path}: a TFLite file, not a SavedModel")
        elif tflite_format and tflite_format != SAVED_MODEL:
            raise FileNotFoundError(
                f"{model_path}: --format picks a file of a pushed version; this is not one"
            )
        if model_path.endswith(".tflite"):
            self._load_tflite(model_path)
        elif os.path.isfile(os.path.join(model_path, "saved_model.pb")):
            self._load_saved_model(model_path)
        elif os.path.isfile(os.path.join(model_path, "Format-Serving", "saved_model.pb")):
            self._load_saved_model(os.path.join(model_path, "Format-Serving"))
        else:
            raise FileNotFoundError(
                f"{model_path}: not a .tflite file, a SavedModel or a pushed version folder"
            )
        self.path = model_path

    @property
    def kind(self) -> str:
        """ "tflite" or SAVED_MODEL."""
        return "tflite" if self._tflite is not None else SAVED_MODEL

    @property
    def tflite_path(self) -> Optional[str]:
        return self._tflite.path if self._tflite is not None else None

    def _from_store(self, uri: str, tflite_format: Optional[str]) -> str:
        """A pushed version (a folder, s3:// or gs://): the chosen format's files (a TFLite
        file, or with SAVED_MODEL its SavedModel), checked against the manifest's sha256s (copied
        here first from an object store)."""
        import tempfile

        from litedet.components import object_storage as storage
        from litedet.components.pusher import store

        if storage.uses_s3(uri):
            storage.configure()
        if not store.is_version(uri):
            newest = store.latest(uri) if store.filesystem(uri).isdir(uri) else None
            if newest is None:
                raise FileNotFoundError(
                    f"{uri}: no manifest.json, so not a pushed version (nor a store holding one)"
                )
            uri = newest[1]  # a store: its latest version
        manifest = store.read_manifest(uri)
        files = manifest.get("files", {})
        fmt = tflite_format or manifest.get("ship_format") or "float32"
        if fmt == SAVED_MODEL:
            prefix = store.SAVED_MODEL_DIR + "/"
            name = prefix + "saved_model.pb"
            names = [n for n in files if n.startswith(prefix)]
        else:
            name = f"model_{fmt}.tflite"
            names = [name]
        if name not in files:
            raise FileNotFoundError(
                f"{uri}: this version has no {fmt} model (files: "
                f"{', '.join(sorted(n for n in files if '/' not in n))})"
            )
        self._workdir = tempfile.mkdtemp(prefix="litedet-predict-")
        names += [n for n in ("conversion.json", "labels.txt") if n in files]
        path = store.verified_files(uri, names, self._workdir)[name]
        return os.path.dirname(path) if fmt == SAVED_MODEL else path

    def _load_tflite(self, path: str) -> None:
        from litedet.components.tflite import converter
        from litedet.components.tflite.interpreter import TFLiteDetector

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such model file")
        conversion = os.path.join(os.path.dirname(path), "conversion.json")
        if os.path.exists(conversion):
            with open(conversion) as f:
                self.resize_mode = json.load(f).get("resize_mode", self.resize_mode)
        self._tflite = TFLiteDetector(
            path, num_threads=os.cpu_count() or 1, resize_mode=self.resize_mode
        )
        self.labels = converter.read_metadata(path).get("labels") or []

    def _load_saved_model(self, path: str) -> None:
        import tensorflow as tf

        self.module = tf.saved_model.load(path)
        self._serve = self.module.signatures["serving_default"]
        for candidate in (
            os.path.join(path, "labels.txt"),
            os.path.join(os.path.dirname(path.rstrip("/")), "labels.txt"),
        ):
            if os.path.exists(candidate):
                with open(candidate) as f:
                    self.labels = f.read().splitlines()
                break

    def label_name(self, label: int) -> str:
        return self.labels[label - 1] if 0 < label <= len(self.labels) else f"class_{label}"

    def detect(self, encoded: bytes, rgb: np.ndarray) -> Dict[str, np.ndarray]:
        if self._tflite is not None:
            out = self._tflite.detect(rgb)
            count = out["count"]
            return {
                "boxes": out["boxes"][:count],
                "classes": out["classes"][:count],
                "scores": out["scores"][:count],
            }
        import tensorflow as tf

        out = self._serve(image_bytes=tf.constant([encoded]))
        count = int(out["num_detections"][0])
        return {
            "boxes": out["detection_boxes"][0, :count].numpy(),
            "classes": out["detection_classes"][0, :count].numpy(),
            "scores": out["detection_scores"][0, :count].numpy(),
        }


def _is_store(path: str) -> bool:
    """A local model store folder holding at least one complete version."""
    from litedet.components.pusher import store

    return os.path.isdir(path) and bool(store.list_versions(path))


def new_folder(parent: str) -> str:
    """A new folder `<parent>/<n>` (1, 2, 3 ...: one more than the highest there), created
    here, so that no call writes into an earlier call's results, even two at once."""
    os.makedirs(parent, exist_ok=True)
    taken = [int(n) for n in os.listdir(parent) if n.isdigit()]
    number = max(taken, default=0) + 1
    while True:
        path = os.path.join(parent, str(number))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            number += 1


def image_files(sources: Sequence[str]) -> List[str]:
    """The image files named, or found (not recursively) in the folders named."""
    files = []
    for source in sources:
        if os.path.isdir(source):
            files += sorted(
                os.path.join(source, n)
                for n in os.listdir(source)
                if n.lower().endswith(IMAGE_SUFFIXES)
            )
        elif os.path.isfile(source):
            files.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such image or folder")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(sources)}")
    return files


def predict_image(detector: Detector, path: str, threshold: float) -> dict:
    from PIL import Image

    with open(path, "rb") as f:
        encoded = f.read()
    image = Image.open(path)
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    found = detector.detect(encoded, rgb)
    detections = []
    for box, label, score in zip(found["boxes"], found["classes"], found["scores"]):
        if score < threshold or int(label) < 1:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        detections.append(
            {
                "label": int(label),
                "name": detector.label_name(int(label)),
                "score": round(float(score), 4),
                "box": [round(v, 5) for v in (ymin, xmin, ymax, xmax)],
                "box_px": [
                    round(xmin * width, 1),
                    round(ymin * height, 1),
                    round(xmax * width, 1),
                    round(ymax * height, 1),
                ],
            }
        )
    return {
        "image": path,
        "width": width,
        "height": height,
        "detections": detections,
        "_image": image,
    }


def run(
    model: str,
    sources: Sequence[str],
    out_dir: str,
    threshold: float = 0.3,
    tflite_format: Optional[str] = None,
    draw_images: bool = True,
    numbered: bool = False,
) -> Tuple[str, List[dict]]:
    """Detects on every image; writes `predictions.json` and, with `draw_images`, `<image
    name>.jpg` with the boxes drawn into `out_dir`, or with `numbered` into a new folder
    `<out_dir>/<n>` (new_folder, made once the model and the images are found). Returns (the
    folder written, the per-image results)."""
    detector = Detector(model, tflite_format)
    files = image_files(sources)
    if numbered:
        out_dir = new_folder(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for path in files:
        result = predict_image(detector, path, threshold)
        image = result.pop("_image")
        if draw_images:
            stem = os.path.splitext(os.path.basename(path))[0]
            result["drawn"] = os.path.join(out_dir, f"{stem}.jpg")
            draw(image, result["detections"]).save(result["drawn"], quality=92)
        results.append(result)
    with open(os.path.join(out_dir, PREDICTIONS_FILE), "w") as f:
        json.dump({"model": detector.path, "threshold": threshold, "images": results}, f, indent=2)
    return out_dir, results
