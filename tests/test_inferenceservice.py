"""k8s/examples/inferenceservice.yaml: a KServe InferenceService that serves a pushed version's
SavedModel, checked against KServe's own InferenceService API models (the `kserve` SDK's models,
generated from the CRD's OpenAPI schema, in their own virtualenv: tests/kserve_check.py), and
against what the pusher and the registries say the server artifact is.

No cluster here: nothing is applied or served.
"""

import json
import os
import subprocess

import yaml

from litedet.components.pusher import registry as registry_lib
from litedet.components.pusher import store
from tests import client_venvs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "k8s", "examples", "inferenceservice.yaml")
CHECKER = os.path.join(REPO, "tests", "kserve_check.py")


def kserve_check(*paths):
    python = client_venvs.ensure("kserve")
    result = subprocess.run([python, CHECKER, *paths], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_example_matches_kserves_inferenceservice_models(tmp_path):
    with open(EXAMPLE) as f:
        example = yaml.safe_load(f)
    broken = json.loads(json.dumps(example))
    model = broken["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")  # a typo KServe would drop silently
    model["modelFormat"]["version"] = 2  # a number where the API wants a string
    broken_path = tmp_path / "broken.yaml"
    broken_path.write_text(yaml.safe_dump(broken))

    report = kserve_check(EXAMPLE, str(broken_path))

    assert report[EXAMPLE] == []
    problems = report[str(broken_path)]
    assert len(problems) == 2, problems
    assert "unknown field 'storageURI' in V1beta1ModelSpec" in problems[0] + problems[1]
    assert "modelFormat.version: expected str, got 2" in problems[0] + problems[1]


def test_the_example_serves_the_savedmodel_the_registries_name():
    """The storage URI is a store version's TensorFlow Serving folder (what the Kubeflow Model
    Registry's server artifact and MLflow's `litedet.artifact.serving` tag point at), served by
    the TensorFlow runtime; a TFLite file is never the storage URI."""
    with open(EXAMPLE) as f:
        example = yaml.safe_load(f)
    model = example["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "tensorflow", "version": "2"}
    uri = model["storageUri"]
    root, version, folder = uri.rsplit("/", 2)
    assert folder == store.SERVING_DIR == registry_lib.SERVING_DIR
    assert version.isdigit() and root.startswith("s3://")
    assert not uri.endswith(".tflite")
    (server,) = [
        a
        for a in registry_lib.model_artifacts(
            {"files": {f"{store.SERVING_DIR}/1/saved_model.pb": {"bytes": 1}}}
        )
        if a["role"] == "server"
    ]
    assert (server["path"], server["format"]) == (folder, model["modelFormat"]["name"])
    # TensorFlow Serving at least as new as the TensorFlow that exports the model (2.16).
    major, minor = (int(part) for part in model["runtimeVersion"].split(".")[:2])
    assert (major, minor) >= (2, 16)
    # The pod runs restricted: no root, no privilege escalation, no capabilities.
    context = model["securityContext"]
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
