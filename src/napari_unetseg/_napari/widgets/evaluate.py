"""Compare a prediction labels layer with a reference labels layer: a table of metrics that
can be copied to the clipboard or saved as CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._common import CLASSES_KEY, TASK_KEY, LayerCombo, notify_error, notify_info

COLUMNS = ["class", "dice", "iou", "sensitivity", "specificity", "precision", "recall", "f1"]


class EvaluateWidget(QWidget):
    """Dock widget: prediction vs reference -> Dice, IoU, sensitivity, specificity per
    class; precision, recall and F1 of matched objects for instance layers.

    Scriptable API: :meth:`compute` (returns the rows), :meth:`as_text`,
    :meth:`copy_to_clipboard`, :meth:`save_csv`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.rows: list[dict] = []

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.pred_combo = LayerCombo(self.viewer, "labels")
        self.pred_combo.layer_changed.connect(self._pred_changed)
        form.addRow("Prediction", self.pred_combo)
        self.ref_combo = LayerCombo(self.viewer, "labels")
        form.addRow("Reference", self.ref_combo)
        self.instances_check = QCheckBox("layers hold object ids (instance metrics)")
        form.addRow(self.instances_check)
        self.iou_spin = QDoubleSpinBox()
        self.iou_spin.setRange(0.05, 0.95)
        self.iou_spin.setSingleStep(0.05)
        self.iou_spin.setValue(0.5)
        form.addRow("Match at IoU ≥", self.iou_spin)
        layout.addLayout(form)
        self.compute_btn = QPushButton("Compute")
        self.compute_btn.clicked.connect(self._on_compute)
        layout.addWidget(self.compute_btn)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(140)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        self.copy_btn = QPushButton("Copy")
        self.save_btn = QPushButton("Save CSV…")
        self.copy_btn.clicked.connect(self.copy_to_clipboard)
        self.save_btn.clicked.connect(self._save_dialog)
        row.addWidget(self.copy_btn)
        row.addWidget(self.save_btn)
        layout.addLayout(row)
        layout.addStretch(1)
        self._pred_changed(self.pred_combo.value)

    def _pred_changed(self, layer) -> None:
        if layer is not None:
            self.instances_check.setChecked(layer.metadata.get(TASK_KEY) == "instances")

    def compute(self) -> list[dict]:
        """Fill the table; returns one dict per row (keys = :data:`COLUMNS`)."""
        from ...core.metrics import instance_metrics, semantic_metrics

        pred_layer, ref_layer = self.pred_combo.value, self.ref_combo.value
        if pred_layer is None or ref_layer is None:
            raise ValueError("choose a prediction and a reference labels layer")
        if pred_layer is ref_layer:
            raise ValueError("choose two different layers to compare")
        pred = np.asarray(pred_layer.data)
        ref = np.asarray(ref_layer.data)
        if pred.shape != ref.shape:
            raise ValueError(
                f"{pred_layer.name!r} has shape {pred.shape} but {ref_layer.name!r} has "
                f"{ref.shape}; compare layers of the same volume"
            )
        rows: list[dict] = []
        if self.instances_check.isChecked():
            fg = semantic_metrics(
                (pred > 0).astype(np.uint8),
                (ref > 0).astype(np.uint8),
                class_names=["foreground"],
            )
            inst = instance_metrics(pred, ref, iou_threshold=float(self.iou_spin.value()))
            for name, m in fg.items():
                rows.append(
                    {
                        "class": f"{name} (objects: {inst['n_pred']} found, "
                        f"{inst['n_true']} true)",
                        **_semantic_values(m),
                        "precision": inst["precision"],
                        "recall": inst["recall"],
                        "f1": inst["f1"],
                    }
                )
        else:
            names = pred_layer.metadata.get(CLASSES_KEY) or ref_layer.metadata.get(CLASSES_KEY)
            labels = sorted(set(np.unique(pred).tolist()) | set(np.unique(ref).tolist()))
            classes = [int(v) for v in labels if v > 0]
            class_names = None
            if names and classes and max(classes) <= len(names):
                class_names = [names[c - 1] for c in classes]
            res = semantic_metrics(pred, ref, classes=classes or None, class_names=class_names)
            for name, m in res.items():
                rows.append({"class": str(name), **_semantic_values(m)})
        self.rows = rows
        self._fill_table(rows)
        return rows

    def _fill_table(self, rows: list[dict]) -> None:
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(COLUMNS):
                value = row.get(key)
                text = (
                    ""
                    if value is None
                    else (value if isinstance(value, str) else f"{float(value):.4f}")
                )
                self.table.setItem(r, c, QTableWidgetItem(text))

    def as_text(self, delimiter: str = "\t") -> str:
        """The table as delimited text with a header line."""
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow(
                [
                    ""
                    if row.get(k) is None
                    else row[k]
                    if isinstance(row[k], str)
                    else f"{float(row[k]):.6g}"
                    for k in COLUMNS
                ]
            )
        return buf.getvalue()

    def copy_to_clipboard(self) -> str:
        text = self.as_text("\t")
        QApplication.clipboard().setText(text)
        return text

    def save_csv(self, path) -> Path:
        if not self.rows:
            raise ValueError("compute the metrics first")
        path = Path(path)
        path.write_text(self.as_text(","))
        notify_info(f"metrics saved to {path}")
        return path

    def _on_compute(self) -> None:
        try:
            self.compute()
        except Exception as exc:
            notify_error(str(exc))

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            try:
                self.save_csv(path)
            except Exception as exc:
                notify_error(str(exc))


def _semantic_values(m: dict) -> dict:
    return {k: m.get(k) for k in ("dice", "iou", "sensitivity", "specificity")}
