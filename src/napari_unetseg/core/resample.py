"""Resampling images and annotations between voxel spacings.

Training resamples cases whose spacings differ to one common (median) spacing; prediction
resamples the network's output back to each scan's own grid with
:func:`resample_to_shape`. Arrays are in array order: images ``(C, Z, Y, X)`` or
``(C, Y, X)``, labels ``(Z, Y, X)`` or ``(Y, X)``, spacings in the same order as the
spatial axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Spacings that differ by more than this relative amount on some axis are resampled.
SPACING_TOLERANCE = 0.1


def _spacing(values: Sequence[float], dims: int, what: str) -> tuple[float, ...]:
    sp = tuple(float(v) for v in values)
    if len(sp) != dims or any(not (s > 0 and math.isfinite(s)) for s in sp):
        raise ValueError(f"{what} {sp} must give {dims} positive, finite voxel sizes")
    return sp


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Spatial shape that covers the same physical extent at ``target_spacing``."""
    dims = len(shape)
    sp = _spacing(spacing, dims, "spacing")
    tg = _spacing(target_spacing, dims, "target spacing")
    return tuple(max(1, round(int(n) * s / t)) for n, s, t in zip(shape, sp, tg))


def median_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Per-axis median of the cases' spacings (nnU-Net's target spacing)."""
    arr = np.asarray([[float(v) for v in s] for s in spacings], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError("give at least one spacing, each with one value per axis")
    return tuple(float(v) for v in np.median(arr, axis=0))


def spacings_differ(
    spacings: Sequence[Sequence[float]], tolerance: float = SPACING_TOLERANCE
) -> bool:
    """True when some axis' spacing varies by more than ``tolerance`` (relative to the
    smallest) among the cases."""
    arr = np.asarray([[float(v) for v in s] for s in spacings], dtype=np.float64)
    if arr.shape[0] < 2:
        return False
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    return bool(np.any(hi > lo * (1.0 + tolerance)))


def _zoom_to(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resample one spatial array to ``shape`` so that the corners of the first and last
    voxels' extents coincide (voxel centres map as ``(i + 0.5) * in / out - 0.5``)."""
    if tuple(array.shape) == shape:
        return np.array(array, copy=True)
    scale = [i / o for i, o in zip(array.shape, shape)]
    offset = [0.5 * s - 0.5 for s in scale]
    return ndimage.affine_transform(
        array,
        np.asarray(scale),
        offset=offset,
        output_shape=shape,
        order=order,
        mode="nearest",
        prefilter=order > 1,
    )


def resample_to_shape(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample ``array`` to the spatial ``shape``.

    Args:
        array: ``(C, *spatial)`` when it has one axis more than ``shape`` (an image or
            probabilities; each channel is resampled alone), else ``(*spatial)`` labels.
        shape: target spatial shape, e.g. a scan's own grid.
        order: spline order (0 nearest for labels, 1 linear, 3 cubic).

    Returns:
        a new array of shape ``(C, *shape)`` or ``shape``; float images come back as
        float32, labels (order 0) keep their dtype.
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    if order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"interpolation order must be 0..5, not {order}")
    if array.ndim == len(shape):
        out = _zoom_to(array, shape, order)
        return out.astype(array.dtype, copy=False) if order == 0 else out
    if array.ndim != len(shape) + 1:
        raise ValueError(
            f"cannot resample an array of shape {array.shape} to the spatial shape {shape}"
        )
    dtype = array.dtype if order == 0 else np.float32
    out = np.empty((array.shape[0], *shape), dtype=dtype)
    for c in range(array.shape[0]):
        src = array[c] if order == 0 else np.asarray(array[c], dtype=np.float32)
        out[c] = _zoom_to(src, shape, order)
    return out


def resample_image(
    image: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int = 1,
) -> np.ndarray:
    """Resample an image ``(C, *spatial)`` from ``spacing`` to ``target_spacing``.

    ``order`` 3 (cubic) is smoother, 1 (linear) faster and never overshoots. Returns a
    float32 ``(C, *new_spatial)`` array (see :func:`resampled_shape`).
    """
    image = np.asarray(image)
    if image.ndim < 3:
        raise ValueError(f"expected an image (C, *spatial), got shape {image.shape}")
    shape = resampled_shape(image.shape[1:], spacing, target_spacing)
    return resample_to_shape(image, shape, order=order)


def resample_labels(
    labels: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
    """Resample integer labels ``(*spatial)`` (e.g. an annotation, 0 = not annotated)
    with nearest-neighbour interpolation: no new values appear, 0 stays 0, the dtype is
    kept."""
    labels = np.asarray(labels)
    shape = resampled_shape(labels.shape, spacing, target_spacing)
    return resample_to_shape(labels, shape, order=0)
