"""Data validation for ingest (the job of TFX's ExampleValidator), written to `data_report.json`.

Checks the decoded dataset on its own (one image shape, every class present, class balance, duplicates,
leakage between training and testing, invalid files, data age) and, given the previous version's report,
against it (changes of image shape, mode or class list, and distribution shift of class priors, mean
intensity and ink fraction).
Every check records its value, threshold, outcome (pass, warn, fail) and a reason a person can read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from mnist_mlops import features
from mnist_mlops.dataset import classes_of, describe_shape

MAX_CLASS_IMBALANCE = 2.0
"""Largest allowed ratio between the most and the least frequent class (MNIST itself is 1.24)."""

MAX_LISTED_INVALID = 1000
_LISTED_EXAMPLES = 5
_MODES = {2: "L", 3: "RGB"}  # by the length of the image shape


@dataclass(frozen=True)
class Policy:
    """The thresholds and policies that turn measurements into outcomes (component parameters)."""

    max_age_days: int
    on_stale: str
    on_invalid: str
    max_invalid_fraction: float
    max_prior_shift: float
    max_stat_shift: float
    on_mixed_shape: str


def check(name: str, outcome: str, value: Any, threshold: Any, reason: str) -> dict[str, Any]:
    return {"name": name, "outcome": outcome, "value": value, "threshold": threshold, "reason": reason}


def split_statistics(
    image_shape: tuple[int, ...],
    labels: np.ndarray,
    digests: np.ndarray,
    class_histograms: np.ndarray,
    classes: list[str],
    *,
    converted: int,
    resized: int,
) -> dict:
    """The statistics of one split that the report keeps and later versions compare against, from its
    labels, image digests and `features.class_pixel_histograms` (never the images themselves)."""
    counts = features.class_counts(labels, len(classes))
    unique = len(np.unique(digests.view(np.dtype((np.void, 32))).ravel())) if len(digests) else 0
    histogram = class_histograms.sum(axis=0)
    pixel_mean, pixel_std = features.histogram_moments(histogram)
    return {
        "count": len(labels),
        "image_shape": list(image_shape),
        "mode": _MODES[len(image_shape)],
        "classes": classes,
        "class_counts": counts,
        "class_priors": features.class_priors(labels, len(classes)),
        "pixel_mean": pixel_mean,
        "pixel_std": pixel_std,
        "ink_fraction": float(histogram[features.INK_THRESHOLD :].sum() / max(histogram.sum(), 1)),
        "duplicates": len(labels) - unique,
        "converted": converted,
        "resized": resized,
    }


def leakage_count(train_digests: np.ndarray, test_digests: np.ndarray) -> int:
    """Testing images whose exact pixels also appear in training."""
    as_keys = np.dtype((np.void, 32))
    train = train_digests.view(as_keys).ravel()
    test = test_digests.view(as_keys).ravel()
    return int(np.isin(test, train).sum())


def data_checks(
    splits: dict[str, dict],
    *,
    invalid: list[dict[str, str]],
    odd_shapes: list[dict[str, Any]],
    candidates: int,
    leakage: int,
    newest_source_time: datetime,
    now: datetime,
    policy: Policy,
) -> list[dict[str, Any]]:
    """The checks that need only this dataset."""
    checks = []
    for name, stats in splits.items():
        if stats["count"] == 0:
            checks.append(check(f"{name}_not_empty", "fail", 0, 1, f"the {name} split has no usable images"))
    invalid_fraction = len(invalid) / candidates if candidates else 0.0
    if not invalid:
        checks.append(check("invalid_files", "pass", 0, policy.max_invalid_fraction, "every image decoded"))
    elif policy.on_invalid == "fail":
        checks.append(
            check(
                "invalid_files", "fail", len(invalid), 0, f"{len(invalid)} invalid files and on_invalid=fail"
            )
        )
    elif invalid_fraction > policy.max_invalid_fraction:
        checks.append(
            check(
                "invalid_files",
                "fail",
                invalid_fraction,
                policy.max_invalid_fraction,
                f"{invalid_fraction:.4%} of the images are invalid, more than the "
                f"{policy.max_invalid_fraction:.4%} on_invalid=skip allows",
            )
        )
    else:
        checks.append(
            check(
                "invalid_files",
                "warn",
                invalid_fraction,
                policy.max_invalid_fraction,
                f"skipped {len(invalid)} invalid files (on_invalid=skip)",
            )
        )
    checks.append(shape_check(odd_shapes, splits["training"]["image_shape"], policy))
    for name, stats in splits.items():
        missing = [
            label for label, count in zip(stats["classes"], stats["class_counts"], strict=True) if not count
        ]
        if missing:
            reason = f"{name} has no images of class {', '.join(repr(label) for label in missing)}"
            checks.append(check(f"{name}_labels", "fail", missing, "every class", reason))
            continue
        ratio = max(stats["class_counts"]) / min(stats["class_counts"])
        outcome = "pass" if ratio <= MAX_CLASS_IMBALANCE else "warn"
        checks.append(
            check(
                f"{name}_class_balance",
                outcome,
                round(ratio, 4),
                MAX_CLASS_IMBALANCE,
                f"largest/smallest class = {ratio:.2f}",
            )
        )
        outcome = "pass" if stats["duplicates"] == 0 else "warn"
        checks.append(
            check(
                f"{name}_duplicates",
                outcome,
                stats["duplicates"],
                0,
                f"{stats['duplicates']} images in {name} repeat another image of {name}",
            )
        )
    checks.append(
        check(
            "train_test_leakage",
            "pass" if leakage == 0 else "warn",
            leakage,
            0,
            f"{leakage} testing images also appear in training",
        )
    )
    age_days = (now - newest_source_time).total_seconds() / 86400
    if age_days < -1:
        reason = f"newest source file claims {newest_source_time.isoformat()}, in the future: age unknown"
        checks.append(check("data_age", "fail", round(age_days, 2), policy.max_age_days, reason))
        return checks
    stale = age_days > policy.max_age_days
    checks.append(
        check(
            "data_age",
            ("fail" if policy.on_stale == "fail" else "warn") if stale else "pass",
            round(age_days, 2),
            policy.max_age_days,
            f"newest source file is from {newest_source_time.date()}, {age_days:.0f} days old"
            + (f" (older than {policy.max_age_days} days, on_stale={policy.on_stale})" if stale else ""),
        )
    )
    return checks


def shape_check(odd_shapes: list[dict[str, Any]], image_shape: list[int], policy: Policy) -> dict[str, Any]:
    """Whether every image has the dataset's (most common) shape; those that have not are counted by
    shape and named, and fail the check unless on_mixed_shape=resize brought them to it."""
    expected = describe_shape(image_shape)
    if not odd_shapes:
        return check("image_shapes", "pass", 0, 0, f"every image is {expected}")
    found = Counter(describe_shape(item["shape"]) for item in odd_shapes)
    kinds = ", ".join(f"{shape} ({count})" for shape, count in found.most_common())
    examples = ", ".join(
        f"{item['path']} ({describe_shape(item['shape'])})" for item in odd_shapes[:_LISTED_EXAMPLES]
    )
    count = f"{len(odd_shapes)} image{'s' if len(odd_shapes) > 1 else ''}"
    if policy.on_mixed_shape == "resize":
        reason = (
            f"resized or converted {count} to {expected} (on_mixed_shape=resize): {kinds}; e.g. {examples}"
        )
        return check("image_shapes", "warn", len(odd_shapes), 0, reason)
    reason = (
        f"{count} of another shape than most, {expected}: {kinds}; e.g. {examples}; "
        "on_mixed_shape=resize would resize and convert them"
    )
    return check("image_shapes", "fail", len(odd_shapes), 0, reason)


def reference_checks(splits: dict[str, dict], reference: dict, policy: Policy) -> list[dict[str, Any]]:
    """Schema changes and distribution shift against the previous version's report."""
    checks = []
    for name, stats in splits.items():
        previous = reference["splits"].get(name)
        if previous is None:
            checks.append(check(f"{name}_schema", "warn", name, None, f"the reference has no {name} split"))
            continue
        changes = [
            f"{key} {previous[key]} -> {stats[key]}"
            for key in ("image_shape", "mode")
            if previous[key] != stats[key]
        ]
        previous_classes = classes_of(previous)
        if previous_classes != stats["classes"]:
            changes.append(f"classes {previous_classes} -> {stats['classes']}")
        checks.append(
            check(
                f"{name}_schema",
                "warn" if changes else "pass",
                changes,
                [],
                "; ".join(changes) if changes else "same image shape, mode and classes as the reference",
            )
        )
        distance = _prior_distance(stats, previous)
        checks.append(
            check(
                f"{name}_class_prior_shift",
                "warn" if distance > policy.max_prior_shift else "pass",
                round(distance, 6),
                policy.max_prior_shift,
                f"total variation distance of class priors from the reference = {distance:.4f}",
            )
        )
        for key in ("pixel_mean", "ink_fraction"):
            shift = _relative_change(stats[key], previous[key])
            checks.append(
                check(
                    f"{name}_{key}_shift",
                    "warn" if shift > policy.max_stat_shift else "pass",
                    round(shift, 6),
                    policy.max_stat_shift,
                    f"{key} {previous[key]:.4f} -> {stats[key]:.4f} ({shift:.2%} relative change)",
                )
            )
    return checks


def _prior_distance(stats: dict, previous: dict) -> float:
    """Total variation of the class priors, class by name: a class only one report has counts as 0 in
    the other (with the same classes, the classes' own order, so equal reports give exactly 0)."""
    now = dict(zip(stats["classes"], stats["class_priors"], strict=True))
    then = dict(zip(classes_of(previous), previous["class_priors"], strict=True))
    names = [*now, *(name for name in then if name not in now)]
    return features.total_variation(
        [now.get(name, 0.0) for name in names], [then.get(name, 0.0) for name in names]
    )


def _relative_change(now: float, then: float) -> float:
    return abs(now - then) / max(abs(then), 1e-12)


def overall_outcome(checks: list[dict[str, Any]]) -> str:
    outcomes = {item["outcome"] for item in checks}
    return "fail" if "fail" in outcomes else "warn" if "warn" in outcomes else "pass"
