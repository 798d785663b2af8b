"""Real MLflow tracking servers on loopback for the registry tests: MLflow 2.22.5 (the `mlflow`
client virtualenv; tests/conftest.py starts one per session) and MLflow 3.17.2 (`mlflow3`;
tests/test_pusher.py runs the registry tests against both). SQLite backend, artifacts proxied by
the server (--serve-artifacts, the default) into a temporary folder. Each runs from its own
Python 3.10 virtualenv (tests/client_venvs.py builds it once, about two minutes): the MLflow
server's dependencies (protobuf 4+) clash with the pinned TFX stack. The project's own client is
mlflow-skinny from requirements.lock."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time

import requests

from tests import client_venvs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def closed_port():
    """A loopback port nobody listens on (free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(root, venv="mlflow"):
    """Yields {"url", "python", "root", "version"} of a server whose state lives under `root`,
    from the client virtualenv `venv` (tests/requirements/<venv>.txt)."""
    python = client_venvs.ensure(venv)
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    log_path = os.path.join(root, "server.log")
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [
                python,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{root}/mlflow.db",
                "--artifacts-destination",
                os.path.join(root, "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
        )
    try:
        # MLflow 3.17.2 took 50-66 s to come up here (2 cores), more on a busy machine.
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or workers still booting
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                with open(log_path) as log:
                    raise RuntimeError(f"mlflow server did not come up:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        version = subprocess.run(
            [python, "-c", "import mlflow; print(mlflow.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        yield {"url": url, "python": python, "root": root, "version": version}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its gunicorn workers
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def read_back(server, name, version):
    """The version as MLflow's own client sees it (run in the MLflow virtualenv)."""
    script = os.path.join(REPO, "tests", "mlflow_read_version.py")
    result = subprocess.run(
        [server["python"], script, server["url"], name, str(version)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def registered_versions(server, name):
    """Version numbers the registry holds for `name` (its REST API), [] when none."""
    response = requests.get(
        server["url"] + "/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{name}'"},
        timeout=10,
    )
    response.raise_for_status()
    return sorted(int(v["version"]) for v in response.json().get("model_versions", []))
