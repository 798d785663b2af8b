"""MediaPipe Tasks' ObjectDetector, a real on-device client, run against converted models.

MediaPipe 0.10.14 needs protobuf 4 while TFX 1.16 needs protobuf 3 (docs/toolchain.md), so it
lives in a virtualenv of its own (tests/client_venvs.py) and `detect()` runs this file there as a
script.

As a script (inside that virtualenv): `python mediapipe_client.py IMAGE MODEL [MODEL ...]` prints
one JSON object {model: [detections]}, each detection {"index", "category_name", "score", "box":
[origin_x, origin_y, width, height] in pixels}, or {model: {"error": "..."}}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List

MEDIAPIPE = "mediapipe"  # tests/requirements/mediapipe.txt pins the version


def detect(models: List[str], image_path: str, timeout: int = 300) -> Dict[str, object]:
    """Runs MediaPipe's ObjectDetector on one image with each model; see the module docstring."""
    from tests import client_venvs  # not at the top: this file also runs inside that venv

    python = client_venvs.ensure(MEDIAPIPE)
    done = subprocess.run(
        [python, os.path.abspath(__file__), image_path, *models],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise RuntimeError(
            f"MediaPipe client failed ({done.returncode}): {done.stderr.strip()[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _main(image_path: str, models: List[str]) -> None:
    import mediapipe as mp
    from mediapipe.tasks import python as mp_python
    from mediapipe.tasks.python import vision

    image = mp.Image.create_from_file(image_path)
    results = {}
    for model in models:
        try:
            options = vision.ObjectDetectorOptions(
                base_options=mp_python.BaseOptions(model_asset_path=model),
                running_mode=vision.RunningMode.IMAGE,
                score_threshold=0.0,
                max_results=-1,
            )
            with vision.ObjectDetector.create_from_options(options) as detector:
                found = detector.detect(image).detections
            results[model] = [
                {
                    "index": d.categories[0].index,
                    "category_name": d.categories[0].category_name,
                    "score": d.categories[0].score,
                    "box": [
                        d.bounding_box.origin_x,
                        d.bounding_box.origin_y,
                        d.bounding_box.width,
                        d.bounding_box.height,
                    ],
                }
                for d in found
            ]
        except Exception as error:  # reported per model; the caller decides
            results[model] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(results))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
