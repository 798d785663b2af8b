"""TFLite export: converter, interpreter, metadata and the TFX component. Everything runs the real
TFLite interpreter on real converted models (the on-device clients run the pushed models of a
trained pipeline: tests/test_pipeline_local.py, test_on_device_clients_...).

Two models:
- a hand-set one (a tf.Module with the export's `detect_preprocessed` signature and `anchors`
  attribute whose outputs are set by hand): the post-process op's decoding, thresholds, NMS and
  class numbering compared exactly with the SavedModel's decode_detections;
- the real, untrained small detector (alpha 0.35, 128 px, 3 classes) exported by
  export.DetectorExport with a real Transform graph (tf.Transform on a few images), converted to
  every format by the TFLiteConverter executor. Its class and box predictor biases are set so that
  one anchor shape fires at every location with shifted, scaled boxes: detections to compare.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tempfile
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from litedet.components.detection import export, postprocess
from litedet.components.detection import model as model_lib
from litedet.components.tflite import converter, interpreter
from tests import datasets

pytestmark = pytest.mark.slow

CLASSES = ["square", "circle", "star"]
SIZE = 128
K = converter.DEFAULT_MAX_DETECTIONS


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1.0 - p)).astype(np.float32)


def assert_same_detections(actual, expected, box_atol=1e-4, score_atol=1e-4):
    """Same detections, matched one to one by class and nearest box: NMS output order among
    (nearly) tied scores is not part of the contract."""
    count = int(expected["count"])
    assert int(actual["count"]) == count
    unused = set(range(count))
    for box, cls, score in zip(
        expected["boxes"][:count], expected["classes"][:count], expected["scores"][:count]
    ):
        candidates = [i for i in unused if actual["classes"][i] == cls]
        assert candidates, f"no detection of class {cls} left for box {box}"
        best = min(candidates, key=lambda i: np.abs(actual["boxes"][i] - box).max())
        np.testing.assert_allclose(actual["boxes"][best], box, atol=box_atol)
        assert actual["scores"][best] == pytest.approx(score, abs=score_atol)
        unused.remove(best)
    assert not np.any(actual["scores"][count:])
    assert not np.any(actual["classes"][count:])


def serving_form(detections, index=0):
    """serving_default / decode_detections output -> TFLiteDetector.detect's form."""
    return {
        "boxes": np.asarray(detections["detection_boxes"][index]),
        "classes": np.asarray(detections["detection_classes"][index]),
        "scores": np.asarray(detections["detection_scores"][index]),
        "count": int(detections["num_detections"][index]),
    }


# --- The hand-set model: the op's semantics against decode_detections --------------------------


class HandSetDetector(tf.Module):
    """The export's preprocessed signature, returning hand-set box codes and sigmoid scores."""

    def __init__(self, box_encodings, class_scores, anchors, anchors_type=tf.Variable):
        super().__init__()
        self._box_encodings = tf.constant(box_encodings[np.newaxis])
        self._class_scores = tf.constant(class_scores[np.newaxis])
        self.anchors = anchors_type(anchors)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")])
    def detect_preprocessed(self, images):
        batch = tf.shape(images)[0]
        return {
            "box_encodings": tf.tile(self._box_encodings, [batch, 1, 1]),
            "class_scores": tf.tile(self._class_scores, [batch, 1, 1]),
        }


def hand_set_outputs(anchors):
    """Box codes and scores exercising what the op must get right (see the comments)."""
    num_anchors = anchors.shape[0]
    codes = np.zeros([num_anchors, 4], np.float32)
    scores = np.full([num_anchors, len(CLASSES) + 1], 1e-4, np.float32)
    per_location = model_lib.DetectorConfig(num_classes=3, **STRIDE16).anchors_per_location
    cells = SIZE // 16  # the stride-16 level comes first: cell (row, col), anchor index a

    def anchor(row, col, a):
        return (row * cells + col) * per_location + a

    square, wide = anchor(3, 3, 0), anchor(3, 3, 1)  # same cell, IoU ~0.55
    scores[square, 1] = 0.9  # kept
    scores[wide, 1] = 0.8  # same class, overlaps `square`: suppressed
    scores[wide, 2] = 0.7  # other class on the same box: kept (per-class NMS)
    far = anchor(6, 1, 2)
    codes[far] = [2.0, -1.5, 1.0, -0.5]  # decoded with scale factors 10, 10, 5, 5
    scores[far, 3] = 0.3
    scores[far, 1] = 0.2  # a second class on the same box: kept by per-class NMS (a repeat)
    corner = anchor(0, 0, 0)
    codes[corner] = [-3.0, -3.0, 2.0, 2.0]  # reaches past the image: serving clips it
    scores[corner, 2] = 0.5
    scores[anchor(5, 5, 0), 3] = 0.04  # under the score threshold 0.05
    scores[anchor(2, 6, 0), 0] = 0.99  # background column: never a detection
    return codes, scores


@pytest.fixture(scope="module")
def hand_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_set")
    anchors = model_lib.DetectorConfig(num_classes=3, image_size=SIZE, **STRIDE16).anchors().numpy()
    codes, scores = hand_set_outputs(anchors)
    module = HandSetDetector(codes, scores, anchors)
    saved = str(root / "saved_model")
    tf.saved_model.save(
        module, saved, signatures={export.PREPROCESSED_SIGNATURE: module.detect_preprocessed}
    )
    paths = converter.convert(
        saved, str(root / "regular"), CLASSES, formats=["float32"], use_regular_nms=True
    )
    fast = converter.convert(saved, str(root / "fast"), CLASSES, formats=["float32"])
    return types.SimpleNamespace(
        anchors=anchors,
        codes=codes,
        scores=scores,
        saved=saved,
        path=paths["float32"],
        fast_path=fast["float32"],
    )


def expected_decode(hand_set, class_agnostic=False):
    return serving_form(
        postprocess.decode_detections(
            hand_set.codes[np.newaxis],
            logit(hand_set.scores)[np.newaxis],
            hand_set.anchors,
            score_threshold=converter.DEFAULT_SCORE_THRESHOLD,
            iou_threshold=converter.DEFAULT_NMS_IOU_THRESHOLD,
            max_detections=K,
            class_agnostic=class_agnostic,
        )
    )


def test_post_process_op_matches_the_savedmodel_decode(hand_set):
    """With use_regular_nms=True: decoding (center-size anchors, scale factors), background
    column, score threshold, per-class NMS, ordering and the 0-based -> 1-based class mapping all
    agree with the SavedModel's decode_detections."""
    detector = interpreter.TFLiteDetector(hand_set.path)
    raw = detector.run(np.zeros([SIZE, SIZE, 3], np.float32))
    expected = expected_decode(hand_set)
    assert expected["count"] == 5
    # The op's own numbering: 0-based over the object classes, scores sorted.
    np.testing.assert_array_equal(raw["classes"][:5], [0, 1, 1, 2, 0])
    got = detector.detections(raw)
    np.testing.assert_array_equal(got["classes"], expected["classes"])  # exact order too
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-6)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-5)
    assert got["count"] == expected["count"]
    # The op itself does not clip; TFLiteDetector does, as serving_default.
    assert raw["locations"][:5].min() < 0.0


def test_fast_nms_keeps_one_class_per_box(hand_set):
    """The default, use_regular_nms=False: the op's class-agnostic NMS drops the second class on
    a box that per-class NMS keeps (the price of client safety, docs/clients.md): every row is a
    box of its own, and the SavedModel's default (class-agnostic) decode gives the same rows."""
    detector = interpreter.TFLiteDetector(hand_set.fast_path)
    raw = detector.run(np.zeros([SIZE, SIZE, 3]))
    assert raw["count"] == 3
    assert sorted(raw["classes"][:3].tolist()) == [0, 1, 2]
    assert len({tuple(box) for box in raw["locations"][:3].tolist()}) == 3
    assert expected_decode(hand_set)["count"] == 5
    got, expected = detector.detections(raw), expected_decode(hand_set, class_agnostic=True)
    assert got["count"] == expected["count"] == 3
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-6)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-5)


def test_repeated_boxes_of_regular_nms_are_refused_by_default(hand_set):
    """Per-class NMS gives the `far` anchor's box twice (two classes): MediaPipe Tasks
    before 0.10.20 crashes on a repeated box, so check_model refuses it unless told otherwise,
    reading the op's attributes as MediaPipe does."""
    raw = interpreter.TFLiteDetector(hand_set.path).run(np.zeros([SIZE, SIZE, 3]))
    boxes = [tuple(box) for box in raw["locations"][: raw["count"]].tolist()]
    assert len(set(boxes)) < len(boxes)
    assert converter.postprocess_options(hand_set.path)["use_regular_nms"]
    with pytest.raises(converter.ConversionError, match="MediaPipe Tasks before 0.10.20"):
        converter.check_model(hand_set.path, K)
    converter.check_model(hand_set.path, K, one_box_per_row=False)
    options = converter.postprocess_options(hand_set.fast_path)
    assert not options["use_regular_nms"] and options["max_classes_per_detection"] == 1
    converter.check_model(hand_set.fast_path, K)


def test_letterbox_boxes_come_back_to_the_original_image(hand_set):
    from litedet.components.detection import preprocessing

    wide = np.zeros([60, 120, 3], np.uint8)
    stretched = interpreter.TFLiteDetector(hand_set.path).detect(wide)
    boxed = interpreter.TFLiteDetector(hand_set.path, resize_mode="letterbox").detect(wide)
    _, window = preprocessing.resize_to_input(tf.constant(wide), SIZE, "letterbox")
    n = stretched["count"]
    np.testing.assert_allclose(
        boxed["boxes"][:n],
        preprocessing.boxes_from_window(tf.constant(stretched["boxes"][:n]), window).numpy(),
        atol=1e-6,
    )


def test_check_model_rejects_outputs_out_of_order(hand_set):
    """MediaPipe reads outputs by position: a model whose outputs are the right tensors in
    another order (what the converter emits before the fix) must not pass."""
    from tensorflow.lite.tools import flatbuffer_utils

    content = open(hand_set.fast_path, "rb").read()
    assert set(converter.check_model(content, K)) == set(converter.OUTPUT_NAMES)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    outputs = list(model.subgraphs[0].outputs)
    model.subgraphs[0].outputs = np.array(
        [outputs[0], outputs[2], outputs[1], outputs[3]], np.int32
    )  # classes <-> scores: same shapes
    with pytest.raises(converter.ConversionError, match="order"):
        converter.check_model(flatbuffer_utils.convert_object_to_bytearray(model), K)


def test_labels_must_cover_the_classes(hand_set, tmp_path):
    with pytest.raises(ValueError, match="2 labels for a model of 3 classes"):
        converter.convert(hand_set.saved, str(tmp_path), CLASSES[:2])
    with pytest.raises(ValueError, match="representative_images"):
        converter.convert(hand_set.saved, str(tmp_path), CLASSES, formats=["int8"])


# --- The real detector, through the TFLiteConverter component ----------------------------------

IMAGES = [  # (width, height, rects x, y, w, h in pixels, labels)
    (128, 128, [(20, 30, 40, 40), (70, 60, 40, 50)], [1, 2]),
    (160, 120, [(10, 20, 60, 40)], [3]),
    (100, 140, [(30, 40, 30, 60)], [2]),
    (128, 96, [(50, 10, 30, 30), (5, 50, 40, 30)], [1, 3]),
    (140, 140, [(60, 60, 50, 50)], [1]),
    (120, 120, [(10, 10, 90, 90)], [2]),
]
NUM_CALIBRATION = 4
# The detector these tests were written for: finest level stride 16 (the default before the
# stride-8 level), so the hand-set anchor indices and the int8 tolerances hold.
STRIDE16 = {"strides": (16, 32, 64, 128)}
FIRING_COLUMN = 2  # the class column (label 2, "circle") that the biased detector predicts


def tf_example(width, height, rects, labels):
    data = datasets.image_bytes(width, height, rects, fmt="PNG")

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "image/encoded": strings([data]),
        "image/format": strings([b"png"]),
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/source_id": strings([f"{width}x{height}".encode()]),
        "image/filename": strings([b"image.png"]),
        "image/key/sha256": strings([b"0"]),
        "image/object/bbox/ymin": floats([y / height for _, y, _, _ in rects]),
        "image/object/bbox/xmin": floats([x / width for x, _, _, _ in rects]),
        "image/object/bbox/ymax": floats([(y + h) / height for _, y, _, h in rects]),
        "image/object/bbox/xmax": floats([(x + w) / width for x, _, w, _ in rects]),
        "image/object/class/label": ints(labels),
        "image/object/class/text": strings([CLASSES[i - 1].encode() for i in labels]),
        "image/object/is_crowd": ints([0] * len(labels)),
        "image/object/difficult": ints([0] * len(labels)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_transform_graph(examples_pattern, output_dir):
    """The project's preprocessing_fn analysed by tf.Transform (Beam, in process), as the
    pipeline's Transform does: 128 px, stretch."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    from litedet import schemas
    from litedet.components.transform import module as transform_module

    schema = text_format.Parse(schemas.RAW_SCHEMA.read_text(), schema_pb2.Schema())
    source = tfxio.TFExampleRecord(examples_pattern, schema=schema)
    preprocessing_fn = functools.partial(
        transform_module.preprocessing_fn,
        custom_config={"image_size": SIZE, "resize_mode": "stretch", "max_boxes": 10},
    )
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        raw = pipeline | source.BeamSource()
        transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(
            preprocessing_fn
        )
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
    # The raw schema beside it, as TFX's Transform writes it (raw_feature_spec() reads it).
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(schema),
        os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR),
    )


def biased_detector():
    """The untrained detector made to give varied, input-dependent detections of one class.

    From random init, MobileNetV2's activations all but vanish in inference mode (~1e-9: the
    BatchNormalization statistics are still their initial values), leaving every output equal to
    its bias. A few training-mode passes over the images set those statistics; the predictors'
    small initial weights are scaled up so that the outputs vary with position and content; and
    one anchor shape (index 0) gets a class column 2 score of about sigmoid(1) and shifted,
    rescaled boxes. Every other score stays near the prior 0.01, under the score threshold."""
    from litedet.components.detection import preprocessing

    config = model_lib.DetectorConfig(
        num_classes=len(CLASSES), alpha=0.35, image_size=SIZE, head_channels=128, **STRIDE16
    )
    detector = model_lib.build_detector(config)
    images = tf.stack(
        [
            preprocessing.resize_to_input(tf.constant(decoded_png(i)[1]), SIZE, "stretch")[0]
            for i in range(len(IMAGES))
        ]
    )
    for _ in range(20):
        detector(images, training=True)
    for name in ("class_logits_predictor", "box_encodings_predictor"):
        kernel = detector.get_layer(name).pointwise_kernel
        kernel.assign(kernel * 100.0)
    columns = len(CLASSES) + 1
    class_bias = detector.get_layer("class_logits_predictor").bias
    assert class_bias.shape == (config.anchors_per_location * columns,)
    class_bias.assign(tf.tensor_scatter_nd_update(class_bias, [[FIRING_COLUMN]], [1.0]))
    box_bias = detector.get_layer("box_encodings_predictor").bias
    box_bias.assign(
        tf.tensor_scatter_nd_update(box_bias, [[0], [1], [2], [3]], [1.0, -1.0, 1.0, -0.5])
    )
    return config, detector


def decoded_png(example_index):
    width, height, rects, _ = IMAGES[example_index]
    data = datasets.image_bytes(width, height, rects, fmt="PNG")
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Real artifacts (raw examples, Transform graph, label map, the exported SavedModel) and
    one run of the TFLiteConverter executor over them, all three formats."""
    import tensorflow_transform as tft
    from tfx.types import artifact_utils, standard_artifacts

    from litedet.components import artifacts
    from litedet.components import artifacts as tflite_artifacts
    from litedet.components.tflite import executor

    root = tmp_path_factory.mktemp("converter")
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = artifact_utils.encode_split_names(["train"])
    os.makedirs(os.path.join(examples.uri, "Split-train"))
    with tf.io.TFRecordWriter(
        os.path.join(examples.uri, "Split-train", "data_tfrecord-00000-of-00001.gz"), options="GZIP"
    ) as writer:
        for spec in IMAGES:
            writer.write(tf_example(*spec).SerializeToString())

    transform_graph = standard_artifacts.TransformGraph()
    transform_graph.uri = str(root / "transform_graph")
    write_transform_graph(os.path.join(examples.uri, "Split-train", "*"), transform_graph.uri)

    label_map = artifacts.LabelMap()
    label_map.uri = str(root / "label_map")
    os.makedirs(label_map.uri)
    with open(os.path.join(label_map.uri, "labels.txt"), "w") as handle:
        handle.write("\n".join(CLASSES) + "\n")

    config, detector = biased_detector()
    model = standard_artifacts.Model()
    model.uri = str(root / "model")
    module = export.DetectorExport(
        detector, tft.TFTransformOutput(transform_graph.uri), config.anchors(), SIZE
    )
    saved_model = os.path.join(model.uri, "Format-Serving")
    export.save(module, saved_model)

    output = tflite_artifacts.TFLiteModels()
    output.uri = str(root / "tflite_models")
    os.makedirs(output.uri)
    exec_properties = {
        executor.FORMATS_KEY: json.dumps(list(converter.FORMATS)),
        executor.NUM_CALIBRATION_IMAGES_KEY: NUM_CALIBRATION,
        executor.CALIBRATION_SPLIT_KEY: "train",
        executor.USE_REGULAR_NMS_KEY: 0,
        executor.MAX_DETECTIONS_KEY: K,
        executor.SCORE_THRESHOLD_KEY: 0.05,
        executor.IOU_THRESHOLD_KEY: 0.5,
    }
    executor.Executor().Do(
        {
            executor.MODEL_KEY: [model],
            executor.EXAMPLES_KEY: [examples],
            executor.TRANSFORM_GRAPH_KEY: [transform_graph],
            executor.LABEL_MAP_KEY: [label_map],
        },
        {executor.TFLITE_MODELS_KEY: [output]},
        exec_properties,
    )
    with open(os.path.join(output.uri, executor.CONVERSION_FILE)) as handle:
        summary = json.load(handle)
    paths = {
        fmt: os.path.join(output.uri, converter.model_filename(fmt)) for fmt in converter.FORMATS
    }
    serve = tf.saved_model.load(saved_model).signatures[export.SERVING_SIGNATURE]
    return types.SimpleNamespace(
        root=root, saved_model=saved_model, output=output, summary=summary, paths=paths, serve=serve
    )


def test_the_component_writes_every_format_and_its_summary(converted):
    assert sorted(os.listdir(converted.output.uri)) == sorted(
        [
            "conversion.json",
            "labels.txt",
            "model_float16.tflite",
            "model_float32.tflite",
            "model_int8.tflite",
        ]
    )
    summary = converted.summary
    assert summary["formats"] == list(converter.FORMATS)
    assert summary["files"] == {fmt: f"model_{fmt}.tflite" for fmt in converter.FORMATS}
    assert summary["sizes_bytes"] == {
        fmt: os.path.getsize(path) for fmt, path in converted.paths.items()
    }
    assert summary["input_size"] == SIZE
    assert summary["labels"] == CLASSES
    assert summary["resize_mode"] == "stretch"  # read from the Transform graph itself
    assert summary["num_calibration_images"] == NUM_CALIBRATION
    assert summary["outputs"] == list(converter.OUTPUT_NAMES)
    assert (
        summary["max_detections"],
        summary["score_threshold"],
        summary["iou_threshold"],
        summary["use_regular_nms"],
    ) == (K, 0.05, 0.5, False)
    assert converted.output.get_string_custom_property("formats") == "float32,float16,int8"
    print("sizes (bytes):", summary["sizes_bytes"])


@pytest.mark.parametrize("fmt", converter.FORMATS)
def test_every_format_has_the_runtime_output_order_and_shapes(converted, fmt):
    described = converter.describe(converted.paths[fmt])
    assert "error" not in described
    assert described["outputs"] == {
        "locations": {"shape": [1, K, 4], "dtype": "float32"},
        "classes": {"shape": [1, K], "dtype": "float32"},
        "scores": {"shape": [1, K], "dtype": "float32"},
        "count": {"shape": [1], "dtype": "float32"},
    }
    names = [
        d["name"] for d in interpreter.make_interpreter(converted.paths[fmt]).get_output_details()
    ]
    assert names == list(converter.OUTPUT_NAMES)
    model_input = described["input"]
    assert model_input["shape"] == [1, SIZE, SIZE, 3]
    if fmt == "int8":
        # Raw pixels: (q - 128) / 127.5, whatever range the calibration images covered.
        assert model_input["dtype"] == "uint8"
        assert model_input["quantization"] == {"scale": pytest.approx(1 / 127.5), "zero_point": 128}
    else:
        assert model_input["dtype"] == "float32"


def test_quantized_formats_are_smaller(converted):
    sizes = converted.summary["sizes_bytes"]
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert sizes["int8"] < 0.5 * sizes["float32"]


@pytest.mark.parametrize("fmt", converter.FORMATS)
def test_metadata_carries_labels_and_normalization(converted, fmt):
    """Read back with tflite-support's MetadataDisplayer."""
    metadata = converter.read_metadata(converted.paths[fmt])
    assert metadata["files"] == ["labels.txt"]
    assert metadata["labels"] == CLASSES
    graph = metadata["json"]["subgraph_metadata"][0]
    assert metadata["json"]["name"] == "ObjectDetector"
    (norm,) = graph["input_tensor_metadata"][0]["process_units"]
    assert norm["options"] == {"mean": [127.5], "std": [127.5]}
    assert [t["name"] for t in graph["output_tensor_metadata"]] == [
        "location",
        "category",
        "score",
        "number of detections",
    ]
    category = graph["output_tensor_metadata"][1]
    assert category["associated_files"][0]["name"] == "labels.txt"
    # What a client must do to an image, in words: the Transform's resize, the input's range.
    described = graph["input_tensor_metadata"][0]["description"]
    assert f"Resize the whole RGB image to {SIZE} x {SIZE}" in described
    assert "aspect ratio is NOT kept" in described
    assert ("uint8 RGB pixels 0-255" in described) == (fmt == "int8")
    assert "class-agnostic NMS, one class per box" in metadata["json"]["description"]


@pytest.mark.parametrize("example_index", [0, 1])
def test_float32_tflite_matches_the_savedmodel_serving_signature(converted, example_index):
    """Same image: TFLiteDetector (stretch resize, normalize, TFLite op, +1 on classes, clip)
    against the SavedModel's serving_default (Transform graph, detector, decode_detections)."""
    data, pixels = decoded_png(example_index)
    expected = serving_form(converted.serve(image_bytes=tf.constant([data])))
    got = interpreter.TFLiteDetector(converted.paths["float32"]).detect(pixels)
    assert expected["count"] > 50  # the biased anchor shape fires across the image
    assert set(expected["classes"][: expected["count"]]) == {float(FIRING_COLUMN)}
    assert_same_detections(got, expected)


def test_float16_and_int8_find_what_float32_finds(converted):
    _, pixels = decoded_png(0)
    float32 = interpreter.TFLiteDetector(converted.paths["float32"]).detect(pixels)
    float16 = interpreter.TFLiteDetector(converted.paths["float16"]).detect(pixels)
    assert_same_detections(float16, float32, box_atol=1e-2, score_atol=1e-2)
    int8 = interpreter.TFLiteDetector(converted.paths["int8"]).detect(pixels)
    n = int8["count"]
    assert n > 0.8 * float32["count"]
    assert set(int8["classes"][:n]) == {float(FIRING_COLUMN)}
    # Each int8 box lies near one of float32's (same anchors, quantized codes).
    for box in int8["boxes"][:n]:
        assert np.abs(float32["boxes"][: float32["count"]] - box).max(axis=1).min() < 0.05


def test_latency_with_and_without_xnnpack(converted):
    for fmt, path in converted.paths.items():
        for xnnpack in (True, False):
            ms = interpreter.measure_latency(path, threads=1, runs=5, warmup=1, use_xnnpack=xnnpack)
            assert 0.0 < ms < 1000.0
            print(f"{fmt} xnnpack={xnnpack}: {ms:.2f} ms")


def test_the_component_declares_its_channels_and_checks_formats():
    from tfx import types as tfx_types
    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.artifacts import TFLiteModels
    from litedet.components.tflite import component

    channels = dict(
        model=tfx_types.Channel(type=standard_artifacts.Model),
        examples=tfx_types.Channel(type=standard_artifacts.Examples),
        transform_graph=tfx_types.Channel(type=standard_artifacts.TransformGraph),
        label_map=tfx_types.Channel(type=artifacts.LabelMap),
    )
    converter_component = component.TFLiteConverter(
        **channels, formats=["float32", "int8"], code_fingerprint="abc"
    )
    assert converter_component.outputs["tflite_models"].type is TFLiteModels
    assert TFLiteModels.TYPE_NAME == "litedet.TFLiteModels"
    assert json.loads(converter_component.exec_properties["formats"]) == ["float32", "int8"]
    assert converter_component.exec_properties["num_calibration_images"] == 100
    assert converter_component.exec_properties["code_fingerprint"] == "abc"
    with pytest.raises(ValueError, match="bfloat16"):
        component.TFLiteConverter(**channels, formats=["bfloat16"])


def test_a_savedmodel_without_saved_anchors_is_refused(hand_set, tmp_path):
    """tf.saved_model.save drops a tf.constant attribute: the converter must say so rather than
    guess anchors."""
    module = HandSetDetector(
        hand_set.codes, hand_set.scores, hand_set.anchors, anchors_type=tf.constant
    )
    tf.saved_model.save(
        module,
        str(tmp_path / "saved"),
        signatures={export.PREPROCESSED_SIGNATURE: module.detect_preprocessed},
    )
    with pytest.raises(ValueError, match="tf.Variable"):
        converter.convert(str(tmp_path / "saved"), str(tmp_path / "out"), CLASSES)
