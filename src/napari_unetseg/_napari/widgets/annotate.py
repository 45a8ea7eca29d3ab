"""Annotate sparse slices: create annotation layers, mark slices complete, watch the counts.

Annotation layer values: 0 = not annotated (ignored by training), 1 = background,
2.. = foreground classes (or object ids for the instance task). A user paints a few
slices with the classes, then presses "Mark slice complete" to declare every unpainted
voxel of the viewed slice background.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    CLASSES_KEY,
    ROLE_KEY,
    TASK_KEY,
    LayerCombo,
    annotation_colormap,
    current_slice,
    geometry_kwargs,
    spatial_shape,
)

MARK_SLICE_KEY = "Shift-C"


def _notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


class AnnotateWidget(QWidget):
    """Dock widget for sparse annotation.

    Public methods mirror the buttons so scripts and tests can drive it:
    :meth:`new_annotation_layer`, :meth:`mark_slice_complete`, :meth:`simulate`,
    :meth:`update_summary`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._watched: Any = None
        self._history_seen: tuple[int, int] | None = None
        self.summary: dict | None = None

        layout = QVBoxLayout(self)

        # --- image and classes
        box = QGroupBox("New annotation layer")
        form = QFormLayout(box)
        self.image_combo = LayerCombo(self.viewer, "image")
        form.addRow("Image", self.image_combo)
        self.class_list = QListWidget()
        self.class_list.setMaximumHeight(110)
        self.class_list.setEditTriggers(
            QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
        )
        for name in ("background", "foreground"):
            self._append_class(name)
        self.class_list.itemChanged.connect(self._classes_edited)
        self.class_list.currentRowChanged.connect(self._select_paint_label)
        form.addRow("Classes", self.class_list)
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
        self.new_btn.clicked.connect(self._on_new_clicked)
        form.addRow(self.new_btn)
        layout.addWidget(box)

        # --- working on an annotation layer
        box = QGroupBox("Annotation layer")
        form = QFormLayout(box)
        self.annotation_combo = LayerCombo(self.viewer, "labels")
        self.annotation_combo.layer_changed.connect(self._watch_layer)
        form.addRow("Layer", self.annotation_combo)
        self.mark_btn = QPushButton(f"Mark slice complete ({MARK_SLICE_KEY})")
        self.mark_btn.setToolTip(
            "Every unpainted voxel of the slice on screen becomes background (undo: Ctrl+Z)"
        )
        self.mark_btn.clicked.connect(self._on_mark_clicked)
        form.addRow(self.mark_btn)
        self.summary_label = QLabel("no annotation layer")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow(self.summary_label)
        layout.addWidget(box)

        # --- simulate from a dense reference
        box = QGroupBox("Simulate from ground truth")
        form = QFormLayout(box)
        self.truth_combo = LayerCombo(self.viewer, "labels")
        form.addRow("Dense labels", self.truth_combo)
        self.fraction_spin = QDoubleSpinBox()
        self.fraction_spin.setRange(0.001, 1.0)
        self.fraction_spin.setDecimals(3)
        self.fraction_spin.setSingleStep(0.05)
        self.fraction_spin.setValue(0.1)
        form.addRow("Fraction of slices", self.fraction_spin)
        self.axes_edit = QLineEdit("zyx")
        self.axes_edit.setToolTip("Axes along which slices are kept: any of z, y, x")
        form.addRow("Axes", self.axes_edit)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["random", "even"])
        form.addRow("Spacing", self.mode_combo)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed_spin)
        self.instances_check = QCheckBox("reference holds object ids (instances)")
        form.addRow(self.instances_check)
        self.simulate_btn = QPushButton("Simulate sparse annotation")
        self.simulate_btn.clicked.connect(self._on_simulate_clicked)
        form.addRow(self.simulate_btn)
        layout.addWidget(box)
        layout.addStretch(1)

        # debounced summary refresh
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(250)
        self._summary_timer.timeout.connect(self.update_summary)

        self.viewer.bind_key(MARK_SLICE_KEY, self._on_key, overwrite=True)
        self._watch_layer(self.annotation_combo.value)

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

    def _classes_edited(self, *_):
        layer = self.annotation_combo.value
        if layer is not None and layer.metadata.get(ROLE_KEY) == "annotation":
            self._apply_classes(layer)
            self._summary_timer.start()

    def _apply_classes(self, layer) -> None:
        names = self.class_names()
        layer.metadata[CLASSES_KEY] = names[1:]
        if layer.metadata.get(TASK_KEY) != "instances":
            layer.colormap = annotation_colormap(len(names))

    def _select_paint_label(self, row: int) -> None:
        layer = self.annotation_combo.value
        if layer is not None and row >= 0:
            layer.selected_label = row + 1

    # ------------------------------------------------------------------ actions

    def new_annotation_layer(self, image=None):
        """Add an empty annotation layer (uint16 zeros) with ``image``'s spatial shape,
        scale, translation and VolumeMeta. Returns the layer."""
        image = image if image is not None else self.image_combo.value
        if image is None:
            raise ValueError("open or choose an image layer first")
        names = self.class_names()
        data = np.zeros(spatial_shape(image), dtype=np.uint16)
        kwargs = geometry_kwargs(
            image, **{ROLE_KEY: "annotation", CLASSES_KEY: names[1:], TASK_KEY: "semantic"}
        )
        layer = self.viewer.add_labels(
            data,
            name=f"{image.name} annotations",
            colormap=annotation_colormap(len(names)),
            **kwargs,
        )
        layer.selected_label = 2
        layer.mode = "paint"
        self.annotation_combo.set_value(layer)
        return layer

    def mark_slice_complete(self, layer=None) -> int:
        """Fill the unpainted voxels of the slice on screen with background (1).

        Goes through the layer's edit history, so Ctrl+Z undoes it like a paint stroke.
        Returns the number of voxels changed.
        """
        layer = layer if layer is not None else self.annotation_combo.value
        if layer is None:
            raise ValueError("choose an annotation layer first")
        axis, index = current_slice(self.viewer, layer)
        sl = [slice(None)] * layer.ndim
        sl[axis] = index
        plane = np.asarray(layer.data[tuple(sl)])
        hits = np.nonzero(plane == 0)
        if hits[0].size == 0:
            return 0
        full = list(hits)
        full.insert(axis, np.full(hits[0].shape, index, dtype=hits[0].dtype))
        with layer.block_history():
            layer.data_setitem(tuple(full), 1)
        self._summary_timer.start()
        return int(hits[0].size)

    def simulate(self, truth=None):
        """Sparse annotation layer from a dense labels layer (core ``sparsify``)."""
        from ...core.annotations import sparsify

        truth = truth if truth is not None else self.truth_combo.value
        if truth is None:
            raise ValueError("choose a dense labels layer (the ground truth) first")
        dense = np.asarray(truth.data)
        ann = sparsify(
            dense,
            fraction=float(self.fraction_spin.value()),
            axes=self.axes_edit.text().strip() or "zyx",
            mode=self.mode_combo.currentText(),
            seed=int(self.seed_spin.value()),
        )
        instances = self.instances_check.isChecked()
        max_value = int(ann.max()) if ann.size else 1
        if instances:
            names = ["object"]
        else:
            names = self.class_names()[1:]
            while len(names) < max_value - 1:
                names.append(f"class {len(names) + 1}")
            if len(self.class_names()) - 1 < len(names):
                self.set_class_names(["background", *names])
        kwargs = geometry_kwargs(
            truth,
            **{
                ROLE_KEY: "annotation",
                CLASSES_KEY: names,
                TASK_KEY: "instances" if instances else "semantic",
            },
        )
        layer = self.viewer.add_labels(
            ann.astype(np.uint16 if max_value > 255 else np.uint8, copy=False),
            name=f"{truth.name} sparse",
            colormap=annotation_colormap(max(max_value, len(names) + 1), instances),
            **kwargs,
        )
        self.annotation_combo.set_value(layer)
        return layer

    def update_summary(self) -> dict | None:
        """Recompute the annotation counts shown under the layer picker."""
        from ...core.annotations import annotation_summary

        layer = self.annotation_combo.value
        if layer is None:
            self.summary = None
            self.summary_label.setText("no annotation layer")
            return None
        names = layer.metadata.get(CLASSES_KEY) or self.class_names()[1:]
        if layer.metadata.get(TASK_KEY) == "instances":
            names = None
        try:
            summary = annotation_summary(np.asarray(layer.data), class_names=names)
        except Exception as exc:  # shown, not raised: this runs from a timer
            self.summary_label.setText(f"cannot summarise {layer.name!r}: {exc}")
            return None
        self.summary = summary
        self.summary_label.setText(_format_summary(summary))
        return summary

    # ------------------------------------------------------------------ Qt glue

    def _watch_layer(self, layer) -> None:
        old = self._watched
        if old is not None:
            for ev in (old.events.paint, old.events.data):
                ev.disconnect(self._schedule_summary)
            old.events.set_data.disconnect(self._maybe_undone)
        self._watched = layer
        self._history_seen = _history_lengths(layer)
        if layer is not None:
            layer.events.paint.connect(self._schedule_summary)
            layer.events.data.connect(self._schedule_summary)
            # undo / redo change the data in place and only refresh the layer
            layer.events.set_data.connect(self._maybe_undone)
            names = layer.metadata.get(CLASSES_KEY)
            if names and layer.metadata.get(TASK_KEY) != "instances":
                self.class_list.blockSignals(True)
                self.class_list.clear()
                for n in ["background", *names]:
                    self._append_class(n)
                self.class_list.blockSignals(False)
        self._summary_timer.start()

    def _schedule_summary(self, event=None) -> None:
        self._summary_timer.start()

    def _maybe_undone(self, event=None) -> None:
        """``set_data`` also fires on every slice change: recount only when the layer's
        undo/redo history moved (an undo or redo), which is cheap to check."""
        seen = _history_lengths(self._watched)
        if seen != self._history_seen:
            self._history_seen = seen
            self._summary_timer.start()

    def _run(self, fn, *args) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            _notify_error(str(exc))
            return None

    def _on_new_clicked(self) -> None:
        self._run(self.new_annotation_layer)

    def _on_mark_clicked(self) -> None:
        self._run(self.mark_slice_complete)

    def _on_simulate_clicked(self) -> None:
        self._run(self.simulate)

    def _on_key(self, viewer=None) -> None:
        self._run(self.mark_slice_complete)

    def closeEvent(self, event) -> None:
        with contextlib.suppress(KeyError, ValueError):  # already unbound
            self.viewer.bind_key(MARK_SLICE_KEY, None)
        super().closeEvent(event)


def _format_summary(s: dict) -> str:
    slices = s.get("annotated_slices", {})
    parts = ", ".join(f"{k}: {v}" for k, v in slices.items())
    lines = [
        f"annotated slices  {parts}",
        f"annotated voxels  {100.0 * float(s.get('annotated_fraction', 0.0)):.2f} %",
    ]
    per = s.get("voxels_per_class", {})
    if per:
        lines.append("voxels per class  " + ", ".join(f"{k}: {v}" for k, v in per.items()))
    missing = s.get("missing_classes") or []
    if missing:
        lines.append(f"<b>warning:</b> no voxels painted for {', '.join(missing)}")
    return "<br>".join(lines)


def _history_lengths(layer) -> tuple[int, int] | None:
    """Lengths of a Labels layer's undo and redo queues (``None`` if it has none)."""
    undo = getattr(layer, "_undo_history", None)
    redo = getattr(layer, "_redo_history", None)
    if undo is None or redo is None:
        return None
    return len(undo), len(redo)
