"""The run-time parameters: one table (components/run_time.py), and every list built from it
agrees: the settings they stand for, RunParameters' own parameters, the compiled pipeline's
inputs (tests/test_kubeflow.py), the CLI and the README."""

import json
import pathlib
import re

import pytest

from litedet.components import run_time
from litedet.pipeline import configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_parameter_stands_for_a_setting_of_its_type():
    config = configs.PipelineConfig()
    for name, parameter in run_time.PARAMETERS.items():
        value = run_time.setting(config, name)
        assert isinstance(value, parameter.ptype), (name, value)
        assert parameter.ptype in (str, int, float) and parameter.help


def test_run_parameters_takes_exactly_the_training_entries():
    from litedet.components.trainer import component, executor

    training = run_time.of_section("training")
    assert set(training) == {"alpha", "train_steps"}
    assert set(component.RunParametersSpec.PARAMETERS) == set(training) | {executor.TRAINING_KEY}
    fields = set(configs.TrainingConfig.__dataclass_fields__)
    assert set(training.values()) <= fields


def test_a_run_time_value_reaches_the_training_section_and_is_checked():
    from litedet.components.trainer import executor

    compiled = json.dumps({"alpha": 0.35, "train_steps": 1400, "batch_size": 8})
    settings = executor.merged_settings(compiled, {"alpha": 0.75, "train_steps": 20})
    assert (settings.alpha, settings.train_steps, settings.batch_size) == (0.75, 20, 8)
    with pytest.raises(ValueError, match="alpha"):
        executor.merged_settings(compiled, {"alpha": 0.6, "train_steps": 20})
    with pytest.raises(ValueError, match="train_steps"):
        executor.merged_settings(compiled, {"alpha": 0.5, "train_steps": 0})
    with pytest.raises(ValueError, match="finite"):
        executor.merged_settings(compiled, {"alpha": float("nan"), "train_steps": 5})


def test_the_trainer_reads_the_section_back_whole():
    settings = configs.TrainingConfig(alpha=0.5, head_channels=64)
    assert configs.TrainingConfig.from_hyperparameters(settings.to_hyperparameters()) == settings
    with pytest.raises(ValueError, match="RunParameters"):
        configs.TrainingConfig.from_hyperparameters({"alpha": 0.5})
    with pytest.raises(ValueError, match="unknown setting"):
        configs.TrainingConfig.from_hyperparameters({"values": {"alpah": 0.5}})


def test_the_built_pipeline_carries_training_settings_in_one_place(tmp_path):
    from litedet.pipeline import pipeline as pipeline_def
    from tests.datasets import write_coco

    image = {"file_name": "a.jpg", "width": 64, "height": 48, "anns": [(4, 4, 20, 20, 3, 0)]}
    sources = write_coco(str(tmp_path / "data"), {"train": [image], "eval": [image]})
    dataset = {"root": str(tmp_path / "data"), "format": "coco", "sources": sources}
    config = configs.load_config(
        None,
        [
            f"dataset={json.dumps(dataset)}",
            "training.alpha=0.5",
            "evaluation.min_map50=0.25",
        ],
    )
    definition = pipeline_def.create_pipeline(
        config,
        config.dataset_config(),
        pipeline_root=str(tmp_path / "root"),
        dataset_fingerprint="fp",
    )
    nodes = {node.id: node for node in definition.components}
    run_parameters = nodes["RunParameters"].exec_properties
    assert run_parameters["alpha"] == 0.5 and json.loads(run_parameters["training"])["alpha"] == 0.5
    trainer = nodes["Trainer"].exec_properties
    custom = json.loads(trainer["custom_config"])
    assert "training" not in custom and set(custom) == {"materialized_examples", "code_fingerprint"}
    assert json.loads(trainer["train_args"]) == {}  # no step count beside the section
    assert nodes["ModelGate"].exec_properties["min_map50"] == 0.25
    # Every project component with a code_fingerprint parameter got one.
    for node_id in ("TFLiteConverter", "ModelGate", "RunReport"):
        assert re.fullmatch(r"[0-9a-f]{16}", nodes[node_id].exec_properties["code_fingerprint"])
    assert pipeline_def.stateful_steps(definition.components) == [
        "ModelGate",
        "LitedetPusher",
        "RunReport",
    ]


def test_the_cli_and_the_readme_name_the_same_parameters():
    from litedet.kfp import cli
    from litedet.kfp.client import KfpError

    with pytest.raises(KfpError, match="known: alpha, input_base, min_map50, train_steps"):
        cli.parse_parameters(["nope=1"])
    readme = (REPO / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("- Run-time parameters:"))
    assert set(re.findall(r"`(\w+)`", line)) == set(run_time.PARAMETERS)
