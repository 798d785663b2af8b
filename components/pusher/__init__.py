"""LitedetPusher: blessed models -> a versioned, atomic model store -> a model registry.

store.py (versions, manifest, atomic claims), registry.py (MLflow, Kubeflow Model Registry),
executor.py and component.py (the TFX component). Importing this package imports neither TFX nor
TensorFlow: store.py and registry.py work on their own.
"""
