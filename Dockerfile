# The image every litedet Kubeflow pipeline step runs in (see docs/kubeflow.md, "Image").
#   docker build -t REGISTRY/litedet:0.1.0 .
# The base is the TFX image of the TFX version in requirements.lock (tests/test_kubeflow.py
# checks that they match): TFX's Kubeflow V2 entrypoint and its heavy dependencies come with it.
FROM tensorflow/tfx:1.16.0

# TFX 1.16, tf.Transform and TFMA are built on Keras 2 (tf-keras): every process, Beam's worker
# processes included, must see this before TensorFlow is imported.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The compiled pipeline names files here (pipeline/kubeflow_v2_runner.py, IMAGE_PROJECT_DIR).
WORKDIR /opt/litedet

# Fail the build early, with a clear message, if the base image is not the stack the lock pins.
RUN python -c "import sys, tfx; \
assert sys.version_info[:2] == (3, 10), 'requirements.lock is resolved for Python 3.10, base has ' + sys.version; \
assert tfx.__version__ == '1.16.0', 'base image has TFX ' + tfx.__version__"

# Dependencies first, so this layer is rebuilt only when the lock changes. pip keeps every
# package the base already has at the pinned version and installs or replaces the rest, so the
# image runs the same set the tests ran.
COPY requirements.lock ./
RUN python -m pip install --requirement requirements.lock

COPY setup.py README.md requirements.in ./
COPY components ./components
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY litedet ./litedet
# Editable: the code stays at /opt/litedet (where the compiled pipeline expects the schema), and
# the `litedet` command exists for in-cluster submission (k8s/examples/submit-run-job.yaml).
RUN python -m pip install --no-deps --editable . \
 && python -c "import litedet.components.example_gen.executor, litedet.kfp.client"

# A numeric non-root user, so Kubernetes can verify runAsNonRoot without a securityContext.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin litedet
USER 10001:10001
ENV HOME=/home/litedet
