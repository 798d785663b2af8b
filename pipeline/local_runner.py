"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner (or
the portable runner the `beam` settings name)."""

from __future__ import annotations

import os
from typing import Optional

from litedet.components.example_gen.config import DatasetConfig
from litedet.pipeline import configs


def resolve_dataset(config: configs.PipelineConfig) -> DatasetConfig:
    """The dataset to read: the configured one, or the sample set (generated on first use)."""
    if not config.uses_sample_data:
        return config.dataset_config()
    from litedet.data import sample as sample_data

    s = config.sample_data
    root = sample_data.ensure_sample_dataset(
        num_train=s.num_train, num_eval=s.num_eval, seed=s.seed
    )
    return config.dataset_config(sample_root=str(root))


def build(
    config: configs.PipelineConfig, dataset: DatasetConfig, pipeline_root: Optional[str] = None
):
    """The pipeline definition with this machine's settings: paths under `output_dir`, and the
    state the cache keys need that only exists right before the run: the dataset's fingerprint
    and the model store's latest version. `pipeline_root`: where the artifacts go instead of
    under `output_dir` (ML Metadata stays there), e.g. an s3:// folder that Beam workers on
    other machines can reach (a portable run; tests/test_portable_runner.py)."""
    from tfx import v1 as tfx

    from litedet.components import object_storage as storage
    from litedet.components.evaluation.baseline import store_state
    from litedet.components.example_gen.fingerprint import scan
    from litedet.pipeline import pipeline as pipeline_def

    pipeline_root = pipeline_root or config.pipeline_root
    if not storage.is_remote(pipeline_root):
        pipeline_root = os.path.abspath(pipeline_root)
    if storage.uses_s3(pipeline_root, config.push_destination, dataset.root):
        storage.configure()
    metadata_path = os.path.abspath(config.metadata_path)
    os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
    fingerprint, _, dataset_bytes = scan(dataset, dataset.root)
    return pipeline_def.create_pipeline(
        config,
        dataset,
        pipeline_root=pipeline_root,
        dataset_fingerprint=fingerprint,
        model_store_state=store_state(config.push_destination),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path
        ),
        beam_pipeline_args=configs.beam_args_for(config, dataset_bytes)
        + storage.beam_args(pipeline_root, config.push_destination, dataset.root),
    )


def execute(definition) -> None:
    from tfx import v1 as tfx

    tfx.orchestration.LocalDagRunner().run(definition)


def run(config: configs.PipelineConfig) -> None:
    """Resolves the dataset, then runs the whole pipeline."""
    execute(build(config, resolve_dataset(config)))
