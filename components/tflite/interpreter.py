"""Runs a converted detector (components/tflite/converter.py) with the stock TFLite interpreter,
returning what the SavedModel's serving_default returns, and measures its latency.

Class labels: the post-process op numbers classes from 0 over the C object classes (it skips
the background column 0 of the scores), so its class index k is the project's label k + 1 and
line k of labels.txt. TFLiteDetector adds the 1, as serving_default does (float 1-based labels,
0 on padding rows).

XNNPACK: in TF 2.16 `tf.lite.Interpreter`'s default op resolver (OpResolverType.AUTO = BUILTIN)
applies the XNNPACK delegate to the float and int8 ops it supports ("Created TensorFlow Lite
XNNPACK delegate for CPU"); OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES runs the same builtin
kernels without it. The post-process custom op always runs on the builtin kernel.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from litedet.components.detection import preprocessing
from litedet.components.features import RESIZE_MODES


def make_interpreter(
    path: str, num_threads: int = 1, use_xnnpack: bool = True
) -> tf.lite.Interpreter:
    resolver = (
        tf.lite.experimental.OpResolverType.AUTO
        if use_xnnpack
        else tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = tf.lite.Interpreter(
        model_path=path, num_threads=num_threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    return interpreter


def quantize(values: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float values -> the integer tensor of the given quantization (rounded, saturated)."""
    info = np.iinfo(dtype)
    quantized = np.round(np.asarray(values, np.float32) / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def pixels(model_input: np.ndarray) -> np.ndarray:
    """Model input in [-1, 1] (components/detection/preprocessing.py, normalize) -> the uint8 RGB
    pixels it came from, rounded: what a client hands a uint8 input."""
    values = (np.asarray(model_input, np.float32) + 1.0) * 127.5
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


class TFLiteDetector:
    """A converted detector on RGB uint8 images of any size.

    `detect(image)` resizes like the project's Transform (`resize_mode` "stretch": bilinear
    without antialiasing, each axis on its own; "letterbox": aspect kept, mid-gray padding, boxes
    mapped back to the original image), normalizes to [-1, 1]
    (components/detection/preprocessing.py), hands a uint8 input the resized pixels rounded, as
    on-device clients do (an int8 input is quantized), runs the model and returns numpy arrays:
      boxes   [K, 4] ymin, xmin, ymax, xmax normalized to the image, clipped to [0, 1]
      classes [K] float32 1-based labels (op index + 1), 0 on padding rows
      scores  [K] float32, 0 on padding rows
      count   int
    """

    def __init__(
        self,
        path: str,
        num_threads: int = 1,
        use_xnnpack: bool = True,
        resize_mode: str = "stretch",
    ):
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r} is not one of {RESIZE_MODES}")
        self.path = path
        self.resize_mode = resize_mode
        self.interpreter = make_interpreter(path, num_threads, use_xnnpack)
        (self._input,) = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        if len(self._outputs) != 4:
            raise ValueError(
                f"{path}: {len(self._outputs)} outputs, expected locations, classes, scores, count"
            )
        _, height, width, _ = self._input["shape"]
        if height != width:
            raise ValueError(f"{path}: non-square input {self._input['shape']}")
        self.image_size = int(height)
        self.input_dtype = np.dtype(self._input["dtype"])

    def run(self, model_input: np.ndarray) -> Dict[str, np.ndarray]:
        """The raw op outputs for one model-input image float32 [S, S, 3] in [-1, 1] (or a batch
        of one): locations (not clipped), 0-based classes, scores, count. A uint8 input gets the
        pixels, rounded (`pixels`)."""
        model_input = np.asarray(model_input, np.float32).reshape(self._input["shape"])
        if self.input_dtype == np.uint8:
            # What every client feeds a uint8 image input, whatever its quantization: the RGB
            # pixels, rounded (MediaPipe Tasks, the Task Library; docs/clients.md). The
            # converter pins that quantization to (pixel - 128) / 127.5.
            model_input = pixels(model_input)
        elif self.input_dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            model_input = quantize(model_input, self.input_dtype, scale, zero_point)
        self.interpreter.set_tensor(self._input["index"], model_input)
        self.interpreter.invoke()
        locations, classes, scores, count = (
            self.interpreter.get_tensor(d["index"]) for d in self._outputs
        )
        return {
            "locations": locations[0],
            "classes": classes[0],
            "scores": scores[0],
            "count": int(count[0]),
        }

    def preprocess(self, image: np.ndarray):
        """RGB uint8 [H, W, 3] -> (model input [S, S, 3] float32, content window [4])."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        model_input, window = preprocessing.resize_to_input(
            tf.convert_to_tensor(image, tf.uint8), self.image_size, self.resize_mode
        )
        return model_input.numpy(), window.numpy()

    def detect(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        model_input, window = self.preprocess(image)
        return self.detections(self.run(model_input), window)

    @staticmethod
    def detections(
        raw: Dict[str, np.ndarray], window: Optional[np.ndarray] = None
    ) -> Dict[str, np.ndarray]:
        """Raw op outputs -> serving_default's form (see the class docstring)."""
        count = raw["count"]
        valid = np.arange(len(raw["scores"])) < count
        boxes = np.clip(raw["locations"], 0.0, 1.0)
        if window is not None:
            boxes = preprocessing.boxes_from_window(
                tf.constant(boxes), tf.constant(window, tf.float32)
            ).numpy()
        return {
            "boxes": np.where(valid[:, None], boxes, 0.0).astype(np.float32),
            "classes": np.where(valid, raw["classes"] + 1.0, 0.0).astype(np.float32),
            "scores": np.where(valid, raw["scores"], 0.0).astype(np.float32),
            "count": count,
        }


def measure_latency(
    path: str,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    use_xnnpack: bool = True,
    seed: int = 0,
) -> float:
    """Median wall time of one `invoke()` in milliseconds (preprocessing excluded), on a fixed
    random input; `warmup` runs first are not counted."""
    interpreter = make_interpreter(path, threads, use_xnnpack)
    (detail,) = interpreter.get_input_details()
    rng = np.random.default_rng(seed)
    if np.dtype(detail["dtype"]) == np.float32:
        data = rng.uniform(-1.0, 1.0, detail["shape"]).astype(np.float32)
    else:
        info = np.iinfo(detail["dtype"])
        data = rng.integers(info.min, info.max + 1, detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], data)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
