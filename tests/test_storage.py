"""Object storage against a real S3-compatible server on loopback (tests/conftest.py: moto's
server): TensorFlow's file system through tensorflow-io, Beam's through boto3, the model store
with its compare-and-swap push, the dataset fingerprint, and the integrity check of what
`predict` loads."""

import json
import os

import pytest

from litedet.components import object_storage as storage
from litedet.components.example_gen.config import DatasetConfig
from litedet.components.example_gen.fingerprint import dataset_fingerprint
from litedet.components.pusher import store

DATASET = DatasetConfig(root="unused", format="coco", sources={"train": "a.json"})


def _put(client, key: str, body: bytes) -> None:
    client.put_object(Bucket="litedet", Key=key, Body=body)


def test_tensorflow_reads_and_writes_s3(s3_server):
    import tensorflow as tf

    storage.configure()
    with tf.io.gfile.GFile("s3://litedet/tf/a.txt", "w") as f:
        f.write("hello")
    assert tf.io.gfile.GFile("s3://litedet/tf/a.txt").read() == "hello"
    assert tf.io.gfile.listdir("s3://litedet/tf") == ["a.txt"]


def test_the_fingerprint_of_an_s3_dataset_follows_its_files(s3_server):
    client = s3_server["client"]
    for name in ("a.json", "images/1.jpg", "images/2.jpg"):
        _put(client, f"data/{name}", name.encode())
    root = "s3://litedet/data"
    first = dataset_fingerprint(DATASET, root)
    assert dataset_fingerprint(DATASET, root) == first  # unchanged: the same
    _put(client, "data/images/3.jpg", b"new")
    added = dataset_fingerprint(DATASET, root)
    assert added != first
    _put(client, "data/images/3.jpg", b"changed")
    changed = dataset_fingerprint(DATASET, root)
    assert changed not in (first, added)
    client.delete_object(Bucket="litedet", Key="data/images/3.jpg")
    assert dataset_fingerprint(DATASET, root) not in (added, changed)
    with pytest.raises(FileNotFoundError, match="holds no file"):
        dataset_fingerprint(DATASET, "s3://litedet/nothing-here")


def _files(tmp_path, text: str):
    path = tmp_path / f"{text}.bin"
    path.write_text(text)
    return {"model_int8.tflite": str(path)}


def test_the_store_on_s3_pushes_versions_and_refuses_to_skip_one(s3_server, tmp_path):
    destination = "s3://litedet/models-cas"
    assert store.latest(destination) is None
    version, uri = store.push_version(
        destination, _files(tmp_path, "a"), {"model_name": "m"}, expected_latest=0
    )
    assert (version, uri) == (1, destination + "/1")
    store.verify(uri)
    # Decided against version 1: lands as 2.
    assert store.push_version(destination, _files(tmp_path, "b"), {}, expected_latest=1)[0] == 2
    # A run that compared with version 1 too, finishing later, must not land on top of 2.
    with pytest.raises(store.StoreMoved, match="version 2 is there now"):
        store.push_version(destination, _files(tmp_path, "c"), {}, expected_latest=1)
    assert store.list_versions(destination) == [1, 2]
    # Nothing of the refused push is left but what readers ignore.
    keys = [
        o["Key"]
        for o in s3_server["client"].list_objects_v2(Bucket="litedet", Prefix="models-cas/")[
            "Contents"
        ]
    ]
    assert not [k for k in keys if k.startswith("models-cas/3")]


def test_a_local_store_refuses_to_skip_a_version_too(tmp_path):
    destination = str(tmp_path / "store")
    store.push_version(destination, _files(tmp_path, "a"), {}, expected_latest=0)
    store.push_version(destination, _files(tmp_path, "b"), {}, expected_latest=1)
    with pytest.raises(store.StoreMoved):
        store.push_version(destination, _files(tmp_path, "c"), {}, expected_latest=1)
    with pytest.raises(store.StoreMoved):  # a first push into a store that is not empty
        store.push_version(destination, _files(tmp_path, "d"), {}, expected_latest=0)
    assert store.list_versions(destination) == [1, 2]
    assert not [n for n in os.listdir(destination) if n.startswith(".incoming")]


def test_what_predict_loads_is_checked_against_the_manifest(s3_server, tmp_path):
    from litedet.predict import Detector

    destination = "s3://litedet/models-integrity"
    payload = tmp_path / "model_int8.tflite"
    payload.write_bytes(b"not really a model")
    _, uri = store.push_version(
        destination, {"model_int8.tflite": str(payload)}, {"ship_format": "int8"}
    )
    files = store.verified_files(uri, ["model_int8.tflite"], str(tmp_path / "copy"))
    assert open(files["model_int8.tflite"], "rb").read() == b"not really a model"
    # Changed in the store after the push: refused before anything loads it.
    _put(s3_server["client"], "models-integrity/1/model_int8.tflite", b"tampered")
    with pytest.raises(store.StoreError, match="does not match the manifest"):
        Detector(uri)
    with pytest.raises(FileNotFoundError, match="no float16 model"):
        Detector(uri, "float16")


def test_s3_credentials_missing_are_named(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(storage.StorageError, match="AWS_ACCESS_KEY_ID"):
        storage.check_credentials("s3://bucket/x")
    storage.check_credentials("gs://bucket/x")  # not S3: nothing to check


def test_beam_workers_get_the_storage_plugin_only_when_s3_is_used():
    assert storage.beam_args("gs://b/root", "/local/models") == []
    assert storage.beam_args("s3://b/root") == ["--beam_plugins=litedet.components.object_storage"]


def test_beam_reads_and_writes_s3_in_a_pipeline(s3_server, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(
        options=PipelineOptions(
            ["--direct_running_mode=in_memory", *storage.beam_args("s3://litedet/beam")]
        )
    ) as p:
        _ = (
            p
            | beam.Create([json.dumps({"n": i}) for i in range(5)])
            | beam.io.WriteToText("s3://litedet/beam/out", num_shards=1)
        )
    keys = [
        o["Key"]
        for o in s3_server["client"].list_objects_v2(Bucket="litedet", Prefix="beam/")["Contents"]
    ]
    assert len(keys) == 1
    body = s3_server["client"].get_object(Bucket="litedet", Key=keys[0])["Body"].read()
    assert sorted(json.loads(line)["n"] for line in body.decode().splitlines()) == list(range(5))
