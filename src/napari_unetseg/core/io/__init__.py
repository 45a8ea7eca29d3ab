"""Volume input/output that keeps the scanner geometry.

Formats: NIfTI (.nii, .nii.gz) via nibabel, TIFF (.tif, .tiff) via tifffile, and, when
SimpleITK is installed, NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd); with pydicom,
DICOM series are read, and with highdicom labels for a DICOM image are written as a DICOM
SEG (``write_labels(..., "seg.dcm")`` or :func:`write_dicom_seg`).

Arrays are numpy in (C, Z, Y, X) order for images (C = 1 for single-channel data) and
(Z, Y, X) for labels; 2D data is (C, Y, X) / (Y, X). ``VolumeMeta`` carries everything
needed to write a mask that lines up voxel for voxel with the source file; its ``affine``
is the RAS voxel-to-world matrix for (i, j, k) = (x, y, z), as nibabel reports it, whatever
the format. A mask voxel [z, y, x] is written to file voxel (i, j, k) = (x, y, z).

Every write goes through :func:`atomic_write` (temporary file beside the target, then
``os.replace``): a failed or interrupted write never leaves half a file.

Modules: ``meta`` (VolumeMeta, errors), ``atomic`` (the write helper), ``nifti``, ``tiff``,
``sitk`` (NRRD/MetaImage), ``dicom`` (series), ``dicom_seg`` (DICOM SEG), ``channels``
(several files as the channels of one image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import (
    OutputExistsError,
    WriteError,
    atomic_write,
    write_bytes_atomic,
    write_text_atomic,
)
from .dicom import DICOM_SUFFIXES, list_dicom_series, read_dicom
from .dicom_seg import read_dicom_seg, write_dicom_seg
from .meta import (
    VolumeIOError,
    VolumeMeta,
    default_affine,
    meta_from_array,
    smallest_int_dtype,
)
from .sitk import METAIMAGE_SUFFIXES, NRRD_SUFFIXES, SITK_SUFFIXES
from .zarr import ZARR_SUFFIXES, is_zarr_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + SITK_SUFFIXES

_FORMATS_HINT = (
    "supported formats are NIfTI (.nii, .nii.gz), TIFF (.tif, .tiff), NRRD (.nrrd, .nhdr) "
    "and MetaImage (.mha, .mhd); DICOM series (a folder or a .dcm file) can be read"
)

__all__ = [
    "DICOM_SUFFIXES",
    "METAIMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "OutputExistsError",
    "VolumeIOError",
    "VolumeMeta",
    "WriteError",
    "atomic_write",
    "check_labels_target",
    "default_affine",
    "file_stem",
    "is_zarr_path",
    "list_dicom_series",
    "meta_from_array",
    "read_channels",
    "read_dicom",
    "read_dicom_seg",
    "read_labels",
    "read_volume",
    "write_bytes_atomic",
    "write_dicom_seg",
    "write_image",
    "write_labels",
    "write_text_atomic",
]


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
        raise VolumeIOError(f"{path} is a folder; give the path of an image file.")
    return path, suffix


def file_stem(path: Path) -> str:
    """The file name without its volume suffix (``scan.nii.gz`` -> ``scan``)."""
    path = Path(path)
    name = path.name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a NIfTI, TIFF, NRRD or MetaImage file, or a DICOM series (a folder, or a
    ``.dcm`` file of the series; see :func:`read_dicom` to pick one of several series).

    Returns (image, meta): image is (C, Z, Y, X) for volumes or (C, Y, X) for 2D images
    (C = 1 for single-channel data); 4D NIfTI (i, j, k, c) becomes C channels, TIFF 'C'
    and 'S' axes and NRRD/MetaImage vector components become channels. Integer data keeps
    its dtype; floats become float32. NaN values are passed through (training rejects them
    with a clear message). Raises VolumeIOError for missing, corrupt or unsupported files.
    A zarr / OME-Zarr store (``.zarr``) comes as a lazy dask array (see
    :func:`.zarr.read_zarr`): nothing is read until it is sliced or computed.
    """
    if is_zarr_path(path):
        from .zarr import read_zarr

        return read_zarr(path)
    if Path(path).is_dir() or Path(path).name.lower().endswith(DICOM_SUFFIXES):
        return read_dicom(path)
    path, suffix = _check_readable(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            from .nifti import read_nifti

            return read_nifti(path)
        if suffix in SITK_SUFFIXES:
            from .sitk import read_sitk

            return read_sitk(path, suffix)
        from .tiff import read_tiff

        return read_tiff(path)
    except VolumeIOError as exc:
        if Path(path).name in str(exc):
            raise
        raise VolumeIOError(f"{path}: {exc}") from None  # every message names the file


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
        labels = labels.astype(smallest_int_dtype(labels))
    return labels, meta


def _check_spatial(array_shape: tuple[int, ...], meta: VolumeMeta, what: str) -> None:
    if meta.shape is not None and tuple(array_shape) != tuple(meta.shape):
        src = f" of {meta.source_path}" if meta.source_path else ""
        raise VolumeIOError(
            f"the {what} has shape {tuple(array_shape)} but the image{src} has spatial shape "
            f"{tuple(meta.shape)}; a mask must cover the image voxel for voxel "
            "(was it made from another image, cropped or resampled?)."
        )


def _write(path: str | Path, data: np.ndarray, meta: VolumeMeta, channels: bool, overwrite):
    """Write data in the format given by path's suffix, atomically."""
    path = Path(path)
    suffix = _suffix(path)

    def write(tmp: Path) -> None:
        if suffix in NIFTI_SUFFIXES:
            from .nifti import write_nifti

            write_nifti(tmp, data, meta)
        elif suffix in SITK_SUFFIXES:
            from .sitk import write_sitk

            write_sitk(tmp, data, meta, channels)
        else:
            from .tiff import write_tiff

            out = data
            if out.dtype in (np.int8, np.int16):
                out = out.astype(np.int32)
            write_tiff(tmp, out, meta, channels=channels)

    return atomic_write(path, write, overwrite=overwrite)


def check_labels_target(path: str | Path, meta: VolumeMeta) -> None:
    """Refuse, before any work, a labels path that cannot be written for this image: a
    DICOM SEG (.dcm) for an image not read from DICOM, or without highdicom installed."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        from .dicom_seg import check_seg_target

        check_seg_target(meta)
    else:
        _suffix(Path(path))


def write_labels(
    labels: np.ndarray,
    meta: VolumeMeta,
    path: str | Path,
    overwrite: bool = True,
    class_names=None,
) -> Path:
    """Write integer labels (Z, Y, X) or (Y, X) with the source geometry.

    NIfTI (.nii, .nii.gz, gzip for the latter): the file has the source affine, header and
    shape, and voxel (i, j, k) holds labels[k, j, i]. NRRD/MetaImage: the source's ITK
    origin, spacing and direction (or those of meta.affine), compressed. Data without a
    source file gets a diagonal affine from meta.spacing. TIFF (.tif, .tiff): ImageJ-style
    with the spacing. DICOM (.dcm): a DICOM SEG referencing the series the image was read
    from (meta.source_format "dicom"), value k named ``class_names[k - 1]`` (see
    :func:`write_dicom_seg`). The smallest integer dtype that holds the values is used. The
    write is atomic (see :func:`atomic_write`). Returns the path written.
    """
    labels = np.asarray(labels)
    if str(path).lower().endswith(DICOM_SUFFIXES):
        _check_spatial(labels.shape, meta, "mask")
        return write_dicom_seg(labels, None, path, class_names, meta=meta, overwrite=overwrite)
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
    data = labels.astype(smallest_int_dtype(labels), copy=False)
    return _write(path, data, meta, False, overwrite)


def write_image(
    array: np.ndarray, meta: VolumeMeta, path: str | Path, overwrite: bool = True
) -> Path:
    """Write float data (probabilities, boundary maps) with the source geometry.

    array: (*spatial) or (K, *spatial) with spatial (Z, Y, X) or (Y, X), stored as float32.
    NIfTI: a (K, Z, Y, X) array becomes a 4D file (i, j, k, K), channels last, with the
    source affine and header. NRRD/MetaImage: K vector components. TIFF: ImageJ
    hyperstack (Z, C, Y, X). Atomic like write_labels. Returns the path written.
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
    if np.iscomplexobj(array):
        raise VolumeIOError(
            f"cannot write complex data to {path}: write its magnitude (np.abs) or the "
            "real and imaginary parts as separate images"
        )
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        finite = np.abs(array[np.isfinite(array)])
        if finite.size and finite.max() > np.finfo(np.float32).max:
            raise VolumeIOError(
                f"cannot write {path}: values up to {finite.max():.3g} exceed the float32 "
                "range (3.4e38) of the file; rescale the data first"
            )
    data = array.astype(np.float32, copy=False)
    return _write(path, data, meta, channels, overwrite)


from .channels import read_channels  # noqa: E402  (uses read_volume and file_stem above)
