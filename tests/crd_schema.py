"""Validation of custom resources against their operators' published schemas, as the API server
applies them (`kubectl apply --validate=strict`): the Flink operator's FlinkDeployment spec
(tests/test_k8s.py) and the Training Operator's TFJob (tests/test_tfjob.py)."""

from __future__ import annotations

import functools
import pathlib

import yaml

DATA = pathlib.Path(__file__).resolve().parent / "data"
TFJOB_CRD = DATA / "training-operator" / "kubeflow.org_tfjobs.yaml"


def strict(schema):
    """An OpenAPI schema where, as `kubectl apply --validate=strict` treats it, an object with
    declared properties takes no others (unless it says it keeps unknown fields)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        tightened.setdefault("additionalProperties", False)
    return tightened


@functools.cache
def crd_validator(path: pathlib.Path, version: str):
    """A jsonschema validator of the strict openAPIV3Schema of `version` in a CRD file."""
    import jsonschema

    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict(served["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def custom_object_problems(document: dict, path: pathlib.Path = TFJOB_CRD) -> list:
    """What the API server would refuse in `document` (a custom object of the CRD at `path`):
    its schema errors, and its metadata checked as Kubernetes' ObjectMeta (the CRD leaves
    `metadata` open: the API server validates it itself)."""
    import kubernetes_validate

    version = document.get("apiVersion", "").split("/")[-1]
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in crd_validator(path, version).iter_errors(document)
    ]
    holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": document.get("metadata", {})}
    try:
        kubernetes_validate.validate(holder, "1.32.0", strict=True)
    except kubernetes_validate.ValidationError as error:
        problems.append(f"metadata: {error.message}")
    return problems
