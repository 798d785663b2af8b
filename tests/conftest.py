"""Test-wide settings that must hold before TensorFlow is imported anywhere."""
import os

# TFX 1.16, tf.Transform and TFMA are built on Keras 2 (tf-keras); see shared STACK.md.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
