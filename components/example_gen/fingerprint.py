"""A fingerprint of a dataset: the cache key of the ExampleGen.

An unchanged dataset must be served from the cache and a changed one (a file added, replaced or
removed, an edited annotation) read again, on every orchestrator. The fingerprint covers the
dataset description, its root and every file under the root (relative path, size, modification
time). Listing costs one call per directory locally and, on object stores, one request per
thousand objects (Beam's FileSystems returns sizes and times with the listing), not one per file.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, Tuple

from litedet.components.example_gen.config import DatasetConfig


def _local_files(root: str) -> Iterator[Tuple[str, int, float]]:
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            stat = os.stat(path)
            yield os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns / 1e9


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
    for name, size, mtime in _remote_files(root) if remote else _local_files(root):
        digest.update(f"{name}\0{size}\0{mtime:.6f}\n".encode())
        count += 1
        total += size
    if count == 0:
        raise FileNotFoundError(f"dataset root {root!r} holds no file")
    return digest.hexdigest(), count, total


def dataset_fingerprint(config: DatasetConfig, root: str) -> str:
    """The fingerprint alone (scan)."""
    return scan(config, root)[0]
