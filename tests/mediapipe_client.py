"""MediaPipe Tasks' ObjectDetector, a real on-device client, run against converted models.

MediaPipe 0.10.14 needs protobuf 4 while TFX 1.16 needs protobuf 3 (shared STACK.md), so it
lives in a virtualenv of its own: `ensure_venv()` creates it once under the cache folder
($LITEDET_CACHE, else ~/.cache/litedet) and `detect()` runs this file there as a script.

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

MEDIAPIPE = "mediapipe==0.10.14"
INSTALL_TIMEOUT_S = 1200


class MediaPipeUnavailable(RuntimeError):
    """The MediaPipe virtualenv could not be created here (no registry, no wheel...)."""


def venv_dir() -> str:
    cache = os.environ.get("LITEDET_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "litedet")
    return os.path.join(cache, "mediapipe-" + MEDIAPIPE.split("==")[1] + "-venv")


def _base_python() -> str:
    # MediaPipe 0.10.14 has wheels for CPython 3.10 (this project's Python): build the virtualenv
    # from the interpreter under the project's own one.
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv() -> str:
    """The virtualenv's python, creating the virtualenv on first use (one at a time)."""
    import fcntl

    root = venv_dir()
    python = os.path.join(root, "bin", "python")
    ready = os.path.join(root, ".ready")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(ready):
            return python
        steps = [[_base_python(), "-m", "venv", "--clear", root],
                 [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  MEDIAPIPE],
                 [python, "-c", "import mediapipe.tasks.python.vision"]]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True,
                                      timeout=INSTALL_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise MediaPipeUnavailable(f"{' '.join(step[:4])}: {error}") from error
            if done.returncode:
                raise MediaPipeUnavailable(
                    f"{' '.join(step[:4])} failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()[-1500:]}")
        with open(ready, "w") as handle:
            handle.write(MEDIAPIPE + "\n")
    return python


def detect(models: List[str], image_path: str, timeout: int = 300) -> Dict[str, object]:
    """Runs MediaPipe's ObjectDetector on one image with each model; see the module docstring."""
    python = ensure_venv()
    done = subprocess.run([python, os.path.abspath(__file__), image_path, *models],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"MediaPipe client failed ({done.returncode}): "
                           f"{done.stderr.strip()[-3000:]}")
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
                running_mode=vision.RunningMode.IMAGE, score_threshold=0.0, max_results=-1)
            with vision.ObjectDetector.create_from_options(options) as detector:
                found = detector.detect(image).detections
            results[model] = [
                {"index": d.categories[0].index, "category_name": d.categories[0].category_name,
                 "score": d.categories[0].score,
                 "box": [d.bounding_box.origin_x, d.bounding_box.origin_y,
                         d.bounding_box.width, d.bounding_box.height]}
                for d in found]
        except Exception as error:  # reported per model; the caller decides
            results[model] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(results))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
