"""The baseline a candidate must not fall below: the model store's latest version.

What was pushed is what devices run, so that is what a new model is compared with, on every
orchestrator alike (an ML Metadata resolver would not run on the open-source Kubeflow backend,
and could pick a model the gate refused). The gate scores the baseline's SavedModel itself, on
the current evaluation split with the same scorer as the candidate, after checking every file
against the version's manifest.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from litedet.components.pusher import store

SAVED_MODEL_DIR = store.SAVED_MODEL_DIR


class BaselineError(RuntimeError):
    """The store could not be read or its latest version is unusable: the gate fails closed."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    version: int  # 0: the store is empty, the candidate is the first model
    uri: str = ""  # the version folder
    model_uri: str = ""  # the Trainer output it was pushed from (its manifest's lineage)

    @property
    def saved_model(self) -> str:
        return store.filesystem(self.uri).join(self.uri, SAVED_MODEL_DIR)


def latest_pushed(destination: str) -> Baseline:
    """The store's latest complete version, verified; Baseline(0) for an empty store."""
    try:
        newest = store.latest(destination)
    except Exception as error:  # any I/O failure: unreadable means unknown, not empty
        raise BaselineError(f"cannot list the model store {destination}: {error}") from error
    if newest is None:
        return Baseline(0)
    version, uri = newest
    try:
        manifest = store.read_manifest(uri)
        store.verify(uri)
    except Exception as error:
        raise BaselineError(f"version {version} at {uri} is unusable: {error}") from error
    if not any(name.startswith(SAVED_MODEL_DIR + "/") for name in manifest.get("files", {})):
        raise BaselineError(
            f"version {version} at {uri} has no {SAVED_MODEL_DIR}/ to score the candidate against"
        )
    source = manifest.get("source", {}).get("artifacts", {}).get("model", {})
    return Baseline(version, uri, source.get("uri", ""))


def store_state(destination: str) -> str:
    """A short description of the store's latest version ("empty", "3:<sha256 of its
    manifest>" or "unreadable"): part of the gate's cache key where the pipeline is built right
    before it runs, so a pushed version is never answered from the cache."""
    import hashlib
    import json

    try:
        newest = store.latest(destination)
        if newest is None:
            return "empty"
        manifest = json.dumps(store.read_manifest(newest[1]), sort_keys=True)
    except Exception:  # the gate itself reports why; here any failure just means "re-check"
        return "unreadable"
    return f"{newest[0]}:{hashlib.sha256(manifest.encode()).hexdigest()[:16]}"


def describe(baseline: Optional[Baseline]) -> dict:
    if baseline is None:
        return {"version": None}
    return dataclasses.asdict(baseline)
