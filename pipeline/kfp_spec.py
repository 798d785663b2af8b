"""TFX's compiled PipelineSpec, made executable by the open-source Kubeflow Pipelines backend.

TFX 1.16's Kubeflow V2 compiler writes for Vertex AI Pipelines. The open-source KFP v2 backend
(kubeflow/pipelines, backend/src/v2: its Argo compiler, driver and launcher) runs a narrower
dialect. `adapt` rewrites the compiled spec into it; `problems` lists everything in a spec that
the backend would refuse or run wrongly, and is the conformance check `litedet compile` runs and
the tests hold every compiled spec to. docs/kubeflow.md lists each point with its source.

What `adapt` changes:
- The container command: TFX's entrypoint, on the open-source backend, gets input artifacts
  without a type (the driver leaves their schema empty) and an extra `executor-logs` output; it
  crashes on both. Our entrypoint (kfp_entrypoint.py) mends the executor input, then runs TFX's.
- Task-output parameters: TFX names the producer `<node id>_task`; the tasks are named `<node
  id>`.
- Caching: the tasks whose result depends on state outside their inputs (the dataset's files,
  the model store) are never cached (KFP caches a task only when its spec asks for it).
- Each step's environment (object-store endpoint), Kubernetes Secrets as environment variables,
  the Trainer's accelerator, node selector and tolerations: the spec's `env` and `resources` and
  a PlatformSpec (the second YAML document of a KFP pipeline package).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

ENTRYPOINT = ["python", "-m", "litedet.pipeline.kfp_entrypoint"]
TFX_ENTRYPOINT_MODULE = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
SCHEMA_VERSION = "2.1.0"
# Argo's DAG task and template names (workflow field names), which KFP takes from task names
# unchanged; the driver adds "-driver".
TASK_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
MAX_TASK_NAME = 128 - len("-driver")
# The KFP API server's pipeline names (what TFX requires too).
PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
# Executor kinds the backend runs (compiler/visitor.go); "resolver" is refused at run creation.
EXECUTABLE_KINDS = ("container", "importer")
# Set on a step that asked for an accelerator (its Kubernetes resource name): the step's
# entrypoint fails at once when TensorFlow sees no such device (pipeline/kfp_entrypoint.py).
ACCELERATOR_ENV = "LITEDET_REQUIRED_ACCELERATOR"
# A Kubernetes extended resource name, as the driver puts the accelerator type in the pod.
RESOURCE_NAME = re.compile(r"^[a-z0-9.-]+/[a-z0-9.-]+$")


def _executor_kind(executor: Mapping[str, Any]) -> str:
    return next(iter(executor), "(empty)")


def _tasks(spec: Mapping[str, Any]) -> Dict[str, Any]:
    return spec.get("root", {}).get("dag", {}).get("tasks", {})


def _executor_label(spec: Mapping[str, Any], task: Mapping[str, Any]) -> Optional[str]:
    component = spec.get("components", {}).get(task.get("componentRef", {}).get("name", ""), {})
    return component.get("executorLabel")


def adapt(
    spec: Dict[str, Any],
    *,
    not_cached: Iterable[str] = (),
    env: Optional[Mapping[str, str]] = None,
    secret_env: Optional[Mapping[str, str]] = None,
    step_secret_env: Optional[Mapping[str, Mapping[str, str]]] = None,
    placement: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Returns (the adapted PipelineSpec, the PlatformSpec or None).

    `not_cached`: task names never served from KFP's cache. `env`: plain environment variables
    for every step. `secret_env`: {ENV_VAR: "secret-name/key"} for every step.
    `step_secret_env`: {task name: {ENV_VAR: "secret-name/key"}}, merged over `secret_env` for
    that task only (e.g. the pusher's store-writer credential). `placement`:
    {task name: {"accelerator": "nvidia.com/gpu", "accelerator_count": 1, "node_selector":
    {...}, "tolerations": [...]}}.
    """
    spec = copy.deepcopy(spec)
    tasks = _tasks(spec)
    for task in tasks.values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            source = parameter.get("taskOutputParameter")
            if source and source["producerTask"] not in tasks:
                base = source["producerTask"].removesuffix("_task")
                if base in tasks:
                    source["producerTask"] = base
    for name in not_cached:
        if name in tasks:
            tasks[name].pop("cachingOptions", None)
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    for executor in executors.values():
        container = executor.get("container")
        if container is None:
            continue
        if container.get("command", [])[-1:] == [TFX_ENTRYPOINT_MODULE]:
            container["command"] = list(ENTRYPOINT)
        if env:
            merged = {item["name"]: item["value"] for item in container.get("env", [])}
            merged.update(env)
            container["env"] = [{"name": k, "value": v} for k, v in sorted(merged.items())]
    platform_executors: Dict[str, Dict[str, Any]] = {}
    per_label: Dict[str, Dict[str, str]] = {}
    for task_name, variables in (step_secret_env or {}).items():
        label = _executor_label(spec, tasks.get(task_name, {}))
        if label is None or "container" not in executors.get(label, {}):
            raise ValueError(f"step_secret_env for {task_name!r}: no such container task")
        per_label[label] = dict(variables)
    for label, executor in executors.items():
        variables = {**(secret_env or {}), **per_label.get(label, {})}
        if "container" not in executor or not variables:
            continue
        secrets: Dict[str, List[Dict[str, str]]] = {}
        for variable, reference in sorted(variables.items()):
            secret, key = reference.split("/", 1)
            secrets.setdefault(secret, []).append({"secretKey": key, "envVar": variable})
        platform_executors.setdefault(label, {})["secretAsEnv"] = [
            {
                "secretName": secret,
                "secretNameParameter": {"runtimeValue": {"constant": secret}},
                "keyToEnv": keys,
            }
            for secret, keys in sorted(secrets.items())
        ]
    for task_name, where in (placement or {}).items():
        label = _executor_label(spec, tasks.get(task_name, {}))
        if label is None or "container" not in executors.get(label, {}):
            raise ValueError(f"placement for {task_name!r}: no such container task")
        if where.get("accelerator"):
            container = executors[label]["container"]
            # The step itself checks that TensorFlow sees the device it was placed for
            # (kfp_entrypoint.require_accelerator): a pod on a GPU node with a CPU-only image, or
            # without the device plugin's libraries, would otherwise train on the CPU unnoticed.
            merged = {item["name"]: item["value"] for item in container.get("env", [])}
            merged[ACCELERATOR_ENV] = where["accelerator"]
            container["env"] = [{"name": k, "value": v} for k, v in sorted(merged.items())]
            resources = container.setdefault("resources", {})
            resources["accelerator"] = {
                "type": where["accelerator"],
                "count": str(int(where.get("accelerator_count") or 1)),
                "resourceType": where["accelerator"],
                "resourceCount": str(int(where.get("accelerator_count") or 1)),
            }
        if where.get("node_selector"):
            platform_executors.setdefault(label, {})["nodeSelector"] = {
                "labels": dict(where["node_selector"])
            }
        if where.get("tolerations"):
            platform_executors.setdefault(label, {})["tolerations"] = [
                dict(t) for t in where["tolerations"]
            ]
    platform = (
        {"platforms": {"kubernetes": {"deploymentSpec": {"executors": platform_executors}}}}
        if platform_executors
        else None
    )
    return spec, platform


def problems(spec: Mapping[str, Any], platform: Optional[Mapping[str, Any]] = None) -> List[str]:
    """What the open-source KFP v2 backend would refuse or run wrongly in this spec; empty when
    it conforms. Each entry names the task or executor and the backend's rule."""
    from litedet.pipeline import kfp_entrypoint

    found = []
    if spec.get("schemaVersion") != SCHEMA_VERSION:
        found.append(
            f"schemaVersion {spec.get('schemaVersion')!r}: the KFP API server accepts only "
            f"{SCHEMA_VERSION} (compile with use_pipeline_spec_2_1)"
        )
    name = spec.get("pipelineInfo", {}).get("name", "")
    if not PIPELINE_NAME.fullmatch(name):
        found.append(f"pipeline name {name!r} must match {PIPELINE_NAME.pattern}")
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    components = spec.get("components", {})
    tasks = _tasks(spec)
    if not tasks:
        found.append("the root DAG has no task")
    for label, executor in sorted(executors.items()):
        kind = _executor_kind(executor)
        if kind not in EXECUTABLE_KINDS:
            found.append(
                f"executor {label}: kind {kind!r} is not run by the open-source backend (only "
                f"{', '.join(EXECUTABLE_KINDS)}; its Argo compiler refuses resolvers)"
            )
            continue
        container = executor.get("container")
        if container is None:
            continue
        if container.get("command") != ENTRYPOINT:
            found.append(
                f"executor {label}: command {container.get('command')} is not {ENTRYPOINT}; "
                "TFX's own entrypoint crashes on the untyped input artifacts and the "
                "executor-logs output the backend's driver hands it"
            )
        if "lifecycle" in container:
            found.append(
                f"executor {label}: lifecycle hooks (preCacheCheck) are never run by the backend"
            )
        accelerator = container.get("resources", {}).get("accelerator", {})
        kind_name = accelerator.get("resourceType") or accelerator.get("type")
        if kind_name and not RESOURCE_NAME.fullmatch(kind_name):
            found.append(
                f"executor {label}: accelerator {kind_name!r} is not a Kubernetes resource name "
                "such as nvidia.com/gpu (the driver puts it into the pod as given)"
            )
    for task_name, task in sorted(tasks.items()):
        if not TASK_NAME.fullmatch(task_name) or len(task_name) > MAX_TASK_NAME:
            found.append(
                f"task {task_name!r}: Argo needs task names matching {TASK_NAME.pattern}, at most "
                f"{MAX_TASK_NAME} characters"
            )
        for key in ("iteratorPolicy", "artifactIterator", "parameterIterator"):
            if key in task:
                found.append(f"task {task_name}: {key} is not supported here")
        component = components.get(task.get("componentRef", {}).get("name", ""))
        if component is None:
            found.append(f"task {task_name}: its component is not defined")
            continue
        if component.get("executorLabel") not in executors:
            found.append(f"task {task_name}: executor {component.get('executorLabel')} missing")
        for dependency in task.get("dependentTasks", []):
            if dependency not in tasks:
                found.append(f"task {task_name}: depends on unknown task {dependency!r}")
        inputs = task.get("inputs", {})
        for key, parameter in inputs.get("parameters", {}).items():
            source = parameter.get("taskOutputParameter")
            if source is None:
                continue
            producer = tasks.get(source["producerTask"])
            produced = (
                components.get(producer["componentRef"]["name"], {})
                .get("outputDefinitions", {})
                .get("parameters", {})
                if producer
                else {}
            )
            if source["outputParameterKey"] not in produced:
                found.append(
                    f"task {task_name}: parameter {key} reads "
                    f"{source['producerTask']}.{source['outputParameterKey']}, which no task "
                    "produces"
                )
        for key, artifact in inputs.get("artifacts", {}).items():
            source = artifact.get("taskOutputArtifact")
            if source and source["producerTask"] not in tasks:
                found.append(
                    f"task {task_name}: artifact {key} comes from unknown task "
                    f"{source['producerTask']!r}"
                )
        for direction in ("inputDefinitions", "outputDefinitions"):
            for key, definition in component.get(direction, {}).get("artifacts", {}).items():
                title = kfp_entrypoint.schema_title(definition.get("artifactType", {}))
                if kfp_entrypoint.class_path(title) is None:
                    found.append(
                        f"task {task_name}: artifact {key} of type {title!r} cannot be "
                        "rebuilt by the step's entrypoint"
                    )
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    for key, parameter in sorted(parameters.items()):
        if "defaultValue" not in parameter and not parameter.get("isOptional"):
            found.append(
                f"run-time parameter {key}: no default, so every run must set it (the API "
                "server refuses a run without it)"
            )
    if platform:
        platform_executors = (
            platform.get("platforms", {})
            .get("kubernetes", {})
            .get("deploymentSpec", {})
            .get("executors", {})
        )
        for label in platform_executors:
            if label not in executors:
                found.append(f"platform spec: executor {label} is not in the pipeline")
    return found
