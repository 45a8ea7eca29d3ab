"""Recovery from non-finite steps: one bad batch must not end a long training run.

Mixed precision (bfloat16 on CPUs with native support and on GPUs, float16 on older GPUs)
has a smaller range than float32; an extreme batch can give an infinite or NaN loss or
gradient. :class:`StepGuard` checks each step *before* the optimizer moves the weights,
so a bad step never reaches the weights or the optimizer's moments:

1. a non-finite loss or gradient norm skips the step (nothing is updated);
2. the first skip under mixed precision switches the rest of the run to float32;
3. later skips in float32 halve the learning rate (at most :data:`MAX_LR_HALVINGS` times);
4. :data:`MAX_CONSECUTIVE` skips in a row cannot be recovered from: a
   ``FloatingPointError`` names what was tried and what to check.

Each decision is reported once as a warning :class:`~.events.Info`.
"""

from __future__ import annotations

import math

import torch

from .events import Info

#: Bad steps in a row after which the run stops.
MAX_CONSECUTIVE = 5
#: How often the learning rate may be halved by recovery.
MAX_LR_HALVINGS = 4


class StepGuard:
    """Decides what happens after a non-finite step (see the module docstring)."""

    def __init__(self, amp_dtype: torch.dtype | None):
        self.amp_dtype = amp_dtype
        self.lr_scale = 1.0
        self.skipped = 0
        self.consecutive = 0
        self.halvings = 0
        self.notes: list[Info] = []

    @staticmethod
    def finite(value: torch.Tensor | float) -> bool:
        return bool(torch.isfinite(torch.as_tensor(value)).all())

    def ok(self) -> None:
        self.consecutive = 0

    def bad(self, iteration: int, what: str) -> torch.dtype | None:
        """Record a non-finite ``what`` ("loss" or "gradient") at ``iteration``; returns
        the autocast dtype to use from now on (``None`` = float32)."""
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive > MAX_CONSECUTIVE:
            precision = "float32" if self.amp_dtype is None else str(self.amp_dtype)[6:]
            raise FloatingPointError(
                f"the {what} stayed non-finite for {MAX_CONSECUTIVE} steps in a row at "
                f"iteration {iteration} ({precision}, learning rate scaled by "
                f"{self.lr_scale:g}); check the image for extreme values and the annotation "
                "for stray labels, or lower the learning rate"
            )
        if self.amp_dtype is not None:
            self.notes.append(
                Info(
                    f"non-finite {what} at iteration {iteration} under "
                    f"{str(self.amp_dtype)[6:]}: step skipped, training goes on in float32",
                    level="warning",
                )
            )
            self.amp_dtype = None
        elif self.halvings < MAX_LR_HALVINGS:
            self.halvings += 1
            self.lr_scale *= 0.5
            self.notes.append(
                Info(
                    f"non-finite {what} at iteration {iteration}: step skipped, learning rate "
                    f"halved (x{self.lr_scale:g} from now on)",
                    level="warning",
                )
            )
        return self.amp_dtype


def gradient_norm(parameters) -> float:
    """The total L2 norm of the gradients (``inf``/``nan`` when one is not finite)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
    total = float(torch.linalg.vector_norm(norms))
    return total if math.isfinite(total) else float("nan")
