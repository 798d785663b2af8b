# The image every litedet Kubeflow pipeline step runs in (docs/cluster.md, "Image").
#   docker build --build-arg TFX_IMAGE_DIGEST=sha256:... -t REGISTRY/litedet:0.2.0 .
#   ... --build-arg BACKBONE_WEIGHTS="0.35:224 0.5:224"    ImageNet weights to bake (default below)
#   ... --build-arg TENSORFLOW_VARIANT=gpu -t REGISTRY/litedet:0.2.0-gpu .   CUDA TensorFlow
# The base is the TFX image of the TFX version in requirements.lock (tests/test_kubeflow.py
# checks that they match): TFX's Kubeflow V2 entrypoint and its heavy dependencies come with it.
#
# Pin the base by digest: a tag can be moved, a digest cannot. No digest of tensorflow/tfx:1.16.0
# could be verified where this file was written (no registry access), so none is filled in here.
# Look it up once, then pass it on every build or write it in as the default below:
#   docker buildx imagetools inspect tensorflow/tfx:1.16.0     # "Digest: sha256:..."
# Empty: the build uses the tag, and the image's org.opencontainers.image.base.digest label says
# so (empty).
ARG TFX_IMAGE_DIGEST=""

FROM tensorflow/tfx:1.16.0${TFX_IMAGE_DIGEST:+@}${TFX_IMAGE_DIGEST} AS tfx

# TFX 1.16, tf.Transform and TFMA are built on Keras 2 (tf-keras): every process, Beam's worker
# processes included, must see this before TensorFlow is imported. Nothing secret is set in this
# file: object-store credentials reach the steps at run time from Kubernetes Secrets.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fail the build early, with a clear message, if the base image is not the stack the lock pins.
RUN python -c "import sys, tfx; \
assert sys.version_info[:2] == (3, 10), 'requirements.lock is resolved for Python 3.10, base has ' + sys.version; \
assert tfx.__version__ == '1.16.0', 'base image has TFX ' + tfx.__version__"

# The litedet wheel, built apart: no source tree, build folder or egg-info reaches the image.
FROM tfx AS wheel
WORKDIR /src
COPY setup.py pyproject.toml README.md requirements.in ./
COPY litedet ./litedet
COPY pipeline ./pipeline
COPY components ./components
COPY schemas ./schemas
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM tfx
ARG TFX_IMAGE_DIGEST
# cpu: the base image's TensorFlow. gpu: the same TensorFlow version from its `and-cuda` extra,
# which adds NVIDIA's CUDA 12.3 / cuDNN 8.9 libraries as pip wheels (pinned by that TensorFlow
# release); the node needs an NVIDIA driver for CUDA 12.3 and the device plugin
# (kubeflow.trainer_accelerator: nvidia.com/gpu). tests/test_kubeflow.py checks the pin.
ARG TENSORFLOW_VARIANT=cpu
LABEL org.opencontainers.image.base.name="docker.io/tensorflow/tfx:1.16.0" \
      org.opencontainers.image.base.digest="${TFX_IMAGE_DIGEST}" \
      io.litedet.tensorflow-variant="${TENSORFLOW_VARIANT}"

# The compiled pipeline names files here (pipeline/kubeflow_v2_runner.py, IMAGE_PROJECT_DIR). The
# steps start here too (`python -m` puts this folder first on sys.path): it holds no Python
# package, so `litedet` is always the installed one.
WORKDIR /opt/litedet

# Runtime dependencies: requirements.lock without what only the tests and the linter use (the
# pattern below: setup.py's `test` extra and the packages nothing else requires, per
# `pip show NAME`; tests/test_kubeflow.py checks it against the lock). pip keeps every package the
# base already has at the pinned version and installs or replaces the rest; test-only packages
# the base itself brings are removed.
COPY requirements.lock /tmp/requirements.lock
RUN test_only='^(blinker|flask|flask-cors|hypothesis|importlib[-_]resources|iniconfig|itsdangerous|kubernetes-validate|moto|py-partiql-parser|pytest|responses|ruff|sortedcontainers|xmltodict)==' \
 && grep -v -i -E "$test_only" /tmp/requirements.lock > /tmp/requirements-runtime.txt \
 && grep -i -E "$test_only" /tmp/requirements.lock > /tmp/requirements-test-only.txt \
 && python -m pip install --requirement /tmp/requirements-runtime.txt \
 && python -m pip uninstall --yes --requirement /tmp/requirements-test-only.txt \
 && rm /tmp/requirements.lock /tmp/requirements-runtime.txt /tmp/requirements-test-only.txt \
 && python -c "import importlib.util as u; need = ('tensorflow_io', 'boto3', 'apache_beam.io.aws.s3filesystem', 'mlflow', 'model_registry'); missing = [m for m in need if u.find_spec(m) is None]; assert not missing, f'missing {missing}'"

# The GPU variant: TensorFlow's CUDA build of the version requirements.lock pins.
RUN case "$TENSORFLOW_VARIANT" in \
      cpu) ;; \
      gpu) python -m pip install "tensorflow[and-cuda]==2.16.2" \
           && python -c "import importlib.util as u, tensorflow as tf; assert tf.__version__ == '2.16.2', tf.__version__; missing = [m for m in ('nvidia.cudnn', 'nvidia.cublas') if u.find_spec(m) is None]; assert not missing, f'missing CUDA libraries {missing}'" ;; \
      *) echo "TENSORFLOW_VARIANT must be cpu or gpu, not $TENSORFLOW_VARIANT" >&2; exit 1 ;; \
    esac

# litedet itself, not editable; then the curated schema at the path the compiled pipeline names.
# The check imports what the steps run and the Flink worker-pool sidecar's module (k8s/flink/).
COPY --from=wheel /wheels /tmp/wheels
RUN python -m pip install --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
COPY schemas/detection_raw.pbtxt ./schemas/
RUN python -c "import filecmp, litedet.pipeline.kfp_entrypoint, litedet.components.example_gen.executor, litedet.components.beam_worker_pool, litedet.kfp.client, litedet.schemas as s; \
assert filecmp.cmp(s.RAW_SCHEMA, 'schemas/detection_raw.pbtxt', shallow=False), 'schema differs'" \
 && command -v litedet

# A numeric non-root user, so Kubernetes can verify runAsNonRoot without a securityContext.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin litedet
USER 10001:10001
ENV HOME=/home/litedet

# ImageNet backbone weights for clusters whose pods cannot reach the internet: baked into the
# user's Keras cache, where `training.backbone_weights: imagenet` looks first, downloaded at build
# time from Keras' own location (the build machine needs the internet). ALPHA:SIZE pairs; the
# default is the configuration's default alpha (training.alpha) at the ImageNet size nearest its
# default input size (transform.image_size 256 -> 224); tests/test_kubeflow.py keeps them equal.
# Bake every alpha a run may ask for, e.g. --build-arg BACKBONE_WEIGHTS="0.35:224 0.5:224"; "" for
# none. LITEDET_IMAGE_WEIGHTS records the list: in the image nothing is downloaded, and a run-time
# alpha not baked fails the Trainer at once with this build argument (weights.check_image_weights).
ARG BACKBONE_WEIGHTS="0.35:224"
RUN if [ -n "$BACKBONE_WEIGHTS" ]; then \
      python -m litedet.components.detection.weights $BACKBONE_WEIGHTS; \
    fi
ENV LITEDET_IMAGE_WEIGHTS="${BACKBONE_WEIGHTS}"
