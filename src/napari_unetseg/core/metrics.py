"""Segmentation metrics: per-class overlap and instance matching.

Label arrays use the dense convention (0 = background, k = class or object), any shape
((Z, Y, X) or (Y, X)), as long as prediction and reference have the same shape.

Conventions for undefined ratios (no NaN, so results stay valid JSON): a ratio whose
denominator is zero is 1.0 when there is nothing to get wrong (Dice/IoU of a class absent
from both, sensitivity of a class absent from the reference, specificity when every voxel
is positive), precision/recall/F1 of instance matching likewise (no objects at all = 1.0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_CHUNK = 1 << 22  # voxels per bincount pass (bounded memory on large volumes)


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {truth.shape}")
    for a, what in ((pred, "prediction"), (truth, "reference")):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise TypeError(f"the {what} must hold integer labels, not {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"the {what} has negative labels; 0 = background, k = class")
    return pred, truth


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 1.0


def _confusion(pred: np.ndarray, truth: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts: rows = reference label, columns = predicted label."""
    counts = np.zeros(n * n, dtype=np.int64)
    p, t = pred.reshape(-1), truth.reshape(-1)
    for start in range(0, p.size, _CHUNK):
        tc = t[start : start + _CHUNK].astype(np.intp)
        tc *= n
        tc += p[start : start + _CHUNK]
        counts += np.bincount(tc, minlength=n * n)
    return counts.reshape(n, n)


def semantic_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    classes: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Dice, IoU, sensitivity and specificity of each foreground class.

    Args:
        pred: predicted labels (*spatial), 0 = background, k = class.
        truth: reference labels of the same shape.
        classes: class values to report; default: every label > 0 found in ``pred`` or
            ``truth`` plus 1..len(class_names) (at least class 1).
        mask: optional (*spatial) array; only voxels where it is non-zero count (for
            example the annotated voxels of a sparse annotation).
        class_names: names of classes 1, 2, ...; unnamed classes are "class <k>".

    Returns:
        {name: {"label", "dice", "iou", "sensitivity", "specificity", "tp", "fp", "fn",
        "tn"}}, in class order ("label" is the class value k). A class absent from both
        gives dice = iou = 1.0.
    """
    pred, truth = _check_pair(pred, truth)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != pred.shape:
            raise ValueError(f"mask shape {mask.shape} differs from label shape {pred.shape}")
        keep = mask.astype(bool, copy=False)
        pred, truth = pred[keep], truth[keep]
    names = list(class_names) if class_names is not None else []
    top = int(max(pred.max(initial=0), truth.max(initial=0)))
    if classes is None:
        present = set()
        if top < 4096:
            present = set(np.flatnonzero(np.bincount(pred.reshape(-1), minlength=1)).tolist())
            present |= set(np.flatnonzero(np.bincount(truth.reshape(-1), minlength=1)).tolist())
        else:
            present = set(np.unique(pred).tolist()) | set(np.unique(truth).tolist())
        present |= set(range(1, len(names) + 1))
        classes = sorted(k for k in present if k > 0) or [1]
    classes = [int(k) for k in classes]
    total = int(pred.size)

    if top < 256:
        conf = _confusion(pred, truth, top + 1)

        def counts(k: int) -> tuple[int, int, int]:
            if k > top:
                return 0, 0, 0
            tp = int(conf[k, k])
            return tp, int(conf[:, k].sum()) - tp, int(conf[k, :].sum()) - tp
    else:

        def counts(k: int) -> tuple[int, int, int]:
            p, t = pred == k, truth == k
            tp = int(np.count_nonzero(p & t))
            return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp

    results: dict[str, dict[str, float | int]] = {}
    for k in classes:
        tp, fp, fn = counts(k)
        tn = total - tp - fp - fn
        name = names[k - 1] if 0 < k <= len(names) else f"class {k}"
        results[name] = {
            "label": k,
            "dice": _ratio(2 * tp, 2 * tp + fp + fn),
            "iou": _ratio(tp, tp + fp + fn),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
        }
    return results


def instance_metrics(
    pred_instances: np.ndarray, true_instances: np.ndarray, iou_threshold: float = 0.5
) -> dict[str, float | int]:
    """Object-level detection scores: one-to-one matching of objects by IoU.

    Pairs of overlapping objects are scored by IoU; an optimal one-to-one assignment
    (``scipy.optimize.linear_sum_assignment``, maximising the summed IoU) among pairs with
    IoU >= ``iou_threshold`` gives the true positives.

    Args:
        pred_instances: predicted objects (*spatial), 0 = background, k = object id.
        true_instances: reference objects of the same shape.
        iou_threshold: minimum IoU of a match, in (0, 1].

    Returns:
        dict(tp, fp, fn, precision, recall, f1, mean_matched_iou, n_pred, n_true).
    """
    from scipy.optimize import linear_sum_assignment
    from skimage.metrics import contingency_table

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    pred, truth = _check_pair(pred_instances, true_instances)
    pred = pred.astype(np.intp, copy=False).reshape(-1)
    truth = truth.astype(np.intp, copy=False).reshape(-1)
    area_t = np.bincount(truth)
    area_p = np.bincount(pred)
    ids_t = np.flatnonzero(area_t)
    ids_p = np.flatnonzero(area_p)
    ids_t, ids_p = ids_t[ids_t > 0], ids_p[ids_p > 0]
    n_true, n_pred = int(ids_t.size), int(ids_p.size)

    tp, matched_iou = 0, 0.0
    if n_true and n_pred:
        table = contingency_table(truth, pred, ignore_labels=[0]).tocoo()
        rows, cols, inter = table.row, table.col, table.data.astype(np.float64)
        nz = (rows > 0) & (cols > 0) & (inter > 0)
        rows, cols, inter = rows[nz], cols[nz], inter[nz]
        iou = inter / (area_t[rows] + area_p[cols] - inter)
        ok = iou >= iou_threshold
        rows, cols, iou = rows[ok], cols[ok], iou[ok]
        if iou.size:
            # dense matrix only over the objects that have a candidate partner
            ur, ri = np.unique(rows, return_inverse=True)
            uc, ci = np.unique(cols, return_inverse=True)
            score = np.zeros((ur.size, uc.size))
            score[ri, ci] = iou
            r, c = linear_sum_assignment(score, maximize=True)
            good = score[r, c] >= iou_threshold
            tp = int(good.sum())
            matched_iou = float(score[r, c][good].mean()) if tp else 0.0
    fp, fn = n_pred - tp, n_true - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mean_matched_iou": matched_iou,
        "n_pred": n_pred,
        "n_true": n_true,
    }


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, np.integer, np.floating)) or v is None


def metrics_table(results: Mapping[str, Any], name: str = "") -> list[dict[str, Any]]:
    """Flatten metric results into rows for a CSV writer.

    Accepts the output of :func:`semantic_metrics` ({class: {metric: value}}), of
    :func:`instance_metrics` ({metric: value}) or any nesting of those (e.g.
    ``{"semantic": {...}, "instances": {...}}``). Each row is
    ``{"name": <path of keys joined by "/">, metric: value, ...}``; nested mappings become
    their own rows, scalar entries of a level form one row for that level. Rows of
    different kinds have different keys: use the union of the keys as the CSV header
    (``csv.DictWriter(f, fieldnames=..., restval="")``).
    """
    rows: list[dict[str, Any]] = []
    scalars = {k: v for k, v in results.items() if _is_scalar(v)}
    if scalars:
        row: dict[str, Any] = {"name": name or "all"}
        for k, v in scalars.items():
            row[str(k)] = v.item() if isinstance(v, np.generic) else v
        rows.append(row)
    for k, v in results.items():
        if isinstance(v, Mapping):
            rows.extend(metrics_table(v, f"{name}/{k}" if name else str(k)))
    return rows
