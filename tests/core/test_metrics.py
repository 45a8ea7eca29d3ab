import numpy as np
import pytest

from napari_unetseg.core.metrics import instance_metrics, metrics_table, semantic_metrics


def _set_counts(pred, truth, k, mask=None):
    """tp/fp/fn/tn from explicit sets of voxel coordinates."""
    coords = list(np.ndindex(pred.shape))
    if mask is not None:
        coords = [c for c in coords if mask[c]]
    p = {c for c in coords if pred[c] == k}
    t = {c for c in coords if truth[c] == k}
    every = set(coords)
    return len(p & t), len(p - t), len(t - p), len(every - p - t)


def test_semantic_metrics_against_set_counts():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(4, 5, 6)).astype(np.uint8)
    truth = rng.integers(0, 4, size=(4, 5, 6)).astype(np.uint8)
    res = semantic_metrics(pred, truth, class_names=["a", "b"])
    assert list(res) == ["a", "b", "class 3"]
    for name, k in (("a", 1), ("b", 2), ("class 3", 3)):
        tp, fp, fn, tn = _set_counts(pred, truth, k)
        r = res[name]
        assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (tp, fp, fn, tn)
        assert r["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert r["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert r["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert r["specificity"] == pytest.approx(tn / (tn + fp))


def test_semantic_metrics_small_hand_example():
    pred = np.array([[1, 1, 0], [0, 2, 2]])
    truth = np.array([[1, 0, 0], [1, 2, 2]])
    res = semantic_metrics(pred, truth)
    # class 1: pred {(0,0),(0,1)}, truth {(0,0),(1,0)} -> tp 1, fp 1, fn 1, tn 3
    assert res["class 1"]["dice"] == pytest.approx(0.5)
    assert res["class 1"]["iou"] == pytest.approx(1 / 3)
    assert res["class 1"]["specificity"] == pytest.approx(3 / 4)
    assert res["class 2"]["dice"] == 1.0


def test_semantic_metrics_with_mask_and_many_labels():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 300, size=(6, 7)).astype(np.int32)  # > 255: per-class path
    truth = pred.copy()
    truth[:3] = rng.integers(0, 300, size=(3, 7))
    mask = np.zeros(pred.shape, bool)
    mask[3:] = True
    res = semantic_metrics(pred, truth, classes=[int(pred[4, 0])], mask=mask)
    k = int(pred[4, 0])
    tp, fp, fn, tn = _set_counts(pred, truth, k, mask)
    r = res[f"class {k}"]
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (tp, fp, fn, tn)
    assert r["dice"] == 1.0


def test_empty_classes():
    z = np.zeros((3, 4), np.uint8)
    res = semantic_metrics(z, z)
    assert list(res) == ["class 1"]
    assert res["class 1"]["dice"] == 1.0
    assert res["class 1"]["iou"] == 1.0
    one = z.copy()
    one[0, 0] = 1
    missed = semantic_metrics(z, one)["class 1"]
    assert missed["dice"] == 0.0
    assert missed["sensitivity"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        semantic_metrics(z, np.zeros((4, 3), np.uint8))


def test_instance_metrics_known_matches():
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:5] = 1  # matched exactly
    truth[1:5, 8:12] = 2  # matched with IoU 12/16 = 0.75
    truth[6:9, 1:4] = 3  # missed
    pred = np.zeros_like(truth)
    pred[1:5, 1:5] = 7
    pred[1:5, 9:12] = 3
    pred[6:9, 14:18] = 5  # false positive
    pred[7:9, 2:4] = 9  # overlaps object 3 with IoU 4/9 < 0.5
    res = instance_metrics(pred, truth, iou_threshold=0.5)
    assert (res["tp"], res["fp"], res["fn"]) == (2, 2, 1)
    assert (res["n_pred"], res["n_true"]) == (4, 3)
    assert res["precision"] == pytest.approx(2 / 4)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert res["mean_matched_iou"] == pytest.approx((1.0 + 0.75) / 2)
    low = instance_metrics(pred, truth, iou_threshold=0.4)
    assert low["tp"] == 3


def test_instance_metrics_one_to_one_and_empty():
    truth = np.zeros((4, 10), np.int32)
    truth[:, :5] = 1
    truth[:, 5:] = 2
    pred = (truth > 0).astype(np.int32)  # one merged object covering both
    res = instance_metrics(pred, truth, iou_threshold=0.3)
    assert (res["tp"], res["fp"], res["fn"]) == (1, 0, 1)
    empty = instance_metrics(np.zeros_like(truth), np.zeros_like(truth))
    assert empty["f1"] == 1.0
    assert empty["tp"] == 0
    assert instance_metrics(np.zeros_like(truth), truth)["recall"] == 0.0


def test_metrics_table_rows():
    pred = np.array([[1, 2], [0, 2]])
    sem = semantic_metrics(pred, pred, class_names=["a", "b"])
    inst = instance_metrics(pred, pred)
    rows = metrics_table({"semantic": sem, "instances": inst})
    assert [r["name"] for r in rows] == ["semantic/a", "semantic/b", "instances"]
    assert rows[0]["dice"] == 1.0
    assert rows[2]["f1"] == 1.0
    flat = metrics_table(sem)
    assert [r["name"] for r in flat] == ["a", "b"]
