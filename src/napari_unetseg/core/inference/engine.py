"""The batched blending engine: windows through the network, weighted logits summed.

Windows are processed in order along the first spatial axis (Z for volumes, Y for
images), and only the slab of the volume covered by the windows in flight is held in the
accumulators. As soon as no remaining window reaches a slab, that slab is finished (the
softmax of its blended logits) and handed on as a :class:`Slab`, so a large volume is
predicted without ever holding ``(K, Z, Y, X)`` float32 probabilities.

:func:`~.sliding.sliding_window_slabs` drives the engine (and its fallbacks when the
device runs out of memory, see :mod:`.memory`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import InferConfig
from ..events import Info
from .memory import _oom_errors
from .windows import importance_map, window_grid

if TYPE_CHECKING:
    import torch

#: At most this many constant values keep their window's logits (a few MiB each).
MAX_CONSTANT_WINDOWS = 8

#: A per-window transform: ``(C, *crop)`` array -> ``(C, *crop)`` float32.
Transform = Callable[[np.ndarray], np.ndarray]


@dataclass
class Slab:
    """Finished probabilities for ``start <= i < stop`` along the first spatial axis.

    ``probabilities`` is ``(K, stop - start, *rest)`` float32 (e.g. ``(K, dz, Y, X)``).
    """

    start: int
    stop: int
    probabilities: np.ndarray


class _Engine:
    """Accumulators and forward passes for one window size (see sliding_window_slabs).

    ``image`` is ``(C, *spatial)``; the accumulators hold ``(K, cap, *spatial[1:])``
    weighted logits and ``(cap, *spatial[1:])`` summed weights for the rows
    ``base <= i < base + cap`` of the first spatial axis.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image: np.ndarray,
        window: tuple[int, ...],
        config: InferConfig,
        device: torch.device,
        dtype: torch.dtype | None,
        batch: int,
        transform: Transform | None = None,
        steps: tuple[float, ...] | None = None,
    ):
        import torch

        self.model = model
        self.image = image
        self.shape = tuple(image.shape[1:])
        self.window = window
        self.config = config
        self.device = device
        self.dtype = dtype
        self.batch = batch
        self.ndim = len(self.shape)
        self.starts = window_grid(self.shape, window, config.overlap, steps)
        # Along each axis: the image range a window reads and where it lands in the window.
        self.crop = tuple(min(s, w) for s, w in zip(self.shape, window))
        self.offset = tuple((w - c) // 2 if c < w else 0 for w, c in zip(window, self.crop))
        self.pad: list[int] = []  # F.pad order: last axis first, (before, after) pairs
        for w, c, o in reversed(list(zip(window, self.crop, self.offset))):
            self.pad += [o, w - c - o]
        self.needs_pad = any(self.pad)
        self.pad_mode = (
            "reflect"
            if all(w - c - o < c and o < c for w, c, o in zip(window, self.crop, self.offset))
            else "replicate"
        )
        imp = importance_map(window, config.blend)
        sl = tuple(slice(o, o + c) for o, c in zip(self.offset, self.crop))
        self.weights_np = np.ascontiguousarray(imp[sl])  # (*crop)
        self.flips: list[tuple[int, ...]] = (
            [
                tuple(a + 2 for a in axes)
                for r in range(self.ndim + 1)
                for axes in itertools.combinations(range(self.ndim), r)
            ]
            if config.tta
            else [()]
        )
        self.cuda = device.type == "cuda"
        self.acc: torch.Tensor | None = None
        self.wacc: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        self.acc_device = device
        self.acc_dtype = torch.float32
        self.staging: torch.Tensor | None = None
        self.pinned_out: torch.Tensor | None = None
        self.copy_done: torch.cuda.Event | None = None
        self.transform = transform
        # optional: K -> the (K, *spatial) float32 array the slabs are written into (the
        # slabs are then views of it, and no slab-sized array is allocated per slab)
        self.destination: Callable[[int], np.ndarray] | None = None
        self.image_t = torch.from_numpy(image) if transform is None else None
        self.base = 0
        self.row_length = len(self.starts) // len({s[0] for s in self.starts})
        self.cap = self._capacity(batch)
        # logits (1, K, *window) of windows whose input is one constant value, by value
        self.constant_logits: dict[tuple[float, ...], torch.Tensor] = {}
        self.constant_windows = 0  # windows served from constant_logits or computed once
        # set when a pass gave non-finite logits: torch's instance norm from then on
        self.use_stable_norms = False

    #: Compute windows of constant input once per value (see _forward_reusing_constant).
    reuse_constant = True

    # ---------------------------------------------------------------- bookkeeping

    def row_bounded(self, batch: int) -> bool:
        """Whether batches stay within one row of windows (same start on the first axis):
        true when a row holds at least ``batch`` windows, so the buffers need only be one
        window deep."""
        return self.row_length >= batch

    def _capacity(self, batch: int) -> int:
        """Rows along the first axis that any ``batch`` consecutive windows span."""
        z = [s[0] for s in self.starts]
        c0 = self.crop[0]
        if self.row_bounded(batch):
            return c0
        span = max(z[min(i + batch - 1, len(z) - 1)] - z[i] for i in range(len(z)))
        return min(self.shape[0], span + c0)

    def allocate(self, k: int) -> Info | None:
        """Zeroed accumulators ``(K, cap, *rest)`` and weights ``(cap, *rest)``.

        On CUDA with mixed precision they live on the GPU in float16 (half the memory,
        no transfer per window); when the GPU is too full they fall back to float32 on
        the host. Returns an :class:`Info` when a fallback was taken, else ``None``.
        """
        import torch

        shape = (self.cap, *self.shape[1:])
        info = None
        if self.cuda:
            half = self.dtype in (torch.float16, torch.bfloat16)
            self.acc_dtype = torch.float16 if half else torch.float32
            try:
                self.acc = torch.zeros((k, *shape), dtype=self.acc_dtype, device=self.device)
                self.wacc = torch.zeros(shape, dtype=self.acc_dtype, device=self.device)
                self.acc_device = self.device
            except _oom_errors():
                self.acc = self.wacc = None
                torch.cuda.empty_cache()
                info = Info(
                    "not enough GPU memory for the blending buffers; blending on the CPU "
                    "in float32 instead",
                    level="warning",
                )
        if self.acc is None:
            # numpy-owned memory, so that the buffers show up in numpy/tracemalloc accounting
            self.acc_device = torch.device("cpu")
            self.acc_dtype = torch.float32
            self.acc = torch.from_numpy(np.zeros((k, *shape), dtype=np.float32))
            self.wacc = torch.from_numpy(np.zeros(shape, dtype=np.float32))
        self.weights = torch.from_numpy(self.weights_np).to(self.acc_device, self.acc_dtype)
        return info

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The accumulators, weight sums and window weights (after :meth:`allocate`)."""
        if self.acc is None or self.wacc is None or self.weights is None:
            raise RuntimeError("the blending buffers are used before they were allocated")
        return self.acc, self.wacc, self.weights

    # ---------------------------------------------------------------- forward

    def _gather(self, starts: list[tuple[int, ...]]) -> torch.Tensor:
        """Input windows ``(B, C, *window)`` on the device (padded when the image is small)."""
        import torch

        regions = [(slice(None), *(slice(p, p + c) for p, c in zip(s, self.crop))) for s in starts]
        if self.transform is None:
            assert self.image_t is not None  # set in __init__ whenever transform is None
            crops = [self.image_t[r] for r in regions]
        else:
            crops = [
                torch.from_numpy(np.asarray(self.transform(self.image[r]), dtype=np.float32))
                for r in regions
            ]
        if self.cuda:
            b = len(crops)
            shape = (b, self.image.shape[0], *self.crop)
            if self.staging is None or self.staging.shape[0] < b:
                self.staging = torch.empty(
                    (max(b, self.batch), *shape[1:]), dtype=torch.float32
                ).pin_memory()
            if self.copy_done is not None:
                self.copy_done.synchronize()  # the previous copy has left the buffer
            for i, c in enumerate(crops):
                self.staging[i].copy_(c)
            x = self.staging[:b].to(self.device, non_blocking=True)
            self.copy_done = torch.cuda.Event()
            self.copy_done.record()
        else:
            x = torch.stack(crops)
        # the sum is finite for finite inputs of any sensible range: a cheap first check
        if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise ValueError(
                "the image contains NaN or infinite values; replace them (e.g. with "
                "numpy.nan_to_num) before predicting"
            )
        if self.needs_pad:
            x = torch.nn.functional.pad(x, self.pad, mode=self.pad_mode)
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, *window)`` float32, averaged over the flips when TTA is on."""
        import torch

        total: torch.Tensor | None = None
        # One float32 window per pass on the CPU: torch picks its slow reference 3D
        # convolution for a batch of 1 (oneDNN only from 2), 5-6x slower per window on the
        # demo's network, so the window goes through twice and one copy is dropped (the
        # windows of a batch never mix: the norms are per window).
        single = (
            self.device.type == "cpu" and self.dtype is None and x.ndim == 5 and x.shape[0] == 1
        )
        if single:
            x = torch.cat([x, x])
        for axes in self.flips:
            xi = torch.flip(x, axes) if axes else x
            y = self._network(xi)
            if not self.use_stable_norms and not bool(torch.isfinite(y.sum())):
                # e.g. an image of 1e30: the CPU's fast instance norm overflows where
                # torch's own (float64 sums) does not; this pass and all later ones use
                # the latter
                self.use_stable_norms = True
                y = self._network(xi)
            if axes:
                y = torch.flip(y, axes)
            total = y if total is None else total + y
        assert total is not None  # self.flips always holds the identity ()
        if len(self.flips) > 1:
            total = total / len(self.flips)
        return total[:1] if single else total

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits for ``x``, float32, in the default memory layout."""
        import torch

        norms: contextlib.AbstractContextManager = contextlib.nullcontext()
        if self.use_stable_norms:
            from ..norms import stable_norms

            norms = stable_norms(self.model)
        amp = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)
        with norms, amp:
            y = self.model(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        return y.float().contiguous()  # a channels-last network gives channels-last logits

    def _forward_reusing_constant(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward` for ``x`` ``(B, C, *window)``, computing each window whose input is
        constant (every channel one value, e.g. the zeros around a scan) only once.

        The network maps identical inputs to identical outputs wherever the window lies
        (convolutions are shift-invariant, and a window sees nothing but its input), so the
        logits of the first constant window of each value are kept and reused: the
        result is that of running every window (exact, not an approximation).
        """
        import torch

        if not self.reuse_constant:
            return self._forward(x)
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        first = flat[:, :, 0]
        constant = (flat == first[:, :, None]).all(dim=2).all(dim=1).tolist()
        if not any(constant):
            return self._forward(x)
        keys = [tuple(first[i].tolist()) if constant[i] else None for i in range(b)]
        todo: list[int] = []  # windows to compute: all others, one per new constant value
        new: dict[tuple[float, ...], int] = {}
        for i, key in enumerate(keys):
            if key is None:
                todo.append(i)
            elif key not in self.constant_logits and key not in new:
                new[key] = i
                todo.append(i)
        computed = self._forward(x[todo]) if todo else None
        pos = {i: j for j, i in enumerate(todo)}

        def row(i: int) -> torch.Tensor:
            assert computed is not None  # row() is only asked for computed windows
            return computed[pos[i] : pos[i] + 1]

        for key, i in new.items():
            if len(self.constant_logits) < MAX_CONSTANT_WINDOWS:
                self.constant_logits[key] = row(i).clone()
        parts = []
        for i, key in enumerate(keys):
            if key is None:
                parts.append(row(i))
            elif key in self.constant_logits:
                parts.append(self.constant_logits[key])
            else:  # the store is full: computed in this pass
                parts.append(row(new[key]))
        self.constant_windows += sum(constant)
        return torch.cat(parts)

    def predict_batch(self, starts: list[tuple[int, ...]]) -> torch.Tensor:
        """Logits ``(B, K, *crop)`` float32 of the windows at ``starts`` (on the device).

        Touches no accumulator, so running out of memory here can be retried safely.
        """
        import torch

        with torch.inference_mode():
            x = self._gather(starts)
            logits = self._forward_reusing_constant(x)
            if self.needs_pad:
                sl = tuple(slice(o, o + c) for o, c in zip(self.offset, self.crop))
                inner = (slice(None), slice(None), *sl)  # all windows and classes
                logits = logits[inner]
        return logits

    def accumulate(self, starts: list[tuple[int, ...]], logits: torch.Tensor) -> Info | None:
        """Add weighted ``logits`` of the windows at ``starts``; returns an Info or None."""
        import torch

        with torch.inference_mode():
            info = None
            if self.acc is None:
                info = self.allocate(logits.shape[1])
            acc, wacc, weights = self._buffers()
            logits = logits.to(self.acc_device)
            w32 = weights.float()
            for i, s in enumerate(starts):
                z0 = s[0] - self.base
                region = (
                    slice(z0, z0 + self.crop[0]),
                    *(slice(p, p + c) for p, c in zip(s[1:], self.crop[1:])),
                )
                classes_region = (slice(None), *region)
                acc[classes_region] += (logits[i] * w32).to(self.acc_dtype)
                wacc[region] += weights
        return info

    def finish(self, upto: int) -> Slab | None:
        """Softmax of the blended logits for ``base <= i < upto``; shift the buffers."""
        import torch

        d = upto - self.base
        if d <= 0:
            return None
        acc, wacc, _ = self._buffers()
        with torch.inference_mode():
            if self.destination is not None:
                out = self.destination(acc.shape[0])[:, self.base : upto]
            else:
                out = np.empty((acc.shape[0], d, *self.shape[1:]), dtype=np.float32)
            if self.acc_device.type == "cpu":
                probs = torch.from_numpy(out)
                torch.div(acc[:, :d], wacc[:d], out=probs)
            else:
                probs = acc[:, :d].float() / wacc[:d].float()
            # softmax over the classes, in place: one slab-sized array and no more
            probs.sub_(probs.amax(dim=0, keepdim=True)).exp_()
            probs.div_(probs.sum(dim=0, keepdim=True))
            if self.acc_device.type != "cpu":
                if self.cuda:
                    n = probs.numel()
                    if self.pinned_out is None or self.pinned_out.numel() < n:
                        self.pinned_out = torch.empty(
                            acc.numel(), dtype=torch.float32
                        ).pin_memory()
                    host = self.pinned_out[:n].view(probs.shape)
                    host.copy_(probs)
                    torch.from_numpy(out).copy_(host)
                else:
                    torch.from_numpy(out).copy_(probs.cpu())
            rest = self.cap - d
            for j in range(rest):  # slice by slice: no temporary copy of the buffers
                acc[:, j].copy_(acc[:, j + d])
                wacc[j].copy_(wacc[j + d])
            acc[:, rest:] = 0
            wacc[rest:] = 0
        slab = Slab(self.base, upto, out)
        self.base = upto
        return slab
