"""RunReport: one HTML page per run (verdict, figures, curves, samples), written by executor.py
and render.py; a `system.HTML` artifact, so the Kubeflow run page shows it."""

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from litedet.components import artifacts
from litedet.components.report import executor
from litedet.components.resources import Resources

RESOURCES = {"RunReport": Resources(cpu=1, memory_gb=4)}


@component
def RunReport(
    model: InputArtifact[standard_artifacts.Model],
    model_run: InputArtifact[standard_artifacts.ModelRun],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: InputArtifact[standard_artifacts.PushedModel],
    report: OutputArtifact[artifacts.RunReport],
    code_fingerprint: Parameter[str] = "",  # not read: part of the cache key (pipeline.py)
) -> None:
    executor.write_report(model, model_run, examples, blessing, pushed_model, report)


# It reads what the pusher did, which depends on the model store: never cached on Kubeflow.
RunReport.STATEFUL = True
