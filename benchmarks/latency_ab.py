"""Two TFLite models' single-thread latency, measured side by side.

    .venv/bin/python benchmarks/latency_ab.py A.tflite B.tflite [--names a,b] [--rounds 7]

Alternates A and B `rounds` times (each round: the interpreter's median of 50 invokes after 5
warm-up runs, XNNPACK, 1 thread, a fixed random input; components/tflite/interpreter.py), so the
machine's noise hits both alike. Prints the median of each and B/A, and appends them to
benchmarks/results/latency_ab.json. Used for the detector-quality bar: the new default's int8
model at most 1.3x the old one's latency at the same alpha and input size.

--bare-backbone ALPHA also converts the bare MobileNetV2 backbone at that alpha, at A's input
size and in A's format (from its file name, model_<format>.tflite, or --format), measures it in
the same rounds and prints each model's multiple of it (the head's cost: benchmarks/head_cost.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--names", default="a,b")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bare-backbone", type=float, metavar="ALPHA")
    parser.add_argument("--format", choices=("float32", "float16", "int8"))
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "latency_ab.json")
    )
    args = parser.parse_args()
    from litedet.components.tflite import interpreter

    names = args.names.split(",")
    paths = dict(zip(names, (args.a, args.b)))
    if args.bare_backbone:
        paths[BARE] = _bare_backbone(args.a, args.bare_backbone, args.format)
    times = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            times[name].append(interpreter.measure_latency(path, threads=1, runs=50))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians[names[1]] / medians[names[0]]
    for name, path in paths.items():
        print(f"{name:>12}: median {medians[name]:.3f} ms  ({os.path.getsize(path) / 1e6:.2f} MB)")
    print(f"{names[1]} / {names[0]}: {ratio:.3f}x")
    vs_bare = {}
    if BARE in medians:
        vs_bare = {n: round(medians[n] / medians[BARE], 3) for n in names}
        for name, value in vs_bare.items():
            print(f"{name} / {BARE}: {value:.3f}x")
    history = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            history = json.load(f)
    history.append(
        {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": common.machine(),
            "models": paths,
            "rounds_ms": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
            "median_ms": {k: round(v, 3) for k, v in medians.items()},
            "ratio": round(ratio, 3),
            **({"vs_bare_backbone": vs_bare} if vs_bare else {}),
        }
    )
    with open(args.out, "w") as f:
        json.dump(history, f, indent=2)
    return 0


BARE = "bare backbone"


def _bare_backbone(model_path: str, alpha: float, fmt) -> str:
    import re
    import tempfile

    from benchmarks.head_cost import backbone_tflite
    from litedet.components.tflite import converter

    if fmt is None:
        named = re.fullmatch(r"model_(float32|float16|int8)\.tflite", os.path.basename(model_path))
        if not named:
            raise SystemExit(f"--format: {model_path} does not say its format in its name")
        fmt = named.group(1)
    size = int(converter.describe(model_path)["input"]["shape"][1])
    path = os.path.join(tempfile.mkdtemp(prefix="litedet-backbone-"), f"backbone_{fmt}.tflite")
    return backbone_tflite(alpha, size, fmt, path)


if __name__ == "__main__":
    sys.exit(main())
