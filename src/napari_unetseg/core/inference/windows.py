"""Window placement: where the sliding windows go and how much each voxel of one counts.

Shapes and windows are spatial, in array order: ``(Z, Y, X)`` for volumes, ``(Y, X)`` for
2D images. Images are channels first: ``(C, Z, Y, X)`` / ``(C, Y, X)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

#: Smallest importance weight: the Gaussian is clipped here so that window corners still
#: count a little (and the sum of weights stays representable in float16).
MIN_WEIGHT = 1e-3
#: Gaussian sigma as a fraction of the window size (nnU-Net uses 1/8).
SIGMA_SCALE = 1.0 / 8.0
#: Refuse a layout of more windows than this: a window far smaller than the image (e.g.
#: a 1x1x1 training patch) would run for hours and blend nonsense. A 512^3 volume with
#: the demo's 48^3 windows needs about 2,200.
MAX_WINDOWS = 100_000


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


def count_windows(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """Number of windows :func:`sliding_window` runs over a ``shape`` (spatial) image."""
    return math.prod(len(window_starts(s, w, overlap)) for s, w in zip(shape, window))


#: A 3D network predicts with windows this many times its training patch along every axis
#: (rounded up to its divisor) ...
CONTEXT_GROWTH = 4 / 3
#: ... but no longer than this along an axis (a patch already as long is kept).
CONTEXT_WINDOW = 64


def context_window(
    shape: Sequence[int], patch: Sequence[int], divisor: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The window a 3D network predicts with before :func:`inference_window` fits it to
    the image: the training patch, grown along each axis by whole ``divisor`` steps to
    :data:`CONTEXT_GROWTH` times its length, at most :data:`CONTEXT_WINDOW`, and within the
    image (:func:`_within_image`); never shorter than the patch. 2D networks keep their
    patch.

    A voxel near a window's border is predicted from zero padding instead of its
    surroundings, and the per-window instance norm sees a small crop. With the CPU's 48^3
    patch (``benchmarks.window_context``, two models each), 64^3 windows raised the Dice
    from 0.878 / 0.864 to 0.928 / 0.915 on the sample (64 x 256 x 256), from 0.989 / 0.981
    to 0.993 / 0.987 on the MNI152 brain mask at 1 mm and from 0.852 / 0.867 to
    0.903 / 0.902 on its grey and white matter, at the same or a lower prediction time.
    Larger windows helped the first two further but hurt the grey/white matter task
    (0.859 / 0.797 at 96^3, 0.839 / 0.653 at 128^3: the instance norm's statistics drift
    from those of the training patches), hence the cap (benchmarks/RESULTS.md).
    """
    if len(patch) != 3:
        return tuple(int(p) for p in patch)
    div = tuple(divisor) if divisor is not None else (1,) * len(patch)
    out = []
    for size, p, d in zip(shape, patch, div):
        size, p, d = int(size), int(p), max(1, int(d))
        # the 1e-9 absorbs float rounding of 4/3: a whole number of steps (48 / 3 / 16 = 1)
        # computed a hair above it must not gain a step
        grown = p + math.ceil(p * (CONTEXT_GROWTH - 1.0) / d - 1e-9) * d
        cap = p + max(0, (CONTEXT_WINDOW - p) // d) * d
        out.append(min(grown, cap, _within_image(size, p, d)))
    return tuple(out)


def _within_image(size: int, p: int, d: int) -> int:
    """The longest window ``p + k * d`` along an axis of ``size`` voxels that stays inside
    it (``p`` where the axis is shorter than the patch: only then is the image padded).

    A window reaching past the image sees mirrored or repeated voxels instead of real
    context: on the MNI152 brain mask at 3 mm (64 x 79 x 67, 48^3 patch) two models
    reached Dice 0.9942 / 0.9892 with the 64 x 48 x 72 windows the growth along short
    axes gave before (5 voxels past the image along x), 0.9855 / 0.9865 with 64 x 80 x 72,
    and 0.9958 / 0.9939 with the 64^3 windows inside it (0.997 / 0.9965 with the bare
    patch)."""
    return p + max(0, (size - p) // d) * d


#: An inference window may grow to this multiple of the training patch along an axis ...
MAX_WINDOW_GROWTH = 1.5
#: ... when that cuts the voxels computed along the axis by at least this share.
MIN_WINDOW_SAVING = 0.25


def inference_window(
    shape: Sequence[int],
    patch: Sequence[int],
    overlap: float,
    divisor: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The window to predict ``shape`` (spatial) with: the training patch with more
    context (:func:`context_window`, 3D networks), grown further along an axis only where
    a slightly longer window covers the axis with far fewer voxels.

    Along an axis a little longer than the patch, windows of the patch size overlap far
    more than asked: 64 slices take two 48-slice windows (96 slices computed, 1.5 times
    the axis), one 64-slice window computes each slice once. Per axis, the lengths from
    the window up to :data:`MAX_WINDOW_GROWTH` times it (in steps of the network's
    ``divisor``) are tried, and the one computing the fewest voxels along the axis
    (windows x length) is kept if it computes at least :data:`MIN_WINDOW_SAVING` fewer
    than the window does; otherwise the window is kept. Axes no longer than the window
    keep it; no window grows past the image (:func:`_within_image`). On the inference
    benchmark (64 x 256 x 256, patch 48^3, overlap 0.25) the patch alone would give 49
    windows of 64 x 48 x 48 instead of 98 of 48^3; with the context it is 25 windows of
    64^3 (benchmarks/RESULTS.md).
    """
    div = tuple(divisor) if divisor is not None else (1,) * len(patch)
    out = []
    for size, p, d in zip(shape, context_window(shape, patch, div), div):
        size, p, d = int(size), int(p), max(1, int(d))
        if size <= p:
            out.append(p)
            continue
        base = len(window_starts(size, p, overlap)) * p
        best, best_cost = p, base
        w = p + d
        while w <= min(int(p * MAX_WINDOW_GROWTH), _within_image(size, p, d)):
            cost = len(window_starts(size, w, overlap)) * w
            if cost < best_cost:
                best, best_cost = w, cost
            w += d
        out.append(best if best_cost <= (1.0 - MIN_WINDOW_SAVING) * base else p)
    return tuple(out)


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


def _fmt(sizes: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in sizes)


def check_window_layout(
    shape: Sequence[int],
    window: Sequence[int],
    overlap: float,
    divisor: Sequence[int] | None = None,
) -> int:
    """Refuse windows too small for the image; return the number of windows.

    Args:
        shape: spatial image shape, ``(Z, Y, X)`` or ``(Y, X)``.
        window: window size per spatial axis, same order.
        overlap: fraction of a window shared with its neighbour.
        divisor: the network's pooling divisor per axis, or ``None`` (not checked).

    Raises:
        ValueError (one line, suggesting a larger patch size) when the layout needs more
        than :data:`MAX_WINDOWS` windows, when the windows step by less than one voxel
        along an axis longer than the window (so most of them repeat a position), or when
        a window is smaller than ``divisor`` along such an axis (each window would be
        padded inside the network, which then never sees real context).
    """
    n = count_windows(shape, window, overlap)
    longer = [s > w for s, w in zip(shape, window)]
    reason = None
    if n > MAX_WINDOWS:
        reason = f"more than the limit of {MAX_WINDOWS:,}"
    elif any(c and w * (1.0 - overlap) < 1.0 for c, w in zip(longer, window)):
        reason = f"with overlap {overlap:g} they advance by less than one voxel"
    elif divisor is not None and any(c and w < d for c, w, d in zip(longer, window, divisor)):
        reason = f"each is smaller than the network's pooling divisor {_fmt(divisor)}"
    if reason is not None:
        raise ValueError(
            f"windows of {_fmt(window)} voxels are too small to predict an image of "
            f"{_fmt(shape)}: it would take {n:,} windows ({reason}); train with a larger "
            "patch size (or leave patch_size unset to have it planned) or give a larger window"
        )
    return n


def _check_image(
    image: np.ndarray, spatial_dims: int | None = None, convert: bool = True
) -> np.ndarray:
    """The image as an array ``(C, Z, Y, X)`` / ``(C, Y, X)``, float32 when ``convert``."""
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
    """``window`` as a tuple of ``ndim`` positive ints, or a ValueError saying why not."""
    try:
        sizes = tuple(int(w) for w in window)
    except TypeError as e:
        raise ValueError(f"the window must be a tuple of sizes, not {window!r}") from e
    if len(sizes) != ndim:
        raise ValueError(
            f"the window {sizes} has {len(sizes)} sizes but the image has {ndim} spatial "
            "axes; give one size per axis"
        )
    if min(sizes) < 1:
        raise ValueError(f"window sizes must be positive, got {sizes}")
    return sizes
