"""The Trainer's resume folder (components/trainer/module.py `_resume_dir`): a retried training
resumes from it, so its key must change with everything that shapes the model, or a changed
pipeline would export weights trained for another one. (The SIGKILL-and-resume test and the
removal after export run on real training in tests/test_pipeline_local.py.)"""

import types

import pytest

from litedet.components.trainer import module as trainer_module
from litedet.components.trainer.config import TrainingConfig


@pytest.fixture
def fn_args(tmp_path):
    graph = tmp_path / "transform_graph" / "transform_fn"
    graph.mkdir(parents=True)
    (graph / "saved_model.pb").write_bytes(b"transform graph, 256 px, stretch")
    return types.SimpleNamespace(
        train_files=[str(tmp_path / "examples" / "1" / "Split-train" / "*")],
        transform_output=str(tmp_path / "transform_graph"),
        model_run_dir=str(tmp_path / "Trainer" / "model_run" / "7"),
        custom_config={"code_fingerprint": "code-a"},
    )


def test_the_same_training_resumes_from_the_same_folder(fn_args):
    settings = TrainingConfig(train_steps=100)
    first = trainer_module._resume_dir(fn_args, settings, 100)
    assert first == trainer_module._resume_dir(fn_args, TrainingConfig(train_steps=100), 100)
    # Beside the Trainer's outputs, outliving one execution's model_run folder.
    assert "/Trainer/resume/" in first


def test_anything_that_shapes_the_model_gives_another_folder(fn_args, tmp_path):
    settings = TrainingConfig(train_steps=100)
    base = trainer_module._resume_dir(fn_args, settings, 100)
    changed = []
    # Another transform graph (input size, resize mode, normalization live in it).
    (tmp_path / "transform_graph" / "transform_fn" / "saved_model.pb").write_bytes(b"320 px")
    changed.append(trainer_module._resume_dir(fn_args, settings, 100))
    (tmp_path / "transform_graph" / "transform_fn" / "saved_model.pb").write_bytes(
        b"transform graph, 256 px, stretch"
    )
    # Other code.
    code = types.SimpleNamespace(**{**vars(fn_args), "custom_config": {"code_fingerprint": "b"}})
    changed.append(trainer_module._resume_dir(code, settings, 100))
    # Other data (a new ExampleGen output is a new folder).
    data = types.SimpleNamespace(**{**vars(fn_args), "train_files": ["/other/Split-train/*"]})
    changed.append(trainer_module._resume_dir(data, settings, 100))
    # Other settings, other step count.
    changed.append(trainer_module._resume_dir(fn_args, TrainingConfig(alpha=0.5), 100))
    changed.append(trainer_module._resume_dir(fn_args, settings, 200))
    assert base not in changed and len(set(changed)) == len(changed)
