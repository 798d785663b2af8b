"""Every file, folder and module the project names exists: in code, messages, docs, the
Makefile, the Dockerfile and the manifests. A path moved without its mentions fails here."""

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Top-level folders of this repository: a path starting with one of them names a file here.
TOP = ("components", "pipeline", "litedet", "tests", "benchmarks", "docs", "k8s", "schemas", ".ci")
# Not preceded by a word character, a slash or a dot: "/opt/litedet/..." (the image) and
# "kubeflow/pipelines/..." (other projects) are not ours.
PATH = re.compile(r"(?<![\w/.\-])((?:%s)/[\w./-]*[\w/])" % "|".join(re.escape(t) for t in TOP))
MODULE = re.compile(r"(?<![\w.])(litedet(?:\.\w+)+)")
PYTHON_M = re.compile(r"python3?(?:\.10)? -m ([\w.]+)")
# Python names installed under `litedet` (setup.py's FOLDERS).
FOLDERS = {
    "litedet.pipeline": "pipeline",
    "litedet.components": "components",
    "litedet.schemas": "schemas",
    "litedet": "litedet",
}
# Look like paths, are not: a Kubernetes "namespace/service-account".
NOT_PATHS = {"litedet/litedet-pipeline-runner"}
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".sh", ".txt", ".in", ".ini")


def _text_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        path = REPO / name
        if path.is_file() and (
            name.endswith(SUFFIXES) or path.name in ("Makefile", "Dockerfile", "run")
        ):
            yield path


def _mentions(pattern):
    for path in _text_files():
        if path == pathlib.Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in pattern.finditer(line):
                yield f"{path.relative_to(REPO)}:{number}", match.group(1)


def _module_file(dotted: str):
    """The file of the longest importable prefix of `dotted`, and the rest (attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        prefix = max((p for p in FOLDERS if name == p or name.startswith(p + ".")), key=len)
        folder = REPO / FOLDERS[prefix] / pathlib.Path(*name[len(prefix) :].split(".")[1:])
        for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[cut:]
    return None, parts


def test_every_named_repository_path_exists():
    missing = [
        f"{where}: {path}"
        for where, path in _mentions(PATH)
        if "*" not in path and path not in NOT_PATHS and not (REPO / path.rstrip("/.")).exists()
    ]
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_every_named_module_and_attribute_exists():
    problems = []
    for where, dotted in _mentions(MODULE):
        top = dotted.split(".")[1]
        if f"litedet.{top}" not in FOLDERS and not list((REPO / "litedet").glob(top + "*")):
            continue  # a name in litedet's namespace that is not a module (an artifact type)
        source, rest = _module_file(dotted.rstrip("."))
        if source is None:
            problems.append(f"{where}: {dotted} (no such module)")
        elif rest and not re.search(
            rf"^(?:def|class) {re.escape(rest[0])}\b|^{re.escape(rest[0])}\b\s*[:=]",
            source.read_text(),
            re.M,
        ):
            problems.append(f"{where}: {dotted} ({rest[0]} is not defined in {source.name})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pattern", [PYTHON_M])
def test_every_python_m_command_names_a_runnable_module(pattern):
    problems = []
    for where, dotted in _mentions(pattern):
        if dotted.split(".")[0] in ("pip", "venv", "pytest", "tests", "benchmarks"):
            candidate = REPO / pathlib.Path(*dotted.split("."))
            if dotted.split(".")[0] in ("tests", "benchmarks") and not (
                candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file()
            ):
                problems.append(f"{where}: python -m {dotted}")
            continue
        source, rest = _module_file(dotted) if dotted.startswith("litedet") else (None, [])
        if dotted.startswith("litedet") and (source is None or rest):
            problems.append(f"{where}: python -m {dotted}")
        elif not dotted.startswith("litedet") and dotted.split(".")[0] in TOP:
            # `python -m components...` runs only from the repository root: name litedet.*
            problems.append(f"{where}: python -m {dotted} (use the installed litedet.* name)")
    assert not problems, "\n".join(problems)
