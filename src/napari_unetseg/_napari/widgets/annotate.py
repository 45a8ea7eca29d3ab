"""Annotate sparse slices: create annotation layers, mark slices complete, watch the counts.

Annotation layer values: 0 = not annotated (ignored by training), 1 = background,
2.. = foreground classes (or object ids for an instance layer). A user paints a few
slices with the classes, then presses "Mark slice complete" to declare every unpainted
voxel of the viewed slice (of a 2D image: the whole image) background.

The widget acts only on annotation layers: those it made, and layers the user picked as
annotation in its Layer list. It never writes into a hidden layer.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
)

from ._common import (
    CLASSES_KEY,
    ROLE_KEY,
    TASK_KEY,
    annotation_colormap,
    current_slice,
    geometry_kwargs,
    spatial_shape,
)
from ._dock import ScrollingDock
from .annotate_summary import MARK_SLICE_KEY, format_summary, keys_text, next_step
from .autosave import AnnotationAutosave
from .orientation import cursor_text, watch_viewer
from .pickers import LayerCombo, is_annotation
from .simulate import SimulateBox

KINDS = {"classes (semantic)": "semantic", "objects (instances)": "instances"}


def _notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


class AnnotateWidget(ScrollingDock):
    """Dock widget for sparse annotation.

    Public methods mirror the buttons so scripts and tests can drive it:
    :meth:`new_annotation_layer`, :meth:`mark_slice_complete`, :meth:`simulate`,
    :meth:`update_summary`, :meth:`select_class`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._watched: Any = None
        self._view_key: tuple | None = None
        self.summary: dict | None = None
        layout = self.body

        # --- image and classes
        box = QGroupBox("New annotation layer")
        form = QFormLayout(box)
        self.image_combo = LayerCombo(self.viewer, "image")
        form.addRow("Image", self.image_combo)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(list(KINDS))
        self.kind_combo.setToolTip(
            "classes: paint each class in its own value; objects: paint every object with "
            "a new id (napari's new label, key M)"
        )
        form.addRow("Annotate", self.kind_combo)
        self.class_list = QListWidget()
        self.class_list.setMaximumHeight(110)
        self.class_list.setEditTriggers(
            QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
        )
        self.class_list.setToolTip("Double-click a name to rename it; keys 1-9 pick a class")
        for name in ("background", "foreground"):
            self._append_class(name)
        self.class_list.itemChanged.connect(self._classes_edited)
        self.class_list.currentRowChanged.connect(self._select_paint_label)
        form.addRow("Classes", self.class_list)
        self.keys_label = QLabel("")
        self.keys_label.setWordWrap(True)
        form.addRow(self.keys_label)
        row = QHBoxLayout()
        self.add_class_btn = QPushButton("Add class")
        self.remove_class_btn = QPushButton("Remove class")
        self.add_class_btn.clicked.connect(lambda: self.add_class())
        self.remove_class_btn.clicked.connect(self.remove_class)
        row.addWidget(self.add_class_btn)
        row.addWidget(self.remove_class_btn)
        form.addRow(row)
        self.new_btn = QPushButton("New annotation layer")
        self.new_btn.setToolTip("Empty labels layer with the image's shape, scale and geometry")
        self.new_btn.clicked.connect(lambda: self._run(self.new_annotation_layer))
        form.addRow(self.new_btn)
        layout.addWidget(box)

        # --- working on an annotation layer
        box = QGroupBox("Annotation layer")
        form = QFormLayout(box)
        self.annotation_combo = LayerCombo(self.viewer, "labels", prefer=is_annotation)
        self.annotation_combo.setToolTip("Picking a layer here makes it an annotation layer")
        self.annotation_combo.layer_changed.connect(self._watch_layer)
        self.annotation_combo.activated.connect(self._picked_by_hand)
        form.addRow("Layer", self.annotation_combo)
        self.mark_btn = QPushButton(f"Mark slice complete ({MARK_SLICE_KEY})")
        self.mark_btn.setToolTip(
            "Every unpainted voxel of the slice on screen (2D image: of the image) becomes "
            "background (undo: Ctrl+Z)"
        )
        self.mark_btn.clicked.connect(lambda: self._run(self.mark_slice_complete))
        form.addRow(self.mark_btn)
        self.summary_label = QLabel("no annotation layer")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow(self.summary_label)
        self.cursor_label = QLabel("")
        self.cursor_label.setToolTip("Cursor position in the scan's RAS millimetres")
        form.addRow(self.cursor_label)
        layout.addWidget(box)

        # --- simulate from a dense reference
        self.simulate_box = SimulateBox(self.viewer, self)
        layout.addWidget(self.simulate_box)
        for name in ("truth_combo", "fraction_spin", "axes_edit", "mode_combo", "seed_spin"):
            setattr(self, name, getattr(self.simulate_box, name))
        self.instances_check = self.simulate_box.instances_check
        self.simulate_btn = self.simulate_box.simulate_btn
        layout.addStretch(1)

        # debounced summary refresh
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(250)
        self._summary_timer.timeout.connect(self.update_summary)

        self.autosave = AnnotationAutosave(self.viewer, self)  # every annotation layer
        self.viewer.bind_key(MARK_SLICE_KEY, self._on_key, overwrite=True)
        watch_viewer(self.viewer)
        self.viewer.cursor.events.position.connect(self._show_cursor)
        self.viewer.layers.events.inserted.connect(self._update_next_step)
        self.viewer.layers.events.removed.connect(self._update_next_step)
        self._watch_layer(self.annotation_combo.value)
        self._update_keys_label()
        self._update_next_step()

    # ------------------------------------------------------------------ classes

    def _append_class(self, name: str) -> None:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemIsEditable)
        self.class_list.addItem(item)

    def class_names(self) -> list[str]:
        """All class names, background first (value k+1 in the annotation = name k)."""
        return [self.class_list.item(i).text().strip() for i in range(self.class_list.count())]

    def set_class_names(self, names: list[str]) -> None:
        """Replace the classes; ``names`` starts with the background."""
        if len(names) < 2:
            raise ValueError("give the background and at least one foreground class")
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for n in names:
            self._append_class(n)
        self.class_list.blockSignals(False)
        self._classes_edited()

    def add_class(self, name: str | None = None) -> None:
        n = self.class_list.count()
        self._append_class(name or f"class {n}")
        self._classes_edited()

    def remove_class(self) -> None:
        if self.class_list.count() <= 2:
            _notify_error("keep the background and at least one class")
            return
        row = self.class_list.currentRow()
        if row <= 0:
            row = self.class_list.count() - 1
        self.class_list.takeItem(row)
        self._classes_edited()

    def select_class(self, value: int) -> None:
        """Paint with annotation value ``value`` (1 = background, 2.. = classes); what
        keys 1-9 do on an annotation layer."""
        layer = self._watched
        if layer is not None and layer.metadata.get(TASK_KEY) == "instances":
            layer.selected_label = value
            return
        if 1 <= value <= self.class_list.count():
            self.class_list.setCurrentRow(value - 1)

    def _classes_edited(self, *_):
        layer = self.annotation_combo.value
        if layer is not None and is_annotation(layer):
            self._apply_classes(layer)
            self._summary_timer.start()
        self._update_keys_label()

    def _apply_classes(self, layer) -> None:
        names = self.class_names()
        if layer.metadata.get(TASK_KEY) != "instances":
            layer.metadata[CLASSES_KEY] = names[1:]
            layer.colormap = annotation_colormap(len(names))

    def _select_paint_label(self, row: int) -> None:
        layer = self.annotation_combo.value
        if layer is not None and row >= 0 and layer.metadata.get(TASK_KEY) != "instances":
            layer.selected_label = row + 1

    def _update_keys_label(self) -> None:
        layer = self._watched
        instances = layer is not None and layer.metadata.get(TASK_KEY) == "instances"
        self.keys_label.setText(keys_text(self.class_names(), instances))

    # ------------------------------------------------------------------ actions

    def new_annotation_layer(self, image=None, kind: str | None = None):
        """Add an empty annotation layer (zeros) with ``image``'s spatial shape, scale,
        translation and VolumeMeta. ``kind``: "semantic" (classes) or "instances"
        (objects; default: the widget's choice). Returns the layer."""
        image = image if image is not None else self.image_combo.value
        if image is None:
            raise ValueError("open an image first (File > Open, or File > Open Sample)")
        kind = kind or KINDS[self.kind_combo.currentText()]
        instances = kind == "instances"
        names = ["background", "object"] if instances else self.class_names()
        data = np.zeros(spatial_shape(image), dtype=np.uint16)
        kwargs = geometry_kwargs(
            image, **{ROLE_KEY: "annotation", CLASSES_KEY: names[1:], TASK_KEY: kind}
        )
        suffix = "objects" if instances else "annotations"
        layer = self.viewer.add_labels(
            data,
            name=f"{image.name} {suffix}",
            colormap=annotation_colormap(len(names), instances=instances),
            **kwargs,
        )
        layer.selected_label = 2
        layer.mode = "paint"
        self.annotation_combo.set_value(layer, chosen=False)
        return layer

    def use_as_annotation(self, layer) -> None:
        """Mark a labels layer the user picked as an annotation layer."""
        layer.metadata[ROLE_KEY] = "annotation"

    def mark_slice_complete(self, layer=None) -> int:
        """Fill the unpainted voxels of the slice on screen (a 2D image: the whole image)
        with background, through ``core.annotations.mark_slice_complete``.

        Goes through the layer's edit history, so Ctrl+Z undoes it like a paint stroke.
        Returns the number of voxels changed.
        """
        from ...core.annotations import mark_slice_complete

        layer = layer if layer is not None else self.annotation_combo.value
        if layer is None:
            raise ValueError("make an annotation layer first (New annotation layer)")
        if not is_annotation(layer):
            raise ValueError(
                f"{layer.name!r} is not an annotation layer: make one with New annotation "
                "layer, or pick this layer in the Layer list to annotate it"
            )
        if not layer.visible:
            raise ValueError(
                f"{layer.name!r} is hidden: show it (eye icon in the layer list) before "
                "marking slices; nothing was changed"
            )
        if layer.ndim == 2:
            axis, index = None, 0
            plane = np.array(layer.data)
        else:
            axis, index = current_slice(self.viewer, layer)
            sl: list[slice | int] = [slice(None)] * layer.ndim
            sl[axis] = index
            plane = np.array(layer.data[tuple(sl)])
        marked = mark_slice_complete(plane[None].copy(), 0, 0)[0]
        hits = np.nonzero(marked != plane)
        if hits[0].size == 0:
            return 0
        full = list(hits)
        if axis is not None:
            full.insert(axis, np.full(hits[0].shape, index, dtype=hits[0].dtype))
        with layer.block_history():
            layer.data_setitem(tuple(full), marked[hits])
        self._summary_timer.start()
        return int(hits[0].size)

    def simulate(self, truth=None):
        """Sparse annotation layer from a dense labels layer (core ``sparsify``)."""
        return self.simulate_box.simulate(truth)

    def update_summary(self) -> dict | None:
        """Recompute the annotation counts shown under the layer picker."""
        from ...core.annotations import annotation_summary

        layer = self.annotation_combo.value
        if layer is None:
            self.summary = None
            self.summary_label.setText("no annotation layer")
            self._update_next_step()
            return None
        instances = layer.metadata.get(TASK_KEY) == "instances"
        names = None if instances else (layer.metadata.get(CLASSES_KEY) or self.class_names()[1:])
        try:
            summary = annotation_summary(
                np.asarray(layer.data), class_names=names, instances=instances
            )
        except Exception as exc:  # shown, not raised: this runs from a timer
            self.summary_label.setText(f"cannot summarise {layer.name!r}: {exc}")
            return None
        self.summary = summary
        self.summary_label.setText(format_summary(summary, layer.ndim))
        self._update_next_step()
        return summary

    # ------------------------------------------------------------------ Qt glue

    def _picked_by_hand(self, _index: int) -> None:
        layer = self.annotation_combo.value
        if layer is not None:
            self.use_as_annotation(layer)
            self._watch_layer(layer)

    def _watch_layer(self, layer) -> None:
        old = self._watched
        if old is not None:
            for ev in (old.events.paint, old.events.data, old.events.set_data):
                ev.disconnect(self._on_layer_event)
            old.events.selected_label.disconnect(self._on_selected_label)
        self._watched = layer
        if layer is not None:
            for ev in (layer.events.paint, layer.events.data, layer.events.set_data):
                ev.connect(self._on_layer_event)
            layer.events.selected_label.connect(self._on_selected_label)
            if is_annotation(layer):
                self.autosave.watch(layer)
                for k in range(1, 10):
                    layer.bind_key(str(k), self._key_handler(k), overwrite=True)
            names = layer.metadata.get(CLASSES_KEY)
            if names and layer.metadata.get(TASK_KEY) != "instances":
                self.class_list.blockSignals(True)
                self.class_list.clear()
                for n in ["background", *names]:
                    self._append_class(n)
                self.class_list.blockSignals(False)
        self._update_keys_label()
        self._update_next_step()
        self._summary_timer.start()

    def _key_handler(self, k: int):
        def handler(layer):
            self.select_class(k)

        handler.__doc__ = f"napari-unetseg: paint annotation value {k}"
        return handler

    def _on_layer_event(self, event=None) -> None:
        """Recount after painting, and after an undo / redo: napari then only refreshes
        the layer (``set_data``), which slicing does too, so a ``set_data`` counts only
        when the view did not move."""
        if getattr(event, "type", "") == "set_data":
            dims = self.viewer.dims
            key = (tuple(dims.point), dims.ndisplay, tuple(dims.order))
            moved = key != self._view_key
            self._view_key = key
            if moved:
                return
        self._summary_timer.start()

    def _on_selected_label(self, event=None) -> None:
        """Instance layers: colour new object ids as napari's default Labels colouring."""
        layer = self._watched
        if layer is None or layer.metadata.get(TASK_KEY) != "instances":
            return
        value = int(layer.selected_label)
        if value not in layer.colormap.color_dict:
            layer.colormap = annotation_colormap(value, instances=True)

    def _show_cursor(self, *_) -> None:
        self.cursor_label.setText(cursor_text(self.viewer))

    def _update_next_step(self, *_) -> None:
        try:
            has_image = any(type(la).__name__ == "Image" for la in self.viewer.layers)
            layer = self.annotation_combo.value
            self.set_next_step(next_step(has_image, layer is not None, self.summary))
        except RuntimeError:  # deleted with its dock
            pass

    def _run(self, fn, *args) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            _notify_error(str(exc))
            return None

    def _on_key(self, viewer=None) -> None:
        self._run(self.mark_slice_complete)

    def closeEvent(self, event) -> None:
        with contextlib.suppress(KeyError, ValueError):  # already unbound
            self.viewer.bind_key(MARK_SLICE_KEY, None)
        with contextlib.suppress(TypeError, ValueError, RuntimeError):  # not connected
            self.viewer.cursor.events.position.disconnect(self._show_cursor)
        super().closeEvent(event)
