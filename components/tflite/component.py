"""TFLiteConverter: the Trainer's SavedModel -> on-device `.tflite` detectors with metadata.

Inputs: `model` (the SavedModel under `<uri>/Format-Serving`), `examples` (DetectionExampleGen's
raw examples: int8 calibration images come from them through `transform_graph`, exactly as the
Trainer sees them), `transform_graph`, `label_map` (its `labels.txt`).
Output: `tflite_models` (components/artifacts.py, TFLiteModels). The code it runs: executor.py.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from litedet.components import artifacts
from litedet.components.detection import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_IOU_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
)
from litedet.components.resources import Resources
from litedet.components.tflite import DEFAULT_NUM_CALIBRATION_IMAGES, FORMATS
from litedet.components.tflite.executor import (
    CALIBRATION_SPLIT_KEY,
    CODE_FINGERPRINT_KEY,
    EXAMPLES_KEY,
    FORMATS_KEY,
    IOU_THRESHOLD_KEY,
    LABEL_MAP_KEY,
    MAX_DETECTIONS_KEY,
    MODEL_KEY,
    NUM_CALIBRATION_IMAGES_KEY,
    SCORE_THRESHOLD_KEY,
    TFLITE_MODELS_KEY,
    TRANSFORM_GRAPH_KEY,
    USE_REGULAR_NMS_KEY,
    Executor,
)

RESOURCES = {"TFLiteConverter": Resources(cpu=2, memory_gb=8)}


class TFLiteConverterSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        FORMATS_KEY: component_spec.ExecutionParameter(type=str),
        NUM_CALIBRATION_IMAGES_KEY: component_spec.ExecutionParameter(type=int),
        CALIBRATION_SPLIT_KEY: component_spec.ExecutionParameter(type=str),
        MAX_DETECTIONS_KEY: component_spec.ExecutionParameter(type=int),
        SCORE_THRESHOLD_KEY: component_spec.ExecutionParameter(type=float),
        IOU_THRESHOLD_KEY: component_spec.ExecutionParameter(type=float),
        USE_REGULAR_NMS_KEY: component_spec.ExecutionParameter(type=int),
        CODE_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.TransformGraph
        ),
        LABEL_MAP_KEY: component_spec.ChannelParameter(type=artifacts.LabelMap),
    }
    OUTPUTS = {
        TFLITE_MODELS_KEY: component_spec.ChannelParameter(type=artifacts.TFLiteModels),
    }


class TFLiteConverter(base_component.BaseComponent):
    """Converts the Trainer's model into TFLite detectors (float32, float16, int8).

    `use_regular_nms` stays False for models that MediaPipe Tasks loads: per-class NMS repeats a
    box once per class, and MediaPipe before 0.10.20 crashes on that (converter.convert,
    docs/clients.md)."""

    SPEC_CLASS = TFLiteConverterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        label_map: types.BaseChannel,
        formats: Sequence[str] = FORMATS,
        num_calibration_images: int = DEFAULT_NUM_CALIBRATION_IMAGES,
        calibration_split: str = "train",
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = DEFAULT_NMS_IOU_THRESHOLD,
        use_regular_nms: bool = False,
        code_fingerprint: Optional[str] = None,
    ):
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ValueError(f"formats {list(formats)}: choose from {', '.join(FORMATS)}")
        spec = TFLiteConverterSpec(
            model=model,
            examples=examples,
            transform_graph=transform_graph,
            label_map=label_map,
            formats=json.dumps(list(formats)),
            num_calibration_images=int(num_calibration_images),
            calibration_split=calibration_split,
            max_detections=int(max_detections),
            score_threshold=float(score_threshold),
            iou_threshold=float(iou_threshold),
            use_regular_nms=int(bool(use_regular_nms)),
            code_fingerprint=code_fingerprint,
            tflite_models=types.Channel(type=artifacts.TFLiteModels),
        )
        super().__init__(spec=spec)
