"""batch_score: a folder or tarball of PNGs -> predictions CSV and summary. `batch_score` is the component."""

from mnist_mlops.components.batch_score.component import batch_score

__all__ = ["batch_score"]
