"""Reading the files a dataset's annotations name, without ever leaving the dataset root.

An annotation is data, not configuration: a `file_name` of `../../etc/passwd`, an absolute path,
an image-set id with `..` or a symlink planted in the images folder must not make the pipeline
read (and copy into its examples) a file outside `dataset.root`. Nor may a FIFO or a device
named `x.jpg` hang or flood a worker, or one huge file exhaust its memory. Every such file is
refused with a `FileProblem` whose reason the caller quarantines the image for.

Local roots: the path must be under the root both as written (`..` normalized) and once every
symlink is resolved; the resolved path is opened without following a symlink, non-blocking, and
only a regular file of at most `max_bytes` is read. Object-store roots (`gs://`, `s3://`) have
no symlinks or FIFOs: the check is on the object key, as written and normalized, which must lie
under the root's prefix in the same bucket.

Left open (docs/security.md): a local file swapped for a symlink between the check and the open
of an intermediate folder (a race with someone writing into the dataset while it is read).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import Optional

_READ_CHUNK = 1 << 20


class FileProblem(Exception):
    """A file the pipeline will not read; `reason` is a quarantine reason (records.py)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def is_remote(path: str) -> bool:
    """Object-store URIs (gs://, s3://, ...) as opposed to local paths."""
    return "://" in path


def _under(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _split_uri(uri: str):
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


def _key_under(root_key: str, key: str) -> bool:
    root_key = root_key.strip("/")
    if not root_key:
        return True
    return key == root_key or key.startswith(root_key + "/")


def check_inside(root: str, path: str) -> None:
    """Raises FileProblem("path_outside_root") unless `path`, as written with `..` normalized,
    lies under `root`. Symlinks are the business of `read_file`, which resolves them.

    Args:
      root: the dataset root, a local folder or an object-store URI.
      path: the file's path or URI, as built from the annotation.
    """
    if is_remote(root):
        scheme, bucket, root_key = _split_uri(root)
        if not is_remote(path):
            raise FileProblem(
                "path_outside_root", f"{path} is a local path, outside the dataset root {root}"
            )
        path_scheme, path_bucket, key = _split_uri(path)
        normalized = posixpath.normpath(key) if key else ""
        # Both views: a store may take `..` literally (the key as written) or a tool may
        # normalize it (the normalized key); neither may leave the root's prefix.
        if (path_scheme, path_bucket) != (scheme, bucket) or not (
            _key_under(root_key, key) and _key_under(root_key, normalized)
        ):
            raise FileProblem("path_outside_root", f"{path} is outside the dataset root {root}")
        return
    if is_remote(path) or not _under(os.path.abspath(root), os.path.abspath(path)):
        raise FileProblem("path_outside_root", f"{path} is outside the dataset root {root}")


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _too_large(path: str, size: str, max_bytes: int) -> FileProblem:
    return FileProblem(
        "file_too_large", f"{path} holds {size} bytes, more than max_image_bytes={max_bytes}"
    )


def _check_resolvable(path: str) -> None:
    """A symlink loop (`a -> b -> a`, or a link to itself) has no target: realpath() would
    return some path on the loop, which looks inside the root. Refused with its own reason."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileProblem(
                "symlink_loop", f"{path}: a symlink loop (too many levels of symbolic links)"
            ) from e
        # Missing (or a dangling symlink): the open below says so.


def _read_local(root: str, path: str, max_bytes: int) -> Optional[bytes]:
    _check_resolvable(path)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not _under(real_root, real):
        raise FileProblem(
            "path_outside_root", f"{path} resolves to {real}, outside the dataset root {root}"
        )
    try:
        info = os.lstat(real)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FileProblem("unreadable_image", f"{path}: {e.strerror}") from e
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
        # Before open(): a socket cannot be opened at all (ENXIO), which is no read error.
        raise FileProblem(
            "not_a_regular_file", f"{path} is a {kind_of(info.st_mode)}, not a regular file"
        )
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
        # O_NOFOLLOW: `real` has no symlink left; one appearing now is refused, not followed.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileProblem("path_outside_root", f"{path} became a symlink while read") from e
        raise FileProblem("unreadable_image", f"{path}: {e.strerror}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(
                "not_a_regular_file", f"{path} is a {kind_of(info.st_mode)}, not a regular file"
            )
        if info.st_size > max_bytes:
            raise _too_large(path, str(info.st_size), max_bytes)
        chunks, total = [], 0
        while total <= max_bytes:  # the file may grow after fstat: never read past the limit
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise _too_large(path, f"more than {max_bytes}", max_bytes)
        return b"".join(chunks)
    except OSError as e:
        raise FileProblem("unreadable_image", f"{path}: {e.strerror or e}") from e
    finally:
        os.close(fd)


def _read_remote(path: str, max_bytes: int) -> Optional[bytes]:
    import tensorflow as tf

    try:
        info = tf.io.gfile.stat(path)
    except tf.errors.NotFoundError:
        return None
    if info.is_directory:
        raise FileProblem("not_a_regular_file", f"{path} is a folder, not a file")
    if info.length > max_bytes:
        raise _too_large(path, str(info.length), max_bytes)
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(path, f"more than {max_bytes}", max_bytes)
    return data


def read_file(root: str, path: str, max_bytes: int) -> Optional[bytes]:
    """The bytes of `path`, a file an annotation names; None when it does not exist.

    Args:
      root: the dataset root (local folder or object-store URI) the file must lie under.
      path: the file, as built from the annotation.
      max_bytes: files larger than this are refused without being read whole.

    Returns:
      The file's bytes, or None when there is no such file.

    Raises:
      FileProblem: `path_outside_root` (as written or through a symlink), `symlink_loop`,
        `not_a_regular_file` (a folder, FIFO, device, socket), `file_too_large`, or
        `unreadable_image` (an OS error).
        A remote read's own errors (tf.errors.OpError) are left to the caller.
    """
    check_inside(root, path)
    try:
        if is_remote(path):
            return _read_remote(path, max_bytes)
        return _read_local(root, path, max_bytes)
    except ValueError as e:  # e.g. an embedded NUL: no file can have that name
        raise FileProblem("unreadable_image", f"{path!r}: {e}") from e
