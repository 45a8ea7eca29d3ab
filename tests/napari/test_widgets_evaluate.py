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
    # only the columns the rows fill (no object scores for classes)
    assert widget.columns == ["class", "dice", "iou", "sensitivity", "specificity"]
    assert set(widget.columns) <= set(COLUMNS)
    dice_col = widget.columns.index("dice")
    assert float(widget.table.item(1, dice_col).text()) == pytest.approx(
        rows["b"]["dice"], abs=1e-3
    )

    # --- copy and CSV
    text = widget.copy_to_clipboard()
    assert QApplication.clipboard().text() == text
    assert text.splitlines()[0].split("\t") == widget.columns
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
    assert widget.table.item(0, widget.columns.index("f1")).text() != ""

    # --- mismatched shapes are reported, not raised
    viewer.add_labels(np.zeros((3, 4, 5), np.uint8), name="other")
    widget.ref_combo.set_value("other")
    with pytest.raises(ValueError, match="shape"):
        widget.compute()


def test_per_case_table_with_mean_std_and_regions(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    expected = []
    for k in range(3):
        _image, truth, _inst = make_sample(shape=(10, 20, 24), seed=10 + k)
        pred = truth.copy()
        pred[: 2 + k][pred[: 2 + k] == 2] = 0  # each case loses a different part of class 2
        meta = {"unetseg_class_names": ["a", "b"]}
        ref_layer = viewer.add_labels(truth, name=f"truth{k}", metadata=meta)
        pred_layer = viewer.add_labels(
            pred, name=f"pred{k}", metadata={**meta, "unetseg_role": "prediction"}
        )
        widget.add_pair(pred_layer, ref_layer)
        expected.append(_dice(pred == 2, truth == 2))
    assert widget.case_list.count() == 3
    widget.regions_edit.setText("all=1,2")
    qtbot.mouseClick(widget.compute_btn, Qt.LeftButton)
    assert widget.columns[0] == "case"
    rows = widget.rows
    per_case = {(r["case"], r["class"]): r for r in rows}
    for k in range(3):
        assert per_case[(f"pred{k}", "b")]["dice"] == pytest.approx(expected[k])
        assert per_case[(f"pred{k}", "a")]["dice"] == pytest.approx(1.0)
        assert (f"pred{k}", "region all") in per_case
    assert per_case[("mean", "b")]["dice"] == pytest.approx(np.mean(expected))
    assert per_case[("std", "b")]["dice"] == pytest.approx(np.std(expected))
    assert widget.table.rowCount() == len(rows)
    assert widget.table.item(len(rows) - 1, 0).text() == "std"

    # --- Save CSV (atomic; case column first)
    out = widget.save_csv(tmp_path / "cases.csv")
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:2] == ["case", "class"]
    assert [r["case"] for r in table].count("mean") == 3  # a, b, region all
    assert not list(tmp_path.glob("*.tmp*"))

    # --- a bad region is named; removing a layer drops its case
    widget.regions_edit.setText("WT")
    with pytest.raises(ValueError, match="WT"):
        widget.compute()
    viewer.layers.remove("pred0")
    assert widget.case_list.count() == 2
