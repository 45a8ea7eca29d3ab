"""NIfTI (.nii, .nii.gz) via nibabel.

Orientation convention: nibabel returns data indexed (i, j, k[, c]). It is transposed to
(k, j, i) = (z, y, x) on read (channels, when present, move to the front) and transposed
back on write, reusing the source affine and header. A voxel (i, j, k) of a written mask
therefore holds the label of voxel (i, j, k) of the source scan, and the written file has
the source's affine, shape and orientation codes. Sources without a NIfTI header (NRRD,
MetaImage, DICOM, arrays) get a fresh header whose qform and sform are the meta's affine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .meta import VolumeIOError, VolumeMeta, as_float_image


def _unreadable(path: Path, exc: Exception) -> VolumeIOError:
    return VolumeIOError(
        f"cannot read {path}: the file is damaged, truncated or not NIfTI ({exc}). "
        "Re-export or re-copy it."
    )


#: More volumes than this along a 4th axis with time units: a time series, not channels.
MAX_TIME_CHANNELS = 16


def _time_series_notes(path: Path, header, n: int) -> list[str]:
    """A note when the 4th axis of a NIfTI file is time (its header's time unit), read as
    channels; VolumeIOError for a long time series (fMRI), which is no channel stack."""
    try:
        unit = header.get_xyzt_units()[1]
    except Exception:  # a header without units: nothing to say
        unit = "unknown"
    if unit not in ("sec", "msec", "usec"):
        return []
    if n > MAX_TIME_CHANNELS:
        raise VolumeIOError(
            f"{path} is a time series of {n} volumes (4th axis in {unit}), not a stack of "
            "channels: extract one volume or their mean as a 3D file first (e.g. with "
            "nibabel's four_to_three or fslroi); napari's own reader can browse it"
        )
    return [f"{path}: its {n} time points are read as {n} channels"]


def read_nifti(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    if not isinstance(img, nib.Nifti1Image):  # NIfTI-2 images are a subclass
        raise VolumeIOError(
            f"{path} is a {type(img).__name__}, not a NIfTI image; convert it to NIfTI "
            "(.nii / .nii.gz) first."
        )
    header = img.header
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    shape = data.shape
    zooms = [float(z) for z in header.get_zooms()]
    # Drop trailing singleton axes beyond the third (e.g. (X, Y, Z, 1) or (X, Y, Z, 1, C)).
    if data.ndim == 5 and shape[3] == 1:
        data = data[:, :, :, 0, :]
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 4:
        raise VolumeIOError(
            f"{path} has {data.ndim} dimensions {shape}; napari-unetseg reads 2D, 3D and "
            "3D multi-channel (i, j, k, channel) NIfTI. Split the file into 3D or 4D volumes."
        )
    if data.ndim < 2:
        raise VolumeIOError(f"{path} has shape {shape}; a 2D or 3D volume is needed.")
    notes: list[str] = []
    if data.ndim == 2:
        spatial = data.T  # (i, j) -> (y, x)
        image = spatial[None]
        spacing = tuple(reversed(zooms[:2]))
    elif data.ndim == 3:
        image = data.T[None]  # (i, j, k) -> (1, k, j, i)
        spacing = tuple(reversed(zooms[:3]))
    else:
        notes = _time_series_notes(path, header, data.shape[3])
        image = data.transpose(3, 2, 1, 0)  # (i, j, k, c) -> (c, k, j, i)
        spacing = tuple(reversed(zooms[:3]))
    spacing = tuple(float(s) if np.isfinite(s) and s > 0 else 1.0 for s in spacing)
    image = np.ascontiguousarray(as_float_image(image))
    version = 2 if isinstance(img, nib.Nifti2Image) else 1
    meta = VolumeMeta(
        spacing=spacing,
        affine=np.array(img.affine, dtype=np.float64),
        header=bytes(header.binaryblock),
        source_format="nifti",
        source_path=str(path),
        channel_names=[f"channel {c}" for c in range(image.shape[0])],
        extra={
            "nifti_version": version,
            "file_shape": tuple(int(s) for s in shape),
            **({"notes": notes} if notes else {}),
        },
        shape=tuple(int(s) for s in image.shape[1:]),
    )
    return image, meta


def _nifti_header(meta: VolumeMeta):
    """A fresh header copied from the source bytes (or None for in-memory data)."""
    import nibabel as nib

    if meta.header is None:
        return None
    raw = bytes(meta.header)
    try:
        if len(raw) == nib.Nifti1Header.template_dtype.itemsize:
            return nib.Nifti1Header(binaryblock=raw, check=False)
        if len(raw) == nib.Nifti2Header.template_dtype.itemsize:
            return nib.Nifti2Header(binaryblock=raw, check=False)
    except Exception as exc:
        raise VolumeIOError(f"the stored NIfTI header cannot be decoded ({exc})") from exc
    raise VolumeIOError(
        f"the stored NIfTI header has {len(raw)} bytes, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
    )


def _nifti_image(file_data: np.ndarray, meta: VolumeMeta, dtype: np.dtype):
    """Build a nibabel image for data already in file order (i, j, k[, c])."""
    import nibabel as nib

    header = _nifti_header(meta)
    affine = meta.nifti_affine()
    if header is None:
        img = nib.Nifti1Image(file_data, affine)
    else:
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = cls(file_data, affine, header=header)
    hdr = img.header
    img.set_data_dtype(dtype)
    hdr.set_slope_inter(1.0, 0.0)
    hdr.set_intent("none")
    hdr["cal_min"] = 0
    hdr["cal_max"] = 0
    if header is None:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    return img


def _to_file_order(array: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """(*spatial) -> (i, j[, k]); (K, *spatial) -> (i, j, k, K) (2D gets k = 1)."""
    if array.ndim == spatial_ndim:
        return array.T
    moved = np.moveaxis(array, 0, -1)  # (*spatial, K)
    axes = (*reversed(range(spatial_ndim)), spatial_ndim)
    out = moved.transpose(axes)  # (i, j[, k], K)
    if spatial_ndim == 2:
        out = out[:, :, None, :]
    return out


def write_nifti(tmp: Path, data: np.ndarray, meta: VolumeMeta) -> None:
    """Write (*spatial) or (K, *spatial) data (already of the dtype to store) to tmp."""
    import nibabel as nib

    img = _nifti_image(np.asarray(_to_file_order(data, meta.ndim)), meta, data.dtype)
    nib.save(img, str(tmp))
