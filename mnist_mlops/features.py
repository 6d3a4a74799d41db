"""Per-image statistics shared by data validation, baselines and production monitoring.

One definition here keeps "mean intensity" and "ink fraction" identical at ingest, in the baseline
written by preprocess and in the records the scoring server collects, so drift is never an artefact of
two formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INK_THRESHOLD = 128
"""A pixel at or above this 8-bit value counts as ink (MNIST digits are white on black)."""

PER_IMAGE = {"mean_intensity": (0.0, 255.0), "ink_fraction": (0.0, 1.0)}
"""The per-image features baselined in training and recorded per served image, with their value ranges."""
FEATURE_BINS = 20
"""Fixed-width bins over each feature's range: training data and traffic are binned alike, so their
histograms compare bin by bin (PSI)."""

_HISTOGRAM_CHUNK = 1 << 20


def mean_intensity(images: np.ndarray) -> np.ndarray:
    """Mean pixel value per image, on the 0-255 scale; `images` is uint8 (N, H, W) or (N, H, W, 3)."""
    return _rows(images).mean(axis=1, dtype=np.float64)


def ink_fraction(images: np.ndarray) -> np.ndarray:
    """Fraction of pixels per image that are ink."""
    flat = _rows(images)
    return np.count_nonzero(flat >= INK_THRESHOLD, axis=1) / max(flat.shape[1], 1)


def per_image(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-image feature of `images`, by name."""
    return {"mean_intensity": mean_intensity(images), "ink_fraction": ink_fraction(images)}


def feature_histogram(name: str, values: np.ndarray) -> dict[str, Any]:
    """Mean, std, fixed bin edges and the share of `values` per bin, for the per-image feature `name`;
    values outside its range count in the end bins."""
    low, high = PER_IMAGE[name]
    counts, edges = np.histogram(np.clip(values, low, high), bins=FEATURE_BINS, range=(low, high))
    return {
        "mean": float(values.mean()) if len(values) else 0.0,
        "std": float(values.std()) if len(values) else 0.0,
        "bin_edges": edges.tolist(),
        "fractions": (counts / max(counts.sum(), 1)).tolist(),
    }


def class_counts(labels: np.ndarray, class_count: int) -> list[int]:
    """Images per class, for labels 0 to `class_count` - 1."""
    return np.bincount(labels.astype(np.int64), minlength=class_count)[:class_count].tolist()


def class_priors(labels: np.ndarray, class_count: int) -> list[float]:
    counts = np.asarray(class_counts(labels, class_count), dtype=np.float64)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * class_count


def total_variation(p: list[float], q: list[float]) -> float:
    """Total variation distance between two class distributions: 0 identical, 1 disjoint."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def class_pixel_histograms(images: np.ndarray, labels: np.ndarray, class_count: int) -> np.ndarray:
    """(class_count, 256) counts of each 8-bit value per class (every channel), in one pass over the pixels.

    Keys `label * 256 + pixel` are counted in 1 MiB chunks: bincount widens its input to int64, and
    chunks keep that in cache. Every pixel statistic (global or per class, mean, std, histogram)
    follows exactly from these counts.
    """
    flat = _rows(images)
    counts = np.zeros(class_count * 256, dtype=np.int64)
    rows = max(_HISTOGRAM_CHUNK // max(flat.shape[1], 1), 1)
    for start in range(0, len(flat), rows):
        keys = labels[start : start + rows, None].astype(np.uint16) * 256 + flat[start : start + rows]
        counts += np.bincount(keys.reshape(-1), minlength=class_count * 256)[: class_count * 256]
    return counts.reshape(class_count, 256)


def histogram_moments(histogram: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (0-255 scale) of the pixels a 256-bin histogram counts."""
    total = histogram.sum()
    if not total:
        return 0.0, 0.0
    values = np.arange(len(histogram), dtype=np.float64)
    mean = float((histogram * values).sum() / total)
    variance = float((histogram * (values - mean) ** 2).sum() / total)
    return mean, variance**0.5


def _rows(images: np.ndarray) -> np.ndarray:
    """One row of pixel values per image; also for no images (reshape cannot infer -1 from size 0)."""
    return images.reshape(len(images), int(np.prod(images.shape[1:])))
