"""TFLiteConverter: the Trainer's SavedModel -> on-device `.tflite` detectors with metadata.

Inputs: `model` (the SavedModel under `<uri>/Format-Serving`), `examples` (DetectionExampleGen's
raw examples: int8 calibration images come from them through `transform_graph`, exactly as the
Trainer sees them), `transform_graph`, `label_map` (its `labels.txt`).
Output: `tflite_models` (components/artifacts.py, TFLiteModels).
A plain Python executor (no Beam): conversion is one process' work.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, component_spec, standard_artifacts

from litedet.components import artifacts
from litedet.components.detection import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_IOU_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
)
from litedet.components.tflite import DEFAULT_NUM_CALIBRATION_IMAGES, FORMATS

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
TRANSFORM_GRAPH_KEY = "transform_graph"
LABEL_MAP_KEY = "label_map"
TFLITE_MODELS_KEY = "tflite_models"

FORMATS_KEY = "formats"
NUM_CALIBRATION_IMAGES_KEY = "num_calibration_images"
CALIBRATION_SPLIT_KEY = "calibration_split"
MAX_DETECTIONS_KEY = "max_detections"
SCORE_THRESHOLD_KEY = "score_threshold"
IOU_THRESHOLD_KEY = "iou_threshold"
USE_REGULAR_NMS_KEY = "use_regular_nms"
# Not read by the executor: a hash of the project's code (pipeline/code_fingerprint.py), so
# that an edited converter is never served a cached result.
CODE_FINGERPRINT_KEY = "code_fingerprint"

CONVERSION_FILE = "conversion.json"


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


def resize_mode_of(tf_transform_output) -> str:
    """ "stretch" or "letterbox": what the Transform graph does to a non-square image (its
    content window covers the whole input only when it stretches)."""
    import tensorflow as tf

    from litedet.components import features as f

    wide = tf.io.encode_png(tf.zeros([1, 2, 3], tf.uint8))
    served = tf_transform_output.transform_features_layer()(
        {f.IMAGE_ENCODED: tf.reshape(wide, [1])}
    )
    window = served[f.CONTENT_WINDOW][0].numpy().tolist()
    return "stretch" if window == [0.0, 0.0, 1.0, 1.0] else "letterbox"


def calibration_images(examples_uri_pattern: str, tf_transform_output, limit: int) -> List:
    """The first `limit` model-input images (float32 [S, S, 3] in [-1, 1]) of the raw examples,
    through the Transform graph as in training (components/detection/input_pipeline.py)."""
    import tensorflow as tf

    from litedet.components import features as f
    from litedet.components.detection import input_pipeline

    files = sorted(tf.io.gfile.glob(examples_uri_pattern))
    if not files:
        raise ValueError(f"no examples at {examples_uri_pattern} to calibrate the int8 model")
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    examples = input_pipeline.transformed_examples(
        records, tf_transform_output, materialized=False, deterministic=True
    )
    return [example[f.IMAGE].numpy() for example in examples]


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        import tensorflow_transform as tft
        from tfx.utils import path_utils

        from litedet.components.tflite import converter

        formats = json.loads(exec_properties[FORMATS_KEY])
        limit = int(exec_properties[NUM_CALIBRATION_IMAGES_KEY])
        split = exec_properties[CALIBRATION_SPLIT_KEY]
        settings = {
            "max_detections": int(exec_properties[MAX_DETECTIONS_KEY]),
            "score_threshold": float(exec_properties[SCORE_THRESHOLD_KEY]),
            "iou_threshold": float(exec_properties[IOU_THRESHOLD_KEY]),
            "use_regular_nms": bool(exec_properties[USE_REGULAR_NMS_KEY]),
        }

        model_dir = path_utils.serving_model_path(
            artifact_utils.get_single_uri(input_dict[MODEL_KEY])
        )
        transform_output = tft.TFTransformOutput(
            artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY])
        )
        labels = converter.read_labels(
            os.path.join(artifact_utils.get_single_uri(input_dict[LABEL_MAP_KEY]), "labels.txt")
        )
        output = artifact_utils.get_single_instance(output_dict[TFLITE_MODELS_KEY])

        representative = None
        if "int8" in formats:
            split_uri = artifact_utils.get_split_uri(input_dict[EXAMPLES_KEY], split)
            representative = calibration_images(
                os.path.join(split_uri, "*"), transform_output, limit
            )
            logging.info("int8 calibration on %d %s images", len(representative), split)

        resize_mode = resize_mode_of(transform_output)
        paths = converter.convert(
            model_dir,
            output.uri,
            labels,
            formats=formats,
            representative_images=representative,
            resize_mode=resize_mode,
            **settings,
        )
        described = {fmt: converter.describe(path) for fmt, path in paths.items()}
        summary = {
            "formats": formats,
            "files": {fmt: os.path.basename(path) for fmt, path in paths.items()},
            "sizes_bytes": {fmt: d["size_bytes"] for fmt, d in described.items()},
            "inputs": {fmt: d["input"] for fmt, d in described.items()},
            "outputs": ["locations", "classes", "scores", "count"],
            "input_size": described[formats[0]]["input"]["shape"][1],
            "resize_mode": resize_mode,
            "normalization": {"mean": converter.INPUT_MEAN, "std": converter.INPUT_STD},
            "labels": labels,
            "num_calibration_images": len(representative) if representative else 0,
            "calibration_split": split if representative else None,
            **settings,
        }
        import tensorflow as tf

        with tf.io.gfile.GFile(os.path.join(output.uri, CONVERSION_FILE), "w") as handle:
            handle.write(json.dumps(summary, indent=2))
        output.set_string_custom_property("formats", ",".join(formats))
        for fmt, size in summary["sizes_bytes"].items():
            output.set_int_custom_property(f"size_bytes_{fmt}", size)


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
