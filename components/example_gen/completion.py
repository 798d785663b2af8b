"""Whole or absent: the completion marker of a `litedet data convert` output folder.

`litedet data convert` (litedet/data/convert.py) writes into a temporary folder beside `--out`
that holds `INCOMPLETE_MARKER` from its first moment, and renames it to `--out` only once the
ExampleGen has finished: `COMPLETE_MARKER` is then written last, listing every file of the
folder with its size. A reader of a convert output (the ExampleGen, on `tfrecord` sources that
lie in one) refuses a folder without a valid marker, or whose files are not exactly the ones
listed (a shard left over from another run, a shard missing), naming the folder.

No TensorFlow import here (tf.io.gfile is imported where needed, for object-store folders).
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Dict, Iterable, Optional

COMPLETE_MARKER = "_LITEDET_CONVERT_COMPLETE.json"
INCOMPLETE_MARKER = "_LITEDET_CONVERT_INCOMPLETE"
# The sub-folders of a convert output: a folder holding all three is one, marker or not (an
# output written before markers existed, or by a run killed before it renamed anything).
LAYOUT = ("examples", "label_map", "quarantine")


class IncompleteOutput(ValueError):
    """A convert output folder that is not whole; the message names the folder and why."""


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _join(folder: str, *names: str) -> str:
    return posixpath.join(folder, *names) if "://" in folder else os.path.join(folder, *names)


def list_files(folder: str) -> Dict[str, int]:
    """Relative path -> size of every file under `folder`, the markers left out."""
    found = {}
    if "://" not in folder:
        for parent, subfolders, names in os.walk(folder):
            subfolders.sort()
            for name in names:
                path = os.path.join(parent, name)
                found[os.path.relpath(path, folder)] = os.lstat(path).st_size
    else:
        gfile = _gfile()
        for parent, _, names in gfile.walk(folder):
            for name in names:
                path = _join(parent, name)
                found[path[len(folder.rstrip("/")) + 1 :]] = gfile.stat(path).length
    for marker in (COMPLETE_MARKER, INCOMPLETE_MARKER):
        found.pop(marker, None)
    return found


def write_complete(folder: str, summary: dict) -> None:
    """Writes the completion marker, listing every file now in `folder`: call it last."""
    marker = {"complete": True, "files": list_files(folder), "summary": summary}
    path = os.path.join(folder, COMPLETE_MARKER)
    with open(path + ".tmp", "w") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _exists(path: str) -> bool:
    return os.path.lexists(path) if "://" not in path else _gfile().exists(path)


def _isdir(path: str) -> bool:
    return os.path.isdir(path) if "://" not in path else _gfile().isdir(path)


def is_convert_output(folder: str) -> bool:
    """A folder a convert wrote (or began to write)."""
    return (
        _exists(_join(folder, COMPLETE_MARKER))
        or _exists(_join(folder, INCOMPLETE_MARKER))
        or all(_isdir(_join(folder, name)) for name in LAYOUT)
    )


def check(folder: str) -> dict:
    """The marker of a whole convert output; raises IncompleteOutput otherwise."""
    marker_path = _join(folder, COMPLETE_MARKER)
    if _exists(_join(folder, INCOMPLETE_MARKER)) or not _exists(marker_path):
        raise IncompleteOutput(
            f"{folder}: an incomplete `litedet data convert` output (no {COMPLETE_MARKER}: the "
            "convert was killed or failed); run the convert again"
        )
    try:
        if "://" in folder:
            with _gfile().GFile(marker_path) as f:
                marker = json.loads(f.read())
        else:
            with open(marker_path) as f:
                marker = json.load(f)
        listed = marker["files"]
        if marker.get("complete") is not True or not isinstance(listed, dict):
            raise ValueError("not a completion marker")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IncompleteOutput(f"{marker_path}: unreadable completion marker ({e})") from e
    present = list_files(folder)
    extra = sorted(set(present) - set(listed))
    missing = sorted(set(listed) - set(present))
    changed = sorted(n for n in set(listed) & set(present) if listed[n] != present[n])
    if extra or missing or changed:
        parts = [
            f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for what, names in (("not written by it:", extra), ("missing:", missing))
            if names
        ] + ([f"size changed: {', '.join(changed[:3])}"] if changed else [])
        raise IncompleteOutput(
            f"{folder}: not the files its convert completed ({'; '.join(parts)}); run the "
            "convert again into an empty folder"
        )
    return marker


def output_folder_of(path: str, root: str) -> Optional[str]:
    """The convert output folder `path` lies in, looking up from its folder to `root`
    (inclusive), or None."""
    root = root.rstrip("/") or "/"
    folder = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    if "://" not in root:
        root = os.path.abspath(root)
    while True:
        if is_convert_output(folder):
            return folder
        if folder == root or len(folder) <= len(root):
            return None
        parent = posixpath.dirname(folder) if "://" in folder else os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_sources(paths: Iterable[str], root: str) -> None:
    """Refuses TFRecord sources that lie in an incomplete convert output (IncompleteOutput)."""
    folders: Dict[str, Optional[str]] = {}  # a file's folder -> its convert output
    checked = set()
    for path in paths:
        parent = posixpath.dirname(path) if "://" in path else os.path.dirname(path)
        if parent not in folders:
            folders[parent] = output_folder_of(path, root)
        folder = folders[parent]
        if folder is not None and folder not in checked:
            check(folder)
            checked.add(folder)
