"""Device memory: windows per forward pass, and what to do when the device runs out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: At most this many windows per forward pass on the CPU when the config leaves it open
#: (a planned model stores 2). On 2 cores, the demo's model (8 feature maps) over the
#: sample's 32 windows of 48^3: 1 per pass 9.2-10.7 s, 2 per pass 1.7-2.7 s, 4 per pass
#: 1.8-2.4 s (three runs each): one window per pass is far slower, 2 and 4 are alike.
CPU_WINDOW_BATCH = 4
#: ... and at most this many window voxels per pass (bounds the activation memory).
CPU_BATCH_VOXELS = 1 << 19
#: Upper bound for the automatically chosen windows per forward pass on a GPU.
MAX_AUTO_WINDOW_BATCH = 8


class _ShrinkWindow(Exception):
    """Internal: a single window does not fit in device memory; retry with ``window``."""

    def __init__(self, window: tuple[int, ...]):
        super().__init__(str(window))
        self.window = window


def auto_window_batch(
    window: Sequence[int], device: torch.device | str, model: torch.nn.Module | None = None
) -> int:
    """Windows per forward pass when the config leaves it open.

    CPU (and MPS): up to :data:`CPU_WINDOW_BATCH` windows, no more than
    :data:`CPU_BATCH_VOXELS` voxels in all (one window at least).
    CUDA: as many as a rough activation estimate fits into half the free memory, at most
    :data:`MAX_AUTO_WINDOW_BATCH` (running out of memory later halves it again).
    ``window`` is spatial, ``(Z, Y, X)`` or ``(Y, X)``.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return int(max(1, min(CPU_WINDOW_BATCH, CPU_BATCH_VOXELS // max(1, math.prod(window)))))
    from ..device import available_memory

    width = 32
    if model is not None:
        widths = getattr(model, "widths", None)
        if widths:
            width = int(widths[0])
    # float16 activations: ~ 12 feature maps of the first level kept per voxel, both for
    # the encoder and decoder passes, plus the deeper levels (a geometric series).
    per_window = math.prod(window) * width * 2 * 12 * 2
    free = available_memory(device)
    return int(max(1, min(MAX_AUTO_WINDOW_BATCH, (free // 2) // max(per_window, 1))))


def _oom_errors() -> tuple[type[BaseException], ...]:
    """The exception types torch raises when a device runs out of memory."""
    import torch

    errors: list[type[BaseException]] = []
    for cls in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError):
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in errors:
            errors.append(cls)
    return tuple(errors)


def _smaller_window(window: tuple[int, ...], model: object) -> tuple[int, ...] | None:
    """Half the window along its longest axes, kept a multiple of the network's divisor."""
    divisor = tuple(getattr(model, "divisor", (1,) * len(window)))
    longest = max(window)
    new = []
    for w, d in zip(window, divisor):
        if w == longest and w > 1:
            h = max(d, (w // 2) // d * d)
            new.append(min(h, w))
        else:
            new.append(w)
    new_t = tuple(new)
    return None if new_t == window else new_t
