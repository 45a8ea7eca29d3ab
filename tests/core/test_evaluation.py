import math

import numpy as np
import pytest

from napari_unetseg.core.evaluation import (
    evaluate,
    evaluate_cases,
    format_rows,
    report_rows,
    summarize,
)


def _pair():
    truth = np.zeros((6, 10, 10), np.uint8)
    truth[1:5, 2:6, 2:6] = 1
    truth[1:5, 6:9, 6:9] = 3
    pred = truth.copy()
    pred[1, 2:6, 2:6] = 0  # miss one slice of class 1
    return pred, truth


def test_semantic_report_names_classes_and_counts():
    pred, truth = _pair()
    rep = evaluate(pred, truth, class_names=["a", "b", "c"])
    assert list(rep["classes"]) == ["a", "b", "c"]
    a = rep["classes"]["a"]
    assert a["tp"] == 48
    assert a["fn"] == 16
    assert a["fp"] == 0
    assert a["dice"] == pytest.approx(2 * 48 / (2 * 48 + 16))
    assert rep["classes"]["c"]["dice"] == 1.0


def test_regions_score_unions_of_labels():
    pred, truth = _pair()
    rep = evaluate(pred, truth, regions={"WT": [1, 2, 3], "ET": [3]})
    wt = rep["regions"]["WT"]
    assert wt["tp"] == 48 + 36
    assert wt["fn"] == 16
    assert rep["regions"]["ET"]["dice"] == 1.0


def test_hd95_in_physical_units():
    truth = np.zeros((1, 20, 20), np.uint8)
    truth[0, 5:10, 5:10] = 1
    pred = np.roll(truth, 2, axis=2)  # shifted by 2 voxels along x
    rep = evaluate(pred, truth, hd95=True, spacing=(1.0, 1.0, 0.5))
    assert rep["classes"]["class 1"]["hd95"] == pytest.approx(1.0)
    empty = evaluate(np.zeros_like(truth), truth, hd95=True)
    assert math.isnan(empty["classes"]["class 1"]["hd95"])


def test_instance_report_rows_and_text():
    truth = np.zeros((8, 8), np.int32)
    truth[1:3, 1:3] = 1
    truth[5:7, 5:7] = 2
    pred = truth.copy()
    pred[pred == 2] = 0
    rep = evaluate(pred, truth, instances=True)
    assert rep["instances"]["tp"] == 1
    assert rep["instances"]["fn"] == 1
    rows = report_rows(rep)
    assert rows[0]["f1"] == pytest.approx(2 / 3)
    text = format_rows(rows)
    assert "f1" in text.splitlines()[0]
    assert "0.6667" in text


def test_cases_give_per_case_rows_and_mean_std():
    pred, truth = _pair()
    rows, summary, reports = evaluate_cases(
        [("c1", pred, truth, None), ("c2", truth, truth, None)], class_names=["a", "b", "c"]
    )
    assert [r["case"] for r in rows] == ["c1"] * 3 + ["c2"] * 3
    mean_a = next(r for r in summary if r["case"] == "mean" and r["class"] == "a")
    expected = np.mean([reports["c1"]["classes"]["a"]["dice"], 1.0])
    assert mean_a["dice"] == pytest.approx(expected)
    std_a = next(r for r in summary if r["case"] == "std" and r["class"] == "a")
    assert std_a["dice"] > 0
    csv_text = format_rows(rows + summary, delimiter=",")
    assert csv_text.splitlines()[0].startswith("case,class,dice")
    assert len(csv_text.splitlines()) == 1 + len(rows) + len(summary)


def test_summary_skips_undefined_values():
    rows = [
        {"case": "a", "class": "x", "hd95": float("nan")},
        {"case": "b", "class": "x", "hd95": 2.0},
    ]
    mean = summarize(rows)[0]
    assert mean["hd95"] == 2.0


def test_shape_mismatch_is_one_clear_line():
    with pytest.raises(ValueError, match="same scan"):
        evaluate(np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8))
