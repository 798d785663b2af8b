"""One run of the pipeline's data steps, in a process of its own, for
tests/test_portable_runner.py. Usage: python -m tests.data_steps_run ARGS_JSON

ARGS_JSON: {"config": a configuration file, "overrides": ["key=value", ...], "pipeline_root":
where the artifacts go, "result": a JSON file to write}. Builds the pipeline as `litedet run`
does (pipeline/local_runner.py) and runs it up to Transform and ExampleValidator: the
ExampleGen, the schema import, StatisticsGen, ExampleValidator and Transform. The result says how
many times TFX built its `tfx_ephemeral` package to stage with a Beam job.

A process of its own: the loopback S3 server is a thread of the test's process, and TensorFlow's
S3 calls from that same process stalled the in-process DirectRunner's Transform here.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The last steps of the partial run; everything upstream of them runs too.
LAST_STEPS = ("Transform", "ExampleValidator")


def _count_ephemeral_builds(counter: dict) -> None:
    """Counts TFX's builds of the package it stages with a Beam job lacking the workers' image
    (tfx/utils/dependency_utils.py)."""
    from tfx.utils import dependency_utils

    build = dependency_utils.build_ephemeral_package

    def counted():
        counter["ephemeral_builds"] += 1
        return build()

    dependency_utils.build_ephemeral_package = counted


def run(args: dict) -> dict:
    from tfx import v1 as tfx
    from tfx.orchestration import pipeline as tfx_pipeline

    from litedet.pipeline import configs, local_runner

    config = configs.load_config(args["config"], args["overrides"])
    definition = local_runner.build(
        config, local_runner.resolve_dataset(config), pipeline_root=args["pipeline_root"]
    )
    result = {"ephemeral_builds": 0, "metadata": os.path.abspath(config.metadata_path)}
    _count_ephemeral_builds(result)
    tfx.orchestration.LocalDagRunner().run(
        definition, run_options=tfx_pipeline.RunOptions(to_nodes=list(LAST_STEPS))
    )
    return result


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        arguments = json.load(f)
    with open(arguments["result"], "w") as f:
        json.dump(run(arguments), f)
    from litedet.components import object_storage

    object_storage.exit_process(0)  # tensorflow-io's S3 client would abort a normal exit
