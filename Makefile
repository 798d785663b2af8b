# The two set-up commands: `make demo` and `make test`. Each creates the virtualenv when missing.
# TFX 1.16 needs Python 3.10 (docs/toolchain.md); any python3.10 on PATH or under pyenv works.
# `make test-fast`: the unit tests only (no pipeline run, no training), for working loops.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format venv lock bench clean system-deps mlflow-venv smoke

demo: system-deps $(STAMP)
	$(VENV)/bin/litedet demo

test: system-deps $(STAMP) mlflow-venv lint
	$(PY) -m pytest

test-fast: $(STAMP) lint
	$(PY) -m pytest -m "not slow"

# The lint and the formatter's check (ruff, settings in pyproject.toml); `make format` fixes both.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# tflite-support's metadata writers load libusb-1.0 (a Debian package) at import; the tests lint
# k8s/smoke.sh with shellcheck (a Debian package). kubectl is no Debian package: docs/toolchain.md.
system-deps:
	@ldconfig -p | grep -q libusb-1.0.so.0 || { \
	  echo "Installing libusb-1.0-0 (needed by tflite-support)"; \
	  $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq libusb-1.0-0; }
	@command -v shellcheck >/dev/null || { \
	  echo "Installing shellcheck (the tests lint k8s/smoke.sh)"; \
	  $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq shellcheck; }

# The smoke test on your own KFP 2.16/2.17 cluster (kubectl's current context), e.g.
#   make smoke SMOKE_ARGS="--image localhost/litedet:smoke --kind kind"
#   make smoke SMOKE_ARGS="--mode multi-user --namespace my-profile --image REG/litedet:smoke --push"
# k8s/smoke.sh --help says what it does; docs/kubeflow.md, "Smoke test on a real cluster".
smoke: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" PYTHON="$(abspath $(PY))" k8s/smoke.sh $(SMOKE_ARGS)

# The registry tests run a real MLflow server from its own Python 3.10 virtualenv (MLflow needs
# protobuf 4+, TFX 1.16 refuses it), cached under $$LITEDET_CACHE or ~/.cache/litedet
# (tests/client_venvs.py).
mlflow-venv: $(STAMP)
	$(PY) -m tests.client_venvs mlflow >/dev/null

bench: $(STAMP)
	$(PY) benchmarks/transform_throughput.py

venv: $(STAMP)

$(STAMP): requirements.lock setup.py pyproject.toml
	@test -x $(PY) || { py=$$(.ci/find-python3.10) && $$py -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Re-resolve the pinned set from requirements.in (needs the registry).
lock:
	rm -rf /tmp/litedet-lock && $$(.ci/find-python3.10) -m venv /tmp/litedet-lock
	/tmp/litedet-lock/bin/pip install --quiet --upgrade pip && /tmp/litedet-lock/bin/pip install --quiet -r requirements.in
	{ head -2 requirements.lock; /tmp/litedet-lock/bin/pip freeze; } > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf outputs $(VENV)
