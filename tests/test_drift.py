"""PSI, KS and total variation against values worked out by hand, and the class priors of two training
sets compared class by class name."""

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
from mnist_mlops.errors import UserInputError


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


def class_finding(reference: dict, current: dict, **classes) -> dict:
    findings = data_shift.compare_training_data(reference, current, data_shift.DEFAULT_LIMITS, **classes)
    assert [finding["feature"] for finding in findings] == [
        "class_priors",
        *features.PER_IMAGE,
        "pixel_values",
    ]
    assert not any(finding["shifted"] for finding in findings[1:])  # the images themselves are alike
    return findings[0]


def test_class_priors_compare_by_class_name_not_by_index():
    fruit = ["apple", "bread", "cheese"]
    same = class_finding(
        baseline([0.5, 0.3, 0.2]),
        baseline([0.2, 0.5, 0.3]),
        reference_classes=fruit,
        current_classes=["cheese", "apple", "bread"],  # the same shares, labelled in another order
    )
    assert (same["value"], same["shifted"], same["measure"]) == (0.0, False, "total variation")
    moved = class_finding(
        baseline([0.5, 0.3, 0.2]), baseline([0.4, 0.4, 0.2]), reference_classes=fruit, current_classes=fruit
    )
    assert (moved["value"], moved["shifted"]) == (pytest.approx(0.1), True)


def test_other_classes_are_a_shift_named_whatever_the_distance():
    digits = [str(digit) for digit in range(10)]
    # one class more, with 1% of the images: a total variation of 0.01, under the 0.05 limit
    finding = class_finding(
        baseline([0.1] * 10),
        baseline([0.099] * 10 + [0.01]),
        reference_classes=digits,
        current_classes=[*digits, "10"],
    )
    assert finding["value"] == pytest.approx(0.01) and finding["shifted"]
    assert (
        finding["measure"] == "total variation by class name, the classes differ (only in the new data: 10)"
    )
    assert data_shift.describe(finding).endswith("0.01 <= 0.05")

    other = class_finding(
        baseline([0.1] * 10), baseline([0.2] * 5), current_classes=["a", "b", "c", "d", "e"]
    )  # an MNIST reference (classes named by index) against five named classes: disjoint
    assert other["value"] == pytest.approx(1.0) and other["shifted"]
    assert (
        "only in the reference: 0, 1, 2, 3, 4, 5 and 4 more; only in the new data: a, b, c, d, e"
        in (other["measure"])
    )


def test_mnist_baselines_without_class_names_compare_as_before():
    finding = class_finding(baseline([0.1] * 10), baseline([0.2, 0.0] * 5))
    assert (finding["value"], finding["measure"]) == (pytest.approx(0.5), "total variation")


def test_class_names_that_do_not_fit_the_priors_are_refused():
    with pytest.raises(UserInputError, match="new training data's baseline has 3 class priors for 2 classes"):
        class_finding(baseline([0.5, 0.5]), baseline([0.2, 0.3, 0.5]), current_classes=["a", "b"])
