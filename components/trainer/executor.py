"""RunParameters' executor: the training section with a run's run-time values merged in,
checked, written as the Trainer's `hyperparameters` input."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact, artifact_utils

from litedet.components import run_time
from litedet.components.trainer.config import TrainingConfig

TRAINING_KEY = "training"
HYPERPARAMETERS_KEY = "hyperparameters"
# Trainer reads the only file in the artifact's folder as a KerasTuner HyperParameters config.
HYPERPARAMETERS_FILE = "hyperparameters.json"


def merged_settings(training_json: str, exec_properties: Dict[str, Any]) -> TrainingConfig:
    """The compiled section with the run-time values in. Checked here, where they are used: a
    Kubeflow run can set anything."""
    values = json.loads(training_json)
    for name, field in run_time.of_section("training").items():
        value = exec_properties.get(name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: {value!r} must be a finite number")
        values[field] = value
    return TrainingConfig(**values)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[artifact.Artifact]],
        output_dict: Dict[str, List[artifact.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        import tensorflow as tf  # tf.io.gfile: the artifact may be on an object store

        settings = merged_settings(exec_properties[TRAINING_KEY], exec_properties)
        uri = artifact_utils.get_single_uri(output_dict[HYPERPARAMETERS_KEY])
        tf.io.gfile.makedirs(uri)
        with tf.io.gfile.GFile(os.path.join(uri, HYPERPARAMETERS_FILE), "w") as f:
            json.dump(settings.to_hyperparameters(), f, sort_keys=True)
