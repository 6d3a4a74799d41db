"""PSI, KS and total variation against values worked out by hand, and how a comparison of two training
sets words its findings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_mlops import data_shift, features
from mnist_mlops.drift import (
    PSI_FLOOR,
    binned_fractions,
    ks_distance,
    prediction_distance,
    psi,
)


def test_psi_of_known_distributions():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.5 - 0.25) ln 2 + (0.5 - 0.75) ln(2/3)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.25, 0.75], [0.5, 0.5]) == pytest.approx(psi([0.5, 0.5], [0.25, 0.75]))  # symmetric


def test_psi_of_disjoint_bins_is_large_but_finite():
    expected = 2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR)
    assert psi([1.0, 0.0], [0.0, 1.0]) == pytest.approx(expected)


def test_ks_is_the_largest_gap_between_cumulative_shares():
    assert ks_distance([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # cumulative [0.5, 1, 1] against [0, 0.5, 1]
    assert ks_distance([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    assert ks_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def test_served_values_are_binned_on_the_baseline_edges_with_outliers_in_the_end_bins():
    edges = [0.0, 1.0, 2.0, 3.0]
    fractions = binned_fractions(np.array([-5.0, 0.5, 1.5, 2.5, 3.0, 99.0]), edges)
    assert fractions.tolist() == pytest.approx([2 / 6, 1 / 6, 3 / 6])
    assert binned_fractions(np.array([]), edges).tolist() == [0.0, 0.0, 0.0]


def test_prediction_drift_is_total_variation_against_the_priors():
    uniform = [0.1] * 10
    assert prediction_distance(np.arange(10), uniform) == pytest.approx(0.0)
    assert prediction_distance(np.zeros(50, dtype=int), uniform) == pytest.approx(0.9)
    # half 0s, half 1s against uniform: 0.5 * (0.4 + 0.4 + 8 * 0.1)
    assert prediction_distance(np.array([0, 1] * 5), uniform) == pytest.approx(0.8)


def test_prediction_drift_counts_the_classes_of_the_priors():
    """A 5-class baseline: the class count is the priors' own, not MNIST's ten."""
    priors = [0.4, 0.3, 0.1, 0.1, 0.1]
    served = np.repeat(np.arange(5), [40, 30, 10, 10, 10])
    assert prediction_distance(served, priors) == pytest.approx(0.0)
    # all class 4 against the priors: 0.5 * (0.4 + 0.3 + 0.1 + 0.1 + 0.9)
    assert prediction_distance(np.full(20, 4), priors) == pytest.approx(0.9)


def test_a_served_class_the_priors_lack_counts_wholly_as_drift():
    priors = [0.5, 0.5]
    # half class 7, which the training data never had: 0.5 * (0.25 + 0.25 + 0.5)
    assert prediction_distance(np.array([0, 1, 7, 7]), priors) == pytest.approx(0.5)


def baseline(class_priors: list[float]) -> dict:
    """A `baseline_statistics` of identical images but for the class priors."""
    values = np.full(10, 100.0)
    return {
        "class_priors": class_priors,
        "features": {name: features.feature_histogram(name, values) for name in features.PER_IMAGE},
        "intensity_histogram": [1 / 256] * 256,
    }


def test_class_priors_compare_class_by_class_and_findings_say_which_side_of_the_limit():
    findings = data_shift.compare_training_data(
        baseline([0.1] * 10), baseline([0.2, 0.0] * 5), data_shift.DEFAULT_LIMITS
    )
    assert [finding["feature"] for finding in findings] == [
        "class_priors",
        *features.PER_IMAGE,
        "pixel_values",
    ]
    class_priors, *alike = findings
    # 0.5 * (5 * 0.1 + 5 * 0.1)
    assert (class_priors["value"], class_priors["shifted"]) == (pytest.approx(0.5), True)
    assert data_shift.describe(class_priors) == "class_priors total variation 0.5 > 0.05"
    assert not any(finding["shifted"] for finding in alike)  # the images themselves are alike
    assert data_shift.describe(alike[0]) == "mean_intensity PSI 0 <= 0.2 (mean 100 -> 100)"
