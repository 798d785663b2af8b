"""Virtualenvs for the real clients the tests run beside the project (an MLflow server,
MediaPipe Tasks, ...): each needs packages that cannot live in the project's virtualenv
(protobuf 4+, where TFX 1.16 pins protobuf 3).

`ensure(name)` builds, once, a Python 3.10 virtualenv from `tests/requirements/<name>.txt`
under the cache folder (litedet.paths) and returns its python. A changed requirements file gets a
new virtualenv; concurrent callers wait on a lock. `python -m tests.client_venvs NAME` does the
same from the shell (the Makefile builds the MLflow one before the tests).

The virtualenvs: `mlflow` (the MLflow 2.22.5 server, 110 s to build here) and `mlflow3` (MLflow
3.17.2, 123 s) for the registry tests; `kserve` (KServe's SDK, whose InferenceService models
check k8s/examples/inferenceservice.yaml); `mediapipe`, `mediapipe-0.10.14` and `tflite-support`
for the on-device client tests. Timings: first build with a warm pip cache, on 2 cores shared
with other installs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from litedet.paths import cache_dir

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL_TIMEOUT_S = 1200


class ClientUnavailable(RuntimeError):
    """The client's virtualenv could not be built here (no registry, no wheel for this
    platform...)."""


def requirements_file(name: str) -> str:
    return os.path.join(HERE, "requirements", f"{name}.txt")


def _base_python() -> str:
    # The interpreter under the project's virtualenv: Python 3.10, which every client here has
    # wheels for. Resolved: `_base_executable` can be the project virtualenv's own symlink, and a
    # client virtualenv pointing there breaks when that checkout goes (the cache outlives it).
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def ensure(name: str, cache: Optional[str] = None) -> str:
    """The python of the `name` client's virtualenv, built on first use under `cache` (default:
    the cache folder, litedet.paths)."""
    with open(requirements_file(name), "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:12]
    root = str(Path(cache or cache_dir()) / "venvs" / f"{name}-{digest}")
    python = os.path.join(root, "bin", "python")
    ready = os.path.join(root, ".ready")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(ready) and os.path.exists(python):  # exists(): the link's target too
            return python
        shutil.rmtree(root, ignore_errors=True)
        print(f"Building the {name} client virtualenv in {root} (once) ...", file=sys.stderr)
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        for step in (
            [_base_python(), "-m", "venv", root],
            pip + ["--upgrade", "pip"],
            pip + ["-r", requirements_file(name)],
        ):
            try:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise ClientUnavailable(f"{name}: {' '.join(step[:5])}: {error}") from error
            if done.returncode:
                raise ClientUnavailable(
                    f"{name}: {' '.join(step[:5])} failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()[-1500:]}"
                )
        with open(ready, "w") as handle:
            handle.write(digest + "\n")
    return python


if __name__ == "__main__":
    print(ensure(sys.argv[1]))
