"""Batch work over folders of scans: prediction of new scans and evaluation of a set.

Both are generators of events (:mod:`.events`), like training, so the command line shows
progress per case and overall, and the napari widgets can run them in a worker:

* :class:`~.events.Progress` with ``stage="cases"`` after every case;
* :class:`~.events.Info` for skipped and failed cases (``level="warning"``);
* :class:`~.events.Done` last, with a :class:`BatchResult`.

A case that fails is reported and the others go on; the caller decides how to end
(the command line exits non-zero when any case failed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import CancelToken, Done, Event, Info, Progress


@dataclass
class BatchResult:
    """What a batch job did, case by case."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # case -> one-line reason
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        text = (
            f"{len(self.done)} case(s) done, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed in {self.seconds:.1f} s"
        )
        if self.failed:
            text += ": " + "; ".join(f"{k}: {v}" for k, v in self.failed.items())
        return text


def _reason(exc: BaseException) -> str:
    text = (str(exc) or type(exc).__name__).strip().splitlines()[0]
    return text if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"


def output_name(case: str, ending: str) -> str:
    """nnU-Net's naming of a prediction: the case identifier plus the file ending."""
    return f"{case}{ending}"


def predict_folder(
    model: Any,
    input_dir: str | Path,
    out_dir: str | Path,
    *,
    config: Any = None,
    overwrite: bool = False,
    file_ending: str | None = None,
    probabilities: bool = False,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Segment every case of ``input_dir`` with one model.

    Cases are grouped by nnU-Net's channel suffixes (``CASE_0000.nii.gz``,
    ``CASE_0001.nii.gz``); files without them are single-channel cases. Each output
    ``out_dir/CASE<ending>`` has its source scan's geometry and format (the ending of its
    first channel file unless ``file_ending`` is given). Cases whose output exists are
    skipped unless ``overwrite``.

    Args:
        model: a Checkpoint (loaded once for all cases).
        config: an ``InferConfig``; default: the model's stored settings.
        probabilities: also write ``CASE_probabilities<ending>`` (K channels).
    """
    from .dataset import find_cases
    from .inference import predict
    from .io import file_stem, read_channels, write_image, write_labels
    from .outputs import check_outputs, check_writable_folder

    cancel = cancel if cancel is not None else CancelToken()
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    cases = find_cases(input_dir, file_ending=file_ending)
    check_outputs([], [input_dir], folders=[out_dir])
    if out_dir.resolve() == input_dir.resolve():
        raise ValueError(
            f"the output folder {out_dir} is the input folder; write predictions elsewhere"
        )
    check_writable_folder(out_dir)
    infer = config if config is not None else model.config.infer
    result = BatchResult()
    t0 = time.perf_counter()
    yield Info(f"{len(cases)} case(s) in {input_dir}; predictions go to {out_dir}")
    for i, (name, paths) in enumerate(cases):
        if cancel.cancelled:
            break
        ending = file_ending or Path(paths[0]).name[len(file_stem(Path(paths[0]))) :]
        target = out_dir / output_name(name, ending)
        prob_target = out_dir / output_name(f"{name}_probabilities", ending)
        if target.exists() and not overwrite:
            result.skipped.append(name)
            yield Info(f"{name}: {target.name} exists, skipped (--overwrite to redo)")
            yield Progress(i + 1, len(cases), "cases")
            continue
        try:
            check_outputs([target], paths, overwrite=overwrite)
            image, meta = read_channels(paths)
            pred = None
            for ev in predict(
                model,
                image,
                infer,
                spacing=meta.spacing,
                keep_probabilities=probabilities,
                cancel=cancel,
            ):
                if isinstance(ev, Done):
                    pred = ev.result
            if pred is None or cancel.cancelled:
                break
            write_labels(pred.labels, meta, target, overwrite=overwrite)
            if probabilities:
                write_image(pred.probabilities, meta, prob_target, overwrite=overwrite)
            result.done.append(name)
            result.outputs[name] = target
        except Exception as exc:  # one broken case must not stop the others
            result.failed[name] = _reason(exc)
            yield Info(f"{name}: failed: {result.failed[name]}", level="warning")
        yield Progress(i + 1, len(cases), "cases")
    result.seconds = time.perf_counter() - t0
    yield Done(result=result, cancelled=cancel.cancelled, message=result.summary())


def pair_folders(pred_dir: str | Path, truth_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """Match prediction and reference files by case name: (case, prediction, reference).

    Raises ValueError (one line) when a folder holds no label files or when a reference
    has no prediction.
    """
    from .dataset import find_cases

    preds = {name: paths[0] for name, paths in find_cases(pred_dir)}
    truths = {name: paths[0] for name, paths in find_cases(truth_dir)}
    missing = sorted(set(truths) - set(preds))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} reference case(s) have no prediction in {pred_dir}: {shown}"
        )
    return [(name, preds[name], truths[name]) for name in sorted(truths)]


def evaluate_folders(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    regions: dict[str, Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
    instances: bool = False,
    hd95: bool = True,
    iou_threshold: float = 0.5,
) -> Iterator[Event]:
    """Score every prediction of ``pred_dir`` against the reference of the same case
    name in ``truth_dir`` (labels 0 = background, k = class / object).

    Yields Progress per case; Done's result is ``(rows, summary, reports)`` as returned
    by :func:`~.evaluation.evaluate_cases`, plus failed cases as warnings.
    """
    from .evaluation import evaluate, report_rows, summarize
    from .io import read_labels
    from .jobs import check_same_geometry

    pairs = pair_folders(pred_dir, truth_dir)
    rows: list[dict[str, Any]] = []
    reports: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for i, (name, p, t) in enumerate(pairs):
        try:
            pred, pred_meta = read_labels(p)
            truth, meta = read_labels(t)
            check_same_geometry(meta, pred_meta, p, "the reference")
            report = evaluate(
                pred,
                truth,
                instances=instances,
                regions=regions,
                class_names=class_names,
                spacing=meta.spacing,
                hd95=hd95,
                iou_threshold=iou_threshold,
            )
            reports[name] = report
            rows.extend(report_rows(report, case=name))
        except Exception as exc:  # a broken case is reported, the others are scored
            failed[name] = _reason(exc)
            yield Info(f"{name}: not scored: {failed[name]}", level="warning")
        yield Progress(i + 1, len(pairs), "cases")
    yield Done(
        result=(rows, summarize(rows), reports),
        message=f"{len(reports)} case(s) scored, {len(failed)} failed",
        extra={"failed": failed},
    )
