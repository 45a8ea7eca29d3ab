"""nnU-Net v2 "raw" datasets: read them as cases, write cases as them, group files to predict.

Layout (nnU-Net v2 dataset format)::

    root/dataset.json
    root/imagesTr/{CASE}_{XXXX}{file_ending}   one file per channel, XXXX = 0000, 0001, ...
    root/labelsTr/{CASE}{file_ending}          integer labels, 0 = background
    root/imagesTs/{CASE}_{XXXX}{file_ending}   optional, images without labels

``dataset.json`` holds ``channel_names`` ({"0": "T1", "1": "FLAIR"}), ``labels`` (name ->
integer, e.g. {"background": 0, "edema": 1, "ignore": 2}, or name -> list of integers for
region-based datasets, which then need ``regions_class_order``), ``numTraining`` and
``file_ending``. Labels must be consecutive (0, 1, 2, ...); an "ignore" label marks
unannotated voxels and must be the highest value (number of labels). A ``dataset`` key
listing each case's files explicitly is honoured as nnU-Net does.

Label conventions: nnU-Net 0 (background) is the project's 1, class k is k + 1, and the
ignore label is the project's 0 (not annotated). Images are (C, Z, Y, X) or (C, Y, X),
annotations (Z, Y, X) or (Y, X).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unetseg.core import io as vio
from napari_unetseg.core.cases import Case

if TYPE_CHECKING:
    from napari_unetseg.core.dataset_files import (
        find_cases,
        parse_regions,
        regions_class_order,
        write_nnunet_dataset,
    )

SUPPORTED_SUFFIXES: tuple[str, ...] = getattr(
    vio, "SUPPORTED_SUFFIXES", (".nii.gz", ".nii", ".tif", ".tiff")
)

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "LazyCase",
    "find_cases",
    "parse_regions",
    "read_nnunet_dataset",
    "regions_class_order",
    "regions_from_info",
    "write_nnunet_dataset",
]
# Writing datasets and grouping files live in dataset_files (which imports this module);
# they are importable from here too, resolved on first use (PEP 562).
_FROM_FILES = ("find_cases", "parse_regions", "regions_class_order", "write_nnunet_dataset")


def __getattr__(name: str):
    if name in _FROM_FILES:
        from napari_unetseg.core import dataset_files

        return getattr(dataset_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FROM_FILES))


_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
# Extra dataset.json key naming the integer labels of region-based datasets (nnU-Net
# ignores keys it does not know; there the "labels" entries name regions, not labels).
LABEL_NAMES_KEY = "label_names"


class DatasetError(ValueError):
    """A dataset folder or file is not usable; the message names it and says what to do."""


@dataclass
class DatasetInfo:
    """What dataset.json declares.

    Attributes:
        name: dataset name ("name" in dataset.json, else the folder name).
        channel_names: one name per image channel, in channel order.
        class_names: names of the foreground labels 1..K in label order (for region-based
            datasets the underlying integer labels, "label k" where unnamed).
        regions: region name -> its integer labels; empty unless region-based.
        ignore_label: nnU-Net value of unannotated voxels (K + 1), or None.
        file_ending: e.g. ".nii.gz".
        root: the dataset folder.
    """

    name: str
    channel_names: list[str]
    class_names: list[str]
    regions: dict[str, list[int]] = field(default_factory=dict)
    ignore_label: int | None = None
    file_ending: str = ".nii.gz"
    root: Path = Path(".")

    @property
    def num_classes(self) -> int:
        """K, the number of foreground labels."""
        return len(self.class_names)


# --------------------------------------------------------------------------- dataset.json


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DatasetError(f"{where}: {value!r} is not an integer label")
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{where}: {value!r} is not an integer label") from None


def _parse_labels(spec: dict, where: str) -> tuple[list[str], dict[str, list[int]], int | None]:
    """(class_names, regions, ignore_label) from dataset.json."""
    labels = spec["labels"]
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{where}: 'labels' must map label names to integers")
    if all(str(k).isdigit() for k in labels) and all(isinstance(v, str) for v in labels.values()):
        raise DatasetError(
            f"{where} uses the nnU-Net v1 form {{'0': 'background'}}; nnU-Net v2 maps names "
            "to integers ({'background': 0}). Convert it with nnUNetv2_convert_old_nnUNet_dataset."
        )
    if "background" not in labels or labels["background"] not in (0, "0"):
        raise DatasetError(f"{where}: 'labels' must contain \"background\": 0")
    ignore = None
    values: dict[str, list[int]] = {}
    for name, value in labels.items():
        if name == "ignore":
            ignore = _as_int(value, f"{where}, label 'ignore'")
        elif isinstance(value, (list, tuple)):
            values[name] = sorted({_as_int(v, f"{where}, label {name!r}") for v in value})
            if not values[name]:
                raise DatasetError(f"{where}: label {name!r} is an empty list; give its labels")
        else:
            values[name] = [_as_int(value, f"{where}, label {name!r}")]
    region_based = any(len(v) > 1 for v in values.values())
    used = sorted({v for vs in values.values() for v in vs})
    k = max(used)
    if ignore is not None and ignore != k + 1:
        raise DatasetError(
            f"{where}: the ignore label must be the highest label ({k + 1}), not {ignore}"
        )
    gaps = sorted(set(range(k + 1)) - set(used))
    if gaps:
        raise DatasetError(
            f"{where}: labels must be consecutive integers 0, 1, 2, ...; {gaps} missing"
        )
    fg = {n: v for n, v in values.items() if v != [0]}
    if not region_based:
        by_value = {v[0]: n for n, v in fg.items()}
        if len(by_value) != len(fg):
            raise DatasetError(f"{where}: two label names share one value; give each its own")
        return [by_value[i] for i in range(1, k + 1)], {}, ignore
    order = spec.get("regions_class_order")
    if not isinstance(order, list) or len(order) != len(fg):
        raise DatasetError(
            f"{where} is region-based (a label is a list) and needs 'regions_class_order' "
            f"with one label per region ({len(fg)})"
        )
    named = {v[0]: n for n, v in fg.items() if len(v) == 1}
    extra = spec.get(LABEL_NAMES_KEY) or {}
    names = [str(extra.get(str(i), named.get(i, f"label {i}"))) for i in range(1, k + 1)]
    return names, fg, ignore


def _channel_names(spec: dict, where: str) -> list[str]:
    channels = spec.get("channel_names", spec.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise DatasetError(f"{where}: 'channel_names' must map '0', '1', ... to channel names")
    if sorted(str(k) for k in channels) != [str(i) for i in range(len(channels))]:
        raise DatasetError(
            f"{where}: 'channel_names' keys must be '0' .. '{len(channels) - 1}', "
            f"got {sorted(channels)}"
        )
    return [str(channels[str(i)]) for i in range(len(channels))]


def _read_spec(root: Path) -> tuple[dict, DatasetInfo]:
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; give an nnU-Net raw dataset folder")
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{root} has no dataset.json; is it an nnU-Net v2 raw dataset folder?")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); fix or regenerate it") from exc
    if not isinstance(spec, dict):
        raise DatasetError(f"{path} must hold a JSON object")
    missing = [k for k in ("labels", "file_ending") if k not in spec]
    if "channel_names" not in spec and "modality" not in spec:
        missing.insert(0, "channel_names")
    if missing:
        raise DatasetError(f"{path} lacks the key(s) {', '.join(missing)}; add them")
    ending = spec["file_ending"]
    if not isinstance(ending, str) or ending.lower() not in SUPPORTED_SUFFIXES:
        raise DatasetError(
            f"{path}: file_ending {ending!r} is not supported; napari-unetseg reads "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    classes, regions, ignore = _parse_labels(spec, str(path))
    info = DatasetInfo(
        name=str(spec.get("name") or root.name),
        channel_names=_channel_names(spec, str(path)),
        class_names=classes,
        regions=regions,
        ignore_label=ignore,
        file_ending=ending,
        root=root,
    )
    return spec, info


def _training_files(root: Path, spec: dict, info: DatasetInfo) -> list[tuple[str, list, Path]]:
    """(case, channel paths, label path) per training case, sorted by case."""
    n_ch, ending = len(info.channel_names), info.file_ending
    if "dataset" in spec:
        out = []
        entries = spec["dataset"] if isinstance(spec["dataset"], dict) else {}
        for case, entry in sorted(entries.items()):
            if not isinstance(entry, dict) or not {"images", "label"} <= set(entry):
                raise DatasetError(
                    f"{root / 'dataset.json'}: dataset entry {case!r} needs 'images' and 'label'"
                )
            # Relative to the dataset folder, as in nnU-Net; absolute paths stay absolute.
            images = [root / os.path.expandvars(str(p)) for p in entry["images"]]
            out.append((case, images, root / os.path.expandvars(str(entry["label"]))))
        if not out:
            raise DatasetError(f"{root / 'dataset.json'}: the 'dataset' entry lists no cases")
    else:
        folder = root / "imagesTr"
        files = sorted(folder.glob(f"*{ending}")) if folder.is_dir() else []
        files = [f for f in files if not f.name.startswith(".")]
        if not files:
            raise DatasetError(f"{folder} holds no {ending} images; add the training images")
        groups: dict[str, dict[int, Path]] = {}
        for f in files:
            m = _CHANNEL_RE.match(f.name[: -len(ending)])
            if m is None:
                raise DatasetError(
                    f"{f}: image names must end in a 4-digit channel index, CASE_0000{ending}"
                )
            channel = int(m["channel"])
            if channel >= n_ch:
                raise DatasetError(
                    f"{f}: channel {channel} but dataset.json declares {n_ch} channel(s); "
                    "add it to channel_names or remove the file"
                )
            groups.setdefault(m["case"], {})[channel] = f
        out = []
        for case in sorted(groups):
            paths = [groups[case].get(c, folder / f"{case}_{c:04d}{ending}") for c in range(n_ch)]
            out.append((case, paths, root / "labelsTr" / f"{case}{ending}"))
    for case, paths, label in out:
        if len(paths) != n_ch:
            raise DatasetError(f"case {case}: {len(paths)} image files for {n_ch} channels")
        for p in [*paths, label]:
            if not Path(p).is_file():
                raise DatasetError(f"case {case}: {p} is missing; add it or remove the case")
    if "numTraining" in spec and spec["numTraining"] != len(out):
        warnings.warn(
            f"{root / 'dataset.json'}: numTraining is {spec['numTraining']} but {len(out)} "
            "training cases were found",
            stacklevel=3,
        )
    return out


# --------------------------------------------------------------------------- cases


def _load_case(name: str, paths: list, label_path: Path, info: DatasetInfo):
    """(image (C, *spatial), annotation in project convention, spacing, meta)."""
    channels: list[np.ndarray] = []
    meta: vio.VolumeMeta | None = None
    try:
        for p in paths:
            data, m = vio.read_volume(p)
            if data.shape[0] != 1:
                raise DatasetError(f"case {name}: {p} holds {data.shape[0]} channels, not one")
            if channels and data.shape[1:] != channels[0].shape:
                raise DatasetError(
                    f"case {name}: channel files differ in shape: {paths[0]} is "
                    f"{channels[0].shape}, {p} is {data.shape[1:]}; channels must share a grid"
                )
            channels.append(data[0])
            meta = meta or m
        labels, _ = vio.read_labels(label_path)
    except vio.VolumeIOError as exc:
        raise DatasetError(f"case {name}: {exc}") from exc
    if meta is None:
        raise DatasetError(f"case {name}: no image file; dataset.json must list its channels")
    image = np.stack(channels)
    if labels.shape != image.shape[1:]:
        raise DatasetError(
            f"case {name}: label file {label_path} has shape {labels.shape} but the images "
            f"have {image.shape[1:]}; labels must cover the image voxel for voxel"
        )
    k = info.num_classes
    allowed = set(range(k + 1)) | ({info.ignore_label} if info.ignore_label is not None else set())
    bad = sorted(set(np.unique(labels).tolist()) - allowed)
    if bad:
        raise DatasetError(
            f"{label_path} holds label values {bad} that dataset.json does not declare "
            f"(declared: {sorted(allowed)}); fix the labels or dataset.json"
        )
    dtype = np.uint8 if k + 1 <= 255 else np.int32
    annotation = labels.astype(dtype) + dtype(1)
    if info.ignore_label is not None:
        annotation[labels == info.ignore_label] = 0
    meta.channel_names = list(info.channel_names)
    return image, annotation, tuple(float(s) for s in meta.spacing), meta


class LazyCase(Case):
    """A training case of an nnU-Net dataset that reads its files on first access.

    ``image``, ``annotation``, ``spacing`` and ``meta`` (and the shape properties) load
    the whole case on first use and keep it until :meth:`unload`; the file names are in
    ``image_paths`` (one per channel) and ``label_path``. Content errors (shapes, label
    values) are raised as :class:`DatasetError` when the case is loaded.
    """

    label_path: Path

    def __init__(self, name: str, image_paths: list, label_path: Path, info: DatasetInfo):
        self.name = name
        self.channel_names = list(info.channel_names)
        self.image_paths = [Path(p) for p in image_paths]
        self.label_path = Path(label_path)
        self._info = info
        self._data: list | None = None

    def _loaded_data(self) -> list:
        if self._data is None:
            self._data = list(_load_case(self.name, self.image_paths, self.label_path, self._info))
        return self._data

    def _get(self, i: int):
        return self._loaded_data()[i]

    def _set(self, i: int, value) -> None:
        self._loaded_data()[i] = value

    image = property(lambda self: self._get(0), lambda self, v: self._set(0, v))
    annotation = property(lambda self: self._get(1), lambda self, v: self._set(1, v))
    spacing = property(lambda self: self._get(2), lambda self, v: self._set(2, v))
    meta = property(lambda self: self._get(3), lambda self, v: self._set(3, v))

    @property
    def loaded(self) -> bool:
        return self._data is not None

    def unload(self) -> None:
        """Drop the loaded arrays (they are read again on the next access)."""
        self._data = None

    def load(self) -> Case:
        """A plain in-memory Case with this case's data and file names."""
        return Case(
            self.name,
            self.image,
            self.annotation,
            self.spacing,
            self.meta,
            channel_names=list(self.channel_names),
            image_paths=list(self.image_paths),
            label_path=self.label_path,
        )

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"LazyCase(name={self.name!r}, files={len(self.image_paths) + 1}, {state})"


def read_nnunet_dataset(root: str | Path, *, load: bool = True) -> tuple[DatasetInfo, list[Case]]:
    """Read an nnU-Net v2 raw dataset's training cases.

    Returns (info, cases), cases sorted by name. Each case has ``image`` (C, *spatial)
    with the channel files stacked in channel order, ``annotation`` (*spatial) in the
    project's convention (nnU-Net k -> k + 1, ignore -> 0), ``spacing`` and ``meta``
    from the first channel file, and the attributes ``image_paths`` / ``label_path``.
    With ``load=False`` the cases are :class:`LazyCase` objects that read their files on
    first access (content checks then happen at that time). Raises DatasetError.
    """
    root = Path(root)
    spec, info = _read_spec(root)
    files = _training_files(root, spec, info)
    lazy = [LazyCase(name, paths, label, info) for name, paths, label in files]
    if not load:
        return info, list(lazy)
    cases = [c.load() for c in lazy]
    dims = {c.spatial_dims for c in cases}
    if len(dims) > 1:
        first = {d: next(c.name for c in cases if c.spatial_dims == d) for d in sorted(dims)}
        raise DatasetError(
            f"{root} mixes 2D and 3D cases (e.g. {first[2]} is 2D, {first[3]} is 3D); "
            "a dataset must be all 2D or all 3D"
        )
    return info, cases


def regions_from_info(info: DatasetInfo) -> dict[str, list[int]]:
    """The dataset's regions (name -> integer labels); empty unless region-based."""
    return {name: list(labels) for name, labels in info.regions.items()}
