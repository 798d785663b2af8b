"""What the latest pipeline run did, read back from ML Metadata: each component's state (ran,
cached, failed) and where its outputs are, plus the data checks' findings."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


@dataclasses.dataclass
class ComponentRun:
    state: str
    outputs: Dict[str, List[str]]  # output key -> artifact URIs
    seconds: float = 0.0  # from the execution's creation to its last update in ML Metadata

    def uri(self, key: str) -> str:
        return self.outputs[key][0]


@dataclasses.dataclass
class RunSummary:
    run_id: str
    components: Dict[str, ComponentRun]

    def quarantine_summary(self) -> dict:
        with open(
            os.path.join(self.components["DetectionExampleGen"].uri("quarantine"), "summary.json")
        ) as f:
            return json.load(f)

    def anomalies(self) -> Dict[str, List[str]]:
        """Split -> '<feature>: <description>' for every anomaly ExampleValidator found."""
        from tensorflow_metadata.proto.v0 import anomalies_pb2

        found = {}
        root = self.components["ExampleValidator"].uri("anomalies")
        for split_dir in sorted(os.listdir(root)):
            path = os.path.join(root, split_dir, "SchemaDiff.pb")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    anomalies = anomalies_pb2.Anomalies.FromString(f.read())
                found[split_dir.replace("Split-", "")] = [
                    f"{name}: {info.description}" for name, info in anomalies.anomaly_info.items()
                ]
        return found

    def training_record(self) -> dict:
        """The Trainer's training.json: classes, settings, backbone weights, the validation mAP
        at every checkpoint and the exported (best) one."""
        path = os.path.join(self.components["Trainer"].uri("model_run"), "training.json")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def gate_report(self) -> dict:
        """ModelGate's gate.json: blessed, reasons, mAP, per-format TFLite figures."""
        with open(os.path.join(self.components["ModelGate"].uri("blessing"), "gate.json")) as f:
            return json.load(f)

    def push_record(self) -> dict:
        """LitedetPusher's push.json: pushed, version, where it went, registry version."""
        with open(
            os.path.join(self.components["LitedetPusher"].uri("pushed_model"), "push.json")
        ) as f:
            return json.load(f)


def latest_run(metadata_path: str) -> RunSummary:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError(f"{metadata_path}: no pipeline run recorded yet")
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    components = {}
    for execution in store.get_executions_by_context(run.id):
        node = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        name = node[0].rsplit(".", 1)[-1] if node else str(execution.id)
        outputs: Dict[str, List[str]] = {}
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else "output"
            outputs.setdefault(key, []).append(artifacts[event.artifact_id].uri)
        components[name] = ComponentRun(
            _STATES.get(execution.last_known_state, "unknown"),
            outputs,
            (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3,
        )
    return RunSummary(run.name, components)
