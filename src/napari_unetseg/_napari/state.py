"""State shared by the dock widgets of one viewer: the current model.

The Train widget publishes the model it trained (or loaded); the Predict widget offers it
as "current model". One :class:`ModelState` exists per viewer.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from psygnal import Signal


class ModelState:
    """The current model of a viewer. ``changed`` is emitted with the new checkpoint."""

    changed = Signal(object)

    def __init__(self) -> None:
        self.checkpoint: Any = None  # core.checkpoint.Checkpoint or None
        self.source: str = ""  # where it came from, for display

    def set(self, checkpoint: Any, source: str = "") -> None:
        self.checkpoint = checkpoint
        self.source = source
        self.changed.emit(checkpoint)

    def describe(self) -> str:
        return describe_checkpoint(self.checkpoint, self.source)


def describe_checkpoint(ckpt: Any, source: str = "") -> str:
    """One line about a checkpoint: task, classes, channels, iterations."""
    if ckpt is None:
        return "no model yet: train one or load a model file"
    cfg = ckpt.config
    text = (
        f"{ckpt.task} model, {cfg.model.in_channels} channel(s), "
        f"{cfg.model.spatial_dims}D, classes: {', '.join(ckpt.class_names)}, "
        f"{ckpt.iterations} iterations"
    )
    return f"{text} ({source})" if source else text


_STATES: dict[int, ModelState] = {}


def model_state(viewer: Any) -> ModelState:
    """The :class:`ModelState` of ``viewer`` (created on first use, freed with it)."""
    # napari hands each plugin widget its own proxy of the viewer: key on the viewer itself
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    key = id(viewer)
    state = _STATES.get(key)
    if state is None:
        state = _STATES[key] = ModelState()
        with contextlib.suppress(TypeError):  # no weak references: keep the state
            weakref.finalize(viewer, _STATES.pop, key, None)
    return state
