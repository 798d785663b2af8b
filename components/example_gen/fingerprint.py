"""A fingerprint of a dataset's files, so that an unchanged dataset is served from the cache and
a changed one (an edited annotation, a replaced image) is read again."""

from __future__ import annotations

import hashlib
import os

from litedet.components.example_gen.config import DatasetConfig


def _is_local(path: str) -> bool:
    return "://" not in path


def _local_tree_entries(folder: str):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            stat = os.stat(path)
            yield f"{os.path.relpath(path, folder)}:{stat.st_size}:{stat.st_mtime_ns}"


def dataset_fingerprint(config: DatasetConfig, root: str) -> str:
    """On a local disk, every file under `root` (name, size, mtime) counts. On an object store,
    listing and stat-ing every image would cost one request each, so only the annotation sources
    count there: a changed image under an unchanged annotation needs a new root or no cache."""
    import tensorflow as tf

    digest = hashlib.sha256(config.to_json().encode())
    digest.update(root.encode())
    if _is_local(root) and os.path.isdir(root):
        for entry in _local_tree_entries(root):
            digest.update(entry.encode())
        return digest.hexdigest()
    for source in config.sources.values():
        for path in sorted(tf.io.gfile.glob(os.path.join(root, source))):
            stat = tf.io.gfile.stat(path)
            digest.update(f"{path}:{stat.length}:{stat.mtime_nsec}".encode())
    return digest.hexdigest()
