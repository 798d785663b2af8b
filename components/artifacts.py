"""Artifact types this project adds to the TFX standard ones.

Each lives in a folder (`uri`), except the report, which is one file; the files are the contract
with later steps. Type names are `<namespace>.<Name>` as TFX's Kubeflow compiler requires; the
two `system.*` ones are the types the Kubeflow UI renders.
"""

from tfx.types.artifact import Artifact
from tfx.types.value_artifact import ValueArtifact


class LabelMap(Artifact):
    """Contiguous 1-based class labels and their names.

    Files: `label_map.json` ({"classes": [{"id", "name", "source_key"}]}), `labels.txt` (one name
    a line, line i = label i + 1: the TFLite metadata convention), `label_map.pbtxt` (TF OD API).
    """

    TYPE_NAME = "litedet.LabelMap"


class QuarantinedRecords(Artifact):
    """Images the ExampleGen could not use, each with its reason.

    Files: `quarantine.jsonl` (one JSON object per image: source_id, split, image, reason,
    detail) and `summary.json` (counts of examples per split, objects per class, and quarantined
    images per reason).
    """

    TYPE_NAME = "litedet.QuarantinedRecords"


class KfpMetrics(Artifact):
    """Key numbers of a run as custom properties (mAP, blessed, sizes, latency). Its type name is
    KFP's `system.Metrics`, so the Kubeflow run page shows them as scalar metrics; locally it is
    an ordinary ML Metadata artifact with a `metrics.json` beside it."""

    TYPE_NAME = "system.Metrics"


class TFLiteModels(Artifact):
    """On-device detectors converted from one Trainer model, one file per format.

    Files: `model_<format>.tflite` (format: float32, float16, int8; each carries ObjectDetector
    metadata with its labels), `labels.txt` (line i = label i + 1) and `conversion.json`
    (formats, files, sizes in bytes, input size and dtype per format, resize mode, labels, and the
    post-process settings: max_detections, score_threshold, iou_threshold, use_regular_nms).
    """

    TYPE_NAME = "litedet.TFLiteModels"


class RunReport(ValueArtifact):
    """The run report as one self-contained HTML file (pictures embedded): the file *is* the
    artifact's URI, so the Kubeflow UI, which renders a `system.HTML` artifact by reading the
    object at its URI, shows it on the run page; locally the CLI copies it into the run folder."""

    TYPE_NAME = "system.HTML"

    def encode(self, value: str) -> bytes:
        return value.encode("utf-8")

    def decode(self, serialized_value: bytes) -> str:
        return serialized_value.decode("utf-8")


# Every type defined in this module, found rather than listed: the Kubeflow entrypoint rebuilds
# artifacts from these (pipeline/kfp_entrypoint.py).
PROJECT_TYPES = tuple(
    value
    for value in list(globals().values())
    if isinstance(value, type) and issubclass(value, Artifact) and value.__module__ == __name__
)
