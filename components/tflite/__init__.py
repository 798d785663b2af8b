"""TFLite export of the detector: conversion (converter), a Python runner (interpreter) and the
TFX component that turns the Trainer's SavedModel into on-device models (component)."""
