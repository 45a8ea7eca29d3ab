"""Sliding-window prediction with Gaussian blending."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .config import InferConfig
from .events import CancelToken, Event


def predict(checkpoint, image: np.ndarray, config: InferConfig | None = None, *,
            keep_probabilities: bool = True,
            cancel: CancelToken | None = None) -> Iterator[Event]:
    """Predict image (C, *spatial) with a Checkpoint. Yields Info/Progress, then a Done
    whose result is a Prediction."""
    raise NotImplementedError
