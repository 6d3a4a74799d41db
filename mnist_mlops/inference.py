"""Running a compiled model function over many images: shared by train and evaluate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

PREDICT_BATCH = 2000
"""Images per call: large enough to amortize call overhead, small enough to bound memory."""


def predict_in_batches(predict: Callable[[np.ndarray], Any], images: np.ndarray) -> np.ndarray:
    """Probabilities for all `images`, calling `predict` (train's and evaluate's warmed tf.function)
    batch by batch."""
    return np.concatenate(
        [
            np.asarray(predict(images[start : start + PREDICT_BATCH]))
            for start in range(0, len(images), PREDICT_BATCH)
        ]
    )
