"""Building blocks shared by the dock widgets: layer pickers, geometry, colours, slices.

Only numpy, qtpy and napari are imported here; torch and the heavy core modules are
imported inside the handlers that need them, so that opening a widget stays instant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem

META_KEY = "unetseg_meta"
CLASSES_KEY = "unetseg_class_names"  # foreground class names, background excluded
ROLE_KEY = "unetseg_role"  # "annotation", "prediction", "instances", "probability"
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
    return tuple(int(s) for s in np.shape(layer.data)[-nd:])


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
    return tuple(float(s) for s in layer.scale[-nd:])


def geometry_kwargs(source: Any, **metadata: Any) -> dict:
    """Scale, translation and metadata (with the VolumeMeta) of ``source`` for a new
    layer of its spatial shape."""
    nd = spatial_ndim(source)
    md = {}
    if META_KEY in source.metadata:
        md[META_KEY] = source.metadata[META_KEY]
    md["unetseg_source"] = source.name
    md.update(metadata)
    return {
        "scale": tuple(source.scale[-nd:]),
        "translate": tuple(source.translate[-nd:]),
        "metadata": md,
    }


def set_or_add_layer(viewer, kind: str, data: np.ndarray, name: str, **kwargs) -> Any:
    """Update the layer called ``name`` when it exists with a matching kind and shape,
    otherwise add a new one. Returns the layer."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer_type_name(layer).lower() == kind and layer.data.shape == data.shape:
            layer.data = data
            if "metadata" in kwargs:
                layer.metadata.update(kwargs["metadata"])
            return layer
        viewer.layers.remove(layer)
    adder = getattr(viewer, f"add_{kind}")
    return adder(data, name=name, **kwargs)


# --------------------------------------------------------------------------- colours


def annotation_colormap(max_value: int, instances: bool = False):
    """Labels colormap for annotation volumes: 0 transparent, 1 (background) faint grey,
    2.. one colour per class (or object)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, tuple] = {
        None: (0.0, 0.0, 0.0, 0.0),
        0: (0.0, 0.0, 0.0, 0.0),
        1: BACKGROUND_RGBA,
    }
    if instances:
        from napari.utils.colormaps import label_colormap

        cyc = label_colormap(max(int(max_value), 2) + 1)
        for v in range(2, int(max_value) + 1):
            colors[v] = tuple(float(c) for c in cyc.map(v))
    else:
        for v in range(2, max(int(max_value), 2) + 1):
            colors[v] = _CLASS_COLOURS[(v - 2) % len(_CLASS_COLOURS)]
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


# --------------------------------------------------------------------------- Qt pickers


def _disconnect_layer_events(viewer, callback) -> None:
    events = viewer.layers.events
    for ev in (events.inserted, events.removed, events.moved):
        ev.disconnect(callback)


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of one kind, kept up to date."""

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer,
        kind: str = "image",
        *,
        none_text: str | None = None,
        predicate: Callable[[Any], bool] | None = None,
        parent=None,
    ):
        super().__init__(parent)
        self._viewer = viewer
        self._kind = kind
        self._none_text = none_text
        self._predicate = predicate
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self.refresh)
        self.currentIndexChanged.connect(lambda _i: self.layer_changed.emit(self.value))
        self.refresh()

    def _candidates(self) -> list:
        out = []
        for layer in self._viewer.layers:
            if layer_type_name(layer).lower() != self._kind:
                continue
            if self._predicate is not None and not self._predicate(layer):
                continue
            out.append(layer)
        return out

    def refresh(self, event=None) -> None:
        try:
            current = self.currentText()
        except RuntimeError:  # the Qt object was deleted with its widget
            _disconnect_layer_events(self._viewer, self.refresh)
            return
        self.blockSignals(True)
        try:
            self.clear()
            if self._none_text is not None:
                self.addItem(self._none_text)
            for layer in self._candidates():
                self.addItem(layer.name)
                layer.events.name.disconnect(self.refresh)
                layer.events.name.connect(self.refresh)
            idx = self.findText(current)
            if idx >= 0:
                self.setCurrentIndex(idx)
        finally:
            self.blockSignals(False)
        if self.currentText() != current:
            self.layer_changed.emit(self.value)

    @property
    def value(self):
        name = self.currentText()
        if not name or name == self._none_text or name not in self._viewer.layers:
            return None
        return self._viewer.layers[name]

    def set_value(self, layer_or_name) -> None:
        name = getattr(layer_or_name, "name", layer_or_name)
        idx = self.findText(str(name))
        if idx < 0:
            raise ValueError(f"no {self._kind} layer named {name!r}")
        self.setCurrentIndex(idx)


class LayerChecklist(QListWidget):
    """Checkable list of image layers (one checked layer per input channel)."""

    changed = Signal()

    def __init__(self, viewer, kind: str = "image", parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._kind = kind
        self.setMaximumHeight(90)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self.refresh)
        self.itemChanged.connect(lambda _i: self.changed.emit())
        self.refresh()

    def refresh(self, event=None) -> None:
        try:
            checked = set(self.checked_names())
        except RuntimeError:  # the Qt object was deleted with its widget
            _disconnect_layer_events(self._viewer, self.refresh)
            return
        first = self.count() == 0
        self.blockSignals(True)
        try:
            self.clear()
            for layer in self._viewer.layers:
                if layer_type_name(layer).lower() != self._kind:
                    continue
                if layer.metadata.get(ROLE_KEY) in DERIVED_ROLES:
                    continue  # our own outputs are not inputs
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                on = layer.name in checked
                item.setCheckState(Qt.Checked if on else Qt.Unchecked)
                self.addItem(item)
            if (first or not checked) and self.count() and not self.checked_names():
                self.item(0).setCheckState(Qt.Checked)
        finally:
            self.blockSignals(False)
        self.changed.emit()

    def checked_names(self) -> list[str]:
        return [
            self.item(i).text()
            for i in range(self.count())
            if self.item(i).checkState() == Qt.Checked
        ]

    def set_checked(self, names: Sequence[str]) -> None:
        names = [getattr(n, "name", n) for n in names]
        missing = [n for n in names if not self.findItems(n, Qt.MatchExactly)]
        if missing:
            raise ValueError(f"no {self._kind} layer(s) named {missing}")
        for i in range(self.count()):
            item = self.item(i)
            item.setCheckState(Qt.Checked if item.text() in names else Qt.Unchecked)

    def layers(self) -> list:
        return [self._viewer.layers[n] for n in self.checked_names() if n in self._viewer.layers]


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
        return super().event(event)

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        QTimer.singleShot(0, self._stop_if_gone)

    def _stop_if_gone(self) -> None:
        if self.runner.running and widget_gone(self):
            self.runner.abort()

    def closeEvent(self, event) -> None:
        self.runner.abort()
        super().closeEvent(event)


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


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
