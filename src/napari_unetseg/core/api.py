"""Plain-function forms of the engine's generators, for scripts and notebooks.

The widgets and the command line consume the event generators directly (progress,
previews, cancellation); a script usually wants the result. These functions run a
generator to its end and return what its ``Done`` event carries.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .events import run_to_completion


def load_model(path: str | os.PathLike) -> Any:
    """Load a model file (``.safetensors``) as a Checkpoint; never runs code."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(path)


def predict(
    model: Any,
    image: np.ndarray,
    config: Any = None,
    *,
    spacing: Any = None,
    keep_probabilities: bool = True,
    progress: bool = False,
) -> Any:
    """Segment one image with a trained model.

    Args:
        model: a Checkpoint, or the path of a model file.
        image: raw ``(C, Z, Y, X)`` / ``(C, Y, X)`` intensities (a single channel may
            omit C), the channels the model was trained on, in its order.
        config: an ``InferConfig`` (or a full ``Config``); default: the model's own.
        spacing: the image's voxel spacing (array order), for models trained at a
            target spacing; the result is always in the image's own grid.
        keep_probabilities: also return the ``(K, *spatial)`` probabilities.
        progress: draw a progress bar on stderr.

    Returns:
        A ``Prediction`` (``labels``, ``probabilities``, ``boundaries``, ``instances``).
    """
    from .checkpoint import Checkpoint
    from .config import Config
    from .inference import predict as predict_events
    from .progress import drain

    ckpt = model if isinstance(model, Checkpoint) else load_model(model)
    infer = config.infer if isinstance(config, Config) else config
    events = predict_events(
        ckpt, image, infer, spacing=spacing, keep_probabilities=keep_probabilities
    )
    if progress:
        return drain(events, "predicting").result
    return run_to_completion(events).result
