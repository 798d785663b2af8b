"""Multi-worker training on Kubeflow: the Trainer step as the launcher of a TFJob.

With `kubeflow.trainer_workers.count` > 1 the compiled Trainer runs
components/trainer/tfjob_executor.py instead of TFX's executor: it builds the same `fn_args`
TFX would hand `run_fn`, and instead of training in its own pod it creates a TFJob (Kubeflow
Training Operator v1, kubeflow.org/v1; why not Trainer v2's TrainJob:
docs/distributed-training.md) whose workers run `run_fn` with those `fn_args`
(components/trainer/tfjob_worker.py), waits for the job's Succeeded or Failed condition, copies
the workers' logs into the step's log as they grow, and deletes the job on the way out (success,
failure, timeout, or the step's pod being stopped).

What the workers get from the step's own pod (read through the Kubernetes API): its image, its
environment exactly as the pod got it (plain values, and Secrets as references: no secret value
passes through this code), its service account and security contexts. What the operator adds:
TF_CONFIG (pkg/controller.v1/tensorflow/tensorflow.go at v1.9.2, `genTFConfigJSONStr`):

    {"cluster": {"worker": ["<job>-worker-0.<namespace>.svc:2222", ...]},
     "task": {"type": "worker", "index": i}, "environment": "cloud"}

set only when the job has more than one replica, on the container named `tensorflow`. With
workers only, worker 0 is the chief (module.py `is_chief`): it writes the model, and the job
succeeds when worker 0 exits 0 (the operator's default success policy).

Artifacts are read and written by the workers directly, so every URI in fn_args must be on
object storage (s3://, gs://): the workers mount nothing of the step's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Callable, Dict, List, Optional

from litedet.components.object_storage import REMOTE_SCHEMES
from litedet.components.trainer.config import WorkersConfig
from litedet.pipeline.kfp_spec import ACCELERATOR_ENV

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
# kubeflow.org/v1 constants (pkg/apis/kubeflow.org/v1/tensorflow_types.go, common_types.go).
CONTAINER = "tensorflow"  # TFJobDefaultContainerName: the container TF_CONFIG goes into
PORT_NAME, PORT = "tfjob-port", 2222
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
# A KFP step is an Argo container template, whose container Argo names `main`
# (MainContainerName in Argo's workflow/common); with no such container, the first one.
STEP_CONTAINER = "main"
WORKER_MODULE = "litedet.components.trainer.tfjob_worker"
# The key of the Trainer's custom_config that carries kubeflow.trainer_workers.
CUSTOM_CONFIG_KEY = "litedet_trainer_workers"
# Environment the workers must not inherit from the step: KFP's own, what the operator sets,
# and the step's accelerator demand (a worker's is its own: kubeflow.trainer_workers.gpu).
DROPPED_ENV_PREFIXES = ("KFP_",)
DROPPED_ENV = {"TF_CONFIG", ACCELERATOR_ENV}
# fn_args fields run_fn reads, and the other plain ones TFX sets (all JSON).
FN_ARGS_FIELDS = (
    "train_files",
    "eval_files",
    "transform_output",
    "transform_graph_path",
    "serving_model_dir",
    "eval_model_dir",
    "model_run_dir",
    "working_dir",
    "schema_path",
    "schema_file",
    "base_model",
    "train_steps",
    "eval_steps",
    "hyperparameters",
    "custom_config",
)
URI_FIELDS = ("transform_output", "serving_model_dir", "model_run_dir")
LOG_TAIL_LINES = 30
# Polls in a row that may fail with a server-side error before the step gives up on the job.
TRANSIENT_ERRORS = 5
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class TFJobError(RuntimeError):
    """The workers' job failed, timed out or could not be started; the message says which
    replica, why, and its last log lines."""


def job_name(step_pod_uid: str) -> str:
    """A DNS-1035 label (the operator's webhook requires one), unique per step attempt; short
    enough that `<name>-worker-<i>` stays a valid pod and Service name."""
    return f"litedet-train-{step_pod_uid.replace('-', '')[:10].lower()}"


def worker_fn_args(fn_args) -> Dict[str, Any]:
    """The JSON part of TFX's fn_args that run_fn needs; refuses paths the workers cannot open."""
    values = {f: getattr(fn_args, f) for f in FN_ARGS_FIELDS if getattr(fn_args, f, None)}
    uris = [values[f] for f in URI_FIELDS] + list(values["train_files"])
    uris += list(values.get("eval_files") or [])
    local = [u for u in uris if not str(u).startswith(REMOTE_SCHEMES)]
    if local:
        raise TFJobError(
            f"kubeflow.trainer_workers: the workers read and write the Trainer's artifacts "
            f"themselves, so they must be on object storage (s3://, gs://), not {local[0]!r}: "
            "give the pipeline an s3:// or gs:// root"
        )
    json.dumps(values)  # a TypeError here names what is not JSON
    return values


def _quantity(gb: float) -> str:
    return f"{int(gb * 1000)}M" if gb * 1000 == int(gb * 1000) else f"{int(gb * 1e9)}"


def _cpu(cpu: float) -> str:
    return f"{int(round(cpu * 1000))}m"


def worker_env(step_container: Dict[str, Any], workers: WorkersConfig) -> List[Dict[str, Any]]:
    """The step's environment for a worker, entries as the pod has them (Secrets stay
    secretKeyRef references), less KFP's own and TF_CONFIG, plus the worker's GPU demand."""
    env = [
        dict(entry)
        for entry in step_container.get("env") or []
        if entry["name"] not in DROPPED_ENV and not entry["name"].startswith(DROPPED_ENV_PREFIXES)
    ]
    if workers.gpu:
        env.append({"name": ACCELERATOR_ENV, "value": workers.gpu_resource})
    return env


def tfjob_body(
    name: str,
    namespace: str,
    step_pod: Dict[str, Any],
    fn_args: Dict[str, Any],
    workers: WorkersConfig,
) -> Dict[str, Any]:
    """The TFJob the step creates. `step_pod`: the step's own Pod (API JSON, camelCase)."""
    [container] = [c for c in step_pod["spec"]["containers"] if c["name"] == STEP_CONTAINER] or [
        step_pod["spec"]["containers"][0]
    ]
    limits = {"cpu": _cpu(workers.cpu), "memory": _quantity(workers.memory_gb)}
    if workers.gpu:
        limits[workers.gpu_resource] = str(workers.gpu)
    worker = {
        "name": CONTAINER,
        "image": container["image"],
        "command": ["python", "-m", WORKER_MODULE],
        "args": [json.dumps(fn_args, sort_keys=True)],
        "env": worker_env(container, workers),
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        "resources": {"requests": dict(limits), "limits": limits},
    }
    for key in ("imagePullPolicy", "envFrom", "securityContext", "workingDir"):
        if container.get(key):
            worker[key] = container[key]
    # The workers call no Kubernetes API: no token of the step's account in their pods (cloud
    # credentials by Workload Identity or IRSA do not come from this mount).
    pod_spec: Dict[str, Any] = {"containers": [worker], "automountServiceAccountToken": False}
    spec = step_pod["spec"]
    for key in ("serviceAccountName", "securityContext", "imagePullSecrets"):
        if spec.get(key):
            pod_spec[key] = spec[key]
    if workers.node_selector:
        pod_spec["nodeSelector"] = dict(workers.node_selector)
    if workers.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in workers.tolerations]
    labels = {"app.kubernetes.io/part-of": "litedet", "app.kubernetes.io/component": "trainer"}
    metadata = step_pod["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            # Kubernetes' garbage collector deletes the job with the step's pod, should the step
            # never get to delete it (the node lost, the pod force-deleted).
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": {
            "runPolicy": {
                # A failed worker's peers stop waiting on it: the operator deletes the pods still
                # running once the job is finished; finished ones stay for their logs.
                "cleanPodPolicy": "Running",
                "backoffLimit": workers.backoff_limit,
                "activeDeadlineSeconds": workers.timeout_s,
                "ttlSecondsAfterFinished": workers.ttl_s,
            },
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers.count,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": {
                            "labels": dict(labels),
                            # An Istio sidecar (Kubeflow profile namespaces) never exits, so a
                            # finished worker's pod would never complete.
                            "annotations": {"sidecar.istio.io/inject": "false"},
                        },
                        "spec": pod_spec,
                    },
                }
            },
        },
    }


def _condition(job: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The job's Succeeded or Failed condition when it has one (status True)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition
    return None


class _Stopped(BaseException):
    """SIGTERM (the step's pod stopped, a run cancelled): unwinds so that the job is deleted."""


class Launcher:
    """Creates, watches and deletes one TFJob through the Kubernetes API (`api_client`: a
    kubernetes.client.ApiClient; in a pod, `in_cluster()`)."""

    def __init__(
        self,
        api_client,
        namespace: str,
        poll_s: float = 10.0,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.api_client = api_client
        self.namespace, self.poll_s, self.log, self.clock = namespace, poll_s, log, clock
        self._printed: Dict[str, int] = {}

    @classmethod
    def in_cluster(cls, **kwargs) -> Launcher:
        from kubernetes import client, config

        config.load_incluster_config()
        with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace")) as handle:
            namespace = handle.read().strip()
        return cls(client.ApiClient(), namespace, **kwargs)

    def step_pod(self, pod_name: str) -> Dict[str, Any]:
        from kubernetes.client.rest import ApiException

        try:
            pod = self.core.read_namespaced_pod(pod_name, self.namespace)
        except ApiException as error:
            raise TFJobError(self._refused(error, f"read its own pod {pod_name}", "pods")) from None
        return self.api_client.sanitize_for_serialization(pod)

    def _refused(self, error, doing: str, resource: str) -> str:
        """A refused API call in one line, with what to do about it."""
        where = f"the Trainer could not {doing} in namespace {self.namespace}"
        if error.status == 403:
            return (
                f"{where}: its service account may not ({resource}); grant what "
                "docs/distributed-training.md lists (k8s/components/tfjob-launcher)"
            )
        if error.status == 404 and resource == PLURAL:
            return (
                f"{where}: the cluster has no TFJob kind (kubeflow.org/v1): install the Kubeflow "
                "Training Operator v1 (docs/distributed-training.md)"
            )
        return f"{where}: HTTP {error.status} {error.reason}: {(error.body or '')[:500]}"

    def run(self, fn_args, workers: WorkersConfig, pod_name: str) -> None:
        """Trains on `workers.count` workers; returns when the job succeeded, raises TFJobError
        when it failed or timed out. The job is deleted in every case."""
        args = worker_fn_args(fn_args)
        pod = self.step_pod(pod_name)
        name = job_name(pod["metadata"]["uid"])
        body = tfjob_body(name, self.namespace, pod, args, workers)
        previous = signal.getsignal(signal.SIGTERM)
        if _main_thread():
            signal.signal(signal.SIGTERM, _raise_stopped)
        from kubernetes.client.rest import ApiException

        try:
            try:
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, body
                )
            except ApiException as error:
                raise TFJobError(self._refused(error, f"create TFJob {name}", PLURAL)) from None
            self.log(
                f"TFJob {self.namespace}/{name}: {workers.count} workers of {body_image(body)}"
            )
            self._wait(name, workers)
        except _Stopped:
            raise TFJobError(f"TFJob {self.namespace}/{name}: the step was stopped") from None
        finally:
            self._delete(name)
            if _main_thread():
                signal.signal(signal.SIGTERM, previous)

    def _wait(self, name: str, workers: WorkersConfig) -> None:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        deadline = self.clock() + workers.timeout_s
        errors = 0
        while True:
            try:
                job = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name
                )
                pods = self._pods(name)
            except (ApiException, HTTPError) as error:
                # An API server restarting or overloaded: a few polls may fail; training goes on.
                status = getattr(error, "status", None)
                errors += 1
                if (status is not None and status < 500 and status != 429) or (
                    errors >= TRANSIENT_ERRORS
                ):
                    raise TFJobError(
                        self._refused(error, f"read TFJob {name}", PLURAL)
                        if status
                        else f"TFJob {self.namespace}/{name}: the Kubernetes API is "
                        f"unreachable: {error}"
                    ) from None
                self.log(f"TFJob {self.namespace}/{name}: polling failed ({error}); retrying")
                time.sleep(self.poll_s)
                continue
            errors = 0
            self._copy_logs(pods)
            condition = _condition(job)
            if condition and condition["type"] == "Succeeded":
                self.log(f"TFJob {self.namespace}/{name}: succeeded")
                return
            if condition:
                raise TFJobError(self._failure(name, condition, pods))
            if self.clock() >= deadline:
                raise TFJobError(
                    f"TFJob {self.namespace}/{name}: not finished after "
                    f"kubeflow.trainer_workers.timeout_s={workers.timeout_s} s; deleted"
                )
            time.sleep(self.poll_s)

    def _pods(self, name: str) -> List[Any]:
        listed = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_NAME_LABEL}={name}"
        )
        return sorted(
            listed.items,
            key=lambda p: int((p.metadata.labels or {}).get(REPLICA_INDEX_LABEL, 0)),
        )

    def _log_lines(self, pod) -> List[str]:
        if (pod.status.phase or "Pending") == "Pending":
            return []
        try:
            text = self.core.read_namespaced_pod_log(
                pod.metadata.name, self.namespace, container=CONTAINER
            )
        except Exception as error:  # a pod gone or not started: its log is not there (yet)
            logging.debug("no log of %s: %s", pod.metadata.name, error)
            return []
        return (text or "").splitlines()

    def _copy_logs(self, pods) -> None:
        """Each worker's new log lines into the step's log, prefixed with the replica."""
        for pod in pods:
            lines = self._log_lines(pod)
            done = self._printed.get(pod.metadata.name, 0)
            replica = _replica(pod)
            for line in lines[done:]:
                self.log(f"[{replica}] {line}")
            self._printed[pod.metadata.name] = max(done, len(lines))

    def _failure(self, name: str, condition: Dict[str, Any], pods) -> str:
        failed = [p for p in pods if _exit_code(p) not in (None, 0)]
        message = f"TFJob {self.namespace}/{name} failed: {condition.get('message', '')}".strip()
        if not failed:
            return message
        pod = failed[0]
        tail = self._log_lines(pod)[-LOG_TAIL_LINES:]
        return (
            f"{message}\n{_replica(pod)} (pod {pod.metadata.name}) exited with code "
            f"{_exit_code(pod)}; its last {len(tail)} log lines:\n" + "\n".join(tail)
        )

    def _delete(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
        except ApiException as error:
            if error.status != 404:
                self.log(f"TFJob {self.namespace}/{name}: could not delete it: {error.reason}")


def body_image(body: Dict[str, Any]) -> str:
    template = body["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    return template["spec"]["containers"][0]["image"]


def _replica(pod) -> str:
    labels = pod.metadata.labels or {}
    return f"{labels.get(REPLICA_TYPE_LABEL, 'worker')}-{labels.get(REPLICA_INDEX_LABEL, '?')}"


def _exit_code(pod) -> Optional[int]:
    for status in (pod.status.container_statuses or []) if pod.status else []:
        if status.name == CONTAINER and status.state and status.state.terminated:
            return status.state.terminated.exit_code
    return None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_stopped(signum, frame):
    raise _Stopped()


def workers_setting(custom_config: Optional[Dict[str, Any]]) -> Optional[WorkersConfig]:
    """kubeflow.trainer_workers as the compiler put it into the Trainer's custom_config."""
    values = (custom_config or {}).get(CUSTOM_CONFIG_KEY)
    if not values:
        return None
    workers = WorkersConfig(**values)
    workers.check()
    return workers


def check_model_written(serving_model_dir: str) -> None:
    import tensorflow as tf

    if not tf.io.gfile.exists(os.path.join(serving_model_dir, "saved_model.pb")):
        raise TFJobError(f"the TFJob succeeded but worker 0 wrote no model at {serving_model_dir}")


def custom_config_entry(workers: WorkersConfig) -> Dict[str, Any]:
    """What the compiler adds to the Trainer's custom_config for a multi-worker run."""
    return {CUSTOM_CONFIG_KEY: dataclasses.asdict(workers)}
