"""The artifact type of the TFLiteConverter component's output."""

from tfx.types.artifact import Artifact


class TFLiteModels(Artifact):
    """On-device detectors converted from one Trainer model, one file per format.

    Files: `model_<format>.tflite` (format: float32, float16, int8; each carries ObjectDetector
    metadata with its labels), `labels.txt` (line i = label i + 1) and `conversion.json`
    (formats, files, sizes in bytes, input size and dtype per format, resize mode, labels, and the
    post-process settings: max_detections, score_threshold, iou_threshold, use_regular_nms).
    """

    TYPE_NAME = "litedet.TFLiteModels"
