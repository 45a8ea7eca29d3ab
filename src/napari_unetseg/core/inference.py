"""Sliding-window prediction with Gaussian blending, slab by slab.

A volume larger than the network's training patch is cut into overlapping windows of the
patch size. Every window is predicted, its logits are weighted by an importance map that
is highest in the window centre (a Gaussian with sigma = 1/8 of the window, as in
nnU-Net) and summed; the sum divided by the summed weights is the blended logit map, and
its softmax gives the probabilities. Blending logits rather than probabilities follows
nnU-Net: one softmax per voxel instead of one per window, and a 1x1 network gives exactly
its full-volume output.

Memory: windows are processed in order along the first spatial axis (Z for volumes, Y for
images), and only the slab of the volume covered by the windows in flight is held in the
accumulators. As soon as no remaining window reaches a slab, that slab is finished and
handed on (:class:`Slab`), so labels for a large volume are produced without ever
holding ``(K, Z, Y, X)`` float32 probabilities.

Public entry points:

* :func:`predict` / :func:`predict_volume`: a :class:`~napari_unetseg.core.checkpoint.Checkpoint`
  and a raw image in, a :class:`Prediction` out (labels, probabilities, boundary map,
  watershed instances);
* :func:`sliding_window`: any network, a normalised image in, probabilities out;
* :func:`sliding_window_slabs`: the same, finished slab by finished slab;
* :func:`window_starts`, :func:`window_grid`, :func:`importance_map`: the window layout.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .config import InferConfig
from .events import CancelToken, Done, Event, Info, Progress

#: Smallest importance weight: the Gaussian is clipped here so that window corners still
#: count a little (and the sum of weights stays representable in float16).
MIN_WEIGHT = 1e-3
#: Gaussian sigma as a fraction of the window size (nnU-Net uses 1/8).
SIGMA_SCALE = 1.0 / 8.0
#: At most this many windows per forward pass on the CPU when the config leaves it open
#: (a planned model stores 2). On 2 cores, the demo's model (8 feature maps) over the
#: sample's 32 windows of 48^3: 1 per pass 9.2-10.7 s, 2 per pass 1.7-2.7 s, 4 per pass
#: 1.8-2.4 s (three runs each): one window per pass is far slower, 2 and 4 are alike.
CPU_WINDOW_BATCH = 4
#: ... and at most this many window voxels per pass (bounds the activation memory).
CPU_BATCH_VOXELS = 1 << 19
#: Upper bound for the automatically chosen windows per forward pass on a GPU.
MAX_AUTO_WINDOW_BATCH = 8


# --------------------------------------------------------------------------- results


@dataclass
class Prediction:
    """The result of :func:`predict`. Spatial axes are ``(Z, Y, X)`` or ``(Y, X)``.

    Attributes:
        labels: ``(*spatial)`` uint8. Semantic task: 0 = background, k = k-th foreground
            class. Instance task: 1 where the network sees an object (foreground mask).
        probabilities: ``(K, *spatial)`` softmax probabilities (K = classes including the
            background; for the instance task K = 3: background, interior, boundary), or
            ``None`` when they were not kept. float32 unless float16 was requested.
        boundaries: ``(*spatial)`` float32 boundary probability (instance task) or ``None``.
        instances: ``(*spatial)`` int32 object ids, 0 = background (instance task) or
            ``None``.
        task: ``"semantic"`` or ``"instances"``.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    boundaries: np.ndarray | None = None
    instances: np.ndarray | None = None
    task: str = "semantic"


@dataclass
class Slab:
    """Finished probabilities for ``start <= i < stop`` along the first spatial axis.

    ``probabilities`` is ``(K, stop - start, *rest)`` float32 (e.g. ``(K, dz, Y, X)``).
    """

    start: int
    stop: int
    probabilities: np.ndarray


class _ShrinkWindow(Exception):
    """Internal: a single window does not fit in device memory; retry with ``window``."""

    def __init__(self, window: tuple[int, ...]):
        super().__init__(str(window))
        self.window = window


# --------------------------------------------------------------------------- layout


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` voxels along an axis of ``size`` voxels.

    The fewest windows such that neighbours share ``int(overlap * window)`` voxels or more,
    the first at 0 and the last flush with the border. They step by
    ``int(window * (1 - overlap))`` voxels, the last one moved back to the border, which
    are MONAI's positions (so the two agree to rounding: 99.999 % of the argmax on the
    inference benchmark, against 99.3 % when the windows were spread evenly as nnU-Net
    does). Where that fixed step would need one window more than the minimum (a
    fractional ``window * (1 - overlap)``), the minimum is kept and spread evenly
    instead. An axis no longer than the window gets one window at 0 (the image is
    padded).
    """
    if window < 1:
        raise ValueError(f"the window must be at least 1 voxel wide, not {window}")
    if size <= window:
        return [0]
    span = size - window
    step = window * (1.0 - overlap)
    n = math.ceil(span / step - 1e-9) + 1
    fixed = max(1, int(step))
    if (n - 1) * fixed >= span:
        return [min(i * fixed, span) for i in range(n)]
    return [round(i * span / (n - 1)) for i in range(n)]


def window_grid(
    shape: Sequence[int], window: Sequence[int], overlap: float
) -> list[tuple[int, ...]]:
    """All window start positions (one tuple per window), sorted along the first axis.

    ``shape`` and ``window`` are spatial (``(Z, Y, X)`` or ``(Y, X)``).
    """
    per_axis = [window_starts(s, w, overlap) for s, w in zip(shape, window)]
    return list(itertools.product(*per_axis))


def importance_map(window: Sequence[int], blend: str = "gaussian") -> np.ndarray:
    """Blending weights of one window, ``window``-shaped float32 with maximum 1.

    ``gaussian``: a product of 1D Gaussians centred on the window with sigma = 1/8 of its
    size, clipped below at :data:`MIN_WEIGHT`. ``constant``: all ones (plain averaging).
    """
    if blend == "constant":
        return np.ones(tuple(window), dtype=np.float32)
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'constant', not {blend!r}")
    w = np.ones((), dtype=np.float64)
    for size in window:
        centre = (size - 1) / 2.0
        sigma = max(size * SIGMA_SCALE, 1e-6)
        g = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
        w = np.multiply.outer(w, g)
    w = w / w.max()
    return np.maximum(w, MIN_WEIGHT).astype(np.float32)


def _check_image(
    image: np.ndarray, spatial_dims: int | None = None, convert: bool = True
) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(
            "the image must be (C, Z, Y, X) for a volume or (C, Y, X) for a 2D image "
            f"(channels first), got shape {image.shape}"
        )
    if spatial_dims is not None and image.ndim != spatial_dims + 1:
        axes = "(C, Z, Y, X)" if spatial_dims == 3 else "(C, Y, X)"
        raise ValueError(
            f"the model is {spatial_dims}D and needs an image {axes}, got shape {image.shape}"
        )
    if min(image.shape[1:]) < 1:
        raise ValueError(f"the image is empty: shape {image.shape}")
    if convert and image.dtype != np.float32:
        image = image.astype(np.float32)
    return image


def _check_window(window: Sequence[int], ndim: int) -> tuple[int, ...]:
    try:
        window = tuple(int(w) for w in window)
    except TypeError as e:
        raise ValueError(f"the window must be a tuple of sizes, not {window!r}") from e
    if len(window) != ndim:
        raise ValueError(
            f"the window {window} has {len(window)} sizes but the image has {ndim} spatial "
            "axes; give one size per axis"
        )
    if min(window) < 1:
        raise ValueError(f"window sizes must be positive, got {window}")
    return window


def count_windows(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """Number of windows :func:`sliding_window` runs over a ``shape`` (spatial) image."""
    return math.prod(len(window_starts(s, w, overlap)) for s, w in zip(shape, window))


def auto_window_batch(window: Sequence[int], device, model=None) -> int:
    """Windows per forward pass when the config leaves it open.

    CPU (and MPS): up to :data:`CPU_WINDOW_BATCH` windows, no more than
    :data:`CPU_BATCH_VOXELS` voxels in all (one window at least).
    CUDA: as many as a rough activation estimate fits into half the free memory, at most
    :data:`MAX_AUTO_WINDOW_BATCH` (running out of memory later halves it again).
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return int(max(1, min(CPU_WINDOW_BATCH, CPU_BATCH_VOXELS // max(1, math.prod(window)))))
    from .device import available_memory

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


# --------------------------------------------------------------------------- engine


def _oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    errors: list[type[BaseException]] = []
    for cls in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError):
        if isinstance(cls, type) and cls not in errors:
            errors.append(cls)
    return tuple(errors)


def _smaller_window(window: tuple[int, ...], model) -> tuple[int, ...] | None:
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


class _Engine:
    """Accumulators and forward passes for one window size (see sliding_window_slabs)."""

    def __init__(self, model, image, window, config, device, dtype, batch, transform=None):
        import torch

        self.torch = torch
        self.model = model
        self.image = image
        self.shape = tuple(image.shape[1:])
        self.window = window
        self.config = config
        self.device = device
        self.dtype = dtype
        self.batch = batch
        self.ndim = len(self.shape)
        self.starts = window_grid(self.shape, window, config.overlap)
        # Along each axis: the image range a window reads and where it lands in the window.
        self.crop = tuple(min(s, w) for s, w in zip(self.shape, window))
        self.offset = tuple((w - c) // 2 if c < w else 0 for w, c in zip(window, self.crop))
        self.pad = []  # F.pad order: last axis first, (before, after) pairs
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
        self.flips = (
            [
                tuple(a + 2 for a in axes)
                for r in range(self.ndim + 1)
                for axes in itertools.combinations(range(self.ndim), r)
            ]
            if config.tta
            else [()]
        )
        self.cuda = device.type == "cuda"
        self.acc = None
        self.wacc = None
        self.acc_device = device
        self.acc_dtype = torch.float32
        self.staging = None
        self.pinned_out = None
        self.copy_done = None
        self.transform = transform
        self.image_t = torch.from_numpy(image) if transform is None else None
        self.base = 0
        self.row_length = len(self.starts) // len({s[0] for s in self.starts})
        self.cap = self._capacity(batch)

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

    def allocate(self, k: int):
        """Zeroed accumulators ``(K, cap, *rest)`` and weights ``(cap, *rest)``.

        On CUDA with mixed precision they live on the GPU in float16 (half the memory,
        no transfer per window); when the GPU is too full they fall back to float32 on
        the host. Returns an :class:`Info` when a fallback was taken, else ``None``.
        """
        torch = self.torch
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

    # ---------------------------------------------------------------- forward

    def _gather(self, starts: list[tuple[int, ...]]):
        """Input windows ``(B, C, *window)`` on the device (padded when the image is small)."""
        torch = self.torch
        regions = [(slice(None), *(slice(p, p + c) for p, c in zip(s, self.crop))) for s in starts]
        if self.transform is None:
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

    def _forward(self, x):
        """Logits ``(B, K, *window)`` float32, averaged over the flips when TTA is on."""
        torch = self.torch
        total = None
        for axes in self.flips:
            xi = torch.flip(x, axes) if axes else x
            if self.dtype is not None:
                with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                    y = self.model(xi)
            else:
                y = self.model(xi)
            if isinstance(y, (list, tuple)):
                y = y[0]
            y = y.float()
            if axes:
                y = torch.flip(y, axes)
            total = y if total is None else total + y
        if len(self.flips) > 1:
            total = total / len(self.flips)
        return total

    def predict_batch(self, starts: list[tuple[int, ...]]):
        """Logits ``(B, K, *crop)`` float32 of the windows at ``starts`` (on the device).

        Touches no accumulator, so running out of memory here can be retried safely.
        """
        torch = self.torch
        with torch.inference_mode():
            x = self._gather(starts)
            logits = self._forward(x)
            if self.needs_pad:
                sl = tuple(slice(o, o + c) for o, c in zip(self.offset, self.crop))
                logits = logits[(slice(None), slice(None), *sl)]
        return logits

    def accumulate(self, starts: list[tuple[int, ...]], logits):
        """Add weighted ``logits`` of the windows at ``starts``; returns an Info or None."""
        torch = self.torch
        with torch.inference_mode():
            info = None
            if self.acc is None:
                info = self.allocate(logits.shape[1])
            logits = logits.to(self.acc_device)
            w32 = self.weights.float()
            for i, s in enumerate(starts):
                z0 = s[0] - self.base
                region = (
                    slice(z0, z0 + self.crop[0]),
                    *(slice(p, p + c) for p, c in zip(s[1:], self.crop[1:])),
                )
                self.acc[(slice(None), *region)] += (logits[i] * w32).to(self.acc_dtype)
                self.wacc[region] += self.weights
        return info

    def finish(self, upto: int) -> Slab | None:
        """Softmax of the blended logits for ``base <= i < upto``; shift the buffers."""
        torch = self.torch
        d = upto - self.base
        if d <= 0:
            return None
        with torch.inference_mode():
            out = np.empty((self.acc.shape[0], d, *self.shape[1:]), dtype=np.float32)
            if self.acc_device.type == "cpu":
                probs = torch.from_numpy(out)
                torch.div(self.acc[:, :d], self.wacc[:d], out=probs)
            else:
                probs = self.acc[:, :d].float() / self.wacc[:d].float()
            # softmax over the classes, in place: one slab-sized array and no more
            probs.sub_(probs.amax(dim=0, keepdim=True)).exp_()
            probs.div_(probs.sum(dim=0, keepdim=True))
            if self.acc_device.type != "cpu":
                if self.cuda:
                    n = probs.numel()
                    if self.pinned_out is None or self.pinned_out.numel() < n:
                        self.pinned_out = torch.empty(
                            self.acc.numel(), dtype=torch.float32
                        ).pin_memory()
                    host = self.pinned_out[:n].view(probs.shape)
                    host.copy_(probs)
                    torch.from_numpy(out).copy_(host)
                else:
                    torch.from_numpy(out).copy_(probs.cpu())
            rest = self.cap - d
            for j in range(rest):  # slice by slice: no temporary copy of the buffers
                self.acc[:, j].copy_(self.acc[:, j + d])
                self.wacc[j].copy_(self.wacc[j + d])
            self.acc[:, rest:] = 0
            self.wacc[rest:] = 0
        slab = Slab(self.base, upto, out)
        self.base = upto
        return slab


def sliding_window_slabs(
    model,
    image: np.ndarray,
    window: Sequence[int],
    config: InferConfig | None = None,
    *,
    device="cpu",
    dtype=None,
    cancel: CancelToken | None = None,
    transform=None,
) -> Iterator[Event | Slab]:
    """Predict ``image`` window by window, yielding finished :class:`Slab` objects.

    Args:
        model: a ``torch.nn.Module`` already on ``device`` (in eval mode) that maps
            ``(B, C, *window)`` to logits ``(B, K, *window)``.
        image: normalised ``(C, Z, Y, X)`` or ``(C, Y, X)`` float32.
        window: window size per spatial axis (usually the training patch size).
        config: overlap, blending, windows per forward pass, flip TTA.
        device: where the network runs.
        dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``) or ``None``.
        cancel: checked before every forward pass; raises
            :class:`~napari_unetseg.core.events.Cancelled`.
        transform: optional callable applied to every window of ``image`` before the
            network, ``(C, *crop)`` array -> ``(C, *crop)`` float32, e.g.
            :meth:`Normalizer.apply <napari_unetseg.core.data.Normalizer.apply>`: then
            ``image`` may be the raw image and no normalised copy of the whole volume is
            made.

    Yields:
        :class:`Progress` (windows done / total), :class:`Info` (fallbacks taken, e.g.
        fewer windows per pass after running out of GPU memory) and :class:`Slab` objects
        covering the first spatial axis in order, without gaps. If a single window does
        not fit into GPU memory the window is halved and the slabs start again from 0
        (after an :class:`Info` that says so), so consumers should write slabs by their
        ``start``/``stop`` rather than append them.
    """
    import torch

    config = config if config is not None else InferConfig()
    config.validate()
    image = _check_image(image, convert=transform is None)
    window = _check_window(window, image.ndim - 1)
    device = torch.device(device)
    batch = config.window_batch or auto_window_batch(window, device, model)

    prev_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one fixed window size: tune once
    try:
        while True:
            try:
                batch = yield from _slabs_one_window(
                    model, image, window, config, device, dtype, batch, cancel, transform
                )
                return
            except _ShrinkWindow as e:
                yield Info(
                    f"out of memory with one window of {window}; retrying with windows of "
                    f"{e.window}",
                    level="warning",
                )
                window = e.window
                batch = 1
    finally:
        torch.backends.cudnn.benchmark = prev_benchmark


def _slabs_one_window(model, image, window, config, device, dtype, batch, cancel, transform):
    import torch

    eng = _Engine(model, image, window, config, device, dtype, batch, transform)
    starts = eng.starts
    total = len(starts)
    yield Progress(0, total, "predicting")
    i = 0
    while i < total:
        if cancel is not None:
            cancel.raise_if_cancelled()
        chunk = starts[i : i + batch]
        if eng.row_bounded(batch):
            chunk = [s for s in chunk if s[0] == chunk[0][0]]
        try:
            logits = eng.predict_batch(chunk)
        except _oom_errors() as e:
            # leave the except block before freeing memory: the traceback holds the frames
            # (and tensors) of the failed forward pass until then
            oom_message = str(e).splitlines()[0] if str(e) else "out of memory"
            logits = None
        if logits is None:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                yield Info(
                    f"out of memory with {len(chunk)} windows per pass; retrying with {batch}",
                    level="warning",
                )
                continue
            smaller = _smaller_window(window, model)
            if smaller is None:
                raise RuntimeError(
                    f"{oom_message}: out of memory even with one window of the smallest "
                    "size; predict on the CPU (device 'cpu') or free memory on the device"
                )
            raise _ShrinkWindow(smaller)
        info = eng.accumulate(chunk, logits)
        del logits
        if info is not None:
            yield info
        i += len(chunk)
        yield Progress(i, total, "predicting")
        upto = starts[i][0] if i < total else image.shape[1]
        slab = eng.finish(upto)
        if slab is not None:
            yield slab
        del slab  # the consumer has it; do not hold it while the next one is computed
    return batch


def sliding_window(
    model,
    image: np.ndarray,
    window: Sequence[int],
    config: InferConfig | None = None,
    *,
    device="cpu",
    dtype=None,
    cancel: CancelToken | None = None,
    transform=None,
) -> Iterator[Event]:
    """Sliding-window softmax probabilities of ``model`` over ``image``.

    Same arguments as :func:`sliding_window_slabs`. Yields :class:`Progress` and
    :class:`Info` events, then a :class:`Done` whose ``result`` is the probabilities
    ``(K, *spatial)`` float32: the softmax of the Gaussian-blended logits.
    """
    image = _check_image(image, convert=transform is None)
    probs = None
    for item in sliding_window_slabs(
        model,
        image,
        window,
        config,
        device=device,
        dtype=dtype,
        cancel=cancel,
        transform=transform,
    ):
        if isinstance(item, Slab):
            if probs is None:
                k = item.probabilities.shape[0]
                probs = np.empty((k, *image.shape[1:]), dtype=np.float32)
            probs[:, item.start : item.stop] = item.probabilities
        else:
            yield item
    yield Done(result=probs)


# --------------------------------------------------------------------------- predict


def _validate_against_checkpoint(checkpoint, image: np.ndarray) -> np.ndarray:
    cfg = checkpoint.config.model
    image = np.asarray(image)
    d = cfg.spatial_dims
    if image.ndim == d and cfg.in_channels == 1:
        image = image[None]  # a single-channel image given without its channel axis
    axes = "(C, Z, Y, X)" if d == 3 else "(C, Y, X)"
    if image.ndim != d + 1:
        raise ValueError(
            f"the model is {d}D and needs an image {axes}; got an array of shape {image.shape}"
        )
    c = image.shape[0]
    if c != cfg.in_channels:
        raise ValueError(
            f"the model was trained on {cfg.in_channels} channel(s) but the image has {c} "
            f"(shape {image.shape}, channels first {axes}); give the same channels, in the "
            "same order, as for training"
        )
    if min(image.shape[1:]) < 1:
        raise ValueError(f"the image is empty: shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"the image must hold real numbers, not {image.dtype}")
    return image


def _default_window(checkpoint, shape: tuple[int, ...]) -> tuple[int, ...]:
    patch = checkpoint.config.data.patch_size
    if patch is not None:
        return tuple(int(p) for p in patch)
    # A checkpoint always stores its resolved patch; this covers hand-made configs.
    cap = (64, 128, 128) if len(shape) == 3 else (256, 256)
    return tuple(min(s, c) for s, c in zip(shape, cap))


def predict(
    checkpoint,
    image: np.ndarray,
    config: InferConfig | None = None,
    *,
    keep_probabilities: bool = True,
    cancel: CancelToken | None = None,
    window: Sequence[int] | None = None,
    probabilities_dtype: str = "float32",
) -> Iterator[Event]:
    """Predict a raw image with a trained model.

    Args:
        checkpoint: a :class:`~napari_unetseg.core.checkpoint.Checkpoint`.
        image: raw (not normalised) ``(C, Z, Y, X)`` / ``(C, Y, X)``, the channels the
            model was trained on; a single-channel image may omit the channel axis.
        config: prediction settings; ``None`` = those stored in the checkpoint.
        keep_probabilities: also return the ``(K, *spatial)`` probabilities. Without them
            a semantic prediction holds only the labels and one slab of probabilities at a
            time.
        cancel: checked between forward passes.
        window: window size per spatial axis; default: the training patch size.
        probabilities_dtype: ``"float32"`` or ``"float16"`` (half the memory) for the
            kept probabilities.

    Yields:
        :class:`Info` (device, windows and plan), :class:`Progress` (windows), then
        :class:`Done` whose ``result`` is a :class:`Prediction`.
    """
    from .device import autocast_dtype, select_device
    from .postprocess import instance_labels, remove_small_components, semantic_labels

    if probabilities_dtype not in ("float32", "float16"):
        raise ValueError(
            f"probabilities_dtype must be 'float32' or 'float16', not {probabilities_dtype!r}"
        )
    config = config if config is not None else checkpoint.config.infer
    config.validate()
    image = _validate_against_checkpoint(checkpoint, image)
    spatial = tuple(image.shape[1:])
    task = checkpoint.task
    k = int(checkpoint.num_outputs)
    if task == "instances" and k != 3:
        raise ValueError(
            f"an instance model must have 3 outputs (background, interior, boundary), "
            f"this one has {k}"
        )
    win = _check_window(window, len(spatial)) if window is not None else None
    win = win or _default_window(checkpoint, spatial)

    device, description = select_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    t0 = time.perf_counter()
    normalizer = checkpoint.normalizer

    def transform(window_image: np.ndarray) -> np.ndarray:
        """Normalise one window ``(C, *crop)`` as the training image was normalised."""
        if np.issubdtype(window_image.dtype, np.floating) and not np.isfinite(window_image).all():
            raise ValueError(
                "the image contains NaN or infinite values; replace them (e.g. with "
                "numpy.nan_to_num(image, nan=0.0)) before predicting"
            )
        if normalizer is None:
            return window_image.astype(np.float32, copy=False)
        return normalizer.apply(window_image)

    model = checkpoint.build_model(device)
    batch = config.window_batch or auto_window_batch(win, device, model)
    n = count_windows(spatial, win, config.overlap)
    precision = "float32" if dtype is None else str(dtype).replace("torch.", "")
    yield Info(f"predicting on {description}, {precision}")
    yield Info(
        f"{n} window(s) of {'x'.join(map(str, win))} over {'x'.join(map(str, spatial))}, "
        f"overlap {config.overlap:g}, {batch} per pass, {config.blend} blending"
        + (", flip test-time augmentation" if config.tta else "")
    )

    keep = keep_probabilities or task == "instances"
    # probabilities kept only for the watershed are stored in float16
    half = probabilities_dtype == "float16" or not keep_probabilities
    pdtype = np.float16 if half else np.float32
    probs = np.empty((k, *spatial), dtype=pdtype) if keep else None
    labels = np.zeros(spatial, dtype=np.uint8)
    boundaries = np.empty(spatial, dtype=np.float32) if task == "instances" else None
    run_cfg = dataclasses.replace(config, window_batch=batch)
    for item in sliding_window_slabs(
        model,
        image,
        win,
        run_cfg,
        device=device,
        dtype=dtype,
        cancel=cancel,
        transform=transform,
    ):
        if not isinstance(item, Slab):
            yield item
            continue
        sl = slice(item.start, item.stop)
        p = item.probabilities
        if task == "instances":
            labels[sl] = p[0] < 0.5
            boundaries[sl] = p[2]
        else:
            # a few slices at a time: the argmax temporaries (a transposed copy of the
            # probabilities and int64 indices) stay small
            step = max(1, (1 << 20) // max(1, math.prod(p.shape[2:])))
            for j in range(0, p.shape[1], step):
                stop = min(j + step, p.shape[1])
                labels[item.start + j : item.start + stop] = semantic_labels(p[:, j:stop])
        if probs is not None:
            probs[:, sl] = p
        del item, p  # free this slab before the next one is computed

    instances = None
    if task == "instances":
        instances = instance_labels(
            probs, interior_threshold=config.interior_threshold, min_size=config.min_size
        )
    elif config.min_size > 1:
        remove_small_components(labels, config.min_size)
    if task == "instances" and not keep_probabilities:
        probs = None
    seconds = time.perf_counter() - t0
    result = Prediction(
        labels=labels, probabilities=probs, boundaries=boundaries, instances=instances, task=task
    )
    yield Done(result=result, message=f"predicted in {seconds:.1f} s", extra={"seconds": seconds})


def predict_volume(
    checkpoint,
    image: np.ndarray,
    config: InferConfig | None = None,
    *,
    keep_probabilities: bool = True,
    cancel: CancelToken | None = None,
    window: Sequence[int] | None = None,
    probabilities_dtype: str = "float32",
) -> Prediction:
    """Run :func:`predict` to the end and return its :class:`Prediction`."""
    done = None
    for ev in predict(
        checkpoint,
        image,
        config,
        keep_probabilities=keep_probabilities,
        cancel=cancel,
        window=window,
        probabilities_dtype=probabilities_dtype,
    ):
        if isinstance(ev, Done):
            done = ev
    return done.result
