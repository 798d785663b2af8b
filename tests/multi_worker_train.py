"""A training process of tests/test_pipeline_local.py (the kill-and-resume test): runs the
Trainer's run_fn with the arguments in a JSON file, under whatever TF_CONFIG the test sets.
Usage: multi_worker_train.py ARGS_JSON (a TFJob's workers run
litedet.components.trainer.tfjob_worker instead: tests/test_tfjob.py)"""

import json
import os
import sys
import types

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402

from litedet.components.trainer import module as trainer_module  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(message)s")

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        trainer_module.run_fn(types.SimpleNamespace(**json.load(f)))
