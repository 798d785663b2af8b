"""How long `litedet demo` takes from nothing, and what it ends with.

    .venv/bin/python benchmarks/demo_time.py [--set KEY=VALUE ...]

Runs the demo as a user would (`litedet demo`, a subprocess) with an empty output folder and an
empty sample-data cache, so the time includes generating the sample data and every pipeline step
(not installing the virtualenv). Prints and writes to benchmarks/results/demo.json: the wall
time, each step's time, mAP@0.5 / mAP of the model on the evaluation split, blessed or not, and
what was pushed. The issue's bar: at most 15 minutes on 2 cores, mAP@0.5 >= 0.6.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--keep", help="use this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="litedet-demo-bench-")
    env = dict(os.environ, LITEDET_CACHE=os.path.join(work, "cache"))
    command = [
        os.path.join(ROOT, ".venv", "bin", "litedet"),
        "demo",
        "--output-dir",
        os.path.join(work, "outputs"),
    ]
    for item in args.overrides:
        command += ["--set", item]
    started = time.time()
    process = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - started
    print(process.stdout)
    if process.returncode != 0:
        print(process.stderr[-5000:], file=sys.stderr)
        return process.returncode
    steps = {
        m.group(2): float(m.group(3))
        for m in re.finditer(
            r"\[(\d+)/\d+\] (\S+) (?:done|from cache) in ([\d.]+) s", process.stdout
        )
    }
    found = re.search(r"mAP@0.5 \(eval\):\s+([\d.]+)\s+mAP@\[.5:.95\] ([\d.]+)", process.stdout)
    pushed = re.search(r"pushed:\s+(.*)", process.stdout)
    result = {
        "machine": common.machine(),
        "wall_s": round(seconds, 1),
        "steps_s": steps,
        "map50": float(found.group(1)) if found else None,
        "map": float(found.group(2)) if found else None,
        "blessed": "blessed:           yes" in process.stdout,
        "pushed": pushed.group(1) if pushed else None,
        "overrides": args.overrides,
    }
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "demo.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
