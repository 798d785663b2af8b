"""RunParameters: the training knobs a scheduled run may change without recompiling.

TFX's Kubeflow compiler accepts run-time parameters only as whole, top-level exec properties;
Trainer's settings live in a dict (custom_config) and a proto (TrainArgs), where it cannot put
them. So this step takes them as its own exec properties and hands them to the Trainer as its
`hyperparameters` input (TFX's channel for per-run training values); run_fn lets them
override custom_config.
The same node runs locally, with the configured values: one graph for both runners.
"""

import json
import math
import os

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from litedet.components.detection import check_alpha

# Trainer reads the only file in the artifact's folder as a KerasTuner HyperParameters config
# (the format TFX's Trainer expects on that channel).
HYPERPARAMETERS_FILE = "hyperparameters.json"


@component
def RunParameters(
    hyperparameters: OutputArtifact[standard_artifacts.HyperParameters],
    alpha: Parameter[float],
    train_steps: Parameter[int],
) -> None:
    # Run-time parameters are checked where they are used: a Kubeflow run can set anything.
    if not (isinstance(alpha, float) and math.isfinite(alpha)):
        raise ValueError(f"alpha: {alpha!r} must be a number")
    check_alpha(alpha)
    if train_steps < 1:
        raise ValueError(f"train_steps: {train_steps} must be >= 1")
    import tensorflow as tf  # tf.io.gfile: the artifact may be on an object store

    with tf.io.gfile.GFile(os.path.join(hyperparameters.uri, HYPERPARAMETERS_FILE), "w") as f:
        json.dump({"values": {"alpha": alpha, "train_steps": train_steps}}, f)
