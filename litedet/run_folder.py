"""What a local run leaves in its run folder (`<output_dir>/runs/<stamp>/`, console.py) for a
person to pick up, beside config.yaml, run.log and report.html: the gate's figures
(`metrics.json`, the same file the ModelGate publishes as its `system.Metrics`), the
precision-recall curves (`pr_curve.png`), the confusion matrix as a heat map
(`confusion_matrix.png`) and the training and validation curves (`losses.png`), drawn by the
report's own code (components/report/render.py)."""

from __future__ import annotations

import os
import shutil
from typing import List

METRICS_FILE = "metrics.json"


def write_results(summary, run_dir: str) -> List[str]:
    """The files above, from the run's ModelGate and Trainer outputs (`summary`:
    run_summary.RunSummary); nothing when the run had no gate. Returns the paths written."""
    if "ModelGate" not in summary.components:
        return []
    from litedet.components.evaluation import executor as gate_lib
    from litedet.components.report import render

    written = []
    metrics = os.path.join(summary.components["ModelGate"].uri("metrics"), gate_lib.METRICS_FILE)
    if os.path.exists(metrics):
        shutil.copyfile(metrics, os.path.join(run_dir, METRICS_FILE))
        written.append(os.path.join(run_dir, METRICS_FILE))
    curves, steps = None, 1
    if "Trainer" in summary.components:
        curves = render.training_curves(summary.components["Trainer"].uri("model_run"))
        steps = render.steps_per_epoch(summary.training_record())
    return written + render.write_pictures(run_dir, summary.gate_report(), curves, steps)
