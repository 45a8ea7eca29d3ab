"""DICOM series (one 3D volume from a folder of slices) via pydicom.

``read_dicom(path, series_uid=None, series=None)`` accepts a folder or any file of the series;
a folder holding several series needs ``series`` (a SeriesDescription or a
SeriesInstanceUID; :func:`list_dicom_series` lists them). Slices
are ordered by their position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient row and column directions), never by
file name or instance number. RescaleSlope/RescaleIntercept are applied (CT in Hounsfield
units, float32). The result follows the convention of the other readers: image
(1, Z, Y, X) with x = column, y = row, z = slice, and ``VolumeMeta.affine`` the RAS
voxel-to-world matrix for (i, j, k) = (x, y, z), as SimpleITK's series reader and nibabel
would give. Series with uneven slice spacing, repeated positions or a gantry tilt are
refused: they do not form one regular grid.

pydicom is optional; it is imported only when DICOM is read.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .meta import VolumeIOError, VolumeMeta

if TYPE_CHECKING:
    from pydicom import Dataset

DICOM_SUFFIXES = (".dcm",)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise VolumeIOError(
            "reading DICOM needs pydicom: pip install 'napari-unetseg[formats]'"
        ) from exc
    return pydicom


def _headers(files: list[Path]) -> list[tuple[Path, Dataset]]:
    """(file, dataset without pixels) for every readable DICOM image file."""
    pydicom = _pydicom()
    out = []
    for f in files:
        if not f.is_file() or f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:
            continue  # not a DICOM file (README, thumbnails, ...)
        if "SeriesInstanceUID" in ds and "ImagePositionPatient" in ds:
            out.append((f, ds))
    return out


def _pick_series(path: Path, headers, series_uid: str | None, series: str | None = None):
    groups: dict[str, list] = defaultdict(list)
    for f, ds in headers:
        groups[str(ds.SeriesInstanceUID)].append((f, ds))
    if series_uid is None and series is not None:
        if series in groups:
            series_uid = series
        else:
            found = [uid for uid, items in groups.items() if _description(items) == series]
            if len(found) > 1:
                raise VolumeIOError(
                    f"{path} holds {len(found)} DICOM series described '{series}'; pick one "
                    f"by its SeriesInstanceUID: {_listing({u: groups[u] for u in found})}."
                )
            series_uid = found[0] if found else series
    if series_uid is not None:
        if series_uid not in groups:
            raise VolumeIOError(
                f"{path} holds no DICOM series {series_uid}; it holds {_listing(groups)}."
            )
        return series_uid, groups[series_uid]
    if len(groups) > 1:
        raise VolumeIOError(
            f"{path} holds {len(groups)} DICOM series: {_listing(groups)}; choose one with "
            "series= (its description or series_uid), or give the path of one file of it."
        )
    uid = next(iter(groups))
    return uid, groups[uid]


def _description(items) -> str:
    return str(items[0][1].get("SeriesDescription", "") or "")


def _listing(groups) -> str:
    parts = []
    for uid, items in groups.items():
        desc = _description(items) or "no description"
        parts.append(f"'{desc}' {uid} ({len(items)} files)")
    return ", ".join(parts)


def _geometry(path: Path, items) -> tuple[list, np.ndarray, float]:
    """Sort the slices along the normal; return (sorted items, LPS affine, step)."""
    iop = np.array([float(v) for v in items[0][1].ImageOrientationPatient])
    for f, ds in items:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise VolumeIOError(
                f"the slices of the DICOM series in {path} have different orientations "
                f"({f.name}); it is not one volume."
            )
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    items, pos, dist = [items[i] for i in order], pos[order], dist[order]
    first = items[0][1]
    dy, dx = (float(v) for v in first.PixelSpacing)  # row spacing (y), column spacing (x)
    if len(items) > 1:
        steps = np.diff(dist)
        if np.min(steps) < 1e-3:
            raise VolumeIOError(
                f"the DICOM series in {path} has several slices at one position; it holds "
                "several acquisitions (echoes, time points); export them as separate series."
            )
        step = float(np.mean(steps))
        if np.max(np.abs(steps - step)) > max(1e-2 * step, 1e-3):
            raise VolumeIOError(
                f"the DICOM series in {path} has uneven slice spacing ({np.min(steps):.4g} "
                f"to {np.max(steps):.4g} mm; missing slices?); napari-unetseg reads regular "
                "grids only: complete or resample the series."
            )
        k_vec = (pos[-1] - pos[0]) / (len(items) - 1)
        tilt = float(np.linalg.norm(k_vec - normal * step))
        if tilt > 1e-3 * max(step, 1.0):
            gantry = first.get("GantryDetectorTilt", None)
            said = f", GantryDetectorTilt {float(gantry):g} degrees" if gantry else ""
            raise VolumeIOError(
                f"the DICOM series in {path} is sheared (gantry tilt{said}): each slice is "
                f"shifted {tilt:.3g} mm sideways; resample it onto a regular grid first."
            )
    else:
        step = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0))
        step = step if step > 0 else 1.0
        k_vec = normal * step
    lps = np.eye(4)
    lps[:3, 0] = row * dx
    lps[:3, 1] = col * dy
    lps[:3, 2] = k_vec
    lps[:3, 3] = pos[0]
    return items, lps, step


def _pixels(f: Path) -> np.ndarray:
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(str(f))
        arr = ds.pixel_array
    except Exception as exc:
        raise VolumeIOError(
            f"cannot decode the pixels of {f} ({exc}); the file is damaged or compressed in "
            "a way pydicom cannot decode (install pylibjpeg or convert the series)."
        ) from exc
    if int(ds.get("SamplesPerPixel", 1)) != 1 or arr.ndim != 2:
        raise VolumeIOError(
            f"{f} holds {arr.shape} pixels (colour or multi-frame); napari-unetseg reads "
            "single-frame greyscale DICOM series."
        )
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0 or not np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return arr


def _series_items(path: Path, series_uid: str | None, series: str | None):
    """(uid, [(file, header)] sorted along the slice normal, LPS affine, step)."""
    if not path.exists():
        raise VolumeIOError(f"{path}: file not found; check the path.")
    folder = path if path.is_dir() else path.parent
    headers = _headers(sorted(folder.iterdir()))
    if not path.is_dir():
        own = next((ds for f, ds in headers if f == path), None)
        if own is None:
            raise VolumeIOError(f"{path} is not a DICOM image file.")
        series_uid = series_uid or str(own.SeriesInstanceUID)
    if not headers:
        raise VolumeIOError(
            f"{path} holds no DICOM image files; give a folder of DICOM slices or an image file."
        )
    uid, items = _pick_series(path, headers, series_uid, series)
    items, lps, step = _geometry(path, items)
    return uid, items, lps, step


def list_dicom_series(path: str | Path) -> list[dict]:
    """The DICOM series in a folder (or the folder of a file), in folder order:
    [{"series_uid", "description", "modality", "files"}]. Empty when it holds none."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise VolumeIOError(f"{path}: folder not found; check the path.")
    groups: dict[str, list] = defaultdict(list)
    for f, ds in _headers(sorted(folder.iterdir())):
        groups[str(ds.SeriesInstanceUID)].append((f, ds))
    return [
        {
            "series_uid": uid,
            "description": _description(items),
            "modality": str(items[0][1].get("Modality", "") or ""),
            "files": len(items),
        }
        for uid, items in groups.items()
    ]


def has_dicom_files(folder: str | Path, limit: int = 64) -> bool:
    """Cheap test whether a folder holds DICOM files: a ``.dcm`` name or the 'DICM' marker
    at byte 128 among its first ``limit`` files. Never raises."""
    try:
        checked = 0
        for f in sorted(Path(folder).iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.name.lower().endswith(DICOM_SUFFIXES):
                return True
            with open(f, "rb") as fh:
                if fh.read(132)[128:] == b"DICM":
                    return True
            checked += 1
            if checked >= limit:
                break
    except OSError:
        return False
    return False


def series_datasets(
    path: str | Path, series_uid: str | None = None, series: str | None = None
) -> list[Dataset]:
    """The headers (no pixel data) of one series, in the slice order of :func:`read_dicom`:
    dataset i belongs to image[:, i]. Arguments as for read_dicom."""
    _, items, _, _ = _series_items(Path(path), series_uid, series)
    return [ds for _, ds in items]


def read_dicom(
    path: str | Path, series_uid: str | None = None, series: str | None = None
) -> tuple[np.ndarray, VolumeMeta]:
    """Read a DICOM series as image (1, Z, Y, X) and its meta (RAS affine, spacing (z, y, x)).

    path: a folder holding the series, or any file of it (then the other files of its
    folder with the same SeriesInstanceUID are read). A folder holding several series
    needs a choice: ``series`` is a SeriesDescription or a SeriesInstanceUID, ``series_uid``
    a SeriesInstanceUID. Rescaled data (CT) are float32; others keep their dtype.
    ``meta.extra`` holds series_uid, series_description, modality and files.
    """
    path = Path(path)
    uid, items, lps, step = _series_items(path, series_uid, series)
    slices = [_pixels(f) for f, _ in items]
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise VolumeIOError(f"the slices of the DICOM series in {path} differ in size {shapes}.")
    if any(s.dtype == np.float32 for s in slices):
        slices = [s.astype(np.float32) for s in slices]
    image = np.stack(slices)[None]  # (1, Z, Y, X): rows are y, columns are x
    first = items[0][1]
    dy, dx = (float(v) for v in first.PixelSpacing)
    meta = VolumeMeta(
        spacing=(step, dy, dx),
        affine=_LPS @ lps,
        source_format="dicom",
        source_path=str(path),
        channel_names=[str(first.get("Modality", "") or "channel 0")],
        extra={
            "series_uid": uid,
            "series_description": str(first.get("SeriesDescription", "")),
            "modality": str(first.get("Modality", "")),
            "files": len(items),
        },
        shape=tuple(int(s) for s in image.shape[1:]),
    )
    return np.ascontiguousarray(image), meta
