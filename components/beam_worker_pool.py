"""The SDK worker pool of a portable Beam run (`beam.runner: portable`, docs/flink.md).

A portable runner (Beam's Flink job server, Beam's local job service) runs each step's Beam job
on its own workers and asks this pool, at the address `beam.worker_pool` names (Beam's EXTERNAL
environment), for a Python SDK worker to execute litedet's and TFX's code. It runs beside those
workers, from the litedet image (the Flink TaskManager's sidecar, k8s/flink/):

    python -m litedet.components.beam_worker_pool --service_port=50000

This is Beam's own worker pool (apache_beam.runners.worker.worker_pool_main), with each worker
started the way Beam's SDK container starts one (its `boot` program, sdks/python/container/
boot.go): the job's pipeline options are fetched from the runner's provision service and handed
to `sdk_worker_main`. Started without an executable, Beam's pool runs bare `SdkHarness` workers
that never see the options: no `--beam_plugins` (so no object-store settings,
components/object_storage.py) and no options for Beam's S3 file system, which then fails with
"Must provide one of client or options". Unlike `boot`, a worker installs nothing: the image
holds litedet and every dependency, and the pipeline names that image (`--sdk_container_image`)
so that TFX stages nothing either.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from typing import Dict, List, Optional

DEFAULT_PORT = 50000
# This module's import name (`__name__` is "__main__" when it runs with `python -m`).
MODULE = "litedet.components.beam_worker_pool"


def worker_executable(folder: str) -> str:
    """An executable for the pool's `--container_executable` contract (it is started with the
    container flags: --id, --control_endpoint, ...) that runs `worker` below in this Python.
    Its stdout goes to stderr: Beam's pool pipes a worker's stdout and never reads it, so a
    worker that printed enough would block once the pipe filled."""
    path = os.path.join(folder, "litedet-beam-worker")
    command = f'exec {shlex.quote(sys.executable)} -m {MODULE} --worker "$@" 1>&2'
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\n{command}\n")
    os.chmod(path, 0o755)
    return path


def serve(port: int) -> None:
    """Runs the pool until the process is stopped."""
    from apache_beam.runners.worker import worker_pool_main

    # The executable goes into a temporary folder: in a pod with a read-only root file system
    # that is the emptyDir mounted at /tmp (k8s/flink/).
    executable = worker_executable(tempfile.mkdtemp(prefix="litedet-beam-worker-"))
    worker_pool_main.main([f"--service_port={port}", f"--container_executable={executable}"])


def _provision_info(endpoint: str, worker_id: str):
    """The job's provision info (pipeline options, runner capabilities) from the runner."""
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        response = stub.GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(),
            metadata=[("worker_id", worker_id)],  # the runner's provision service requires it
        )
    return response.info


def harness_environment(args: argparse.Namespace, info) -> Dict[str, str]:
    """What `sdk_worker_main` reads from its environment, as Beam's `boot` sets it."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import json_format, text_format

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    environment = {
        "WORKER_ID": args.id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "SEMI_PERSISTENT_DIRECTORY": args.semi_persist_dir,
        "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(args.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": descriptor(args.logging_endpoint),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
    }
    if info.HasField("status_endpoint"):
        environment["STATUS_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
            info.status_endpoint
        )
    return environment


def worker(argv: List[str]) -> None:
    """One SDK worker, started by the pool with Beam's container flags."""
    parser = argparse.ArgumentParser(prog=f"{MODULE} --worker")
    for flag in ("id", "control_endpoint", "provision_endpoint", "logging_endpoint"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--artifact_endpoint")  # nothing is retrieved: the image holds it all
    parser.add_argument("--semi_persist_dir", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    info = _provision_info(args.provision_endpoint, args.id)
    os.environ.update(harness_environment(args, info))
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main([sys.argv[0]])


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--service_port", type=int, default=DEFAULT_PORT)
    serve(parser.parse_args(argv).service_port)


if __name__ == "__main__":
    main()
