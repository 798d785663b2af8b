"""Reads a registered model version back with MLflow's own client (run in the MLflow virtualenv,
see mlflow_venv.sh): prints JSON with the version's source, run id, tags and status, the run's
params and metrics, and the sha256 of every file MLflow downloads for `models:/<name>/<version>`.

    python mlflow_read_version.py TRACKING_URI MODEL_NAME VERSION
"""

import hashlib
import json
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient


def main(tracking_uri: str, name: str, version: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=tmp
        )
        for folder, _, names in os.walk(root):
            for file_name in names:
                path = os.path.join(folder, file_name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    print(
        json.dumps(
            {
                "name": mv.name,
                "version": mv.version,
                "source": mv.source,
                "run_id": mv.run_id,
                "status": mv.status,
                "tags": dict(mv.tags),
                "run_status": run.info.status,
                "artifact_uri": run.info.artifact_uri,
                "params": dict(run.data.params),
                "metrics": dict(run.data.metrics),
                "run_tags": {k: v for k, v in run.data.tags.items() if k.startswith("litedet.")},
                "files": files,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
