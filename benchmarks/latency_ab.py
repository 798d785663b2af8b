"""Two TFLite models' single-thread latency, measured side by side.

    .venv/bin/python benchmarks/latency_ab.py A.tflite B.tflite [--names a,b] [--rounds 7]

Alternates A and B `rounds` times (each round: the interpreter's median of 50 invokes after 5
warm-up runs, XNNPACK, 1 thread, a fixed random input; components/tflite/interpreter.py), so the
machine's noise hits both alike. Prints the median of each and B/A, and appends them to
benchmarks/results/latency_ab.json. Used for the detector-quality bar: the new default's int8
model at most 1.3x the old one's latency at the same alpha and input size.
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
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "latency_ab.json")
    )
    args = parser.parse_args()
    from litedet.components.tflite import interpreter

    names = args.names.split(",")
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, path in zip(names, (args.a, args.b)):
            times[name].append(interpreter.measure_latency(path, threads=1, runs=50))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians[names[1]] / medians[names[0]]
    for name, path in zip(names, (args.a, args.b)):
        print(f"{name:>12}: median {medians[name]:.3f} ms  ({os.path.getsize(path) / 1e6:.2f} MB)")
    print(f"{names[1]} / {names[0]}: {ratio:.3f}x")
    history = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            history = json.load(f)
    history.append(
        {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": common.machine(),
            "models": dict(zip(names, (args.a, args.b))),
            "rounds_ms": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
            "median_ms": {k: round(v, 3) for k, v in medians.items()},
            "ratio": round(ratio, 3),
        }
    )
    with open(args.out, "w") as f:
        json.dump(history, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
