"""Writing cases as an nnU-Net v2 raw dataset, grouping image files into cases, regions.

Both are importable from :mod:`napari_unetseg.core.dataset` as well. Images are
(C, Z, Y, X) or (C, Y, X), annotations (Z, Y, X) or (Y, X) in the project's convention
(0 = not annotated, 1 = background, k + 1 = class k).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_unetseg.core import io as vio
from napari_unetseg.core.cases import Case
from napari_unetseg.core.dataset import (
    _CHANNEL_RE,
    LABEL_NAMES_KEY,
    SUPPORTED_SUFFIXES,
    DatasetError,
    LazyCase,
)

__all__ = ["find_cases", "parse_regions", "regions_class_order", "write_nnunet_dataset"]


def regions_class_order(regions: Mapping[str, Sequence[int]]) -> list[int]:
    """nnU-Net's ``regions_class_order``: per region (in order), the one label it holds
    that no later region holds, so painting the regions in order restores the labels.

    {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]} -> [1, 2, 3].
    """
    items = [(n, {int(v) for v in vs}) for n, vs in regions.items()]
    order = []
    for i, (name, labels) in enumerate(items):
        own = labels - set().union(*(v for _, v in items[i + 1 :]))
        if len(own) != 1:
            raise DatasetError(
                f"region {name!r}: cannot derive regions_class_order ({len(own)} of its labels "
                "are in no later region, one is needed); list regions from largest to smallest"
            )
        order.append(own.pop())
    return order


@contextmanager
def _loaded(case: Case):
    """Use a case; a lazily read case that was not loaded before is unloaded after."""
    lazy = case if isinstance(case, LazyCase) and not case.loaded else None
    try:
        yield case
    finally:
        if lazy is not None:
            lazy.unload()


def _case_meta(case: Case, spatial: tuple[int, ...]) -> vio.VolumeMeta:
    meta = case.meta
    if isinstance(meta, vio.VolumeMeta) and meta.ndim == len(spatial):
        return meta
    return vio.meta_from_array(spatial, case.spacing)


def _nnunet_labels(case: Case, n_classes: int, ignore: int) -> np.ndarray:
    """Project annotation -> nnU-Net labels (1 -> 0, k -> k - 1, 0 -> ignore)."""
    ann = np.asarray(case.annotation)
    if tuple(ann.shape) != case.spatial_shape:
        raise DatasetError(
            f"case {case.name}: annotation shape {ann.shape} differs from the image's "
            f"spatial shape {case.spatial_shape}"
        )
    if not (np.issubdtype(ann.dtype, np.integer) or ann.dtype == np.bool_):
        raise DatasetError(f"case {case.name}: the annotation must hold integers, not {ann.dtype}")
    lo, hi = (int(ann.min()), int(ann.max())) if ann.size else (0, 0)
    if lo < 0 or hi > n_classes + 1:
        raise DatasetError(
            f"case {case.name}: annotation values {lo}..{hi} do not fit {n_classes} classes "
            f"(0 = not annotated, 1 = background, 2..{n_classes + 1}); name every class"
        )
    out = ann.astype(np.int32) - 1
    out[ann == 0] = ignore
    return out


def _write_channel(data: np.ndarray, meta: vio.VolumeMeta, path: Path) -> None:
    # Integer images keep their exact values and dtype (write_labels picks the smallest
    # integer type that holds them); float images are stored as float32.
    if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        vio.write_labels(data, meta, path, overwrite=True)
    else:
        vio.write_image(data, meta, path, overwrite=True)


def _check_target(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file; give a folder for the dataset")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise DatasetError(
            f"{root} exists and is not empty; choose a new folder or allow overwriting "
            "(overwrite=True)"
        )


def write_nnunet_dataset(
    root: str | Path,
    cases: Sequence[Case],
    *,
    channel_names: Sequence[str],
    class_names: Sequence[str],
    regions: Mapping[str, Sequence[int]] | None = None,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
    dataset_name: str | None = None,
) -> Path:
    """Write cases as an nnU-Net v2 raw dataset; returns the path of dataset.json.

    Annotated cases go to imagesTr/{case}_{c:04d}{ending} and labelsTr/{case}{ending}
    (nnU-Net labels: project 1 -> 0, k -> k - 1, unannotated 0 -> ignore label
    ``len(class_names) + 1``, declared as "ignore" only when some voxel is unannotated);
    cases without an annotation go to imagesTs. Each file has the case's geometry
    (``case.meta``, or a diagonal one from ``case.spacing``). ``regions`` (name ->
    labels 1..K) makes the dataset region-based, with ``regions_class_order`` derived from
    the region order. Files left from an earlier dataset in the three image/label folders
    are removed when overwriting. dataset.json is written last, atomically.
    """
    root = Path(root)
    ending = str(file_ending)
    if ending.lower() not in SUPPORTED_SUFFIXES:
        raise DatasetError(f"file_ending {ending!r} is not one of {', '.join(SUPPORTED_SUFFIXES)}")
    cases = list(cases)
    channel_names = [str(c) for c in channel_names]
    class_names = [str(c) for c in class_names]
    n_classes, n_ch = len(class_names), len(channel_names)
    if not class_names or "background" in class_names or "ignore" in class_names:
        raise DatasetError("class_names must name the foreground classes (not background/ignore)")
    names = [c.name for c in cases]
    if len(set(names)) != len(names) or any(not n or "/" in n or "\\" in n for n in names):
        raise DatasetError(f"case names must be unique file names, got {names}")
    # Check every case before writing anything; lazily loaded cases are dropped again
    # after use, so a dataset larger than memory is converted one case at a time.
    annotated, dims, unannotated = set(), set(), False
    for c in cases:
        with _loaded(c):
            if c.channels != n_ch:
                raise DatasetError(f"case {c.name} has {c.channels} channels, {n_ch} names given")
            dims.add(c.spatial_dims)
            if c.annotation is not None:
                annotated.add(c.name)
                labels = _nnunet_labels(c, n_classes, n_classes + 1)
                unannotated = unannotated or bool((labels == n_classes + 1).any())
    if not annotated:
        raise DatasetError("no case has an annotation; nnU-Net training needs labelled cases")
    if len(dims) > 1:
        raise DatasetError("cases mix 2D and 3D images; a dataset must be all 2D or all 3D")
    region_map = {str(k): sorted({int(v) for v in vs}) for k, vs in (regions or {}).items()}
    used = {v for vs in region_map.values() for v in vs}
    if region_map and used != set(range(1, n_classes + 1)):
        raise DatasetError(
            f"regions must use exactly the labels 1..{n_classes}, got {sorted(used)}"
        )
    order = regions_class_order(region_map) if region_map else None
    _check_target(root, overwrite)

    ignore = n_classes + 1
    written: set[Path] = set()
    for case in cases:
        folder = root / ("imagesTr" if case.name in annotated else "imagesTs")
        try:
            with _loaded(case):
                meta = _case_meta(case, case.spatial_shape)
                if case.name in annotated:
                    labels = _nnunet_labels(case, n_classes, ignore)
                    path = root / "labelsTr" / f"{case.name}{ending}"
                    written.add(vio.write_labels(labels, meta, path, overwrite=True))
                for ch in range(n_ch):
                    path = folder / f"{case.name}_{ch:04d}{ending}"
                    _write_channel(np.asarray(case.image[ch]), meta, path)
                    written.add(path)
        except vio.VolumeIOError as exc:
            raise DatasetError(f"case {case.name}: {exc}") from exc
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        for f in (root / sub).glob(f"*{ending}"):
            if f not in written:
                f.unlink()

    labels_json: dict[str, object] = {"background": 0}
    if region_map:
        labels_json.update({k: (v[0] if len(v) == 1 else v) for k, v in region_map.items()})
    else:
        labels_json.update({name: i for i, name in enumerate(class_names, start=1)})
    if unannotated:
        labels_json["ignore"] = ignore
    spec: dict[str, object] = {
        "name": dataset_name or root.name,
        "channel_names": {str(i): n for i, n in enumerate(channel_names)},
        "labels": labels_json,
        "numTraining": len(annotated),
        "file_ending": ending,
    }
    if order is not None:
        spec["regions_class_order"] = order
        spec[LABEL_NAMES_KEY] = {str(i): n for i, n in enumerate(class_names, start=1)}
    path = root / "dataset.json"
    tmp = root / f".dataset.{uuid.uuid4().hex[:12]}.json.tmp"
    try:
        tmp.write_text(json.dumps(spec, indent=4) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def parse_regions(text: str) -> dict[str, list[int]]:
    """Parse "WT=1,2,3;TC=1,3;ET=3" into {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}."""
    out: dict[str, list[int]] = {}
    hint = 'write regions as "NAME=1,2,3;NAME2=2,3"'
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        name, sep, values = (s.strip() for s in part.partition("="))
        if not sep or not name:
            raise DatasetError(f"region {part!r} has no name; {hint}")
        if name in out:
            raise DatasetError(f"region {name!r} is given twice; {hint}")
        try:
            labels = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise DatasetError(
                f"region {name!r}: {values!r} is not a list of labels; {hint}"
            ) from None
        if not labels or min(labels) < 1:
            raise DatasetError(f"region {name!r} needs foreground labels (1, 2, ...); {hint}")
        out[name] = sorted(set(labels))
    if not out:
        raise DatasetError(f"no regions in {text!r}; {hint}")
    return out


def _volume_suffix(name: str, file_ending: str | None) -> str | None:
    lower = name.lower()
    endings = (file_ending,) if file_ending else SUPPORTED_SUFFIXES
    return next((e for e in endings if lower.endswith(e.lower())), None)


def find_cases(folder: str | Path, *, file_ending: str | None = None) -> list[tuple[str, list]]:
    """Group the image files of a folder into cases for prediction.

    Files named ``{CASE}_{XXXX}{ending}`` (nnU-Net channel suffix) are channels of CASE,
    ordered by XXXX; other files are single-channel cases named by their stem. When no
    file of the folder ends in ``_0000``, 4-digit suffixes are read as part of the name
    (``scan_0001.nii.gz`` alone is the case "scan_0001"). Only supported volume files
    (or those ending in ``file_ending``) count; hidden files are skipped.

    Returns [(case name, [channel paths])] sorted by case name. Raises DatasetError for an
    empty folder, a gap in a case's channel indices, or cases with different channel counts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; give a folder of images")
    files = []
    for f in sorted(folder.iterdir()):
        suffix = _volume_suffix(f.name, file_ending)
        if f.is_file() and suffix and not f.name.startswith("."):
            files.append((f, f.name[: -len(suffix)]))
    if not files:
        kinds = file_ending or ", ".join(SUPPORTED_SUFFIXES)
        raise DatasetError(f"{folder} holds no image files ({kinds}); check the folder")
    split = any(stem.endswith("_0000") for _, stem in files)
    groups: dict[str, dict[int, Path]] = {}
    for f, stem in files:
        m = _CHANNEL_RE.match(stem) if split else None
        case, channel = (m["case"], int(m["channel"])) if m else (stem, 0)
        if channel in groups.setdefault(case, {}):
            raise DatasetError(
                f"{folder}: {groups[case][channel].name} and {f.name} are both channel "
                f"{channel} of case {case!r}; keep one"
            )
        groups[case][channel] = f
    out = []
    for case in sorted(groups):
        channels = groups[case]
        if sorted(channels) != list(range(len(channels))):
            missing = sorted(set(range(max(channels) + 1)) - set(channels))
            raise DatasetError(
                f"{folder}: case {case!r} lacks channel(s) "
                f"{', '.join(f'_{m:04d}' for m in missing)}; channels must be numbered from "
                "_0000 without gaps"
            )
        out.append((case, [channels[c] for c in sorted(channels)]))
    counts = {len(p) for _, p in out}
    if len(counts) > 1:
        detail = ", ".join(f"{c}: {len(p)}" for c, p in out[:6])
        raise DatasetError(
            f"{folder}: cases have different numbers of channels ({detail}); every case "
            "needs the same channels"
        )
    return out
