"""A small exported detector on a small real dataset, for the tests of `litedet val`, `litedet
export`, `litedet predict`'s folders and the run folder's files, without a pipeline run.

Everything is the project's real code on real files: the sample generator writes a COCO dataset
(`litedet data synth`), the ExampleGen converts it (litedet/data/convert.py), tf.Transform
analyses the project's preprocessing_fn over it (write_transform_graph of
tests/test_tflite.py, 128 px), the detector (alpha 0.35, the dataset's five classes) is exported by
export.DetectorExport with every signature, converted to float32 TFLite and pushed into a model
store as a version. The detector is untrained but made to detect (biased_detector): its
BatchNormalization statistics are set by training-mode passes over the images, its predictor
weights scaled up so the outputs follow the image, and one class column of one anchor shape
biased to fire, with shifted boxes: varied, input-dependent detections to compare between
runtimes, not accurate ones. Built once per test session (about a minute of CPU).
"""

from __future__ import annotations

import json
import os
import types

SIZE = 128
NUM_TRAIN, NUM_EVAL = 12, 8
FIRING_COLUMN = 2  # the class column (label 2) the biased detector predicts


def write_config(path: str, data_root: str, output_dir: str) -> None:
    import yaml

    config = {
        "output_dir": output_dir,
        "dataset": {
            "root": data_root,
            "format": "coco",
            "images_dir": "images",
            "sources": {
                "train": "annotations/instances_train.json",
                "eval": "annotations/instances_eval.json",
            },
        },
        "transform": {"image_size": SIZE},
    }
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def biased_detector(num_classes: int, images):
    """The untrained detector made to give varied, input-dependent detections of one class
    (biased_detector in tests/test_tflite.py explains how); `images`: model inputs [B, S, S, 3]."""
    import tensorflow as tf

    from litedet.components.detection import model as model_lib

    config = model_lib.DetectorConfig(num_classes=num_classes, alpha=0.35, image_size=SIZE)
    detector = model_lib.build_detector(config)
    for _ in range(20):
        detector(images, training=True)
    for name in ("class_logits_predictor", "box_encodings_predictor"):
        kernel = detector.get_layer(name).pointwise_kernel
        kernel.assign(kernel * 100.0)
    class_bias = detector.get_layer("class_logits_predictor").bias
    class_bias.assign(tf.tensor_scatter_nd_update(class_bias, [[FIRING_COLUMN]], [1.0]))
    box_bias = detector.get_layer("box_encodings_predictor").bias
    box_bias.assign(
        tf.tensor_scatter_nd_update(box_bias, [[0], [1], [2], [3]], [1.0, -1.0, 1.0, -0.5])
    )
    return config, detector


def build(root: str) -> types.SimpleNamespace:
    """Writes everything under `root`; returns where each thing is."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from litedet.components.detection import export, preprocessing
    from litedet.components.evaluation import device
    from litedet.components.pusher import store
    from litedet.components.tflite import converter
    from litedet.data import convert
    from litedet.data import sample as sample_data
    from litedet.pipeline import configs, local_runner
    from tests.test_tflite import write_transform_graph

    data = os.path.join(root, "data")
    sample_data.generate(data, num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=0)
    config_path = os.path.join(root, "config.yaml")
    write_config(config_path, data, os.path.join(root, "outputs"))
    config = configs.load_config(config_path, [])
    converted = os.path.join(root, "converted")
    convert.convert(
        local_runner.resolve_dataset(config), converted, ["--direct_running_mode=in_memory"]
    )
    with open(os.path.join(converted, "label_map", "label_map.json")) as handle:
        labels = [c["name"] for c in json.load(handle)["classes"]]
    transform_graph = os.path.join(root, "transform_graph")
    write_transform_graph(os.path.join(converted, "examples", "Split-train", "*"), transform_graph)

    train = device.read_examples(os.path.join(converted, "examples", "Split-train"))
    images = tf.stack(
        [
            preprocessing.resize_to_input(tf.constant(image), SIZE, "stretch")[0]
            for image in device.decode_images(train)
        ]
    )
    detector_config, detector = biased_detector(len(labels), images)
    model_dir = os.path.join(root, "model")
    saved_model = os.path.join(model_dir, "Format-Serving")
    module = export.DetectorExport(
        detector, tft.TFTransformOutput(transform_graph), detector_config.anchors(), SIZE
    )
    export.save(module, saved_model)
    with open(os.path.join(model_dir, "labels.txt"), "w") as handle:
        handle.write("".join(name + "\n" for name in labels))

    tflite_dir = os.path.join(root, "tflite")
    tflite = converter.convert(saved_model, tflite_dir, labels, formats=["float32"])["float32"]
    conversion = os.path.join(tflite_dir, "conversion.json")
    with open(conversion, "w") as handle:
        json.dump(
            {
                "labels": labels,
                "resize_mode": "stretch",
                "files": {"float32": os.path.basename(tflite)},
            },
            handle,
        )
    store_dir = os.path.join(root, "models")
    version, version_uri = store.push_version(
        store_dir,
        {
            "model_float32.tflite": tflite,
            "labels.txt": os.path.join(tflite_dir, "labels.txt"),
            "conversion.json": conversion,
            store.SAVED_MODEL_DIR: saved_model,
        },
        {"model_name": "small-test-model", "ship_format": "float32", "image_size": SIZE},
    )
    return types.SimpleNamespace(
        root=root,
        data=data,
        config=config_path,
        output_dir=os.path.join(root, "outputs"),
        examples=os.path.join(converted, "examples"),
        labels=labels,
        saved_model=saved_model,
        tflite=tflite,
        store=store_dir,
        version=version,
        version_uri=version_uri,
    )
