"""What the benchmarks share: the sample data steps they measure on, peak memory, the machine."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import threading
import time

import psutil


class PeakMemory:
    """Samples the resident memory of this process and its children (Beam workers)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me] + me.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class DataSteps:
    """The examples and schema the Transform reads: the ExampleGen executor's output on the
    sample dataset (kept under --output-dir, so later runs skip it) and the curated schema."""

    def __init__(self, config, output_dir: str):
        from litedet import schemas
        from litedet.data import convert
        from litedet.pipeline import configs, local_runner

        self.examples_uri = os.path.join(output_dir, "examples")
        self.schema_uri = os.path.join(output_dir, "schema")
        if not os.path.exists(os.path.join(output_dir, "quarantine", "summary.json")):
            convert.convert(
                local_runner.resolve_dataset(config), output_dir, configs.beam_args_for(config)
            )
        os.makedirs(self.schema_uri, exist_ok=True)
        shutil.copy(schemas.RAW_SCHEMA, os.path.join(self.schema_uri, "schema.pbtxt"))

    def record_files(self) -> list:
        import tensorflow as tf

        return tf.io.gfile.glob(os.path.join(self.examples_uri, "Split-*", "*.gz"))


def run_transform(config, data: DataSteps, materialize: bool, workdir: str) -> str:
    """Runs the Transform executor; returns the transform graph folder."""
    from tfx.components.transform.executor import Executor
    from tfx.types import artifact_utils, standard_artifacts

    from litedet.components.transform import component as transform_step
    from litedet.pipeline import configs

    examples = standard_artifacts.Examples()
    examples.uri = data.examples_uri
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    schema = standard_artifacts.Schema()
    schema.uri = data.schema_uri
    outputs = {"transform_graph": [standard_artifacts.TransformGraph()]}
    if materialize:
        outputs["transformed_examples"] = [standard_artifacts.Examples()]
    for key, (artifact,) in outputs.items():
        artifact.uri = os.path.join(workdir, key)
    properties = {
        "preprocessing_fn": transform_step.PREPROCESSING_FN,
        # The pipeline's own Transform settings, as components/transform/component.py passes them.
        "custom_config": json.dumps(dataclasses.asdict(config.transform)),
        "disable_statistics": 1,
        "force_tf_compat_v1": 0,
    }
    context = Executor.Context(
        beam_pipeline_args=configs.beam_args_for(config), tmp_dir=os.path.join(workdir, "tmp")
    )
    Executor(context).Do({"examples": [examples], "schema": [schema]}, outputs, properties)
    return outputs["transform_graph"][0].uri


def write_result(path: str, result: dict) -> None:
    """A benchmark's results file (JSON), its folder made if needed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)


def machine() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def add_sample_data_args(parser: argparse.ArgumentParser, results_file: str) -> None:
    """The flags every benchmark shares: which sample data, where to keep it, where results go."""
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-eval", type=int, default=100)
    parser.add_argument("--output-dir", default=os.path.join("outputs", "bench"))
    parser.add_argument(
        "--results",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", results_file),
    )


def sample_data_steps(args):
    """(configuration, DataSteps) for the sample data the flags name."""
    from litedet.pipeline import configs

    config = configs.load_config(
        None, [f"sample_data.num_train={args.num_train}", f"sample_data.num_eval={args.num_eval}"]
    )
    print("Preparing examples (ExampleGen; kept for later runs) ...", flush=True)
    return config, DataSteps(
        config, os.path.join(args.output_dir, f"n{args.num_train}-{args.num_eval}")
    )
