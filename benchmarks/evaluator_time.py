"""How long the Evaluator step takes, with the metrics it computes now and with the ones it used to.

    .venv/bin/python benchmarks/evaluator_time.py --run-dir OUTPUT_DIR [--repeats 2]

Runs TFX's Evaluator executor, as the pipeline runs it (TFMA on Beam, in this process), on the
Trainer model and the evaluation split of a finished local run (OUTPUT_DIR: a `litedet demo` or
`litedet run` output folder; the demo's has the 100 sample evaluation images), alternating two
metric sets, `repeats` times each:

- "before": what the Evaluator computed until 2026-11-29: COCO mAP@[.5:.95], mAP@0.5 and AP@0.5
  of every class, each a separate COCOMeanAveragePrecision pass;
- "now": mAP@0.5 only (components/evaluation/metrics.py); the rest is the gate's pycocotools
  pass over the same predictions.

Prints and writes benchmarks/results/evaluator_time.json: seconds per repeat and medians, the
number of images, and mAP@0.5 by both (they must agree). The bar: at most 30 s for the demo's
100 images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402


def _eval_config(variant: str, num_classes: int):
    import tensorflow_model_analysis as tfma

    from litedet.components.detection import export
    from litedet.components.evaluation import metrics

    configs = metrics.metric_configs(num_classes)
    if variant == "before":
        configs = [
            metrics._coco_metric("map", num_classes, 100),
            *configs,
            *[
                metrics._coco_metric(
                    f"ap50/{k}", num_classes, 100, iou_thresholds=[0.5], class_ids=[k]
                )
                for k in range(1, num_classes + 1)
            ],
        ]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=export.EVAL_SIGNATURE,
                preprocessing_function_names=[export.LABELS_SIGNATURE],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name=c["class_name"], config=c["config"])
                    for c in configs
                ]
            )
        ],
    )


def _evaluate(variant: str, summary, num_classes: int, workdir: str) -> dict:
    from google.protobuf import json_format
    from tfx.components.evaluator.executor import Executor
    from tfx.types import artifact_utils, standard_artifacts

    from litedet.components.evaluation import metrics

    examples = standard_artifacts.Examples()
    examples.uri = summary.components["DetectionExampleGen"].uri("examples")
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    model = standard_artifacts.Model()
    model.uri = summary.components["Trainer"].uri("model")
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = tempfile.mkdtemp(dir=workdir)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = tempfile.mkdtemp(dir=workdir)
    properties = {
        "eval_config": json_format.MessageToJson(_eval_config(variant, num_classes)),
        "example_splits": json.dumps([metrics.EVAL_SPLIT]),
        "fairness_indicator_thresholds": "null",
    }
    started = time.time()
    Executor(
        Executor.Context(beam_pipeline_args=["--direct_running_mode=in_memory"], tmp_dir=workdir)
    ).Do(
        {"examples": [examples], "model": [model]},
        {"evaluation": [evaluation], "blessing": [blessing]},
        properties,
    )
    seconds = time.time() - started
    return {"seconds": seconds, "map50": metrics.read_metrics(evaluation.uri)["map50"]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, help="a local run's output folder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "evaluator_time.json")
    )
    args = parser.parse_args()

    from litedet.components.evaluation import device
    from litedet.run_summary import latest_run

    summary = latest_run(os.path.join(args.run_dir, "metadata", "litedet", "metadata.sqlite"))
    num_classes = len(summary.training_record()["classes"])
    images = len(
        device.read_examples(
            os.path.join(summary.components["DetectionExampleGen"].uri("examples"), "Split-eval")
        )
    )
    workdir = tempfile.mkdtemp(prefix="litedet-evaluator-bench-")
    runs = {"before": [], "now": []}
    for _ in range(args.repeats):
        for variant in runs:  # interleaved: the machine's noise hits both alike
            runs[variant].append(_evaluate(variant, summary, num_classes, workdir))
            print(f"{variant}: {runs[variant][-1]['seconds']:.1f} s", flush=True)
    result = {
        "machine": common.machine(),
        "images": images,
        "classes": num_classes,
        "seconds": {v: [round(r["seconds"], 1) for r in rs] for v, rs in runs.items()},
        "median_s": {
            v: round(statistics.median(r["seconds"] for r in rs), 1) for v, rs in runs.items()
        },
        "map50": {v: rs[-1]["map50"] for v, rs in runs.items()},
    }
    result["speedup"] = round(result["median_s"]["before"] / result["median_s"]["now"], 2)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
