"""TIFF (.tif, .tiff) via tifffile: ImageJ hyperstacks, OME-TIFF and plain TIFF.

Axes named C or S become channels, one further non-singleton axis (Z, T, Q, ...) is the
depth. Spacing comes from ImageJ metadata, the resolution tags or OME PhysicalSize; TIFF has
no world position, so ``VolumeMeta.affine`` is None. Written files are ImageJ-style for
uint8/uint16/float32 data, plain TIFF otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .meta import VolumeIOError, VolumeMeta, as_float_image


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


def read_tiff(path: Path) -> tuple[np.ndarray, VolumeMeta]:
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
    return np.ascontiguousarray(as_float_image(image)), meta


def write_tiff(path: Path, array: np.ndarray, meta: VolumeMeta, channels: bool) -> None:
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
