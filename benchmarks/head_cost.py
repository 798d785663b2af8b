"""What the detection head costs on the device: each candidate detector's single-thread latency
as a multiple of the bare MobileNetV2 backbone's, same alpha, input size and format.

    .venv/bin/python benchmarks/head_cost.py [--format int8] [--rounds 15]
        [--candidate NAME=KEY=VALUE,KEY=VALUE ...]   (NAME without "=")

Each candidate is the Trainer's detector at the default settings with the candidate's training
settings changed (components/trainer/config.py: head_channels, head_depth, finest_head_depth,
finest_stride, backbone_top_conv, feature_pyramid, scales_per_octave, ...), untrained, converted
by the project's converter (components/tflite/converter.py: the same post-process op, metadata
and quantization as the pipeline; int8 calibrated on random images). Latency does not depend on
what the weights learned, except through how many boxes reach the post-process op's NMS: the
class predictor starts at its focal-loss prior (scores ~0.01, under the 0.05 threshold), as a
trained model's background anchors are. The bare backbone is keras.applications.MobileNetV2
without its top, converted with the same settings (uint8 input for int8). All models are
measured in turn, `rounds` times (measure_latency of components/tflite/interpreter.py: median of
50 invokes, XNNPACK, 1 thread), each right after a measurement of the bare backbone: a
candidate's ratio is the median of its paired per-round ratios (printed with their range), its
latency the median of its rounds.
All go to benchmarks/results/head_cost.json.

This is the latency axis of the head's Pareto table (docs/training.md); the accuracy axis needs a
training per candidate (benchmarks/learning_curve.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

DEFAULT_CANDIDATES = {
    "default": {},
    "finest_stride=16": {"finest_stride": 16},
    "head_channels=48": {"head_channels": 48},
    "finest_head_depth=0": {"finest_head_depth": 0},
    "backbone_top_conv=false": {"backbone_top_conv": False},
    "no top conv, finest_head_depth=0": {"backbone_top_conv": False, "finest_head_depth": 0},
    "no top conv, head_channels=48": {"backbone_top_conv": False, "head_channels": 48},
    "no top conv, finest_head_depth=0, head_channels=64": {
        "backbone_top_conv": False,
        "finest_head_depth": 0,
        "head_channels": 64,
    },
    "no top conv, finest_head_depth=0, scales_per_octave=1": {
        "backbone_top_conv": False,
        "finest_head_depth": 0,
        "scales_per_octave": 1,
    },
}
NUM_CLASSES = 5
CALIBRATION_IMAGES = 8


def _random_images(size: int, count: int = CALIBRATION_IMAGES):
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (size, size, 3)).astype(np.float32) for _ in range(count)]


def detector_tflite(overrides: dict, fmt: str, image_size: int, out_dir: str) -> str:
    """The candidate detector, untrained, through the pipeline's converter -> its .tflite."""
    import tensorflow as tf

    from litedet.components.detection import export
    from litedet.components.detection import model as model_lib
    from litedet.components.tflite import converter
    from litedet.components.trainer.config import TrainingConfig

    config = model_lib.DetectorConfig.from_training(
        TrainingConfig(**overrides), NUM_CLASSES, image_size
    )
    detector = model_lib.build_detector(config)
    module = tf.Module()
    module.model_variables = list(detector.variables)
    module.anchors = tf.Variable(config.anchors(), trainable=False, name="anchors")

    @tf.function(
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)],
        autograph=False,
    )
    def preprocessed(images):
        outputs = detector(images, training=False)
        return {
            "box_encodings": outputs["box_encodings"],
            "class_scores": tf.sigmoid(outputs["class_logits"]),
        }

    saved = os.path.join(out_dir, "saved_model")
    tf.saved_model.save(module, saved, signatures={export.PREPROCESSED_SIGNATURE: preprocessed})
    paths = converter.convert(
        saved,
        out_dir,
        [f"class{i}" for i in range(1, NUM_CLASSES + 1)],
        formats=[fmt],
        representative_images=_random_images(image_size),
    )
    return paths[fmt]


def backbone_tflite(alpha: float, image_size: int, fmt: str, path: str) -> str:
    """keras.applications.MobileNetV2 without its top, quantized by the converter's own table
    (components/tflite/converter.py QUANTIZERS) as the detector's format is."""
    import types

    import tensorflow as tf

    from litedet.components.tflite.converter import FORMAT_SPECS, QUANTIZERS

    backbone = tf.keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False, weights=None
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(backbone)
    # The quantizers read only the input size from the model they are given.
    source = types.SimpleNamespace(image_size=image_size)
    QUANTIZERS[FORMAT_SPECS[fmt].quantization](converter, source, _random_images(image_size))
    with open(path, "wb") as handle:
        handle.write(converter.convert())
    return path


def _candidate(text: str):
    name, _, settings = text.partition("=")
    values = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        values[key] = json.loads(value) if value not in ("true", "false") else value == "true"
    return name, values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", default="int8", choices=("float32", "float16", "int8"))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--candidate", action="append", default=[], type=_candidate)
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "head_cost.json")
    )
    args = parser.parse_args()
    from litedet.components.tflite import interpreter

    candidates = dict(args.candidate) or dict(DEFAULT_CANDIDATES)
    work = tempfile.mkdtemp(prefix="litedet-head-cost-")
    models = {
        "bare backbone": backbone_tflite(
            args.alpha, args.image_size, args.format, os.path.join(work, "backbone.tflite")
        )
    }
    for index, (name, overrides) in enumerate(candidates.items()):
        out_dir = os.path.join(work, f"candidate{index}")
        settings = {"alpha": args.alpha, **overrides}
        models[name] = detector_tflite(settings, args.format, args.image_size, out_dir)
        print(f"converted {name}", flush=True)
    # Paired rounds: a round times the bare backbone right before each candidate, so the ratio
    # compares two measurements taken under the same load; the machine's drift from round to
    # round (16-44% of the medians on this shared machine) cancels in the ratio.
    times = {name: [] for name in models}
    ratios = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, path in models.items():
            bare_ms = interpreter.measure_latency(models["bare backbone"], threads=1, runs=50)
            candidate_ms = interpreter.measure_latency(path, threads=1, runs=50)
            times[name].append(candidate_ms)
            ratios[name].append(candidate_ms / bare_ms)
    rows = {
        name: {
            "median_ms": round(statistics.median(times[name]), 3),
            "vs_bare_backbone": round(statistics.median(ratios[name]), 3),
            "ratio_range": [round(min(ratios[name]), 3), round(max(ratios[name]), 3)],
            "size_mb": round(os.path.getsize(path) / 1e6, 2),
            "settings": {"alpha": args.alpha, **candidates.get(name, {})},
            "rounds_ms": [round(v, 3) for v in times[name]],
        }
        for name, path in models.items()
    }
    for name, row in rows.items():
        low, high = row["ratio_range"]
        print(
            f"{name:>40}: {row['median_ms']:7.3f} ms  {row['vs_bare_backbone']:.3f}x "
            f"({low:.2f}-{high:.2f})  {row['size_mb']:.2f} MB"
        )
    result = {
        "machine": common.machine(),
        "format": args.format,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "models": rows,
    }
    common.write_result(args.out, result)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
