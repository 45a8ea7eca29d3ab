"""Compare a prediction labels layer with a reference labels layer: a table of metrics that
can be copied to the clipboard or saved as CSV."""

from __future__ import annotations

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
)

from ._common import CLASSES_KEY, TASK_KEY, notify_error, notify_info
from ._dock import ScrollingDock
from .pickers import LayerCombo, is_prediction, is_reference, task_of

COLUMNS = ["class", "dice", "iou", "sensitivity", "specificity", "precision", "recall", "f1"]
#: Short table headers (the full names are the header tooltips and the CSV header).
HEADERS = ["class", "Dice", "IoU", "Sens", "Spec", "Prec", "Rec", "F1"]


class EvaluateWidget(ScrollingDock):
    """Dock widget: prediction vs reference -> Dice, IoU, sensitivity, specificity per
    class; precision, recall and F1 of matched objects for instance layers.

    Scriptable API: :meth:`compute` (returns the rows), :meth:`as_text`,
    :meth:`copy_to_clipboard`, :meth:`save_csv`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.rows: list[dict] = []

        layout = self.body
        form = QFormLayout()
        self.pred_combo = LayerCombo(self.viewer, "labels", prefer=is_prediction)
        self.pred_combo.layer_changed.connect(self._pred_changed)
        form.addRow("Prediction", self.pred_combo)
        self.ref_combo = LayerCombo(
            self.viewer,
            "labels",
            prefer=self._suits_reference,
            partner=self.pred_combo,
            hidden_ok=True,
        )
        self.ref_combo.setToolTip("Dense ground truth (may be hidden, like the sample's truth)")
        self.pred_combo.partner = self.ref_combo
        self.ref_combo.repick()
        self.pred_combo.layer_changed.connect(self.ref_combo.repick)
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
        self.table.setHorizontalHeaderLabels(HEADERS)
        for c, key in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(c).setToolTip(key)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setMinimumSectionSize(30)
        self.table.verticalHeader().hide()
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
        self.ref_combo.layer_changed.connect(self._update_next_step)
        self._update_next_step()

    def _suits_reference(self, layer) -> bool:
        """Ground truth of the prediction's kind (classes or objects)."""
        return is_reference(layer) and task_of(layer) == task_of(self.pred_combo.value)

    def _pred_changed(self, layer) -> None:
        if layer is not None:
            self.instances_check.setChecked(layer.metadata.get(TASK_KEY) == "instances")
        self._update_next_step()

    def _update_next_step(self, *_) -> None:
        try:
            if self.pred_combo.value is None:
                text = "predict an image in the Predict widget, then Compute"
            elif self.ref_combo.value is None:
                text = "open or choose the reference (ground truth) labels"
            elif not self.rows:
                text = "press Compute"
            else:
                text = "Copy the table or Save CSV"
            self.set_next_step(text)
        except (RuntimeError, AttributeError):  # deleted, or not built yet
            pass

    def compute(self) -> list[dict]:
        """Fill the table; returns one dict per row (keys = :data:`COLUMNS`)."""
        from ...core.evaluation import evaluate, report_rows

        pred_layer, ref_layer = self.pred_combo.value, self.ref_combo.value
        if pred_layer is None or ref_layer is None:
            raise ValueError("choose a prediction and a reference labels layer")
        if pred_layer is ref_layer:
            raise ValueError("choose two different layers to compare")
        pred = np.asarray(pred_layer.data)
        ref = np.asarray(ref_layer.data)
        names = pred_layer.metadata.get(CLASSES_KEY) or ref_layer.metadata.get(CLASSES_KEY)
        report = evaluate(
            pred,
            ref,
            instances=self.instances_check.isChecked(),
            class_names=names,
            iou_threshold=float(self.iou_spin.value()),
        )
        rows = report_rows(report)
        self.rows = rows
        self._fill_table(rows)
        self._update_next_step()
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
                item = QTableWidgetItem(text)
                item.setToolTip(f"{key}: {text}")
                self.table.setItem(r, c, item)

    def as_text(self, delimiter: str = "\t") -> str:
        """The table as delimited text with a header line."""
        from ...core.evaluation import format_rows

        return format_rows(self.rows, delimiter=delimiter, columns=COLUMNS)

    def copy_to_clipboard(self) -> str:
        text = self.as_text("\t")
        QApplication.clipboard().setText(text)
        return text

    def save_csv(self, path) -> Path:
        if not self.rows:
            raise ValueError("compute the metrics first")
        from ...core.io.atomic import write_text_atomic

        path = Path(path)
        write_text_atomic(path, self.as_text(","), overwrite=True)
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
