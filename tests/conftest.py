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
