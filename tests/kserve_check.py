"""Checks KServe InferenceService manifests against KServe's own API models (run in the `kserve`
client virtualenv, tests/client_venvs.py; tests/test_inferenceservice.py calls it).

The models are the ones KServe's Python SDK generates from the InferenceService CRD's OpenAPI
schema (`kserve.models.V1beta1InferenceService` and the Kubernetes types it embeds, from the
`kubernetes` client): every field of the manifest must be one the model declares (by its JSON
name), with the declared type. Prints JSON {"path": [problems]}.

    python kserve_check.py MANIFEST.yaml...
"""

import json
import re
import sys

import kubernetes.client.models as k8s_models
import yaml
from kserve import models as kserve_models


def model_class(name):
    return getattr(kserve_models, name, None) or getattr(k8s_models, name)


def check(value, type_name, where, problems):
    # Both spellings of the generators: list[X] / dict(str, X) (kserve) and List[X] /
    # Dict[str, X] (the kubernetes client).
    listed = re.fullmatch(r"(?:list|List)\[(.*)\]", type_name)
    mapped = re.fullmatch(r"(?:dict\(str, (.*)\)|Dict\[str, (.*)\])", type_name)
    if listed:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            check(item, listed.group(1), f"{where}[{i}]", problems)
        return
    if mapped:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map")
            return
        inner = mapped.group(1) or mapped.group(2)
        for key, item in value.items():
            check(item, inner, f"{where}.{key}", problems)
        return
    natives = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}
    if type_name in natives:
        if not isinstance(value, natives[type_name]) or (
            type_name != "bool" and isinstance(value, bool)
        ):
            problems.append(f"{where}: expected {type_name}, got {value!r}")
        return
    if type_name in ("object", "Object"):
        return
    model = model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object ({type_name})")
        return
    by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json_name:
            problems.append(f"{where}: unknown field {key!r} in {type_name}")
            continue
        check(item, model.openapi_types[by_json_name[key]], f"{where}.{key}", problems)


def main(paths):
    report = {}
    for path in paths:
        problems = []
        with open(path) as f:
            for number, document in enumerate(yaml.safe_load_all(f)):
                if document is None:
                    continue
                if document.get("kind") != "InferenceService":
                    problems.append(f"document {number}: kind {document.get('kind')!r}")
                    continue
                if document.get("apiVersion") != "serving.kserve.io/v1beta1":
                    problems.append(f"document {number}: apiVersion {document.get('apiVersion')}")
                check(document, "V1beta1InferenceService", f"document {number}", problems)
        report[path] = problems
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
