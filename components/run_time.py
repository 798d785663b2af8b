"""The values a compiled pipeline takes per run: one table, one carrier each.

A Kubeflow run (the UI's "create run" form, `litedet kfp run --param NAME=VALUE`) may set these
without recompiling; the compiled value of `setting` is the default. Locally they are simply the
configuration's values. Each is carried to its step as a whole, top-level exec property (TFX's
Kubeflow compiler resolves RuntimeParameters nowhere else, not inside protos or custom_config):

- `dataset.*`    -> DetectionExampleGen (`input_base`)
- `training.*`   -> RunParameters, which writes the whole training section, run-time values
                    merged in, as the Trainer's `hyperparameters` input (components/trainer/)
- `evaluation.*` -> ModelGate

Adding one is one entry here plus its use: a `training.*` entry needs nothing else (RunParameters
takes every such entry as a parameter); another section's step reads it with `value()`.
No TFX or TensorFlow import here: the CLI reads this table.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple


class RunTimeParameter(NamedTuple):
    setting: str  # the configuration key it stands for, e.g. "training.alpha"
    ptype: type  # str, int or float: what KFP's parameter types carry
    help: str  # shown in the Kubeflow UI beside the default


PARAMETERS: Dict[str, RunTimeParameter] = {
    "input_base": RunTimeParameter(
        "dataset.root",
        str,
        "dataset root the ExampleGen reads: gs://... or a path mounted in every step",
    ),
    "alpha": RunTimeParameter(
        "training.alpha", float, "MobileNetV2 depth multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4"
    ),
    "train_steps": RunTimeParameter("training.train_steps", int, "training steps"),
    "min_map50": RunTimeParameter(
        "evaluation.min_map50",
        float,
        "mAP@0.5 a model must reach on the evaluation split to be blessed and pushed",
    ),
}


def of_section(section: str) -> Dict[str, str]:
    """{parameter name: field} of the parameters standing for `section.field` settings."""
    return {
        name: p.setting.split(".", 1)[1]
        for name, p in PARAMETERS.items()
        if p.setting.split(".", 1)[0] == section
    }


def setting(config, name: str) -> Any:
    """The configuration's value of the setting a parameter stands for (its compiled default)."""
    value = config
    for part in PARAMETERS[name].setting.split("."):
        value = getattr(value, part)
    return value


def value(config, run_time: Mapping[str, Any], name: str) -> Any:
    """What a step gets: the run-time value where the runner gives one (a RuntimeParameter on
    Kubeflow), else the configuration's."""
    return run_time[name] if name in run_time else setting(config, name)
