"""`litedet sweep`: which alpha (and input size) to ship, measured.

Each point (alpha, input size) is a whole local pipeline run of its own (pipeline name
`<name>-sweep-a<alpha>-s<size>`, so points never serve as each other's baseline), on the same
data and settings otherwise. From each run's ModelGate report it keeps the SavedModel's mAP and,
per TFLite format, mAP@0.5, file size and single-thread latency on this machine. The sweep is
resumable: a finished point's result file is never recomputed (delete it to redo the point), and
an interrupted point reruns with its finished steps served from the TFX cache.

`recommend` picks the most accurate (point, format) that fits a latency and a size budget.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

POINTS_DIR = "points"
TABLE_FILE = "sweep.md"
PLOT_FILE = "sweep.png"
RESULTS_FILE = "sweep.json"


def point_name(alpha: float, image_size: int) -> str:
    return f"a{alpha:g}-s{image_size}"


def _point_config(config, alpha: float, image_size: int, sweep_dir: str):
    from litedet.pipeline import configs

    point = copy.deepcopy(config)
    name = point_name(alpha, image_size)
    point.pipeline_name = f"{config.pipeline_name}-sweep-{name}"
    point.training.alpha = alpha
    point.transform.image_size = image_size
    # The sweep measures; it does not ship. No bound, no registry: every point gets its numbers.
    point.evaluation.min_map50 = 0.0
    point.evaluation.max_latency_ms = 0.0
    point.evaluation.max_size_mb = 0.0
    point.evaluation.max_tflite_map_drop = 1.0
    point.push.registry = {"kind": "none"}
    point.push.destination = os.path.abspath(os.path.join(sweep_dir, "models", name))
    configs.validate(point)
    return point


def result_from_gate(
    alpha: float, image_size: int, gate: dict, seconds: float, train_steps: int
) -> dict:
    formats = {
        fmt: {
            "map50": v["map50"],
            "map": v["map"],
            "size_mb": v["size_bytes"] / 1e6,
            "latency_ms": v["latency_ms"],
        }
        for fmt, v in gate["formats"].items()
        if fmt != "saved_model"
    }
    return {
        "alpha": alpha,
        "image_size": image_size,
        "map50": gate["map50"],
        "map": gate["map"],
        "train_steps": train_steps,
        "num_eval_images": gate["num_eval_images"],
        "formats": formats,
        "seconds": round(seconds, 1),
    }


def run_point(config, alpha: float, image_size: int, sweep_dir: str, dataset) -> dict:
    """Runs one point's pipeline (or reads its finished result) and returns its result."""
    from litedet import run_summary
    from litedet.pipeline import local_runner

    path = os.path.join(sweep_dir, POINTS_DIR, point_name(alpha, image_size) + ".json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    point = _point_config(config, alpha, image_size, sweep_dir)
    started = time.time()
    local_runner.execute(local_runner.build(point, dataset))
    gate = run_summary.latest_run(os.path.abspath(point.metadata_path)).gate_report()
    result = result_from_gate(
        alpha, image_size, gate, time.time() - started, point.training.train_steps
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)  # a point is finished only once its file is whole
    return result


def candidates(results: Sequence[dict]) -> List[dict]:
    """One row per (point, TFLite format)."""
    return [
        {"alpha": r["alpha"], "image_size": r["image_size"], "format": fmt, **values}
        for r in results
        for fmt, values in sorted(r["formats"].items())
    ]


def recommend(
    results: Sequence[dict], max_latency_ms: float = 0.0, max_size_mb: float = 0.0
) -> Tuple[Optional[dict], List[dict]]:
    """(the most accurate row that fits both budgets or None, every row with `fits` and, when it
    does not fit, `why`). 0 turns a budget off. Ties in mAP@0.5 go to the faster row."""
    rows = []
    for row in candidates(results):
        why = []
        if max_latency_ms > 0 and row["latency_ms"] > max_latency_ms:
            why.append(f"{row['latency_ms']:.1f} ms > {max_latency_ms:g} ms")
        if max_size_mb > 0 and row["size_mb"] > max_size_mb:
            why.append(f"{row['size_mb']:.2f} MB > {max_size_mb:g} MB")
        rows.append(dict(row, fits=not why, why="; ".join(why)))
    fitting = [r for r in rows if r["fits"]]
    best = max(fitting, key=lambda r: (r["map50"], -r["latency_ms"])) if fitting else None
    return best, rows


def describe(row: dict) -> str:
    return (
        f"alpha {row['alpha']:g} at {row['image_size']} px, {row['format']}: mAP@0.5 "
        f"{row['map50']:.3f}, {row['latency_ms']:.1f} ms, {row['size_mb']:.2f} MB"
    )


def write_table(
    results: Sequence[dict],
    path: str,
    max_latency_ms: float = 0.0,
    max_size_mb: float = 0.0,
    machine: str = "",
) -> str:
    best, rows = recommend(results, max_latency_ms, max_size_mb)
    lines = [
        "| alpha | input | format | mAP@0.5 | mAP | size (MB) | latency (ms, 1 thread) | fits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["alpha"], r["image_size"], r["format"])):
        mark = "**best**" if r is best else ("yes" if r["fits"] else f"no ({r['why']})")
        lines.append(
            f"| {r['alpha']:g} | {r['image_size']} | {r['format']} | {r['map50']:.3f} "
            f"| {r['map']:.3f} | {r['size_mb']:.2f} | {r['latency_ms']:.1f} | {mark} |"
        )
    budget = ", ".join(
        b
        for b in (
            f"latency <= {max_latency_ms:g} ms" if max_latency_ms else "",
            f"size <= {max_size_mb:g} MB" if max_size_mb else "",
        )
        if b
    )
    lines += [
        "",
        f"Budget: {budget or 'none'}.",
        "Recommendation: " + (describe(best) if best else "nothing fits the budget."),
    ]
    if machine:
        lines += ["", f"Latency measured on: {machine}."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def plot(results: Sequence[dict], path: str, max_latency_ms: float = 0.0) -> None:
    """mAP@0.5 against latency, one series per TFLite format, points labelled alpha/size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = candidates(results)
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for fmt in sorted({r["format"] for r in rows}):
        series = sorted((r for r in rows if r["format"] == fmt), key=lambda r: r["latency_ms"])
        axes.plot([r["latency_ms"] for r in series], [r["map50"] for r in series], "o-", label=fmt)
        for r in series:
            axes.annotate(
                f"{r['alpha']:g}/{r['image_size']}",
                (r["latency_ms"], r["map50"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    if max_latency_ms:
        axes.axvline(max_latency_ms, color="grey", linestyle="--", label="latency budget")
    axes.set_xlabel("latency per image, ms (TFLite interpreter, 1 thread)")
    axes.set_ylabel("mAP@0.5 (evaluation split)")
    axes.set_title("Accuracy against latency (labels: alpha/input size)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run(
    config,
    alphas: Sequence[float],
    sizes: Sequence[int],
    sweep_dir: str,
    max_latency_ms: float = 0.0,
    max_size_mb: float = 0.0,
    progress=print,
) -> Dict:
    """Every point (resuming), then the table, the plot and the recommendation."""
    from litedet.pipeline import local_runner

    dataset = local_runner.resolve_dataset(config)
    results = []
    points = [(a, s) for a in alphas for s in sizes]
    for index, (alpha, size) in enumerate(points, start=1):
        done = os.path.exists(
            os.path.join(sweep_dir, POINTS_DIR, point_name(alpha, size) + ".json")
        )
        progress(
            f"[{index}/{len(points)}] alpha {alpha:g}, {size} px"
            + (" (finished earlier)" if done else " ...")
        )
        results.append(run_point(config, alpha, size, sweep_dir, dataset))
    os.makedirs(sweep_dir, exist_ok=True)
    with open(os.path.join(sweep_dir, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
    import platform

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    table = write_table(
        results, os.path.join(sweep_dir, TABLE_FILE), max_latency_ms, max_size_mb, machine
    )
    plot(results, os.path.join(sweep_dir, PLOT_FILE), max_latency_ms)
    best, _ = recommend(results, max_latency_ms, max_size_mb)
    return {"results": results, "best": best, "table": table}
