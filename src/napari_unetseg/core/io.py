"""Volume input/output that keeps the scanner geometry (NIfTI via nibabel, TIFF via tifffile).

Arrays are numpy in (C, Z, Y, X) order for images (C = 1 for single-channel data) and
(Z, Y, X) for labels; 2D data is (C, Y, X) / (Y, X). ``VolumeMeta`` carries everything
needed to write a mask that lines up voxel for voxel with the source file.

NIfTI orientation convention: nibabel returns data indexed (i, j, k[, c]). We transpose it
to (k, j, i) = (z, y, x) on read (channels, when present, move to the front) and transpose
back on write, reusing the source affine and header. A voxel (i, j, k) of a written mask
therefore holds the label of voxel (i, j, k) of the source scan, and the written file has
the source's affine, shape and orientation codes.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES

_FORMATS_HINT = "supported formats are NIfTI (.nii, .nii.gz) and TIFF (.tif, .tiff)"


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
    source_path: the file the volume came from (None for in-memory arrays).
    channel_names: one name per image channel.
    extra: format details (e.g. TIFF axes, units, NIfTI version).
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


# --------------------------------------------------------------------------- helpers


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise VolumeIOError(f"cannot handle '{path.name}': unknown file type; {_FORMATS_HINT}.")


def _check_readable(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise VolumeIOError(f"{path}: file not found; check the path.")
    if path.is_dir():
        raise VolumeIOError(f"{path} is a folder; give the path of a NIfTI or TIFF file.")
    return path, suffix


def file_stem(path: Path) -> str:
    """The file name without its volume suffix (``scan.nii.gz`` -> ``scan``)."""
    name = path.name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _as_float_image(data: np.ndarray) -> np.ndarray:
    """Keep integer and float32 data as is, narrow float64/float16 to float32."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        return data.astype(np.float32)
    if np.issubdtype(data.dtype, np.complexfloating):
        raise VolumeIOError("complex-valued images are not supported; save the magnitude.")
    return data


# --------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        header = img.header
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise VolumeIOError(
            f"cannot read {path}: the file is damaged, truncated or not NIfTI ({exc}). "
            "Re-export or re-copy it."
        ) from exc
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
    if data.ndim == 2:
        spatial = data.T  # (i, j) -> (y, x)
        image = spatial[None]
        spacing = tuple(reversed(zooms[:2]))
    elif data.ndim == 3:
        image = data.T[None]  # (i, j, k) -> (1, k, j, i)
        spacing = tuple(reversed(zooms[:3]))
    else:
        image = data.transpose(3, 2, 1, 0)  # (i, j, k, c) -> (c, k, j, i)
        spacing = tuple(reversed(zooms[:3]))
    spacing = tuple(float(s) if np.isfinite(s) and s > 0 else 1.0 for s in spacing)
    image = np.ascontiguousarray(_as_float_image(image))
    version = 2 if isinstance(img, nib.Nifti2Image) else 1
    meta = VolumeMeta(
        spacing=spacing,
        affine=np.array(img.affine, dtype=np.float64),
        header=bytes(header.binaryblock),
        source_format="nifti",
        source_path=str(path),
        channel_names=[f"channel {c}" for c in range(image.shape[0])],
        extra={"nifti_version": version, "file_shape": tuple(int(s) for s in shape)},
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


# --------------------------------------------------------------------------- TIFF


def _tiff_spacing(tif, page) -> tuple[float | None, float | None, float | None, str | None]:
    """(z, y, x, unit) from ImageJ metadata and the resolution tags; None where unknown."""
    ij = dict(tif.imagej_metadata or {})
    if not ij and tif.is_shaped:
        shaped = tif.shaped_metadata or ()
        ij = dict(shaped[0]) if shaped else {}
    unit = ij.get("unit")
    if isinstance(unit, bytes):
        unit = unit.decode(errors="ignore")
    z = ij.get("spacing")
    y = x = None
    try:
        res_unit = int(page.resolutionunit)
        xres, yres = page.get_resolution()
    except Exception:
        res_unit, xres, yres = 2, None, None
    usable = tif.is_imagej or res_unit == 1 or res_unit == 3
    if usable and xres and yres and xres > 0 and yres > 0:
        x, y = 1.0 / float(xres), 1.0 / float(yres)
        if res_unit == 3 and not tif.is_imagej:  # pixels per centimetre -> micrometres
            x, y, unit = x * 1e4, y * 1e4, "micron"
    if tif.is_ome:
        ome = _ome_physical_sizes(tif)
        z = ome.get("Z", z)
        y = ome.get("Y", y)
        x = ome.get("X", x)
        unit = ome.get("unit", unit)
    return (float(z) if z else None), y, x, unit


def _ome_physical_sizes(tif) -> dict[str, Any]:
    """PhysicalSize{X,Y,Z} of the first OME image, where stated."""
    import tifffile

    try:
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
        image = ome["Image"][0] if isinstance(ome["Image"], list) else ome["Image"]
        pixels = image["Pixels"]
    except Exception:
        return {}
    out: dict[str, Any] = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if isinstance(value, (int, float)) and value > 0:
            out[axis] = float(value)
    unit = pixels.get("PhysicalSizeXUnit")
    if unit:
        out["unit"] = str(unit)
    return out


def _read_tiff(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            axes = str(series.axes).upper()
            data = series.asarray()
            z_res, y_res, x_res, unit = _tiff_spacing(tif, series.pages[0] or tif.pages[0])
    except Exception as exc:
        raise VolumeIOError(
            f"cannot read {path}: the file is damaged, truncated or not a TIFF ({exc}). "
            "Re-export or re-copy it."
        ) from exc
    if len(axes) != data.ndim:
        axes = "Q" * (data.ndim - 2) + "YX"
    # Drop singleton axes other than Y and X.
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "Y" not in axes or "X" not in axes:
        raise VolumeIOError(f"{path}: no image plane found in TIFF axes '{axes}'.")
    channel_axes = [a for a in axes if a in "CS"]
    depth_axes = [a for a in axes if a not in "CSYX"]
    if len(channel_axes) > 1 or len(depth_axes) > 1:
        raise VolumeIOError(
            f"{path} has axes '{axes}' with shape {data.shape}; napari-unetseg reads 2D or 3D "
            "TIFF with at most one channel axis. Save one time point / one channel group "
            "per file."
        )
    order = channel_axes + depth_axes + ["Y", "X"]
    image = data.transpose([axes.index(a) for a in order])
    if not channel_axes:
        image = image[None]
    if data.dtype.fields is not None:
        raise VolumeIOError(f"{path}: structured TIFF pixel types are not supported.")
    spacing = [y_res or 1.0, x_res or 1.0]
    if depth_axes:
        spacing.insert(0, z_res or 1.0)
    n_channels = image.shape[0]
    if channel_axes == ["S"] and n_channels in (3, 4):
        names = ["red", "green", "blue", "alpha"][:n_channels]
    else:
        names = [f"channel {c}" for c in range(n_channels)]
    meta = VolumeMeta(
        spacing=tuple(float(s) for s in spacing),
        source_format="tiff",
        source_path=str(path),
        channel_names=names,
        extra={"axes": axes, **({"unit": unit} if unit else {})},
        shape=tuple(int(s) for s in image.shape[1:]),
    )
    return np.ascontiguousarray(_as_float_image(image)), meta


def _write_tiff(path: Path, array: np.ndarray, meta: VolumeMeta, channels: bool) -> None:
    import tifffile

    spatial_ndim = array.ndim - (1 if channels else 0)
    spacing = tuple(meta.spacing)
    imagej = array.dtype in (np.uint8, np.uint16, np.float32)
    if channels and spatial_ndim == 3:
        data = array.transpose(1, 0, 2, 3)  # (K, Z, Y, X) -> (Z, C, Y, X), ImageJ order
        axes = "ZCYX"
    elif channels:
        data, axes = array, "CYX"
    else:
        data, axes = array, "ZYX" if spatial_ndim == 3 else "YX"
    metadata: dict[str, Any] = {"axes": axes}
    if spatial_ndim == 3:
        metadata["spacing"] = float(spacing[0])
    unit = meta.extra.get("unit") if meta.extra else None
    if unit and imagej:
        metadata["unit"] = unit
    resolution = (1.0 / float(spacing[-1]), 1.0 / float(spacing[-2]))
    kwargs: dict[str, Any] = {"resolution": resolution, "metadata": metadata}
    if imagej:
        kwargs["imagej"] = True
    else:
        kwargs["resolutionunit"] = "NONE"
        kwargs["photometric"] = "minisblack"
    tifffile.imwrite(str(path), np.ascontiguousarray(data), **kwargs)


# --------------------------------------------------------------------------- public API


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a NIfTI or TIFF file.

    Returns (image, meta): image is (C, Z, Y, X) for volumes or (C, Y, X) for 2D images
    (C = 1 for single-channel data); 4D NIfTI (i, j, k, c) becomes C channels, TIFF 'C'
    and 'S' axes become channels. Integer data keeps its dtype; floats become float32.
    NaN values are passed through (training rejects them with a clear message).
    Raises VolumeIOError for missing, corrupt or unsupported files.
    """
    path, suffix = _check_readable(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    return _read_tiff(path)


def read_labels(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read an integer mask.

    Returns (labels, meta): labels (Z, Y, X) or (Y, X) with an integer dtype. Float files
    are accepted when every value is a whole number. Raises VolumeIOError for files with
    several channels or non-integer values.
    """
    image, meta = read_volume(path)
    if image.shape[0] != 1:
        raise VolumeIOError(
            f"{path} has {image.shape[0]} channels; a mask must have a single channel."
        )
    labels = image[0]
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)):
            raise VolumeIOError(f"{path} contains NaN or infinite values; it is not a mask.")
        if labels.size and not np.array_equal(labels, np.round(labels)):
            raise VolumeIOError(
                f"{path} contains non-integer values; a mask holds whole-number labels. "
                "Is this an image rather than a label file?"
            )
        labels = labels.astype(_smallest_int_dtype(labels))
    return labels, meta


def _smallest_int_dtype(labels: np.ndarray) -> np.dtype:
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


def _check_spatial(array_shape: tuple[int, ...], meta: VolumeMeta, what: str) -> None:
    if meta.shape is not None and tuple(array_shape) != tuple(meta.shape):
        src = f" of {meta.source_path}" if meta.source_path else ""
        raise VolumeIOError(
            f"the {what} has shape {tuple(array_shape)} but the image{src} has spatial shape "
            f"{tuple(meta.shape)}; a mask must cover the image voxel for voxel "
            "(was it made from another image, cropped or resampled?)."
        )


def _atomic_write(path: str | Path, overwrite: bool, write) -> Path:
    """Write via a temporary file in the destination folder, then os.replace."""
    path = Path(path)
    suffix = _suffix(path)
    if path.exists() and not overwrite:
        raise VolumeIOError(
            f"{path} already exists; choose another name or allow overwriting "
            "(overwrite=True, --overwrite on the command line)."
        )
    if path.is_dir():
        raise VolumeIOError(f"{path} is a folder; give a file name ending in {suffix}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolumeIOError(f"cannot create the folder {path.parent}: {exc}") from exc
    tmp = path.with_name(f".{file_stem(path)}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        write(tmp, suffix)
        os.replace(tmp, path)
    except VolumeIOError:
        raise
    except Exception as exc:
        raise VolumeIOError(f"could not write {path}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_labels(
    labels: np.ndarray, meta: VolumeMeta, path: str | Path, overwrite: bool = True
) -> Path:
    """Write integer labels (Z, Y, X) or (Y, X) with the source geometry.

    NIfTI (.nii, .nii.gz, gzip for the latter): the file has the source affine, header and
    shape, and voxel (i, j, k) holds labels[k, j, i]. Data without a source file gets a
    diagonal affine from meta.spacing. TIFF (.tif, .tiff): ImageJ-style with the spacing.
    The smallest integer dtype that holds the values is used. The write is atomic (temp
    file in the same folder, then rename). Returns the path written.
    """
    labels = np.asarray(labels)
    if labels.ndim != meta.ndim:
        raise VolumeIOError(
            f"labels have {labels.ndim} axes {labels.shape} but the geometry has "
            f"{meta.ndim} spatial axes (spacing {tuple(meta.spacing)}); pass the mask "
            "without a channel axis, in (z, y, x) or (y, x) order."
        )
    _check_spatial(labels.shape, meta, "mask")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating):
            raise VolumeIOError(f"labels of dtype {labels.dtype} cannot be written as a mask")
        if not np.all(np.isfinite(labels)):
            raise VolumeIOError(
                "the mask contains NaN or infinite values; labels must be whole numbers"
            )
        if not np.array_equal(labels, np.round(labels)):
            raise VolumeIOError(
                "the mask contains non-integer values; use write_image for probabilities"
            )
    dtype = _smallest_int_dtype(labels)
    data = labels.astype(dtype, copy=False)

    def write(tmp: Path, suffix: str) -> None:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            img = _nifti_image(np.asarray(_to_file_order(data, meta.ndim)), meta, dtype)
            nib.save(img, str(tmp))
        else:
            out = data
            if out.dtype in (np.int8, np.int16):
                out = out.astype(np.int32)
            _write_tiff(tmp, out, meta, channels=False)

    return _atomic_write(path, overwrite, write)


def write_image(
    array: np.ndarray, meta: VolumeMeta, path: str | Path, overwrite: bool = True
) -> Path:
    """Write float data (probabilities, boundary maps) with the source geometry.

    array: (*spatial) or (K, *spatial) with spatial (Z, Y, X) or (Y, X), stored as float32.
    NIfTI: a (K, Z, Y, X) array becomes a 4D file (i, j, k, K), channels last, with the
    source affine and header. TIFF: ImageJ hyperstack (Z, C, Y, X). Atomic like
    write_labels. Returns the path written.
    """
    array = np.asarray(array)
    if array.ndim == meta.ndim:
        channels = False
        spatial_shape = array.shape
    elif array.ndim == meta.ndim + 1:
        channels = True
        spatial_shape = array.shape[1:]
    else:
        raise VolumeIOError(
            f"array has shape {array.shape}; expected (*spatial) or (K, *spatial) with "
            f"{meta.ndim} spatial axes"
        )
    _check_spatial(spatial_shape, meta, "array")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise VolumeIOError(f"cannot write an array of dtype {array.dtype} as an image")
    data = array.astype(np.float32, copy=False)

    def write(tmp: Path, suffix: str) -> None:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            file_data = np.asarray(_to_file_order(data, meta.ndim))
            img = _nifti_image(file_data, meta, np.dtype(np.float32))
            nib.save(img, str(tmp))
        else:
            _write_tiff(tmp, data, meta, channels=channels)

    return _atomic_write(path, overwrite, write)
