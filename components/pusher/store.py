"""A versioned model store: `<destination>/<version>/` folders numbered 1, 2, 3 ...

Each version folder holds the pushed files and a `manifest.json` (what the model is, where it came
from, and the sha256 and size of every file). A version is *complete* when its `manifest.json`
exists; readers (`list_versions`, `latest`, anything that serves models) must ignore every other
entry, in particular dot-folders (`.incoming-*`, `.claims`) and a numbered folder without a
manifest.

How a push works and what it guarantees:

1. Every file is copied into a staging folder inside the destination, `.incoming-<uuid>/`, and
   hashed on the way (sha256, size).
2. A version number is *claimed*, the manifest (which names that version) is written into the
   staging folder, and the folder is *placed* as `<destination>/<version>/`.

Local (POSIX) destinations, `claim="rename"`: step 2 is one `os.rename(staging, <version>)`.
Renaming a directory onto an existing non-empty directory fails (ENOTEMPTY/EEXIST) and every
complete version holds a manifest, so the rename is both the claim and the publication: two
pushes can never get the same number (the loser re-reads the folder and tries the next number) and
a crash at any point leaves either the whole version or none of it. Files are fsynced before the
rename and the destination folder after it. Caveat: rename *replaces* an *empty* directory, so a
hand-made empty `<destination>/7/` would be taken over; nothing in this module makes one.

Object stores (`gs://`, `s3://`, through `tf.io.gfile`), `claim="marker"`: there is no atomic
rename of a folder and `tf.io.gfile` exposes no conditional create (GCS's
`x-goog-if-generation-match: 0`, S3's `If-None-Match: *`), so a claim is a marker object
`.claims/<version>/<uuid>`: a push writes its marker, then lists `.claims/<version>/`; it owns the
version only if its marker is the only one there and `<version>/` does not exist yet, otherwise it
deletes its marker and moves on to a higher number. With strongly consistent writes and listings
(GCS always; S3 since December 2020) at most one push owns a number: of two racing pushes, the one
that lists second sees the other's marker. Both can lose the same round, so numbers can be skipped
(gaps) under contention, never shared. The staged files are then moved into `<version>/` one by
one (a server-side copy and a delete each) and `manifest.json` is written *last*: a crash
mid-move leaves a numbered folder without a manifest, which readers ignore and which is never
reused. The same protocol serves local mounts of buckets (gcsfuse), where a folder rename is not
atomic: pass `claim="marker"` for those.

Cleanup: a crashed push leaves `.incoming-<uuid>/` (and, on object stores, a stale claim marker or
a numbered folder without a manifest). They are invisible to readers; `clean_stale(destination,
older_than_s)` deletes those older than the given age (default a day, far longer than a push), e.g.
from a periodic job. Never run it with a small age while pushes are in flight.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import posixpath
import shutil
import time
import uuid
from typing import Dict, List, Mapping, Optional, Tuple

MANIFEST = "manifest.json"
# Inside a version: the SavedModel a pushed model came from (the gate's baseline, `predict`).
SAVED_MODEL_DIR = "saved_model"
# The same SavedModel in TensorFlow Serving's layout (`serving/1/saved_model.pb`): the folder
# KServe's TensorFlow runtime serves (a storageUri's numbered subfolders are model versions).
SERVING_DIR = "serving"
MANIFEST_FORMAT = "litedet.pushed_model/1"
INCOMING_PREFIX = ".incoming-"
CLAIMS_DIR = ".claims"
# Keys push_version writes into the manifest itself; a caller may not set them.
RESERVED_KEYS = ("format", "version", "uri", "created", "files")

_CHUNK = 1 << 20
_MAX_CLAIM_ATTEMPTS = 10_000


class StoreError(RuntimeError):
    """The store could not take the push (bad input, or the destination refused a write)."""


class StoreMoved(StoreError):
    """A push conditioned on the store's latest version found a newer one: another run pushed
    after this one's model was compared with the latest version."""


# ---------------------------------------------------------------------------------------------
# File system access: plain os calls for local paths (no TensorFlow import), tf.io.gfile otherwise.


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _strip_file_scheme(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


class _LocalFS:
    sep = os.sep

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def exists(self, path):
        return os.path.exists(path)

    def isdir(self, path):
        return os.path.isdir(path)

    def makedirs(self, path):
        os.makedirs(path, exist_ok=True)

    def listdir(self, path) -> List[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def open(self, path, mode):
        return open(path, mode)

    def remove(self, path):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def rmtree(self, path):
        shutil.rmtree(path, ignore_errors=True)

    def rename(self, src, dst):
        os.replace(src, dst)

    def mtime(self, path) -> float:
        return os.stat(path).st_mtime

    def walk_files(self, root) -> List[str]:
        """Relative POSIX paths of every file under root."""
        out = []
        for folder, _, names in os.walk(root):
            for name in names:
                rel = os.path.relpath(os.path.join(folder, name), root)
                out.append(rel.replace(os.sep, "/"))
        return sorted(out)

    def fsync_file(self, f):
        f.flush()
        os.fsync(f.fileno())

    def fsync_dir(self, path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _GFileFS:
    sep = "/"

    def __init__(self):
        import tensorflow as tf  # only for remote destinations: keeps local pushes light

        self._gfile = tf.io.gfile
        self._errors = tf.errors

    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)

    def exists(self, path):
        return self._gfile.exists(path)

    def isdir(self, path):
        return self._gfile.isdir(path)

    def makedirs(self, path):
        self._gfile.makedirs(path)

    def listdir(self, path) -> List[str]:
        try:
            return [name.rstrip("/") for name in self._gfile.listdir(path)]
        except self._errors.NotFoundError:
            return []

    def open(self, path, mode):
        return self._gfile.GFile(path, mode)

    def remove(self, path):
        try:
            self._gfile.remove(path)
        except self._errors.NotFoundError:
            pass

    def rmtree(self, path):
        try:
            self._gfile.rmtree(path)
        except self._errors.NotFoundError:
            pass

    def rename(self, src, dst):
        self._gfile.rename(src, dst, overwrite=True)

    def mtime(self, path) -> float:
        return self._gfile.stat(path).mtime_nsec / 1e9

    def walk_files(self, root) -> List[str]:
        out = []
        root = root.rstrip("/")
        for folder, _, names in self._gfile.walk(root):
            folder = folder.rstrip("/")
            for name in names:
                rel = posixpath.relpath(posixpath.join(folder, name), root)
                out.append(rel)
        return sorted(out)

    def fsync_file(self, f):
        f.flush()

    def fsync_dir(self, path):
        pass


def filesystem(path: str):
    """The file system object for `path` (local, or `tf.io.gfile` for `gs://`, `s3://`, ...)."""
    return _LocalFS() if _is_local(path) else _GFileFS()


def _norm(destination: str) -> str:
    if not destination:
        raise StoreError("empty destination")
    destination = _strip_file_scheme(destination)
    if _is_local(destination):
        return os.path.abspath(destination)
    return destination.rstrip("/")


def version_uri(destination: str, version: int) -> str:
    destination = _norm(destination)
    return filesystem(destination).join(destination, str(version))


# ---------------------------------------------------------------------------------------------
# Reading


def _as_version(name: str) -> Optional[int]:
    name = name.rstrip("/")
    if name.isdigit() and name == str(int(name)) and int(name) > 0:
        return int(name)
    return None


def list_versions(destination: str) -> List[int]:
    """The complete versions in `destination`, ascending (folders `<n>/` that hold a manifest)."""
    destination = _norm(destination)
    fs = filesystem(destination)
    versions = []
    for name in fs.listdir(destination):
        version = _as_version(name)
        if version is not None and fs.exists(fs.join(destination, name.rstrip("/"), MANIFEST)):
            versions.append(version)
    return sorted(versions)


def latest(destination: str) -> Optional[Tuple[int, str]]:
    """(version, uri) of the newest complete version, or None when there is none."""
    versions = list_versions(destination)
    if not versions:
        return None
    return versions[-1], version_uri(destination, versions[-1])


def read_manifest(uri: str) -> dict:
    """The manifest of the version folder at `uri` (as returned by push_version or latest)."""
    uri = _norm(uri)
    fs = filesystem(uri)
    with fs.open(fs.join(uri, MANIFEST), "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def verify(uri: str) -> None:
    """Raises StoreError unless every file the manifest lists is present with its sha256."""
    manifest = read_manifest(uri)
    uri = _norm(uri)
    fs = filesystem(uri)
    for name, info in manifest["files"].items():
        digest, size = _hash(fs, fs.join(uri, *name.split("/")))
        if (digest, size) != (info["sha256"], info["bytes"]):
            raise StoreError(
                f"{uri}/{name}: sha256/size {digest}/{size} != manifest "
                f"{info['sha256']}/{info['bytes']}"
            )


def verified_files(uri: str, names, workdir: Optional[str] = None) -> Dict[str, str]:
    """Local paths of these files of the version at `uri`, each checked against the sha256 and
    size its manifest records (StoreError on any difference, or a name the manifest lacks).
    Files of a version on an object store are copied into `workdir` first; the checked bytes
    are the ones the caller then loads."""
    manifest = read_manifest(uri)
    uri = _norm(uri)
    fs = filesystem(uri)
    out = {}
    for name in names:
        recorded = manifest.get("files", {}).get(name)
        if recorded is None:
            raise StoreError(
                f"{uri}: the manifest lists no {name!r} "
                f"(files: {', '.join(sorted(manifest.get('files', {})))})"
            )
        source = fs.join(uri, *name.split("/"))
        if isinstance(fs, _LocalFS):
            path = source
        else:
            if workdir is None:
                raise StoreError(f"{uri}: a remote version needs a local folder to copy into")
            path = os.path.join(workdir, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with fs.open(source, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        digest, size = _hash(_LocalFS(), path)
        if (digest, size) != (recorded["sha256"], recorded["bytes"]):
            raise StoreError(
                f"{uri}/{name}: sha256 {digest[:16]}... ({size} bytes) does not match the "
                f"manifest's {recorded['sha256'][:16]}... ({recorded['bytes']} bytes): the file "
                "changed after it was pushed; refusing to load it"
            )
        out[name] = path
    return out


def is_version(uri: str) -> bool:
    """Whether `uri` is a version folder (it holds a manifest)."""
    uri = _norm(uri)
    fs = filesystem(uri)
    return fs.exists(fs.join(uri, MANIFEST))


def _hash(fs, path) -> Tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with fs.open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


# ---------------------------------------------------------------------------------------------
# Writing


def _check_name(name: str) -> str:
    parts = name.replace("\\", "/").split("/")
    if (
        not name
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or parts[0].startswith(".")
    ):
        raise StoreError(f"bad file name in the push: {name!r} (relative, no '..', no leading dot)")
    if name == MANIFEST:
        raise StoreError(f"{MANIFEST!r} is written by the store; do not push a file by that name")
    return "/".join(parts)


def _expand(files: Mapping[str, str]) -> Dict[str, str]:
    """{name in version: source path}, with folders expanded to their files (name/relpath)."""
    out: Dict[str, str] = {}
    for name, source in files.items():
        name = _check_name(name)
        source = _strip_file_scheme(source)
        fs = filesystem(source)
        if fs.isdir(source):
            inner = fs.walk_files(source)
            if not inner:
                raise StoreError(f"{source} (pushed as {name!r}) is an empty folder")
            for rel in inner:
                out[f"{name}/{rel}"] = fs.join(source, *rel.split("/"))
        elif fs.exists(source):
            out[name] = source
        else:
            raise StoreError(f"{source} (pushed as {name!r}) does not exist")
    names = sorted(out)
    for a, b in zip(names, names[1:]):
        if b.startswith(a + "/"):
            raise StoreError(f"{a!r} is both a file and a folder in the push")
    return out


def _copy_in(source: str, fs, target: str) -> Tuple[str, int]:
    src_fs = filesystem(source)
    h, n = hashlib.sha256(), 0
    with src_fs.open(source, "rb") as src, fs.open(target, "wb") as dst:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            dst.write(chunk)
        fs.fsync_file(dst)
    return h.hexdigest(), n


def _write_json(fs, path: str, content: dict) -> None:
    with fs.open(path, "wb") as f:
        f.write(json.dumps(content, indent=2, sort_keys=True).encode("utf-8"))
        fs.fsync_file(f)


def _numbers(fs, destination: str) -> List[int]:
    """Every number in use or claimed: numbered folders (complete or not) and claim markers."""
    found = [_as_version(n) for n in fs.listdir(destination)]
    found += [_as_version(n) for n in fs.listdir(fs.join(destination, CLAIMS_DIR))]
    return [n for n in found if n is not None]


def _next_number(fs, destination: str, at_least: int = 1) -> int:
    return max([at_least - 1] + _numbers(fs, destination)) + 1


def _moved(destination: str, expected: int, found) -> StoreMoved:
    return StoreMoved(
        f"{destination}: the push was for the version after {expected or 'none'} (the "
        f"baseline it was compared with), but {found} is there now"
    )


def _claim_by_rename(fs, destination, staging, write_manifest, expected=None) -> int:
    number = _next_number(fs, destination) if expected is None else expected + 1
    for _ in range(_MAX_CLAIM_ATTEMPTS):
        write_manifest(number)
        try:
            os.rename(staging, os.path.join(destination, str(number)))
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            if expected is not None:
                raise _moved(destination, expected, f"version {number}") from None
            number = _next_number(fs, destination, number + 1)
            continue
        fs.fsync_dir(destination)
        return number
    raise StoreError(f"no version claimed in {destination} after {_MAX_CLAIM_ATTEMPTS} tries")


def _claim_by_marker(fs, destination, token, expected=None) -> int:
    number = _next_number(fs, destination) if expected is None else expected + 1
    for _ in range(_MAX_CLAIM_ATTEMPTS):
        claims = fs.join(destination, CLAIMS_DIR, str(number))
        marker = fs.join(claims, token)
        fs.makedirs(claims)
        with fs.open(marker, "wb") as f:
            f.write(b"")
        others = [n for n in fs.listdir(claims) if n != token]
        if not others and not fs.exists(fs.join(destination, str(number))):
            return number
        fs.remove(marker)
        if expected is not None:
            raise _moved(destination, expected, f"a claim on or a folder for version {number}")
        number = _next_number(fs, destination, number + 1)
    raise StoreError(f"no version claimed in {destination} after {_MAX_CLAIM_ATTEMPTS} tries")


def _place_by_marker(fs, destination, staging, number, token, names, write_manifest) -> None:
    target = fs.join(destination, str(number))
    fs.makedirs(target)
    for name in names:
        parts = name.split("/")
        if len(parts) > 1:
            fs.makedirs(fs.join(target, *parts[:-1]))
        fs.rename(fs.join(staging, *parts), fs.join(target, *parts))
    write_manifest(number, fs.join(target, MANIFEST))  # last: the version now exists
    fs.rmtree(staging)
    fs.remove(fs.join(destination, CLAIMS_DIR, str(number), token))


def push_version(
    destination: str,
    files: Mapping[str, str],
    manifest: Mapping,
    *,
    claim: str = "auto",
    expected_latest: Optional[int] = None,
) -> Tuple[int, str]:
    """Copies `files` ({name in the version: source path or folder}) into the next version folder
    of `destination` and returns (version, uri of that folder).

    `manifest` is the caller's description of the model (model name, alpha, input size, label map,
    metrics, latency, pipeline run and ML Metadata ids ...); it is stored as is in the version's
    `manifest.json`, plus `format`, `version`, `uri`, `created` (UTC, ISO 8601) and `files`
    ({name: {"sha256", "bytes"}}). Sources may be local paths or any `tf.io.gfile` URI; a folder
    is pushed with its files under `name/`.

    `expected_latest`: push only as the version right after this one (0: into an empty store),
    and raise StoreMoved when any higher number is taken, complete or not: a push that was
    decided against version N never lands beside an N+1 it has not seen.

    `claim`: "rename" (atomic directory rename, the default for local paths), "marker" (the
    object-store protocol, the default for `gs://`, `s3://`, ...), or "auto". See the module
    docstring for what each guarantees.
    """
    destination = _norm(destination)
    fs = filesystem(destination)
    if claim == "auto":
        claim = "rename" if isinstance(fs, _LocalFS) else "marker"
    if claim not in ("rename", "marker"):
        raise StoreError(f"claim must be 'auto', 'rename' or 'marker', not {claim!r}")
    if claim == "rename" and not isinstance(fs, _LocalFS):
        raise StoreError(f"{destination} has no atomic folder rename: use claim='marker'")
    manifest = dict(manifest)
    clash = sorted(set(manifest) & set(RESERVED_KEYS))
    if clash:
        raise StoreError(f"manifest keys {clash} are written by the store")
    sources = _expand(files)
    if not sources:
        raise StoreError("nothing to push")

    fs.makedirs(destination)
    token = uuid.uuid4().hex
    staging = fs.join(destination, INCOMING_PREFIX + token)
    fs.makedirs(staging)
    recorded: Dict[str, dict] = {}
    try:
        for name in sorted(sources):
            parts = name.split("/")
            if len(parts) > 1:
                fs.makedirs(fs.join(staging, *parts[:-1]))
            digest, size = _copy_in(sources[name], fs, fs.join(staging, *parts))
            recorded[name] = {"sha256": digest, "bytes": size}
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

        def write_manifest(number: int, path: Optional[str] = None) -> None:
            content = dict(manifest)
            content.update(
                format=MANIFEST_FORMAT,
                version=number,
                created=created,
                uri=fs.join(destination, str(number)),
                files=recorded,
            )
            _write_json(fs, path or fs.join(staging, MANIFEST), content)

        if expected_latest is not None:
            taken = [n for n in _numbers(fs, destination) if n > expected_latest]
            if taken:
                raise _moved(destination, expected_latest, f"version {max(taken)}")
        if claim == "rename":
            number = _claim_by_rename(fs, destination, staging, write_manifest, expected_latest)
        else:
            number = _claim_by_marker(fs, destination, token, expected_latest)
            _place_by_marker(
                fs, destination, staging, number, token, sorted(recorded), write_manifest
            )
    except BaseException:
        # A failure we live through cleans up after itself; a killed process leaves the staging
        # folder behind for clean_stale().
        fs.rmtree(staging)
        raise
    return number, fs.join(destination, str(number))


def clean_stale(destination: str, older_than_s: float = 86400.0) -> List[str]:
    """Deletes what crashed pushes left behind and is older than `older_than_s` seconds: staging
    folders (`.incoming-*`), claim markers, and numbered folders without a manifest. Returns the
    deleted paths. Complete versions are never touched."""
    destination = _norm(destination)
    fs = filesystem(destination)
    now = time.time()
    removed = []

    def age(path: str) -> float:
        files = (
            [fs.join(path, *rel.split("/")) for rel in fs.walk_files(path)]
            if fs.isdir(path)
            else [path]
        )
        try:
            times = [fs.mtime(p) for p in files] or [fs.mtime(path)]
        except Exception:  # vanished meanwhile, or a prefix with no object of its own
            return 0.0
        return now - max(times)

    for name in fs.listdir(destination):
        path = fs.join(destination, name)
        version = _as_version(name)
        stale_version = version is not None and not fs.exists(fs.join(path, MANIFEST))
        if (name.startswith(INCOMING_PREFIX) or stale_version) and age(path) > older_than_s:
            fs.rmtree(path)
            removed.append(path)
    claims = fs.join(destination, CLAIMS_DIR)
    for number in fs.listdir(claims):
        for token in fs.listdir(fs.join(claims, number)):
            marker = fs.join(claims, number, token)
            if age(marker) > older_than_s:
                fs.remove(marker)
                removed.append(marker)
    return removed
