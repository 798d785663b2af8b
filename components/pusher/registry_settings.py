"""What a model registry's settings (`push.registry`) may hold: no secret, ever.

The registry settings travel as an exec property of the LitedetPusher: they are written into the
pipeline definition, the compiled Kubeflow spec and ML Metadata, all readable by anyone who can see
the pipeline. Credentials therefore come from the step's environment only (MLFLOW_TRACKING_TOKEN,
or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, for MLflow; on Kubeflow from a Kubernetes
Secret through `kubeflow.secret_env`; the Kubeflow Model Registry client reads the pod's service
account token itself). One check, used by the configuration (pipeline/configs.py), the component
(when the setting enters the pipeline) and make_registry (when it is used).

No heavy import here: the command line checks configurations with it.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Mapping

# Setting names that carry a credential: a token, a password, a key, whole HTTP headers.
SECRET_SETTING = re.compile(
    r"token|passw|secret|credential|api_?key|authorization|cookie|^headers$", re.IGNORECASE
)

ENVIRONMENT_HINT = (
    "give credentials through the environment instead: MLFLOW_TRACKING_TOKEN (or "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) for MLflow, from a Kubernetes Secret "
    "on Kubeflow (kubeflow.secret_env); the Kubeflow Model Registry client reads the pod's "
    "service account token itself"
)


def check_registry_settings(settings: Mapping[str, Any], where: str = "push.registry") -> None:
    """Refuses a registry configuration that holds a secret or a malformed switch.

    Args:
      settings: the registry's configuration, {"kind": ..., ...}.
      where: how the message names the settings (the configuration key).

    Raises:
      ValueError: naming the key, and where the secret belongs instead.
    """
    for key in settings:
        if SECRET_SETTING.search(str(key)):
            raise ValueError(
                f"{where}.{key}: looks like a secret, and {where} is written into the pipeline "
                f"definition, its compiled spec and ML Metadata in the clear; {ENVIRONMENT_HINT}"
            )
        value = settings[key]
        if isinstance(value, str) and "://" in value and _has_userinfo(value):
            raise ValueError(
                f"{where}.{key}: the URL holds a user name or password (user:password@host), "
                f"and {where} is written into the pipeline in the clear; {ENVIRONMENT_HINT}"
            )
    insecure = settings.get("allow_insecure_http", False)
    if not isinstance(insecure, bool):
        raise ValueError(f"{where}.allow_insecure_http: {insecure!r} must be true or false")


def _has_userinfo(url: str) -> bool:
    try:
        parsed = urllib.parse.urlparse(url)
        return bool(parsed.username or parsed.password)
    except ValueError:  # not a URL after all
        return False
