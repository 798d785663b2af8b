"""Test-wide settings that must hold before TensorFlow is imported anywhere."""

import os

# TFX 1.16, tf.Transform and TFMA are built on Keras 2 (tf-keras); see docs/toolchain.md.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on loopback, shared by the tests that register models."""
    from tests.mlflow_server import running_server

    with running_server(str(tmp_path_factory.mktemp("mlflow"))) as server:
        yield server


S3_KEYS = {"AWS_ACCESS_KEY_ID": "litedet-test-key", "AWS_SECRET_ACCESS_KEY": "litedet-test-secret"}


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on loopback (moto's), with a bucket "litedet", and this
    process' environment pointing at it (components/object_storage.py reads the standard AWS names).
    Yields {"url", "client" (boto3), "bucket", "keys"}."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    environment = pytest.MonkeyPatch()
    for key, value in {**S3_KEYS, "AWS_ENDPOINT_URL": url, "AWS_REGION": "us-east-1"}.items():
        environment.setenv(key, value)
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket="litedet")
    try:
        yield {"url": url, "client": client, "bucket": "litedet", "keys": dict(S3_KEYS)}
    finally:
        environment.undo()
        server.stop()


_exit_status = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


def pytest_unconfigure(config):
    """tensorflow-io's S3 file system (components/object_storage.py) aborts the interpreter's
    teardown ("pure virtual method called"), which would turn a passing run's exit code into 134:
    when it was loaded, end the process with pytest's own exit status instead, after its report."""
    storage = __import__("sys").modules.get("litedet.components.object_storage")
    if storage is not None and storage.is_configured():
        storage.exit_process(_exit_status["code"])
