"""The litedet pipeline graph: one definition for the local and the Kubeflow runner.

[DatasetFingerprint] -> DetectionExampleGen -> StatisticsGen -> ExampleValidator
                                              ImportSchemaGen (schemas/) ┘
                    DetectionExampleGen -> Transform (decode, resize, normalize, pad boxes)
RunParameters (alpha, train_steps) + Transform -> Trainer (MobileNetV2 SSDLite)
Trainer -> TFLiteConverter (float32 / float16 / int8, detection post-process op, metadata)
Trainer -> Evaluator (TFMA: COCO mAP, mAP@0.5, AP@0.5 per class on the eval split)
Evaluator + TFLiteConverter -> ModelGate (bound, no regression against the model store's latest
        version, TFLite mAP drop, device budgets) -> LitedetPusher (store + registry) -> RunReport

DatasetFingerprint runs only where the pipeline is compiled once and run many times (Kubeflow):
see components/example_gen/component.py. Nothing here queries ML Metadata: the baseline is the
model store's latest version, so both runners execute the same steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Union

from tfx import v1 as tfx
from tfx.orchestration import data_types

from litedet import schemas
from litedet.components.evaluation import metrics as evaluation_metrics
from litedet.components.evaluation.gate import ModelGate
from litedet.components.example_gen.annotations import count_classes
from litedet.components.example_gen.component import DatasetFingerprint, DetectionExampleGen
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.pusher.component import LitedetPusher
from litedet.components.report.component import RunReport
from litedet.components.run_parameters import RunParameters
from litedet.components.tflite.component import TFLiteConverter
from litedet.pipeline import configs
from litedet.pipeline.code_fingerprint import source_fingerprint
from litedet.pipeline.configs import PipelineConfig

PREPROCESSING_FN = "litedet.components.transform_module.preprocessing_fn"
RUN_FN = "litedet.components.trainer_module.run_fn"
# Steps whose result depends on state outside their inputs (the dataset's files, the model
# store): never served from a cache where that state cannot be part of the key.
STATEFUL_STEPS = ("DatasetFingerprint", "ModelGate", "LitedetPusher", "RunReport")

Value = Union[str, int, float, data_types.RuntimeParameter]


def _data_steps(config: PipelineConfig, dataset: DatasetConfig, input_base, fingerprint):
    """(nodes, example_gen, schema_importer, transform)."""
    nodes: List[Any] = []
    if fingerprint is None:  # computed at run time, by a step of its own
        fingerprinter = DatasetFingerprint(
            dataset=dataset.to_json(), input_base=input_base or dataset.root
        )
        nodes.append(fingerprinter)
        fingerprint = fingerprinter.outputs["fingerprint"].future()[0].value
    example_gen = DetectionExampleGen(
        dataset=dataset, fingerprint=fingerprint, input_base=input_base
    )
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
    nodes += [example_gen, statistics_gen, schema_importer, example_validator, transform]
    return nodes, example_gen, schema_importer, transform


def _training_steps(
    config: PipelineConfig, example_gen, schema_importer, transform, alpha, train_steps
):
    """(nodes, trainer)."""
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
    return [run_parameters, trainer], trainer


def _shipping_steps(
    config: PipelineConfig,
    example_gen,
    transform,
    trainer,
    *,
    num_classes,
    min_map50,
    model_store_state,
    pipeline_run_id,
):
    """TFLite conversion, evaluation, the gate, the push and the report."""
    training, evaluation = config.training, config.evaluation
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
        use_regular_nms=not training.class_agnostic_nms,
        code_fingerprint=source_fingerprint("litedet.components.tflite.component.Executor"),
    )
    # The candidate alone: the comparison with the baseline is the gate's.
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        example_splits=[evaluation_metrics.EVAL_SPLIT],
        eval_config=evaluation_metrics.eval_config(num_classes, training.max_detections),
    )
    gate = ModelGate(
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        tflite_models=tflite_converter.outputs["tflite_models"],
        examples=example_gen.outputs["examples"],
        model_store=config.push_destination,
        num_classes=num_classes,
        min_map50=evaluation.min_map50 if min_map50 is None else min_map50,
        max_map_drop=evaluation.max_map_drop,
        max_tflite_map_drop=evaluation.max_tflite_map_drop,
        ship_format=config.tflite.ship_format,
        max_latency_ms=evaluation.max_latency_ms,
        max_size_mb=evaluation.max_size_mb,
        model_store_state=model_store_state,
        code_fingerprint=source_fingerprint("litedet.components.evaluation.gate.ModelGate"),
    )
    pusher = LitedetPusher(
        model=trainer.outputs["model"],
        tflite_models=tflite_converter.outputs["tflite_models"],
        model_blessing=gate.outputs["blessing"],
        label_map=example_gen.outputs["label_map"],
        evaluation=evaluator.outputs["evaluation"],
        destination=config.push_destination,
        registry=config.push.registry,
        model_name=config.push.model_name,
        extra_manifest={"ship_format": config.tflite.ship_format},
        pipeline_run_id=pipeline_run_id,
    )
    report = RunReport(
        model=trainer.outputs["model"],
        model_run=trainer.outputs["model_run"],
        examples=example_gen.outputs["examples"],
        blessing=gate.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"],
        code_fingerprint=source_fingerprint("litedet.components.report.component.RunReport"),
    )
    return [tflite_converter, evaluator, gate, pusher, report]


def create_pipeline(
    config: PipelineConfig,
    dataset: DatasetConfig,
    *,
    pipeline_root: str,
    dataset_fingerprint: Optional[str] = None,
    model_store_state: str = "",
    metadata_connection_config=None,
    input_base: Optional[Value] = None,
    alpha: Optional[Value] = None,
    train_steps: Optional[Value] = None,
    min_map50: Optional[Value] = None,
    num_classes: int = 0,
    pipeline_run_id: Optional[str] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> tfx.dsl.Pipeline:
    """The component graph.

    `dataset_fingerprint`: the dataset's fingerprint when the caller computed it right before
    running (the local runner); None adds the DatasetFingerprint step that computes it at run
    time (a compiled pipeline). `model_store_state`: the store's state when known at build time
    (part of the gate's cache key; baseline.store_state). `input_base`, `alpha`, `train_steps`
    and `min_map50` override the configuration; the Kubeflow runner passes them as run-time
    parameters. `num_classes` (for per-class AP) defaults to evaluation.num_classes, else the
    dataset's count."""
    data_nodes, example_gen, schema_importer, transform = _data_steps(
        config, dataset, input_base, dataset_fingerprint
    )
    training_nodes, trainer = _training_steps(
        config, example_gen, schema_importer, transform, alpha, train_steps
    )
    shipping_nodes = _shipping_steps(
        config,
        example_gen,
        transform,
        trainer,
        num_classes=num_classes or config.evaluation.num_classes or count_classes(dataset),
        min_map50=min_map50,
        model_store_state=model_store_state,
        pipeline_run_id=pipeline_run_id,
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=data_nodes + training_nodes + shipping_nodes,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or configs.beam_args_for(config),
    )
