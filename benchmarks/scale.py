"""The Beam data steps at scale on Beam's portable runner, with 1 and 2 SDK workers.

    .venv/bin/python benchmarks/scale.py [--images 20000] [--workers 1 2]
        [--data DIR] [--work DIR]

1. A COCO-2017-shaped dataset, generated: `--images` JPEGs at 640x480 (COCO's typical size)
   of about COCO's bytes per image (a smooth background, shapes and sensor-like noise, quality
   90), 5% of them the evaluation split, ~7 boxes per image over 80 categories (COCO 2017:
   7.3). Encoding is the slow part, so 64 distinct images are drawn and every file is one of
   them with its own JPEG comment segment: every file's bytes (and so its sha256 key) differ,
   while the decoded pixels repeat, which no step's cost depends on. Kept in --data for reuse.
2. Beam's local job service and the worker pool of k8s/flink's TaskManager sidecar (`python -m
   litedet.components.beam_worker_pool`), each a process of its own, as
   tests/test_portable_runner.py starts them; the steps submit with
   k8s/examples/flink-config.yaml's settings and `--direct_num_workers=W`, the number of SDK
   workers the job service asks the pool for. Dataset and pipeline root on local disk.
3. For each W, a fresh pipeline root: DetectionExampleGen, StatisticsGen, Transform and
   ExampleValidator (tests/data_steps_run.py, the pipeline as `litedet run` builds it). Per
   step: seconds (ML Metadata), images/s and images/s per worker; the peak resident memory of
   every SDK worker process (sampled every 0.5 s); the bytes each step wrote (what a pod's
   ephemeral storage must hold when the KFP launcher copies the artifacts in).

Prints and writes scale-<images>.json under benchmarks/results/ (scale-20000.json, ...);
docs/scale.md projects from them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

WIDTH, HEIGHT = 640, 480
DISTINCT_IMAGES = 64
EVAL_FRACTION = 0.05
OBJECTS_PER_IMAGE = 7
NUM_CATEGORIES = 80
# Pixel noise: COCO 2017 train2017 averages ~160 KB a JPEG at ~640x480; this lands near it.
NOISE_SIGMA = 20
CONFIG = os.path.join(ROOT, "k8s", "examples", "flink-config.yaml")
STEPS = ("DetectionExampleGen", "StatisticsGen", "Transform", "ExampleValidator")


def _image(rng):
    import numpy as np
    from PIL import Image, ImageDraw

    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.15, 0.15, (2, 3))
    pixels = base + ys[..., None] * slope[0] + xs[..., None] * slope[1]
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(OBJECTS_PER_IMAGE):
        x0, y0 = rng.uniform(0, WIDTH - 40), rng.uniform(0, HEIGHT - 40)
        x1, y1 = x0 + rng.uniform(20, 200), y0 + rng.uniform(20, 200)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    noisy = np.asarray(picture, np.float32) + rng.normal(0, NOISE_SIGMA, (HEIGHT, WIDTH, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, the same pixels."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def write_dataset(root: str, num_images: int, seed: int = 0) -> dict:
    import numpy as np

    marker = os.path.join(root, "dataset.json")
    if os.path.exists(marker):
        with open(marker) as f:
            summary = json.load(f)
        if summary["images"] == num_images:
            return {**summary, "reused": True}
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    distinct = [_image(rng) for _ in range(DISTINCT_IMAGES)]
    categories = [{"id": i, "name": f"class{i:02d}"} for i in range(1, NUM_CATEGORIES + 1)]
    num_eval = max(1, int(num_images * EVAL_FRACTION))
    splits = {"train": range(num_eval, num_images), "eval": range(num_eval)}
    total_bytes, next_id = 0, 1
    for split, indices in splits.items():
        images, objects = [], []
        for index in indices:
            name = f"{index:012d}.jpg"
            data = _with_comment(distinct[index % DISTINCT_IMAGES], f"litedet scale {index}")
            with open(os.path.join(root, "images", name), "wb") as f:
                f.write(data)
            total_bytes += len(data)
            images.append({"id": index + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
            for _ in range(OBJECTS_PER_IMAGE):
                w, h = rng.uniform(10, 200, 2)
                x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
                objects.append(
                    {
                        "id": next_id,
                        "image_id": index + 1,
                        "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
                        "bbox": [round(float(v), 2) for v in (x, y, w, h)],
                        "area": round(float(w * h), 2),
                        "iscrowd": 0,
                    }
                )
                next_id += 1
        coco = {"images": images, "annotations": objects, "categories": categories}
        with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(coco, f)
    summary = {
        "images": num_images,
        "eval_images": num_eval,
        "objects": next_id - 1,
        "image_bytes": total_bytes,
        "mean_image_kb": round(total_bytes / num_images / 1024, 1),
        "size": f"{WIDTH}x{HEIGHT}",
    }
    with open(marker, "w") as f:
        json.dump(summary, f)
    return summary


class WorkerMemory:
    """Peak resident memory of every process under the worker pool (its SDK workers)."""

    def __init__(self, pool_pid: int):
        import psutil

        self._pool = psutil.Process(pool_pid)
        self.peaks = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        import psutil

        while not self._stop.is_set():
            try:
                children = self._pool.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    rss = child.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
            time.sleep(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _folder_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def _services(work: str):
    from tests import test_portable_runner as portable

    job_port, pool_port = portable._free_port(), portable._free_port()
    job_log, pool_log = os.path.join(work, "job-service.log"), os.path.join(work, "pool.log")
    job_service = portable._start(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            f"--port={job_port}",
        ],
        job_log,
    )
    environment = {
        **{k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ},
        "HOME": work,
        "TF_USE_LEGACY_KERAS": "1",
    }
    pool = portable._start(
        portable._sidecar_command(pool_port), pool_log, env=environment, cwd=work
    )
    portable._wait_for_port(job_service, job_port, job_log)
    portable._wait_for_port(pool, pool_port, pool_log)
    return job_service, pool, f"localhost:{job_port}", f"localhost:{pool_port}"


def run_steps(data: str, work: str, name: str, endpoint: str, pool, workers: int) -> dict:
    from litedet.run_summary import latest_run

    arguments = {
        "config": CONFIG,
        "overrides": [
            f"output_dir={os.path.join(work, name)}",
            'dataset={"root": "%s", "format": "coco", "sources": {"train": '
            '"annotations/instances_train.json", "eval": "annotations/instances_eval.json"}}'
            % data,
            "evaluation.num_classes=%d" % NUM_CATEGORIES,
            f"push.destination={os.path.join(work, name, 'models')}",
            f"beam.job_endpoint={endpoint[0]}",
            f"beam.worker_pool={endpoint[1]}",
            "beam.sdk_container_image=litedet:local",
            f'beam_pipeline_args=["--direct_num_workers={workers}"]',
        ],
        "pipeline_root": os.path.join(work, name, "pipeline_root"),
        "result": os.path.join(work, f"{name}.json"),
    }
    args_path = os.path.join(work, f"{name}-args.json")
    with open(args_path, "w") as f:
        json.dump(arguments, f)
    started = time.time()
    with WorkerMemory(pool.pid) as memory:
        done = subprocess.run(
            [sys.executable, "-m", "tests.data_steps_run", args_path],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    if done.returncode:
        sys.stderr.write((done.stdout + done.stderr)[-5000:])
        raise SystemExit(f"the data steps failed with {workers} worker(s)")
    with open(arguments["result"]) as f:
        result = json.load(f)
    components = latest_run(result["metadata"]).components
    root = arguments["pipeline_root"]
    steps = {}
    for step in STEPS:
        folder = next(
            (os.path.join(r, d) for r, ds, _ in os.walk(root) for d in ds if d == step), None
        )
        steps[step] = {
            "seconds": round(components[step].seconds, 1),
            "written_mb": round(_folder_bytes(folder) / 2**20, 1) if folder else 0.0,
        }
    peaks = sorted(memory.peaks.values(), reverse=True)
    return {
        "workers": workers,
        "wall_s": round(time.time() - started, 1),
        "steps": steps,
        "sdk_worker_processes_seen": len(peaks),
        "worker_peak_rss_mb": [round(p / 2**20) for p in peaks[: max(workers, 1) * 2]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "litedet-scale"))
    parser.add_argument("--work", default="")
    parser.add_argument(
        "--out", default="", help="default: scale-<images>.json in benchmarks/results/"
    )
    args = parser.parse_args()
    from tests import test_portable_runner as portable

    started = time.time()
    dataset = write_dataset(os.path.join(args.data, str(args.images)), args.images)
    if not dataset.get("reused"):
        dataset["generate_s"] = round(time.time() - started, 1)
    print(f"dataset: {dataset}", flush=True)
    work = args.work or tempfile.mkdtemp(prefix="litedet-scale-runs-")
    os.makedirs(work, exist_ok=True)
    job_service, pool, job_endpoint, pool_endpoint = _services(work)
    runs = []
    try:
        for workers in args.workers:
            run = run_steps(
                os.path.join(args.data, str(args.images)),
                work,
                f"workers{workers}",
                (job_endpoint, pool_endpoint),
                pool,
                workers,
            )
            for step in run["steps"].values():
                step["images_per_s"] = round(args.images / max(step["seconds"], 0.1), 1)
                step["images_per_s_per_worker"] = round(step["images_per_s"] / workers, 1)
            runs.append(run)
            print(json.dumps(run, indent=2), flush=True)
    finally:
        portable._stop(pool)
        portable._stop(job_service)
    result = {"machine": common.machine(), "dataset": dataset, "runs": runs}
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"scale-{args.images}.json")
    common.write_result(out, result)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
