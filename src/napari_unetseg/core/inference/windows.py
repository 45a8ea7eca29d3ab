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


def window_starts(size: int, window: int, overlap: float, step: float | None = None) -> list[int]:
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

    ``step``: the step to use instead of ``window * (1 - overlap)`` (``overlap`` is then
    unused): a window grown for the layout keeps the shared voxels of the window it grew
    from (:func:`layout_steps`).
    """
    if window < 1:
        raise ValueError(f"the window must be at least 1 voxel wide, not {window}")
    if size <= window:
        return [0]
    span = size - window
    step = window * (1.0 - overlap) if step is None else float(step)
    if step <= 0:
        raise ValueError(f"windows must advance by more than 0 voxels, not {step:g}")
    n = math.ceil(span / step - 1e-9) + 1
    fixed = max(1, int(step))
    if (n - 1) * fixed >= span:
        return [min(i * fixed, span) for i in range(n)]
    return [round(i * span / (n - 1)) for i in range(n)]


def _steps(window: Sequence[int], steps: Sequence[float] | None) -> tuple[float | None, ...]:
    """``steps`` per axis, or ``None`` per axis (the step from ``overlap``)."""
    if steps is None:
        return (None,) * len(window)
    if len(steps) != len(window):
        raise ValueError(f"{len(steps)} window steps for a {len(window)}-axis window")
    return tuple(float(t) for t in steps)


def window_grid(
    shape: Sequence[int],
    window: Sequence[int],
    overlap: float,
    steps: Sequence[float] | None = None,
) -> list[tuple[int, ...]]:
    """All window start positions (one tuple per window), sorted along the first axis.

    ``shape`` and ``window`` are spatial (``(Z, Y, X)`` or ``(Y, X)``); ``steps`` per axis
    as for :func:`window_starts` (``None``: from ``overlap``).
    """
    per_axis = [
        window_starts(s, w, overlap, t) for s, w, t in zip(shape, window, _steps(window, steps))
    ]
    return list(itertools.product(*per_axis))


def count_windows(
    shape: Sequence[int],
    window: Sequence[int],
    overlap: float,
    steps: Sequence[float] | None = None,
) -> int:
    """Number of windows :func:`sliding_window` runs over a ``shape`` (spatial) image."""
    return math.prod(
        len(window_starts(s, w, overlap, t))
        for s, w, t in zip(shape, window, _steps(window, steps))
    )


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


#: An inference window may grow to this multiple of its context window along an axis ...
MAX_WINDOW_GROWTH = 1.5
#: ... and to this multiple of its volume (3D networks; see :func:`inference_layout`) ...
MAX_VOLUME_GROWTH = 1.125
#: ... when that cuts the voxels computed by at least this share.
MIN_WINDOW_SAVING = 0.25


def layout_steps(window: Sequence[int], base: Sequence[int], overlap: float) -> tuple[float, ...]:
    """The step between windows along each axis: ``base * (1 - overlap)``, plus what
    ``window`` grew beyond ``base`` along the axis, so that a grown window shares as many
    voxels with its neighbours as the window it grew from (a fixed margin, not a
    fraction of the window)."""
    return tuple(b * (1.0 - overlap) + (w - b) for w, b in zip(window, base))


def inference_layout(
    shape: Sequence[int],
    patch: Sequence[int],
    overlap: float,
    divisor: Sequence[int] | None = None,
    grow: bool = True,
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The window to predict ``shape`` (spatial) with and its step per axis
    (:func:`window_starts`): the training patch with more context
    (:func:`context_window`, 3D networks), grown further only where slightly longer
    windows cover the image with far fewer voxels.

    Along an axis a little longer than the window, windows of its size overlap far more
    than asked: 128 slices take three 64-slice windows (192 slices computed), two
    72-slice windows that share the same 16 slices compute 144. Every window from the
    context window up to :data:`MAX_WINDOW_GROWTH` times it per axis (in steps of the
    network's ``divisor``, inside the image, :func:`_within_image`) is tried with the
    margin of the context window (:func:`layout_steps`); for 3D networks only those up
    to :data:`MAX_VOLUME_GROWTH` times its volume. The one computing the fewest voxels
    (windows x window volume) is kept if it computes at least :data:`MIN_WINDOW_SAVING`
    fewer than the context window does; otherwise the context window is kept. ``grow``
    ``False`` keeps the context window (``InferConfig.grow_windows``).

    The volume cap comes from the instance norm: it normalises each window by its own
    statistics, and those drift from the training patches' as windows grow. On the
    MNI152 grey/white matter task (``benchmarks/RESULTS.md``) two models scored
    0.903 / 0.902 with 64^3 windows, 0.900 / 0.903 with 64x72x64 (volume x1.125),
    0.871 / 0.869 with 72^3 (x1.42). Where the rule grows a window (128-voxel crops of
    that volume, 12 cases) it cost 0.0026 Dice on average (at most 0.0085) for a median
    0.84 of the time; on the brain mask it gained 0.0005.
    """
    div = tuple(divisor) if divisor is not None else (1,) * len(patch)
    base = context_window(shape, patch, div)
    if not grow:
        return base, layout_steps(base, base, overlap)
    options = []
    for size, c, d in zip(shape, base, div):
        size, c, d = int(size), int(c), max(1, int(d))
        if size <= c:
            options.append([c])
            continue
        top = min(int(c * MAX_WINDOW_GROWTH), _within_image(size, c, d))
        options.append(list(range(c, max(c, top) + 1, d)))

    def cost(window: tuple[int, ...]) -> int:
        return count_windows(shape, window, overlap, layout_steps(window, base, overlap)) * (
            math.prod(window)
        )

    volume_cap = MAX_VOLUME_GROWTH * math.prod(base) if len(base) == 3 else math.inf
    best, best_cost = base, cost(base)
    base_cost = best_cost
    for window in itertools.product(*options):
        if math.prod(window) > volume_cap + 1e-9:
            continue
        c = cost(window)
        if c < best_cost:
            best, best_cost = window, c
    if best_cost > (1.0 - MIN_WINDOW_SAVING) * base_cost * (1 + 1e-12):
        best = base
    return tuple(best), layout_steps(best, base, overlap)


def inference_window(
    shape: Sequence[int],
    patch: Sequence[int],
    overlap: float,
    divisor: Sequence[int] | None = None,
    grow: bool = True,
) -> tuple[int, ...]:
    """The window of :func:`inference_layout` (without its steps)."""
    return inference_layout(shape, patch, overlap, divisor, grow)[0]


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


def _step_note(window: Sequence[int], overlap: float, steps: Sequence[float] | None) -> str:
    """`` (steps of 56x48x48 voxels)`` where ``steps`` differ from the overlap's, else ``""``."""
    if steps is None or all(abs(t - w * (1.0 - overlap)) < 1e-9 for w, t in zip(window, steps)):
        return ""
    return f" (steps of {'x'.join(f'{t:g}' for t in steps)} voxels)"


def check_window_layout(
    shape: Sequence[int],
    window: Sequence[int],
    overlap: float,
    divisor: Sequence[int] | None = None,
    steps: Sequence[float] | None = None,
) -> int:
    """Refuse windows too small for the image; return the number of windows.

    Args:
        shape: spatial image shape, ``(Z, Y, X)`` or ``(Y, X)``.
        window: window size per spatial axis, same order.
        overlap: fraction of a window shared with its neighbour.
        divisor: the network's pooling divisor per axis, or ``None`` (not checked).
        steps: the step per axis instead of ``window * (1 - overlap)`` (see
            :func:`window_starts`).

    Raises:
        ValueError (one line, suggesting a larger patch size) when the layout needs more
        than :data:`MAX_WINDOWS` windows, when the windows step by less than one voxel
        along an axis longer than the window (so most of them repeat a position), or when
        a window is smaller than ``divisor`` along such an axis (each window would be
        padded inside the network, which then never sees real context).
    """
    per_axis = [
        w * (1.0 - overlap) if t is None else t for w, t in zip(window, _steps(window, steps))
    ]
    n = count_windows(shape, window, overlap, steps)
    longer = [s > w for s, w in zip(shape, window)]
    reason = None
    if n > MAX_WINDOWS:
        reason = f"more than the limit of {MAX_WINDOWS:,}"
    elif any(c and t < 1.0 for c, t in zip(longer, per_axis)):
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
