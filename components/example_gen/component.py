"""DetectionExampleGen: labelled images (COCO, Pascal VOC, TF OD API TFRecords) -> tf.Examples.

Outputs: `examples` (standard ExampleGen layout, one folder per split), `label_map` and
`quarantine` (see components/artifacts.py). The driver fingerprints the dataset's files so an
unchanged dataset is served from the cache by the local runner.
"""

from __future__ import annotations

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component, base_driver, executor_spec
from tfx.orchestration import data_types, data_types_utils
from tfx.orchestration.portable import base_driver as portable_base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2
from tfx.types import component_spec, standard_artifacts

from litedet.components import artifacts
from litedet.components.example_gen import executor
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.example_gen.fingerprint import dataset_fingerprint


class DetectionExampleGenSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        executor.DATASET_KEY: component_spec.ExecutionParameter(type=str),
        executor.INPUT_BASE_KEY: component_spec.ExecutionParameter(type=str),
        executor.FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        executor.LABEL_MAP_KEY: component_spec.ChannelParameter(type=artifacts.LabelMap),
        executor.QUARANTINE_KEY: component_spec.ChannelParameter(type=artifacts.QuarantinedRecords),
    }


class FingerprintDriver(base_driver.BaseDriver, portable_base_driver.BaseDriver):
    """Adds the dataset fingerprint to the execution properties before the cache lookup."""

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        portable_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(
        self, execution_info: portable_data_types.ExecutionInfo
    ) -> driver_output_pb2.DriverOutput:
        properties = execution_info.exec_properties
        config = DatasetConfig.from_json(properties[executor.DATASET_KEY])
        fingerprint = dataset_fingerprint(config, properties[executor.INPUT_BASE_KEY])
        result = driver_output_pb2.DriverOutput()
        data_types_utils.set_metadata_value(
            result.exec_properties[executor.FINGERPRINT_KEY], fingerprint
        )
        return result


class DetectionExampleGen(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = DetectionExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = FingerprintDriver

    def __init__(
        self,
        dataset: DatasetConfig,
        input_base: Optional[Union[str, data_types.RuntimeParameter]] = None,
    ):
        """`input_base` overrides `dataset.root`; on Kubeflow it is a run-time parameter, so the
        same compiled pipeline can read another copy of the data."""
        spec = DetectionExampleGenSpec(
            dataset=dataset.to_json(),
            input_base=input_base if input_base is not None else dataset.root,
            examples=types.Channel(type=standard_artifacts.Examples),
            label_map=types.Channel(type=artifacts.LabelMap),
            quarantine=types.Channel(type=artifacts.QuarantinedRecords),
        )
        super().__init__(spec=spec)
