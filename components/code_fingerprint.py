"""Cache keys for code that TFX loads by module path.

TFX's cache key covers a component's inputs and exec properties, not the Python functions it
loads by name (`preprocessing_fn`, `run_fn`) nor a custom executor's code. Each such component
gets `source_fingerprint(...)` of its entry point as an exec property: an edited module is never
served stale results from the cache, while an edit elsewhere does not rerun it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import pathlib
from typing import Set


def _project_imports(path: pathlib.Path, package: str) -> Set[str]:
    """Names under `package` that a source file imports (statically)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == package}


def _find_module(name: str):
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # "pkg.module.attribute": a name imported from a module
        return None


def source_fingerprint(entry_point: str) -> str:
    """A hash of the code behind a function loaded by module path: its module and every project
    module it imports, transitively. TFX's cache key does not cover such code; this value in the
    component's custom_config does, so an edited module is never served stale results from the
    cache, while an edit elsewhere (the pusher, say) does not retrain the model."""
    digest = hashlib.sha256()
    pending, seen = [entry_point.rsplit(".", 1)[0]], set()
    while pending:
        name = pending.pop()
        spec = _find_module(name) if name not in seen else None
        seen.add(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue  # an attribute imported from a module, not a module
        path = pathlib.Path(spec.origin)
        digest.update(name.encode() + path.read_bytes())
        pending.extend(sorted(_project_imports(path, entry_point.split(".")[0]) - seen))
    return digest.hexdigest()[:16]
