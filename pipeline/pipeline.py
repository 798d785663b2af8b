"""The litedet pipeline graph: one definition for the local and the Kubeflow runner.

DetectionExampleGen -> StatisticsGen -> ImportSchemaGen (schemas/) -> ExampleValidator
                    -> Transform (decode, resize, normalize, pad boxes)
                    -> Trainer (MobileNetV2 SSDLite, exported with the Transform graph)
RunParameters (alpha, train_steps: run-time parameters on Kubeflow) -> Trainer
Trainer -> TFLiteConverter (float32 / float16 / int8 with the detection post-process op and
           ObjectDetector metadata)
Trainer -> Evaluator (TFMA: COCO mAP, mAP@0.5, AP@0.5 per class on the eval split)
Evaluator + TFLiteConverter + latest blessed model (Resolver over ModelGate's blessings)
        -> ModelGate (mAP bound, no regression, TFLite mAP drop, device budgets)
        -> LitedetPusher (versioned store + model registry, blessed models only)
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Union

from tfx import v1 as tfx
from tfx.orchestration import data_types

from litedet import schemas
from litedet.components.evaluation import metrics as evaluation_metrics
from litedet.components.evaluation.gate import ModelGate
from litedet.components.example_gen.annotations import count_classes
from litedet.components.example_gen.component import DetectionExampleGen
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.pusher.component import LitedetPusher
from litedet.components.run_parameters import RunParameters
from litedet.components.tflite.component import TFLiteConverter
from litedet.pipeline.code_fingerprint import source_fingerprint
from litedet.pipeline.configs import PipelineConfig

PREPROCESSING_FN = "litedet.components.transform_module.preprocessing_fn"
RUN_FN = "litedet.components.trainer_module.run_fn"
GATE_ID = "ModelGate"


def create_pipeline(
    config: PipelineConfig,
    dataset: DatasetConfig,
    *,
    pipeline_root: str,
    metadata_connection_config=None,
    input_base: Optional[Union[str, data_types.RuntimeParameter]] = None,
    alpha: Optional[Union[float, data_types.RuntimeParameter]] = None,
    train_steps: Optional[Union[int, data_types.RuntimeParameter]] = None,
    min_map50: Optional[Union[float, data_types.RuntimeParameter]] = None,
    num_classes: int = 0,
    pipeline_run_id: Optional[str] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> tfx.dsl.Pipeline:
    """The component graph. `input_base`, `alpha`, `train_steps` and `min_map50` override the
    configuration; the Kubeflow runner passes them as run-time parameters. `num_classes` (for
    per-class AP) defaults to evaluation.num_classes, else the dataset's count."""
    example_gen = DetectionExampleGen(dataset=dataset, input_base=input_base)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_importer = tfx.components.ImportSchemaGen(
        schema_file=config.schema_path or str(schemas.RAW_SCHEMA)
    ).with_id("SchemaImporter")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_importer.outputs["schema"],
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
    training = config.training
    run_parameters = RunParameters(
        alpha=training.alpha if alpha is None else alpha,
        train_steps=training.train_steps if train_steps is None else train_steps,
    )
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=(
            transform.outputs["transformed_examples"]
            if config.transform.materialize
            else example_gen.outputs["examples"]
        ),
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_importer.outputs["schema"],
        hyperparameters=run_parameters.outputs["hyperparameters"],
        train_args=tfx.proto.TrainArgs(num_steps=training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps or None),
        custom_config={
            "training": dataclasses.asdict(training),
            "materialized_examples": config.transform.materialize,
            "code_fingerprint": source_fingerprint(RUN_FN),
        },
    )
    tflite_converter = TFLiteConverter(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        label_map=example_gen.outputs["label_map"],
        formats=config.tflite.formats,
        num_calibration_images=config.tflite.num_calibration_images,
        max_detections=training.max_detections,
        score_threshold=training.score_threshold,
        iou_threshold=training.nms_iou_threshold,
        code_fingerprint=source_fingerprint("litedet.components.tflite.component.Executor"),
    )

    evaluation = config.evaluation
    num_classes = num_classes or evaluation.num_classes or count_classes(dataset)
    # The baseline: the newest model the gate blessed (not merely one TFMA passed).
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing,
            producer_component_id=GATE_ID,
            output_key="blessing",
        ),
    ).with_id("latest_blessed_model_resolver")
    # The candidate alone: the baseline comparison is the gate's (components/evaluation).
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        example_splits=[evaluation_metrics.EVAL_SPLIT],
        eval_config=evaluation_metrics.eval_config(num_classes, training.max_detections),
    )
    gate = ModelGate(
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        baseline_model=latest_blessed.outputs["model"],
        tflite_models=tflite_converter.outputs["tflite_models"],
        examples=example_gen.outputs["examples"],
        label_map=example_gen.outputs["label_map"],
        min_map50=evaluation.min_map50 if min_map50 is None else min_map50,
        max_map_drop=evaluation.max_map_drop,
        max_tflite_map_drop=evaluation.max_tflite_map_drop,
        ship_format=config.tflite.ship_format,
        max_latency_ms=evaluation.max_latency_ms,
        max_size_mb=evaluation.max_size_mb,
        code_fingerprint=source_fingerprint("litedet.components.evaluation.gate.ModelGate"),
    ).with_id(GATE_ID)
    pusher = LitedetPusher(
        model=trainer.outputs["model"],
        tflite_models=tflite_converter.outputs["tflite_models"],
        model_blessing=gate.outputs["blessing"],
        label_map=example_gen.outputs["label_map"],
        evaluation=evaluator.outputs["evaluation"],
        destination=config.push_destination,
        registry=config.push.registry,
        model_name=config.push.model_name,
        push_savedmodel=config.push.push_savedmodel,
        extra_manifest={"ship_format": config.tflite.ship_format},
        pipeline_run_id=pipeline_run_id,
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_importer,
            example_validator,
            transform,
            run_parameters,
            trainer,
            tflite_converter,
            latest_blessed,
            evaluator,
            gate,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.beam_pipeline_args,
    )
