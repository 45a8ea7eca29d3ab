"""Checks and geometric decisions for a training dataset: which cases are usable, 2D or
3D network (and along which axis 2D slices are taken), and the spacing to train at.

Shapes are in array order: images ``(C, Z, Y, X)`` or ``(C, Y, X)``, annotations
``(Z, Y, X)`` or ``(Y, X)``, spacings per spatial axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .classes import label_values
from .config import Config
from .resample import SPACING_TOLERANCE, median_spacing


def _axes_text(ndim: int) -> str:
    return "(C, Z, Y, X)" if ndim == 3 else "(C, Y, X)"


def check_cases(cases: Sequence) -> tuple[list, list[np.ndarray], list[str]]:
    """Check the annotated cases; return ``(usable cases, their label values, notes)``.

    A case whose annotation holds no annotated voxel is left out (with a note) when
    other cases remain.

    Raises:
        ValueError: a case without annotation, shapes or channels that do not match, an
            image that is not real numbers, an annotation that is not whole numbers, or
            no annotated voxel / no foreground in the whole set (messages name the case
            when there are several).
    """
    several = len(cases) > 1
    usable, values, notes = [], [], []
    for case in cases:
        where = f"case {case.name!r}: " if several else ""
        ann = case.annotation
        if ann is None:
            raise ValueError(f"{where}there is no annotation to learn from; paint one first")
        if not hasattr(ann, "shape"):
            ann = case.annotation = np.asarray(ann)
        if len(ann.shape) not in (2, 3):
            raise ValueError(
                f"{where}the annotation must be (Z, Y, X) or (Y, X), got shape {ann.shape}"
            )
        shape = tuple(ann.shape)
        img_shape = tuple(case.image.shape)
        if len(img_shape) != len(shape) + 1 or img_shape[1:] != shape:
            raise ValueError(
                f"{where}the image {img_shape} does not match the annotation {shape}: give "
                f"the image as {_axes_text(len(shape))} with the annotation's spatial shape"
            )
        dtype = np.dtype(case.image.dtype)
        if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
            raise ValueError(f"{where}the image must hold real numbers, not {dtype}")
        vals = label_values(ann)
        if not np.issubdtype(vals.dtype, np.integer) and not np.all(np.mod(vals, 1) == 0):
            raise ValueError(
                f"{where}the annotation must hold whole numbers (0 = not annotated, 1 = "
                "background, 2.. = classes)"
            )
        if several and not np.any(vals != 0):
            notes.append(f"case {case.name!r} has no annotated voxel; it is left out")
            continue
        usable.append(case)
        values.append(vals)
    if usable:
        first = usable[0]
        for case in usable[1:]:
            if case.spatial_dims != first.spatial_dims or case.channels != first.channels:
                raise ValueError(
                    f"case {case.name!r} is {case.channels}-channel {case.spatial_dims}D, "
                    f"case {first.name!r} {first.channels}-channel {first.spatial_dims}D: "
                    "all cases need the same channels and dimensions"
                )
    every = np.unique(np.concatenate(values)) if values else np.zeros(1)
    if not np.any(every != 0):
        raise ValueError(
            "the annotation is empty: paint background (1) and at least one class (2..) "
            "in a few slices before training"
        )
    if not np.any(every >= 2):
        raise ValueError(
            "the annotation holds background only: paint at least one class or object "
            "(value 2 or more) before training"
        )
    return usable, values, notes


def network_dims(cases: Sequence, config: Config, resume=None) -> tuple[int, int, int | None]:
    """``(network dims, image dims, slice_axis)`` for the dataset.

    2D images train a 2D network; volumes with a single slice ``(1, Y, X)`` ALWAYS train a
    2D network on that slice (``slice_axis`` 0); other volumes train a 3D network unless
    ``model.spatial_dims`` is 2 (or the model to continue is 2D): then a 2D network learns
    from the slices along ``data.slice_axis``. ``slice_axis`` is ``None`` for 3D networks
    and 2D images.
    """
    image_dims = cases[0].spatial_dims
    if image_dims == 2:
        return 2, 2, None
    if all(c.spatial_shape[0] == 1 for c in cases):
        return 2, 3, 0
    dims = resume.config.model.spatial_dims if resume is not None else config.model.spatial_dims
    if dims == 3:
        return 3, 3, None
    source = resume.config.data if resume is not None else config.data
    axis = int(getattr(source, "slice_axis", 0))
    if not 0 <= axis < 3:
        raise ValueError(f"data.slice_axis must be 0 (Z), 1 (Y) or 2 (X), not {axis}")
    return 2, 3, axis


def case_spacings(cases: Sequence) -> list[tuple[float, ...] | None]:
    """Each case's spacing trimmed to its spatial axes (``None`` stays ``None``)."""
    out: list[tuple[float, ...] | None] = []
    for c in cases:
        if c.spacing is None:
            out.append(None)
            continue
        sp = tuple(float(s) for s in c.spacing)[-c.spatial_dims :]
        if len(sp) != c.spatial_dims or any(not (s > 0 and np.isfinite(s)) for s in sp):
            raise ValueError(
                f"case {c.name!r}: spacing {tuple(c.spacing)} must give one positive voxel "
                f"size per spatial axis ({c.spatial_dims})"
            )
        out.append(sp)
    return out


def training_spacing(
    spacings: Sequence[tuple[float, ...] | None],
    target: Sequence[float] | None,
    slice_axis: int | None = None,
    tolerance: float = SPACING_TOLERANCE,
) -> tuple[list[tuple[float, ...] | None], tuple[float, ...] | None, str | None]:
    """Decide where each case is resampled to.

    Args:
        spacings: per case (see :func:`case_spacings`); ``None`` = unknown (isotropic 1).
        target: ``data.target_spacing`` or ``None`` (= the median when the spacings differ
            by more than ``tolerance`` on some axis, else every case keeps its grid).
        slice_axis: 2D networks on 3D cases: this axis is never resampled.

    Returns:
        ``(per-case target spacing or None, the training spacing (the plan's; None when
        no spacing is known), a sentence for the user or None)``.
    """
    n = len(spacings)
    if all(s is None for s in spacings):
        if target is not None:
            return [None] * n, None, "data.target_spacing is ignored: no case has a spacing"
        return [None] * n, None, None
    dims = len(next(s for s in spacings if s is not None))
    known = [s if s is not None else (1.0,) * dims for s in spacings]
    axes = [a for a in range(dims) if a != slice_axis]
    median = median_spacing(known)
    chosen = None
    if target is not None:
        chosen = tuple(float(v) for v in target)[-dims:]
        if len(chosen) != dims or any(not (v > 0 and np.isfinite(v)) for v in chosen):
            raise ValueError(
                f"data.target_spacing {tuple(target)} must give {dims} positive voxel sizes"
            )
        why = "data.target_spacing"
    else:
        arr = np.asarray(known)[:, axes]
        if n > 1 and np.any(arr.max(axis=0) > arr.min(axis=0) * (1 + tolerance)):
            chosen, why = median, "the median of the cases' spacings"
    if chosen is None:
        text = None
        if n > 1:
            text = "the cases keep their own voxel grids (their spacings agree within 10 %)"
        return [None] * n, median, text
    per_case = []
    for sp in known:
        tg = list(chosen)
        if slice_axis is not None:
            tg[slice_axis] = sp[slice_axis]
        differs = any(abs(sp[a] - tg[a]) > tolerance * min(sp[a], tg[a]) for a in axes)
        per_case.append(tuple(tg) if differs else None)
    sp_text = " x ".join(f"{v:g}" for v in chosen)
    count = sum(t is not None for t in per_case)
    text = f"{count} of {n} case(s) resampled to the voxel spacing {sp_text} ({why})"
    return per_case, tuple(chosen), text
