"""Does new training data still describe production? One set of measures for every comparison of two
image distributions: the production model's training data against the new data (evaluate's gate), and
what clients send now against either (the gate before promotion, the monitor after it).

Training data is described by preprocess's `baseline_statistics`; traffic by the scoring server's
per-image records, summarised by `traffic_summary`. Measures, each with a limit (kpi_thresholds'
`max_data_shift` replaces any of them):
- class_priors: total variation distance of the class shares (training data only; traffic has no labels)
- mean_intensity, ink_fraction: PSI of the per-image feature over the fixed bins of `features`
- pixel_values: PSI of the 256-value pixel histogram (training data only)
- mean_image: mean absolute per-pixel difference of the average images, 0-1 scale (training data only):
  moved, resized or rotated digits, which no intensity statistic sees
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_mlops import drift, features
from mnist_mlops.errors import UserInputError

DEFAULT_LIMITS = {
    "class_priors": 0.05,
    "mean_intensity": 0.2,
    "ink_fraction": 0.2,
    "pixel_values": 0.2,
    "mean_image": 0.02,
}
"""PSI 0.2 is the customary "significant shift"; class priors as ingest's default; two halves of MNIST's
training set differ by 0.0012 on the mean image, a two-pixel move gives 0.047."""
MEASURES = {
    "class_priors": "total variation",
    "mean_intensity": "PSI",
    "ink_fraction": "PSI",
    "pixel_values": "PSI",
    "mean_image": "mean absolute pixel difference",
}
MIN_TRAFFIC_IMAGES = 100
"""Fewer served images than this say nothing reliable about what clients send."""


def compare_training_data(
    reference: dict[str, Any], current: dict[str, Any], limits: dict[str, float]
) -> list[dict[str, Any]]:
    """A finding per measure between two `baseline_statistics` documents (reference first), of data
    of the same classes: evaluate compares only data of one model interface."""
    values = {
        "class_priors": features.total_variation(current["class_priors"], reference["class_priors"]),
        **{
            name: _feature_psi(current["features"][name], reference["features"][name])
            for name in features.PER_IMAGE
        },
        "pixel_values": drift.psi(current["intensity_histogram"], reference["intensity_histogram"]),
        "mean_image": _mean_image_distance(reference.get("mean_image"), current.get("mean_image")),
    }
    summaries = {
        name: (reference["features"][name]["mean"], current["features"][name]["mean"])
        for name in features.PER_IMAGE
    }
    return [
        _finding(name, value, limits, summaries.get(name))
        for name, value in values.items()
        if value is not None
    ]


def compare_with_traffic(
    traffic: dict[str, Any], training: dict[str, Any], limits: dict[str, float]
) -> list[dict[str, Any]]:
    """A finding per per-image feature between a `traffic_summary` and a `baseline_statistics` (the
    training data a model was or would be trained on)."""
    return [
        _finding(
            name,
            _feature_psi(traffic["features"][name], training["features"][name]),
            limits,
            (training["features"][name]["mean"], traffic["features"][name]["mean"]),
        )
        for name in features.PER_IMAGE
    ]


def traffic_summary(images: list[dict[str, Any]], source: dict[str, Any]) -> dict[str, Any]:
    """The per-image features of served images (request_record entries) as histograms on the training
    baseline's bins; `source` says where they came from (folder, time range, requests)."""
    return {
        "schema_version": 1,
        **source,
        "images": len(images),
        "features": {
            name: features.feature_histogram(
                name, np.array([image[name] for image in images], dtype=np.float64)
            )
            for name in features.PER_IMAGE
        },
    }


def shifted(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [finding for finding in findings if finding["shifted"]]


def worst(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """The finding furthest beyond (or closest to) its limit."""
    return max(
        findings, key=lambda finding: finding["value"] / finding["limit"] if finding["limit"] else np.inf
    )


def describe(finding: dict[str, Any]) -> str:
    """One finding in words, e.g. "mean_intensity PSI 15.9 > 0.2 (mean 33.3 -> 190.2)"."""
    comparison = ">" if finding["value"] > finding["limit"] else "<="
    text = (
        f"{finding['feature']} {finding['measure']} {finding['value']:.4g} {comparison} {finding['limit']:g}"
    )
    if finding["means"] is not None:
        before, after = finding["means"]
        text += f" (mean {before:.4g} -> {after:.4g})"
    return text


def _finding(
    name: str, value: float, limits: dict[str, float], means: tuple[float, float] | None
) -> dict[str, Any]:
    limit = float(limits.get(name, DEFAULT_LIMITS[name]))
    return {
        "feature": name,
        "measure": MEASURES[name],
        "value": round(float(value), 6),
        "limit": limit,
        "shifted": bool(value > limit),
        "means": None if means is None else [round(float(means[0]), 6), round(float(means[1]), 6)],
    }


def _feature_psi(current: dict[str, Any], reference: dict[str, Any]) -> float:
    if current["bin_edges"] != reference["bin_edges"]:
        raise UserInputError("the two feature histograms have different bins; cannot compare them")
    return drift.psi(current["fractions"], reference["fractions"])


def _mean_image_distance(reference: list | None, current: list | None) -> float | None:
    """None when either side predates the mean image or the shapes differ (other measures still hold)."""
    if reference is None or current is None:
        return None
    then, now = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    return float(np.abs(then - now).mean()) if then.shape == now.shape else None
