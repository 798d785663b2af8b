"""The Trainer's executor when `kubeflow.trainer_workers.count` > 1 (compiled pipelines only):
TFX's GenericExecutor, whose Do hands run_fn's arguments to a TFJob's workers instead of calling
run_fn in this process (components/trainer/tfjob.py)."""

from __future__ import annotations

import os

from tfx.components.trainer import executor as tfx_trainer

from litedet.components.trainer import tfjob


class Executor(tfx_trainer.GenericExecutor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        fn_args = self._GetFnArgs(input_dict, output_dict, exec_properties)
        workers = tfjob.workers_setting(fn_args.custom_config)
        if workers is None or workers.count < 2:
            return super().Do(input_dict, output_dict, exec_properties)
        self._log_startup(input_dict, output_dict, exec_properties)
        # The pod's name is its hostname (Kubernetes sets HOSTNAME to it).
        tfjob.Launcher.in_cluster().run(fn_args, workers, os.environ["HOSTNAME"])
        tfjob.check_model_written(fn_args.serving_model_dir)
