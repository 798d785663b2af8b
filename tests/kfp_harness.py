"""Executes a compiled litedet pipeline package as the open-source KFP v2 backend does, on this
machine: no cluster, no containers, the same commands.

What a KFP run does, per task, and what this harness does in its place (kubeflow/pipelines,
backend/src/v2, read at 2.17.0 and 2.5.0; docs/kubeflow.md lists the sources):

driver (driver.go, resolve.go, config/env.go)
- the run's root: the one it names, else the namespace's `kfp-launcher` ConfigMap
  `defaultPipelineRoot`, else minio://mlpipeline/v2/artifacts;
- tasks in dependency order (dependentTasks and the producers of their inputs);
- parameters: run-time parameters (a run's values over the spec's defaults, refused when
  unknown), constants, and task-output parameters of earlier tasks;
- input artifacts read back from ML Metadata: `name` is the MLMD id, `type` has an EMPTY
  instanceSchema (the backend does not know it), `metadata` as the MLMD round trip leaves it
  (numbers as floats, bools as ints, lists and structs wrapped as {"list": ...} and
  {"struct": ...}, the launcher's `display_name` added);
- output artifacts at `<root>/<pipeline>/<run id>/<task>/<uuid>/<key>` typed from the
  component's outputDefinitions, plus the `executor-logs` output (system.Artifact) that publish-
  logs, on by default, adds;
- cache: a task whose spec has cachingOptions.enableCache is served from an earlier execution
  with the same key: input artifact names (MLMD ids), parameter values, output artifact specs
  without URIs, output parameter types, the image and the unresolved command and arguments.
launcher (launcher_v2.go)
- `outputs.outputFile` under the task root's local path (KFP 2.15+: /s3/<bucket>/<key>/...);
- reaches S3 as the namespace's `kfp-launcher` `providers` say (config/s3.go: default, then the
  first matching override; the secretRef's keys read from the namespace's Secret; an endpoint
  without a scheme gets http:// with disableSSL);
- downloads every input artifact by prefix into its local path (/s3/<bucket>/<key>), and fails
  on a zero-byte "folder/" marker object as the launcher does (kubeflow/pipelines#13476);
- replaces the placeholders ({{$}}: the executor input as protojson, camelCase) with kfp.local's
  own placeholder code, and runs the container's command and arguments in the image
  (tests/kfp_pod.py: the image's WORKDIR, files, non-root USER) with the pod's environment only:
  the image's ENV, the spec's `env`, and that step's own Secrets (its executor's secretAsEnv in
  the PlatformSpec; a missing Secret or key fails as the kubelet's CreateContainerConfigError);
- reads the executor output: its artifacts' URIs and metadata override the provisioned ones, a
  URI outside the run's prefix fails, a null metadata value fails (the MLMD converter refuses
  it); output parameters from the executor output or /tmp/kfp/outputs/<key>;
- uploads each output from its local path, skipping a missing one (TFX writes to the object
  store itself), and records the artifacts with new MLMD ids.

The "MLMD" of the harness (ids, artifacts, the cache) is one JSON file, so successive runs see
each other's executions, as runs on one KFP installation do.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional

from google.protobuf import json_format
from kfp.local import placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from tests import kfp_pod


class StepFailed(RuntimeError):
    def __init__(self, task: str, message: str, log: str = ""):
        super().__init__(f"task {task}: {message}")
        self.task, self.log = task, log


def _metadata_to_mlmd(value, where: str):
    if value is None:
        raise ValueError(f"{where}: null metadata value (KFP's MLMD converter refuses it)")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return {"list": value}
    if isinstance(value, dict):
        return {"struct": value}
    raise ValueError(f"{where}: {type(value).__name__} metadata")


FALLBACK_ROOT = "minio://mlpipeline/v2/artifacts"  # backend/src/v2/config/env.go


@dataclasses.dataclass
class Namespace:
    """What the driver and the launcher read from the run's namespace: its ConfigMaps
    ({name: data}) and Secrets ({name: {key: value}})."""

    configmaps: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    secrets: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)

    def secret_value(self, name: str, key: str, task: str) -> str:
        """A Secret's key, or the kubelet's CreateContainerConfigError."""
        if name not in self.secrets:
            raise StepFailed(task, f'CreateContainerConfigError: secret "{name}" not found')
        if key not in self.secrets[name]:
            raise StepFailed(
                task, f"CreateContainerConfigError: couldn't find key {key} in Secret {name}"
            )
        return self.secrets[name][key]

    def default_pipeline_root(self) -> str:
        """The driver's root for a run that names none: kfp-launcher's defaultPipelineRoot,
        else the backend's fallback (config/env.go DefaultPipelineRoot)."""
        return self.configmaps.get("kfp-launcher", {}).get("defaultPipelineRoot") or FALLBACK_ROOT

    def s3_session(self, bucket: str, prefix: str, task: str) -> dict:
        """The launcher's S3 session for s3://bucket/prefix from kfp-launcher's `providers`, as
        config/s3.go ProvideSessionInfo and objectstore's S3 client resolve it: the default,
        then the first override whose bucketName matches and keyPrefix starts the key; an
        endpoint without a scheme gets http:// when disableSSL, else https://."""
        import yaml

        providers = (
            yaml.safe_load(self.configmaps.get("kfp-launcher", {}).get("providers") or "{}") or {}
        )
        s3 = providers.get("s3") or {}
        default = s3.get("default")
        overrides = s3.get("overrides", s3.get("Overrides")) or []
        if default is None and not overrides:
            raise StepFailed(
                task,
                "kfp-launcher has no s3 provider: the launcher would read credentials from its "
                "own environment (fromEnv), which this harness does not model",
            )
        if not default or not default.get("credentials"):
            raise StepFailed(task, "invalid provider config: missing default credentials")
        settings = {
            "endpoint": default.get("endpoint", ""),
            "region": default.get("region", ""),
            "disableSSL": bool(default.get("disableSSL", False)),
            "credentials": default["credentials"],
        }
        for override in overrides:
            if override.get("bucketName") == bucket and prefix.startswith(
                override.get("keyPrefix", "")
            ):
                for name in ("endpoint", "region"):
                    if override.get(name):
                        settings[name] = override[name]
                if "disableSSL" in override:
                    settings["disableSSL"] = bool(override["disableSSL"])
                if not override.get("credentials"):
                    raise StepFailed(task, "invalid provider config: missing override credentials")
                settings["credentials"] = override["credentials"]
                break
        credentials = settings["credentials"]
        if credentials.get("fromEnv"):
            raise StepFailed(task, "s3 provider credentials fromEnv: not modelled by this harness")
        ref = credentials.get("secretRef") or {}
        endpoint = settings["endpoint"]
        if endpoint and not endpoint.startswith(("http://", "https://")):
            endpoint = ("http://" if settings["disableSSL"] else "https://") + endpoint
        return {
            "endpoint_url": endpoint or None,
            "region_name": settings["region"] or "us-east-1",
            "aws_access_key_id": self.secret_value(
                ref.get("secretName", ""), ref.get("accessKeyKey", ""), task
            ),
            "aws_secret_access_key": self.secret_value(
                ref.get("secretName", ""), ref.get("secretKeyKey", ""), task
            ),
        }


class Harness:
    def __init__(
        self,
        package: str,
        workdir: str,
        *,
        namespace: Namespace,
        image: kfp_pod.PodImage,
        publish_logs: bool = True,
        timeout_s: float = 1800,
    ):
        """`namespace`: the ConfigMaps and Secrets of the namespace the run executes in (the
        root, the launcher's S3 access, each step's Secrets come from there); `image`: the
        project image as the Dockerfile builds it (tests/kfp_pod.py), in which every step runs."""
        from litedet.pipeline.kubeflow_v2_runner import load_package

        self.spec, self.platform = load_package(package)
        self.workdir = workdir
        # The launcher's /s3, /gcs ... mounts and the pods' output files: the image's user
        # writes there, so outside pytest's root-only folders.
        self.mount = tempfile.mkdtemp(prefix="kfp-harness-mount-")
        os.chmod(self.mount, 0o755)
        self.state_path = os.path.join(workdir, "mlmd.json")
        self.namespace = namespace
        self.image = image
        self.publish_logs = publish_logs
        self.timeout_s = timeout_s
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.state = json.load(f)
        else:
            self.state = {"next_id": 1, "artifacts": {}, "cache": {}}

    # -- storage -------------------------------------------------------------------------------

    def _s3(self, bucket: str, prefix: str, task: str):
        import boto3

        return boto3.client("s3", **self.namespace.s3_session(bucket, prefix, task))

    def _secret_env(self, executor_label: str, task: str) -> Dict[str, str]:
        """The step's own Secrets as env (its executor's secretAsEnv in the PlatformSpec); a
        pod gets no other step's."""
        settings = (
            (self.platform or {})
            .get("platforms", {})
            .get("kubernetes", {})
            .get("deploymentSpec", {})
            .get("executors", {})
            .get(executor_label, {})
        )
        out = {}
        for entry in settings.get("secretAsEnv", []):
            for pair in entry["keyToEnv"]:
                out[pair["envVar"]] = self.namespace.secret_value(
                    entry["secretName"], pair["secretKey"], task
                )
        return out

    def _pod_dir(self, path: str) -> str:
        """A folder the image's user writes into, as the pod's emptyDir mounts are."""
        os.makedirs(path, exist_ok=True)
        os.chown(path, self.image.uid, self.image.gid)
        return path

    def local_path(self, uri: str) -> str:
        """LocalPathForURI: s3://b/k -> <mount>/s3/b/k (and gs://, minio:// alike)."""
        scheme, rest = uri.split("://", 1)
        return os.path.join(self.mount, scheme, rest)

    def _download(self, task: str, uri: str) -> None:
        if not uri.startswith("s3://"):
            return  # only object stores are downloaded
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        client = self._s3(bucket, prefix, task)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    raise StepFailed(
                        task,
                        f"input {uri}: the object {key!r} is a folder marker; "
                        "the KFP launcher fails to download it "
                        "(kubeflow/pipelines#13476)",
                    )
                target = self.local_path(f"s3://{bucket}/{key}")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                client.download_file(bucket, key, target)

    def _upload(self, uri: str, task: str) -> bool:
        local = self.local_path(uri)
        if not os.path.exists(local) or not uri.startswith("s3://"):
            return False  # the launcher logs "Local filepath does not exist" and goes on
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        client = self._s3(bucket, prefix, task)
        if os.path.isfile(local):
            client.upload_file(local, bucket, prefix)
            return True
        for folder, _, names in os.walk(local):
            for name in names:
                path = os.path.join(folder, name)
                client.upload_file(
                    path, bucket, prefix + "/" + os.path.relpath(path, local).replace(os.sep, "/")
                )
        return True

    # -- "ML Metadata" -------------------------------------------------------------------------

    def _record(
        self, uri: str, title: str, metadata: Mapping[str, Any], key: str, task: str
    ) -> str:
        artifact_id = str(self.state["next_id"])
        self.state["next_id"] += 1
        custom = {
            k: _metadata_to_mlmd(v, f"task {task} output {key} metadata {k}")
            for k, v in metadata.items()
        }
        custom.setdefault("display_name", key)
        self.state["artifacts"][artifact_id] = {"uri": uri, "title": title, "custom": custom}
        return artifact_id

    def _save(self) -> None:
        with open(self.state_path, "w") as f:
            json.dump(self.state, f)

    def _as_input(self, artifact_id: str) -> dict:
        stored = self.state["artifacts"][artifact_id]
        return {
            "name": artifact_id,
            "uri": stored["uri"],
            "metadata": stored["custom"],
            "type": {"instanceSchema": ""},
        }

    # -- a run ---------------------------------------------------------------------------------

    def _order(self) -> List[str]:
        tasks = self.spec["root"]["dag"]["tasks"]
        needs = {}
        for name, task in tasks.items():
            deps = set(task.get("dependentTasks", []))
            inputs = task.get("inputs", {})
            for p in inputs.get("parameters", {}).values():
                if "taskOutputParameter" in p:
                    deps.add(p["taskOutputParameter"]["producerTask"])
            for a in inputs.get("artifacts", {}).values():
                if "taskOutputArtifact" in a:
                    deps.add(a["taskOutputArtifact"]["producerTask"])
            needs[name] = deps
        order, done = [], set()
        while len(order) < len(tasks):
            ready = sorted(n for n in tasks if n not in done and needs[n] <= done)
            if not ready:
                raise ValueError(f"a cycle among {sorted(set(tasks) - done)}")
            order += ready
            done.update(ready)
        return order

    def run(
        self, pipeline_root: Optional[str] = None, parameters: Optional[Mapping[str, Any]] = None
    ) -> dict:
        """Runs every task; returns {"run_id", "root", "tasks": {name: {"state": "ran"|"cached",
        "outputs": {key: uri}, "parameters": {...}, "env": [names], "log": path}}}. A run that
        names no root gets the namespace's, as the driver gives it (the UI's runs name none)."""
        pipeline_root = pipeline_root or self.namespace.default_pipeline_root()
        definitions = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(parameters or {}) - set(definitions)
        if unknown:
            raise ValueError(f"unknown run-time parameters {sorted(unknown)}")
        values = {k: d.get("defaultValue") for k, d in definitions.items()}
        values.update(parameters or {})
        run_id = uuid.uuid4().hex[:12]
        produced: Dict[str, dict] = {}
        for task in self._order():
            produced[task] = self._run_task(task, pipeline_root, run_id, values, produced)
            self._save()
        return {"run_id": run_id, "root": pipeline_root, "tasks": produced}

    def _inputs(self, task: dict, values: dict, produced: dict) -> tuple:
        parameters, artifacts = {}, {}
        for key, p in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in p:
                parameters[key] = values[p["componentInputParameter"]]
            elif "runtimeValue" in p:
                parameters[key] = p["runtimeValue"]["constant"]
            elif "taskOutputParameter" in p:
                source = p["taskOutputParameter"]
                parameters[key] = produced[source["producerTask"]]["parameters"][
                    source["outputParameterKey"]
                ]
            else:
                raise ValueError(f"unsupported parameter source {p}")
        for key, a in task.get("inputs", {}).get("artifacts", {}).items():
            source = a["taskOutputArtifact"]
            ids = produced[source["producerTask"]]["artifact_ids"][source["outputArtifactKey"]]
            artifacts[key] = {"artifacts": [self._as_input(i) for i in ids]}
        return parameters, artifacts

    def _run_task(
        self, name: str, pipeline_root: str, run_id: str, values: dict, produced: dict
    ) -> dict:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]][
            "container"
        ]
        parameters, input_artifacts = self._inputs(task, values, produced)
        outputs = component.get("outputDefinitions", {})
        key = hashlib.sha256(
            json.dumps(
                {
                    "inputArtifactNames": {
                        k: [a["name"] for a in v["artifacts"]] for k, v in input_artifacts.items()
                    },
                    "inputParameterValues": parameters,
                    "outputArtifactsSpec": outputs.get("artifacts", {}),
                    "outputParametersSpec": outputs.get("parameters", {}),
                    "containerSpec": {
                        "image": container["image"],
                        "cmdArgs": container.get("command", []) + container.get("args", []),
                    },
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        if task.get("cachingOptions", {}).get("enableCache") and key in self.state["cache"]:
            cached = copy.deepcopy(self.state["cache"][key])
            cached["state"] = "cached"
            return cached

        task_root = (
            f"{pipeline_root.rstrip('/')}/{self.spec['pipelineInfo']['name']}/{run_id}/"
            f"{name}/{uuid.uuid4().hex[:8]}"
        )
        output_artifacts = {
            k: {
                "artifacts": [
                    {
                        "name": k,
                        "uri": f"{task_root}/{k}",
                        "type": d["artifactType"],
                        "metadata": {},
                    }
                ]
            }
            for k, d in outputs.get("artifacts", {}).items()
        }
        if self.publish_logs:
            output_artifacts["executor-logs"] = {
                "artifacts": [
                    {
                        "name": "executor-logs",
                        "uri": f"{task_root}/executor-logs",
                        "type": {"schemaTitle": "system.Artifact"},
                        "metadata": {},
                    }
                ]
            }
        parameter_dir = self._pod_dir(os.path.join(self.mount, "kfp-outputs", run_id, name))
        output_file = os.path.join(self.local_path(task_root), "output_metadata.json")
        executor_input = pipeline_spec_pb2.ExecutorInput()
        json_format.ParseDict(
            {
                "inputs": {"parameterValues": parameters, "artifacts": input_artifacts},
                "outputs": {
                    "artifacts": output_artifacts,
                    "parameters": {
                        k: {"outputFile": os.path.join(parameter_dir, k)}
                        for k in outputs.get("parameters", {})
                    },
                    "outputFile": output_file,
                },
            },
            executor_input,
        )
        executor_input_dict = json_format.MessageToDict(executor_input)
        for artifact_list in input_artifacts.values():
            for artifact in artifact_list["artifacts"]:
                self._download(name, artifact["uri"])
        self._pod_dir(os.path.dirname(output_file))
        command = placeholder_utils.replace_placeholders(
            container.get("command", []) + container.get("args", []),
            executor_input_dict,
            self.spec["pipelineInfo"]["name"],
            name,
            pipeline_root,
        )
        env = self.image.pod_env(
            {item["name"]: item["value"] for item in container.get("env", [])},
            self._secret_env(component["executorLabel"], name),
            hostname=f"{name.lower()}-{run_id}",
        )
        log_path = os.path.join(self.workdir, "logs", run_id, f"{name}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        started = time.time()
        with open(log_path, "w") as log:
            try:
                done = self.image.run(
                    command, env, stdout=log, stderr=subprocess.STDOUT, timeout=self.timeout_s
                )
            except subprocess.TimeoutExpired:
                raise StepFailed(name, f"timed out after {self.timeout_s} s", log_path) from None
        if done.returncode != 0:
            with open(log_path) as f:
                tail = f.read()[-4000:]
            raise StepFailed(name, f"exit {done.returncode}:\n{tail}", log_path)

        executor_output = {}
        if os.path.exists(output_file):
            with open(output_file) as f:
                executor_output = json.load(f)
        artifact_ids, uris = {}, {}
        prefix = f"{pipeline_root.rstrip('/')}/{self.spec['pipelineInfo']['name']}/{run_id}/"
        for k, listed in output_artifacts.items():
            provisioned = listed["artifacts"][0]
            reported = (executor_output.get("artifacts", {}).get(k, {}).get("artifacts") or [{}])[0]
            uri = reported.get("uri") or provisioned["uri"]
            if not uri.startswith(prefix):
                raise StepFailed(
                    name,
                    f"output {k}: URI {uri} does not have the expected "
                    f"bucket prefix {prefix} (the launcher refuses it)",
                )
            metadata = dict(provisioned["metadata"])
            metadata.update(reported.get("metadata", {}))
            self._upload(uri, name)
            title = provisioned["type"].get("schemaTitle") or _title(provisioned["type"])
            try:
                artifact_ids[k] = [self._record(uri, title, metadata, k, name)]
            except ValueError as error:
                raise StepFailed(name, str(error), log_path) from None
            uris[k] = uri
        output_parameters = {}
        for k in outputs.get("parameters", {}):
            if k in executor_output.get("parameterValues", {}):
                output_parameters[k] = executor_output["parameterValues"][k]
            elif os.path.exists(os.path.join(parameter_dir, k)):
                with open(os.path.join(parameter_dir, k)) as f:
                    output_parameters[k] = f.read()
            else:
                raise StepFailed(name, f"output parameter {k} was not produced", log_path)
        result = {
            "state": "ran",
            "seconds": round(time.time() - started, 1),
            "artifact_ids": artifact_ids,
            "outputs": uris,
            "parameters": output_parameters,
            "env": sorted(env),
            "log": log_path,
        }
        if task.get("cachingOptions", {}).get("enableCache"):
            self.state["cache"][key] = copy.deepcopy(result)
        return result


def _title(artifact_type: dict) -> str:
    import yaml

    schema = artifact_type.get("instanceSchema") or ""
    return ((yaml.safe_load(schema) if schema else None) or {}).get("title", "")
