"""Peak memory of reading a COCO-2017-sized annotation file (docs/data.md, large files).

    .venv/bin/python benchmarks/coco_memory.py [--images 118287 --annotations 860001]
        [--smaller 8] [--work DIR]

Generates (once, kept under --work) one COCO instances file the size of COCO 2017's training
annotations: 118,287 images, 860,001 objects with polygon segmentations, 80 categories, about
450 MB, and one `--smaller` times smaller. Then measures, each in a fresh process, the peak
resident memory (the process and its children) of:

- `compile`: what `litedet compile` / the local runner read to count the classes;
- `read`: parsing the file into the ExampleGen's image records: what the Beam worker that reads
  the file needs (`litedet data inspect` and `litedet run`'s check read it this way too);
- `driver`: what the ExampleGen's driver does up to the records, on both files: build the job
  graph (the sources' paths, the steps that read them) and serialize it as a runner receives it;
  the result is the graph's size in bytes. The workers read the file, so this should not grow
  with it. (The DirectRunner runs the workers in the driver's process, or in processes it
  starts: there the driver's machine needs the `read` step's memory as well.)

Prints a table and writes benchmarks/results/coco_memory.json (peak, and the increase over the
process after its imports).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

STEPS = ("compile", "read", "driver")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "coco_memory.json")


def write_coco(path: str, num_images: int, num_annotations: int, seed: int = 0) -> None:
    """A COCO file shaped like instances_train2017.json (80 non-contiguous category ids, image
    entries with license/url/date fields, polygons of about 20 points per object)."""
    rng = random.Random(seed)
    category_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write('{"info": {"description": "generated like COCO 2017", "version": "1.0"}, ')
        f.write('"licenses": [{"id": 1, "name": "n/a", "url": ""}], "images": [')
        for i in range(num_images):
            image = {
                "license": 1,
                "file_name": f"{i + 1:012d}.jpg",
                "coco_url": f"http://images.example/train2017/{i + 1:012d}.jpg",
                "height": 480,
                "width": 640,
                "date_captured": "2013-11-14 16:28:13",
                "id": i + 1,
            }
            f.write(("," if i else "") + json.dumps(image))
        f.write('], "annotations": [')
        for i in range(num_annotations):
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            w, h = rng.uniform(2, 140), rng.uniform(2, 130)
            polygon = [round(v, 2) for _ in range(20) for v in (x + rng.uniform(0, w), y)]
            annotation = {
                "segmentation": [polygon],
                "area": round(w * h, 4),
                "iscrowd": 0,
                "image_id": rng.randint(1, num_images),
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "category_id": rng.choice(category_ids),
                "id": i + 1,
            }
            f.write(("," if i else "") + json.dumps(annotation))
        categories = [{"supercategory": "s", "id": c, "name": f"class{c}"} for c in category_ids]
        f.write('], "categories": ' + json.dumps(categories) + "}")
    os.replace(tmp, path)


def generated(work: str, num_images: int, num_annotations: int) -> str:
    """The path of a generated COCO file of that size under `work`, written on first use."""
    path = os.path.join(work, f"instances_{num_images}_{num_annotations}.json")
    if not os.path.exists(path):
        print(f"Generating {path} ...", flush=True)
        write_coco(path, num_images, num_annotations)
    print(
        f"{path}: {os.path.getsize(path) / 2**20:.0f} MB, {num_images} images, "
        f"{num_annotations} objects"
    )
    return path


def measure(step: str, path: str) -> dict:
    """Runs one step in this process; its peak memory and the baseline after the imports."""
    import apache_beam as beam  # noqa: F401  (imported before the baseline, as in a real run)
    import tensorflow as tf  # noqa: F401

    from litedet.components.example_gen import annotations, executor
    from litedet.components.example_gen.config import DatasetConfig

    config = DatasetConfig(
        root=os.path.dirname(path), format="coco", sources={"train": os.path.basename(path)}
    )
    baseline = common.PeakMemory()
    with baseline:
        time.sleep(0.3)
    started = time.time()
    with common.PeakMemory() as peak:
        if step == "compile":
            result = annotations.count_classes(config)
        elif step == "read":
            records, _ = annotations.read_coco(config)
            result = len(records)
            del records
        else:
            pipeline = beam.Pipeline()
            items, _ = executor._records(pipeline, config, config.root)
            _ = items | beam.combiners.Count.Globally()
            result = len(pipeline.to_runner_api().SerializeToString())
    return {
        "step": step,
        "file_mb": round(os.path.getsize(path) / 2**20),
        "result": result,
        "seconds": round(time.time() - started, 1),
        "baseline_mb": round(baseline.peak / 2**20),
        "peak_mb": round(peak.peak / 2**20),
        "increase_mb": round((peak.peak - baseline.peak) / 2**20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=118287)
    parser.add_argument("--annotations", type=int, default=860001)
    parser.add_argument("--smaller", type=int, default=8, help="the driver's second file: 1/N")
    parser.add_argument("--work", default="/tmp/litedet-coco-memory")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--label", default="", help="recorded with the results (e.g. before)")
    parser.add_argument("--measure", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure, args.file)), flush=True)
        return 0

    os.makedirs(args.work, exist_ok=True)
    path = generated(args.work, args.images, args.annotations)
    size_mb = os.path.getsize(path) / 2**20
    runs = [(step, path) for step in args.steps.split(",")]
    if "driver" in args.steps.split(",") and args.smaller > 1:
        smaller = generated(
            args.work, args.images // args.smaller, args.annotations // args.smaller
        )
        runs.insert(runs.index(("driver", path)), ("driver", smaller))
    rows = []
    for step, file in runs:
        finished = subprocess.run(
            [sys.executable, __file__, "--measure", step, "--file", file],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        lines = [x for x in finished.stdout.splitlines() if x.startswith("RESULT ")]
        if finished.returncode or not lines:
            print(finished.stdout[-3000:], finished.stderr[-3000:])
            raise SystemExit(f"step {step} failed")
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
        row = rows[-1]
        print(
            f"{step:8s} {row['file_mb']:4d} MB file  peak {row['peak_mb']:6d} MB  "
            f"(+{row['increase_mb']} MB over {row['baseline_mb']} MB after imports)  "
            f"{row['seconds']} s  result {row['result']}",
            flush=True,
        )
    record = {
        "label": args.label,
        "file_mb": round(size_mb),
        "images": args.images,
        "annotations": args.annotations,
        "machine": common.machine(),
        "steps": rows,
    }
    history = []
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            history = json.load(f)
    history.append(record)
    with open(RESULTS, "w") as f:
        json.dump(history, f, indent=2)
    print(f"Written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
