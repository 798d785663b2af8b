"""Artifact types this project adds to the TFX standard ones.

Each lives in a folder (`uri`); the files inside are the contract with later steps.
"""

from tfx.types.artifact import Artifact


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
