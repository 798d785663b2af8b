"""The command line's promises: help is fast (no TFX or TensorFlow import on that path) and every
verb's help has examples."""

import subprocess
import sys

import pytest

VERBS = ["demo", "run", "predict", "val", "export", "sweep", "config", "data", "compile", "kfp"]


def test_help_imports_neither_tfx_nor_tensorflow():
    code = (
        "import sys; from litedet import cli; p = cli.build_parser(); p.format_help(); "
        "[a.choices[v].format_help() for a in p._subparsers._group_actions "
        f"for v in {VERBS!r}]; "
        "bad = [m for m in ('tfx', 'tensorflow', 'kfp') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_examples_in_its_help(verb):
    from litedet import cli

    (subparsers,) = cli.build_parser()._subparsers._group_actions
    help_text = subparsers.choices[verb].format_help()
    assert "examples:" in help_text and "litedet " in help_text.split("examples:")[1]


def test_run_without_the_imagenet_file_and_network_stops_at_once(tmp_path, monkeypatch, capsys):
    """The default for your own data is ImageNet weights. With no cached file and no network
    (here: a refused loopback connection) `litedet run` stops before any step, naming the file
    and where to put it."""
    import json
    import time

    from litedet import cli
    from litedet.components.detection import weights
    from litedet.data import sample

    sample.generate(str(tmp_path / "data"), num_train=2, num_eval=1)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights, "KERAS_WEIGHTS_URL", "http://127.0.0.1:9/")
    dataset = {
        "root": str(tmp_path / "data"),
        "format": "coco",
        "sources": {"train": "annotations/instances_train.json"},
    }
    started = time.time()
    code = cli.main(
        ["run", "--output-dir", str(tmp_path / "out"), "--set", f"dataset={json.dumps(dataset)}"]
    )
    assert code == 2 and time.time() - started < 20
    error = capsys.readouterr().err
    assert weights.imagenet_filename(0.35, 224) in error and "keras" in error
    assert not (tmp_path / "out" / "pipeline_root").exists()  # nothing ran
