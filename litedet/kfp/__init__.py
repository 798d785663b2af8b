"""The Kubeflow Pipelines client and its verbs (compile, kfp upload|run|schedule|runs)."""
