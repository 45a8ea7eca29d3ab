"""napari reader: NIfTI (.nii, .nii.gz), TIFF (.tif, .tiff), NRRD (.nrrd, .nhdr), MetaImage
(.mha, .mhd) volumes and DICOM series (a folder, or a .dcm file) with their geometry.

A folder (or the folder of a .dcm file) holding several DICOM series opens as one layer per
series, named by its SeriesDescription; a series that cannot be read as one volume is
skipped with a warning naming it and the reason (the others still open). A folder without
DICOM files is declined (``get_reader`` returns None).

Each image channel becomes one image layer (named "<stem> [<channel>]" when the file has
several). Scans with an anatomical geometry (NIfTI, NRRD, MetaImage, DICOM) are shown as
radiologists expect: millimetres, named axes, anterior up and patient right on the left of
an axial slice (:mod:`napari_unetseg.core.orientation`; the array keeps the file's voxel
order); other
files get ``scale`` = voxel spacing in (z, y, x) order. Integer single-channel volumes
that look like masks (a file name containing mask/label/seg/annot/truth, or only a few
distinct non-negative values) open as labels layers. Every layer's ``metadata`` holds the
``VolumeMeta`` under ``"unetseg_meta"`` and the file path under ``"unetseg_source"``, so
masks painted or predicted on it are saved in the source geometry.

The reader follows napari's convention: ``get_reader`` returns None for files it does not
handle and never raises; a file that turns out to be unreadable (corrupt, truncated,
unsupported layout) raises ``VolumeIOError`` from the returned function, with a message
that napari shows to the user. Colour (RGB24 / RGBA32) NIfTI files open as one image layer
per colour ("<stem> [R]", "[G]", "[B]").
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..core.io import (
    DICOM_SUFFIXES,
    SUPPORTED_SUFFIXES,
    VolumeIOError,
    VolumeMeta,
    file_stem,
    read_volume,
)
from ..core.orientation import display_frame

META_KEY = "unetseg_meta"
SOURCE_KEY = "unetseg_source"
CHANNEL_KEY = "unetseg_channel"

_MASK_NAME = re.compile(r"(mask|label|seg|annot|truth|gt\b|_gt)", re.IGNORECASE)
_MAX_MASK_VALUES = 64


#: Files this plugin is the natural reader of. napari's builtin reader claims them too
#: (through imageio) without their geometry, and napari 0.9 / npe2 have no reader
#: priority: with two readers napari asks the user each time unless a preference is set.
PREFERRED_PATTERNS = ("*.nii", "*.nii.gz")
PLUGIN_NAME = "napari-unetseg"


def prefer_this_reader() -> list[str]:
    """Record this plugin as napari's reader for NIfTI files (napari's public settings,
    the same preference as ticking "remember" in napari's reader dialog), unless the
    user already chose a reader for them. Returns the patterns set."""
    try:
        from napari.settings import get_settings
    except ImportError:  # pragma: no cover - napari is not installed
        return []
    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    added = [p for p in PREFERRED_PATTERNS if p not in current]
    if added:
        plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN_NAME)}
    return added


def _handled(path) -> bool:
    if not isinstance(path, (str, Path)):
        return False
    if Path(path).is_dir():
        from ..core.io.dicom import has_dicom_files

        return has_dicom_files(path)
    name = str(path).lower()
    return name.endswith(SUPPORTED_SUFFIXES + DICOM_SUFFIXES)


def get_reader(path):
    """Return a reader function for a path or a list of paths this plugin reads (volume
    files, .dcm files, folders holding DICOM files), else None."""
    try:
        paths = path if isinstance(path, (list, tuple)) else [path]
        if not paths or not all(_handled(p) for p in paths):
            return None
    except Exception:
        return None
    return read_layers


def looks_like_mask(array: np.ndarray, name: str = "") -> bool:
    """True for integer (C=1) volumes that are likely label maps.

    array: (Z, Y, X) or (Y, X). A name containing mask/label/seg/annot/truth decides for
    integer data; otherwise the volume must hold few distinct non-negative values
    (checked on a strided subsample first, so large scans are cheap to rule out).
    """
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        return False
    if array.size == 0:
        return False
    if _MASK_NAME.search(name):
        return True
    step = max(1, round((array.size / 2_000_000) ** (1 / max(array.ndim, 1))))
    sample = array[tuple(slice(None, None, step) for _ in range(array.ndim))]
    if sample.min() < 0 or np.unique(sample).size > _MAX_MASK_VALUES:
        return False
    return array.min() >= 0 and np.unique(array).size <= _MAX_MASK_VALUES


def display_kwargs(meta: VolumeMeta) -> dict:
    """Layer transform of a volume: anatomical (signed mm scale, LPI world, named axes;
    see :mod:`napari_unetseg.core.orientation`) for scans with a RAS geometry, else the
    voxel spacing as scale."""
    frame = display_frame(meta)
    if frame is not None:
        return frame.layer_kwargs()
    return {"scale": tuple(float(s) for s in meta.spacing)}


def split_rgb(image: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Colour voxels (NIfTI RGB24 / RGBA32: a structured dtype with fields R, G, B(, A))
    become one channel per colour. image: (C, *spatial) with C = 1; returns
    ((3 or 4, *spatial), channel names). Other arrays are returned unchanged."""
    fields = image.dtype.names
    if not fields:
        return image, names
    if image.shape[0] != 1:
        raise VolumeIOError("a colour (RGB) file with several channels is not supported")
    channels = np.stack([np.asarray(image[0][f]) for f in fields])
    return channels, [str(f) for f in fields]


def _dicom_layers(path: Path) -> list[tuple]:
    """Layers of a DICOM folder / file: one series, or one layer per series of a folder."""
    import warnings

    from ..core.io import list_dicom_series, read_dicom

    series = list_dicom_series(path) if path.is_dir() else []
    if len(series) <= 1:
        return _layers_for(path, read_dicom(path), path.name)
    layers: list[tuple] = []
    errors = []
    for item in series:
        label = item["description"] or item["series_uid"]
        try:
            loaded = read_dicom(path, series_uid=item["series_uid"])
        except VolumeIOError as exc:
            errors.append(exc)
            warnings.warn(f"series '{label}' of {path} not opened: {exc}", stacklevel=2)
            continue
        layers.extend(_layers_for(path, loaded, f"{path.name} [{label}]"))
    if not layers:
        raise errors[0]
    return layers


def _layers_for(path: Path, loaded=None, stem: str | None = None) -> list[tuple]:
    if loaded is None and (path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES)):
        return _dicom_layers(path)
    image, meta = loaded if loaded is not None else read_volume(path)
    for note in meta.extra.get("notes", []):
        from napari.utils.notifications import show_info

        show_info(note)
    image, rgb_names = split_rgb(image, list(meta.channel_names or []))
    if rgb_names != list(meta.channel_names or []):
        meta = dataclasses.replace(meta, channel_names=rgb_names)
    stem = stem or file_stem(path)
    geometry = display_kwargs(meta)
    base_meta = {META_KEY: meta, SOURCE_KEY: str(path)}
    if image.shape[0] == 1 and looks_like_mask(image[0], path.name):
        labels = image[0]
        if labels.dtype == np.bool_ or (labels.dtype.itemsize < 4 and labels.dtype.kind == "u"):
            labels = labels.astype(np.int32)
        return [(labels, {"name": stem, **geometry, "metadata": dict(base_meta)}, "labels")]
    layers = []
    n = image.shape[0]
    names = meta.channel_names or [f"channel {c}" for c in range(n)]
    for c in range(n):
        name = stem if n == 1 else f"{stem} [{names[c]}]"
        kwargs = {
            "name": name,
            **geometry,
            "metadata": {**base_meta, CHANNEL_KEY: c},
            "colormap": "gray",
            "visible": c == 0,
        }
        if n > 1:
            kwargs["blending"] = "additive" if c else "translucent"
        layers.append((image[c], kwargs, "image"))
    return layers


def read_layers(path) -> list[tuple]:
    """Read one path or a list of paths into napari layer data tuples.

    Raises VolumeIOError (with a message saying what to do) for unreadable files.
    """
    paths = path if isinstance(path, (list, tuple)) else [path]
    layers: list[tuple] = []
    for p in paths:
        layers.extend(_layers_for(Path(p)))
    return layers


def layer_meta(metadata) -> VolumeMeta | None:
    """The VolumeMeta stored in a layer's metadata dict, or None."""
    if not isinstance(metadata, dict):
        return None
    meta = metadata.get(META_KEY)
    if isinstance(meta, VolumeMeta):
        return meta
    if isinstance(meta, dict) and "spacing" in meta:
        try:
            return VolumeMeta(**meta)
        except TypeError:
            return None
    return None
