"""RunReport's executor: gate.json, push.json and the training logs -> one HTML page (render.py)."""

import json
import os


def _read_json(path: str):
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


def write_report(model, model_run, examples, blessing, pushed_model, report) -> None:
    """gate.json, training.json and push.json of one run -> `report` (one HTML page)."""
    from tfx.types import artifact_utils
    from tfx.utils import path_utils

    from litedet.components.evaluation import executor as gate_lib
    from litedet.components.evaluation import metrics as metrics_lib
    from litedet.components.report import render

    gate = _read_json(os.path.join(blessing.uri, gate_lib.GATE_FILE))
    if gate is None:
        raise ValueError(f"{blessing.uri} holds no {gate_lib.GATE_FILE}: not a ModelGate output")
    training = _read_json(os.path.join(model_run.uri, "training.json")) or {}
    push = _read_json(os.path.join(pushed_model.uri, "push.json"))
    steps_per_epoch = render.steps_per_epoch(training)
    samples = render.plot_samples(
        path_utils.serving_model_path(model.uri),
        artifact_utils.get_split_uri([examples], metrics_lib.EVAL_SPLIT),
        training.get("classes") or list(gate.get("ap50_per_class", {})),
    )
    pictures = {
        "Precision-recall per class (IoU 0.5)": render.plot_pr_curves(gate.get("pr_curves", {})),
        "Evaluation images: detections (score >= 0.3) in colour, ground truth in white": samples,
        "Losses": render.plot_training(render.training_curves(model_run.uri), steps_per_epoch),
    }
    report.write(render.page(gate, push, training, pictures))
