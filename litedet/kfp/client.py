"""Kubeflow Pipelines from the command line: upload, run, schedule, list runs.

A thin layer over `kfp.Client` (the KFP v2beta1 REST API) that turns each failure into a
`KfpError` whose one-line message names the endpoint and what to check.

Where it connects, first found wins:
- endpoint: the argument, then KFP_ENDPOINT, then (inside a pod) the in-cluster KFP service
  http://ml-pipeline.kubeflow.svc.cluster.local:8888. Through a Kubeflow gateway the API lives
  under /pipeline (https://kubeflow.example.com/pipeline); a port-forward to the ml-pipeline
  service is http://localhost:8888.
- namespace: the argument, then KFP_NAMESPACE: the Kubeflow profile namespace on a multi-user
  install; leave it empty for standalone KFP.
- credentials: a bearer token from the argument or KFP_BEARER_TOKEN; else the projected
  service-account token a pod gets for KFP (KF_PIPELINES_SA_TOKEN_PATH, by default
  /var/run/secrets/kubeflow/pipelines/token, audience pipelines.kubeflow.org), re-read on every
  request because the kubelet rotates it; else no credentials (a port-forwarded standalone KFP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import tempfile
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional

IN_CLUSTER_ENDPOINT = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # kfp.client.KF_PIPELINES_SA_TOKEN_PATH
DEFAULT_EXPERIMENT = "litedet"


class KfpError(RuntimeError):
    """A Kubeflow Pipelines call that failed; the message says what to check."""


@dataclasses.dataclass(frozen=True)
class Connection:
    endpoint: str
    namespace: Optional[str] = None
    token: Optional[str] = dataclasses.field(default=None, repr=False)
    token_path: Optional[str] = None  # a service-account token file, re-read per request
    timeout_s: float = 30.0

    @property
    def auth(self) -> str:
        if self.token:
            return "a bearer token (KFP_BEARER_TOKEN)"
        if self.token_path:
            return f"the service-account token at {self.token_path}"
        return "no credentials"

    @classmethod
    def resolve(
        cls,
        endpoint: Optional[str] = None,
        namespace: Optional[str] = None,
        token: Optional[str] = None,
        environ: Mapping[str, str] = os.environ,
        timeout_s: float = 30.0,
    ) -> Connection:
        endpoint = endpoint or environ.get("KFP_ENDPOINT")
        if not endpoint and environ.get("KUBERNETES_SERVICE_HOST"):
            endpoint = IN_CLUSTER_ENDPOINT
        if not endpoint:
            raise KfpError(
                "no Kubeflow Pipelines endpoint: set KFP_ENDPOINT or --endpoint, "
                "e.g. https://kubeflow.example.com/pipeline or http://localhost:8888 "
                "after `kubectl port-forward -n kubeflow svc/ml-pipeline 8888`"
            )
        if not endpoint.startswith(("http://", "https://")):
            raise KfpError(f"endpoint {endpoint!r}: give the scheme, http:// or https://")
        token = token or environ.get("KFP_BEARER_TOKEN") or None
        token_path = None
        if not token:
            candidate = environ.get("KF_PIPELINES_SA_TOKEN_PATH") or SA_TOKEN_PATH
            token_path = candidate if os.path.isfile(candidate) else None
        return cls(
            endpoint=endpoint.rstrip("/"),
            namespace=namespace or environ.get("KFP_NAMESPACE") or None,
            token=token,
            token_path=token_path,
            timeout_s=timeout_s,
        )


@dataclasses.dataclass(frozen=True)
class Uploaded:
    pipeline_id: str
    version_id: str
    version_name: str
    new_pipeline: bool  # False: a new version of an existing pipeline


@dataclasses.dataclass(frozen=True)
class RunRow:
    run_id: str
    name: str
    state: str
    created_at: Optional[datetime.datetime]
    finished_at: Optional[datetime.datetime]


# --- connecting ----------------------------------------------------------------------------


def _kfp_client_class():
    import kfp

    class _Client(kfp.Client):
        """kfp.Client whose health check (made while connecting, to detect a multi-user
        install) is one request with a timeout, not five tries five seconds apart."""

        def __init__(self, *, timeout_s: float, **kwargs):
            self._litedet_timeout = timeout_s
            super().__init__(**kwargs)

        def get_kfp_healthz(self, sleep_duration: int = 5):
            return self._healthz_api.get_healthz(_request_timeout=self._litedet_timeout)

    return _Client


def connect(conn: Connection):
    """A kfp.Client for `conn`. Only a standalone (no namespace) connection calls the server
    here; its errors are translated like every other call's."""
    credentials = None
    if conn.token_path:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(path=conn.token_path)
    with _api_errors(conn, "connecting"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2+"
        # An explicit host keeps kfp.Client from falling back to kubeconfig or port-forwards.
        client = _kfp_client_class()(
            timeout_s=conn.timeout_s,
            host=conn.endpoint,
            existing_token=conn.token,
            credentials=credentials,
            namespace=conn.namespace or "kubeflow",
        )
    _guard_requests(client, conn)
    return client


def _guard_requests(client, conn: Connection) -> None:
    """Every request gets a timeout (kfp.Client sets none, so a silent endpoint would hang the
    CLI), and a web page where JSON was expected fails clearly: a Kubeflow gateway answers an
    unauthenticated API call by redirecting to its login page."""
    rest = client._run_api.api_client.rest_client  # one ApiClient is shared by every API object
    request = rest.request

    def guarded(*args, _request_timeout=None, **kwargs):
        response = request(*args, _request_timeout=_request_timeout or conn.timeout_s, **kwargs)
        content_type = (response.getheader("Content-Type") or "").lower()
        if content_type.startswith("text/html"):
            raise KfpError(
                f"{conn.endpoint} answered with a web page, not the KFP API (a login redirect?): "
                f"the request carried {conn.auth}; give a token that the gateway accepts "
                "(KFP_BEARER_TOKEN) and check KFP_ENDPOINT ends where the API is "
                "(…/pipeline behind a Kubeflow gateway)"
            )
        return response

    rest.request = guarded


@contextlib.contextmanager
def _api_errors(conn: Connection, doing: str) -> Iterator[None]:
    import kfp_server_api
    import urllib3

    where = f" in namespace {conn.namespace}" if conn.namespace else ""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # kfp.Client prints UI links itself
            yield
    except KfpError:
        raise
    except kfp_server_api.ApiException as e:
        status = e.status or 0
        if status == 401:
            raise KfpError(
                f"{doing}: {conn.endpoint} refused {conn.auth} (HTTP 401): set "
                "KFP_BEARER_TOKEN to a current token that this endpoint accepts"
            ) from None
        if status == 403:
            raise KfpError(
                f"{doing}: {conn.endpoint} denied access{where} (HTTP 403) to {conn.auth}: "
                "check KFP_NAMESPACE is a profile this account may use"
            ) from None
        if status == 0:  # TLS failures come back as status 0
            raise KfpError(
                f"{doing}: cannot talk to {conn.endpoint}: {e.reason}; check the "
                "endpoint's scheme and certificate"
            ) from None
        raise KfpError(
            f"{doing}: {conn.endpoint} answered HTTP {status}: {_server_message(e)}"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        if isinstance(e, OSError) and conn.token_path and e.filename == conn.token_path:
            raise KfpError(
                f"{doing}: cannot read the service-account token at "
                f"{conn.token_path} ({e.strerror})"
            ) from None
        raise KfpError(
            f"{doing}: cannot reach Kubeflow Pipelines at {conn.endpoint} "
            f"({type(e).__name__}): check KFP_ENDPOINT, that the KFP API is up, and any "
            "port-forward or VPN"
        ) from None


def _server_message(error) -> str:
    try:
        body = json.loads(error.body)
        return str(body.get("message") or body.get("error") or body)[:300]
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


# --- lookups -------------------------------------------------------------------------------


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def _find_pipeline_id(client, conn: Connection, name: str) -> Optional[str]:
    found = (
        client.list_pipelines(
            filter=_name_filter(name), namespace=conn.namespace, page_size=2
        ).pipelines
        or []
    )
    return found[0].pipeline_id if found else None


def _pipeline_id(client, conn: Connection, name: str) -> str:
    pipeline_id = _find_pipeline_id(client, conn, name)
    if pipeline_id is None:
        where = f" in namespace {conn.namespace}" if conn.namespace else ""
        raise KfpError(
            f"no pipeline named {name!r} at {conn.endpoint}{where}: upload it first "
            "(`litedet kfp upload`) or check the name in the KFP UI"
        )
    return pipeline_id


def _version_id(
    client, conn: Connection, pipeline_id: str, pipeline: str, version: Optional[str]
) -> str:
    """The named version, or the newest one."""
    if version:
        found = (
            client.list_pipeline_versions(
                pipeline_id, filter=_name_filter(version), page_size=2
            ).pipeline_versions
            or []
        )
        if not found:
            raise KfpError(
                f"pipeline {pipeline!r} at {conn.endpoint} has no version named "
                f"{version!r}: list its versions in the KFP UI"
            )
    else:
        found = (
            client.list_pipeline_versions(
                pipeline_id, sort_by="created_at desc", page_size=1
            ).pipeline_versions
            or []
        )
        if not found:
            raise KfpError(
                f"pipeline {pipeline!r} at {conn.endpoint} has no versions: "
                "upload one (`litedet kfp upload`)"
            )
    return found[0].pipeline_version_id


def _experiment_id(client, conn: Connection, name: str, create: bool) -> str:
    if create:  # kfp.Client.create_experiment returns the existing one of that name
        return client.create_experiment(name, namespace=conn.namespace).experiment_id
    found = (
        client.list_experiments(
            filter=_name_filter(name), namespace=conn.namespace, page_size=2
        ).experiments
        or []
    )
    if not found:
        raise KfpError(f"no experiment named {name!r} at {conn.endpoint}")
    return found[0].experiment_id


# --- the verbs -----------------------------------------------------------------------------


def _as_pipeline_spec_yaml(package_path: str, workdir: str) -> str:
    """The KFP API server accepts a PipelineSpec document; a compiled .json is TFX's PipelineJob
    wrapper, so its `pipelineSpec` is written out on its own."""
    from litedet.pipeline.kubeflow_v2_runner import load_pipeline_spec

    try:
        spec = load_pipeline_spec(package_path)
    except (OSError, ValueError) as e:
        raise KfpError(f"{package_path}: cannot read the compiled pipeline ({e})") from None
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise KfpError(
            f"{package_path}: not a compiled pipeline (no pipelineInfo/root); "
            "make one with `litedet compile`"
        )
    if package_path.endswith((".yaml", ".yml")):
        return package_path
    import yaml

    path = os.path.join(workdir, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=True)
    return path


def default_version_name(package_path: str) -> str:
    """Unique per upload and traceable to the file: UTC time plus the file's content hash."""
    with open(package_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:8]
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-") + digest


def upload(
    conn: Connection,
    package_path: str,
    name: str,
    version: Optional[str] = None,
    description: Optional[str] = None,
) -> Uploaded:
    """Uploads a compiled pipeline as `name`, or as a new version when `name` exists."""
    version = version or default_version_name(package_path)
    with tempfile.TemporaryDirectory() as workdir:
        spec_path = _as_pipeline_spec_yaml(package_path, workdir)
        client = connect(conn)
        with _api_errors(conn, f"uploading {name!r}"):
            pipeline_id = _find_pipeline_id(client, conn, name)
            if pipeline_id is None:
                pipeline_id = client.upload_pipeline(
                    spec_path, pipeline_name=name, description=description, namespace=conn.namespace
                ).pipeline_id
                # The server makes the first version itself, named after the pipeline.
                newest = (
                    client.list_pipeline_versions(
                        pipeline_id, sort_by="created_at desc", page_size=1
                    ).pipeline_versions
                    or []
                )
                if not newest:
                    raise KfpError(
                        f"uploading {name!r}: {conn.endpoint} created the pipeline "
                        "but lists no version of it"
                    )
                return Uploaded(
                    pipeline_id,
                    newest[0].pipeline_version_id,
                    newest[0].display_name,
                    new_pipeline=True,
                )
            created = client.upload_pipeline_version(
                spec_path, version, pipeline_id=pipeline_id, description=description
            )
            return Uploaded(pipeline_id, created.pipeline_version_id, version, new_pipeline=False)


def start_run(
    conn: Connection,
    pipeline: str,
    parameters: Dict[str, Any],
    *,
    version: Optional[str] = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: Optional[str] = None,
    pipeline_root: Optional[str] = None,
    service_account: Optional[str] = None,
) -> str:
    """Starts one run of an uploaded pipeline; returns the run id."""
    client = connect(conn)
    with _api_errors(conn, f"starting a run of {pipeline!r}"):
        pipeline_id = _pipeline_id(client, conn, pipeline)
        version_id = _version_id(client, conn, pipeline_id, pipeline, version)
        experiment_id = _experiment_id(client, conn, experiment, create=True)
        run_name = run_name or f"{pipeline} {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"
        run = client.run_pipeline(
            experiment_id,
            run_name,
            params=parameters,
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
        return run.run_id


def normalize_cron(expression: str) -> str:
    """KFP's scheduler reads cron with a leading seconds field (github.com/robfig/cron v1), so
    the usual five fields would be read shifted: '0 3 * * *' would fire at minute 3 of every
    hour, not daily at 03:00. Five fields get '0 ' in front; six fields and @descriptors pass
    unchanged."""
    expression = " ".join(expression.split())
    if expression.startswith("@"):
        return expression
    fields = expression.split(" ")
    if len(fields) == 5:
        return "0 " + expression
    if len(fields) == 6:
        return expression
    raise KfpError(
        f"cron {expression!r}: give 5 fields (minute hour day month weekday), "
        "6 with seconds first, or @daily/@hourly/@every 6h"
    )


def schedule(
    conn: Connection,
    pipeline: str,
    cron: str,
    parameters: Dict[str, Any],
    *,
    name: str,
    version: Optional[str] = None,
    experiment: str = DEFAULT_EXPERIMENT,
    max_concurrency: int = 1,
    pipeline_root: Optional[str] = None,
    service_account: Optional[str] = None,
    catchup: bool = False,
) -> str:
    """Creates a recurring run; returns its id."""
    cron = normalize_cron(cron)
    if not 1 <= max_concurrency <= 10:  # the KFP API server's limits
        raise KfpError(f"max concurrency {max_concurrency}: must be 1 to 10")
    client = connect(conn)
    with _api_errors(conn, f"scheduling {pipeline!r}"):
        pipeline_id = _pipeline_id(client, conn, pipeline)
        version_id = _version_id(client, conn, pipeline_id, pipeline, version)
        experiment_id = _experiment_id(client, conn, experiment, create=True)
        recurring = client.create_recurring_run(
            experiment_id,
            name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=parameters,
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
        return recurring.recurring_run_id


def list_runs(conn: Connection, experiment: Optional[str] = None, limit: int = 20) -> List[RunRow]:
    """The newest runs first, with their state (PENDING, RUNNING, SUCCEEDED, FAILED, ...)."""
    client = connect(conn)
    with _api_errors(conn, "listing runs"):
        experiment_id = (
            _experiment_id(client, conn, experiment, create=False) if experiment else None
        )
        runs = client.list_runs(
            page_size=limit,
            sort_by="created_at desc",
            experiment_id=experiment_id,
            namespace=conn.namespace,
        ).runs
        return [
            RunRow(
                r.run_id,
                r.display_name or "",
                r.state or "RUNTIME_STATE_UNSPECIFIED",
                r.created_at,
                r.finished_at,
            )
            for r in runs or []
        ]


# --- waiting for a run, and its verdict -------------------------------------------------------

# The run states after which nothing changes (KFP v2beta1 RuntimeState).
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
GATE_TASK = "ModelGate"  # the task whose `blessing` output holds gate.json
GATE_FILE = "gate.json"  # components/evaluation/executor.py, GATE_FILE


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    run_id: str
    state: str
    pipeline_root: Optional[str]  # as the run names it; None: the namespace's default
    failed_tasks: List[str]  # "Task: message" of every failed task


def wait_for_run(
    conn: Connection,
    run_id: str,
    *,
    timeout_s: float = 6 * 3600,
    poll_s: float = 30.0,
    on_state=None,
    sleep=None,
    clock=None,
) -> RunOutcome:
    """Polls the run until it reaches a final state; `on_state(state)` hears every change."""
    import time

    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    client = connect(conn)
    deadline = clock() + timeout_s
    last = None
    while True:
        with _api_errors(conn, f"waiting for run {run_id}"):
            run = client.get_run(run_id)
        state = run.state or "RUNTIME_STATE_UNSPECIFIED"
        if state != last and on_state is not None:
            on_state(state)
        last = state
        if state in FINAL_STATES:
            failed = []
            for task in (run.run_details.task_details if run.run_details else None) or []:
                if task.state == "FAILED":
                    message = (task.error.message if task.error else "") or "failed"
                    failed.append(f"{task.display_name}: {message}")
            root = run.runtime_config.pipeline_root if run.runtime_config else None
            return RunOutcome(run_id, state, root or None, failed)
        if clock() >= deadline:
            raise KfpError(
                f"run {run_id} is still {state} after {timeout_s:.0f} s; it goes on: "
                "`litedet kfp runs` shows it"
            )
        sleep(poll_s)


def pipeline_name_of_run(conn: Connection, run_id: str) -> str:
    """The compiled pipeline's own name (pipelineInfo.name), which KFP's driver puts in every
    artifact URI: <root>/<name>/<run id>/<task>/<uuid>/<output>."""
    client = connect(conn)
    with _api_errors(conn, f"reading run {run_id}"):
        run = client.get_run(run_id)
        ref = run.pipeline_version_reference
        spec = run.pipeline_spec
        if not spec and ref is not None:
            spec = client.get_pipeline_version(
                ref.pipeline_id, ref.pipeline_version_id
            ).pipeline_spec
    name = ((spec or {}).get("pipelineInfo") or {}).get("name")
    if not name:
        raise KfpError(f"run {run_id}: its pipeline spec has no pipelineInfo.name")
    return name


def _gate_files_s3(prefix: str) -> List[Dict[str, Any]]:
    import boto3
    import botocore.config

    bucket, _, key = prefix[len("s3://") :].partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        config=botocore.config.Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}
        ),
    )
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            if item["Key"].endswith(f"/blessing/{GATE_FILE}"):
                found.append((item["LastModified"], item["Key"]))
    reports = []
    for _, found_key in sorted(found, reverse=True):
        body = s3.get_object(Bucket=bucket, Key=found_key)["Body"].read()
        reports.append({"uri": f"s3://{bucket}/{found_key}", **json.loads(body)})
    return reports


def _gate_files_local_or_gcs(prefix: str) -> List[Dict[str, Any]]:
    if prefix.startswith("gs://"):
        import tensorflow as tf

        glob, read, mtime = (
            tf.io.gfile.glob,
            lambda p: tf.io.gfile.GFile(p).read(),
            lambda p: tf.io.gfile.stat(p).mtime_nsec,
        )
    else:
        import glob as globbing

        glob = globbing.glob
        mtime = os.path.getmtime

        def read(path):
            with open(path) as f:
                return f.read()

    paths = sorted(glob(f"{prefix}*/blessing/{GATE_FILE}"), key=mtime, reverse=True)
    return [{"uri": p, **json.loads(read(p))} for p in paths]


def gate_verdict(pipeline_root: str, pipeline_name: str, run_id: str) -> Dict[str, Any]:
    """The ModelGate's gate.json of a run (the newest, if the task was retried): read from the
    object store under <root>/<pipeline>/<run id>/ModelGate/, with the AWS_* (s3://) or Google
    (gs://) credentials of this process."""
    prefix = f"{pipeline_root.rstrip('/')}/{pipeline_name}/{run_id}/{GATE_TASK}/"
    try:
        if prefix.startswith("s3://"):
            reports = _gate_files_s3(prefix)
        else:
            reports = _gate_files_local_or_gcs(prefix)
    except Exception as error:  # no route, refused, credentials: one line, what to set
        raise KfpError(
            f"reading the gate's verdict under {prefix}: {type(error).__name__}: "
            f"{str(error)[:200]}; this needs the store's endpoint and credentials here "
            "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; for KFP's SeaweedFS "
            "`kubectl -n kubeflow port-forward svc/seaweedfs 8333` and "
            "AWS_ENDPOINT_URL=http://localhost:8333)"
        ) from None
    if not reports:
        raise KfpError(
            f"no {GATE_FILE} under {prefix}: the run's {GATE_TASK} wrote no verdict there "
            "(is this the run's pipeline root?)"
        )
    return reports[0]


# --- recurring runs: pause, resume, delete ------------------------------------------------------


def _recurring_run_id(client, conn: Connection, name_or_id: str) -> str:
    found = (
        client.list_recurring_runs(
            filter=_name_filter(name_or_id), namespace=conn.namespace, page_size=10
        ).recurring_runs
        or []
    )
    if len(found) > 1:
        ids = ", ".join(r.recurring_run_id for r in found)
        raise KfpError(
            f"{len(found)} recurring runs are named {name_or_id!r} ({ids}): give the id instead"
        )
    if found:
        return found[0].recurring_run_id
    import kfp_server_api

    try:  # not a name: perhaps an id
        return client.get_recurring_run(name_or_id).recurring_run_id
    except kfp_server_api.ApiException as e:
        if e.status in (400, 404):
            where = f" in namespace {conn.namespace}" if conn.namespace else ""
            raise KfpError(
                f"no recurring run named {name_or_id!r} at {conn.endpoint}{where}: "
                "check the name in the KFP UI (Recurring runs)"
            ) from None
        raise


def change_schedule(conn: Connection, name_or_id: str, action: str) -> str:
    """Pauses ("pause"), resumes ("resume") or deletes ("delete") a recurring run given by
    display name or id; returns its id."""
    client = connect(conn)
    with _api_errors(conn, f"{action} recurring run {name_or_id!r}"):
        recurring_run_id = _recurring_run_id(client, conn, name_or_id)
        if action == "pause":
            client.disable_recurring_run(recurring_run_id)
        elif action == "resume":
            client.enable_recurring_run(recurring_run_id)
        elif action == "delete":
            client.delete_recurring_run(recurring_run_id)
        else:
            raise KfpError(f"unknown schedule action {action!r}")
    return recurring_run_id
