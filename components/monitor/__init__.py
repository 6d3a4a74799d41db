"""monitor: request log + training baseline -> drift, quality and latency checks, alert, retrain."""

from mnist_mlops.components.monitor.component import monitor

__all__ = ["monitor"]
