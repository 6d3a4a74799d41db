"""evaluate's data-shift gates on their own (no model needed): when clients moved with the data, the
shifted data follows them and passes, recorded as such; when they did not, or nobody can tell, it stops."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlops import data_shift, features
from mnist_mlops.champions import Champion
from mnist_mlops.components.evaluate import shift
from mnist_mlops.components.preprocess.executor import baseline_statistics
from mnist_mlops.dataset import MNIST_CLASSES
from tests.datasets import digit_images

THRESHOLDS = {"max_reference_regression": 0.01}
SPLIT_ACCURACY = (0.55, 0.98)
"""The challenger, trained on the new kind of images, is much worse than the champion on its old split."""


def baseline(images: np.ndarray, labels: np.ndarray) -> dict:
    histograms = features.class_pixel_histograms(images, labels, len(MNIST_CLASSES))
    return baseline_statistics(images, labels, histograms, dataset_version="a" * 64)


def traffic(images: np.ndarray) -> dict:
    values = features.per_image(images)
    entries = [{name: float(column[row]) for name, column in values.items()} for row in range(len(images))]
    window = {"from": "2026-12-01T00:00:00Z", "to": "2026-12-06T00:00:00Z"}
    source = {"folder": "requests", "requests": len(images), "window": 1000, "time_range": window}
    return data_shift.traffic_summary(entries, source)


@pytest.fixture(scope="module")
def kinds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Yesterday's digits and the same kind of digits from a source with another intensity response."""
    images, labels = digit_images(20, seed=3)
    return {"old": (images, labels), "new": (((images * 0.4) + 120).astype(np.uint8), labels)}


def judge(kinds: dict, clients: str | None, *, accept: bool = False) -> tuple[list[dict], dict]:
    """The champion was trained on the old kind, the challenger on the new; clients send `clients`."""
    old_images, old_labels = kinds["old"]
    reference = shift.Reference(
        "mnist-mlops v1 was trained on dataset aaaa",
        "mnist-mlops v1",
        "1",
        "a" * 64,
        baseline(old_images, old_labels),
        (old_images, old_labels),
    )
    seen = traffic(kinds[clients][0]) if clients else None
    record = {"traffic": {"reason": "only 12 images served recently, fewer than 100"}}
    champion = Champion(record=record, model=None, reference=None, traffic=seen)
    return shift.judge(
        champion, reference, baseline(*kinds["new"]), SPLIT_ACCURACY, THRESHOLDS, accept=accept
    )


def outcomes(gates: list[dict]) -> dict[str, str]:
    return {gate["name"]: gate["outcome"] for gate in gates}


def test_shifted_data_that_follows_the_clients_passes_and_says_why(kinds):
    gates, section = judge(kinds, "new")
    assert section["decision"] == "followed_traffic"
    assert outcomes(gates) == {
        "max_data_shift": "pass",
        "max_traffic_shift": "pass",
        "max_reference_regression": "skipped",  # production's old split no longer describes the clients
    }
    reason = gates[0]["reason"]
    assert reason.startswith("training data shifted from mnist-mlops v1's") and "mean_intensity PSI" in reason
    assert "in step with the clients: what clients send now moved away from mnist-mlops v1's" in reason
    assert "not judged" in gates[2]["reason"] and "0.5500" in gates[2]["reason"]


def test_shifted_data_the_clients_did_not_follow_stops_promotion(kinds):
    gates, section = judge(kinds, "old")
    assert section["decision"] == "shifted"
    assert outcomes(gates) == dict.fromkeys(outcomes(gates), "fail")


def test_without_traffic_there_is_no_evidence_and_the_shift_stops_promotion(kinds):
    gates, section = judge(kinds, None)
    assert section["decision"] == "shifted"
    assert outcomes(gates) == {
        "max_data_shift": "fail",
        "max_traffic_shift": "no_reference",
        "max_reference_regression": "fail",
    }
    assert gates[1]["reason"] == "only 12 images served recently, fewer than 100"


def test_accepting_the_shift_records_the_decision(kinds):
    gates, section = judge(kinds, None, accept=True)
    assert section["decision"] == "accepted" and section["accepted"] is True
    assert outcomes(gates)["max_data_shift"] == "accepted"
    assert gates[0]["reason"].startswith(shift.ACCEPTED)
