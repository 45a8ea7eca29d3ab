"""Zarr output: OME-Zarr 0.4 label images, written atomically.

Labels ``(Z, Y, X)`` / ``(Y, X)`` are written as OME-Zarr 0.4 (zarr v2, Blosc/zstd, ``/``
chunk keys, ``image-label`` metadata) with the source's scale and translation, into a
hidden folder beside the target that is renamed into place once complete
(:func:`zarr_output`). Reading is in :mod:`.zarr`, which re-exports these functions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import OutputExistsError, WriteError, describe_os_error
from .meta import VolumeIOError, VolumeMeta

#: Chunk edge of written labels when no chunk shape is given (uint8: 2 MiB per 3D chunk).
DEFAULT_CHUNK = 128


@contextmanager
def zarr_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a path in a hidden folder beside ``path`` to write a zarr store to; when the
    block ends without error the store is moved to ``path`` (replacing an existing one
    only with ``overwrite``); on any error the partial store is removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another name or allow overwriting "
            "(overwrite=True, --overwrite on the command line)."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {describe_os_error(exc)}") from exc
    try:
        yield tmp_dir / path.name
        old = None
        if path.exists():
            old = tmp_dir / ".replaced"
            os.replace(path, old)
        os.replace(tmp_dir / path.name, path)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {describe_os_error(exc)}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def create_labels_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    meta: VolumeMeta | None = None,
    *,
    dtype: Any = np.uint8,
    chunks: Sequence[int] | None = None,
    name: str = "labels",
):
    """Create an empty OME-Zarr 0.4 label image at ``path`` and return its level-0
    ``zarr.Array`` ``(*spatial)`` (``(Z, Y, X)`` or ``(Y, X)``), filled with 0.

    ``meta`` gives the scale (``meta.spacing``), translation (``meta.extra["origin"]``)
    and units; ``chunks`` defaults to 128 voxels per axis. Every chunk is stored, even an
    empty one, so the store reads back without missing chunks.
    """
    import zarr
    from numcodecs import Blosc

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise VolumeIOError(f"labels must be (Z, Y, X) or (Y, X), got shape {shape}")
    spacing = tuple(meta.spacing) if meta is not None else (1.0,) * len(shape)
    if len(spacing) != len(shape):
        raise VolumeIOError(f"labels of shape {shape} do not fit the spacing {spacing}")
    origin = tuple((meta.extra.get("origin") if meta is not None else None) or (0.0,) * len(shape))
    units = (meta.extra.get("units") if meta is not None else None) or [None] * len(shape)
    chunks = tuple(int(c) for c in chunks) if chunks else (DEFAULT_CHUNK,) * len(shape)
    chunks = tuple(max(1, min(c, s)) for c, s in zip(chunks, shape))
    axes = []
    for axis_name, unit in zip("zyx"[-len(shape) :], units):
        axes.append({"name": axis_name, "type": "space", **({"unit": unit} if unit else {})})
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array(
        "0",
        shape=shape,
        chunks=chunks,
        dtype=np.dtype(dtype),
        compressors=Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE),
        chunk_key_encoding={"name": "v2", "separator": "/"},
        fill_value=0,
        config={"write_empty_chunks": True},  # type: ignore[arg-type]  # zarr ArrayConfigLike union
    )
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in spacing]}]
    if any(o != 0 for o in origin):
        transforms.append({"type": "translation", "translation": [float(o) for o in origin]})
    group.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "name": name,
                    "axes": axes,
                    "datasets": [{"path": "0", "coordinateTransformations": transforms}],
                }
            ],
            "image-label": {"version": "0.4"},
        }
    )
    return array


def write_labels_zarr(
    labels: Any,
    meta: VolumeMeta | None,
    path: str | os.PathLike,
    *,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write integer labels ``(Z, Y, X)`` / ``(Y, X)`` (numpy, zarr or dask) to an
    OME-Zarr label image, one chunk row at a time, atomically. Returns ``path``."""
    shape = tuple(int(s) for s in labels.shape)
    dtype = np.dtype(labels.dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    if not np.issubdtype(dtype, np.integer):
        raise VolumeIOError(f"labels of dtype {dtype} cannot be written as a mask")
    with zarr_output(path, overwrite=overwrite) as tmp:
        out = create_labels_zarr(tmp, shape, meta, dtype=dtype, chunks=chunks)
        step = int(out.chunks[0])
        for z in range(0, shape[0], step):
            out[z : z + step] = np.asarray(labels[z : z + step]).astype(dtype, copy=False)
    return Path(path)
