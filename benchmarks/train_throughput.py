"""Training throughput per alpha: the Trainer's input pipeline next to a bare model.fit.

    .venv/bin/python benchmarks/train_throughput.py [--alphas 0.35 0.5 0.75 1.0] [--steps 60]

For each alpha, at the default input size, in turn and `repeats` times each:
- `pipeline`: the Trainer's real input pipeline (raw JPEG records -> transform graph ->
  augmentation -> anchor targets, tf.data, parallel) feeding the Trainer's training step;
- `bare`: the same model and training step fed by an identical dataset held in memory
  (batches taken from that pipeline once, then replayed), so only the input work differs.
Training images per second are measured over the steps after a warm-up (tracing, first
batches); the ratio pipeline / bare says whether the input pipeline starves the model (the bar
is >= 0.9). Peak resident memory of each run is recorded. Results print and go to
benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import DataSteps, PeakMemory, run_transform  # noqa: E402


class StepClock:
    """Keras callback: wall time of each training batch end."""

    def __init__(self):
        import tensorflow as tf

        class _Callback(tf.keras.callbacks.Callback):
            def on_train_batch_end(inner, batch, logs=None):  # noqa: N805
                self.ends.append(time.perf_counter())

        self.ends = []
        self.callback = _Callback()

    def images_per_second(self, warmup: int, batch_size: int) -> float:
        timed = self.ends[warmup:]
        return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])


def build_trainer(alpha: float, image_size: int, num_classes: int):
    import tensorflow as tf

    from litedet.components.detection import model as model_lib
    from litedet.components.trainer.config import TrainingConfig
    from litedet.components.trainer.module import DetectorTrainer

    # The detector the Trainer builds at the default settings, at this alpha.
    config = model_lib.DetectorConfig.from_training(
        TrainingConfig(alpha=alpha), num_classes, image_size
    )
    trainer = DetectorTrainer(model_lib.build_detector(config))
    trainer.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    return trainer, config.anchors()


def measure(
    alpha, data: DataSteps, graph_dir: str, batch_size: int, steps: int, warmup: int, variant: str
):
    import tensorflow as tf
    import tensorflow_transform as tft

    from litedet.components.detection import input_pipeline
    from litedet.components.trainer.module import class_names

    output = tft.TFTransformOutput(graph_dir)
    image_size = int(output.transformed_feature_spec()["image"].shape[0])
    trainer, anchors = build_trainer(alpha, image_size, len(class_names(output)))
    pipeline = input_pipeline.make_dataset(
        [os.path.join(data.examples_uri, "Split-train", "*")],
        output,
        anchors,
        batch_size,
        training=True,
    )
    if variant == "bare":
        # The identical batches, computed once and held in memory: no input work per step.
        held = list(pipeline.take(16))
        stacked = tf.nest.map_structure(lambda *batches: tf.stack(batches), *held)
        dataset = tf.data.Dataset.from_tensor_slices(stacked).repeat()
    else:
        dataset = pipeline
    clock = StepClock()
    with PeakMemory() as memory:
        trainer.fit(
            dataset, steps_per_epoch=steps + warmup, epochs=1, verbose=0, callbacks=[clock.callback]
        )
    return clock.images_per_second(warmup, batch_size), memory.peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.35, 0.5, 0.75, 1.0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    common.add_sample_data_args(parser, "train_throughput.json")
    args = parser.parse_args(argv)

    config, data = common.sample_data_steps(args)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        graph = run_transform(config, data, False, workdir)
        for alpha in args.alphas:
            runs = {"pipeline": [], "bare": []}
            peaks = {"pipeline": [], "bare": []}
            for _ in range(args.repeats):
                for variant in ("pipeline", "bare"):
                    speed, peak = measure(
                        alpha, data, graph, args.batch_size, args.steps, args.warmup, variant
                    )
                    runs[variant].append(speed)
                    peaks[variant].append(peak)
            row = {
                "alpha": alpha,
                "pipeline_images_per_s": round(statistics.median(runs["pipeline"]), 2),
                "bare_fit_images_per_s": round(statistics.median(runs["bare"]), 2),
                "pipeline_peak_rss_mb": round(max(peaks["pipeline"]) / 2**20),
                "bare_peak_rss_mb": round(max(peaks["bare"]) / 2**20),
                "runs": runs,
            }
            row["ratio"] = round(row["pipeline_images_per_s"] / row["bare_fit_images_per_s"], 3)
            rows.append(row)
            print(
                f"  alpha {alpha}: pipeline {row['pipeline_images_per_s']:.1f} img/s, bare "
                f"fit {row['bare_fit_images_per_s']:.1f} img/s, ratio {row['ratio']:.3f}, "
                f"peak RSS {row['pipeline_peak_rss_mb']} MB",
                flush=True,
            )
    result = {
        "image_size": config.transform.image_size,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "repeats": args.repeats,
        "rows": rows,
        "machine": common.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    common.write_result(args.results, result)
    print(f"-> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
