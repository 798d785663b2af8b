"""A loopback Kubernetes API with the Kubeflow Training Operator v1 in it, for the Trainer's TFJob
launcher (components/trainer/tfjob.py), driven through the real `kubernetes` client.

It serves what the launcher calls: read a Pod (the step's own), create/get/delete a TFJob, list a
job's Pods by label, read a Pod's log. A TFJob body is accepted only when the API server and the
operator would accept it: the CRD's published openAPIV3Schema, strictly (tests/crd_schema.py,
the file vendored under tests/data/training-operator/), the metadata as ObjectMeta, and the
operator's admission webhook (pkg/webhooks/tensorflow/tfjob_webhook.go at v1.9: the name a
DNS-1035 label, at most one Chief/Master, every replica with a container named `tensorflow` and
images given); anything else is a 422 with the reasons.

On create it does what the operator's controller does, with processes for pods: one process per
Worker replica running the container's command and args (`python` is this interpreter) with the
container's environment (plain values; `secretKeyRef` read from this server's Secrets; nothing
of this test process' AWS_* or TF_CONFIG) plus TF_CONFIG as the operator computes it
(pkg/controller.v1/tensorflow/tensorflow.go, `genTFConfigJSONStr`/`genClusterSpec`: headless
Service names `<job>-worker-<i>.<namespace>.svc:<tfjob-port>`), where only the host:port of each
service is mapped to a free loopback port (there is no cluster DNS here). The job's status
follows the controller's `UpdateJobStatus` for a Worker-only job: Created, Running while a
worker runs, Succeeded when worker 0 exited 0 (the default success policy), Failed when a worker
failed; cleanPodPolicy Running kills the still-running ones when the job finishes. Delete kills
every process and removes the job and its pods.

`commands` replaces a replica's process (by index) with a shell-free Python snippet, for the
failure and timeout tests that need no training.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
import uuid
from typing import Dict, List, Optional

from tests.crd_schema import custom_object_problems

DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DEFAULT_PORT = 2222
LABELS = {
    "job": "training.kubeflow.org/job-name",
    "type": "training.kubeflow.org/replica-type",
    "index": "training.kubeflow.org/replica-index",
    "operator": "training.kubeflow.org/operator-name",
}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webhook_problems(job: dict) -> List[str]:
    """The operator's admission webhook for TFJobs (validateTFJob, validateTFReplicaSpecs)."""
    problems = []
    name = job.get("metadata", {}).get("name", "")
    if len(name) > 63 or not DNS_1035.fullmatch(name):
        problems.append(f"metadata.name: {name!r} should match a DNS-1035 label")
    specs = (job.get("spec") or {}).get("tfReplicaSpecs")
    if not specs:
        return problems + ["spec.tfReplicaSpecs: must be required"]
    if sum(1 for t in specs if t in ("Chief", "Master")) > 1:
        problems.append("spec.tfReplicaSpecs: must not have more than 1 Chief or Master role")
    for rtype, spec in specs.items():
        containers = spec.get("template", {}).get("spec", {}).get("containers") or []
        if not containers:
            problems.append(f"spec.tfReplicaSpecs[{rtype}].template.spec.containers: required")
        if not [c for c in containers if c.get("name") == "tensorflow"]:
            problems.append(f"spec.tfReplicaSpecs[{rtype}]: no container named tensorflow")
        problems += [
            f"spec.tfReplicaSpecs[{rtype}]: container {c.get('name')} has no image"
            for c in containers
            if not c.get("image")
        ]
    return problems


def cluster_spec(job: dict) -> Dict[str, List[str]]:
    """genClusterSpec: every replica type, lowercased, its replicas' Service addresses."""
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    cluster = {}
    for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
        port = DEFAULT_PORT
        for container in spec["template"]["spec"]["containers"]:
            if container["name"] == "tensorflow":
                for p in container.get("ports") or []:
                    if p.get("name") == "tfjob-port":
                        port = p["containerPort"]
        rt = rtype.lower()
        cluster[rt] = [
            f"{name}-{rt}-{i}.{namespace}.svc:{port}" for i in range(spec.get("replicas", 1))
        ]
    return cluster


def operator_tf_config(job: dict, rtype: str, index: int) -> Optional[dict]:
    """The TF_CONFIG the operator sets (None for a single-replica job: isDistributed)."""
    if sum(s.get("replicas", 1) for s in job["spec"]["tfReplicaSpecs"].values()) == 1:
        return None
    return {
        "cluster": cluster_spec(job),
        "task": {"type": rtype.lower(), "index": index},
        "environment": "cloud",
    }


class Cluster:
    def __init__(self, namespace: str, log_dir: str, secrets: Dict[str, Dict[str, str]]):
        self.namespace, self.log_dir, self.secrets = namespace, log_dir, secrets
        self.pods: Dict[str, dict] = {}
        self.jobs: Dict[str, dict] = {}
        self.processes: Dict[str, subprocess.Popen] = {}
        self.tf_configs: Dict[str, dict] = {}  # pod name -> TF_CONFIG as the operator set it
        self.requests: List[tuple] = []
        self.refused: List[List[str]] = []
        self.created: List[dict] = []
        self.deleted: List[str] = []
        self.commands: Dict[int, str] = {}
        # (method, resource) -> HTTP status: what RBAC (403) or a missing CRD (404) refuses.
        self.refuse: Dict[tuple, int] = {}
        # (method, resource) -> how many of the next such requests get a 503.
        self.unavailable: Dict[tuple, int] = {}
        self.lock = threading.RLock()
        self.server = None

    # --- the step's own pod, as KFP's Argo compiler and driver make it -------------------------

    def add_step_pod(self, name: str, image: str, env: List[dict], service_account: str) -> dict:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "uid": str(uuid.uuid4())},
            "spec": {
                "serviceAccountName": service_account,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "command": ["/kfp-launcher/launch", "--copy", "/kfp-launcher/launch"],
                        "env": env,
                        "securityContext": {"allowPrivilegeEscalation": False},
                    },
                    {"name": "wait", "image": "quay.io/argoproj/argoexec:v3.6.7"},
                ],
            },
            "status": {"phase": "Running"},
        }
        self.pods[name] = pod
        return pod

    # --- the operator ----------------------------------------------------------------------------

    def _env(self, container: dict, pod_name: str) -> Dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("TF_CONFIG", "HOSTNAME")
        }
        env = dict(inherited, HOSTNAME=pod_name)
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "secretKeyRef" in entry.get("valueFrom", {}):
                ref = entry["valueFrom"]["secretKeyRef"]
                env[entry["name"]] = self.secrets[ref["name"]][ref["key"]]
            elif "fieldRef" in entry.get("valueFrom", {}):
                path = entry["valueFrom"]["fieldRef"]["fieldPath"]
                env[entry["name"]] = {"metadata.name": pod_name}.get(path, "")
        return env

    def _start(self, job: dict) -> None:
        name = job["metadata"]["name"]
        cluster = cluster_spec(job)
        loopback = {
            address: f"127.0.0.1:{free_port()}"
            for addresses in cluster.values()
            for address in addresses
        }
        for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
            template = spec["template"]
            [container] = [c for c in template["spec"]["containers"] if c["name"] == "tensorflow"]
            for index in range(spec.get("replicas", 1)):
                pod_name = f"{name}-{rtype.lower()}-{index}"
                env = self._env(container, pod_name)
                tf_config = operator_tf_config(job, rtype, index)
                if tf_config is not None:
                    self.tf_configs[pod_name] = tf_config
                    mapped = json.loads(json.dumps(tf_config))
                    mapped["cluster"] = {
                        rt: [loopback[a] for a in addresses] for rt, addresses in cluster.items()
                    }
                    env["TF_CONFIG"] = json.dumps(mapped)
                command = list(container.get("command") or []) + list(container.get("args") or [])
                if command and command[0] == "python":
                    command[0] = sys.executable
                if index in self.commands:
                    command = [sys.executable, "-c", self.commands[index]]
                log = open(os.path.join(self.log_dir, pod_name + ".log"), "wb")
                self.processes[pod_name] = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT
                )
                log.close()
                self.pods[pod_name] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod_name,
                        "namespace": self.namespace,
                        "uid": str(uuid.uuid4()),
                        "labels": {
                            **(template.get("metadata", {}).get("labels") or {}),
                            LABELS["job"]: name,
                            LABELS["type"]: rtype.lower(),
                            LABELS["index"]: str(index),
                            LABELS["operator"]: "tfjob-controller",
                        },
                    },
                    "spec": template["spec"],
                }

    def _pod_status(self, pod_name: str) -> dict:
        process = self.processes.get(pod_name)
        if process is None:
            return {"phase": "Running"}
        code = process.poll()
        state = (
            {"running": {"startedAt": _now()}}
            if code is None
            else {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
        )
        return {
            "phase": "Running" if code is None else ("Succeeded" if code == 0 else "Failed"),
            "containerStatuses": [
                {
                    "name": "tensorflow",
                    "image": "",
                    "imageID": "",
                    "ready": code is None,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }

    def _job_pods(self, name: str) -> List[str]:
        return [
            n
            for n, p in self.pods.items()
            if p["metadata"].get("labels", {}).get(LABELS["job"]) == name
        ]

    def _status(self, name: str) -> dict:
        """UpdateJobStatus for a job of Worker replicas only."""
        job = self.jobs[name]
        pods = {n: self._pod_status(n)["phase"] for n in self._job_pods(name)}
        phases = list(pods.values())
        status = job.setdefault(
            "status",
            {"conditions": [_condition("Created", "TFJobCreated", f"TFJob {name} is created.")]},
        )
        conditions = status["conditions"]
        finished = [c for c in conditions if c["type"] in ("Succeeded", "Failed")]
        status["replicaStatuses"] = {
            "Worker": {
                "active": phases.count("Running"),
                "succeeded": phases.count("Succeeded"),
                "failed": phases.count("Failed"),
            }
        }
        if finished:
            return status
        worker0 = pods.get(f"{name}-worker-0")
        replicas = job["spec"]["tfReplicaSpecs"]["Worker"].get("replicas", 1)
        message = None
        if worker0 == "Succeeded" or phases.count("Succeeded") == replicas:
            message = (
                "Succeeded",
                "TFJobSucceeded",
                f"TFJob {self.namespace}/{name} successfully completed.",
            )
        elif "Running" in phases and not [c for c in conditions if c["type"] == "Running"]:
            conditions.append(
                _condition("Running", "TFJobRunning", f"TFJob {self.namespace}/{name} is running.")
            )
        failed = phases.count("Failed")
        if failed and message is None:
            message = (
                "Failed",
                "TFJobFailed",
                f"TFJob {self.namespace}/{name} has failed because {failed} Worker "
                "replica(s) failed.",
            )
        if message:
            for c in conditions:
                if c["type"] == "Running":
                    c["status"] = "False"
            conditions.append(_condition(*message))
            status["completionTime"] = _now()
            if job["spec"].get("runPolicy", {}).get("cleanPodPolicy") in ("Running", "All"):
                for pod_name in self._job_pods(name):
                    if self.processes[pod_name].poll() is None:
                        self._kill(pod_name)
                        del self.pods[pod_name]
        return status

    def _kill(self, pod_name: str) -> None:
        process = self.processes[pod_name]
        if process.poll() is None:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for pod_name in list(self.processes):
            self._kill(pod_name)

    # --- the API ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, body: Optional[dict]):
        ns = re.escape(self.namespace)
        with self.lock:
            self.requests.append((method, path))
            match = re.fullmatch(
                rf"/apis/kubeflow.org/v1/namespaces/{ns}/tfjobs(?:/([^/]+))?", path
            )
            if match:
                return self._tfjobs(method, match.group(1), body)
            match = re.fullmatch(rf"/api/v1/namespaces/{ns}/pods(?:/([^/]+))?(/log)?", path)
            if match and method == "GET":
                name, log = match.groups()
                if (method, "pods") in self.refuse:
                    code = self.refuse[(method, "pods")]
                    return code, _status_body(code, "Forbidden", "refused")
                if name is None:
                    return 200, self._pod_list(query.get("labelSelector", [""])[0])
                if name not in self.pods:
                    return 404, _status_body(404, "NotFound", f'pods "{name}" not found')
                if log:
                    with open(os.path.join(self.log_dir, name + ".log"), "rb") as handle:
                        return 200, handle.read()
                return 200, {**self.pods[name], "status": self._pod_status(name)}
        return 404, _status_body(404, "NotFound", f"{method} {path}")

    def _pod_list(self, selector: str) -> dict:
        wanted = dict(item.split("=", 1) for item in selector.split(",") if item)
        items = [
            {**pod, "status": self._pod_status(name)}
            for name, pod in self.pods.items()
            if all(pod["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _tfjobs(self, method: str, name: Optional[str], body: Optional[dict]):
        if self.unavailable.get((method, "tfjobs")):
            self.unavailable[(method, "tfjobs")] -= 1
            return 503, _status_body(503, "ServiceUnavailable", "the API server is restarting")
        if (method, "tfjobs") in self.refuse:
            code = self.refuse[(method, "tfjobs")]
            return code, _status_body(code, "Forbidden" if code == 403 else "NotFound", "refused")
        if method == "POST" and name is None:
            problems = custom_object_problems(body) + webhook_problems(body)
            if body.get("metadata", {}).get("namespace", self.namespace) != self.namespace:
                problems.append("metadata.namespace: does not match the request's namespace")
            if problems:
                self.refused.append(problems)
                return 422, _status_body(422, "Invalid", "; ".join(problems))
            job_name = body["metadata"]["name"]
            if job_name in self.jobs:
                return 409, _status_body(
                    409, "AlreadyExists", f'tfjobs "{job_name}" already exists'
                )
            job = json.loads(json.dumps(body))
            job["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now())
            self.jobs[job_name] = job
            self.created.append(json.loads(json.dumps(body)))
            self._start(job)
            return 201, job
        if name not in self.jobs:
            return 404, _status_body(404, "NotFound", f'tfjobs.kubeflow.org "{name}" not found')
        if method == "GET":
            self._status(name)
            return 200, self.jobs[name]
        if method == "DELETE":
            for pod_name in self._job_pods(name):
                self._kill(pod_name)
                del self.pods[pod_name]
            del self.jobs[name]
            self.deleted.append(name)
            return 200, _status_body(200, "", "", status="Success")
        return 405, _status_body(405, "MethodNotAllowed", method)

    def __enter__(self) -> Cluster:
        cluster = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, result = cluster.handle(
                    self.command, url.path, urllib.parse.parse_qs(url.query), body
                )
                data = result if isinstance(result, bytes) else json.dumps(result).encode()
                self.send_response(code)
                kind = "text/plain" if isinstance(result, bytes) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)


def _condition(kind: str, reason: str, message: str) -> dict:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": _now(),
        "lastTransitionTime": _now(),
    }


def _status_body(code: int, reason: str, message: str, status: str = "Failure") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": status,
        "reason": reason,
        "message": message,
        "code": code,
    }


def rbac_requests(requests) -> set:
    """The (apiGroup, resource, verb) each recorded (method, path) needs in RBAC."""
    needed = set()
    for method, path in requests:
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[parts.index("namespaces") + 2 :]
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        verb = {"POST": "create", "DELETE": "delete"}.get(method)
        verb = verb or ("get" if len(rest) > 1 else "list")
        needed.add((group, resource, verb))
    return needed
