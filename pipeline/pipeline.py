"""The litedet pipeline graph: one definition for the local and the Kubeflow runner.

Each step lives in its folder under components/ (component.py: the TFX component or the factory
that configures a standard one; executor.py or module.py: the code it runs; config.py: its
settings section); this module only wires them.

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

from typing import Any, List, Mapping, Optional, Union

from tfx import v1 as tfx
from tfx.orchestration import data_types

from litedet.components import run_time
from litedet.components.code_fingerprint import source_fingerprint
from litedet.components.data_validation import component as data_validation
from litedet.components.evaluation import component as evaluation
from litedet.components.example_gen.annotations import count_classes
from litedet.components.example_gen.component import DatasetFingerprint, DetectionExampleGen
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.pusher.component import LitedetPusher
from litedet.components.report.component import RunReport
from litedet.components.tflite.component import TFLiteConverter
from litedet.components.trainer import component as trainer
from litedet.components.transform import component as transform
from litedet.pipeline import configs
from litedet.pipeline.configs import PipelineConfig

Value = Union[str, int, float, data_types.RuntimeParameter]


def _data_steps(config: PipelineConfig, dataset: DatasetConfig, run_time_values, fingerprint):
    """(nodes, example_gen, schema_importer, transform)."""
    nodes: List[Any] = []
    input_base = run_time_values.get("input_base")
    if fingerprint is None:  # computed at run time, by a step of its own
        fingerprinter = DatasetFingerprint(
            dataset=dataset.to_json(), input_base=input_base or dataset.root
        )
        nodes.append(fingerprinter)
        fingerprint = fingerprinter.outputs["fingerprint"].future()[0].value
    example_gen = DetectionExampleGen(
        dataset=dataset, fingerprint=fingerprint, input_base=input_base
    )
    checks, schema = data_validation.create(config, example_gen.outputs["examples"])
    transformer = transform.create(config, example_gen.outputs["examples"], schema)
    nodes += [example_gen, *checks, transformer]
    return nodes, example_gen, schema, transformer


def _shipping_steps(
    config: PipelineConfig,
    example_gen,
    transformer,
    trainer_node,
    run_time_values,
    *,
    num_classes,
    model_store_state,
    pipeline_run_id,
):
    """TFLite conversion, evaluation, the gate, the push and the report."""
    training, gate_settings = config.training, config.evaluation
    tflite_converter = TFLiteConverter(
        model=trainer_node.outputs["model"],
        examples=example_gen.outputs["examples"],
        transform_graph=transformer.outputs["transform_graph"],
        label_map=example_gen.outputs["label_map"],
        formats=config.tflite.formats,
        num_calibration_images=config.tflite.num_calibration_images,
        max_detections=training.max_detections,
        score_threshold=training.score_threshold,
        iou_threshold=training.nms_iou_threshold,
        use_regular_nms=not training.class_agnostic_nms,
    )
    evaluator = evaluation.create_evaluator(
        example_gen.outputs["examples"],
        trainer_node.outputs["model"],
        num_classes,
        training.max_detections,
    )
    gate = evaluation.ModelGate(
        model=trainer_node.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        tflite_models=tflite_converter.outputs["tflite_models"],
        examples=example_gen.outputs["examples"],
        model_store=config.push_destination,
        num_classes=num_classes,
        min_map50=run_time.value(config, run_time_values, "min_map50"),
        max_map_drop=gate_settings.max_map_drop,
        max_tflite_map_drop=gate_settings.max_tflite_map_drop,
        ship_format=config.tflite.ship_format,
        max_latency_ms=gate_settings.max_latency_ms,
        max_size_mb=gate_settings.max_size_mb,
        model_store_state=model_store_state,
    )
    pusher = LitedetPusher(
        model=trainer_node.outputs["model"],
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
        model=trainer_node.outputs["model"],
        model_run=trainer_node.outputs["model_run"],
        examples=example_gen.outputs["examples"],
        blessing=gate.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"],
    )
    return [tflite_converter, evaluator, gate, pusher, report]


def _with_code_fingerprints(nodes) -> None:
    """TFX's cache key covers a component's inputs and exec properties, not its code: every
    project component that declares a `code_fingerprint` parameter gets the hash of its module
    and everything that module imports from the project (code_fingerprint.py). Transform and
    Trainer carry theirs in custom_config (their step folders fill it)."""
    for node in nodes:
        module = type(node).__module__
        if module.startswith("litedet.") and "code_fingerprint" in node.spec.PARAMETERS:
            node.exec_properties["code_fingerprint"] = source_fingerprint(module)


def stateful_steps(nodes) -> List[str]:
    """Ids of the steps whose result depends on state outside their inputs (the dataset's
    files, the model store): a component class says so with `STATEFUL = True`. Never served
    from a cache where that state cannot be part of the key (Kubeflow)."""
    return [node.id for node in nodes if getattr(type(node), "STATEFUL", False)]


def create_pipeline(
    config: PipelineConfig,
    dataset: DatasetConfig,
    *,
    pipeline_root: str,
    dataset_fingerprint: Optional[str] = None,
    model_store_state: str = "",
    metadata_connection_config=None,
    run_time_values: Optional[Mapping[str, Value]] = None,
    num_classes: int = 0,
    pipeline_run_id: Optional[str] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    trainer_workers=None,
) -> tfx.dsl.Pipeline:
    """The component graph.

    `dataset_fingerprint`: the dataset's fingerprint when the caller computed it right before
    running (the local runner); None adds the DatasetFingerprint step that computes it at run
    time (a compiled pipeline). `model_store_state`: the store's state when known at build time
    (part of the gate's cache key; baseline.store_state). `run_time_values`: {name: value} for
    the run-time parameters (components/run_time.py) that override the configuration; the
    Kubeflow runner gives a RuntimeParameter for each, the local runner none. `num_classes`
    (for per-class AP) defaults to evaluation.num_classes, else the dataset's count.
    `trainer_workers`: kubeflow.trainer_workers, which the Kubeflow compiler gives (count > 1:
    the Trainer trains on a TFJob's workers); None trains in the Trainer's own process."""
    run_time_values = dict(run_time_values or {})
    unknown = set(run_time_values) - set(run_time.PARAMETERS)
    if unknown:
        raise ValueError(f"unknown run-time parameter(s): {', '.join(sorted(unknown))}")
    data_nodes, example_gen, schema, transformer = _data_steps(
        config, dataset, run_time_values, dataset_fingerprint
    )
    training_nodes = trainer.create(
        config,
        run_time_values,
        examples=(
            transformer.outputs["transformed_examples"]
            if config.transform.materialize
            else example_gen.outputs["examples"]
        ),
        transform_graph=transformer.outputs["transform_graph"],
        schema=schema,
        workers=trainer_workers,
    )
    shipping_nodes = _shipping_steps(
        config,
        example_gen,
        transformer,
        training_nodes[-1],
        run_time_values,
        num_classes=num_classes or config.evaluation.num_classes or count_classes(dataset),
        model_store_state=model_store_state,
        pipeline_run_id=pipeline_run_id,
    )
    nodes = data_nodes + training_nodes + shipping_nodes
    _with_code_fingerprints(nodes)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=nodes,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or configs.beam_args_for(config),
    )
