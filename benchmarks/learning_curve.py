"""Learning curves: mAP on the sample evaluation split against wall-clock training time.

    .venv/bin/python benchmarks/learning_curve.py --name baseline [--set training.X=Y ...] \\
        [--steps 1800] [--every 300] [--num-train 400 --num-eval 100]

Trains with the Trainer's own run_fn (model, loss, input pipeline, schedule, and its validation
mAP at every checkpoint, timed) on the sample data's ExampleGen + Transform output (made once and
kept under --output-dir), then scores the exported model as the gate does (pycocotools, boxes in
the images' own pixels: mAP@[.5:.95], mAP@0.5, AP small/medium/large); with --int8 also the
int8 TFLite model as the pipeline converts it (its mAP and single-thread latency). Each run is
appended to benchmarks/results/learning_curve.json under --name; `--plot` draws every recorded
curve into docs/learning_curves.png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402


def _train(args, config, data, workdir):
    import glob

    from litedet.components import code_fingerprint
    from litedet.components.trainer import component as trainer
    from litedet.components.trainer import module as trainer_module

    transform_dir = os.path.join(workdir, "transform")
    if not glob.glob(os.path.join(transform_dir, "transform_graph", "*")):
        common.run_transform(config, data, False, transform_dir)
    run_dir = tempfile.mkdtemp(prefix=f"lc-{args.name}-", dir=workdir)
    training = dict(vars(config.training))
    training.update(train_steps=args.steps, checkpoint_every_steps=args.every)
    fn_args = types.SimpleNamespace(
        train_files=[os.path.join(data.examples_uri, "Split-train", "*")],
        eval_files=[os.path.join(data.examples_uri, "Split-eval", "*")],
        transform_output=os.path.join(transform_dir, "transform_graph"),
        serving_model_dir=os.path.join(run_dir, "serving"),
        model_run_dir=os.path.join(run_dir, "model_run", "1"),
        hyperparameters={"values": training},
        custom_config={"code_fingerprint": code_fingerprint.source_fingerprint(trainer.RUN_FN)},
    )
    started = time.time()
    trainer_module.run_fn(fn_args)
    seconds = time.time() - started
    with open(os.path.join(fn_args.model_run_dir, "training.json")) as f:
        record = json.load(f)
    return fn_args.serving_model_dir, record, seconds, run_dir


def _score(serving_dir, data, num_classes):
    from litedet.components.evaluation import device

    examples = device.read_examples(os.path.join(data.examples_uri, "Split-eval"))
    return device.score_saved_model(serving_dir, examples, num_classes)


def _score_int8(serving_dir, data, transform_dir, labels, run_dir):
    """The int8 TFLite model as the pipeline makes and gates it: converted with the Trainer's
    calibration images, scored on the evaluation split (pycocotools, the images' own pixels),
    single-thread interpreter latency."""
    import tensorflow_transform as tft

    from litedet.components import tflite
    from litedet.components.evaluation import device
    from litedet.components.tflite import converter, executor

    transform_output = tft.TFTransformOutput(os.path.join(transform_dir, "transform_graph"))
    images = executor.calibration_images(
        os.path.join(data.examples_uri, "Split-train", "*"),
        transform_output,
        tflite.DEFAULT_NUM_CALIBRATION_IMAGES,
    )
    resize_mode = executor.resize_mode_of(transform_output)
    paths = converter.convert(
        serving_dir,
        os.path.join(run_dir, "tflite"),
        labels,
        formats=["int8"],
        representative_images=images,
        resize_mode=resize_mode,
    )
    examples = device.read_examples(os.path.join(data.examples_uri, "Split-eval"))
    scores = device.score_formats(serving_dir, paths, examples, len(labels), resize_mode)["int8"]
    return {k: scores.get(k) for k in ("map", "map50", "ap_small", "latency_ms", "size_bytes")}


def _plot(results, path):
    from litedet.components.report.render import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for name, run in results.items():
        minutes = [p["seconds"] / 60 for p in run["curve"]]
        axes[0].plot(minutes, [p["map"] for p in run["curve"]], "o-", label=name)
        axes[1].plot(minutes, [p["map50"] for p in run["curve"]], "o-", label=name)
    for axis, title in zip(axes, ("mAP@[.5:.95]", "mAP@0.5")):
        axis.set_title(f"validation {title}, sample evaluation split")
        axis.set_xlabel("training minutes (2 CPU cores)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_sample_data_args(parser, "learning_curve.json")
    parser.add_argument("--name", help="this configuration's name in the results")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--plot", action="store_true", help="only draw the recorded curves")
    parser.add_argument(
        "--int8", action="store_true", help="also convert to int8 TFLite: its mAP and latency"
    )
    args = parser.parse_args()
    results_path = args.results
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    if args.plot:
        _plot(results, os.path.join(ROOT, "docs", "learning_curves.png"))
        print(
            f"{'name':28} {'min':>5} {'mAP':>6} {'mAP50':>6} {'small':>6} {'best':>5} "
            f"{'int8 mAP':>8} {'int8 ms':>7}"
        )
        for name, run in results.items():
            final, int8 = run["final"], run.get("int8") or {}
            print(
                f"{name:28} {run['train_seconds'] / 60:5.1f} {final['map']:6.3f} "
                f"{final['map50']:6.3f} {final['ap_small'] or 0:6.3f} {run['best_step'] or 0:5d} "
                f"{int8.get('map') or 0:8.3f} {int8.get('latency_ms') or 0:7.2f}"
            )
        return 0
    if not args.name:
        parser.error("--name is required to record a run")

    from litedet.pipeline import configs

    base, data = common.sample_data_steps(args)
    config = configs.load_config(
        None,
        [
            f"sample_data.num_train={args.num_train}",
            f"sample_data.num_eval={args.num_eval}",
            "training.backbone_weights=none",
        ]
        + args.overrides,
    )
    workdir = os.path.join(args.output_dir, f"n{args.num_train}-{args.num_eval}")
    serving, record, seconds, run_dir = _train(args, config, data, workdir)
    final = _score(serving, data, len(record["classes"]))
    int8 = None
    if args.int8:
        transform_dir = os.path.join(workdir, "transform")
        int8 = _score_int8(serving, data, transform_dir, record["classes"], run_dir)
    results[args.name] = {
        "overrides": args.overrides,
        "steps": args.steps,
        "every": args.every,
        "train_seconds": round(seconds, 1),
        "curve": record["validation"],
        "best_step": (record.get("best") or {}).get("step"),
        "final": {
            k: final.get(k) for k in ("map", "map50", "map75", "ap_small", "ap_medium", "ap_large")
        },
        "int8": int8,
        "machine": common.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    os.makedirs(os.path.dirname(results_path), exist_ok=True)
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
    shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps(results[args.name], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
