"""The evaluation step: TFX's Evaluator (TFMA: COCO mAP of the candidate on the evaluation
split, metrics.py), then ModelGate, the one blessing decision (executor.py says how it
decides)."""

from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from litedet.components import artifacts
from litedet.components.evaluation import executor, metrics
from litedet.components.resources import Resources

RESOURCES = {
    "Evaluator": Resources(cpu=2, memory_gb=8),  # runs the model over the evaluation split
    "ModelGate": Resources(cpu=2, memory_gb=4),
}


@component
def ModelGate(
    model: InputArtifact[standard_artifacts.Model],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    tflite_models: InputArtifact[artifacts.TFLiteModels],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    metrics: OutputArtifact[artifacts.KfpMetrics],
    model_store: Parameter[str],
    num_classes: Parameter[int],
    min_map50: Parameter[float],
    max_map_drop: Parameter[float],
    max_tflite_map_drop: Parameter[float],
    ship_format: Parameter[str],
    max_latency_ms: Parameter[float],
    max_size_mb: Parameter[float],
    latency_runs: Parameter[int] = 30,
    # Not read: part of the cache key. The store's state where it is known when the pipeline is
    # built (baseline.store_state); the code's hash (pipeline.py fills it).
    model_store_state: Parameter[str] = "",
    code_fingerprint: Parameter[str] = "",
) -> None:
    executor.run_gate(
        model,
        evaluation,
        tflite_models,
        examples,
        blessing,
        metrics,
        budgets=executor.GateBudgets(
            min_map50=min_map50,
            max_map_drop=max_map_drop,
            max_tflite_map_drop=max_tflite_map_drop,
            max_latency_ms=max_latency_ms,
            max_size_mb=max_size_mb,
            ship_format=ship_format,
        ),
        model_store=model_store,
        num_classes=num_classes,
        latency_runs=latency_runs,
    )


# Its baseline is the model store's latest version, state outside its inputs: on Kubeflow,
# where that state cannot be part of the cache key, it is never served from the cache.
ModelGate.STATEFUL = True


def create_evaluator(examples, model, num_classes: int, max_detections: int):
    """The candidate alone: the comparison with the baseline is the gate's."""
    return tfx.components.Evaluator(
        examples=examples,
        model=model,
        example_splits=[metrics.EVAL_SPLIT],
        eval_config=metrics.eval_config(num_classes, max_detections),
    )
