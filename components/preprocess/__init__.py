"""preprocess: dataset -> training-ready splits and baseline statistics. `preprocess` is the component."""

from mnist_mlops.components.preprocess.component import preprocess

__all__ = ["preprocess"]
