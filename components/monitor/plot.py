"""drift.png: the input features over time against the training baseline, so a reader sees when drift began.

The scored images are cut, in time order, into equal-count buckets (equal time spans would leave quiet
hours empty and busy ones noisy); per bucket: each feature's mean against the baseline's mean +- one
standard deviation, and each feature's PSI against its alert threshold.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import drift
from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.plots import figure_bytes

BUCKETS = 12


def drift_over_time(
    times: list[datetime],
    values: dict[str, np.ndarray],
    baseline: dict[str, Any],
    psi_thresholds: dict[str, float],
    target: Path,
) -> None:
    """`times` and each array of `values` hold one entry per scored image, oldest first; `baseline` is the
    baseline statistics' `features`."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8))
    axes = figure.subplots(len(values) + 1, 1, sharex=True)
    buckets = np.array_split(np.arange(len(times)), min(BUCKETS, len(times))) if times else []
    positions = np.arange(len(buckets))
    for axis, (name, served) in zip(axes[:-1], values.items(), strict=True):
        reference = baseline[name]
        axis.axhspan(
            reference["mean"] - reference["std"],
            reference["mean"] + reference["std"],
            color="tab:green",
            alpha=0.2,
            label="baseline mean +- std",
        )
        axis.axhline(reference["mean"], color="tab:green")
        axis.plot(positions, [served[rows].mean() for rows in buckets], marker="o", label="served mean")
        axis.set_ylabel(name)
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    psi_axis = axes[-1]
    for name, served in values.items():
        reference = baseline[name]
        psi = [
            drift.psi(drift.binned_fractions(served[rows], reference["bin_edges"]), reference["fractions"])
            for rows in buckets
        ]
        line = psi_axis.plot(positions, psi, marker="o", label=f"PSI {name}")[0]
        psi_axis.axhline(psi_thresholds[name], color=line.get_color(), linestyle="--", linewidth=1)
    psi_axis.set_ylabel("PSI (dashed: alert)")
    psi_axis.set_yscale("symlog", linthresh=0.1)
    psi_axis.set_ylim(bottom=0)
    psi_axis.grid(alpha=0.3)
    psi_axis.set_xticks(positions, [times[rows[-1]].strftime("%m-%d %H:%M:%S") for rows in buckets])
    psi_axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    psi_axis.set_xlabel(f"bucket end (UTC), {len(times)} images in {len(buckets)} equal-count buckets")
    if buckets:
        psi_axis.legend(loc="upper left", fontsize=8)
    else:
        psi_axis.text(0.5, 0.5, "no scored images", transform=psi_axis.transAxes, ha="center")
    figure.suptitle("Input drift over time against the training baseline")
    atomic_write_bytes(target, figure_bytes(figure))
