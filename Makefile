# The two set-up commands: `make demo` and `make test`. Each creates the virtualenv when missing.
# TFX 1.16 needs Python 3.10 (see ../shared/STACK.md); any python3.10 on PATH or under pyenv works.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lock bench clean system-deps mlflow-venv

demo: system-deps $(STAMP)
	$(VENV)/bin/litedet demo

test: system-deps $(STAMP) mlflow-venv
	$(PY) -m pytest

# tflite-support's metadata writers load libusb-1.0 (a Debian package) at import.
system-deps:
	@ldconfig -p | grep -q libusb-1.0.so.0 || { \
	  echo "Installing libusb-1.0-0 (needed by tflite-support)"; \
	  $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq libusb-1.0-0; }

# The registry tests run a real MLflow server from its own Python 3.10 virtualenv (MLflow needs
# protobuf 4+, TFX 1.16 refuses it), cached under $$LITEDET_CACHE or ~/.cache/litedet.
mlflow-venv:
	bash tests/mlflow_venv.sh

bench: $(STAMP)
	$(PY) benchmarks/transform_throughput.py

venv: $(STAMP)

$(STAMP): requirements.lock setup.py
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
