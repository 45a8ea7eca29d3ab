"""Zarr and OME-Zarr (NGFF) volumes: read lazily, write labels atomically.

Reading never loads a whole volume. :func:`open_zarr_volume` gives a
:class:`ZarrVolume`, an array-like ``(C, *spatial)`` view of level 0 that reads only the
region asked for; :func:`read_zarr` wraps it in a lazy ``dask.array.Array`` (what
:func:`napari_unetseg.core.io.read_volume` returns for a ``.zarr`` path).

* OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3): the first multiscale image, level 0
  (the first dataset). Its axes (``t``, ``c``, then 2 or 3 space axes) become
  ``(C, Z, Y, X)`` / ``(C, Y, X)``; a single time point is dropped. ``scale`` and
  ``translation`` of the level and of the multiscale are combined into the spacing and
  ``VolumeMeta.affine`` (diagonal: NGFF stores no orientation, x -> i, y -> j, z -> k),
  in the file's units (``meta.extra["units"]``).
* A plain zarr array (or a group holding exactly one array): ``(Y, X)``, ``(Z, Y, X)``
  or ``(C, Z, Y, X)``, spacing 1, with a note in ``meta.extra["notes"]``.

Zarr reads a chunk missing from the store as its fill value, silently. A missing chunk
is refused here (an incomplete copy would be predicted as empty space) unless
``allow_missing_chunks`` says that missing chunks mean "empty".

Labels are written as OME-Zarr 0.4 (zarr v2, Blosc/zstd, ``/`` chunk keys, ``image-label``
metadata) with the source's scale and translation, into a hidden folder beside the target
that is renamed into place once complete (:func:`zarr_output`; writing is in
:mod:`.zarr_write`, re-exported here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from .atomic import describe_os_error
from .meta import VolumeIOError, VolumeMeta, as_float_image
from .zarr_write import (  # noqa: F401  (writing lives there; importable from here too)
    DEFAULT_CHUNK,
    create_labels_zarr,
    write_labels_zarr,
    zarr_output,
)

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
_MARKERS = (".zgroup", ".zarray", "zarr.json")


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store: a ``.zarr`` name or a folder with zarr metadata."""
    p = Path(path)
    if p.name.lower().endswith(ZARR_SUFFIXES):
        return True
    return p.is_dir() and any((p / m).is_file() for m in _MARKERS)


# --------------------------------------------------------------------------- reading


class ZarrVolume:
    """Level 0 of a zarr store as a read-only ``(C, *spatial)`` array-like.

    ``volume[c, z0:z1, y0:y1, x0:x1]`` (slices or integers) reads only that region and
    returns a numpy array (floats as float32, booleans as uint8). Picklable: it keeps the
    path and reopens the store where it is unpickled (e.g. on a dask worker).
    """

    def __init__(self, path: str | os.PathLike, *, allow_missing_chunks: bool = False):
        self.path = str(path)
        self.allow_missing_chunks = allow_missing_chunks
        self._array, self.meta, self._axes = _open(Path(path), allow_missing_chunks)
        spatial = tuple(int(self._array.shape[i]) for i in self._axes["space"])
        c = self._axes["c"]
        channels = int(self._array.shape[c]) if c is not None else 1
        self.shape = (channels, *spatial)
        self.dtype = as_float_image(np.zeros(0, self._array.dtype)).dtype
        self.ndim = len(self.shape)
        chunks = self._array.chunks
        self.chunks = (channels, *(int(chunks[i]) for i in self._axes["space"]))

    def __reduce__(self):
        return (_reopen, (self.path, self.allow_missing_chunks))

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _normalise_key(key, self.ndim)
        squeeze = tuple(i for i, k in enumerate(key) if isinstance(k, int))
        sl = [slice(k, k + 1) if isinstance(k, int) else k for k in key]
        under: list[Any] = [slice(None)] * self._array.ndim
        if self._axes["t"] is not None:
            under[self._axes["t"]] = 0
        c = self._axes["c"]
        if c is not None:
            under[c] = sl[0]
        for axis, s in zip(self._axes["space"], sl[1:]):
            under[axis] = s
        data = np.asarray(self._array[tuple(under)])
        if c is None:  # NGFF and plain arrays put the channel axis before space
            data = data[None][sl[0]]
        data = as_float_image(data)
        return data.squeeze(axis=squeeze) if squeeze else data


def _reopen(path: str, allow_missing_chunks: bool) -> ZarrVolume:
    return ZarrVolume(path, allow_missing_chunks=allow_missing_chunks)


def _normalise_key(key: Any, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    if len(key) != ndim or not all(isinstance(k, (slice, int, np.integer)) for k in key):
        raise IndexError(f"a zarr volume takes {ndim} slices or integers, not {key!r}")
    return tuple(int(k) if isinstance(k, (int, np.integer)) else k for k in key)


def open_zarr_volume(path: str | os.PathLike, *, allow_missing_chunks: bool = False) -> ZarrVolume:
    """Open level 0 of a zarr / OME-Zarr store lazily (see :class:`ZarrVolume`).

    Raises VolumeIOError (one line) for a missing or unreadable store, axes that cannot
    be read as ``(C, *spatial)``, a time series, or missing chunks (unless allowed).
    """
    return ZarrVolume(path, allow_missing_chunks=allow_missing_chunks)


def _need(module: str) -> Any:
    """Import ``module`` or say in one line which extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise VolumeIOError(
            f"zarr volumes need {module.split('.')[0]}: pip install 'napari-unetseg[scale]'"
        ) from exc


def read_zarr(path: str | os.PathLike, *, allow_missing_chunks: bool = False):
    """Read a zarr / OME-Zarr store as ``(dask array (C, *spatial), VolumeMeta)``, lazily:
    each dask chunk is one chunk of the store, read when computed."""
    import dask.array as da

    volume = open_zarr_volume(path, allow_missing_chunks=allow_missing_chunks)
    array = da.from_array(volume, chunks=volume.chunks, asarray=False, fancy=False)
    return array, volume.meta


def _open(path: Path, allow_missing: bool) -> tuple[Any, VolumeMeta, dict[str, Any]]:
    zarr = _need("zarr")

    if not path.exists():
        raise VolumeIOError(f"{path}: zarr store not found; check the path.")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise VolumeIOError(
            f"{path}: not a readable zarr store ({describe_os_error(exc)})"
        ) from exc
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if isinstance(node, zarr.Array):
        array, ngff = node, None
    else:
        ngff = _multiscale(dict(node.attrs))
        if ngff is not None:
            datasets = ngff.get("datasets") or []
            if not datasets or "path" not in datasets[0]:
                raise VolumeIOError(f"{path}: OME-Zarr multiscales lists no dataset path")
            level = str(datasets[0]["path"])
            try:
                array = node[level]
            except KeyError:
                raise VolumeIOError(
                    f"{path}: the OME-Zarr level '{level}' is missing from the store"
                ) from None
        else:
            names = sorted(node.array_keys())
            if len(names) != 1:
                raise VolumeIOError(
                    f"{path}: a zarr group without OME-Zarr metadata holding {len(names)} "
                    f"arrays ({', '.join(names[:5]) or 'none'}); give the path of one array"
                )
            array = node[names[0]]
    if ngff is None:
        notes.append(
            f"{path.name} has no OME-Zarr (NGFF) metadata: read as a plain zarr array, spacing 1"
        )
        axes = _plain_axes(array.shape, path)
        spacing = (1.0,) * len(axes["space"])
        origin = (0.0,) * len(spacing)
        source_format = "zarr"
    else:
        axes, spacing, origin, units = _ngff_geometry(ngff, array.ndim, path)
        extra.update(ngff_version=ngff.get("version"), units=units, origin=origin)
        source_format = "ome-zarr"
        if axes["t"] is not None and array.shape[axes["t"]] != 1:
            raise VolumeIOError(
                f"{path} is a time series of {array.shape[axes['t']]} time points; "
                "save one time point per store"
            )
    if not allow_missing:
        check_chunks(array, path)
    extra["notes"] = notes
    meta = VolumeMeta(
        spacing=tuple(float(s) for s in spacing),
        affine=_affine(spacing, origin),
        source_format=source_format,
        source_path=str(path),
        channel_names=_channel_names(node, array, axes),
        extra=extra,
        shape=tuple(int(array.shape[i]) for i in axes["space"]),
    )
    return array, meta, axes


def _multiscale(attrs: dict[str, Any]) -> dict[str, Any] | None:
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else None
    scales = (ome or attrs).get("multiscales")
    if not scales or not isinstance(scales, list) or not isinstance(scales[0], dict):
        return None
    out = dict(scales[0])
    out.setdefault("version", (ome or {}).get("version"))
    return out


def _plain_axes(shape: tuple[int, ...], path: Path) -> dict[str, Any]:
    n = len(shape)
    if n == 2 or n == 3:
        return {"t": None, "c": None, "space": list(range(n))}
    if n == 4:
        return {"t": None, "c": 0, "space": [1, 2, 3]}
    raise VolumeIOError(
        f"{path}: a zarr array of shape {tuple(shape)}; expected (Y, X), (Z, Y, X) or (C, Z, Y, X)"
    )


def _ngff_geometry(ms: dict[str, Any], ndim: int, path: Path):
    """Axes roles, spacing and origin (space axes, array order) and units of level 0."""
    raw: list[Any] = ms.get("axes") or ["t", "c", "z", "y", "x"][-ndim:]
    names = [a if isinstance(a, str) else str(a.get("name", "")) for a in raw]
    kinds = [
        (a.get("type") if isinstance(a, dict) else None)
        or {"t": "time", "c": "channel"}.get(n.lower(), "space")
        for a, n in zip(raw, names)
    ]
    if len(names) != ndim:
        raise VolumeIOError(
            f"{path}: the OME-Zarr metadata names {len(names)} axes but level 0 has {ndim}"
        )
    space = [i for i, k in enumerate(kinds) if k == "space"]
    t = [i for i, k in enumerate(kinds) if k == "time"]
    c = [i for i, k in enumerate(kinds) if k == "channel"]
    if len(space) not in (2, 3) or len(t) > 1 or len(c) > 1 or len(space) + len(t) + len(c) < ndim:
        raise VolumeIOError(
            f"{path}: OME-Zarr axes {names} cannot be read as (C, Z, Y, X) or (C, Y, X)"
        )
    scale, shift = np.ones(ndim), np.zeros(ndim)
    for transforms in (
        ms["datasets"][0].get("coordinateTransformations"),
        ms.get("coordinateTransformations"),
    ):  # level first, then the image
        for tr in transforms or []:
            if tr.get("type") == "scale" and "scale" in tr:
                s = np.asarray(tr["scale"], dtype=float)
                scale, shift = scale * s, shift * s
            elif tr.get("type") == "translation" and "translation" in tr:
                shift = shift + np.asarray(tr["translation"], dtype=float)
    spacing = tuple(float(scale[i]) for i in space)
    if any(not math.isfinite(s) or s <= 0 for s in spacing):
        raise VolumeIOError(f"{path}: OME-Zarr scale {spacing} must be positive")
    units = [raw[i].get("unit") if isinstance(raw[i], dict) else None for i in space]
    axes = {"t": t[0] if t else None, "c": c[0] if c else None, "space": space}
    return axes, spacing, tuple(float(shift[i]) for i in space), units


def _affine(spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """Diagonal 4x4 voxel-to-world matrix for (i, j, k) = (x, y, z)."""
    affine = np.eye(4)
    for axis, (s, o) in enumerate(zip(reversed(spacing), reversed(origin))):
        affine[axis, axis] = s
        affine[axis, 3] = o
    return affine


def _channel_names(node: Any, array: Any, axes: dict[str, Any]) -> list[str]:
    c = axes["c"]
    n = int(array.shape[c]) if c is not None else 1
    omero = dict(getattr(node, "attrs", {}) or {}).get("omero") or {}
    labels = [ch.get("label") for ch in omero.get("channels", []) if isinstance(ch, dict)]
    if len(labels) == n and all(isinstance(x, str) for x in labels):
        return list(cast(list[str], labels))
    return [f"channel {i}" for i in range(n)] if n > 1 else []


def check_chunks(array: Any, path: str | os.PathLike) -> None:
    """Refuse an array with chunks missing from its store (read as fill values otherwise).

    Raises VolumeIOError naming the first missing chunk key, the array and how many are
    missing.
    """
    expected = list(_chunk_keys(array))
    if not expected:
        return
    stored = _stored_keys(array)
    missing = [k for k in expected if k not in stored]
    if missing:
        where = array.store_path.path or Path(path).name
        raise VolumeIOError(
            f"{path}: chunk '{missing[0]}' of array '{where}' is missing ({len(missing)} of "
            f"{len(expected)} chunks); zarr would read it as the fill value "
            f"{array.fill_value!r}: copy the store again, or allow missing chunks "
            "(allow_missing_chunks=True, --allow-missing-chunks) if they mean empty space"
        )


def _chunk_keys(array: Any) -> Iterator[str]:
    block = array.shards or array.chunks
    grid = [math.ceil(s / c) for s, c in zip(array.shape, block)]
    if any(g == 0 for g in grid):
        return
    for coords in np.ndindex(*grid):
        yield array.metadata.encode_chunk_key(tuple(int(c) for c in coords))


def _stored_keys(array: Any) -> set[str]:
    from zarr.core.sync import sync

    store, prefix = array.store_path.store, array.store_path.path
    prefix = prefix + "/" if prefix else ""

    async def collect() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    return {key[len(prefix) :] for key in sync(collect())}
