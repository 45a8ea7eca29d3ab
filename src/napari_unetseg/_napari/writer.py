"""napari writer: labels layers to NIfTI in the geometry of the image they belong to.

The geometry (affine, header, spacing) is found by ``meta_for_layer``: the layer's own
``metadata["unetseg_meta"]``, else an image layer of the current viewer with the same
spatial shape that carries one, else a diagonal affine built from the layer's scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import NIFTI_SUFFIXES, VolumeMeta, meta_from_array
from ..core.io import write_labels as _write
from .reader import layer_meta


def meta_for_layer(layer_or_attributes: Any, viewer=None, shape=None) -> VolumeMeta:
    """Find the source geometry for a layer (or a writer's attributes dict).

    Order: the layer's own metadata["unetseg_meta"] when its spatial shape matches; else
    the first image layer in ``viewer`` with the same spatial shape carrying one (selected
    layers first); else a VolumeMeta of source_format "array" built from the layer's scale.
    shape: the layer's spatial shape (z, y, x) or (y, x); taken from ``layer.data`` when a
    layer is given.
    """
    if isinstance(layer_or_attributes, dict):
        metadata = layer_or_attributes.get("metadata") or {}
        scale = layer_or_attributes.get("scale")
        data_shape = shape
    else:
        layer = layer_or_attributes
        metadata = getattr(layer, "metadata", None) or {}
        scale = getattr(layer, "scale", None)
        data = getattr(layer, "data", None)
        data_shape = shape if shape is not None else getattr(data, "shape", None)
    data_shape = None if data_shape is None else tuple(int(s) for s in data_shape)

    own = layer_meta(metadata)
    if own is not None and (data_shape is None or own.shape in (None, data_shape)):
        return own
    if viewer is not None and data_shape is not None:
        selected = list(getattr(viewer.layers, "selection", []) or [])
        candidates = selected + [ly for ly in viewer.layers if ly not in selected]
        for ly in candidates:
            meta = layer_meta(getattr(ly, "metadata", None))
            if meta is not None and meta.shape == data_shape:
                return meta
        for ly in candidates:
            meta = layer_meta(getattr(ly, "metadata", None))
            if meta is not None and meta.shape is None and len(meta.spacing) == len(data_shape):
                return meta
    ndim = len(data_shape) if data_shape is not None else (len(scale) if scale is not None else 3)
    spacing = (1.0,) * ndim
    if scale is not None and len(scale) >= ndim:
        spacing = tuple(float(s) for s in list(scale)[-ndim:])
    return meta_from_array(shape=data_shape, spacing=spacing)


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer for labels: ``data`` (Z, Y, X) or (Y, X) integer.

    Writes NIfTI (.nii.gz when the name has no NIfTI extension) with the geometry of the
    layer's own metadata["unetseg_meta"] (a mask of another shape is refused with
    VolumeIOError), else the geometry meta_for_layer finds in the current viewer.
    Returns the list of written paths.
    """
    labels = np.asarray(data)
    target = Path(path)
    if not target.name.lower().endswith(NIFTI_SUFFIXES):
        target = target.with_name(target.name + ".nii.gz")
    own = layer_meta(attributes.get("metadata"))
    if own is not None:
        # The layer says which image it belongs to: a shape mismatch is an error, not a
        # reason to fall back to another geometry.
        meta = own
    else:
        import napari

        meta = meta_for_layer(attributes, viewer=napari.current_viewer(), shape=labels.shape)
    written = _write(labels, meta, target, overwrite=True)
    return [str(written)]
