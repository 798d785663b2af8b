"""A fingerprint of a dataset: the cache key of the ExampleGen.

An unchanged dataset must be served from the cache and a changed one (a file added, replaced or
removed, an edited annotation) read again, on every orchestrator. The fingerprint covers the
dataset description, its root and every file under the root (relative path, size, modification
time). Listing costs one call per directory locally and, on object stores, one request per
thousand objects (Beam's FileSystems returns sizes and times with the listing), not one per file.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import logging
import os
from typing import Iterator, Tuple

from litedet.components.example_gen.config import DatasetConfig


def _local_files(root: str, skipped: collections.Counter) -> Iterator[Tuple[bytes, int, float]]:
    """(relative name as bytes, size, mtime) of every file under `root`. Walked as bytes: a
    name that is not UTF-8 is one more file, not a crash. os.walk does not follow symlinked
    folders, so a loop of them cannot recurse; a link whose target cannot be stat'ed (a loop, a
    dangling link) enters the key as the link itself, counted in `skipped` by why."""
    broot = os.fsencode(root)
    for folder, subfolders, names in os.walk(broot, onerror=lambda e: skipped.update([_why(e)])):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, broot)
            try:
                info = os.stat(path)
            except OSError as e:
                skipped[_why(e)] += 1
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                relative += b"\0" + _why(e).encode()
            yield relative, info.st_size, info.st_mtime_ns / 1e9


def _why(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENOENT:
        return "dangling symlink"
    return error.strerror or type(error).__name__


def _remote_files(root: str) -> Iterator[Tuple[str, int, float]]:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from litedet.components import object_storage as storage

    storage.configure()
    # Beam's S3 file system wants options; empty ones make boto3 read the AWS environment.
    FileSystems.set_options(PipelineOptions([]))
    prefix = root.rstrip("/") + "/"
    for match in FileSystems.match([prefix + "**"]):
        for found in sorted(match.metadata_list, key=lambda m: m.path):
            yield found.path[len(prefix) :], found.size_in_bytes, found.last_updated_in_seconds


def scan(config: DatasetConfig, root: str) -> Tuple[str, int, int]:
    """(sha256 hex of the description, the root and every file under the root; the number of
    files; their total bytes)."""
    digest = hashlib.sha256(config.to_json().encode())
    digest.update(root.encode())
    remote = "://" in root
    if not remote and not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} is not a folder")
    count = total = 0
    skipped: collections.Counter = collections.Counter()
    for name, size, mtime in _remote_files(root) if remote else _local_files(root, skipped):
        name = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
        digest.update(name + f"\0{size}\0{mtime:.6f}\n".encode())
        count += 1
        total += size
    if skipped:
        logging.warning(
            "Dataset fingerprint of %s: %s entries could not be followed (%s); they enter the "
            "fingerprint as links",
            root,
            sum(skipped.values()),
            ", ".join(f"{why}: {n}" for why, n in sorted(skipped.items())),
        )
    if count == 0:
        raise FileNotFoundError(f"dataset root {root!r} holds no file")
    return digest.hexdigest(), count, total


def dataset_fingerprint(config: DatasetConfig, root: str) -> str:
    """The fingerprint alone (scan)."""
    return scan(config, root)[0]
