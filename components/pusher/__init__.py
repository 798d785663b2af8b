"""LitedetPusher: blessed models -> a versioned, atomic model store -> a model registry.

store.py (versions, manifest, atomic claims), registry.py (what a registered version says,
make_registry) with mlflow_registry.py (MlflowClient) and kubeflow_registry.py (the
`model-registry` client), registry_settings.py (no secret in the settings), executor.py and
component.py (the TFX component). Importing this package imports neither TFX nor TensorFlow, nor
a registry's client: store.py and the registries work on their own.
"""
