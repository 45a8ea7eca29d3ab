"""The live "training preview" layer: class probabilities of the viewed slice, drawn in
the class colours used by annotation and prediction layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import ROLE_KEY, class_colour, geometry_kwargs

PREVIEW_LAYER = "training preview"


def preview_rgba(probabilities: np.ndarray) -> np.ndarray:
    """(K, *plane) class probabilities (channel 0 = background) -> (*plane, 4) uint8
    RGBA: each foreground class k in its colour, weighted by its probability; alpha =
    1 - p(background)."""
    p = np.asarray(probabilities, dtype=np.float32)
    rgb = np.zeros((*p.shape[1:], 3), np.float32)
    for k in range(1, p.shape[0]):
        rgb += p[k][..., None] * np.asarray(class_colour(k)[:3], np.float32)
    fg = 1.0 - p[0] if p.shape[0] > 1 else p[0]
    fg = np.clip(fg, 0.0, 1.0)
    scale = np.where(fg > 1e-6, 1.0 / np.maximum(fg, 1e-6), 0.0)[..., None]
    rgba = np.concatenate([np.clip(rgb * scale, 0, 1), fg[..., None]], axis=-1)
    return np.round(rgba * 255).astype(np.uint8)


def show_preview(viewer, ev: Any, source: Any, annotation_layer: Any = None) -> Any:
    """Draw a core ``Preview`` event (probabilities of one slice) into the preview
    layer, made with ``source``'s geometry on first use. Returns the layer."""
    shape = tuple(annotation_layer.data.shape) if annotation_layer is not None else None
    rgba = preview_rgba(ev.probabilities)
    if shape is None:
        shape = rgba.shape[:-1]
    layer = next((la for la in viewer.layers if la.name == PREVIEW_LAYER), None)
    if layer is not None and tuple(layer.data.shape) != (*shape, 4):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        layer = viewer.add_image(
            np.zeros((*shape, 4), dtype=np.uint8),
            name=PREVIEW_LAYER,
            rgb=True,
            opacity=0.6,
            **geometry_kwargs(source, **{ROLE_KEY: "preview"}),
        )
        # keep the annotation layer selected for painting
        if annotation_layer is not None and annotation_layer in viewer.layers:
            viewer.layers.selection.active = annotation_layer
    if not layer.visible:
        layer.visible = True
    if len(shape) == rgba.ndim - 1:  # 2D image: the preview is the whole image
        layer.data[...] = rgba
    else:
        sl: list[Any] = [slice(None)] * len(shape)
        sl[ev.axis] = ev.index
        layer.data[tuple(sl)] = rgba
    layer.refresh()
    return layer
