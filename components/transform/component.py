"""The Transform step: TFX's Transform running `preprocessing_fn` (module.py) on Beam."""

from __future__ import annotations

import dataclasses

from tfx import v1 as tfx

from litedet.components.code_fingerprint import source_fingerprint
from litedet.components.resources import Resources

PREPROCESSING_FN = "litedet.components.transform.module.preprocessing_fn"
RESOURCES = {"Transform": Resources(cpu=2, memory_gb=8)}


def create(config, examples, schema) -> tfx.components.Transform:
    """Transform for the pipeline's `transform:` section (its settings reach preprocessing_fn
    through custom_config)."""
    return tfx.components.Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        materialize=config.transform.materialize,
        # StatisticsGen already profiles the raw data; statistics over every float pixel of the
        # transformed images cost more than the transform itself and say little.
        disable_statistics=True,
        custom_config={
            **dataclasses.asdict(config.transform),
            "code_fingerprint": source_fingerprint(PREPROCESSING_FN),
        },
    )
