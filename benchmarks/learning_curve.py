"""mAP on the sample evaluation split as training goes: how the training defaults were chosen.

    .venv/bin/python benchmarks/learning_curve.py [--set training.head_channels=64] \\
        [--set training.learning_rate=1e-3] [--steps 1200] [--every 300]

Trains the detector exactly as the Trainer does (run_fn's model, loss, input pipeline with
augmentation and learning-rate schedule), on the sample data's ExampleGen + Transform output,
and every --every steps scores the model in inference mode on the evaluation split with the
project's scorer (components/evaluation: the `eval_labels` ground truth, pycocotools). One run
per configuration; runs are appended to benchmarks/results/learning_curve.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_sample_data_args(parser, "learning_curve.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=0, help="default: training.train_steps")
    parser.add_argument("--every", type=int, default=300)
    args = parser.parse_args()

    import tensorflow as tf
    import tensorflow_transform as tft

    from litedet.components import trainer_module
    from litedet.components.detection import export, input_pipeline
    from litedet.components.detection import model as model_lib
    from litedet.components.evaluation import coco, device
    from litedet.pipeline import configs

    base, data = common.sample_data_steps(args)
    config = configs.load_config(
        None,
        [f"sample_data.num_train={args.num_train}", f"sample_data.num_eval={args.num_eval}"]
        + args.overrides,
    )
    settings = config.training
    steps = args.steps or settings.train_steps
    workdir = os.path.join(args.output_dir, f"n{args.num_train}-{args.num_eval}", "transform")
    if not glob.glob(os.path.join(workdir, "transform_graph", "*")):
        common.run_transform(config, data, False, workdir)
    transform_output = tft.TFTransformOutput(os.path.join(workdir, "transform_graph"))
    names = trainer_module.class_names(transform_output)
    detector_config = model_lib.DetectorConfig(
        num_classes=len(names),
        alpha=settings.alpha,
        image_size=config.transform.image_size,
        feature_pyramid=settings.feature_pyramid,
        head_channels=settings.head_channels,
        head_depth=settings.head_depth,
    )
    anchors = detector_config.anchors()
    detector = model_lib.build_detector(detector_config)
    trainer = trainer_module.DetectorTrainer(detector)
    train = input_pipeline.make_dataset(
        glob.glob(os.path.join(data.examples_uri, "Split-train", "*")),
        transform_output,
        anchors,
        settings.batch_size,
        training=True,
        augmentation=settings.augment,
    )
    trainer.compile(
        optimizer=tf.keras.optimizers.Adam(
            trainer_module._learning_rate(
                settings.learning_rate, steps, min(settings.warmup_steps, steps // 2)
            )
        )
    )
    examples = device.read_examples(os.path.join(data.examples_uri, "Split-eval"))
    module = export.DetectorExport(
        detector,
        transform_output,
        anchors,
        config.transform.image_size,
        settings.score_threshold,
        settings.nms_iou_threshold,
        settings.max_detections,
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The ground truth through the exported signature, once (it does not change).
        export.save(module, tmp)
        truth = device.ground_truth(tf.saved_model.load(tmp), examples)
    points, started = [], time.time()

    class Score(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            found = []
            for start in range(0, len(examples), device.BATCH):
                out = module.detect_examples(tf.constant(examples[start : start + device.BATCH]))
                for i in range(out["num_detections"].shape[0]):
                    n = int(out["num_detections"][i])
                    found.append(
                        {
                            "boxes": tf.stack(
                                [out[k][i, :n] for k in ("ymin", "xmin", "ymax", "xmax")], axis=-1
                            ).numpy(),
                            "classes": out["class_id"][i, :n].numpy(),
                            "scores": out["scores"][i, :n].numpy(),
                        }
                    )
            scores = coco.coco_map(truth, found, len(names))
            point = {
                "step": (epoch + 1) * args.every,
                "seconds": round(time.time() - started),
                "loss": round(float(logs["loss"]), 3),
                "map50": round(scores["map50"], 3),
                "map": round(scores["map"], 3),
            }
            points.append(point)
            print(point, flush=True)

    trainer.fit(
        train,
        epochs=steps // args.every,
        steps_per_epoch=args.every,
        verbose=0,
        callbacks=[Score()],
    )
    run = {
        "machine": common.machine(),
        "overrides": args.overrides,
        "steps": steps,
        "num_train": args.num_train,
        "num_eval": args.num_eval,
        "settings": {
            k: getattr(settings, k)
            for k in (
                "alpha",
                "head_channels",
                "head_depth",
                "learning_rate",
                "batch_size",
                "augment",
            )
        },
        "points": points,
    }
    previous = []
    if os.path.exists(args.results):
        with open(args.results) as f:
            previous = json.load(f)
    with open(args.results, "w") as f:
        json.dump(previous + [run], f, indent=2)
    print(json.dumps(run, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
