"""One worker of a multi-worker Trainer (a TFJob replica, components/trainer/tfjob.py): runs
run_fn with the Trainer step's fn_args, given as JSON in the first argument, under the
TF_CONFIG the Training Operator set. Usage: python -m litedet.components.trainer.tfjob_worker
FN_ARGS_JSON"""

from __future__ import annotations

import json
import logging
import os
import sys
import types


def main(argv) -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow: TFX's Keras 2
    from litedet.components import object_storage as storage
    from litedet.pipeline import kfp_entrypoint

    if storage.ENDPOINT_ENV in os.environ or "AWS_ACCESS_KEY_ID" in os.environ:
        storage.configure()
    kfp_entrypoint.require_accelerator()
    fn_args = json.loads(argv[0])
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    logging.info("Worker %s of %s", tf_config.get("task"), tf_config.get("cluster"))
    from litedet.components.trainer import module

    module.run_fn(types.SimpleNamespace(**fn_args))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from litedet.components import object_storage as storage
    from litedet.pipeline import kfp_entrypoint

    try:
        main(sys.argv[1:])
    except kfp_entrypoint.StepError as error:
        print(f"litedet worker: error: {error}", file=sys.stderr, flush=True)
        storage.exit_process(1)
    except BaseException:  # the traceback into the worker's log, then a plain exit code 1
        import traceback

        traceback.print_exc()
        storage.exit_process(1)
    storage.exit_process(0)
