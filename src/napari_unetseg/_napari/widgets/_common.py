"""Building blocks shared by the dock widgets: layer pickers, geometry, colours, slices.

Only numpy, qtpy and napari are imported here; torch and the heavy core modules are
imported inside the handlers that need them, so that opening a widget stays instant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QTimer

from ...core.channel_match import guess_channel_axis

META_KEY = "unetseg_meta"
CLASSES_KEY = "unetseg_class_names"  # foreground class names, background excluded
ROLE_KEY = "unetseg_role"  # "annotation", "prediction", "truth", "preview", "probability"
TASK_KEY = "unetseg_task"
#: Roles of layers this plugin computes (never offered as image inputs).
DERIVED_ROLES = ("preview", "probability", "boundary")

#: Faint grey for the "background" annotation value (1); 0 stays transparent.
BACKGROUND_RGBA = (0.75, 0.75, 0.75, 0.35)
_CLASS_COLOURS = [
    (0.90, 0.20, 0.20, 1.0),
    (0.20, 0.60, 1.00, 1.0),
    (0.20, 0.80, 0.30, 1.0),
    (1.00, 0.75, 0.10, 1.0),
    (0.75, 0.30, 0.90, 1.0),
    (0.10, 0.85, 0.85, 1.0),
    (1.00, 0.45, 0.70, 1.0),
    (0.60, 0.45, 0.25, 1.0),
]


# --------------------------------------------------------------------------- layers


def layer_type_name(layer: Any) -> str:
    return type(layer).__name__


def spatial_ndim(layer: Any) -> int:
    """Number of spatial axes of a layer: from its VolumeMeta when present, else guessed.

    An image layer of ndim 4 is read as (C, Z, Y, X); ndim 2 or 3 is spatial.
    """
    meta = layer.metadata.get(META_KEY) if hasattr(layer, "metadata") else None
    spacing = getattr(meta, "spacing", None)
    if spacing is not None and 2 <= len(spacing) <= layer.ndim:
        return len(spacing)
    if getattr(layer, "rgb", False):
        return layer.ndim  # rgb axis is not part of ndim
    return 3 if layer.ndim >= 4 else layer.ndim


def spatial_shape(layer: Any) -> tuple[int, ...]:
    nd = spatial_ndim(layer)
    shape = tuple(int(s) for s in np.shape(layer.data))
    if channel_axis(layer) == 1:
        return (shape[0], *shape[2:])
    return shape[-nd:]


def channel_axis(layer: Any) -> int:
    """Axis of a 4D image layer that holds its channels: 0 (C, Z, Y, X) for the plugin's
    own layers, else guessed (:func:`~napari_unetseg.core.channel_match.guess_channel_axis`:
    napari's reader gives (Z, C, Y, X) hyperstacks)."""
    if getattr(layer, "ndim", 0) != 4 or getattr(layer, "rgb", False):
        return 0
    if (getattr(layer, "metadata", None) or {}).get(META_KEY) is not None:
        return 0
    return guess_channel_axis(np.shape(layer.data))


def channel_count(layer: Any) -> int:
    """Channels a layer contributes: the product of its non-spatial axes."""
    shape = np.shape(layer.data)
    return int(np.prod(shape) // max(1, int(np.prod(spatial_shape(layer)))))


def channel_names(layers: Sequence[Any]) -> list[str]:
    """One name per channel of ``layers`` (as :func:`image_array` stacks them): the layer
    name for a one-channel layer, else its file's channel names or "<layer> <c>"."""
    names: list[str] = []
    for layer in layers:
        n = channel_count(layer)
        if n == 1:
            names.append(str(layer.name))
            continue
        meta = layer.metadata.get(META_KEY)
        own = list(getattr(meta, "channel_names", None) or [])
        names += own if len(own) == n else [f"{layer.name} {c}" for c in range(n)]
    return names


def image_array(layers: Sequence[Any]) -> np.ndarray:
    """Stack image layers into one float32 array (C, *spatial).

    Each layer contributes its leading non-spatial axes as channels. All layers must have
    the same spatial shape.
    """
    if not layers:
        raise ValueError("choose at least one image layer")
    shape = spatial_shape(layers[0])
    chans = []
    for layer in layers:
        if spatial_shape(layer) != shape:
            raise ValueError(
                f"image layers differ in shape: {layers[0].name!r} is {shape}, "
                f"{layer.name!r} is {spatial_shape(layer)}; choose layers of one volume"
            )
        data = np.asarray(layer.data, dtype=np.float32)
        if channel_axis(layer) == 1:
            data = np.moveaxis(data, 1, 0)
        chans.append(data.reshape((-1, *shape)))
    return np.ascontiguousarray(np.concatenate(chans, axis=0))


def labels_array(layer: Any) -> np.ndarray:
    return np.asarray(layer.data)


def spacing_of(layer: Any) -> tuple[float, ...]:
    """Voxel spacing in array order: the VolumeMeta's, else the layer scale."""
    nd = spatial_ndim(layer)
    meta = layer.metadata.get(META_KEY)
    spacing = getattr(meta, "spacing", None)
    if spacing is not None and len(spacing) == nd:
        return tuple(float(s) for s in spacing)
    return tuple(abs(float(s)) for s in layer.scale[-nd:])


def geometry_kwargs(source: Any, **metadata: Any) -> dict:
    """Scale, translation, axis names, units and metadata (with the VolumeMeta) of
    ``source`` for a new layer of its spatial shape, so that it lies on the source."""
    nd = spatial_ndim(source)
    axes = [0, 2, 3] if channel_axis(source) == 1 else list(range(source.ndim - nd, source.ndim))
    md = {}
    if META_KEY in source.metadata:
        md[META_KEY] = source.metadata[META_KEY]
    md["unetseg_source"] = source.name
    md.update(metadata)
    return {
        "scale": tuple(source.scale[a] for a in axes),
        "translate": tuple(source.translate[a] for a in axes),
        "axis_labels": tuple(source.axis_labels[a] for a in axes),
        "units": tuple(str(source.units[a]) for a in axes),
        "metadata": md,
    }


# --------------------------------------------------------------------------- colours


def annotation_colormap(max_value: int, instances: bool = False):
    """Labels colormap for annotation volumes: 0 transparent, 1 (background) faint grey,
    2.. one colour per class; object ids of an instance layer in napari's default Labels
    colours (ids up to ``max_value`` + 64 are covered; extend by calling again)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, tuple] = {
        None: (0.0, 0.0, 0.0, 0.0),
        0: (0.0, 0.0, 0.0, 0.0),
        1: BACKGROUND_RGBA,
    }
    if instances:
        from napari.utils.colormaps import label_colormap

        default = label_colormap(49, 0.5, background_value=0)  # napari's default colours
        for v in range(2, max(int(max_value), 2) + 65):
            colors[v] = tuple(float(c) for c in default.map(v))
    else:
        for v in range(2, max(int(max_value), 2) + 1):
            colors[v] = _CLASS_COLOURS[(v - 2) % len(_CLASS_COLOURS)]
    return DirectLabelColormap(color_dict=colors)


def prediction_colormap(n_classes: int):
    """Labels colormap for predicted classes: 0 transparent, class k in the colour of
    class k (the colour it has in annotation layers, where it is value k + 1)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, tuple] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for k in range(1, max(int(n_classes), 1) + 1):
        colors[k] = class_colour(k)
    return DirectLabelColormap(color_dict=colors)


def class_colour(index: int) -> tuple:
    """Colour of foreground class ``index`` (1-based, as in predictions)."""
    return _CLASS_COLOURS[(index - 1) % len(_CLASS_COLOURS)]


# --------------------------------------------------------------------------- slices


def current_slice(viewer, layer) -> tuple[int, int]:
    """(axis, index) in ``layer``'s data of the slice shown in the 2D view.

    Raises ValueError in 3D view or when the view shows no single slice of the layer.
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError("switch to the 2D view to work on a slice")
    offset = viewer.dims.ndim - layer.ndim
    hidden = [a - offset for a in viewer.dims.not_displayed if a - offset >= 0]
    if not hidden:
        raise ValueError(f"layer {layer.name!r} is 2D: the whole image is one slice")
    axis = hidden[-1]
    world = np.asarray(viewer.dims.point)[offset:]
    data_pt = np.asarray(layer.world_to_data(world))
    index = int(np.round(data_pt[axis]))
    size = layer.data.shape[axis]
    if not 0 <= index < size:
        raise ValueError(f"the viewed slice {index} lies outside {layer.name!r}")
    return axis, index


# --------------------------------------------------------------------------- workers


def stop_work_on_close(widget, runner) -> None:
    """Abort ``runner``'s work when ``widget`` is destroyed, taken out of its dock, or its
    window closes, and when the application quits.

    The connections hold the runner, not the widget, so they stay valid while the widget
    is being deleted.
    """
    from qtpy.QtWidgets import QApplication

    widget.destroyed.connect(lambda *_: runner.abort())
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(runner.abort)


class StopsWorkWhenGone:
    """Mixin for a QWidget whose background work runs in ``self.runner`` (an
    EventRunner): the work is aborted when the widget is taken out of its dock, when its
    window closes, or when it is closed itself; merely hiding it behind another tab
    leaves the work running."""

    def event(self, event) -> bool:
        # taken out of its dock (napari's remove_dock_widget sets the parent to None)
        if event.type() == QEvent.ParentChange and self.parent() is None:
            self.runner.abort()
        return super().event(event)  # type: ignore[misc]  # defined by the QWidget mixed in

    def hideEvent(self, event) -> None:
        super().hideEvent(event)  # type: ignore[misc]  # defined by the QWidget mixed in
        QTimer.singleShot(0, self._stop_if_gone)

    def _stop_if_gone(self) -> None:
        if self.runner.running and widget_gone(self):
            self.runner.abort()

    def closeEvent(self, event) -> None:
        self.runner.abort()
        super().closeEvent(event)  # type: ignore[misc]  # defined by the QWidget mixed in


def widget_gone(widget) -> bool:
    """True when a hidden widget was taken out of its dock or its window was closed
    (not merely hidden behind another tab)."""
    try:
        if widget.isVisible():
            return False
        return widget.parent() is None or not widget.window().isVisible()
    except RuntimeError:  # the C++ object is already deleted
        return True


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def ask_yes_no(parent: Any, title: str, text: str) -> bool:
    """A Yes / No question (No is the default); True for Yes."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent, title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No
    )
    return answer == QMessageBox.Yes


def notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
