"""DetectionExampleGen: labelled images (COCO, Pascal VOC, TF OD API TFRecords) -> tf.Examples.

Outputs: `examples` (standard ExampleGen layout, one folder per split), `label_map` and
`quarantine` (see components/artifacts.py).

Its cache key holds the dataset's fingerprint (fingerprint.py), the `input_fingerprint` exec
property, so that a changed dataset under the same root is read again and an unchanged one is a
cache hit. Where the value comes from depends on when the pipeline is built: the local runner
builds the pipeline right before it runs and computes the fingerprint then; a compiled Kubeflow
pipeline is built once and runs many times, so there `DatasetFingerprint` (below) computes it at
the start of every run, and the ExampleGen reads it as a task output parameter, which is part of
KFP's cache key.
"""

from typing import Optional, Union

from tfx import types
from tfx.dsl.component.experimental.annotations import OutputDict, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.dsl.placeholder import placeholder
from tfx.orchestration import data_types
from tfx.types import component_spec, standard_artifacts

from litedet.components import artifacts
from litedet.components.example_gen import executor
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.resources import Resources

RESOURCES = {
    "DatasetFingerprint": Resources(cpu=0.5, memory_gb=1),
    "DetectionExampleGen": Resources(cpu=2, memory_gb=4),
}


class DetectionExampleGenSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        executor.DATASET_KEY: component_spec.ExecutionParameter(type=str),
        executor.INPUT_BASE_KEY: component_spec.ExecutionParameter(type=str),
        executor.FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        executor.LABEL_MAP_KEY: component_spec.ChannelParameter(type=artifacts.LabelMap),
        executor.QUARANTINE_KEY: component_spec.ChannelParameter(type=artifacts.QuarantinedRecords),
    }


class DetectionExampleGen(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = DetectionExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        dataset: DatasetConfig,
        fingerprint: Union[str, placeholder.Placeholder],
        input_base: Optional[Union[str, data_types.RuntimeParameter]] = None,
    ):
        """`fingerprint`: the dataset's (fingerprint.dataset_fingerprint), or the placeholder of
        DatasetFingerprint's output. `input_base` overrides `dataset.root`; on Kubeflow it is a
        run-time parameter, so the same compiled pipeline can read another copy of the data."""
        spec = DetectionExampleGenSpec(
            dataset=dataset.to_json(),
            input_base=input_base if input_base is not None else dataset.root,
            input_fingerprint=fingerprint,
            examples=types.Channel(type=standard_artifacts.Examples),
            label_map=types.Channel(type=artifacts.LabelMap),
            quarantine=types.Channel(type=artifacts.QuarantinedRecords),
        )
        super().__init__(spec=spec)


@component
def DatasetFingerprint(dataset: Parameter[str], input_base: Parameter[str]) -> OutputDict(
    fingerprint=str
):
    """The fingerprint of the dataset at `input_base` (fingerprint.dataset_fingerprint), as a
    value the ExampleGen takes as an exec property. Never served from a cache: it is what
    decides whether the ExampleGen may be."""
    from litedet.components.example_gen.fingerprint import dataset_fingerprint

    config = DatasetConfig.from_json(dataset)
    return {"fingerprint": dataset_fingerprint(config, input_base or config.root)}


# It reads the dataset's files, state outside its inputs: it is what decides whether the
# ExampleGen may be served from the cache, so it never is.
DatasetFingerprint.STATEFUL = True
