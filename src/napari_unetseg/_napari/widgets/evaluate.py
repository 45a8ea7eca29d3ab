"""Compare prediction labels layers with reference labels layers: a table of metrics per
class (and region), per case with mean / std rows for several cases, that can be copied
to the clipboard or saved as CSV. All scores come from ``core.evaluation``."""

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
    QLineEdit,
    QListWidget,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from ._common import CLASSES_KEY, TASK_KEY, notify_error, notify_info, spacing_of
from ._dock import ScrollingDock
from .pickers import LayerCombo, is_input_or_truth, is_prediction, is_reference, task_of

COLUMNS = ["class", "dice", "iou", "sensitivity", "specificity", "precision", "recall", "f1"]
#: Short table headers (the full names are the header tooltips and the CSV header).
SHORT = {
    "case": "case",
    "class": "class",
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sens",
    "specificity": "Spec",
    "precision": "Prec",
    "recall": "Rec",
    "f1": "F1",
}
HEADERS = [SHORT[c] for c in COLUMNS]


class EvaluateWidget(ScrollingDock):
    """Dock widget: prediction vs reference -> Dice, IoU, sensitivity, specificity per
    class (and region); precision, recall and F1 of matched objects for instance layers.
    Pairs added to the case list are scored together: a row per case and class, then
    mean and std rows.

    Scriptable API: :meth:`add_pair`, :meth:`compute` (returns the rows),
    :meth:`as_text`, :meth:`copy_to_clipboard`, :meth:`save_csv`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.rows: list[dict] = []
        self.columns: list[str] = list(COLUMNS)
        self.pairs: list[tuple] = []  # (prediction layer, reference layer)

        layout = self.body
        form = QFormLayout()
        self.pred_combo = LayerCombo(
            self.viewer, "labels", prefer=is_prediction, never_default=is_input_or_truth
        )
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
        self.iou_spin.setToolTip("Objects count as found when they overlap this much")
        form.addRow("Match at IoU ≥", self.iou_spin)
        self.regions_edit = QLineEdit()
        self.regions_edit.setPlaceholderText("e.g. WT=1,2,3; TC=1,3; ET=3")
        self.regions_edit.setToolTip(
            "Optional regions scored as one mask each: NAME=labels; NAME2=labels"
        )
        form.addRow("Regions", self.regions_edit)
        layout.addLayout(form)

        self.case_list = QListWidget()
        self.case_list.setMaximumHeight(90)
        self.case_list.setToolTip("Pairs scored together; empty: the pair chosen above")
        form.addRow("Cases", self.case_list)
        row = QHBoxLayout()
        self.add_pair_btn = QPushButton("Add pair")
        self.remove_pair_btn = QPushButton("Remove")
        self.add_pair_btn.setToolTip("Add the prediction and reference chosen above as a case")
        self.add_pair_btn.clicked.connect(lambda: self._guard(self.add_pair))
        self.remove_pair_btn.clicked.connect(self.remove_selected)
        row.addWidget(self.add_pair_btn)
        row.addWidget(self.remove_pair_btn)
        form.addRow(row)

        self.compute_btn = QPushButton("Compute")
        self.compute_btn.clicked.connect(lambda: self._guard(self.compute))
        layout.addWidget(self.compute_btn)
        self.table = QTableWidget(0, len(COLUMNS))
        self._set_columns(COLUMNS)
        self.table.setMinimumHeight(140)
        self.table.verticalHeader().hide()
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
        self.viewer.layers.events.removed.connect(self._layers_removed)
        self._update_next_step()

    # ------------------------------------------------------------------ pairs

    def add_pair(self, prediction=None, reference=None) -> None:
        """Add a (prediction, reference) case (default: the chosen layers)."""
        pred = prediction if prediction is not None else self.pred_combo.value
        ref = reference if reference is not None else self.ref_combo.value
        if pred is None or ref is None:
            raise ValueError("choose a prediction and a reference labels layer")
        if pred is ref:
            raise ValueError("choose two different layers to compare")
        if any(p is pred for p, _r in self.pairs):
            raise ValueError(f"{pred.name!r} is already in the case list")
        self.pairs.append((pred, ref))
        self._refresh_cases()

    def remove_selected(self) -> None:
        for r in sorted({i.row() for i in self.case_list.selectedIndexes()}, reverse=True):
            del self.pairs[r]
        self._refresh_cases()

    def _refresh_cases(self) -> None:
        self.case_list.clear()
        for pred, ref in self.pairs:
            self.case_list.addItem(f"{pred.name}  vs  {ref.name}")

    def _layers_removed(self, event=None) -> None:
        try:
            alive = set(map(id, self.viewer.layers))
            kept = [(p, r) for p, r in self.pairs if id(p) in alive and id(r) in alive]
            if len(kept) != len(self.pairs):
                self.pairs = kept
                self._refresh_cases()
        except RuntimeError:  # deleted with its dock
            pass

    # ------------------------------------------------------------------ scores

    def _options(self, names) -> dict:
        from ...core.dataset_files import parse_regions

        text = self.regions_edit.text().strip()
        return {
            "instances": self.instances_check.isChecked(),
            "class_names": names,
            "iou_threshold": float(self.iou_spin.value()),
            "regions": parse_regions(text) if text else None,
        }

    def compute(self) -> list[dict]:
        """Fill the table; returns one dict per row (keys = :attr:`columns`)."""
        from ...core.evaluation import evaluate, evaluate_cases, report_rows, used_columns

        pairs = list(self.pairs)
        if not pairs:
            pred_layer, ref_layer = self.pred_combo.value, self.ref_combo.value
            if pred_layer is None or ref_layer is None:
                raise ValueError("choose a prediction and a reference labels layer")
            if pred_layer is ref_layer:
                raise ValueError("choose two different layers to compare")
            pairs = [(pred_layer, ref_layer)]
        first_pred, first_ref = pairs[0]
        names = first_pred.metadata.get(CLASSES_KEY) or first_ref.metadata.get(CLASSES_KEY)
        options = self._options(names)
        if len(self.pairs) > 0:
            cases = [
                (p.name, np.asarray(p.data), np.asarray(r.data), spacing_of(r)) for p, r in pairs
            ]
            per_case, summary, _reports = evaluate_cases(cases, **options)
            rows = per_case + summary
            columns = ["case", *COLUMNS]
        else:
            report = evaluate(np.asarray(first_pred.data), np.asarray(first_ref.data), **options)
            rows = report_rows(report)
            columns = list(COLUMNS)
        self.rows = rows
        shown = set(used_columns(rows)) | {"class"}
        self._set_columns([c for c in columns if c in shown])
        self._fill_table(rows)
        self._update_next_step()
        return rows

    def _set_columns(self, columns: list[str]) -> None:
        self.columns = list(columns)
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels([SHORT[c] for c in columns])
        for c, key in enumerate(columns):
            self.table.horizontalHeaderItem(c).setToolTip(key)
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(30)
        header.setSectionResizeMode(QHeaderView.Stretch)
        for c, key in enumerate(columns):
            if key in ("case", "class"):
                header.setSectionResizeMode(c, QHeaderView.ResizeToContents)

    def _fill_table(self, rows: list[dict]) -> None:
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(self.columns):
                value = row.get(key)
                if value is None or isinstance(value, str):
                    text = tip = value or ""
                else:  # 3 decimals fit the dock; the tooltip, copy and CSV have 4
                    text, tip = f"{float(value):.3f}", f"{float(value):.4f}"
                item = QTableWidgetItem(text)
                item.setToolTip(f"{key}: {tip}")
                self.table.setItem(r, c, item)

    def as_text(self, delimiter: str = "\t") -> str:
        """The table as delimited text with a header line (the table's columns)."""
        from ...core.evaluation import format_rows

        return format_rows(self.rows, delimiter=delimiter, columns=self.columns)

    def copy_to_clipboard(self) -> str:
        text = self.as_text("\t")
        QApplication.clipboard().setText(text)
        return text

    def save_csv(self, path) -> Path:
        """Write the table as CSV (atomically: a reader never sees half a file)."""
        if not self.rows:
            raise ValueError("compute the metrics first")
        from ...core.io.atomic import write_text_atomic

        path = Path(path)
        write_text_atomic(path, self.as_text(","), overwrite=True)
        notify_info(f"metrics saved to {path}")
        return path

    # ------------------------------------------------------------------ Qt glue

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
                text = "press Compute (Add pair to score several cases together)"
            else:
                text = "Copy the table or Save CSV"
            self.set_next_step(text)
        except (RuntimeError, AttributeError):  # deleted, or not built yet
            pass

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            notify_error(str(exc))

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            self._guard(lambda: self.save_csv(path))
