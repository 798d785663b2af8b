"""Size, latency and accuracy of the shipped TFLite formats across alphas.

    .venv/bin/python benchmarks/tflite_sweep.py [--alphas 0.35 0.5 0.75 1.0] [--set KEY=VALUE]

For each alpha: one whole local pipeline run at the default settings (`litedet sweep`'s
machinery: resumable, points kept under --sweep-dir), which scores every TFLite format on the
sample evaluation split (mAP@0.5, same images and scorer as the SavedModel). Then, here, side by
side in one process and interleaved, the single-thread latency of every format with the XNNPACK
delegate (the stock interpreter's default) and without it (builtin kernels), median of --repeats
rounds of --runs invokes each. Writes benchmarks/results/tflite_sweep.json, docs/tflite_sweep.md
(table) and docs/tflite_sweep.png (mAP@0.5 against latency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402
from litedet.components.tflite import FORMATS  # noqa: E402


def measure(paths: dict, runs: int, repeats: int) -> dict:
    """{fmt: {"xnnpack": ms, "builtin": ms}}: medians over `repeats` interleaved rounds."""
    from litedet.components.tflite.interpreter import measure_latency

    samples = {fmt: {"xnnpack": [], "builtin": []} for fmt in paths}
    for _ in range(repeats):
        for fmt, path in paths.items():
            for name, xnnpack in (("xnnpack", True), ("builtin", False)):
                samples[fmt][name].append(
                    measure_latency(path, threads=1, runs=runs, use_xnnpack=xnnpack)
                )
    return {
        fmt: {k: round(statistics.median(v), 2) for k, v in d.items()} for fmt, d in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.35, 0.5, 0.75, 1.0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--sweep-dir", default=os.path.join(ROOT, "outputs", "bench", "tflite_sweep")
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    args = parser.parse_args()

    from litedet import sweep
    from litedet.components.pusher import store
    from litedet.pipeline import configs

    config = configs.load_config(
        None,
        [
            f"output_dir={os.path.join(args.sweep_dir, 'outputs')}",
            f"tflite.formats={json.dumps(list(FORMATS))}",
        ]
        + args.overrides,
    )
    size = config.transform.image_size
    outcome = sweep.run(
        config, args.alphas, [size], args.sweep_dir, progress=lambda m: print(m, flush=True)
    )
    rows = []
    for result in outcome["results"]:
        name = sweep.point_name(result["alpha"], result["image_size"])
        _, uri = store.latest(os.path.join(args.sweep_dir, "models", name))
        paths = {fmt: os.path.join(uri, f"model_{fmt}.tflite") for fmt in FORMATS}
        latency = measure(paths, args.runs, args.repeats)
        for fmt in FORMATS:
            rows.append(
                {
                    "alpha": result["alpha"],
                    "image_size": result["image_size"],
                    "format": fmt,
                    "map50": result["formats"][fmt]["map50"],
                    "saved_model_map50": result["map50"],
                    "size_mb": round(result["formats"][fmt]["size_mb"], 3),
                    "latency_ms_xnnpack": latency[fmt]["xnnpack"],
                    "latency_ms_builtin": latency[fmt]["builtin"],
                }
            )
            print(rows[-1], flush=True)
    payload = {
        "machine": common.machine(),
        "train_steps": config.training.train_steps,
        "num_eval_images": outcome["results"][0]["num_eval_images"],
        "runs": args.runs,
        "repeats": args.repeats,
        "rows": rows,
    }
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "tflite_sweep.json"), "w") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.join(args.docs, "tflite_sweep.md"), "w") as f:
        f.write(table(payload))
    # The plot: mAP against latency with XNNPACK (what the stock interpreter runs).
    sweep.plot(
        [
            {
                "alpha": a,
                "image_size": size,
                "formats": {
                    r["format"]: {
                        "map50": r["map50"],
                        "latency_ms": r["latency_ms_xnnpack"],
                        "size_mb": r["size_mb"],
                        "map": 0.0,
                    }
                    for r in rows
                    if r["alpha"] == a
                },
            }
            for a in args.alphas
        ],
        os.path.join(args.docs, "tflite_sweep.png"),
    )
    print(table(payload))
    return 0


def table(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        "# TFLite formats across alphas",
        "",
        f"`benchmarks/tflite_sweep.py`: {payload['train_steps']} training steps per alpha on the "
        f"sample data, mAP@0.5 on its {payload['num_eval_images']} evaluation images; latency "
        f"= median over {payload['repeats']} interleaved rounds of the median of "
        f"{payload['runs']} single-thread invokes (preprocessing excluded). Machine: {m['cpu']}, "
        f"{m['cores']} cores.",
        "",
        "| alpha | format | size (MB) | latency XNNPACK (ms) | latency builtin (ms) | mAP@0.5 "
        "| SavedModel mAP@0.5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['alpha']:g} | {r['format']} | {r['size_mb']:.2f} | "
            f"{r['latency_ms_xnnpack']:.2f} | {r['latency_ms_builtin']:.2f} | "
            f"{r['map50']:.3f} | {r['saved_model_map50']:.3f} |"
        )
    lines += ["", "![mAP@0.5 against latency](tflite_sweep.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
