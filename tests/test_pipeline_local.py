"""The local pipeline through Transform on a tiny sample dataset: real LocalDagRunner, SQLite ML
Metadata, Beam DirectRunner in multi-process mode, as `litedet demo` runs it."""

import os

import numpy as np
import pytest
import tensorflow as tf

from components import features as f
from components.example_gen.config import DatasetConfig
from components.example_gen.fingerprint import dataset_fingerprint
from pipeline import configs, local_runner, run_summary
from tests import datasets


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """Runs the pipeline twice on unchanged inputs; returns the config and both summaries."""
    base = tmp_path_factory.mktemp("pipeline")
    os.environ["LITEDET_CACHE"] = str(base / "cache")
    config = configs.load_config(None, [
        f"output_dir={base / 'outputs'}", "sample_data.num_train=16", "sample_data.num_eval=6",
        "transform.image_size=96",
        'beam_pipeline_args=["--direct_running_mode=multi_processing","--direct_num_workers=2"]'])
    metadata = os.path.abspath(config.metadata_path)
    local_runner.run(config)
    first = run_summary.latest_run(metadata)
    local_runner.run(config)
    second = run_summary.latest_run(metadata)
    return config, first, second


def test_every_step_runs_and_the_data_passes_validation(pipeline_runs):
    _, first, _ = pipeline_runs
    assert {name: c.state for name, c in first.components.items()} == {
        "DetectionExampleGen": "ran", "StatisticsGen": "ran", "SchemaImporter": "ran",
        "ExampleValidator": "ran", "Transform": "ran"}
    assert first.quarantine_summary()["examples"] == {"train": 16, "eval": 6}
    assert first.anomalies() == {"train": [], "eval": []}


def test_a_second_run_on_unchanged_inputs_is_served_from_the_cache(pipeline_runs):
    _, first, second = pipeline_runs
    assert second.run_id != first.run_id
    assert {c.state for c in second.components.values()} == {"cached"}
    assert second.components["Transform"].outputs == first.components["Transform"].outputs


def _transformed(summary, split):
    import tensorflow_transform as tft

    transform = summary.components["Transform"]
    output = tft.TFTransformOutput(transform.uri("transform_graph"))
    files = tf.io.gfile.glob(os.path.join(transform.uri("transformed_examples"),
                                          f"Split-{split}", "*.gz"))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    spec = output.transformed_feature_spec()
    return output, [tf.io.parse_single_example(r, spec) for r in records]


def test_transformed_examples_hold_model_inputs_and_padded_targets(pipeline_runs):
    _, first, _ = pipeline_runs
    _, examples = _transformed(first, "eval")
    raw = {datasets.feature_values(e, "image/source_id")[0]: e for e in datasets.read_examples(
        os.path.join(first.components["DetectionExampleGen"].uri("examples"), "Split-eval"))}
    assert len(examples) == 6
    for example in examples:
        assert example[f.IMAGE].shape == (96, 96, 3)
        assert example[f.BOXES].shape == (100, 4)
        source = raw[example[f.SOURCE_ID].numpy()]
        labels = datasets.feature_values(source, "image/object/class/label")
        assert int(example[f.NUM_BOXES]) == len(labels)
        assert example[f.CLASSES].numpy()[:len(labels)].tolist() == labels
        np.testing.assert_allclose(
            example[f.BOXES].numpy()[:len(labels), 1],
            datasets.feature_values(source, "image/object/bbox/xmin"), atol=1e-6)


def test_the_transform_graph_serves_raw_encoded_images(pipeline_runs):
    """Serving has only the image bytes: the same graph must give the same model input."""
    _, first, _ = pipeline_runs
    output, examples = _transformed(first, "eval")
    raw = {datasets.feature_values(e, "image/source_id")[0]: e for e in datasets.read_examples(
        os.path.join(first.components["DetectionExampleGen"].uri("examples"), "Split-eval"))}
    example = examples[0]
    encoded = datasets.feature_values(raw[example[f.SOURCE_ID].numpy()], "image/encoded")[0]
    served = output.transform_features_layer()({f.IMAGE_ENCODED: tf.constant([encoded])})
    assert set(served) == {f.IMAGE, f.CONTENT_WINDOW}
    np.testing.assert_allclose(served[f.IMAGE][0].numpy(), example[f.IMAGE].numpy(), atol=1e-6)


def test_the_fingerprint_notices_a_changed_image(tmp_path):
    sources = datasets.write_coco(str(tmp_path), {"train": [
        {"file_name": "a.jpg", "width": 20, "height": 20, "anns": []}]})
    config = DatasetConfig(root=str(tmp_path), format="coco", sources=sources)
    before = dataset_fingerprint(config, str(tmp_path))
    assert dataset_fingerprint(config, str(tmp_path)) == before
    (tmp_path / "images" / "a.jpg").write_bytes(datasets.image_bytes(20, 20, [(1, 1, 5, 5)]))
    assert dataset_fingerprint(config, str(tmp_path)) != before
