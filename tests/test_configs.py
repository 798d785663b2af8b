"""Configuration: defaults, file, overrides, and clear errors naming the setting."""

import pytest

from litedet.pipeline import configs
from litedet.pipeline.configs import ConfigError


def test_defaults_file_and_overrides_compose(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(
        "transform: {image_size: 320}\ntraining: {alpha: 0.5, train_steps: 50}\n"
        "dataset: {root: /data/voc, format: voc, sources: {all: Annotations},\n"
        "          split_ratios: {train: 4, eval: 1}}\n"
    )
    config = configs.load_config(
        str(path),
        [
            "training.alpha=0.75",
            "enable_cache=false",
            'beam_pipeline_args=["--runner=FlinkRunner"]',
        ],
    )
    assert config.transform.image_size == 320 and config.transform.resize_mode == "stretch"
    assert config.training.alpha == 0.75 and config.training.train_steps == 50
    assert config.enable_cache is False
    assert config.beam_pipeline_args == ["--runner=FlinkRunner"]
    dataset = config.dataset_config()
    assert dataset.format == "voc" and dataset.output_splits == ["train", "eval"]
    # max_boxes is one setting: it also bounds the ExampleGen's objects per image.
    assert dataset.max_objects_per_image == config.transform.max_boxes


def test_the_sample_dataset_is_the_default():
    config = configs.load_config()
    assert config.uses_sample_data
    assert config.dataset_config(sample_root="/cache/shapes").root == "/cache/shapes"
    with pytest.raises(ConfigError, match="generate the sample data first"):
        config.dataset_config()


@pytest.mark.parametrize(
    "override, message",
    [
        ("transform.image_size=300", "transform.image_size: 300 must be a multiple of 32"),
        ("transform.resize_mode=crop", "transform.resize_mode: 'crop' is not one of"),
        ("training.alpha=0.6", "alpha 0.6 is not supported by MobileNetV2; choose one of 0.35"),
        ("training.distribution=tpu", "training.distribution: 'tpu' is not one of"),
        ("training.batch_size=many", "training.batch_size: expected an integer, got 'many'"),
        ("training.colour=red", "training.colour: unknown setting"),
        ("transform", "--set 'transform': expected key=value"),
        ("tflite.ship_format=int8 ", "tflite.ship_format: 'int8 ' is not among"),
        ('tflite.formats=["float32"]', "tflite.ship_format: 'int8' is not among the converted"),
        ("evaluation.min_map50=1.5", "evaluation.min_map50: 1.5 must be in"),
        ("evaluation.max_latency_ms=-1", "evaluation.max_latency_ms: -1.0 must be >= 0"),
        ('push.registry={"kind": "sagemaker"}', "push.registry.kind: 'sagemaker' is not one of"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(override, message):
    with pytest.raises(ConfigError, match=message):
        configs.load_config(None, [override])


def test_a_bad_dataset_section_names_the_field():
    with pytest.raises(ConfigError, match="dataset.format: 'darknet'"):
        configs.load_config(
            None, ['dataset={"root": "/d", "format": "darknet", "sources": {"train": "a"}}']
        )


def test_an_unreadable_or_invalid_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        configs.load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        configs.load_config(str(bad))


def test_the_code_fingerprint_follows_what_the_module_imports(tmp_path, monkeypatch):
    from litedet.components.code_fingerprint import source_fingerprint

    package = tmp_path / "fpdemo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text("from fpdemo import helper\n\ndef fn():\n    pass\n")
    (package / "helper.py").write_text("X = 1\n")
    (package / "unrelated.py").write_text("Y = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_fingerprint("fpdemo.entry.fn")
    (package / "unrelated.py").write_text("Y = 2\n")
    assert source_fingerprint("fpdemo.entry.fn") == before
    (package / "helper.py").write_text("X = 2\n")
    assert source_fingerprint("fpdemo.entry.fn") != before


def test_push_destination_defaults_under_the_output_folder(tmp_path):
    config = configs.load_config(None, [f"output_dir={tmp_path}"])
    assert config.push_destination == str(tmp_path / "models")
    config = configs.load_config(
        None,
        [
            "push.destination=gs://bucket/models",
            'push.registry={"kind": "mlflow", "tracking_uri": "u"}',
        ],
    )
    assert config.push_destination == "gs://bucket/models"
    assert config.push.registry == {"kind": "mlflow", "tracking_uri": "u"}


def test_one_key_of_a_mapping_setting_can_be_set_alone():
    config = configs.load_config(None, ["dataset.root=gs://bucket/data"])
    dataset = config.dataset_config()
    assert dataset.root == "gs://bucket/data" and dataset.format == "coco"
    assert dataset.sources["train"] == "annotations/instances_train.json"
    config = configs.load_config(
        None,
        [
            'push.registry={"kind": "mlflow", "tracking_uri": "u"}',
            "push.registry.tracking_uri=http://mlflow:5000",
        ],
    )
    assert config.push.registry == {"kind": "mlflow", "tracking_uri": "http://mlflow:5000"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.colour=red", "dataset.colour: unknown setting"),
        ("training.alpha.x=1", "training.alpha: is a single value"),
        ('dataset={"root": "/d"}', "dataset: missing format, sources"),
        ("training..alpha=1", "is not a setting name"),
    ],
)
def test_every_key_is_either_used_or_refused_with_its_name(override, message):
    with pytest.raises(ConfigError, match=message):
        configs.load_config(None, [override])


@pytest.mark.parametrize(
    "setting, message",
    [
        ("training.finest_stride=4", "finest_stride: 4 must be 8 or 16"),
        ("training.giou_weight=-1", "giou_weight: -1.0 must be in"),
        ("training.scales_per_octave=4", "scales_per_octave: 4 must be 1, 2 or 3"),
    ],
)
def test_detector_options_are_checked_naming_the_setting(setting, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.load_config(None, [setting])


def test_scales_per_octave_sets_the_anchors_per_location():
    from litedet.components.detection import model as model_lib

    for scales, expected in ((1, 3), (2, 6)):
        training = configs.load_config(None, [f"training.scales_per_octave={scales}"]).training
        config = model_lib.DetectorConfig(
            num_classes=2,
            strides=model_lib.strides_from(training.finest_stride),
            scales_per_octave=training.scales_per_octave,
        )
        assert config.anchors_per_location == expected
