"""LitedetPusher: the versioned store, its atomicity and concurrency, the TFX executor, and the
model registries through their official clients.

Real things only: real files and processes; real MLflow tracking servers on loopback, MLflow
2.22.5 and MLflow 3.17.2, each from its own Python 3.10 virtualenv (tests/client_venvs.py builds
them once under ${LITEDET_CACHE:-~/.cache/litedet}, about two minutes each), spoken to by the
project's MlflowClient (mlflow-skinny) and read back by each server's own MLflow client; and a
Kubeflow Model Registry REST server on loopback that checks every request the official client
(`model-registry`) sends against the registry's published OpenAPI document
(tests/model_registry_server.py): no Kubeflow Model Registry server can run here.

Not covered here: `gs://` / `s3://` destinations (no cloud storage is reachable from these
machines; the object-store claim protocol runs against a local folder with claim="marker" instead,
and test_gcs_destination runs only when LITEDET_TEST_GCS_DESTINATION names a bucket folder).
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from litedet.components.pusher import registry as registry_lib
from litedet.components.pusher import store
from tests.mlflow_server import closed_port, read_back, registered_versions, running_server
from tests.model_registry_server import ModelRegistryServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_NAME = "litedet-test"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_files(root, tag="a"):
    """A model-like set of files: a 'tflite' file, labels, and a folder."""
    os.makedirs(os.path.join(root, "saved", "variables"), exist_ok=True)
    files = {
        "model.tflite": os.path.join(root, "model.tflite"),
        "labels.txt": os.path.join(root, "labels.txt"),
        "saved_model": os.path.join(root, "saved"),
    }
    with open(files["model.tflite"], "wb") as f:
        f.write(os.urandom(200_000) + tag.encode())
    with open(files["labels.txt"], "w") as f:
        f.write("cat\ndog\n")
    with open(os.path.join(root, "saved", "saved_model.pb"), "wb") as f:
        f.write(b"pb" + tag.encode())
    with open(os.path.join(root, "saved", "variables", "variables.index"), "wb") as f:
        f.write(b"index")
    return files


def run_python(code, *args, timeout=60):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- the store ----------------------------------------------------------------------------------


def test_versions_increment_with_manifest_and_sha256s(tmp_path):
    files = make_files(str(tmp_path / "src"))
    dest = str(tmp_path / "store")
    caller = {
        "model_name": "litedet",
        "alpha": 0.35,
        "input_size": 320,
        "label_map": {"classes": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]},
        "metrics": {"COCOMeanAveragePrecision": 0.41},
        "latency_ms": {"f32": 3.8},
        "source": {"pipeline_run_id": "run-1", "execution_id": "7"},
    }

    results = [store.push_version(dest, files, caller) for _ in range(3)]

    assert [v for v, _ in results] == [1, 2, 3]
    assert [u for _, u in results] == [os.path.join(dest, str(v)) for v in (1, 2, 3)]
    assert store.list_versions(dest) == [1, 2, 3]
    assert store.latest(dest) == (3, os.path.join(dest, "3"))
    manifest = store.read_manifest(results[1][1])
    for key, value in caller.items():
        assert manifest[key] == value
    assert manifest["version"] == 2 and manifest["uri"] == results[1][1]
    assert manifest["format"] == store.MANIFEST_FORMAT and manifest["created"].endswith("+00:00")
    expected = {
        "model.tflite": files["model.tflite"],
        "labels.txt": files["labels.txt"],
        "saved_model/saved_model.pb": os.path.join(files["saved_model"], "saved_model.pb"),
        "saved_model/variables/variables.index": os.path.join(
            files["saved_model"], "variables", "variables.index"
        ),
    }
    assert manifest["files"] == {
        name: {"sha256": sha256(path), "bytes": os.path.getsize(path)}
        for name, path in expected.items()
    }
    for name in expected:  # the copies are byte-identical
        assert sha256(os.path.join(results[1][1], name)) == manifest["files"][name]["sha256"]
    store.verify(results[1][1])
    # Only the store's own entries in the destination: versions, no leftovers.
    assert sorted(os.listdir(dest)) == ["1", "2", "3"]

    with open(os.path.join(results[2][1], "model.tflite"), "ab") as f:
        f.write(b"tampered")
    with pytest.raises(store.StoreError, match="model.tflite"):
        store.verify(results[2][1])


def test_rejects_what_it_cannot_store_honestly(tmp_path):
    files = make_files(str(tmp_path / "src"))
    dest = str(tmp_path / "store")
    with pytest.raises(store.StoreError, match="written by the store"):
        store.push_version(dest, files, {"version": 9})
    with pytest.raises(store.StoreError, match="bad file name"):
        store.push_version(dest, {"../x": files["labels.txt"]}, {})
    with pytest.raises(store.StoreError, match="bad file name"):
        store.push_version(dest, {".incoming-x": files["labels.txt"]}, {})
    with pytest.raises(store.StoreError, match="does not exist"):
        store.push_version(dest, {"a": str(tmp_path / "missing")}, {})
    assert store.list_versions(dest) == []


def test_readers_ignore_dot_folders_and_numbers_without_manifest(tmp_path):
    dest = tmp_path / "store"
    (dest / ".incoming-deadbeef").mkdir(parents=True)
    (dest / ".incoming-deadbeef" / "model.tflite").write_bytes(b"half")
    (dest / "5").mkdir()  # a half-copied object-store version: no manifest
    (dest / "5" / "model.tflite").write_bytes(b"half")
    (dest / "notes").mkdir()
    (dest / "007").mkdir()
    assert store.list_versions(str(dest)) == []
    assert store.latest(str(dest)) is None
    version, _ = store.push_version(str(dest), make_files(str(tmp_path / "src")), {})
    assert version == 6  # numbers seen in use are never reused, complete or not


CRASH_BEFORE_RENAME = """
import os, sys
from litedet.components.pusher import store
def crash(*args, **kwargs):
    os._exit(17)  # the process dies: no cleanup, no finally
store._claim_by_rename = crash
store.push_version(sys.argv[1], {"model.tflite": sys.argv[2]}, {})
"""

CRASH_MID_MOVE = """
import os, sys
from litedet.components.pusher import store
real_rename = store._LocalFS.rename
moved = []
def rename(self, src, dst):
    if moved:
        os._exit(17)
    moved.append(dst)
    real_rename(self, src, dst)
store._LocalFS.rename = rename
store.push_version(sys.argv[1], {"a.tflite": sys.argv[2], "b.tflite": sys.argv[2]}, {},
                   claim="marker")
"""


def test_a_crash_before_the_rename_leaves_no_version(tmp_path):
    files = make_files(str(tmp_path / "src"))
    dest = str(tmp_path / "store")
    store.push_version(dest, files, {})

    result = run_python(CRASH_BEFORE_RENAME, dest, files["model.tflite"])

    assert result.returncode == 17, result.stderr
    stale = [n for n in os.listdir(dest) if n.startswith(store.INCOMING_PREFIX)]
    assert len(stale) == 1 and os.listdir(os.path.join(dest, stale[0])) == ["model.tflite"]
    assert store.list_versions(dest) == [1]  # the crashed push is invisible
    assert store.push_version(dest, files, {})[0] == 2  # and in nobody's way
    assert store.clean_stale(dest, older_than_s=3600) == []  # too young to be judged stale
    assert store.clean_stale(dest, older_than_s=0) == [os.path.join(dest, stale[0])]
    assert sorted(os.listdir(dest)) == ["1", "2"]
    store.verify(os.path.join(dest, "2"))


def test_a_crash_mid_move_on_an_object_store_leaves_no_version(tmp_path):
    """The object-store protocol (claim="marker", run on a local folder): a push that dies
    after claiming 2 and moving one file leaves 2/ without a manifest: not listed, not reused."""
    files = make_files(str(tmp_path / "src"))
    dest = str(tmp_path / "store")
    store.push_version(dest, files, {}, claim="marker")

    result = run_python(CRASH_MID_MOVE, dest, files["model.tflite"])

    assert result.returncode == 17, result.stderr
    assert os.listdir(os.path.join(dest, "2")) == ["a.tflite"]
    assert store.list_versions(dest) == [1]
    assert store.push_version(dest, files, {}, claim="marker")[0] == 3
    assert store.list_versions(dest) == [1, 3]
    removed = store.clean_stale(dest, older_than_s=0)
    assert os.path.join(dest, "2") in removed
    assert any(os.path.basename(p).startswith(store.INCOMING_PREFIX) for p in removed)
    assert sorted(n for n in os.listdir(dest) if not n.startswith(".")) == ["1", "3"]


def check_complete(dest, versions):
    for version in versions:
        uri = os.path.join(dest, str(version))
        manifest = store.read_manifest(uri)
        assert manifest["version"] == version
        store.verify(uri)  # every file there, with the sha256 the manifest says


@pytest.mark.parametrize("claim", ["rename", "marker"])
def test_concurrent_threads_get_distinct_complete_versions(tmp_path, claim):
    dest = str(tmp_path / "store")
    sources = [make_files(str(tmp_path / f"src{i}"), tag=str(i)) for i in range(8)]
    start = threading.Barrier(8)

    def push(i):
        start.wait()
        return [
            store.push_version(dest, sources[i], {"pusher": i}, claim=claim)[0] for _ in range(3)
        ]

    with ThreadPoolExecutor(8) as pool:
        got = [v for vs in pool.map(push, range(8)) for v in vs]

    assert len(got) == len(set(got)) == 24
    assert sorted(got) == store.list_versions(dest)
    if claim == "rename":
        assert sorted(got) == list(range(1, 25))  # atomic rename: no gaps either
    check_complete(dest, got)
    for version in got:  # each version holds the files of the push that claimed it
        manifest = store.read_manifest(os.path.join(dest, str(version)))
        i = manifest["pusher"]
        assert manifest["files"]["model.tflite"]["sha256"] == sha256(sources[i]["model.tflite"])


PUSH_MANY = """
import json, os, sys, time
from litedet.components.pusher import store
dest, files, claim, barrier = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
open(os.path.join(barrier, str(os.getpid())), "w").close()
while len(os.listdir(barrier)) < 2:  # both processes are up: go
    time.sleep(0.001)
print(json.dumps([store.push_version(dest, files, {"pid": os.getpid()}, claim=claim)[0]
                  for _ in range(10)]))
"""


@pytest.mark.parametrize("claim", ["rename", "marker"])
def test_two_processes_pushing_at_once_get_distinct_versions(tmp_path, claim):
    def race(attempt):
        dest = str(tmp_path / f"store{attempt}")
        barrier = tmp_path / f"barrier{attempt}"  # both start pushing after their imports
        barrier.mkdir()
        env = dict(os.environ, PYTHONPATH=REPO)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    PUSH_MANY,
                    dest,
                    json.dumps(make_files(str(tmp_path / f"src{i}"), tag=str(i))),
                    claim,
                    str(barrier),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
        first, second = (json.loads(out) for out, _ in outs)
        got = first + second
        assert len(set(got)) == 20, (first, second)
        assert sorted(got) == store.list_versions(dest)
        check_complete(dest, got)
        assert not [n for n in os.listdir(dest) if n.startswith(store.INCOMING_PREFIX)]
        # Did they really push at the same time? Then their versions interleave.
        return min(first) < max(second) and min(second) < max(first)

    # On a busy machine one process can be descheduled until the other is done: that run still
    # counts for distinctness, but the race is tried again to see the two overlap.
    assert any(race(attempt) for attempt in range(5)), "the two processes never overlapped"


def test_a_gfile_destination_uses_the_object_store_protocol(tmp_path):
    """Through tf.io.gfile (TensorFlow's in-memory `ram://` file system standing in for a
    bucket): no atomic rename, so marker claims, files moved one by one, manifest last."""
    import uuid

    dest = f"ram://litedet-{uuid.uuid4().hex}/models"
    sources = [make_files(str(tmp_path / f"src{i}"), tag=str(i)) for i in range(4)]
    with pytest.raises(store.StoreError, match="no atomic folder rename"):
        store.push_version(dest, sources[0], {}, claim="rename")
    with ThreadPoolExecutor(4) as pool:
        got = [
            v
            for vs in pool.map(
                lambda i: [
                    store.push_version(dest, sources[i], {"pusher": i})[0] for _ in range(2)
                ],
                range(4),
            )
            for v in vs
        ]
    assert len(set(got)) == 8 and sorted(got) == store.list_versions(dest)
    for version in got:
        uri = store.version_uri(dest, version)
        assert uri == f"{dest}/{version}"
        store.verify(uri)
        manifest = store.read_manifest(uri)
        assert manifest["version"] == version
        assert manifest["files"]["model.tflite"]["sha256"] == sha256(
            sources[manifest["pusher"]]["model.tflite"]
        )
    import tensorflow as tf

    assert not [n for n in tf.io.gfile.listdir(dest) if n.startswith(store.INCOMING_PREFIX)]


@pytest.mark.skipif(
    not os.environ.get("LITEDET_TEST_GCS_DESTINATION"),
    reason="no cloud storage reachable here: set LITEDET_TEST_GCS_DESTINATION="
    "gs://bucket/folder (or s3://...) to run against a real bucket",
)
def test_gcs_destination(tmp_path):
    import tensorflow as tf

    dest = os.environ["LITEDET_TEST_GCS_DESTINATION"].rstrip("/") + f"/{os.getpid()}-{time.time()}"
    files = make_files(str(tmp_path / "src"))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: store.push_version(dest, files, {})[0], range(4)))
    try:
        assert len(set(got)) == 4 and sorted(got) == store.list_versions(dest)
        for version in got:
            store.verify(store.version_uri(dest, version))
    finally:
        tf.io.gfile.rmtree(dest)


# --- registries ---------------------------------------------------------------------------------


def test_make_registry_from_config():
    assert isinstance(registry_lib.make_registry({"kind": "none"}), registry_lib.NoRegistry)
    assert isinstance(registry_lib.make_registry(None), registry_lib.NoRegistry)
    mlflow = registry_lib.make_registry(
        {"kind": "mlflow", "tracking_uri": "http://h:5000", "retries": 2}, "m"
    )
    assert isinstance(mlflow, registry_lib.MlflowRegistry) and mlflow.model_name == "m"
    assert isinstance(mlflow, registry_lib.ModelRegistry)
    kubeflow = registry_lib.make_registry(
        {"kind": "kubeflow", "server_address": "http://mr", "port": 8080, "author": "ci"}
    )
    assert isinstance(kubeflow, registry_lib.KubeflowModelRegistry)
    with pytest.raises(ValueError, match="unknown registry kind"):
        registry_lib.make_registry({"kind": "sagemaker"})
    with pytest.raises(TypeError):
        registry_lib.make_registry({"kind": "mlflow", "tracking_uri": "http://h", "typo": 1})


@pytest.fixture(scope="module", params=["mlflow", "mlflow3"])
def any_mlflow(request, tmp_path_factory):
    """Each real MLflow server in turn: 2.22.5 (the session's, tests/conftest.py) and 3.17.2."""
    if request.param == "mlflow":
        yield request.getfixturevalue("mlflow_server")
        return
    with running_server(str(tmp_path_factory.mktemp("mlflow3")), "mlflow3") as server:
        assert server["version"].startswith("3."), server["version"]
        yield server


def test_model_artifacts_say_what_each_file_is():
    """The SavedModel in TensorFlow Serving's layout is the server artifact; TFLite files are
    device artifacts, never servable; a version without the layout has a SavedModel no server
    is told it can load."""
    files = {
        "serving/1/saved_model.pb": {"bytes": 10},
        "serving/1/variables/variables.index": {"bytes": 5},
        "saved_model/saved_model.pb": {"bytes": 10},
        "model_int8.tflite": {"bytes": 7, "sha256": "ab"},
        "model_float32.tflite": {"bytes": 9, "sha256": "cd"},
        "labels.txt": {"bytes": 3},
    }
    artifacts = registry_lib.model_artifacts({"files": files, "ship_format": "int8"})
    assert [(a["path"], a["format"], a["role"], a["servable"]) for a in artifacts] == [
        ("serving", "tensorflow", "server", "kserve-tensorflow-serving"),
        ("model_float32.tflite", "tflite", "device", ""),
        ("model_int8.tflite", "tflite", "device", ""),
    ]
    assert artifacts[0]["bytes"] == 15
    assert [a.get("shipped") for a in artifacts[1:]] == [False, True]
    older = registry_lib.model_artifacts({"files": {"saved_model/saved_model.pb": {"bytes": 1}}})
    assert [(a["path"], a["servable"]) for a in older] == [("saved_model", "")]


def test_mlflow_registers_with_artifacts_in_a_directly_written_location(tmp_path, any_mlflow):
    """An experiment whose artifact location is a path this process reaches (as with
    `--default-artifact-root DIR`): MLflow's client writes the files there, not through the
    server."""
    dest = str(tmp_path / "store")
    version, uri = store.push_version(
        dest, make_files(str(tmp_path / "src")), {"alpha": 0.5, "metrics": {"mAP": 0.3}}
    )
    registry = registry_lib.MlflowRegistry(
        any_mlflow["url"],
        MODEL_NAME + "-direct",
        experiment_name="direct",
        artifact_location=str(tmp_path / "mlruns"),
        retries=1,
        backoff_s=0.01,
    )

    registered = registry.register("", uri, store.read_manifest(uri))

    seen = read_back(any_mlflow, MODEL_NAME + "-direct", registered)
    assert seen["artifact_uri"].startswith(str(tmp_path / "mlruns"))
    assert seen["source"] == f"runs:/{seen['run_id']}/model"
    manifest = store.read_manifest(uri)
    assert {k: v for k, v in seen["files"].items() if k != "manifest.json"} == {
        name: info["sha256"] for name, info in manifest["files"].items()
    }
    assert seen["tags"]["litedet.store_version"] == str(version)
    assert seen["metrics"] == {"mAP": pytest.approx(0.3)}


def litedet_register(*args, env=None, timeout=180):
    """The `litedet` command, as a user runs it (a subprocess, from the repository root)."""
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "litedet"), "register", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )


def write_config(tmp_path, destination, registry, model_name):
    import yaml

    path = tmp_path / "litedet.yaml"
    path.write_text(
        yaml.safe_dump(
            {"push": {"destination": destination, "registry": registry, "model_name": model_name}}
        )
    )
    return str(path)


def test_litedet_register_registers_a_stored_version(tmp_path, any_mlflow):
    """The recovery the RegistryError message names, through the command line: `litedet register
    VERSION --config FILE` registers a version already in the configured store, once; a second
    run finds it registered; a version the store does not have is a one-line error."""
    dest = str(tmp_path / "store")
    store.push_version(dest, make_files(str(tmp_path / "src"), tag="1"), {})
    _, uri = store.push_version(dest, make_files(str(tmp_path / "src2"), tag="2"), {"alpha": 0.75})
    name = MODEL_NAME + "-later"
    config = write_config(
        tmp_path,
        dest,
        {"kind": "mlflow", "tracking_uri": any_mlflow["url"], "experiment_name": "later"},
        name,
    )

    first = litedet_register("2", "--config", config)
    again = litedet_register("2", "--config", config)
    missing = litedet_register("7", "--config", config)

    assert first.returncode == 0, first.stderr[-3000:]
    assert (
        first.stdout.strip().splitlines()[-1]
        == f"Registered {name} store version 2 ({uri}) in mlflow: version 1"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    assert registered_versions(any_mlflow, name) == [1]
    seen = read_back(any_mlflow, name, 1)
    assert seen["tags"]["litedet.store_uri"] == uri
    assert seen["params"]["alpha"] == "0.75"
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"litedet: error: push.destination {dest} has no version 7 (it has 1, 2); give one of "
        "those, or the --config whose store holds it"
    ]


def test_litedet_register_reads_a_version_from_an_s3_store(tmp_path, s3_server, mlflow_server):
    """The store on a real S3-compatible server (moto, on loopback): the command finds the
    version there, checks its files and registers it, its files read back from MLflow."""
    from litedet.components import object_storage as storage

    storage.configure()
    dest = f"s3://{s3_server['bucket']}/register-test/models"
    _, uri = store.push_version(dest, make_files(str(tmp_path / "src")), {"alpha": 0.5})
    name = MODEL_NAME + "-s3"
    config = write_config(
        tmp_path,
        dest,
        {"kind": "mlflow", "tracking_uri": mlflow_server["url"], "experiment_name": "s3"},
        name,
    )

    result = litedet_register("1", "--config", config)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].endswith(f"({uri}) in mlflow: version 1")
    seen = read_back(mlflow_server, name, 1)
    assert seen["tags"]["litedet.store_uri"] == uri == f"{dest}/1"
    manifest = store.read_manifest(uri)
    assert {k: v for k, v in seen["files"].items() if k != "manifest.json"} == {
        file: info["sha256"] for file, info in manifest["files"].items()
    }


def test_litedet_register_without_a_registry_says_which_setting(tmp_path):
    dest = str(tmp_path / "store")
    store.push_version(dest, make_files(str(tmp_path / "src")), {})
    config = write_config(tmp_path, dest, {"kind": "none"}, MODEL_NAME)
    result = litedet_register("1", "--config", config)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "litedet: error: push.registry: kind is 'none', so there is no registry to register "
        'version 1 in; set push.registry (e.g. {"kind": "mlflow", "tracking_uri": '
        '"https://..."}) in the --config file'
    ]


def test_mlflow_down_files_stay_in_the_store_and_the_step_fails_clearly(tmp_path, caplog):
    """The whole executor, with the registry on a closed port: the version is in the store,
    the calls were retried with backoff, and the step fails saying where the files are and
    which command registers them."""
    inputs, _ = executor_inputs(tmp_path)
    outputs = pushed_output(tmp_path)
    port = closed_port()
    params = exec_params(
        tmp_path,
        registry={
            "kind": "mlflow",
            "retries": 2,
            "backoff_s": 0.01,
            "tracking_uri": f"http://127.0.0.1:{port}",
        },
    )
    from litedet.components.pusher import executor

    with caplog.at_level(logging.WARNING, logger=registry_lib.__name__):
        with pytest.raises(registry_lib.RegistryError) as failure:
            executor.Executor().Do(inputs, outputs, params)

    uri = os.path.join(params["destination"], "1")
    assert store.list_versions(params["destination"]) == [1]
    store.verify(uri)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(
        f"MLflow registry at http://127.0.0.1:{port} (push.registry.tracking_uri): "
    )
    # The first call: is this store version registered already (registration is idempotent)?
    assert "search_model_versions failed after 3 attempt(s)" in message
    assert "Connection refused" in message
    assert f"already in the store at {uri}" in message
    assert "`litedet register 1 --config YOUR_CONFIG`" in message
    assert failure.value.attempts == 3 and failure.value.version_uri == uri
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2


def test_registering_one_store_version_twice_reuses_the_registry_version(tmp_path, any_mlflow):
    """Registration is idempotent on the store URI (the version's `litedet.store_uri` tag): a
    second register() of the same version finds it, and creates no run and no version."""
    name = MODEL_NAME + "-twice"
    _, uri = store.push_version(str(tmp_path / "store"), make_files(str(tmp_path / "src")), {})
    registry = registry_lib.MlflowRegistry(any_mlflow["url"], name, experiment_name="twice")

    first = registry.register(name, uri, store.read_manifest(uri))
    first_run = registry.last_run_id
    second = registry.register(name, uri, store.read_manifest(uri))

    assert first == second == "1"
    assert registry.last_run_id == first_run  # no second run either
    assert registered_versions(any_mlflow, name) == [1]


def test_a_retry_registers_what_a_failed_registration_left_in_the_store(tmp_path, any_mlflow):
    """Store and registry stay in step: the first push lands in the store but the registry is
    down (the step fails); the same pusher run again on the same model finds the version already
    pushed and registers it, once; a third run changes nothing."""
    from litedet.components.pusher import executor

    name = MODEL_NAME + "-retry"
    inputs, _ = executor_inputs(tmp_path)
    registry = {"kind": "mlflow", "experiment_name": "retry", "retries": 0}
    down = dict(
        exec_params(tmp_path, dict(registry, tracking_uri=f"http://127.0.0.1:{closed_port()}")),
        model_name=name,
    )
    with pytest.raises(registry_lib.RegistryError):
        executor.Executor().Do(inputs, pushed_output(tmp_path / "first"), down)
    uri = os.path.join(down["destination"], "1")
    assert store.list_versions(down["destination"]) == [1]
    assert registered_versions(any_mlflow, name) == []

    up = dict(down, registry=json.dumps(dict(registry, tracking_uri=any_mlflow["url"])))
    for attempt in ("second", "third"):
        outputs = pushed_output(tmp_path / attempt)
        executor.Executor().Do(inputs, outputs, up)

        pushed = outputs["pushed_model"][0]
        assert pushed.get_int_custom_property("pushed") == 0  # nothing new in the store
        assert pushed.get_int_custom_property("pushed_version") == 1
        assert pushed.get_int_custom_property("registered") == 1, attempt
        assert pushed.get_string_custom_property("registry_kind") == "mlflow"
        assert pushed.get_string_custom_property("registry_version") == "1"
        with open(os.path.join(pushed.uri, "push.json")) as f:
            record = json.load(f)
        assert record["registered"] == 1 and record["pushed_destination"] == uri
        assert registered_versions(any_mlflow, name) == [1], attempt
    assert store.list_versions(down["destination"]) == [1]
    assert read_back(any_mlflow, name, 1)["tags"]["litedet.store_uri"] == uri


# --- the Kubeflow Model Registry ------------------------------------------------------------


KF_TOKEN = "kubeflow-sa-token"


def kubeflow_registry(server, **kwargs):
    return registry_lib.KubeflowModelRegistry(
        server.address,
        server.port,
        author="ci",
        is_secure=False,
        user_token=KF_TOKEN,
        allow_insecure_http=True,  # a loopback registry
        **dict({"retries": 1, "backoff_s": 0.01}, **kwargs),
    )


def as_kubeflow_sees_it(server, name):
    """{version name: (version custom properties, {artifact name: artifact})} from the server's
    state: what a reader of the registry finds."""
    state = server.state
    (model,) = [m for m in state.models.values() if m["name"] == name]
    out = {}
    for version in state.versions.values():
        if version["registeredModelId"] != model["id"]:
            continue
        artifacts = {
            state.artifacts[i]["name"]: state.artifacts[i]
            for i in state.version_artifacts[version["id"]]
        }
        properties = {
            key: next(v for k, v in value.items() if k.endswith("_value"))
            for key, value in (version.get("customProperties") or {}).items()
        }
        out[version["name"]] = (properties, artifacts)
    return out


def test_the_loopback_registry_refuses_what_its_openapi_document_refuses():
    """The test server is strict where the real one is: an unknown field, a wrong type, a
    missing required field, an undeclared query parameter, an unknown path are refused (400/404)
    and recorded; a well-formed request is served and answered per the document."""
    with ModelRegistryServer() as server:
        base = f"{server.address}:{server.port}/api/model_registry/v1alpha3"
        post = lambda body: requests.post(base + "/registered_models", json=body, timeout=10)
        assert post({"name": "m", "owner": "ci"}).status_code == 201
        assert post({"name": "m"}).status_code == 409
        assert post({"name": "n", "colour": "red"}).status_code == 400
        assert post({"name": 7}).status_code == 400
        assert post({"owner": "ci"}).status_code == 400
        assert post({"name": "n", "state": "GONE"}).status_code == 400
        version = {
            "name": "1",
            "registeredModelId": "1",
            "customProperties": {"a": {"metadataType": "MetadataIntValue", "int_value": 3}},
        }
        assert requests.post(base + "/model_versions", json=version, timeout=10).status_code == 400
        assert (
            requests.get(base + "/registered_model", params={"nam": "m"}, timeout=10).status_code
            == 400
        )
        assert requests.get(base + "/registered_models/1/versionz", timeout=10).status_code == 404
        found = requests.get(base + "/registered_model", params={"name": "m"}, timeout=10)
        assert found.status_code == 200 and found.json()["name"] == "m"
        assert (
            requests.get(base + "/registered_model", params={"name": "x"}, timeout=10).status_code
            == 404
        )
    reasons = [reason for _, _, reason in server.refused]
    assert len(reasons) == 7, reasons
    assert 'unknown field "colour"' in reasons[0]
    assert "expected a string" in reasons[1] and "required field 'name'" in reasons[2]
    assert "'GONE' is not one of" in reasons[3]
    assert "int_value: expected a string" in reasons[4]  # int64 travels as a string


def test_kubeflow_registers_the_savedmodel_for_servers_and_the_tflite_files_for_devices(tmp_path):
    """The official client against the validating loopback registry: one registered model, a
    version named after the store version with the metrics, gate verdict and lineage, the
    SavedModel (TensorFlow Serving layout) as the `tensorflow` server artifact and each TFLite
    file as a `tflite` device artifact. Every request matched the OpenAPI document and carried
    the token. Registering again changes nothing; a new store version is a new version."""
    manifest_extra = {
        "alpha": 0.35,
        "ship_format": "int8",
        "metrics": {"COCOMeanAveragePrecision": 0.41, "map/cat": 0.5},
        "gate": {"blessed": True, "reasons": [], "baseline": {"version": 3}, "ship_format": "int8"},
        "source": {
            "pipeline_name": "litedet",
            "pipeline_run_id": "20261202-010203",
            "data_fingerprint": "sha256:abc",
            "artifacts": {"model": {"id": 101, "uri": "/p/Trainer/model/7"}},
        },
    }
    root = tmp_path / "src"
    files = make_files(str(root))
    files = {
        "model_int8.tflite": files["model.tflite"],
        "model_float32.tflite": files["model.tflite"],
        "labels.txt": files["labels.txt"],
        "saved_model": files["saved_model"],
        "serving/1": files["saved_model"],
    }
    dest = str(tmp_path / "store")
    _, uri = store.push_version(dest, files, manifest_extra)
    manifest = store.read_manifest(uri)

    with ModelRegistryServer(token=KF_TOKEN) as server:
        registered = kubeflow_registry(server).register(MODEL_NAME, uri, manifest)
        again = kubeflow_registry(server).register(MODEL_NAME, uri, manifest)
        _, uri2 = store.push_version(dest, files, manifest_extra)
        newer = kubeflow_registry(server).register(MODEL_NAME, uri2, store.read_manifest(uri2))

    assert server.refused == []
    assert {auth for *_, auth in server.requests} == {f"Bearer {KF_TOKEN}"}
    assert registered == again != newer
    seen = as_kubeflow_sees_it(server, MODEL_NAME)
    assert sorted(seen) == ["1", "2"]
    properties, artifacts = seen["1"]
    assert server.state.versions[registered]["name"] == "1"
    assert properties["litedet.store_uri"] == uri
    assert properties["litedet.store_version"] == "1"
    assert properties["COCOMeanAveragePrecision"] == pytest.approx(0.41)
    assert properties["map/cat"] == pytest.approx(0.5)
    assert properties["alpha"] == "0.35" and properties["ship_format"] == "int8"
    assert properties["gate.blessed"] == "true" and properties["gate.baseline_version"] == "3"
    assert properties["lineage.pipeline_run_id"] == "20261202-010203"
    assert properties["lineage.data_fingerprint"] == "sha256:abc"
    assert properties["lineage.artifact.model.id"] == "101"
    assert sorted(artifacts) == [MODEL_NAME, "model_float32.tflite", "model_int8.tflite"]
    server_artifact = artifacts[MODEL_NAME]
    assert server_artifact["uri"] == f"{uri}/serving"
    assert (server_artifact["modelFormatName"], server_artifact["modelFormatVersion"]) == (
        "tensorflow",
        "2",
    )
    assert os.path.exists(os.path.join(uri, "serving", "1", "saved_model.pb"))
    for name in ("model_float32.tflite", "model_int8.tflite"):
        device = artifacts[name]
        assert device["uri"] == f"{uri}/{name}"
        assert device["modelFormatName"] == "tflite"
        props = {
            k: next(iter(v for kk, v in p.items() if kk.endswith("_value")))
            for k, p in device["customProperties"].items()
        }
        assert props["litedet.role"] == "device" and props["litedet.servable"] is False
        assert props["litedet.sha256"] == manifest["files"][name]["sha256"]
        assert props["litedet.shipped"] is (name == "model_int8.tflite")
        assert "not servable by KServe" in device["description"]
    assert seen["2"][1][MODEL_NAME]["uri"] == f"{uri2}/serving"


def test_kubeflow_completes_a_version_a_failed_registration_left_half_done(tmp_path):
    """The registry fails (503) on the first device artifact: the step fails naming the call
    and the recovery command; registering again adds what is missing, once."""
    dest = str(tmp_path / "store")
    src = make_files(str(tmp_path / "src"))
    _, uri = store.push_version(
        dest,
        {"model_int8.tflite": src["model.tflite"], "serving/1": src["saved_model"]},
        {},
    )
    manifest = store.read_manifest(uri)
    with ModelRegistryServer(token=KF_TOKEN) as server:
        registry = kubeflow_registry(server, retries=0)
        registry.client()  # connected
        calls = len(server.requests)
        # connect is done; then: find model, find version, register (4 calls), list artifacts
        original = server.state.handle

        def failing(method, template, params, query, body):
            if (
                method == "POST"
                and template.endswith("/model_versions/{modelversionId}/artifacts")
                and body.get("name") == "model_int8.tflite"
            ):
                from tests.model_registry_server import Refused

                raise Refused(503, "unavailable")
            return original(method, template, params, query, body)

        server.state.handle = failing
        with pytest.raises(registry_lib.RegistryError) as failure:
            registry.register(MODEL_NAME, uri, manifest)
        server.state.handle = original
        assert len(server.requests) > calls
        again = kubeflow_registry(server).register(MODEL_NAME, uri, manifest)
        third = kubeflow_registry(server).register(MODEL_NAME, uri, manifest)

    message = str(failure.value)
    assert "upsert_model_version_artifact failed after 1 attempt(s)" in message
    assert "`litedet register 1 --config YOUR_CONFIG`" in message and "\n" not in message
    assert again == third
    _, artifacts = as_kubeflow_sees_it(server, MODEL_NAME)["1"]
    assert sorted(artifacts) == [MODEL_NAME, "model_int8.tflite"]
    assert server.refused == []


def test_kubeflow_refuses_a_version_name_that_points_at_another_store(tmp_path):
    src = make_files(str(tmp_path / "src"))
    files = {"model_int8.tflite": src["model.tflite"], "serving/1": src["saved_model"]}
    _, one = store.push_version(str(tmp_path / "a"), files, {})
    _, other = store.push_version(str(tmp_path / "b"), files, {})
    with ModelRegistryServer(token=KF_TOKEN) as server:
        kubeflow_registry(server).register(MODEL_NAME, one, store.read_manifest(one))
        with pytest.raises(registry_lib.RegistryError, match="two stores pushing under one model"):
            kubeflow_registry(server).register(MODEL_NAME, other, store.read_manifest(other))
    assert server.refused == []


def test_kubeflow_registry_down_fails_clearly(tmp_path):
    dest = str(tmp_path / "store")
    _, uri = store.push_version(dest, make_files(str(tmp_path / "src")), {})
    registry = registry_lib.KubeflowModelRegistry(
        "http://127.0.0.1",
        closed_port(),
        author="ci",
        is_secure=False,
        user_token="t",
        allow_insecure_http=True,
        retries=1,
        backoff_s=0.01,
    )
    with pytest.raises(registry_lib.RegistryError) as failure:
        registry.register(MODEL_NAME, uri, store.read_manifest(uri))
    message = str(failure.value)
    assert message.startswith(
        f"Kubeflow Model Registry at http://127.0.0.1:{registry.port} "
        "(push.registry.server_address, port): connect failed after 2 attempt(s)"
    )
    assert f"already in the store at {uri}" in message and "litedet register 1" in message


# --- the TFX component --------------------------------------------------------------------------


def write_tfma_metrics(uri):
    """A real TFMA metrics file, as the Evaluator writes it: the overall slice (candidate and
    baseline models, a diff) and one feature slice."""
    import tensorflow as tf
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2 as pb

    overall = pb.MetricsForSlice()
    for model, name, value, diff in [
        ("candidate", "COCOMeanAveragePrecision", 0.41, False),
        ("candidate", "COCOMeanAverageRecall", 0.52, False),
        ("baseline", "COCOMeanAveragePrecision", 0.30, False),
        ("candidate", "COCOMeanAveragePrecision", 0.11, True),
    ]:
        item = overall.metric_keys_and_values.add()
        item.key.name, item.key.model_name, item.key.is_diff = name, model, diff
        item.value.double_value.value = value
    sliced = pb.MetricsForSlice()
    sliced.slice_key.single_slice_keys.add(column="size", bytes_value=b"small")
    item = sliced.metric_keys_and_values.add()
    item.key.name, item.key.model_name = "COCOMeanAveragePrecision", "candidate"
    item.value.double_value.value = 0.05
    tf.io.gfile.makedirs(uri)
    with tf.io.TFRecordWriter(os.path.join(uri, "metrics-00000-of-00001.tfrecord")) as w:
        w.write(overall.SerializeToString())
        w.write(sliced.SerializeToString())


def tiny_models(root):
    """A real (tiny) SavedModel in the Trainer's layout and its TFLite conversion."""
    import tensorflow as tf

    class Scale(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def __call__(self, x):
            return {"y": x * 2.0}

    module = Scale()
    serving = os.path.join(root, "model", "Format-Serving")
    tf.saved_model.save(module, serving)
    tflite_dir = os.path.join(root, "tflite")
    os.makedirs(tflite_dir)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module
    )
    with open(os.path.join(tflite_dir, "model_float32.tflite"), "wb") as f:
        f.write(converter.convert())
    return os.path.join(root, "model"), tflite_dir


def write_tflite_step_files(tflite_dir):
    """The rest of the TFLite step's layout (components/artifacts.py, TFLiteModels): labels.txt (the
    same bytes as the label map's) and conversion.json."""
    size = os.path.getsize(os.path.join(tflite_dir, "model_float32.tflite"))
    with open(os.path.join(tflite_dir, "labels.txt"), "w") as f:
        f.write("cat\ndog\n")
    with open(os.path.join(tflite_dir, "conversion.json"), "w") as f:
        json.dump(
            {
                "formats": ["float32"],
                "files": {"float32": "model_float32.tflite"},
                "sizes_bytes": {"float32": size},
                "input_size": 320,
                "labels": ["cat", "dog"],
                "max_detections": 100,
            },
            f,
        )
    return size


GATE_REPORT = {  # the parts of ModelGate's gate.json the pusher reads (evaluation/executor.py)
    "blessed": True,
    "reasons": [],
    "map50": 0.41,
    "map": 0.3,
    "map75": 0.25,
    "ap_by_size": {"small": 0.1, "medium": 0.2, "large": None},
    "map_per_class": {"cat": 0.31, "dog": 0.29},
    "baseline": {"version": None},
    "ship_format": "float32",
    "formats": {"saved_model": {"map50": 0.41}, "float32": {"map50": 0.4, "latency_ms": 3.5}},
}


def executor_inputs(tmp_path, blessed=1, with_models=False, gate=False):
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.artifacts import TFLiteModels

    root = str(tmp_path / "artifacts")
    if with_models:
        model_uri, tflite_uri = tiny_models(root)
    else:
        model_uri, tflite_uri = os.path.join(root, "model"), os.path.join(root, "tflite")
        os.makedirs(tflite_uri)
        # The store takes the SavedModel's files as they are: stand-ins do for these tests.
        os.makedirs(os.path.join(model_uri, "Format-Serving", "variables"))
        with open(os.path.join(model_uri, "Format-Serving", "saved_model.pb"), "wb") as f:
            f.write(os.urandom(200))
        with open(os.path.join(tflite_uri, "model_float32.tflite"), "wb") as f:
            f.write(b"TFL3" + os.urandom(1000))
    size = write_tflite_step_files(tflite_uri)
    model = standard_artifacts.Model()
    model.uri, model.id = model_uri, 101
    tflite = TFLiteModels()
    tflite.uri, tflite.id = tflite_uri, 102
    tflite.set_string_custom_property("formats", "float32")  # as the TFLite step sets them
    tflite.set_int_custom_property("size_bytes_float32", size)
    tflite.set_float_custom_property("latency_ms_float32", 3.8)  # e.g. from a benchmark step
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri, blessing.id = os.path.join(root, "blessing"), 103
    blessing.set_int_custom_property("blessed", blessed)
    if gate:
        os.makedirs(blessing.uri)
        with open(os.path.join(blessing.uri, "gate.json"), "w") as f:
            json.dump(GATE_REPORT, f)
    label_map = artifacts.LabelMap()
    label_map.uri, label_map.id = os.path.join(root, "label_map"), 104
    # As the ExampleGen records it (example_gen/executor.py): the lineage's data fingerprint.
    label_map.set_string_custom_property("data_fingerprint", "sha256:5ca1ab1e")
    os.makedirs(label_map.uri)
    classes = {
        "classes": [
            {"id": 1, "name": "cat", "source_key": "3"},
            {"id": 2, "name": "dog", "source_key": "7"},
        ]
    }
    with open(os.path.join(label_map.uri, "label_map.json"), "w") as f:
        json.dump(classes, f)
    with open(os.path.join(label_map.uri, "labels.txt"), "w") as f:
        f.write("cat\ndog\n")
    with open(os.path.join(label_map.uri, "label_map.pbtxt"), "w") as f:
        f.write('item {\n  id: 1\n  name: "cat"\n}\nitem {\n  id: 2\n  name: "dog"\n}\n')
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri, evaluation.id = os.path.join(root, "evaluation"), 105
    write_tfma_metrics(evaluation.uri)
    inputs = {
        "model": [model],
        "tflite_models": [tflite],
        "model_blessing": [blessing],
        "label_map": [label_map],
        "evaluation": [evaluation],
    }
    return inputs, classes


def pushed_output(tmp_path):
    from tfx.types import standard_artifacts

    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed_model")
    return {"pushed_model": [pushed]}


def exec_params(tmp_path, registry=None):
    return {
        "destination": str(tmp_path / "store"),
        "model_name": MODEL_NAME,
        "registry": json.dumps(registry or {"kind": "none"}),
        "extra_manifest": "{}",
    }


def test_not_blessed_pushes_nothing_and_succeeds(tmp_path):
    from litedet.components.pusher import executor

    inputs, _ = executor_inputs(tmp_path, blessed=0)
    outputs = pushed_output(tmp_path)
    # A registry that would fail at once if it were called.
    params = exec_params(
        tmp_path,
        registry={
            "kind": "mlflow",
            "retries": 0,
            "tracking_uri": f"http://127.0.0.1:{closed_port()}",
        },
    )
    executor.Executor().Do(inputs, outputs, params)

    pushed = outputs["pushed_model"][0]
    assert pushed.get_int_custom_property("pushed") == 0
    assert "not blessed" in pushed.get_string_custom_property("push_reason")
    assert pushed.get_string_custom_property("pushed_destination") == ""
    assert not os.path.exists(params["destination"])
    with open(os.path.join(pushed.uri, "push.json")) as f:
        assert json.load(f)["pushed"] == 0


def test_labels_that_disagree_fail_before_anything_is_pushed(tmp_path):
    from litedet.components.pusher import executor

    inputs, _ = executor_inputs(tmp_path)
    with open(os.path.join(inputs["tflite_models"][0].uri, "labels.txt"), "w") as f:
        f.write("dog\ncat\n")  # the TFLite models would name the classes the other way round
    params = exec_params(tmp_path)
    with pytest.raises(ValueError, match="different files named 'labels.txt'"):
        executor.Executor().Do(inputs, pushed_output(tmp_path), params)
    assert not os.path.exists(params["destination"])


def test_component_pushes_and_registers_in_mlflow(tmp_path, any_mlflow):
    """The component's spec with real channels, then its executor as the local runner calls it
    (with the run id and execution id in its context), a real SavedModel and TFLite model, TFMA
    metrics, the gate's report, and each real MLflow server (2.x, 3.x); read back through that
    server's own MLflow client: the files, metrics, params, the gate's verdict, the lineage and
    each model file's true format."""
    import tensorflow as tf
    from tfx import types
    from tfx.dsl.components.base import base_executor
    from tfx.proto.orchestration import pipeline_pb2
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.artifacts import TFLiteModels
    from litedet.components.pusher import component, executor

    pusher = component.LitedetPusher(
        model=types.Channel(type=standard_artifacts.Model),
        tflite_models=types.Channel(type=TFLiteModels),
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        label_map=types.Channel(type=artifacts.LabelMap),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        destination=str(tmp_path / "store"),
        model_name=MODEL_NAME,
        registry={"kind": "mlflow", "tracking_uri": any_mlflow["url"]},
        extra_manifest={"alpha": 0.35},
    )
    params = dict(pusher.exec_properties)
    assert json.loads(params["registry"])["kind"] == "mlflow"

    inputs, classes = executor_inputs(tmp_path, with_models=True, gate=True)
    outputs = pushed_output(tmp_path)
    context = base_executor.BaseExecutor.Context(
        unique_id="17",
        pipeline_run_id="20261128-010203",
        pipeline_info=pipeline_pb2.PipelineInfo(id="litedet"),
    )
    executor.Executor(context).Do(inputs, outputs, params)

    pushed = outputs["pushed_model"][0]
    uri = os.path.join(str(tmp_path / "store"), "1")
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_int_custom_property("pushed_version") == 1
    assert pushed.get_string_custom_property("pushed_destination") == uri
    assert pushed.get_int_custom_property("registered") == 1
    assert pushed.get_string_custom_property("registry_version") == "1"

    manifest = store.read_manifest(uri)
    assert manifest["model_name"] == MODEL_NAME
    assert manifest["alpha"] == 0.35 and manifest["input_size"] == 320
    assert manifest["label_map"] == classes
    assert manifest["metrics"] == {
        "COCOMeanAveragePrecision": pytest.approx(0.41),  # TFMA's
        "COCOMeanAverageRecall": pytest.approx(0.52),
        "float32.map50": pytest.approx(0.4),  # the gate's, pycocotools'
        "map": pytest.approx(0.3),
        "map75": pytest.approx(0.25),
        "ap_small": pytest.approx(0.1),
        "ap_medium": pytest.approx(0.2),
        "map/cat": pytest.approx(0.31),
        "map/dog": pytest.approx(0.29),
    }
    assert manifest["latency_ms"] == {
        "latency_ms_float32": pytest.approx(3.8),
        "float32": pytest.approx(3.5),
    }
    assert manifest["gate"]["blessed"] is True
    tflite_size = os.path.getsize(os.path.join(uri, "model_float32.tflite"))
    assert manifest["sizes_bytes"] == {"float32": tflite_size}
    assert manifest["tflite"]["conversion"]["max_detections"] == 100
    assert manifest["tflite"]["properties"]["formats"] == "float32"
    assert manifest["source"]["pipeline_run_id"] == "20261128-010203"
    assert manifest["source"]["pipeline_name"] == "litedet"
    assert manifest["source"]["execution_id"] == "17"
    assert manifest["source"]["data_fingerprint"] == "sha256:5ca1ab1e"
    assert {k: v["id"] for k, v in manifest["source"]["artifacts"].items()} == {
        "model": 101,
        "tflite_models": 102,
        "model_blessing": 103,
        "label_map": 104,
        "evaluation": 105,
    }
    assert {
        "model_float32.tflite",
        "labels.txt",
        "label_map.json",
        "label_map.pbtxt",
        "conversion.json",
        "saved_model/saved_model.pb",
        "serving/1/saved_model.pb",
    } <= set(manifest["files"])
    store.verify(uri)
    # The pushed copies are usable models.
    interpreter = tf.lite.Interpreter(model_path=os.path.join(uri, "model_float32.tflite"))
    interpreter.allocate_tensors()
    for folder in ("saved_model", "serving/1"):  # serving/: TensorFlow Serving's layout
        loaded = tf.saved_model.load(os.path.join(uri, folder))
        assert float(loaded(tf.ones([1, 4]))["y"][0, 0]) == 2.0

    # ... and through MLflow's own client, which downloads the artifacts the version points at.
    seen = read_back(any_mlflow, MODEL_NAME, 1)
    assert seen["source"] == f"runs:/{seen['run_id']}/model" and seen["status"] == "READY"
    tags = seen["tags"]
    assert json.loads(tags.pop("litedet.metrics")) == {
        key: pytest.approx(value) for key, value in registry_lib.model_metrics(manifest).items()
    }
    assert tags == {
        "litedet.store_uri": uri,
        "litedet.store_version": "1",
        # The gate's verdict: blessed, no reason against, compared with no earlier version.
        "litedet.gate.blessed": "true",
        "litedet.gate.reasons": "",
        "litedet.gate.baseline_version": "",
        "litedet.gate.ship_format": "float32",
        # Lineage: the pipeline run, the data, the ML Metadata artifacts.
        "litedet.lineage.pipeline_name": "litedet",
        "litedet.lineage.pipeline_run_id": "20261128-010203",
        "litedet.lineage.execution_id": "17",
        "litedet.lineage.data_fingerprint": "sha256:5ca1ab1e",
        **{
            f"litedet.lineage.artifact.{key}.{field}": str(artifact[field])
            for key, artifact in manifest["source"]["artifacts"].items()
            for field in ("id", "uri")
        },
        # Each model file with its true format: the SavedModel for a server, TFLite for devices.
        "litedet.artifact.serving.format": "tensorflow",
        "litedet.artifact.serving.role": "server",
        "litedet.artifact.serving.servable": "kserve-tensorflow-serving",
        "litedet.artifact.model_float32.tflite.format": "tflite",
        "litedet.artifact.model_float32.tflite.role": "device",
        "litedet.artifact.model_float32.tflite.shipped": "true",
    }
    assert seen["artifact_uri"].startswith("mlflow-artifacts:")  # proxied by the server
    assert seen["run_status"] == "FINISHED"
    assert seen["files"]["manifest.json"] == sha256(os.path.join(uri, "manifest.json"))
    assert {k: v for k, v in seen["files"].items() if k != "manifest.json"} == {
        name: info["sha256"] for name, info in manifest["files"].items()
    }
    assert seen["params"]["alpha"] == "0.35" and seen["params"]["input_size"] == "320"
    assert seen["params"]["classes"] == "cat,dog"
    assert seen["params"]["source.pipeline_run_id"] == "20261128-010203"
    assert seen["metrics"]["COCOMeanAveragePrecision"] == pytest.approx(0.41)
    assert seen["metrics"]["latency_ms.latency_ms_float32"] == pytest.approx(3.8)
    assert seen["metrics"]["size_bytes.float32"] == tflite_size
    assert seen["metrics"]["map/cat"] == pytest.approx(0.31)
    assert seen["run_tags"]["litedet.gate.blessed"] == "true"
    assert seen["run_tags"]["litedet.store_uri"] == uri

    # The same Trainer output again (a rerun re-evaluates it): nothing new, anywhere.
    outputs = pushed_output(tmp_path / "again")
    executor.Executor(context).Do(inputs, outputs, params)
    again = outputs["pushed_model"][0]
    assert again.get_int_custom_property("pushed") == 0
    assert again.get_int_custom_property("pushed_version") == 1
    assert registered_versions(any_mlflow, MODEL_NAME) == [1]

    # Another model: store version 2, registry version 2 of the same registered model.
    import shutil

    from tfx.types import standard_artifacts

    retrained = standard_artifacts.Model()
    retrained.uri, retrained.id = str(tmp_path / "retrained"), 201
    shutil.copytree(inputs["model"][0].uri, retrained.uri)
    outputs = pushed_output(tmp_path / "newer")
    executor.Executor(context).Do(dict(inputs, model=[retrained]), outputs, params)
    assert outputs["pushed_model"][0].get_string_custom_property("registry_version") == "2"
    assert read_back(any_mlflow, MODEL_NAME, 2)["tags"]["litedet.store_version"] == "2"


def test_local_runner_records_the_run_and_metadata_ids(tmp_path):
    """Under the real LocalDagRunner (Importers standing in for Trainer, TFLite step and
    Evaluator): the manifest carries the pipeline run id, execution id and input artifact ids
    that ML Metadata recorded, and the PushedModel artifact is published with its properties."""
    from ml_metadata import metadata_store
    from tfx import v1 as tfx
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.artifacts import TFLiteModels
    from litedet.components.pusher import component

    root = tmp_path / "in"
    for sub in ["model/Format-Serving", "tflite", "blessing", "label_map"]:
        (root / sub).mkdir(parents=True)
    (root / "tflite" / "model.tflite").write_bytes(b"TFL3" + os.urandom(100))
    (root / "model" / "Format-Serving" / "saved_model.pb").write_bytes(os.urandom(100))
    (root / "label_map" / "labels.txt").write_text("cat\n")

    def imported(name, sub, artifact_type, **props):
        return tfx.dsl.Importer(
            source_uri=str(root / sub), artifact_type=artifact_type, custom_properties=props
        ).with_id(name)

    nodes = [
        imported("model", "model", standard_artifacts.Model),
        imported("tflite", "tflite", TFLiteModels, input_size=320),
        imported("blessing", "blessing", standard_artifacts.ModelBlessing, blessed=1),
        imported("label_map", "label_map", artifacts.LabelMap),
    ]
    pusher = component.LitedetPusher(
        model=nodes[0].outputs["result"],
        tflite_models=nodes[1].outputs["result"],
        model_blessing=nodes[2].outputs["result"],
        label_map=nodes[3].outputs["result"],
        destination=str(tmp_path / "store"),
        model_name=MODEL_NAME,
    )
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(tmp_path / "mlmd.sqlite")
    )
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name="pushtest",
            pipeline_root=str(tmp_path / "root"),
            components=nodes + [pusher],
            metadata_connection_config=connection,
        )
    )

    mlmd = metadata_store.MetadataStore(connection)
    by_type = {a.type: a for a in mlmd.get_artifacts()}
    pushed = by_type["PushedModel"]
    assert pushed.custom_properties["pushed"].int_value == 1
    assert pushed.custom_properties["pushed_version"].int_value == 1
    uri = pushed.custom_properties["pushed_destination"].string_value
    assert uri == str(tmp_path / "store" / "1")
    source = store.read_manifest(uri)["source"]
    (run,) = [c for c in mlmd.get_contexts() if c.type == "pipeline_run"]
    (execution,) = [e for e in mlmd.get_executions() if e.type.endswith("LitedetPusher")]
    assert source["pipeline_run_id"] == run.name
    assert source["execution_id"] == str(execution.id)
    assert source["pipeline_name"] == "pushtest" and source["node_id"] == "LitedetPusher"
    assert {k: v["id"] for k, v in source["artifacts"].items()} == {
        "model": by_type["Model"].id,
        "tflite_models": by_type["litedet.TFLiteModels"].id,
        "model_blessing": by_type["ModelBlessing"].id,
        "label_map": by_type["litedet.LabelMap"].id,
    }
    assert store.read_manifest(uri)["input_size"] == 320
