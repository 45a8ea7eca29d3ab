"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) via SimpleITK, geometry kept.

SimpleITK returns arrays (z, y, x[, component]) and stores geometry in LPS: world =
origin + direction @ diag(spacing) @ (x, y, z). On read the arrays become (C, Z, Y, X)
(vector components are channels) and ``VolumeMeta.affine`` is the same matrix in RAS (the
first two rows negated), i.e. what nibabel would report for the same image saved as NIfTI.
The ITK origin, spacing and direction are also kept in ``meta.extra`` so that a mask
written for an image read from NRRD/MetaImage has exactly its geometry; masks for images
from other formats get the ITK geometry computed from ``meta.affine``.

SimpleITK is optional; it is imported only when such a file is read or written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .meta import VolumeIOError, VolumeMeta, as_float_image

NRRD_SUFFIXES = (".nrrd", ".nhdr")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
SITK_SUFFIXES = NRRD_SUFFIXES + METAIMAGE_SUFFIXES

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)


def _sitk(suffix: str, action: str):
    try:
        import SimpleITK
    except ImportError as exc:
        raise VolumeIOError(
            f"{action} {suffix} needs SimpleITK: pip install 'napari-unetseg[formats]'"
        ) from exc
    return SimpleITK


def itk_to_affine(origin, spacing, direction) -> np.ndarray:
    """4x4 RAS affine for (i, j, k) = (x, y, z) from ITK (LPS) geometry of 2 or 3 axes.

    direction is the flattened row-major n x n ITK direction matrix. A 2D image gets the
    third column (0, 0, 1) and a zero third translation.
    """
    n = len(spacing)
    matrix = np.asarray(direction, dtype=np.float64).reshape(n, n) * np.asarray(spacing)
    lps = np.eye(4)
    lps[:n, :n] = matrix
    lps[:n, 3] = np.asarray(origin, dtype=np.float64)
    return _LPS @ lps


def affine_to_itk(affine: np.ndarray, ndim: int) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in LPS for ``ndim`` axes from a 4x4 RAS affine."""
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    matrix = lps[:ndim, :ndim]
    spacing = np.linalg.norm(matrix, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(matrix)):
        raise VolumeIOError(
            f"the image geometry has a degenerate voxel axis (affine columns {matrix.T}); "
            "it cannot be written as NRRD/MetaImage"
        )
    direction = matrix / spacing
    return (
        tuple(float(v) for v in lps[:ndim, 3]),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.ravel()),
    )


def _detached_data_file(path: Path) -> Path | None:
    """The data file named by a detached header (.nhdr/.mhd), or None when the data are in
    the header file, listed, or given by a pattern."""
    with open(path, "rb") as f:
        text = f.read(65536).decode("latin-1")
    for line in text.splitlines():
        if path.suffix.lower() == ".nhdr":
            if not line.strip():
                break  # end of the NRRD header
            key, sep, value = line.partition(":")
            if not sep or key.strip().lower() not in ("data file", "datafile"):
                continue
        else:
            key, sep, value = line.partition("=")
            if not sep or key.strip() != "ElementDataFile":
                continue
        name = value.strip()
        if not name or name.upper().startswith(("LIST", "LOCAL")) or "%" in name:
            return None
        if " " in name and not (path.parent / name).exists():
            return None  # "pattern min max step" forms
        return path.parent / name
    return None


def _itk_reason(exc: Exception) -> str:
    """The useful part of an ITK exception text, on one line."""
    text = " ".join(str(exc).split())
    found = re.search(r"ITK ERROR: \w+\(0x[0-9a-fA-F]+\): (.*)", text)
    return (found.group(1) if found else text)[:300]


def read_sitk(path: Path, suffix: str) -> tuple[np.ndarray, VolumeMeta]:
    """Read a NRRD or MetaImage file: image (C, Z, Y, X) or (C, Y, X), meta with the RAS
    affine. Integer data keeps its dtype, floats become float32."""
    sitk = _sitk(suffix, "reading")
    if suffix in (".nhdr", ".mhd"):
        try:
            data_file = _detached_data_file(path)
        except OSError as exc:
            raise VolumeIOError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if data_file is not None and not data_file.exists():
            raise VolumeIOError(
                f"{path} is a header whose data file {data_file} is missing; copy the data "
                "file next to the header."
            )
    try:
        img = sitk.ReadImage(str(path))
    except Exception as exc:
        reason = _itk_reason(exc)
        raise VolumeIOError(
            f"cannot read {path}: the file is damaged, truncated or not a {suffix} image "
            f"({reason}). Re-export or re-copy it."
        ) from exc
    dim = img.GetDimension()
    pixel = img.GetPixelIDTypeAsString()
    if "complex" in pixel.lower():
        raise VolumeIOError(
            f"{path} has complex-valued pixels ({pixel}); save the magnitude as a real image."
        )
    if dim not in (2, 3):
        raise VolumeIOError(
            f"{path} has {dim} dimensions {img.GetSize()}; napari-unetseg reads 2D and 3D "
            "images (vector pixels become channels). Split the file into 3D volumes."
        )
    try:
        data = sitk.GetArrayFromImage(img)
    except Exception as exc:
        raise VolumeIOError(f"{path}: pixel type {pixel} is not supported ({exc}).") from exc
    if img.GetNumberOfComponentsPerPixel() > 1:
        image = np.moveaxis(data, -1, 0)
    else:
        image = data[None]
    image = np.ascontiguousarray(as_float_image(image))
    origin, spacing, direction = img.GetOrigin(), img.GetSpacing(), img.GetDirection()
    fmt = "nrrd" if suffix in NRRD_SUFFIXES else "metaimage"
    meta = VolumeMeta(
        spacing=tuple(float(s) for s in reversed(spacing)),
        affine=itk_to_affine(origin, spacing, direction),
        source_format=fmt,
        source_path=str(path),
        channel_names=[f"channel {c}" for c in range(image.shape[0])],
        extra={
            "itk_origin": tuple(float(v) for v in origin),
            "itk_spacing": tuple(float(v) for v in spacing),
            "itk_direction": tuple(float(v) for v in direction),
            "pixel_type": pixel,
        },
        shape=tuple(int(s) for s in image.shape[1:]),
    )
    return image, meta


def _geometry(meta: VolumeMeta) -> tuple[tuple, tuple, tuple]:
    """ITK origin, spacing and direction for writing: the source's own values when they
    still describe meta.affine, else computed from the affine (or the spacing)."""
    extra = meta.extra or {}
    keys = ("itk_origin", "itk_spacing", "itk_direction")
    if all(k in extra for k in keys) and len(extra["itk_spacing"]) == meta.ndim:
        own = (tuple(extra[keys[0]]), tuple(extra[keys[1]]), tuple(extra[keys[2]]))
        if meta.affine is not None and np.allclose(
            itk_to_affine(*own), meta.affine, rtol=1e-9, atol=1e-9
        ):
            return own
    return affine_to_itk(meta.nifti_affine(), meta.ndim)


def write_sitk(tmp: Path, data: np.ndarray, meta: VolumeMeta, channels: bool) -> None:
    """Write (*spatial) or, with channels, (K, *spatial) data to tmp (.nrrd/.nhdr/.mha/.mhd,
    compressed) with the geometry of meta; channels become vector components."""
    suffix = next(s for s in SITK_SUFFIXES if tmp.name.lower().endswith(s))
    sitk = _sitk(suffix, "writing")
    array = np.ascontiguousarray(np.moveaxis(data, 0, -1) if channels else data)
    img = sitk.GetImageFromArray(array, isVector=channels)
    origin, spacing, direction = _geometry(meta)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(tmp), True)
