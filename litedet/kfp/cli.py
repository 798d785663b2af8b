"""The Kubeflow verbs of `litedet`: `compile`, and `kfp` (upload, run, schedule, runs).

`add_verbs(subparsers)` adds them to the CLI's parser; `main(args)` runs one. Building the parser
imports neither TFX nor kfp, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List

VERBS = ("compile", "kfp")
DEFAULT_PIPELINE = "litedet"
IMAGE_ENV = "LITEDET_IMAGE"
PIPELINE_ROOT_ENV = "LITEDET_PIPELINE_ROOT"

EXAMPLES = {
    "compile": f"""examples:
  litedet compile --image registry.example.com/litedet:0.1.0 \\
      --pipeline-root gs://my-bucket/litedet/root --config coco_on_gcs.yaml
  litedet compile --image REGISTRY/litedet:0.2.0 --config k8s/examples/kfp-standalone-config.yaml \\
      --pipeline-root s3://mlpipeline/v2/artifacts          # KFP 2.16/2.17 with its SeaweedFS
  litedet compile --output litedet.json ...     # TFX's PipelineJob form (Vertex AI) instead

The image and pipeline root may come from ${IMAGE_ENV} and ${PIPELINE_ROOT_ENV}. The dataset
root (dataset.root) must be gs://, s3:// or an absolute path mounted in every step; it becomes
the run-time parameter input_base, so each run can read another copy of the data. Compiling
reads nothing over the network: give evaluation.num_classes for a dataset on a store. s3://
needs kubeflow.env.AWS_ENDPOINT_URL and kubeflow.secret_env credentials, or
kubeflow.aws_s3_ambient_credentials: true (AWS S3 with the pods' own credentials).""",
    "kfp": """examples:
  export KFP_ENDPOINT=https://kubeflow.example.com/pipeline KFP_NAMESPACE=team-vision
  export KFP_BEARER_TOKEN=...         # a token that endpoint accepts (docs/kubeflow.md)
  litedet kfp upload                  # litedet-kfp.yaml: new pipeline, or a new version of it
  litedet kfp run --param input_base=gs://my-bucket/datasets/coco-2026-11
  litedet kfp schedule --cron "0 3 * * *" --name nightly   # 03:00 daily (cluster's time zone)
  litedet kfp schedule --from-file k8s/examples/recurring-run.yaml
  litedet kfp schedule --pause nightly     # or --resume nightly, --delete nightly
  litedet kfp run --wait               # exit 0 blessed, 3 not blessed, 1 failed
  litedet kfp runs --limit 10

Connection: --endpoint/KFP_ENDPOINT, --namespace/KFP_NAMESPACE (multi-user Kubeflow),
KFP_BEARER_TOKEN or, inside a pod, the projected token at
/var/run/secrets/kubeflow/pipelines/token (see docs/kubeflow.md).""",
}


def _verb(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES.get(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="KFP API URL (default: $KFP_ENDPOINT)")
    parser.add_argument(
        "--namespace",
        help="Kubeflow profile namespace (default: $KFP_NAMESPACE; empty for standalone KFP)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each API call (default 30)"
    )


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", help="uploaded pipeline's name (default litedet)")
    parser.add_argument("--version", help="pipeline version name (default: the newest)")
    parser.add_argument(
        "--experiment", help="experiment to file runs under (created if missing; default: litedet)"
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run-time parameter, e.g. input_base=gs://bucket/data (repeatable)",
    )
    parser.add_argument(
        "--pipeline-root",
        help=f"where this run's artifacts go (default: "
        f"${PIPELINE_ROOT_ENV}, else the namespace's kfp-launcher setting)",
    )
    parser.add_argument(
        "--service-account",
        help="Kubernetes service account of the step pods (e.g. litedet-pipeline-runner)",
    )


def add_verbs(subparsers) -> None:
    """Adds `compile` and `kfp` to the `litedet` parser's verbs."""
    compile_ = _verb(subparsers, "compile", "compile the pipeline for Kubeflow Pipelines (KFP v2)")
    compile_.add_argument("--config", help="YAML file of settings (see `litedet config`)")
    compile_.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable)",
    )
    compile_.add_argument(
        "--image",
        default=os.environ.get(IMAGE_ENV),
        help=f"container image of every step (default: ${IMAGE_ENV})",
    )
    compile_.add_argument(
        "--pipeline-root",
        default=os.environ.get(PIPELINE_ROOT_ENV),
        help=f"gs:// or s3:// folder for artifacts (default: ${PIPELINE_ROOT_ENV})",
    )
    compile_.add_argument(
        "--output",
        default="litedet-kfp.yaml",
        help=".yaml: the PipelineSpec to upload (default litedet-kfp.yaml); "
        ".json: TFX's PipelineJob",
    )

    kfp = _verb(subparsers, "kfp", "talk to Kubeflow Pipelines: upload, run, schedule, runs")
    actions = kfp.add_subparsers(dest="kfp_verb", metavar="ACTION", required=True)
    upload = actions.add_parser(
        "upload", help="upload a compiled pipeline (a new version when the name exists)"
    )
    _connection_flags(upload)
    upload.add_argument(
        "--package",
        default="litedet-kfp.yaml",
        help="file from `litedet compile` (default litedet-kfp.yaml)",
    )
    upload.add_argument("--name", default="litedet", help="pipeline name (default litedet)")
    upload.add_argument("--version", help="version name (default: UTC time + content hash)")
    upload.add_argument("--description")

    run = actions.add_parser("run", help="start a run of an uploaded pipeline")
    _connection_flags(run)
    _run_flags(run)
    run.add_argument("--run-name", help="display name (default: pipeline name and time)")
    run.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to end; exit 0 blessed, 3 not blessed, 1 failed (the verdict is "
        "read from the gate's gate.json in the store: needs the store's AWS_* settings here)",
    )
    run.add_argument(
        "--wait-timeout",
        type=float,
        default=6 * 3600,
        help="seconds --wait waits at most (default 6 h)",
    )
    run.add_argument(
        "--poll", type=float, default=30.0, help="seconds between --wait's checks (default 30)"
    )
    run.add_argument(
        "--gate-root",
        help="with --wait and no --pipeline-root: the root the run got from the namespace's "
        "kfp-launcher ConfigMap (defaultPipelineRoot), where --wait finds the gate's verdict",
    )

    schedule = actions.add_parser("schedule", help="create a recurring run from a cron expression")
    _connection_flags(schedule)
    _run_flags(schedule)
    schedule.add_argument(
        "--cron", help="5 fields (minute hour day month weekday), 6 with seconds first, or @daily"
    )
    schedule.add_argument("--name", help="recurring run's display name")
    schedule.add_argument("--max-concurrency", type=int, help="runs at once, 1-10 (default 1)")
    schedule.add_argument(
        "--catchup",
        action="store_true",
        default=None,
        help="after a pause, start every missed run (default: only the last)",
    )
    change = schedule.add_mutually_exclusive_group()
    for action, what in (
        ("pause", "stop starting runs"),
        ("resume", "start runs again"),
        ("delete", "delete it"),
    ):
        change.add_argument(
            f"--{action}",
            metavar="NAME_OR_ID",
            help=f"an existing recurring run: {what} (by display name or id)",
        )
    schedule.add_argument(
        "--from-file",
        help="YAML with any of: name, pipeline, version, cron, "
        "experiment, max_concurrency, catchup, parameters, pipeline_root, "
        "service_account (flags override it)",
    )

    runs = actions.add_parser("runs", help="list runs with their state, newest first")
    _connection_flags(runs)
    runs.add_argument("--experiment", help="only this experiment's runs")
    runs.add_argument("--limit", type=int, default=20)


def parse_parameters(items: List[str]) -> Dict[str, Any]:
    """NAME=VALUE flags -> typed values, by the types the compiled pipeline declares."""
    from litedet.components.run_time import PARAMETERS as RUNTIME_PARAMETERS
    from litedet.kfp.client import KfpError

    values: Dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise KfpError(f"--param {item!r}: expected NAME=VALUE")
        declared = RUNTIME_PARAMETERS.get(name)
        if declared is None:
            raise KfpError(
                f"--param {name}: not a run-time parameter of the pipeline; known: "
                f"{', '.join(sorted(RUNTIME_PARAMETERS))}"
            )
        try:
            values[name] = declared.ptype(raw)
        except ValueError:
            raise KfpError(
                f"--param {name}={raw!r}: expected a {declared.ptype.__name__}"
            ) from None
    return values


def _compile(args) -> int:
    from litedet.pipeline import configs, kubeflow_v2_runner

    if not args.image:
        raise configs.ConfigError(
            f"--image (or ${IMAGE_ENV}): the container image every step "
            "runs in; build it from the Dockerfile (docs/kubeflow.md)"
        )
    if not args.pipeline_root:
        raise configs.ConfigError(
            f"--pipeline-root (or ${PIPELINE_ROOT_ENV}): a gs:// or s3:// folder "
            "for the pipeline's artifacts"
        )
    config = configs.load_config(args.config, args.overrides)
    # Every refusal comes here, at once and offline, before TFX is imported.
    kubeflow_v2_runner.preflight(config, args.output, args.image, args.pipeline_root)
    print("Compiling (imports TFX, ~20 s) ...", flush=True)
    path = kubeflow_v2_runner.compile_pipeline(config, args.output, args.image, args.pipeline_root)
    spec = kubeflow_v2_runner.load_pipeline_spec(path)
    steps = list(spec["root"]["dag"]["tasks"])
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    print(f"Wrote {path}: {len(steps)} steps ({', '.join(steps)}), image {args.image}")
    for name, p in params.items():
        print(f"  run-time parameter {name} = {p.get('defaultValue')!r}")
    print(f"Next: litedet kfp upload --package {path}")
    return 0


def _schedule_settings(args) -> Dict[str, Any]:
    """The --from-file values, then the flags given on the command line."""
    settings: Dict[str, Any] = {}
    if args.from_file:
        import yaml

        from litedet.kfp.client import KfpError

        try:
            with open(args.from_file) as f:
                settings = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KfpError(f"{args.from_file}: cannot read ({e})") from None
        known = {
            "name",
            "pipeline",
            "version",
            "cron",
            "experiment",
            "max_concurrency",
            "catchup",
            "parameters",
            "pipeline_root",
            "service_account",
        }
        unknown = sorted(set(settings) - known)
        if unknown:
            raise KfpError(
                f"{args.from_file}: unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        settings["parameters"] = parse_parameters(
            [f"{k}={v}" for k, v in (settings.get("parameters") or {}).items()]
        )
    flags = {
        "pipeline": args.pipeline,
        "name": args.name,
        "version": args.version,
        "cron": args.cron,
        "experiment": args.experiment,
        "max_concurrency": args.max_concurrency,
        "catchup": args.catchup,
        "pipeline_root": args.pipeline_root,
        "service_account": args.service_account,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings.setdefault("pipeline", DEFAULT_PIPELINE)
    settings["parameters"] = {**settings.get("parameters", {}), **parse_parameters(args.params)}
    return settings


EXIT_BLESSED, EXIT_FAILED, EXIT_NOT_BLESSED = 0, 1, 3


def _wait(conn, run_id: str, args, root) -> int:
    """Waits for the run; 0 blessed, 3 not blessed (as `litedet run`), 1 failed."""
    from litedet.kfp import client as kfp_client

    outcome = kfp_client.wait_for_run(
        conn,
        run_id,
        timeout_s=args.wait_timeout,
        poll_s=args.poll,
        on_state=lambda state: print(f"  run {run_id}: {state}", flush=True),
    )
    if outcome.state != "SUCCEEDED":
        failed = "; ".join(outcome.failed_tasks) or "no task reported an error"
        print(f"Run {run_id} ended {outcome.state}: {failed}", file=sys.stderr)
        return EXIT_FAILED
    root = outcome.pipeline_root or root or args.gate_root
    if not root:
        raise kfp_client.KfpError(
            f"run {run_id} SUCCEEDED; its verdict is in gate.json under the run's pipeline "
            "root, which it did not name (the namespace's kfp-launcher default applied): give "
            "--gate-root with that default (kubectl get configmap kfp-launcher -o "
            "jsonpath='{.data.defaultPipelineRoot}'), or run with --pipeline-root"
        )
    name = kfp_client.pipeline_name_of_run(conn, run_id)
    report = kfp_client.gate_verdict(root, name, run_id)
    reasons = "; ".join(str(r) for r in report.get("reasons") or [])
    if report.get("blessed"):
        print(f"Run {run_id} SUCCEEDED: blessed (mAP@0.5 {report.get('map50')}, {report['uri']})")
        return EXIT_BLESSED
    print(f"Run {run_id} SUCCEEDED: not blessed ({reasons or 'see ' + report['uri']})")
    return EXIT_NOT_BLESSED


def _kfp(args) -> int:
    from litedet.kfp import client as kfp_client

    conn = kfp_client.Connection.resolve(
        endpoint=args.endpoint, namespace=args.namespace, timeout_s=args.timeout
    )
    if args.kfp_verb == "upload":
        result = kfp_client.upload(
            conn, args.package, args.name, version=args.version, description=args.description
        )
        what = "new pipeline" if result.new_pipeline else "new version"
        print(
            f"Uploaded {args.package} as {what} {args.name!r} version "
            f"{result.version_name!r} (pipeline {result.pipeline_id}, version "
            f"{result.version_id})"
        )
        return 0
    if args.kfp_verb == "run":
        root = args.pipeline_root or os.environ.get(PIPELINE_ROOT_ENV)
        if args.wait and args.wait_timeout <= 0:
            raise kfp_client.KfpError("--wait-timeout: must be > 0 seconds")
        run_id = kfp_client.start_run(
            conn,
            args.pipeline or DEFAULT_PIPELINE,
            parse_parameters(args.params),
            version=args.version,
            experiment=args.experiment or kfp_client.DEFAULT_EXPERIMENT,
            run_name=args.run_name,
            pipeline_root=root,
            service_account=args.service_account,
        )
        print(f"Started run {run_id} of {args.pipeline or DEFAULT_PIPELINE!r}", flush=True)
        return _wait(conn, run_id, args, root) if args.wait else 0
    if args.kfp_verb == "schedule":
        for action in ("pause", "resume", "delete"):
            target = getattr(args, action)
            if target:
                job_id = kfp_client.change_schedule(conn, target, action)
                done = {"pause": "Paused", "resume": "Resumed", "delete": "Deleted"}[action]
                print(f"{done} recurring run {target!r} ({job_id})")
                return 0
        s = _schedule_settings(args)
        if not s.get("cron") or not s.get("name"):
            raise kfp_client.KfpError("schedule needs --cron and --name (or both in --from-file)")
        cron = kfp_client.normalize_cron(s["cron"])
        job_id = kfp_client.schedule(
            conn,
            s["pipeline"],
            cron,
            s["parameters"],
            name=s["name"],
            version=s.get("version"),
            experiment=s.get("experiment") or kfp_client.DEFAULT_EXPERIMENT,
            max_concurrency=int(s.get("max_concurrency") or 1),
            pipeline_root=s.get("pipeline_root") or os.environ.get(PIPELINE_ROOT_ENV),
            service_account=s.get("service_account"),
            catchup=bool(s.get("catchup")),
        )
        print(
            f"Scheduled {s['name']!r} ({s['pipeline']}) on cron '{cron}' "
            f"(seconds first; the KFP scheduler's time zone): recurring run {job_id}"
        )
        return 0
    rows = kfp_client.list_runs(conn, experiment=args.experiment, limit=args.limit)
    if not rows:
        print("No runs.")
        return 0
    print(f"{'RUN ID':36}  {'STATE':10}  {'CREATED (UTC)':19}  NAME")
    for r in rows:
        created = r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "-"
        print(f"{r.run_id:36}  {r.state:10}  {created:19}  {r.name}")
    return 0


def main(args) -> int:
    """Runs `compile` or `kfp ...`; errors print one line and return non-zero."""
    from litedet.kfp.client import KfpError
    from litedet.pipeline.configs import ConfigError

    try:
        return _compile(args) if args.verb == "compile" else _kfp(args)
    except ConfigError as e:
        print(f"litedet: error: {e}", file=sys.stderr)
        return 2
    except KfpError as e:
        print(f"litedet: error: {e}", file=sys.stderr)
        return 1
