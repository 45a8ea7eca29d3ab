"""Training a U-Net from sparse annotations: a cancellable generator of typed events."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .config import Config
from .events import CancelToken, Event


class Trainer:
    """Train on one image (C, *spatial) with an annotation volume (*spatial).

    Usage::

        trainer = Trainer(image, annotation, config, spacing=(2.0, 1.0, 1.0))
        for event in trainer.run():      # Info, Step, Validation, Preview, Done
            ...
        trainer.save("model.safetensors")

    ``validation`` optionally gives (image, dense_reference) to validate on instead of
    held-out annotated slices (dense reference in the ordinary 0 = bg convention).
    ``resume`` is a loaded Checkpoint whose weights (and optimizer state) continue.
    The final Done event's ``result`` is the Checkpoint of the trained model.
    """

    def __init__(self, image: np.ndarray, annotation: np.ndarray, config: Config, *,
                 spacing=None, validation=None, resume=None,
                 cancel: CancelToken | None = None):
        raise NotImplementedError

    def set_preview(self, axis: int, index: int) -> None:
        """Ask for previews of slice ``index`` along ``axis`` (thread-safe)."""
        raise NotImplementedError

    def run(self) -> Iterator[Event]:
        raise NotImplementedError

    def checkpoint(self):
        """The current model as a Checkpoint (weights copied to the CPU)."""
        raise NotImplementedError

    def save(self, path) -> None:
        raise NotImplementedError
