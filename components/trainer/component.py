"""The training step: RunParameters, then TFX's Trainer running `run_fn` (module.py).

RunParameters is the one carrier of the training settings: it takes the compiled `training:`
section as one parameter and every `training.*` run-time parameter (components/run_time.py) as
its own, merges and checks them, and writes the whole section as the Trainer's
`hyperparameters` input (TFX's channel for per-run training values). The Trainer's
custom_config carries no settings, only what says how to read its inputs and the code's hash.
The same two nodes run locally, with the configured values: one graph for both runners.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from litedet.components import run_time
from litedet.components.code_fingerprint import source_fingerprint
from litedet.components.resources import Resources
from litedet.components.trainer import executor
from litedet.components.trainer.config import TrainingConfig, WorkersConfig

RUN_FN = "litedet.components.trainer.module.run_fn"
RESOURCES = {
    "RunParameters": Resources(cpu=0.5, memory_gb=1),
    "Trainer": Resources(cpu=4, memory_gb=16),  # the heaviest step
}
# The Trainer's pod when kubeflow.trainer_workers.count > 1: it launches and watches the TFJob
# (the workers get kubeflow.trainer_workers' own resources).
LAUNCHER_RESOURCES = Resources(cpu=1, memory_gb=4)


class RunParametersSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        executor.TRAINING_KEY: component_spec.ExecutionParameter(type=str),
        **{
            name: component_spec.ExecutionParameter(type=run_time.PARAMETERS[name].ptype)
            for name in run_time.of_section("training")
        },
    }
    INPUTS = {}
    OUTPUTS = {
        executor.HYPERPARAMETERS_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.HyperParameters
        )
    }


class RunParameters(base_component.BaseComponent):
    SPEC_CLASS = RunParametersSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, training: TrainingConfig, run_time_values: Mapping[str, Any]):
        """`run_time_values`: {parameter name: value or RuntimeParameter} for every
        `training.*` run-time parameter."""
        super().__init__(
            spec=RunParametersSpec(
                training=json.dumps(dataclasses.asdict(training), sort_keys=True),
                hyperparameters=types.Channel(type=standard_artifacts.HyperParameters),
                **run_time_values,
            )
        )


def create(
    config,
    run_time_values: Mapping[str, Any],
    examples,
    transform_graph,
    schema,
    workers: Optional[WorkersConfig] = None,
):
    """[RunParameters, Trainer] for the pipeline's `training:` section. `examples` are raw
    (Transform's graph is applied as they are read) unless `transform.materialize`. `workers`
    (the Kubeflow compiler's kubeflow.trainer_workers, count > 1): the Trainer launches that
    many workers as a TFJob (tfjob.py) instead of training in its own process."""
    run_parameters = RunParameters(
        config.training,
        {
            name: run_time.value(config, run_time_values, name)
            for name in run_time.of_section("training")
        },
    )
    custom_config = {
        "materialized_examples": config.transform.materialize,
        "code_fingerprint": source_fingerprint(RUN_FN),
    }
    multi_worker = {}
    if workers is not None and workers.count > 1:
        from litedet.components.trainer import tfjob, tfjob_executor

        custom_config.update(tfjob.custom_config_entry(workers))
        multi_worker["custom_executor_spec"] = executor_spec.ExecutorClassSpec(
            tfjob_executor.Executor
        )
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=examples,
        transform_graph=transform_graph,
        schema=schema,
        hyperparameters=run_parameters.outputs[executor.HYPERPARAMETERS_KEY],
        custom_config=custom_config,
        **multi_worker,
    )
    return [run_parameters, trainer]
