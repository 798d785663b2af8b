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
        ("training.finest_head_depth=3", r"finest_head_depth: 3 must be in \[0, head_depth 1\]"),
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


PORTABLE = [
    "beam.runner=portable",
    "beam.job_endpoint=litedet-flink-job-server.litedet:8099",
]


def test_a_portable_run_submits_to_the_job_service_with_the_workers_image():
    config = configs.load_config(None, PORTABLE)
    args = configs.beam_args_for(config, dataset_bytes=1, image="r.example.com/litedet:1")
    assert args == [
        "--runner=PortableRunner",
        "--job_endpoint=litedet-flink-job-server.litedet:8099",
        "--environment_type=EXTERNAL",
        "--environment_config=localhost:50000",
        "--sdk_container_image=r.example.com/litedet:1",
        "--job_server_timeout=21600",
    ]
    # An image named in the settings wins over the steps' image.
    config = configs.load_config(None, [*PORTABLE, "beam.sdk_container_image=litedet:local"])
    assert "--sdk_container_image=litedet:local" in configs.beam_args_for(config, image="x:1")


def test_beam_pipeline_args_follow_the_portable_runners_and_replace_the_direct_runners():
    extra = 'beam_pipeline_args=["--sdk_worker_parallelism=2","--job_server_timeout=60"]'
    portable = configs.beam_args_for(configs.load_config(None, [*PORTABLE, extra]), image="x:1")
    assert portable[0] == "--runner=PortableRunner"
    # Beam keeps the last value of a flag given twice: beam_pipeline_args win.
    assert portable[-2:] == ["--sdk_worker_parallelism=2", "--job_server_timeout=60"]
    direct = configs.beam_args_for(configs.load_config(None, [extra]), dataset_bytes=1)
    assert direct == ["--sdk_worker_parallelism=2", "--job_server_timeout=60"]
    assert configs.beam_args_for(configs.load_config(), dataset_bytes=1) == [
        "--direct_running_mode=in_memory",
        "--sdk_container_image=litedet:local",
    ]


@pytest.mark.parametrize("dataset_bytes, image", [(1, ""), (None, ""), (None, "r.example.com/l:1")])
def test_the_direct_runners_default_args_keep_tfx_from_staging_a_package(dataset_bytes, image):
    """TFX's own check (the one every Beam executor runs) adds no --extra_package: no
    tfx_ephemeral sdist is built. The image named is the steps' own on Kubeflow."""
    from tfx.utils import dependency_utils

    args = configs.beam_args_for(configs.load_config(), dataset_bytes=dataset_bytes, image=image)
    assert dependency_utils.make_beam_dependency_flags(args) == args
    assert f"--sdk_container_image={image or configs.LOCAL_IMAGE}" in args


def test_a_local_portable_run_must_name_the_workers_image():
    config = configs.load_config(None, PORTABLE)
    with pytest.raises(ConfigError, match="beam.sdk_container_image: a portable run outside"):
        configs.beam_args_for(config, dataset_bytes=1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["beam.runner=flink"], "beam.runner: 'flink' is not one of direct, portable"),
        (["beam.runner=portable"], "beam.job_endpoint: '' is not HOST:PORT"),
        ([*PORTABLE, "beam.worker_pool=50000"], "beam.worker_pool: 50000 is not HOST:PORT"),
        (["beam.job_endpoint=http://flink:8099"], "beam.job_endpoint: 'http://flink:8099'"),
        ([*PORTABLE, "beam.sdk_container_image=Litedet latest"], "beam.sdk_container_image"),
        ([*PORTABLE, "beam.job_timeout_s=0"], "beam.job_timeout_s: 0 must be >= 1"),
        (
            [*PORTABLE, 'beam_pipeline_args=["--runner=FlinkRunner"]'],
            "beam_pipeline_args: --runner=FlinkRunner conflicts with beam.runner: portable",
        ),
    ],
)
def test_bad_beam_settings_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        configs.load_config(None, overrides)


def test_the_step_pods_direct_runner_sizing_leaves_a_portable_run_alone():
    from litedet.pipeline import kubeflow_v2_runner as kv2

    portable = configs.beam_args_for(configs.load_config(None, PORTABLE), image="x:1")
    assert kv2._direct_workers(portable, cpu=2) == []
    direct = configs.beam_args_for(configs.load_config())
    assert kv2._direct_workers(direct, cpu=2) == ["--direct_num_workers=2"]
