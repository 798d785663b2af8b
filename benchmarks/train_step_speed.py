"""The training step's speed on CPU: float32 (the default) against bfloat16 mixed precision
and XLA compilation, side by side.

    .venv/bin/python benchmarks/train_step_speed.py [--rounds 3] [--steps 20]
        [--variants float32 mixed_bfloat16 xla xla_mixed_bfloat16]

Each variant trains the default detector (the Trainer's DetectorTrainer, MobileNetV2 alpha 0.35
at 256 px, batch 16, Keras 2's legacy Adam, as run_fn compiles it) on one batch held in memory,
so only the step's arithmetic is timed, not the input pipeline. Every variant runs in its own
process (the precision policy is process-wide), the variants in turn, `rounds` times: the
median images/s over rounds, and the first fit's time (tracing, XLA compilation). Whether this
CPU has bfloat16 (AVX512_BF16 / AMX) is read from /proc/cpuinfo and recorded.

XLA on CPU has no kernel for the gradient of the FPN's UpSampling2D (ResizeNearestNeighborGrad):
the xla variants use the same nearest-neighbour doubling written as broadcast + reshape (an
identical forward result) so that the step compiles at all; the shipped model keeps
UpSampling2D. Results print and go to benchmarks/results/train_step_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

VARIANTS = ("float32", "mixed_bfloat16", "xla", "xla_mixed_bfloat16")


def cpu_flags() -> dict:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    return {name: name in flags for name in ("avx512_bf16", "amx_bf16", "avx512_vnni")}


def _one(variant: str, steps: int) -> dict:
    """In a fresh process: the first fit (3 steps: tracing, compilation) and `steps` timed."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    if variant.endswith("mixed_bfloat16"):
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if variant.startswith("xla"):

        class NearestDoubling(tf.keras.layers.Layer):
            def __init__(self, size, name=None):
                super().__init__(name=name)

            def call(self, x):
                s = tf.shape(x)
                y = tf.broadcast_to(x[:, :, None, :, None, :], [s[0], s[1], 2, s[2], 2, s[3]])
                return tf.reshape(y, [s[0], s[1] * 2, s[2] * 2, s[3]])

        tf.keras.layers.UpSampling2D = NearestDoubling

    from litedet.components.detection import model as model_lib
    from litedet.components.trainer.config import TrainingConfig
    from litedet.components.trainer.module import DetectorTrainer

    settings = TrainingConfig()
    config = model_lib.DetectorConfig.from_training(settings, 5, 256)
    anchors = config.anchors()
    trainer = DetectorTrainer(model_lib.build_detector(config), anchors, settings.giou_weight)
    trainer.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(1e-3), jit_compile=variant.startswith("xla")
    )
    batch, count = settings.batch_size, int(anchors.shape[0])
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 6, (batch, count)).astype(np.int32)
    targets = {
        "box_targets": rng.normal(size=(batch, count, 4)).astype(np.float32),
        "class_targets": classes,
        "box_weights": (classes > 0).astype(np.float32),
        "class_weights": np.ones((batch, count), np.float32),
    }
    images = rng.uniform(-1, 1, (batch, 256, 256, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensors((images, targets)).repeat()
    started = time.perf_counter()
    trainer.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    first = time.perf_counter() - started
    started = time.perf_counter()
    trainer.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return {
        "first_fit_s": round(first, 1),
        "img_s": round(steps * batch / (time.perf_counter() - started), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "train_step_speed.json")
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.steps)))
        return 0

    runs = {v: [] for v in args.variants}
    for round_ in range(args.rounds):
        for variant in args.variants:
            command = [sys.executable, __file__, "--one", variant, "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"{variant} failed ({done.returncode})")
            runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {variant}: {runs[variant][-1]}", flush=True)
    baseline = statistics.median(r["img_s"] for r in runs[args.variants[0]])
    summary = {
        v: {
            "img_s_median": statistics.median(r["img_s"] for r in rs),
            "vs_" + args.variants[0]: round(
                statistics.median(r["img_s"] for r in rs) / baseline, 2
            ),
            "first_fit_s_median": statistics.median(r["first_fit_s"] for r in rs),
        }
        for v, rs in runs.items()
    }
    result = {
        "machine": {**common.machine(), "cpu_flags": cpu_flags()},
        "settings": {"rounds": args.rounds, "steps": args.steps, "batch_size": 16},
        "summary": summary,
        "runs": runs,
    }
    common.write_result(args.out, result)
    print(json.dumps(summary, indent=2), f"-> {args.out}", sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
