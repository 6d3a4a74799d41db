"""PSI, KS and total variation against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
