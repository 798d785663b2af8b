"""`litedet data convert`: a dataset in any supported format -> TF Object Detection API
TFRecords, exactly as the pipeline's DetectionExampleGen writes them (same checks, label map and
quarantine), without running the pipeline. Useful to hand data to other TF OD API tools, or to
feed the pipeline pre-converted `tfrecord` sources."""

from __future__ import annotations

import json
import os
from typing import Dict, List

from litedet.components.example_gen.config import DatasetConfig


def convert(dataset: DatasetConfig, out_dir: str, beam_pipeline_args: List[str]) -> Dict:
    """Writes `<out_dir>/examples/Split-<split>/*.gz`, `<out_dir>/label_map/` and
    `<out_dir>/quarantine/`; returns the quarantine summary (counts per split and reason)."""
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.example_gen.executor import Executor

    outputs = {
        "examples": [standard_artifacts.Examples()],
        "label_map": [artifacts.LabelMap()],
        "quarantine": [artifacts.QuarantinedRecords()],
    }
    for key, (artifact,) in outputs.items():
        artifact.uri = os.path.join(out_dir, key)
    context = Executor.Context(
        beam_pipeline_args=beam_pipeline_args, tmp_dir=os.path.join(out_dir, ".tmp")
    )
    Executor(context).Do({}, outputs, {"dataset": dataset.to_json(), "input_base": dataset.root})
    with open(os.path.join(out_dir, "quarantine", "summary.json")) as f:
        return json.load(f)
