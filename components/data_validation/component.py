"""The data checks: StatisticsGen profiles the examples, ExampleValidator checks them against the
curated schema (schemas/detection_raw.pbtxt, or `schema_path`) that ImportSchemaGen imports."""

from __future__ import annotations

from tfx import v1 as tfx

from litedet import schemas
from litedet.components.resources import Resources

RESOURCES = {
    "StatisticsGen": Resources(cpu=2, memory_gb=4),
    "SchemaImporter": Resources(cpu=0.5, memory_gb=1),
    "ExampleValidator": Resources(cpu=1, memory_gb=2),
}


def create(config, examples):
    """([StatisticsGen, SchemaImporter, ExampleValidator], the imported schema: it also feeds
    Transform and Trainer)."""
    schema_importer = tfx.components.ImportSchemaGen(
        schema_file=config.schema_path or str(schemas.RAW_SCHEMA)
    ).with_id("SchemaImporter")
    # The schema tells StatisticsGen that image/encoded is images (image_domain), whose bytes it
    # then measures instead of counting each distinct one as a category (all of them shuffled).
    statistics_gen = tfx.components.StatisticsGen(
        examples=examples, schema=schema_importer.outputs["schema"]
    )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"]
    )
    return [statistics_gen, schema_importer, example_validator], schema_importer.outputs["schema"]
