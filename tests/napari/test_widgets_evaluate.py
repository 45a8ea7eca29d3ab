"""Evaluate widget: metrics table for semantic and instance layers, clipboard and CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_unetseg._napari.widgets.evaluate import COLUMNS, EvaluateWidget
from napari_unetseg.core.sample import make_sample

pytestmark = pytest.mark.gui


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_semantic_and_instance_tables(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    _image, semantic, instances = make_sample(shape=(12, 30, 34), seed=5)
    pred = semantic.copy()
    pred[:6][pred[:6] == 2] = 0  # lose half of class 2
    viewer.add_labels(semantic, name="reference", metadata={"unetseg_class_names": ["a", "b"]})
    viewer.add_labels(pred, name="prediction", metadata={"unetseg_class_names": ["a", "b"]})
    kept = instances.copy()
    gone = np.unique(instances[instances > 0])[:2]
    kept[np.isin(kept, gone)] = 0  # two objects missed
    viewer.add_labels(instances, name="objects")
    viewer.add_labels(kept, name="found", metadata={"unetseg_task": "instances"})
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)

    # --- semantic: one row per class with the class names of the layers
    widget.pred_combo.set_value("prediction")
    widget.ref_combo.set_value("reference")
    assert not widget.instances_check.isChecked()
    qtbot.mouseClick(widget.compute_btn, Qt.LeftButton)
    assert widget.table.rowCount() == 2
    assert [widget.table.item(r, 0).text() for r in range(2)] == ["a", "b"]
    rows = {r["class"]: r for r in widget.rows}
    assert rows["a"]["dice"] == pytest.approx(1.0)
    assert rows["b"]["dice"] == pytest.approx(_dice(pred == 2, semantic == 2))
    assert rows["b"]["dice"] < 1.0
    assert rows["b"]["sensitivity"] == pytest.approx((pred == 2).sum() / (semantic == 2).sum())
    # the table fits the dock: no sideways scrolling
    viewer.window._qt_window.resize(1366, 768)
    qtbot.wait(50)
    assert widget.table.horizontalScrollBar().maximum() == 0
    assert widget.table.horizontalHeaderItem(1).toolTip() == "dice"
    dice_col = COLUMNS.index("dice")
    assert float(widget.table.item(1, dice_col).text()) == pytest.approx(
        rows["b"]["dice"], abs=1e-4
    )

    # --- copy and CSV
    text = widget.copy_to_clipboard()
    assert QApplication.clipboard().text() == text
    assert text.splitlines()[0].split("\t") == COLUMNS
    out = widget.save_csv(tmp_path / "metrics.csv")
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == ["a", "b"]
    assert float(table[1]["iou"]) == pytest.approx(rows["b"]["iou"], rel=1e-4)

    # --- instances: picking an instance layer switches to object metrics
    widget.pred_combo.set_value("found")
    assert widget.instances_check.isChecked()
    widget.ref_combo.set_value("objects")
    qtbot.mouseClick(widget.compute_btn, Qt.LeftButton)
    (row,) = widget.rows
    n_true = len(np.unique(instances[instances > 0]))
    assert row["precision"] == pytest.approx(1.0)
    assert row["recall"] == pytest.approx((n_true - 2) / n_true)
    assert row["f1"] == pytest.approx(2 * row["recall"] / (1 + row["recall"]))
    assert widget.table.item(0, COLUMNS.index("f1")).text() != ""

    # --- mismatched shapes are reported, not raised
    viewer.add_labels(np.zeros((3, 4, 5), np.uint8), name="other")
    widget.ref_combo.set_value("other")
    with pytest.raises(ValueError, match="shape"):
        widget.compute()
