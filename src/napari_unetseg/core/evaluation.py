"""Evaluation: the one place where a prediction is scored against a reference.

The command line, the demo, the Evaluate widget and the Python API all call
:func:`evaluate` (one pair) or :func:`evaluate_cases` (a dataset), and show the result
with :func:`report_rows` and :func:`format_rows`. Label arrays use the dense convention
(0 = background, k = class or object id).

A report is a plain dict (JSON-ready)::

    {"classes": {name: {dice, iou, sensitivity, specificity, tp, fp, fn, tn[, hd95]}},
     "regions": {name: {...}},            # when regions are given (e.g. BraTS WT/TC/ET)
     "foreground": {...}, "instances": {tp, fp, fn, precision, recall, f1, ...}}
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import instance_metrics, semantic_metrics

#: Columns of a result row, in display order.
COLUMNS = (
    "case",
    "class",
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "hd95",
    "precision",
    "recall",
    "f1",
)
_SCORES = ("dice", "iou", "sensitivity", "specificity", "hd95", "precision", "recall", "f1")


def _hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    from .surface import hausdorff95

    value = float(hausdorff95(pred, truth, spacing))
    return value if math.isfinite(value) else float("nan")


def evaluate(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    instances: bool = False,
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    iou_threshold: float = 0.5,
    spacing: Sequence[float] | None = None,
    hd95: bool = False,
) -> dict[str, Any]:
    """Score ``pred`` against ``truth`` (same shape, (Z, Y, X) or (Y, X)).

    Args:
        instances: the arrays hold object ids: report foreground overlap and object
            matching (precision, recall, F1 at ``iou_threshold``) instead of classes.
        class_names: names of classes 1, 2, ...
        classes: class values to report (default: those present, see ``semantic_metrics``).
        regions: e.g. ``{"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}``: each region (the
            union of its labels) is also scored as one binary mask.
        spacing: voxel size in array order for the 95th-percentile Hausdorff distance
            (``hd95=True``), in the same units (mm for medical scans). NaN when exactly
            one of the two masks is empty.

    Returns:
        The report dict described in the module docstring.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"the prediction has shape {pred.shape} but the reference {truth.shape}; "
            "compare masks of the same scan"
        )
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    report: dict[str, Any] = {}
    if instances:
        fg = semantic_metrics(
            (pred > 0).astype(np.uint8), (truth > 0).astype(np.uint8), class_names=["foreground"]
        )["foreground"]
        if hd95:
            fg["hd95"] = _hd95(pred > 0, truth > 0, sp)
        report["foreground"] = fg
        inst = instance_metrics(pred, truth, iou_threshold=iou_threshold)
        inst["iou_threshold"] = float(iou_threshold)
        report["instances"] = inst
        return report
    res = semantic_metrics(pred, truth, classes=classes, class_names=class_names)
    if hd95:
        for row in res.values():
            k = int(row["label"])
            row["hd95"] = _hd95(pred == k, truth == k, sp)
    report["classes"] = res
    if regions:
        reg: dict[str, Any] = {}
        for name, labels in regions.items():
            lab = [int(v) for v in labels]
            p, t = np.isin(pred, lab), np.isin(truth, lab)
            rows = semantic_metrics(p.astype(np.uint8), t.astype(np.uint8), classes=[1])
            entry = next(iter(rows.values()))
            if hd95:
                entry["hd95"] = _hd95(p, t, sp)
            reg[name] = entry
        report["regions"] = reg
    return report


def report_rows(report: Mapping[str, Any], case: str = "") -> list[dict[str, Any]]:
    """Rows (dicts keyed by :data:`COLUMNS`) for a table of one report."""
    rows: list[dict[str, Any]] = []
    if "instances" in report:
        inst, fg = report["instances"], report["foreground"]
        rows.append(
            {
                "case": case,
                "class": f"objects ({inst['n_pred']} found, {inst['n_true']} true)",
                **{k: fg.get(k) for k in ("dice", "iou", "sensitivity", "specificity", "hd95")},
                **{k: inst[k] for k in ("precision", "recall", "f1")},
            }
        )
        return rows
    for group in ("classes", "regions"):
        for name, m in report.get(group, {}).items():
            label = f"region {name}" if group == "regions" else str(name)
            rows.append({"case": case, "class": label, **{k: m.get(k) for k in _SCORES}})
    return rows


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over cases, per class/region: rows with case
    ``mean`` and ``std`` (NaN scores, e.g. an undefined HD95, are left out)."""
    out: list[dict[str, Any]] = []
    labels = list(dict.fromkeys(r["class"] for r in rows))
    for stat in ("mean", "std"):
        for label in labels:
            mine = [r for r in rows if r["class"] == label]
            row: dict[str, Any] = {"case": stat, "class": label}
            for k in _SCORES:
                vals = [float(r[k]) for r in mine if r.get(k) is not None]
                vals = [v for v in vals if math.isfinite(v)]
                if vals:
                    row[k] = float(np.mean(vals) if stat == "mean" else np.std(vals))
            out.append(row)
    return out


def used_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of :data:`COLUMNS` that some row fills."""
    return [c for c in COLUMNS if any(r.get(c) not in (None, "") for r in rows)]


def _cell(value: Any, digits: str = ".4f") -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    v = float(value)
    return "nan" if math.isnan(v) else format(v, digits)


def format_rows(
    rows: Sequence[Mapping[str, Any]],
    delimiter: str | None = None,
    columns: Sequence[str] | None = None,
) -> str:
    """The rows as text: aligned columns (``delimiter=None``) or delimited (``","``
    for CSV, ``"\\t"`` for the clipboard), with a header line. ``columns``: which
    columns, in order (default: those that some row fills)."""
    cols = list(columns) if columns is not None else (used_columns(rows) or ["class"])
    if delimiter is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
        writer.writerow(cols)
        for r in rows:
            writer.writerow([_cell(r.get(c), ".6g") for c in cols])
        return buf.getvalue()
    table = [cols] + [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = []
    for line in table:
        cells = [
            v.ljust(w) if i < 2 and cols[i] in ("case", "class") else v.rjust(w)
            for i, (v, w) in enumerate(zip(line, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def evaluate_cases(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[float] | None]],
    **options: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Score several cases with the same options as :func:`evaluate`.

    Args:
        pairs: ``(case name, prediction, reference, spacing)`` per case.

    Returns:
        (per-case rows, summary rows (mean and std per class/region), reports by case).
    """
    rows: list[dict[str, Any]] = []
    reports: dict[str, Any] = {}
    for name, pred, truth, spacing in pairs:
        report = evaluate(pred, truth, spacing=spacing, **options)
        reports[name] = report
        rows.extend(report_rows(report, case=name))
    return rows, summarize(rows), reports
