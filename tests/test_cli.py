"""The command line's promises: help is fast (no TFX or TensorFlow import on that path) and every
verb's help has examples."""

import subprocess
import sys

import pytest

VERBS = ["demo", "run", "predict", "sweep", "config", "data", "compile", "kfp"]


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
