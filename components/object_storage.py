"""Object storage for every process that reads or writes artifacts: gs:// and s3:// (AWS, MinIO).

Two I/O layers touch artifacts: TensorFlow's file system (`tf.io.gfile`: TFX executors, TFT,
TFMA, Keras) and Beam's `FileSystems` (ExampleGen, StatisticsGen, Transform). TensorFlow 2.16
knows `gs://` but not `s3://`: `tensorflow-io` adds it once imported. Beam's S3 file system uses
boto3.

One contract for both, the standard AWS environment, so that a Kubernetes Secret mounted as
environment variables configures everything and no credential ever enters the pipeline
definition, its compiled spec or ML Metadata:

    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY    credentials (a Secret)
    AWS_ENDPOINT_URL                            e.g. http://minio-service.kubeflow:9000 (MinIO);
                                                unset for AWS S3
    AWS_REGION                                  default us-east-1

`configure()` derives what tensorflow-io reads (S3_ENDPOINT, S3_USE_HTTPS; path-style addressing
follows from a custom endpoint) and registers its `s3://` file system in this process. Beam's
worker processes import this module at start (`--beam_plugins`, see `beam_args`), so they get the
same. Importing this module configures the process when an S3 endpoint or credentials are set.
"""

from __future__ import annotations

import os
from typing import List
from urllib.parse import urlparse

ENDPOINT_ENV = "AWS_ENDPOINT_URL"
REMOTE_SCHEMES = ("gs://", "s3://")


class StorageError(RuntimeError):
    """An artifact location this process cannot use; the message says what to set."""


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def uses_s3(*uris: str) -> bool:
    return any(uri.startswith("s3://") for uri in uris if uri)


def _tensorflow_io_environment() -> None:
    endpoint = os.environ.get(ENDPOINT_ENV)
    os.environ.setdefault("AWS_REGION", "us-east-1")
    if endpoint:
        parsed = urlparse(endpoint)
        if not parsed.scheme or not parsed.netloc:
            raise StorageError(
                f"{ENDPOINT_ENV}={endpoint!r}: give a URL such as "
                "http://minio-service.kubeflow:9000"
            )
        os.environ.setdefault("S3_ENDPOINT", endpoint)
        os.environ.setdefault("S3_USE_HTTPS", "1" if parsed.scheme == "https" else "0")
        os.environ.setdefault("S3_VERIFY_SSL", "1" if parsed.scheme == "https" else "0")


_configured = False


def configure() -> None:
    """Makes `s3://` readable and writable through tf.io.gfile in this process (idempotent)."""
    global _configured
    if _configured:
        return
    _tensorflow_io_environment()
    try:
        import tensorflow_io  # noqa: F401  (registers the s3:// file system with TensorFlow)
    except ImportError as error:  # pragma: no cover - the lock installs it
        raise StorageError("s3:// needs the tensorflow-io package (requirements.lock)") from error
    _configured = True


def is_configured() -> bool:
    return _configured


def exit_process(code: int) -> None:
    """Ends the process without running C++ static destructors when tensorflow-io's S3 file
    system is loaded: its AWS SDK aborts the interpreter's exit ("pure virtual method called",
    SIGABRT) after all work is done, which a step's exit code would report as a failure."""
    import logging
    import sys

    if not _configured:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def beam_args(*uris: str) -> List[str]:
    """Extra Beam pipeline arguments for steps that touch these URIs: Beam's worker processes
    import this module first, so TensorFlow inside them knows s3:// too."""
    if not uses_s3(*uris):
        return []
    return [f"--beam_plugins={__name__}"]


def check_credentials(uri: str) -> None:
    """Fails early, naming the variables, when an s3:// location has no credentials here."""
    if uri.startswith("s3://") and not (
        os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")
    ):
        raise StorageError(
            f"{uri}: s3:// needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
            f"the environment (and {ENDPOINT_ENV} for MinIO)"
        )


if os.environ.get(ENDPOINT_ENV) or os.environ.get("AWS_ACCESS_KEY_ID"):
    # Imported as a Beam plugin in a worker process, or by an executor: configure right away.
    configure()
