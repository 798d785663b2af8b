"""The litedet pipeline graph: one definition for the local and the Kubeflow runner.

DetectionExampleGen -> StatisticsGen -> ImportSchemaGen (schemas/) -> ExampleValidator
                    -> Transform (decode, resize, normalize, pad boxes)
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import List, Optional, Union

from tfx import v1 as tfx
from tfx.orchestration import data_types

import components
import schemas
from components.example_gen.component import DetectionExampleGen
from components.example_gen.config import DatasetConfig
from pipeline.configs import PipelineConfig

PREPROCESSING_FN = "components.transform_module.preprocessing_fn"


def source_fingerprint() -> str:
    """A hash of this project's component code. Transform and Trainer load their functions by
    module path, which TFX's cache key does not cover; this value in their custom_config does, so
    an edited module is never served stale results from the cache."""
    digest = hashlib.sha256()
    root = pathlib.Path(components.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def create_pipeline(
    config: PipelineConfig,
    dataset: DatasetConfig,
    *,
    pipeline_root: str,
    metadata_connection_config=None,
    input_base: Optional[Union[str, data_types.RuntimeParameter]] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> tfx.dsl.Pipeline:
    example_gen = DetectionExampleGen(dataset=dataset, input_base=input_base)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_importer = tfx.components.ImportSchemaGen(
        schema_file=config.schema_path or str(schemas.RAW_SCHEMA)).with_id("SchemaImporter")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_importer.outputs["schema"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_importer.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=config.transform.materialize,
        # StatisticsGen already profiles the raw data; statistics over every float pixel of the
        # transformed images cost more than the transform itself and say little.
        disable_statistics=True,
        custom_config={
            "image_size": config.transform.image_size,
            "resize_mode": config.transform.resize_mode,
            "max_boxes": config.transform.max_boxes,
            "code_fingerprint": source_fingerprint(),
        })
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_importer, example_validator, transform],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.beam_pipeline_args,
    )
