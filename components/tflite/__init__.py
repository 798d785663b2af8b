"""TFLite export of the detector: conversion (converter), a Python runner (interpreter) and the
TFX component that turns the Trainer's SavedModel into on-device models (component)."""

# The on-device formats, in the order they are converted and listed. No TensorFlow import here:
# configuration and the CLI check formats on light paths.
FORMATS = ("float32", "float16", "int8")
# int8 calibration: this many training images, through the Transform graph.
DEFAULT_NUM_CALIBRATION_IMAGES = 100
