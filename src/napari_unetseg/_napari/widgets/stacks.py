"""Channel stacks from napari's own reader, (Z, C, Y, X), split into one layer per channel.

napari's reader gives ImageJ hyperstacks and other 4D TIFFs as one (Z, C, Y, X) layer.
Annotations and predictions are (Z, Y, X) and napari aligns layers by their trailing
axes, so such a layer would line its channel axis up with their Z. Each channel becomes
its own image layer (the plugin's convention: one layer per channel, checked in order in
the Train and Predict docks); the original is hidden, not removed.
"""

from __future__ import annotations

from typing import Any

from ._common import channel_axis, notify_info


def split_channel_stack(viewer: Any, layer: Any) -> list:
    """Add one image layer per channel of a (Z, C, Y, X) ``layer`` and hide it. Returns
    the new layers ([] for any other layer)."""
    if getattr(layer, "_type_string", "") != "image" or channel_axis(layer) != 1:
        return []
    from napari.layers.utils.stack_utils import stack_to_images

    parts = stack_to_images(layer, axis=1)
    added = []
    for c, part in enumerate(parts):
        part.name = f"{layer.name} [c{c}]"
        part.visible = c == 0
        added.append(viewer.add_layer(part))
    layer.visible = False
    notify_info(
        f"{layer.name!r} is (Z, C, Y, X): its {len(parts)} channels are now separate layers "
        f"(the original is hidden)"
    )
    return added
