"""The distances between two distributions that the monitor (served traffic against the training
baseline) and the evaluate gate (new training data against production's, and against traffic) use.

Both feature distances work on the baseline's own histogram bins (preprocess keeps only the binned
fractions, not the raw values), so served values are binned exactly as the training values were.
"""

from __future__ import annotations

import numpy as np

from mnist_mlops.features import total_variation

PSI_FLOOR = 1e-4
"""Empty bins get this share: PSI has a log of the ratio, and one image in a bin the baseline never saw
must count as a large, finite shift rather than an infinite one."""


def binned_fractions(values: np.ndarray, bin_edges: list[float]) -> np.ndarray:
    """Share of `values` per baseline bin; values outside the baseline range count in the end bins."""
    edges = np.asarray(bin_edges, dtype=np.float64)
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts / max(counts.sum(), 1)


def psi(served: np.ndarray, baseline: np.ndarray) -> float:
    """Population stability index of two binned distributions (0.1 notable, 0.2 the usual alert)."""
    p = np.maximum(np.asarray(served, dtype=np.float64), PSI_FLOOR)
    q = np.maximum(np.asarray(baseline, dtype=np.float64), PSI_FLOOR)
    return float(((p - q) * np.log(p / q)).sum())


def ks_distance(served: np.ndarray, baseline: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic on the bins: the largest gap between the two cumulative shares."""
    gap = np.cumsum(np.asarray(served, dtype=np.float64)) - np.cumsum(np.asarray(baseline, dtype=np.float64))
    return float(np.abs(gap).max())


def prediction_distance(classes: np.ndarray, class_priors: list[float]) -> float:
    """Total variation between the served class distribution and the training class priors, over the
    priors' classes; a served class index beyond them (a model answering other classes than its
    training data had) counts wholly as drift, never as a crash."""
    counts = np.bincount(classes.astype(np.int64), minlength=len(class_priors))
    priors = np.zeros(len(counts))
    priors[: len(class_priors)] = class_priors
    return total_variation((counts / max(counts.sum(), 1)).tolist(), priors.tolist())
