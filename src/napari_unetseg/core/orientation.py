"""How a scan with an anatomical geometry is shown: axes named, millimetres, radiological.

Arrays stay in the file's voxel order (Z, Y, X) = (k, j, i), so that every mask painted or
predicted on them is written back voxel for voxel; only the display transform changes.

napari draws world coordinates increasing to the right and downwards, and it slices
only along world axes that are array axes (a permutation or a rotation in a layer's
transform is "non-orthogonal slicing", which napari does not support). So each array
axis keeps its place and gets a signed scale and a translation that make its world
coordinate the millimetre position along the anatomical axis it runs closest to
(nibabel's ``io_orientation``), counted in the direction that puts the image where
radiologists expect it with napari's default camera:

* world coordinates increase towards patient Left, Posterior and Inferior ("LPI"): the
  negated RAS coordinates. An axial slice then has anterior at the top and the patient's
  right on the left of the screen (radiological convention, as in 3D Slicer and
  ITK-SNAP); coronal and sagittal slices have superior at the top.
* the axis labels name the direction in which each world axis increases ("I", "P",
  "L"), and the units are millimetres.
* ``order`` is the napari dims order that slices axially (the inferior-superior axis
  first, then anterior-posterior rows and left-right columns), for files stored in
  another axis order (sagittal or coronal acquisitions).

An oblique scan is shown in its closest orthogonal orientation (as ITK-SNAP does); the
exact RAS position of a voxel comes from :func:`ras_position`, which uses the whole
affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: RAS axis letters (the direction of increasing RAS coordinate) and their opposites.
RAS = ("R", "A", "S")
LPI = ("L", "P", "I")
#: Source formats whose affine is an anatomical (RAS) geometry.
ANATOMICAL_FORMATS = ("nifti", "nrrd", "metaimage", "dicom")


@dataclass(frozen=True)
class DisplayFrame:
    """The display transform of one scan, one entry per array axis.

    scale: signed millimetres per voxel (negative where the index runs towards R, A or S).
    translate: world position (mm, LPI) of voxel index 0.
    axis_labels: the anatomical direction in which each world axis increases.
    order: napari dims order for an axial view (slice axis first).
    ras_axes: for each array axis, the RAS axis (0 = R, 1 = A, 2 = S) it runs closest to.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axis_labels: tuple[str, ...]
    order: tuple[int, ...]
    ras_axes: tuple[int, ...]
    units: str = "mm"

    def layer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a napari layer (scale, translate, axis_labels, units)."""
        return {
            "scale": self.scale,
            "translate": self.translate,
            "axis_labels": self.axis_labels,
            "units": (self.units,) * len(self.scale),
        }


def display_frame(meta: Any) -> DisplayFrame | None:
    """The display transform of a volume read with an anatomical geometry, else None.

    meta: a :class:`~.io.VolumeMeta` whose ``affine`` maps voxel (i, j, k) = array
    (x, y, z) to RAS millimetres. None for TIFF, in-memory arrays and anything without a
    usable affine.
    """
    affine = getattr(meta, "affine", None)
    if affine is None or getattr(meta, "source_format", None) not in ANATOMICAL_FORMATS:
        return None
    a = np.asarray(affine, dtype=np.float64)
    spacing = tuple(float(s) for s in meta.spacing)
    nd = len(spacing)
    if a.shape != (4, 4) or not np.isfinite(a).all() or nd not in (2, 3):
        return None
    from nibabel.orientations import io_orientation

    ornt = io_orientation(a)  # per voxel axis (i, j, k): (RAS axis, +1/-1)
    if np.isnan(ornt[:nd]).any():
        return None
    scale, translate, labels, ras_axes = [], [], [], []
    for axis in range(nd):
        voxel_axis = nd - 1 - axis  # array (z, y, x) = voxel (k, j, i)
        ras, sign = int(ornt[voxel_axis, 0]), float(ornt[voxel_axis, 1])
        scale.append(-sign * spacing[axis])
        translate.append(-float(a[ras, 3]))
        labels.append(LPI[ras])
        ras_axes.append(ras)
    order = tuple(sorted(range(nd), key=lambda ax: -ras_axes[ax]))
    return DisplayFrame(
        scale=tuple(scale),
        translate=tuple(translate),
        axis_labels=tuple(labels),
        order=order,
        ras_axes=tuple(ras_axes),
    )


def ras_position(meta: Any, index: Sequence[float]) -> tuple[float, ...] | None:
    """RAS millimetres (R, A, S) of array position ``index`` ((z, y, x) or (y, x), may be
    fractional) through the whole affine (obliquity included); None without one."""
    affine = getattr(meta, "affine", None)
    if affine is None or getattr(meta, "source_format", None) not in ANATOMICAL_FORMATS:
        return None
    idx = [float(v) for v in index]
    voxel = list(reversed(idx)) + [0.0] * (3 - len(idx))
    ras = np.asarray(affine, dtype=np.float64) @ np.array([*voxel, 1.0])
    return tuple(float(v) for v in ras[:3])


def format_ras(ras: Sequence[float]) -> str:
    """'R 12.0  A -3.5  S 40.1 mm', with L/P/I for negative values."""
    parts = []
    for value, pos, neg in zip(ras, RAS, LPI):
        parts.append(f"{pos if value >= 0 else neg} {abs(value):.1f}")
    return "  ".join(parts) + " mm"
