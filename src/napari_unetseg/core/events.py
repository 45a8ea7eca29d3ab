"""Typed events that long-running work yields, and cooperative cancellation.

Training and prediction are generators of these small events. The napari widgets turn
them into layer and plot updates on the main thread; the command line turns the same
events into a progress bar. Events carry plain numpy arrays and numbers, never live
tensors, so they are safe to hand to another thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Cancelled(Exception):
    """Raised inside a worker when its :class:`CancelToken` was set."""


class CancelToken:
    """A flag that a GUI or signal handler sets and the work loop checks between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


@dataclass
class Info:
    """A one-line message for the user (device chosen, plan, a fallback taken)."""

    message: str
    level: str = "info"  # "info" or "warning"


@dataclass
class Progress:
    """Generic progress: ``done`` of ``total`` units (e.g. windows during prediction)."""

    done: int
    total: int
    stage: str = ""


@dataclass
class Step:
    """One optimisation step finished."""

    iteration: int  # 1-based
    total: int
    loss: float
    learning_rate: float
    voxels_per_second: float  # annotated patch voxels processed per second
    seconds: float  # wall time since training started


@dataclass
class Validation:
    """Metrics on the held-out annotated voxels (or the validation volume).

    ``dice`` and ``iou`` map class name -> value; ``mean_dice`` averages the foreground
    classes (for the instance task: the object interior class).
    """

    iteration: int
    dice: dict[str, float]
    iou: dict[str, float]
    mean_dice: float
    mean_iou: float
    loss: float | None = None


@dataclass
class Preview:
    """Softmax probabilities of one slice: ``probabilities`` is (K, H, W) float32."""

    iteration: int
    axis: int
    index: int
    probabilities: np.ndarray


@dataclass
class Done:
    """The work ended. ``result`` is what the work produced (see the yielding function)."""

    result: Any = None
    cancelled: bool = False
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Event = Info | Progress | Step | Validation | Preview | Done


def run_to_completion(events: Iterator[Event], callback=None) -> Done:
    """Drain an event generator, passing each event to ``callback``; return the Done."""
    done = None
    for ev in events:
        if callback is not None:
            callback(ev)
        if isinstance(ev, Done):
            done = ev
    if done is None:
        raise RuntimeError("the work ended without a Done event")
    return done
