"""napari writer: labels layers in the geometry of the image they belong to, as NIfTI
(.nii.gz, .nii), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or, for an image read from a
DICOM series, a DICOM SEG (.dcm) that references that series.

The geometry (affine, header, spacing) is found by ``meta_for_layer``: the layer's own
``metadata["unetseg_meta"]``, else an image layer of the current viewer with the same
spatial shape that carries one, else a diagonal affine built from the layer's scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import (
    DICOM_SUFFIXES,
    METAIMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    NRRD_SUFFIXES,
    VolumeMeta,
    meta_from_array,
)
from ..core.io import write_labels as _write
from .reader import layer_meta

#: Suffixes the writer keeps; any other name gets ".nii.gz" appended.
WRITER_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES + METAIMAGE_SUFFIXES + DICOM_SUFFIXES
# Layer metadata keys of the dock widgets (napari_unetseg._napari.widgets._common; not
# imported here so that saving never needs Qt).
_CLASSES_KEY = "unetseg_class_names"
_ROLE_KEY = "unetseg_role"


def segment_names(metadata) -> list[str] | None:
    """Names for label values 1, 2, ... of a layer (for a DICOM SEG's segment labels):
    its foreground class names, after "background" for an annotation layer (where value 1
    is background); None when the layer has none."""
    metadata = metadata if isinstance(metadata, dict) else {}
    names = metadata.get(_CLASSES_KEY)
    if not names:
        return None
    names = [str(n) for n in names]
    return ["background", *names] if metadata.get(_ROLE_KEY) == "annotation" else names


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

    Writes NIfTI, NRRD, MetaImage or DICOM SEG by the name's suffix (.nii.gz appended to
    a name without one of WRITER_SUFFIXES) with the geometry of the layer's own
    metadata["unetseg_meta"] (a mask of another shape is refused with VolumeIOError), else
    the geometry meta_for_layer finds in the current viewer. A DICOM SEG needs an image
    read from a DICOM series; its segments are named by :func:`segment_names`.
    Returns the list of written paths.
    """
    labels = np.asarray(data)
    target = Path(path)
    if not target.name.lower().endswith(WRITER_SUFFIXES):
        target = target.with_name(target.name + ".nii.gz")
    own = layer_meta(attributes.get("metadata"))
    if own is not None:
        # The layer says which image it belongs to: a shape mismatch is an error, not a
        # reason to fall back to another geometry.
        meta = own
    else:
        import napari

        meta = meta_for_layer(attributes, viewer=napari.current_viewer(), shape=labels.shape)
    names = segment_names(attributes.get("metadata"))
    written = _write(labels, meta, target, overwrite=True, class_names=names)
    from .widgets.autosave import discard_saved

    discard_saved(attributes.get("metadata"))  # saved for good: no recovery to offer
    return [str(written)]
