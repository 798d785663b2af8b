"""TFLiteConverter's executor: the Trainer's SavedModel -> on-device `.tflite` detectors with
metadata.

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
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from litedet.components.tflite import needs_calibration

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
# Not read by the executor: a hash of the project's code (components/code_fingerprint.py), so
# that an edited converter is never served a cached result.
CODE_FINGERPRINT_KEY = "code_fingerprint"

CONVERSION_FILE = "conversion.json"


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
        if needs_calibration(formats):
            split_uri = artifact_utils.get_split_uri(input_dict[EXAMPLES_KEY], split)
            representative = calibration_images(
                os.path.join(split_uri, "*"), transform_output, limit
            )
            logging.info("Calibration on %d %s images", len(representative), split)

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
