"""Anatomical viewing in napari: an axial first view and a cursor position in millimetres.

The layer transforms themselves come from the reader (see
:mod:`napari_unetseg.core.orientation`). What needs the viewer lives here:

* when a scan with an anatomical geometry is added, the viewer's dims order is set so
  that the 2D view shows an axial slice (files stored sagittally or coronally too);
* :func:`cursor_text` gives the exact RAS position (whole affine, obliquity included) and
  the voxel under the cursor, for a label in the Annotate dock.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ...core.orientation import display_frame, format_ras, ras_position
from ..reader import META_KEY
from .stacks import split_channel_stack

_WATCHED: weakref.WeakSet = weakref.WeakSet()


def _frame_of(layer: Any):
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    return meta, (display_frame(meta) if meta is not None else None)


def show_axial(viewer: Any, layer: Any) -> bool:
    """Set ``viewer.dims.order`` for an axial view of ``layer`` (a scan with an anatomical
    geometry and as many dimensions as the viewer). Returns whether the order changed."""
    _, frame = _frame_of(layer)
    if frame is None or len(frame.order) != viewer.dims.ndim or viewer.dims.ndim != 3:
        return False
    if tuple(viewer.dims.order) == frame.order:
        return False
    viewer.dims.order = frame.order
    return True


def watch_viewer(viewer: Any) -> None:
    """Give every scan added to ``viewer`` from now on an axial first view (once per
    viewer; the user's own dims order is kept until another scan is added), and split
    (Z, C, Y, X) stacks into channel layers (:mod:`.stacks`)."""
    if viewer in _WATCHED:
        return
    _WATCHED.add(viewer)

    def on_inserted(event) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and getattr(layer, "_type_string", "") == "image":
            show_axial(viewer, layer)
            split_channel_stack(viewer, layer)

    viewer.layers.events.inserted.connect(on_inserted)
    for layer in viewer.layers:
        if getattr(layer, "_type_string", "") == "image" and show_axial(viewer, layer):
            break


def cursor_text(viewer: Any) -> str:
    """'R 12.0  A -3.5  S 40.1 mm  (voxel 20, 31, 7 of <layer>)' for the topmost visible
    layer with an anatomical geometry under the cursor; '' when there is none."""
    position = np.asarray(viewer.cursor.position, dtype=float)
    for layer in reversed(list(viewer.layers)):
        if not getattr(layer, "visible", False):
            continue
        meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
        if getattr(meta, "affine", None) is None or len(position) < layer.ndim:
            continue
        index = np.asarray(layer.world_to_data(position[-layer.ndim :]), dtype=float)
        nd = len(meta.spacing)
        shape = np.asarray(layer.data.shape[-nd:])
        voxel = np.round(index[-nd:]).astype(int)
        if np.any(voxel < 0) or np.any(voxel >= shape):
            continue
        ras = ras_position(meta, [float(v) for v in index[-nd:]])
        if ras is None:
            continue
        where = ", ".join(str(int(v)) for v in voxel)
        return f"{format_ras(ras)}  (voxel {where} of {layer.name})"
    return ""
