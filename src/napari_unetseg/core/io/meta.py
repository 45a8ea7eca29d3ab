"""Geometry of a volume (:class:`VolumeMeta`), the error class of the readers and writers,
and the dtype rules they share.

Arrays are (C, Z, Y, X) / (C, Y, X) for images and (Z, Y, X) / (Y, X) for labels.
``VolumeMeta.affine`` is the 4x4 voxel-to-world matrix in RAS+ millimetres for the voxel
index (i, j, k) = (x, y, z), i.e. exactly what nibabel reports for the same image; formats
that store LPS (NRRD, MetaImage, DICOM) are converted on read and on write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class VolumeIOError(Exception):
    """A file cannot be read or written; the message says what to do."""


@dataclass
class VolumeMeta:
    """Geometry and provenance of a volume.

    spacing: voxel size per spatial axis in array order (z, y, x) or (y, x).
    affine: 4x4 voxel-to-world matrix (RAS) for the voxel index (i, j, k) = (x, y, z), as
        nibabel gives it; None for formats without a geometry (TIFF, in-memory arrays).
    header: the source NIfTI header as bytes (None otherwise), reused on write.
    source_format: "nifti", "tiff", "nrrd", "metaimage", "dicom" or "array".
    source_path: the file the volume came from (None for in-memory arrays).
    channel_names: one name per image channel.
    extra: format details (e.g. TIFF axes, units, NIfTI version, ITK origin/spacing/
        direction in LPS for NRRD/MetaImage sources).
    shape: spatial shape of the source volume in array order (z, y, x) or (y, x); masks
        written with this meta must have exactly this shape. None when unknown.
    """

    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    header: bytes | None = None
    source_format: str = "array"
    source_path: str | None = None
    channel_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.spacing)

    def nifti_affine(self) -> np.ndarray:
        """The 4x4 voxel-to-world matrix used when writing NIfTI: the source affine, or a
        diagonal one built from the spacing (zooms in (i, j, k) = (x, y, z) order)."""
        if self.affine is not None:
            return np.asarray(self.affine, dtype=np.float64)
        return default_affine(self.spacing)


def default_affine(spacing) -> np.ndarray:
    """Diagonal 4x4 affine for data without a source geometry.

    spacing is in array order (z, y, x) or (y, x); NIfTI zooms are its reverse.
    """
    zooms = [float(s) for s in reversed(tuple(spacing))]
    zooms = [*zooms, 1.0, 1.0, 1.0][:3]
    return np.diag([*zooms, 1.0])


def meta_from_array(
    shape: tuple[int, ...] | None = None,
    spacing: tuple[float, ...] | None = None,
    channel_names: list[str] | None = None,
) -> VolumeMeta:
    """Meta for an in-memory array (no source file).

    shape: spatial shape (z, y, x) or (y, x); spacing defaults to 1 per axis. Masks written
    with it get a diagonal affine built from the spacing.
    """
    if spacing is None:
        if shape is None:
            raise ValueError("meta_from_array needs the spatial shape or the spacing")
        spacing = (1.0,) * len(shape)
    spacing = tuple(float(s) for s in spacing)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != len(spacing):
            raise ValueError(f"spatial shape {shape} and spacing {spacing} have different lengths")
    if len(spacing) not in (2, 3):
        raise ValueError(f"spacing must have 2 or 3 values (y, x) or (z, y, x), got {spacing}")
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return VolumeMeta(
        spacing=spacing,
        source_format="array",
        channel_names=list(channel_names or []),
        shape=shape,
    )


def as_float_image(data: np.ndarray) -> np.ndarray:
    """Keep integer and float32 data as is, narrow float64/float16 to float32, bool to
    uint8; complex data is refused."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.complexfloating):
        raise VolumeIOError("complex-valued images are not supported; save the magnitude.")
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        return data.astype(np.float32)
    return data


def smallest_int_dtype(labels: np.ndarray) -> np.dtype:
    """Smallest NIfTI-friendly integer dtype holding every value of labels."""
    if labels.size == 0:
        return np.dtype(np.uint8)
    lo, hi = float(labels.min()), float(labels.max())
    if lo >= 0:
        for dt in (np.uint8, np.uint16, np.int32, np.int64):
            if hi <= np.iinfo(dt).max:
                return np.dtype(dt)
    else:
        for dt in (np.int8, np.int16, np.int32, np.int64):
            info = np.iinfo(dt)
            if lo >= info.min and hi <= info.max:
                return np.dtype(dt)
    raise VolumeIOError(f"label values {lo}..{hi} do not fit a 64-bit integer")


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Length of each voxel axis (i, j, k) of a 4x4 affine: the column norms."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
