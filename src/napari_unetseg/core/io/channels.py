"""Several image files read as the channels of one image (e.g. T1 and T2 of one scan)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .meta import VolumeIOError, VolumeMeta, voxel_sizes

_GENERIC_NAME = re.compile(r"channel \d+")


def _channel_names(path: Path, meta: VolumeMeta, n_channels: int, single_file: bool):
    """Names for a file's channels: its own meaningful names, else its file stem."""
    from . import file_stem

    stem = file_stem(Path(path))
    names = list(meta.channel_names)
    meaningful = len(names) == n_channels and not all(_GENERIC_NAME.fullmatch(n) for n in names)
    if meaningful:
        return names if single_file else [f"{stem} {n}" for n in names]
    if n_channels == 1:
        return [stem]
    return [f"{stem} {c}" for c in range(n_channels)]


def _same_geometry(a: np.ndarray, b: np.ndarray) -> bool:
    """Affines equal up to a thousandth of a voxel (and float32 rounding of the origin)."""
    voxel = float(min(voxel_sizes(a).min(), voxel_sizes(b).min()))
    tol = 1e-3 * voxel if voxel > 0 else 1e-6
    origin_tol = tol + 1e-6 * float(np.abs(a[:3, 3]).max())
    return bool(
        np.allclose(a[:3, :3], b[:3, :3], rtol=0, atol=tol)
        and np.allclose(a[:3, 3], b[:3, 3], rtol=0, atol=origin_tol)
    )


def _describe(path, affine: np.ndarray, with_axes: bool) -> str:
    fmt = ", ".join
    origin = fmt(f"{v:.4g}" for v in affine[:3, 3])
    sizes = fmt(f"{v:.4g}" for v in voxel_sizes(affine))
    text = f"{Path(path).name} origin ({origin}) voxel size ({sizes})"
    if with_axes:
        axes = np.round(affine[:3, :3] / np.maximum(voxel_sizes(affine), 1e-12), 3) + 0.0
        text += " axes " + fmt("(" + fmt(f"{v + 0.0:.3f}" for v in col) + ")" for col in axes.T)
    return text


def read_channels(paths: Sequence[str | Path]) -> tuple[np.ndarray, VolumeMeta]:
    """Read one or more image files and concatenate their channels.

    Returns (image, meta): image (C, Z, Y, X) or (C, Y, X) with the channels of the files
    in order; meta is the first file's, with ``channel_names`` filled: a file's own names
    when it has meaningful ones (e.g. red/green/blue), else its file stem (``t1``, or
    ``t1 0``, ``t1 1`` for a multi-channel file). Raises VolumeIOError when the files
    differ in spatial shape, or when their voxel-to-world affines (where both files have
    one) differ by more than a thousandth of a voxel.
    """
    from . import read_volume

    files = [Path(p) for p in paths]
    if not files:
        raise VolumeIOError("no image files given; give one file per channel group.")
    arrays, metas = [], []
    for p in files:
        arr, meta = read_volume(p)
        arrays.append(arr)
        metas.append(meta)
    if len({a.shape[1:] for a in arrays}) > 1:
        listing = ", ".join(f"{p.name} {a.shape[1:]}" for p, a in zip(files, arrays))
        raise VolumeIOError(
            f"the images given as channels differ in spatial shape: {listing}; resample or "
            "crop them onto one grid first."
        )
    first = next(((p, m) for p, m in zip(files, metas) if m.affine is not None), None)
    if first is not None:
        p0, m0 = first
        a0 = np.asarray(m0.affine, dtype=np.float64)
        for p, m in zip(files, metas):
            if m.affine is None:
                continue
            a = np.asarray(m.affine, dtype=np.float64)
            if not _same_geometry(a0, a):
                axes = not np.allclose(
                    a0[:3, :3] / voxel_sizes(a0), a[:3, :3] / voxel_sizes(a), atol=1e-4
                )
                raise VolumeIOError(
                    "the images given as channels have different geometry: "
                    f"{_describe(p0, a0, axes)}, {_describe(p, a, axes)}; resample them "
                    "onto one grid first."
                )
    names: list[str] = []
    for p, a, m in zip(files, arrays, metas):
        names += _channel_names(p, m, a.shape[0], single_file=len(files) == 1)
    if len(set(names)) < len(names):  # e.g. two files with the same stem
        names = [f"{n} ({i})" for i, n in enumerate(names)]
    image = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    meta = metas[0]
    meta.channel_names = names
    return image, meta
