"""The `push:` section of a litedet configuration (pipeline/configs.py composes the sections).

No TensorFlow or TFX import here: the CLI reads and checks configurations without them.
"""

import dataclasses
from typing import Any, Dict

from litedet.components.pusher.registry_settings import check_registry_settings

REGISTRY_KINDS = ("none", "mlflow", "kubeflow")


@dataclasses.dataclass
class PushConfig:
    """Where blessed models go (components/pusher)."""

    # A folder, gs:// or s3:// URI; empty: <output_dir>/models. Each push is a new version.
    destination: str = ""
    # {"kind": "none"}, {"kind": "mlflow", "tracking_uri": "https://..."} or {"kind": "kubeflow",
    # "server_address": ..., "port": ...}; secrets come from the environment, never from here (a
    # key such as headers, user_token or *token*/*password* is refused). An http:// MLflow with
    # credentials needs "allow_insecure_http": true.
    registry: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "none"})
    model_name: str = "litedet"  # the registered model's name

    def check(self) -> None:
        if self.registry.get("kind", "none") not in REGISTRY_KINDS:
            raise ValueError(
                f"push.registry.kind: {self.registry.get('kind')!r} is not one of "
                f"{', '.join(REGISTRY_KINDS)}"
            )
        # The registry settings are written into the pipeline: no secret may be among them.
        check_registry_settings(self.registry)
