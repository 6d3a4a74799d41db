"""mnist-mlops: typed, containerized MLOps components (ingest, preprocess, ...) for AML and Kubeflow."""

__version__ = "0.1.0"
