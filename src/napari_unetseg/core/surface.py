"""Surface distances between binary masks, and region masks of label maps.

Masks are boolean numpy arrays in (Z, Y, X) order for volumes or (Y, X) for images;
``spacing`` is the voxel size per axis in the same order (e.g. millimetres), so every
distance returned here is in physical units.

The surface of a mask is the set of its voxels that have at least one face neighbour
(6-connectivity in 3D, 4 in 2D) outside the mask; voxels on the array border count as
surface. This is the definition of MedPy's ``hd95`` and of the BraTS evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["hausdorff95", "region_masks", "surface_distances"]


def _check_masks(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred = np.asarray(pred_mask)
    truth = np.asarray(truth_mask)
    if pred.shape != truth.shape:
        raise ValueError(
            f"the prediction has shape {pred.shape} but the reference has {truth.shape}; "
            "compare masks of the same image grid"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(
            f"masks must be (Z, Y, X) or (Y, X), got {pred.ndim} dimensions {pred.shape}"
        )
    if spacing is None:
        sp = (1.0,) * pred.ndim
    else:
        sp = tuple(float(s) for s in spacing)
    if len(sp) != pred.ndim:
        raise ValueError(
            f"spacing {sp} has {len(sp)} values but the masks have {pred.ndim} axes; "
            "give one spacing per axis in (z, y, x) or (y, x) order"
        )
    if any(not np.isfinite(s) or s <= 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    return pred.astype(bool, copy=False), truth.astype(bool, copy=False), sp


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (array border = outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)
    return mask & ~eroded


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - margin, 0), int(idx[-1]) + 1 + margin))
    return tuple(out)


def surface_distances(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in physical units.

    Args:
        pred_mask, truth_mask: boolean masks (Z, Y, X) or (Y, X), same shape, both
            non-empty.
        spacing: voxel size per axis in array order; None = 1 per axis.

    Returns:
        (pred_to_truth, truth_to_pred): 1D float arrays; the first holds, for every
        surface voxel of the prediction, the distance to the nearest surface voxel of the
        reference, the second the converse.
    """
    pred, truth, sp = _check_masks(pred_mask, truth_mask, spacing)
    if not pred.any() or not truth.any():
        raise ValueError("surface distances need two non-empty masks")
    # Surfaces are found on the full arrays (so the array border counts as outside); the
    # distance transforms run on the bounding box of both masks, which holds them all.
    box = _bounding_box(pred | truth, margin=0)
    pred_s = _surface(pred)[box]
    truth_s = _surface(truth)[box]
    to_truth = ndimage.distance_transform_edt(~truth_s, sampling=sp)
    to_pred = ndimage.distance_transform_edt(~pred_s, sampling=sp)
    return to_truth[pred_s].astype(np.float64), to_pred[truth_s].astype(np.float64)


def hausdorff95(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Sequence[float] | None = None
) -> float:
    """Symmetric 95th-percentile Hausdorff distance (HD95) in physical units.

    The 95th percentile (linear interpolation) of the union of both directed surface
    distance sets (prediction -> reference and reference -> prediction), as in MedPy's
    ``hd95`` and the BraTS evaluation. MONAI's ``compute_hausdorff_distance`` instead
    takes the larger of the two directed 95th percentiles, which is never smaller.

    Args:
        pred_mask, truth_mask: boolean masks (Z, Y, X) or (Y, X), same shape.
        spacing: voxel size per axis in array order (e.g. mm); None = 1 per axis.

    Returns:
        The distance as a float. Empty masks: both empty -> 0.0 (perfect agreement);
        exactly one empty -> ``float('inf')`` (undefined; tables may show it as NaN).
    """
    pred, truth, _ = _check_masks(pred_mask, truth_mask, spacing)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0
    if has_pred != has_truth:
        return float("inf")
    a, b = surface_distances(pred, truth, spacing)
    return float(np.percentile(np.concatenate([a, b]), 95))


def region_masks(
    labels: np.ndarray, regions: Mapping[str, Sequence[int]]
) -> dict[str, np.ndarray]:
    """Boolean mask per region of a label map.

    Args:
        labels: integer label map (Z, Y, X) or (Y, X) in the ordinary convention
            (0 = background, k = class k).
        regions: region name -> the class labels it unites, e.g.
            ``{"whole tumor": [1, 2, 3], "enhancing tumor": [3]}``.

    Returns:
        region name -> boolean array of ``labels``' shape, True where the label is one of
        the region's labels.
    """
    arr = np.asarray(labels)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"labels must be integers, not {arr.dtype}")
    out: dict[str, np.ndarray] = {}
    for name, members in regions.items():
        values = [int(v) for v in members]
        if not values:
            raise ValueError(f"region {name!r} names no labels; give at least one label")
        out[str(name)] = np.isin(arr, values)
    return out
