"""The fixed cost of a pipeline run: `litedet run` on a tiny dataset, from an empty output folder.

    .venv/bin/python benchmarks/run_overhead.py [--repeats 1] [--set KEY=VALUE ...]

What a user's first try on new data pays before the data matters: 20 generated images (16
training, 4 evaluation), 10 training steps, every other setting at its default. Runs `litedet
run` as a subprocess (so imports count), twice per repeat:

1. from an empty output folder: every step runs;
2. again with one setting changed (`training.train_steps` 10 -> 11): the data steps come from
   the cache, training and everything after it run again.

Prints and writes benchmarks/results/run_overhead.json: per run the wall time and each step's
seconds (ML Metadata: execution created -> last updated) and state (ran / cached); medians over
the repeats. The bar (issue: fast iteration): the first run at most 90 s on 2 cores.

It runs offline: `training.backbone_weights=none` (a random backbone) unless a `--set` names the
weights: the default (ImageNet) is downloaded on first use, which needs the internet and is
not part of a run's fixed cost. Every recorded result names its settings in "overrides".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

LITEDET = os.path.join(ROOT, ".venv", "bin", "litedet")


def _run(work: str, settings: list) -> dict:
    from litedet.run_summary import latest_run

    command = [LITEDET, "run", "--output-dir", os.path.join(work, "outputs")]
    for item in settings:
        command += ["--set", item]
    started = time.time()
    process = subprocess.run(command, cwd=work, capture_output=True, text=True)
    wall = time.time() - started
    if process.returncode not in (0, 3):  # 3: ran to the end, model not blessed
        sys.stderr.write(process.stdout[-3000:] + process.stderr[-5000:])
        raise SystemExit(f"litedet run failed ({process.returncode})")
    summary = latest_run(os.path.join(work, "outputs", "metadata", "litedet", "metadata.sqlite"))
    return {
        "wall_s": round(wall, 1),
        "steps": {
            name: {"state": c.state, "seconds": round(c.seconds, 1)}
            for name, c in summary.components.items()
        },
    }


def _median_run(runs: list) -> dict:
    names = list(runs[0]["steps"])
    return {
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 1),
        "steps": {
            n: {
                "state": runs[0]["steps"][n]["state"],
                "seconds": round(statistics.median(r["steps"][n]["seconds"] for r in runs), 1),
            }
            for n in names
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "run_overhead.json")
    )
    args = parser.parse_args()

    from litedet.data import sample

    first, second = [], []
    for _ in range(args.repeats):
        work = tempfile.mkdtemp(prefix="litedet-overhead-")
        data = os.path.join(work, "data")
        sample.generate(data, num_train=16, num_eval=4, seed=0)
        settings = [
            'dataset={"root": "%s", "format": "coco", "sources": {"train": '
            '"annotations/instances_train.json", "eval": "annotations/instances_eval.json"}}'
            % data,
            "training.train_steps=10",
        ]
        if not any(o.startswith("training.backbone_weights=") for o in args.overrides):
            settings.append("training.backbone_weights=none")
        settings += args.overrides
        first.append(_run(work, settings))
        second.append(_run(work, settings + ["training.train_steps=11"]))
        print(json.dumps({"first": first[-1], "changed": second[-1]}, indent=2), flush=True)
    result = {
        "machine": common.machine(),
        "repeats": args.repeats,
        "overrides": settings[2:],
        "first_run": _median_run(first),
        "changed_setting_run": _median_run(second),
        "all": {"first": first, "changed": second},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"first run {result['first_run']['wall_s']} s, after a changed setting "
        f"{result['changed_setting_run']['wall_s']} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
