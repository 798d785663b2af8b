"""TFLite export of the detector: conversion (converter), a Python runner (interpreter) and the
TFX component that turns the Trainer's SavedModel into on-device models (component, executor).
"""

from typing import NamedTuple


class FormatSpec(NamedTuple):
    """What a TFLite format is. The converter and every reader dispatch on these fields, never
    on a format's name: a new format is one entry in FORMAT_SPECS (plus, for a new kind of
    quantization, one function in converter.QUANTIZERS)."""

    # "none": float32 throughout; "float16_weights": weights stored as float16, compute in
    # float32; "full_integer": post-training int8 quantization calibrated on training images.
    quantization: str
    # True: the input is uint8 raw pixels 0-255; False: float32 in [-1, 1].
    uint8_input: bool


# The on-device formats, in the order they are converted and listed. No TensorFlow import here:
# configuration and the CLI check formats on light paths.
FORMAT_SPECS = {
    "float32": FormatSpec(quantization="none", uint8_input=False),
    "float16": FormatSpec(quantization="float16_weights", uint8_input=False),
    "int8": FormatSpec(quantization="full_integer", uint8_input=True),
}
FORMATS = tuple(FORMAT_SPECS)
# Calibration for full-integer formats: this many training images, through the Transform graph.
DEFAULT_NUM_CALIBRATION_IMAGES = 100


def needs_calibration(formats) -> bool:
    """Whether any of `formats` needs representative images."""
    return any(FORMAT_SPECS[f].quantization == "full_integer" for f in formats)
