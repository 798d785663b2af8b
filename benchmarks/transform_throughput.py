"""Transform throughput next to a bare TensorFlow decode+resize loop, in one run.

    .venv/bin/python benchmarks/transform_throughput.py [--repeats 3] [--num-train 400]

1. Runs the local pipeline's data steps once (cached after the first time) for the sample
   dataset's examples.
2. Times, in turn, `repeats` times each, on the same images:
   - `transform_step`: the real TFX Transform executor as the pipeline runs it (analysis and the
     transform graph; the Trainer applies the graph to the pixels), with the pipeline's Beam
     arguments (DirectRunner, multi-process);
   - `transform_step_materialized`: the same, also writing every transformed image
     (`transform.materialize: true`);
   - `transform_graph_tf_data`: the transform graph applied to the raw examples in tf.data, the
     way the Trainer reads them: parse, decode, resize, normalize, pad boxes;
   - `bare_tf_loop`: a bare tf.data loop over the same image bytes: decode, resize, normalize.
3. Prints images/s (medians), each ratio to the bare loop, the peak resident memory of the
   process tree, and writes them to benchmarks/results/transform_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore")  # Beam workers inherit it

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import DataSteps, PeakMemory, run_transform  # noqa: E402
from litedet.pipeline import configs  # noqa: E402


def run_graph_in_tf_data(data: DataSteps, graph_dir: str) -> None:
    """The Trainer's read path: raw records through the transform graph, every image once."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from litedet.components.detection import input_pipeline

    records = tf.data.TFRecordDataset(data.record_files(), compression_type="GZIP")
    examples = input_pipeline.transformed_examples(
        records, tft.TFTransformOutput(graph_dir), materialized=False, deterministic=False
    )
    for _ in examples.batch(32).prefetch(tf.data.AUTOTUNE):
        pass


def image_bytes_of(data: DataSteps) -> list:
    import tensorflow as tf

    files = data.record_files()
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    return [
        tf.io.parse_single_example(r, spec)["image/encoded"].numpy()
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]


def run_bare_loop(images: list, size: int) -> None:
    """What any input pipeline must do at least: decode, resize, normalize every image."""
    import tensorflow as tf

    def preprocess(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.image.resize(image, [size, size]) / 127.5 - 1.0

    dataset = (
        tf.data.Dataset.from_tensor_slices(images)
        .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(32)
    )
    for _ in dataset:
        pass


def timed(fn, *args):
    with PeakMemory() as memory:
        start = time.perf_counter()
        fn(*args)
        seconds = time.perf_counter() - start
    return seconds, memory.peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    common.add_sample_data_args(parser, "transform_throughput.json")
    args = parser.parse_args(argv)

    config, data = common.sample_data_steps(args)
    images = image_bytes_of(data)
    n = len(images)
    n = len(images)
    seconds = {name: [] for name in VARIANTS}
    peaks = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as graph_dir:
        graph = run_transform(config, data, False, graph_dir)  # warm-up, untimed
        variants = {
            "transform_step": lambda: _in_tmp(run_transform, config, data, False),
            "transform_step_materialized": lambda: _in_tmp(run_transform, config, data, True),
            "transform_graph_tf_data": lambda: run_graph_in_tf_data(data, graph),
            "bare_tf_loop": lambda: run_bare_loop(images, config.transform.image_size),
        }
        for i in range(args.repeats):
            for name in VARIANTS:
                took, peak = timed(variants[name])
                seconds[name].append(took)
                peaks[name].append(peak)
            print(
                f"  repeat {i + 1}: "
                + ", ".join(f"{name} {n / seconds[name][-1]:.1f} img/s" for name in VARIANTS),
                flush=True,
            )

    per_s = {name: n / statistics.median(seconds[name]) for name in VARIANTS}
    bare = per_s["bare_tf_loop"]
    result = {
        "images": n,
        "image_size": config.transform.image_size,
        "repeats": args.repeats,
        "beam_pipeline_args": configs.beam_args_for(config),
        "images_per_s_median": {k: round(v, 2) for k, v in per_s.items()},
        "ratio_to_bare_tf_loop": {k: round(v / bare, 3) for k, v in per_s.items()},
        "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "peak_rss_mb": {k: round(max(v) / 2**20) for k, v in peaks.items()},
        "machine": common.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"\n{n} images at {config.transform.image_size} px, median of {args.repeats} "
        f"(Beam: {' '.join(configs.beam_args_for(config))}):"
    )
    for name in VARIANTS:
        print(
            f"  {name:28s} {per_s[name]:8.1f} img/s   ratio {per_s[name] / bare:6.3f}   "
            f"peak RSS {result['peak_rss_mb'][name]} MB"
        )
    print(f"  -> {args.results}")
    return 0


VARIANTS = (
    "transform_step",
    "transform_step_materialized",
    "transform_graph_tf_data",
    "bare_tf_loop",
)


def _in_tmp(fn, *args):
    with tempfile.TemporaryDirectory() as workdir:
        return fn(*args, workdir)


if __name__ == "__main__":
    sys.exit(main())
