"""evaluate: challenger vs champion on current data against KPI thresholds. `evaluate` is the component."""

from mnist_mlops.components.evaluate.component import evaluate

__all__ = ["evaluate"]
