"""What a step's pod asks for on Kubeflow. Each step declares its own in its component.py
(`RESOURCES`, per node id); pipeline/kubeflow_v2_runner.py collects them."""

from typing import NamedTuple


class Resources(NamedTuple):
    cpu: float  # cores; request = limit, so Beam's worker count matches what the pod gets
    memory_gb: float  # KFP's unit for these fields is G (10^9 bytes), not Gi


# A step that declares nothing gets this.
DEFAULT = Resources(cpu=1, memory_gb=4)
