"""SavedModel -> TFLite detector with the TFLite detection post-process op and ObjectDetector
metadata, as on-device runtimes (MediaPipe Tasks, the TFLite Task Library) load it.

What the converted model is (every format):
- input  `image` [1, S, S, 3]: float32 in [-1, 1] for "float32" and "float16"; uint8 raw pixels
  for "int8" (its quantization is fixed to scale 1/127.5, zero point 128, i.e. the same
  (pixel - 127.5) / 127.5 normalization up to half a pixel step). The metadata says mean 127.5,
  std 127.5: a runtime feeding 0-255 RGB pixels to the float input normalizes them to [-1, 1].
  Resizing to S x S is the runtime's job (the project's Transform stretches, bilinear, or
  letterboxes: see conversion.json's resize_mode, and the metadata's input description).
- the backbone and head from the SavedModel's `detect_preprocessed` signature, then the
  `TFLite_Detection_PostProcess` custom op (fused from a tf.function marked with
  experimental_implements: docs/toolchain.md), which decodes the box codes against the anchors with
  the box coder's scale factors (10, 10, 5, 5), skips the background column 0 of the scores and
  runs non-max suppression.
- outputs, in this order (MediaPipe Tasks reads them by position), all float32 in every format
  (the op dequantizes its inputs and computes in float):
    0 locations [1, K, 4]  ymin, xmin, ymax, xmax normalized to the model input, NOT clipped
    1 classes   [1, K]     0-based class index: 0 is label 1, the first line of labels.txt
    2 scores    [1, K]     sigmoid scores, rows past `count` are padding
    3 count     [1]        number of valid rows
  with K = max_detections. By default every row is a distinct box with one class: the op's
  class-agnostic ("fast") NMS, one class per box (`use_regular_nms=False`,
  max_classes_per_detection 1). Per-class ("regular") NMS repeats a box once for each class it
  keeps there, and MediaPipe Tasks deduplicates identical boxes: before 0.10.20 its
  DetectionsDeduplicateCalculator keeps pointers into a vector it is still growing, and a repeated
  box makes it write through a dangling pointer (a segmentation fault in ObjectDetector.detect);
  0.10.20 and later fold the repeats into one detection with several categories
  (docs/clients.md).
- the ObjectDetector metadata (tflite-support's writer): labels, the normalization (mean 127.5,
  std 127.5) and, in the model's and the input's descriptions, what a client must do to an image:
  the resize policy (stretch, or letterbox, which no stock client does for you) and the input
  range.
- "float16": weights stored as float16, dequantized at load time; compute, input and outputs
  stay float32. "int8": full-integer post-training quantization calibrated on
  `representative_images`; every op of the network runs in int8, the input is uint8 (quantized
  right away to int8), and the post-process op runs in float on its dequantized inputs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from litedet.components.detection import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_IOU_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
    box_coder,
)
from litedet.components.detection import anchors as anchors_lib
from litedet.components.detection.export import PREPROCESSED_SIGNATURE
from litedet.components.features import RESIZE_MODES
from litedet.components.tflite import FORMAT_SPECS, FORMATS

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = ("locations", "classes", "scores", "count")
INPUT_NAME = "image"
# Pixels [0, 255] -> [-1, 1] (detection/preprocessing.py, normalize), written into the metadata.
INPUT_MEAN = 127.5
INPUT_STD = 127.5
# The uint8 input of the int8 model: value = (q - 128) / 127.5, as close to normalize() as an
# integer zero point allows.
UINT8_INPUT_SCALE = 1.0 / 127.5
UINT8_INPUT_ZERO_POINT = 128
LABELS_FILE = "labels.txt"


RepresentativeImages = Union[Iterable[np.ndarray], Callable[[], Iterable[np.ndarray]]]


class ConversionError(RuntimeError):
    """The converted model is not what on-device runtimes expect (outputs, order, shapes)."""


def model_filename(fmt: str) -> str:
    return f"model_{fmt}.tflite"


def postprocess_attributes(
    num_classes: int,
    max_detections: int,
    score_threshold: float,
    iou_threshold: float,
    use_regular_nms: bool,
    scale_factors=box_coder.DEFAULT_SCALE_FACTORS,
) -> str:
    """The `experimental_implements` text that the converter fuses into the custom op."""
    y_scale, x_scale, h_scale, w_scale = (float(s) for s in scale_factors)
    attrs = [
        ("max_detections", "i", int(max_detections)),
        ("max_classes_per_detection", "i", 1),
        # Regular NMS keeps up to this many boxes of each class, as combined_non_max_suppression
        # does with max_output_size_per_class = max_detections in the SavedModel.
        ("detections_per_class", "i", int(max_detections)),
        ("use_regular_nms", "b", "true" if use_regular_nms else "false"),
        ("nms_score_threshold", "f", float(score_threshold)),
        ("nms_iou_threshold", "f", float(iou_threshold)),
        ("y_scale", "f", y_scale),
        ("x_scale", "f", x_scale),
        ("h_scale", "f", h_scale),
        ("w_scale", "f", w_scale),
        ("num_classes", "i", int(num_classes)),
    ]
    text = [f'name: "{POSTPROCESS_OP}"']
    for key, kind, value in attrs:
        shown = repr(value) if kind == "f" else value
        text.append(f'attr {{ key: "{key}" value {{ {kind}: {shown} }} }}')
    return " ".join(text)


def _postprocess_function(attributes: str):
    @tf.function(experimental_implements=attributes)
    def postprocess(box_encodings, class_scores, anchors):
        # A placeholder body: the converter replaces the whole function with the custom op
        # (the TF OD API's TFLite export does the same). Outputs in the op's own order.
        del box_encodings, class_scores, anchors
        return (
            tf.constant(0.0, name="locations"),
            tf.constant(0.0, name="classes"),
            tf.constant(0.0, name="scores"),
            tf.constant(0.0, name="count"),
        )

    return postprocess


class _Source:
    """The SavedModel's preprocessed signature and anchors, and what follows from them."""

    def __init__(self, saved_model_dir: str):
        self.model = tf.saved_model.load(saved_model_dir)
        if PREPROCESSED_SIGNATURE not in self.model.signatures:
            raise ValueError(
                f"{saved_model_dir} has no {PREPROCESSED_SIGNATURE!r} signature "
                f"(signatures: {sorted(self.model.signatures)})"
            )
        if not hasattr(self.model, "anchors"):
            raise ValueError(
                f"{saved_model_dir} has no `anchors` attribute: the exporting module must hold "
                "them in a tf.Variable (tf.saved_model.save drops a tf.constant attribute)"
            )
        self.signature = self.model.signatures[PREPROCESSED_SIGNATURE]
        (spec,) = self.signature.structured_input_signature[1].values()
        self.input_key = next(iter(self.signature.structured_input_signature[1]))
        _, height, width, channels = spec.shape.as_list()
        if height is None or height != width or channels != 3:
            raise ValueError(f"expected a square RGB input, got {spec.shape}")
        self.image_size = int(height)
        outputs = self.signature.structured_outputs
        self.num_anchors = int(outputs["box_encodings"].shape[1])
        self.num_classes = int(outputs["class_scores"].shape[-1]) - 1
        self.anchors = tf.convert_to_tensor(self.model.anchors, tf.float32)
        if self.anchors.shape != (self.num_anchors, 4):
            raise ValueError(
                f"anchors {self.anchors.shape} do not match the model's "
                f"{self.num_anchors} box encodings"
            )

    def detect_function(self, postprocess) -> tf.types.experimental.ConcreteFunction:
        anchors = anchors_lib.to_center_size(self.anchors)  # the op wants ycenter, xcenter, h, w
        size = self.image_size

        @tf.function(
            input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=INPUT_NAME)]
        )
        def detect(image):
            outputs = self.signature(**{self.input_key: image})
            return postprocess(outputs["box_encodings"], outputs["class_scores"], anchors)

        return detect.get_concrete_function()


def _calibration_dataset(representative_images: RepresentativeImages, size: int):
    def generate():
        images = (
            representative_images() if callable(representative_images) else representative_images
        )
        count = 0
        for image in images:
            image = np.asarray(image, np.float32)
            if image.shape != (size, size, 3):
                raise ValueError(
                    f"representative image of shape {image.shape}, expected "
                    f"{(size, size, 3)} in [-1, 1]"
                )
            count += 1
            yield [image[np.newaxis]]
        if not count:
            raise ValueError("representative_images yielded no image")

    return generate


def _no_quantization(converter, source, representative_images) -> None:
    pass


def _float16_weights(converter, source, representative_images) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _full_integer(converter, source, representative_images) -> None:
    if representative_images is None:
        raise ValueError("a full-integer format needs representative_images for calibration")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _calibration_dataset(
        representative_images, source.image_size
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    # Outputs stay float32: they are the post-process op's, which always computes in float.


# FormatSpec.quantization -> how the converter is set up for it.
QUANTIZERS = {
    "none": _no_quantization,
    "float16_weights": _float16_weights,
    "full_integer": _full_integer,
}


def _save_detect(source: _Source, concrete, directory: str) -> str:
    """The detect function (with the model's variables) as a SavedModel of one signature.

    Saved once and converted once per format: TFLiteConverter.from_concrete_functions would save
    and reload the same SavedModel for every format (two thirds of a conversion's time)."""
    tf.saved_model.save(source.model, directory, signatures={"serving_default": concrete})
    return directory


def _convert(source: _Source, detect_dir: str, fmt: str, representative_images) -> bytes:
    if fmt not in FORMAT_SPECS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(detect_dir)
    converter.allow_custom_ops = True
    QUANTIZERS[FORMAT_SPECS[fmt].quantization](converter, source, representative_images)
    return converter.convert()


def _postprocess_operator(model, subgraph):
    found = []
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        if custom == POSTPROCESS_OP:
            found.append(op)
    if len(found) != 1:
        raise ConversionError(
            f"expected one {POSTPROCESS_OP} op in the converted model, found "
            f"{len(found)}: was the experimental_implements function fused?"
        )
    return found[0]


def _fix_outputs(model_bytes: bytes, fmt: str) -> bytes:
    """Sets the model's outputs to the post-process op's own outputs, in its order (the converter
    emits them in another one), and for int8 pins the uint8 input to pixel values."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    op_outputs = [int(i) for i in _postprocess_operator(model, subgraph).outputs]
    if sorted(int(i) for i in subgraph.outputs) != sorted(op_outputs):
        raise ConversionError(
            f"the model's outputs {list(subgraph.outputs)} are not the {POSTPROCESS_OP} op's "
            f"{op_outputs}: something was added after the op"
        )
    subgraph.outputs = np.array(op_outputs, dtype=np.int32)
    for index, name in zip(op_outputs, OUTPUT_NAMES):
        subgraph.tensors[index].name = name.encode()
    if FORMAT_SPECS[fmt].uint8_input:
        _pin_uint8_input(model, subgraph)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _pin_uint8_input(model, subgraph) -> None:
    """Calibration sets the input's range from the representative images, which may not reach
    pure black or white. Runtimes feed a uint8 input raw pixels: set its quantization to
    (pixel - 128) / 127.5; the Quantize op that follows requantizes to the calibrated int8 range,
    so only the meaning of the uint8 values changes, not the network."""
    from tensorflow.lite.python import schema_py_generated as schema_fb

    (input_index,) = [int(i) for i in subgraph.inputs]
    tensor = subgraph.tensors[input_index]
    if tensor.type != schema_fb.TensorType.UINT8:
        raise ConversionError(f"the int8 model's input is of type {tensor.type}, not uint8")
    consumers = [op for op in subgraph.operators if input_index in list(op.inputs)]
    quantize = schema_fb.BuiltinOperator.QUANTIZE
    for op in consumers:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != quantize:
            raise ConversionError(
                "the int8 model's uint8 input feeds an op other than "
                "QUANTIZE: its quantization cannot be pinned safely"
            )
    tensor.quantization.scale = np.array([UINT8_INPUT_SCALE], np.float32)
    tensor.quantization.zeroPoint = np.array([UINT8_INPUT_ZERO_POINT], np.int64)


def input_description(image_size: int, resize_mode: str, uint8_input: bool) -> str:
    """What a client must do to an RGB image before the model (the metadata's input description):
    the resize policy of the project's Transform and the input range."""
    size = f"{image_size} x {image_size}"
    if resize_mode == "stretch":
        resize = (
            f"Resize the whole RGB image to {size}, each axis scaled on its own (the aspect ratio "
            "is NOT kept), bilinear: what MediaPipe Tasks and the TFLite Task Library do."
        )
    elif resize_mode == "letterbox":
        resize = (
            f"Letterbox the RGB image yourself: scale it to fit {size} with the aspect ratio "
            "kept (bilinear), centre it and pad with gray (128, 128, 128); map the boxes back "
            "from that content window. MediaPipe Tasks and the TFLite Task Library stretch "
            "instead: give them the letterboxed image."
        )
    else:
        raise ValueError(f"resize_mode {resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if uint8_input:
        values = (
            "Input: uint8 RGB pixels 0-255 as they are; the normalization below is the meaning "
            f"its quantization (scale 1/{INPUT_STD}, zero point {UINT8_INPUT_ZERO_POINT}) gives "
            "them, not a step to apply."
        )
    else:
        values = (
            f"Input: float32 (pixel - {INPUT_MEAN}) / {INPUT_STD}, i.e. [-1, 1] "
            "(the normalization below)."
        )
    return f"{resize} {values}"


def model_description(
    num_classes: int, max_detections: int, score_threshold: float, use_regular_nms: bool
) -> str:
    nms = (
        "per-class NMS: a box is repeated once per class it keeps (MediaPipe Tasks before "
        "0.10.20 crashes on repeated boxes; 0.10.20+ folds them into one detection)"
        if use_regular_nms
        else "class-agnostic NMS, one class per box: every row is a distinct box"
    )
    return (
        f"litedet SSD detector (MobileNetV2, SSDLite head), {num_classes} classes. "
        f"TFLite_Detection_PostProcess in the model: {nms}; at most {max_detections} boxes "
        f"scoring at least {score_threshold:g}. Outputs: boxes (ymin, xmin, ymax, xmax) "
        "normalized to the model input, not clipped; 0-based class index (line of labels.txt); "
        "sigmoid score; number of detections."
    )


def _write_metadata(
    model_bytes: bytes, labels_path: str, description: str, input_text: str
) -> bytes:
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as metadata_fb
    from tensorflow_lite_support.metadata.python.metadata_writers import (
        metadata_info,
        object_detector,
        writer_utils,
    )

    buffer = bytearray(model_bytes)
    writer = object_detector.MetadataWriter.create_from_metadata_info(
        buffer,
        general_md=metadata_info.GeneralMd(name="ObjectDetector", description=description),
        input_md=metadata_info.InputImageTensorMd(
            name="image",
            description=input_text,
            norm_mean=[INPUT_MEAN],
            norm_std=[INPUT_STD],
            color_space_type=metadata_fb.ColorSpaceType.RGB,
            tensor_type=writer_utils.get_input_tensor_types(buffer)[0],
        ),
        output_category_md=metadata_info.CategoryTensorMd(
            name="category",
            description="The categories of the detected boxes.",
            label_files=[metadata_info.LabelFileMd(file_path=labels_path)],
        ),
    )
    return bytes(writer.populate())


def _interpreter(model: Union[str, bytes]) -> tf.lite.Interpreter:
    if isinstance(model, (bytes, bytearray)):
        return tf.lite.Interpreter(model_content=bytes(model))
    return tf.lite.Interpreter(model_path=model)


def postprocess_options(model: Union[str, bytes]) -> Dict:
    """The post-process op's attributes as the converted model holds them (its flexbuffer custom
    options: max_detections, max_classes_per_detection, use_regular_nms, ...), as MediaPipe Tasks
    reads them."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.tools import flatbuffer_utils

    content = (
        model if isinstance(model, (bytes, bytearray)) else tf.io.gfile.GFile(model, "rb").read()
    )
    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    op = _postprocess_operator(parsed, parsed.subgraphs[0])
    return dict(flexbuffers.Loads(bytes(bytearray(np.asarray(op.customOptions, np.uint8)))))


def check_model(
    model: Union[str, bytes],
    max_detections: Optional[int] = None,
    one_box_per_row: bool = True,
) -> Dict:
    """Raises ConversionError unless the model's outputs are the post-process op's, in the order
    locations [1, K, 4], classes [1, K], scores [1, K], count [1] (float32), as MediaPipe Tasks
    and the Task Library read them, and (`one_box_per_row`) the op gives every row a box of its
    own: class-agnostic NMS, one class per box (MediaPipe Tasks before 0.10.20 crashes on a
    repeated box: module docstring). Returns the output details after one run on a blank
    image."""
    from tensorflow.lite.tools import flatbuffer_utils

    content = (
        model if isinstance(model, (bytes, bytearray)) else tf.io.gfile.GFile(model, "rb").read()
    )
    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = parsed.subgraphs[0]
    op_outputs = [int(i) for i in _postprocess_operator(parsed, subgraph).outputs]
    if one_box_per_row:
        options = postprocess_options(content)
        if options.get("use_regular_nms") or options.get("max_classes_per_detection") != 1:
            raise ConversionError(
                f"{POSTPROCESS_OP} with use_regular_nms={options.get('use_regular_nms')}, "
                f"max_classes_per_detection={options.get('max_classes_per_detection')}: a box "
                "can come out once per class, which crashes MediaPipe Tasks before 0.10.20 "
                "(docs/clients.md); convert with use_regular_nms=False"
            )
    outputs = [int(i) for i in subgraph.outputs]
    if outputs != op_outputs:
        raise ConversionError(
            f"output tensors {outputs} are not the {POSTPROCESS_OP} op's outputs {op_outputs} "
            f"in its order ({', '.join(OUTPUT_NAMES)}): runtimes that read outputs by position "
            "would mix them up"
        )
    interpreter = _interpreter(bytes(content))
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    details = interpreter.get_output_details()
    shapes = [tuple(int(d) for d in interpreter.get_tensor(d["index"]).shape) for d in details]
    k = shapes[0][1] if shapes and len(shapes[0]) == 3 else None
    expected = [(1, k, 4), (1, k), (1, k), (1,)]
    if shapes != expected or (max_detections is not None and k != max_detections):
        raise ConversionError(
            f"output shapes {shapes}, expected locations [1, K, 4], classes [1, K], scores "
            f"[1, K], count [1] with K = {max_detections if max_detections else 'K'}"
        )
    dtypes = [np.dtype(d["dtype"]).name for d in details]
    if dtypes != ["float32"] * 4:
        raise ConversionError(f"output dtypes {dtypes}, expected float32")
    return {
        name: {"shape": list(shape), "dtype": dtype}
        for name, shape, dtype in zip(OUTPUT_NAMES, shapes, dtypes)
    }


def read_labels(path: str) -> List[str]:
    with tf.io.gfile.GFile(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def convert(
    saved_model_dir: str,
    output_dir: str,
    labels: Union[Sequence[str], str],
    formats: Sequence[str] = FORMATS,
    representative_images: Optional[RepresentativeImages] = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    iou_threshold: float = DEFAULT_NMS_IOU_THRESHOLD,
    use_regular_nms: bool = False,
    resize_mode: str = "stretch",
) -> Dict[str, str]:
    """Converts the SavedModel into one `.tflite` file per format; returns {format: path}.

    Args:
      saved_model_dir: the Trainer's export (components/detection/export.py): its
        `detect_preprocessed` signature and `anchors` attribute are used.
      output_dir: where `model_<format>.tflite` and `labels.txt` are written.
      labels: class names of labels 1..C in order (or the path of a labels.txt); at least the
        model's C. They are packed into every model's metadata.
      formats: any of "float32", "float16", "int8".
      representative_images: for "int8": float32 [S, S, 3] model-input images in [-1, 1] (as
        the Transform makes them), a list or a callable returning a fresh iterable (a one-shot
        generator would be empty the second time it is read).
      max_detections: K, rows of every output.
      score_threshold, iou_threshold: the post-process op's NMS thresholds.
      use_regular_nms: False (the default): the op's class-agnostic NMS, one class per box, so
        that every row is a box of its own, as MediaPipe Tasks and the Task Library expect.
        True: per-class NMS, as the SavedModel's decode (a box may come out once per class):
        only for runtimes that take repeated boxes (not MediaPipe Tasks before 0.10.20, which
        crashes on them; docs/clients.md).
      resize_mode: the Transform's resize ("stretch" or "letterbox"), written into the
        metadata's input description: what a client must do to an image.
    """
    formats = list(formats)
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode {resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats {formats}: choose from {', '.join(FORMATS)}")
    if isinstance(labels, str):
        labels = read_labels(labels)
    labels = [str(label) for label in labels]
    source = _Source(saved_model_dir)
    if len(labels) < source.num_classes:
        raise ValueError(f"{len(labels)} labels for a model of {source.num_classes} classes")
    if len(labels) > source.num_classes:
        logging.warning(
            "%d labels for a model of %d classes: labels %s are never predicted",
            len(labels),
            source.num_classes,
            labels[source.num_classes :],
        )
    if use_regular_nms:
        logging.warning(
            "use_regular_nms=True: the converted models repeat a box once per class it keeps; "
            "MediaPipe Tasks before 0.10.20 crashes on them (docs/clients.md)"
        )
    attributes = postprocess_attributes(
        source.num_classes, max_detections, score_threshold, iou_threshold, use_regular_nms
    )
    description = model_description(
        source.num_classes, max_detections, score_threshold, use_regular_nms
    )
    concrete = source.detect_function(_postprocess_function(attributes))

    tf.io.gfile.makedirs(output_dir)
    with tempfile.TemporaryDirectory() as scratch:
        # The metadata records the file's base name: runtimes list it as "labels.txt".
        labels_path = os.path.join(scratch, LABELS_FILE)
        with open(labels_path, "w") as handle:
            handle.write("".join(f"{label}\n" for label in labels))
        tf.io.gfile.copy(labels_path, os.path.join(output_dir, LABELS_FILE), overwrite=True)
        detect_dir = _save_detect(source, concrete, os.path.join(scratch, "detect"))
        paths = {}
        for fmt in formats:
            model_bytes = _fix_outputs(
                _convert(source, detect_dir, fmt, representative_images), fmt
            )
            input_text = input_description(
                source.image_size, resize_mode, FORMAT_SPECS[fmt].uint8_input
            )
            model_bytes = _write_metadata(model_bytes, labels_path, description, input_text)
            check_model(model_bytes, max_detections, one_box_per_row=not use_regular_nms)
            path = os.path.join(output_dir, model_filename(fmt))
            with tf.io.gfile.GFile(path, "wb") as handle:
                handle.write(model_bytes)
            logging.info("TFLite %s model: %s (%d bytes)", fmt, path, len(model_bytes))
            paths[fmt] = path
    return paths


def describe(path: str) -> Dict:
    """Size, input and outputs of a converted model, its post-process op's attributes, and the
    files its metadata carries."""
    content = tf.io.gfile.GFile(path, "rb").read()
    interpreter = _interpreter(content)
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    scale, zero_point = detail["quantization"]
    info = {
        "path": path,
        "size_bytes": len(content),
        "input": {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        },
    }
    try:
        info["postprocess"] = postprocess_options(content)
        info["outputs"] = check_model(content, one_box_per_row=False)
    except ConversionError as error:
        info["outputs"] = None
        info["error"] = str(error)
    info["metadata"] = read_metadata(content)
    return info


def read_metadata(model: Union[str, bytes]) -> Dict:
    """The ObjectDetector metadata: its JSON form, the packed files' names and the labels."""
    from tensorflow_lite_support.metadata.python import metadata

    content = (
        model if isinstance(model, (bytes, bytearray)) else tf.io.gfile.GFile(model, "rb").read()
    )
    try:
        displayer = metadata.MetadataDisplayer.with_model_buffer(bytearray(content))
    except ValueError:
        return {}
    files = displayer.get_packed_associated_file_list()
    labels = None
    if LABELS_FILE in files:
        labels = displayer.get_associated_file_buffer(LABELS_FILE).decode().splitlines()
    return {"json": json.loads(displayer.get_metadata_json()), "files": files, "labels": labels}
