"""Cases: the unit of data that training, prediction and evaluation work on.

A case is one image ``(C, *spatial)``, optionally one annotation ``(*spatial)`` in the
project's convention (0 = not annotated, 1 = background, 2.. = classes or object ids),
and the geometry (:class:`~napari_unetseg.core.io.VolumeMeta`) needed to write results
back in the scan's own grid. One case is the degenerate dataset: the single-volume loop
and the dataset loop are one code path.

Images may be any array-like that numpy can slice (``numpy.ndarray``, ``numpy.memmap``),
so a dataset larger than memory can be given as memory-mapped files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Case:
    """One scan of a dataset.

    Attributes:
        name: identifier, unique in its dataset (nnU-Net's case identifier).
        image: (C, Z, Y, X) or (C, Y, X) raw intensities (array-like, may be a memmap).
        annotation: (Z, Y, X) or (Y, X) integers in the project's convention, or None
            for a case to predict only.
        spacing: voxel spacing in array order; None = isotropic 1.
        meta: the source geometry (``VolumeMeta``) used to write outputs; None for
            in-memory arrays.
        channel_names: one name per channel (e.g. "T1", "FLAIR"); may be empty.
        image_paths: the files the channels were read from, one per channel (empty for
            in-memory arrays).
        label_path: the file the annotation was read from, or None.
    """

    name: str
    image: Any
    annotation: Any = None
    spacing: tuple[float, ...] | None = None
    meta: Any = None
    channel_names: list[str] = field(default_factory=list)
    image_paths: list[Path] = field(default_factory=list)
    label_path: Path | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.image.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.image.shape[0])

    @property
    def spatial_dims(self) -> int:
        return len(self.image.shape) - 1


def as_cases(
    image: Any = None,
    annotation: Any = None,
    *,
    cases: Sequence[Case] | None = None,
    spacing: Sequence[float] | None = None,
) -> list[Case]:
    """Normalise the two ways of giving data -- one (image, annotation) pair or a list
    of cases -- into a list of cases. A single-channel image may omit its channel axis
    when the annotation is given."""
    if cases is not None:
        if image is not None or annotation is not None:
            raise ValueError("give either image and annotation, or cases, not both")
        out = list(cases)
        if not out:
            raise ValueError("the list of cases is empty: give at least one annotated image")
        for c in out:
            if not isinstance(c, Case):
                raise TypeError(f"cases must be napari_unetseg Case objects, not {type(c)}")
        return out
    if image is None:
        raise ValueError("give an image (C, *spatial) and its annotation, or a list of cases")
    arr = image if hasattr(image, "shape") else np.asarray(image)
    if annotation is not None:
        ann = np.asarray(annotation)
        if tuple(arr.shape) == tuple(ann.shape):
            arr = np.asarray(arr)[None]
    sp = tuple(float(s) for s in spacing) if spacing is not None else None
    return [Case(name="case", image=arr, annotation=annotation, spacing=sp)]
