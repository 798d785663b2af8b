"""LitedetPusher: pushes a blessed model's TFLite files (and optionally its SavedModel) as a new
version of a model store, with a manifest, and registers that version in a model registry.

    pusher = LitedetPusher(
        model=trainer.outputs["model"],
        tflite_models=tflite.outputs["tflite_models"],
        model_blessing=evaluator.outputs["blessing"],
        label_map=example_gen.outputs["label_map"],
        evaluation=evaluator.outputs["evaluation"],            # optional: mAP in the manifest
        destination="gs://bucket/models/litedet",              # or a local folder
        registry={"kind": "mlflow", "tracking_uri": "http://mlflow:5000"},
        model_name="litedet",
    )

See executor.py for what is pushed and recorded, store.py for the store's guarantees and
registry.py for the registries.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.types import component_spec, standard_artifacts

from litedet.components import artifacts
from litedet.components.artifacts import TFLiteModels
from litedet.components.pusher import executor, registry_settings
from litedet.components.resources import Resources

RESOURCES = {"LitedetPusher": Resources(cpu=0.5, memory_gb=2)}


class LitedetPusherSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        executor.DESTINATION_KEY: component_spec.ExecutionParameter(type=str),
        executor.REGISTRY_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        executor.MODEL_NAME_KEY: component_spec.ExecutionParameter(type=str),
        executor.EXTRA_MANIFEST_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        executor.PIPELINE_RUN_ID_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        executor.MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        executor.TFLITE_MODELS_KEY: component_spec.ChannelParameter(
            type=TFLiteModels, optional=True
        ),
        executor.MODEL_BLESSING_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ModelBlessing
        ),
        executor.LABEL_MAP_KEY: component_spec.ChannelParameter(type=artifacts.LabelMap),
        executor.EVALUATION_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ModelEvaluation, optional=True
        ),
    }
    OUTPUTS = {
        executor.PUSHED_MODEL_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.PushedModel
        ),
    }


class LitedetPusher(base_component.BaseComponent):
    # It writes the model store, state outside its inputs: never served from a cache.
    STATEFUL = True
    SPEC_CLASS = LitedetPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        label_map: types.BaseChannel,
        destination: Union[str, data_types.RuntimeParameter],
        model_name: str = "litedet",
        tflite_models: Optional[types.BaseChannel] = None,
        evaluation: Optional[types.BaseChannel] = None,
        registry: Optional[Mapping[str, Any]] = None,
        extra_manifest: Optional[Mapping[str, Any]] = None,
        pipeline_run_id: Optional[str] = None,
    ):
        """`registry`: {"kind": "mlflow"|"kubeflow"|"none", ...} (see registry.make_registry);
        stored as JSON in the pipeline definition, so a secret in it is refused here
        (registry_settings.py: MLflow reads MLFLOW_TRACKING_TOKEN, the Kubeflow client the
        service account token, from the environment). `extra_manifest`: more manifest fields
        (e.g. {"alpha": 0.35, "input_size": 320} when no artifact carries them).
        `pipeline_run_id`: for orchestrators whose executor context has none (Kubeflow V2)."""
        registry_settings.check_registry_settings(registry or {})
        spec = LitedetPusherSpec(
            model=model,
            tflite_models=tflite_models,
            model_blessing=model_blessing,
            label_map=label_map,
            evaluation=evaluation,
            destination=destination,
            registry=json.dumps(dict(registry or {"kind": "none"}), sort_keys=True),
            model_name=model_name,
            extra_manifest=json.dumps(dict(extra_manifest or {}), sort_keys=True),
            pipeline_run_id=pipeline_run_id,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
