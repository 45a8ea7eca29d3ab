"""Volume input/output that keeps the scanner geometry (NIfTI via nibabel, TIFF via tifffile).

Arrays are numpy in (C, Z, Y, X) order for images (C = 1 for single-channel data) and
(Z, Y, X) for labels; 2D data is (C, Y, X) / (Y, X). ``VolumeMeta`` carries everything
needed to write a mask that lines up voxel for voxel with the source file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class VolumeIOError(Exception):
    """A file cannot be read or written; the message says what to do."""


@dataclass
class VolumeMeta:
    """Geometry and provenance of a volume.

    spacing: voxel size per spatial axis in array order (z, y, x) or (y, x).
    affine: 4x4 voxel-to-world matrix of the source file in its own (i, j, k) order
        (NIfTI), or None for formats without one.
    header: the source NIfTI header as bytes (None otherwise), reused on write.
    source_format: "nifti", "tiff" or "array".
    channel_names: one name per image channel.
    """

    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    header: bytes | None = None
    source_format: str = "array"
    source_path: str | None = None
    channel_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a NIfTI or TIFF file. Returns (array (C, Z, Y, X) or (C, Y, X), meta)."""
    raise NotImplementedError


def read_labels(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read an integer mask. Returns (array (Z, Y, X) or (Y, X) integer, meta)."""
    raise NotImplementedError


def write_labels(labels: np.ndarray, meta: VolumeMeta, path: str | Path,
                 overwrite: bool = True) -> Path:
    """Write integer labels (spatial shape of the source) with the source geometry."""
    raise NotImplementedError
