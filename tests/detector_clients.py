"""The on-device detector clients a pushed model must run in, as their users run them:
MediaPipe Tasks' ObjectDetector (the current release and the oldest release the project claims)
and the TFLite Task Library's ObjectDetector (tflite-support). docs/clients.md says what each
does to an image and to the model's outputs.

Each needs packages that cannot live in the project's virtualenv (MediaPipe: protobuf 4 or none;
the Task Library's Task API clashes with TensorFlow's pybind types and wants numpy < 2), so each
runs in a virtualenv of its own (tests/client_venvs.py, from tests/requirements/<name>.txt), and
`detect()` runs this file there as a script: one process per client, over every model and image.

As a script (inside that virtualenv): `python detector_clients.py CLIENT REQUEST OUTPUT` with
REQUEST a JSON file {"models": [...], "images": [...]}; writes OUTPUT, a JSON object
{"client": CLIENT, "version": "...", "models": {model: [per image: [detection, ...]]}} where a
detection is {"category_name", "index" (or null), "score", "box": [x, y, width, height] in pixels}
with one detection per category (MediaPipe 0.10.20+ folds the categories of identical boxes into
one detection: they are unfolded here). Before each image it writes "MODEL_INDEX IMAGE_INDEX" to
stderr, so that a client that kills the process (a segmentation fault) is caught in the act.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

# Client name -> its requirements file (tests/requirements/<name>.txt), which pins its version.
MEDIAPIPE = "mediapipe"  # the current MediaPipe release
MEDIAPIPE_OLDEST = "mediapipe-0.10.14"  # the oldest release docs/clients.md claims
TASK_LIBRARY = "tflite-support"  # the TFLite Task Library
CLIENTS = (MEDIAPIPE, MEDIAPIPE_OLDEST, TASK_LIBRARY)
# What each is called in reports, before the version it reports.
TITLES = {
    MEDIAPIPE: "MediaPipe Tasks",
    MEDIAPIPE_OLDEST: "MediaPipe Tasks",
    TASK_LIBRARY: "TFLite Task Library, tflite-support",
}


class ClientCrashed(RuntimeError):
    """The client process died or failed; the message says on which model and image."""


def detect(
    client: str,
    models: List[str],
    images: List[str],
    cache: Optional[str] = None,
    timeout: int = 900,
) -> Dict[str, object]:
    """Runs `client` over every image with every model; see the module docstring. Its
    virtualenv lives under `cache` (client_venvs.ensure). Raises client_venvs.ClientUnavailable
    when that virtualenv cannot be built here, ClientCrashed when the process dies (the model and
    image it was on are in the message)."""
    from tests import client_venvs  # not at the top: this file also runs inside those venvs

    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; choose from {', '.join(CLIENTS)}")
    python = client_venvs.ensure(client, cache)
    with tempfile.TemporaryDirectory() as scratch:
        request = os.path.join(scratch, "request.json")
        output = os.path.join(scratch, "output.json")
        with open(request, "w") as handle:
            json.dump({"models": list(models), "images": list(images)}, handle)
        done = subprocess.run(
            [python, os.path.abspath(__file__), client, request, output],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode or not os.path.exists(output):
            raise ClientCrashed(_crash_report(client, done, models, images))
        with open(output) as handle:
            return json.load(handle)


def to_detections(per_image, labels: List[str], sizes) -> List[Dict[str, object]]:
    """One model's client output -> the project's detections per image (components/evaluation/
    coco.py): boxes (ymin, xmin, ymax, xmax) normalized to each image's (height, width) in
    `sizes`, 1-based classes (line k of labels.txt is label k + 1, found by category name: the
    one field every client and version fills), scores."""
    import numpy as np

    label_of = {name: k + 1 for k, name in enumerate(labels)}
    out = []
    for found, (height, width) in zip(per_image, sizes):
        unknown = {d["category_name"] for d in found} - set(label_of)
        if unknown:
            raise ValueError(f"categories {sorted(unknown)} are not in labels.txt {labels}")
        out.append(
            {
                "boxes": _normalized([d["box"] for d in found], height, width),
                "classes": np.array([label_of[d["category_name"]] for d in found], np.float32),
                "scores": np.array([d["score"] for d in found], np.float32),
            }
        )
    return out


def _mediapipe_pixels(box, height: int, width: int) -> List[int]:
    """MediaPipe Tasks' pixel box from a normalized (ymin, xmin, ymax, xmax): origin and size
    each truncated to whole pixels and clamped to [0, side] (docs/clients.md)."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)

    def clamp(value: int, side: int) -> int:
        return min(max(value, 0), side)

    return [
        clamp(int(xmin * width), width),
        clamp(int(ymin * height), height),
        clamp(int((xmax - xmin) * width), width),
        clamp(int((ymax - ymin) * height), height),
    ]


def _task_library_pixels(box, height: int, width: int) -> List[int]:
    """The TFLite Task Library's pixel box: origin truncated, size rounded half away from zero,
    not clipped (docs/clients.md)."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)

    def rounded(value: float) -> int:
        return int(value + 0.5) if value >= 0 else -int(-value + 0.5)

    return [
        int(xmin * width),
        int(ymin * height),
        rounded((xmax - xmin) * width),
        rounded((ymax - ymin) * height),
    ]


# Client -> how it turns the model's normalized box into the whole pixels it reports.
PIXEL_BOXES = {
    MEDIAPIPE: _mediapipe_pixels,
    MEDIAPIPE_OLDEST: _mediapipe_pixels,
    TASK_LIBRARY: _task_library_pixels,
}


def in_client_pixels(client: str, found, sizes) -> List[Dict[str, object]]:
    """Detections (the interpreter's, normalized) with each box made whole pixels the way
    `client` makes them, then normalized again as `to_detections` reads a client's output: what
    the client would score if its only difference were its pixel boxes."""
    pixels = PIXEL_BOXES[client]
    out = []
    for detections, (height, width) in zip(found, sizes):
        boxes = [pixels(b, height, width) for b in detections["boxes"]]
        out.append({**detections, "boxes": _normalized(boxes, height, width)})
    return out


def _normalized(pixel_boxes, height: int, width: int):
    """[x, y, width, height] pixel boxes -> (ymin, xmin, ymax, xmax) normalized, float32 [N, 4]."""
    import numpy as np

    return np.array(
        [[y / height, x / width, (y + h) / height, (x + w) / width] for x, y, w, h in pixel_boxes],
        np.float32,
    ).reshape(-1, 4)


def _crash_report(client, done, models, images) -> str:
    lines = done.stderr.strip().splitlines()
    where = [line for line in lines if line.startswith("@ ")]
    place = ""
    if where:
        model_index, image_index = (int(v) for v in where[-1][2:].split())
        place = f" on model {models[model_index]} image {images[image_index]}"
    signal = f" (signal {-done.returncode})" if done.returncode < 0 else ""
    noise = "\n".join(line for line in lines if not line.startswith("@ "))
    return f"{client} exited with {done.returncode}{signal}{place}:\n{noise[-3000:]}"


# --- Inside the client's virtualenv -----------------------------------------------------------


def _progress(model_index: int, image_index: int) -> None:
    sys.stderr.write(f"@ {model_index} {image_index}\n")
    sys.stderr.flush()


def _mediapipe(models: List[str], images: List[str]):
    import mediapipe as mp
    from mediapipe.tasks import python as mp_python
    from mediapipe.tasks.python import vision

    loaded = [mp.Image.create_from_file(path) for path in images]
    results = {}
    for m, model in enumerate(models):
        options = vision.ObjectDetectorOptions(
            base_options=mp_python.BaseOptions(model_asset_path=model),
            running_mode=vision.RunningMode.IMAGE,
            # Everything the model returns (it thresholds at its own nms_score_threshold).
            score_threshold=0.0,
            max_results=-1,
        )
        per_image = []
        with vision.ObjectDetector.create_from_options(options) as detector:
            for i, image in enumerate(loaded):
                _progress(m, i)
                per_image.append(_rows(detector.detect(image).detections))
        results[model] = per_image
    return mp.__version__, results


def _rows(detections) -> List[dict]:
    """One row per (detection, category): both clients' results share this shape (pixel box
    origin and size)."""
    return [
        {
            "category_name": c.category_name,
            "index": c.index,
            "score": float(c.score),
            "box": [
                d.bounding_box.origin_x,
                d.bounding_box.origin_y,
                d.bounding_box.width,
                d.bounding_box.height,
            ],
        }
        for d in detections
        for c in d.categories
    ]


def _task_library(models: List[str], images: List[str]):
    from importlib import metadata

    from tflite_support.task import core, processor, vision

    loaded = [vision.TensorImage.create_from_file(path) for path in images]
    results = {}
    for m, model in enumerate(models):
        options = vision.ObjectDetectorOptions(
            base_options=core.BaseOptions(file_name=model, num_threads=1),
            detection_options=processor.DetectionOptions(max_results=-1, score_threshold=0.0),
        )
        detector = vision.ObjectDetector.create_from_options(options)
        per_image = []
        for i, image in enumerate(loaded):
            _progress(m, i)
            per_image.append(_rows(detector.detect(image).detections))
        results[model] = per_image
    return metadata.version("tflite-support"), results


def _main(client: str, request_path: str, output_path: str) -> None:
    import faulthandler

    faulthandler.enable()  # a segmentation fault prints the Python stack before the process dies
    with open(request_path) as handle:
        request = json.load(handle)
    run = _task_library if client == TASK_LIBRARY else _mediapipe
    version, results = run(request["models"], request["images"])
    with open(output_path, "w") as handle:
        json.dump({"client": client, "version": version, "models": results}, handle)


if __name__ == "__main__":
    _main(*sys.argv[1:4])
