"""train: preprocessed splits -> MLflow model, training summary, curves. `train` is the component."""

from mnist_mlops.components.train.component import train

__all__ = ["train"]
