"""Post-processing settings of the instance task, chosen from the annotation itself.

After training, the model's probabilities on its own training image are turned into
objects with a few candidate settings of :func:`~.postprocess.instance_labels`; the
setting whose objects best reproduce the annotated objects (instance F1 at IoU 0.5 on
the annotated planes) wins.

At the end of an instance training (``Trainer.run``, setting ``train.calibrate``) the
trained model predicts its training cases (:func:`calibrate_model`), and the chosen
``interior_threshold`` and ``min_size`` are stored in the model's ``config.infer``, so
that ``predict`` uses them unless told otherwise.

Annotations follow :mod:`.annotations`: 0 = not annotated, 1 = background, 2.. = object
ids. Images are (Y, X), volumes (Z, Y, X); probabilities (3, *spatial) = background,
interior, boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .annotations import BACKGROUND, UNANNOTATED, annotated_slices
from .config import InferConfig
from .postprocess import instance_labels

#: Training cases predicted for the calibration at the end of training.
MAX_CASES = 3
#: Seed thresholds tried by default (``interior_threshold`` of ``instance_labels``).
DEFAULT_THRESHOLDS = (0.5, 0.8)
#: Candidate ``min_size`` values, as fractions of the typical annotated object size.
SIZE_FRACTIONS = (0.0, 0.05, 0.1, 0.2)
#: F1 differences up to this count as ties (see :func:`calibrate_instances`).
TIE = 0.005
#: Preferred ``min_size`` among ties, as a fraction of the typical object size.
PRIOR_FRACTION = 0.1
#: Below this many complete annotated objects (or cross-sections) the defaults are kept.
MIN_OBJECTS = 5
#: Defaults returned when the annotation is too thin to calibrate on.
#: The settings' own defaults (the one owner is core.config's InferConfig).
DEFAULTS: dict[str, float | int] = {
    "interior_threshold": float(InferConfig().interior_threshold),
    "min_size": int(InferConfig().min_size),
}


def _planes(annotation: np.ndarray) -> list[tuple]:
    """Index tuples of the annotated 2D planes: the whole image in 2D, the annotated
    z-, y- and x-slices of a volume."""
    if annotation.ndim == 2:
        return [(slice(None), slice(None))]
    planes = []
    for ax, idx in enumerate(annotated_slices(annotation).values()):
        for i in idx:
            sl: list = [slice(None)] * 3
            sl[ax] = int(i)
            planes.append(tuple(sl))
    return planes


def _complete_objects(plane: np.ndarray) -> np.ndarray:
    """Object ids (>= 2) of a 2D annotation plane whose pixels touch no unannotated pixel
    (face neighbours) and not the edge of the plane: objects fully annotated there."""
    ids = plane > BACKGROUND
    if not ids.any():
        return np.zeros(0, dtype=plane.dtype)
    open_ = plane == UNANNOTATED
    padded = np.pad(open_, 1, constant_values=True)
    near_open = ndi.binary_dilation(padded)[1:-1, 1:-1]
    bad = np.unique(plane[ids & near_open])
    good = np.unique(plane[ids])
    return np.setdiff1d(good, bad)


class _Reference:
    """The annotated planes, prepared once and laid end to end as 1-D arrays.

    ``truth`` holds the complete objects with ids unique over all planes; pixels that do
    not count (unannotated, and objects cut by the painting) are left out on both sides.
    """

    def __init__(self, annotation: np.ndarray):
        self.planes: list[tuple] = []
        self.areas: list[int] = []
        truths, valids = [], []
        offset = 0
        for index in _planes(annotation):
            plane = np.asarray(annotation[index])
            good = _complete_objects(plane)
            if good.size == 0:
                continue
            truth = np.where(np.isin(plane, good), plane.astype(np.int64) - 1, 0)
            self.areas.extend(np.bincount(truth.ravel())[good - 1].tolist())
            valid = (plane == BACKGROUND) | (truth > 0)
            compact = np.searchsorted(good - 1, truth) + 1 + offset  # ids offset..
            truths.append(np.where(truth > 0, compact, 0)[valid])
            valids.append(valid.ravel())
            self.planes.append(index)
            offset += int(good.size)
        empty = np.zeros(0, dtype=np.int64)
        self.truth = np.concatenate(truths) if truths else empty
        self.valid = np.concatenate(valids) if valids else empty.astype(bool)

    @property
    def n_objects(self) -> int:
        return len(self.areas)

    def cut(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``labels`` on the counted pixels of the planes, as (piece, object): ``piece``
        numbers each object's cross-section per plane (0 = none, or a cross-section that
        lies mostly on pixels that do not count), ``object`` is its id in ``labels``."""
        flat = np.concatenate([np.asarray(labels[i]).ravel() for i in self.planes])
        plane_no = np.repeat(
            np.arange(len(self.planes)), [np.asarray(labels[i]).size for i in self.planes]
        )
        key = plane_no.astype(np.int64) * (int(flat.max(initial=0)) + 1) + flat
        _, piece = np.unique(key, return_inverse=True)
        piece = piece.reshape(-1) + 1
        piece[flat == 0] = 0
        total = np.bincount(piece)
        inside = np.bincount(piece[self.valid], minlength=total.size)
        keep = inside * 2 > total
        keep[0] = False
        piece = np.where(keep[piece], piece, 0)
        return piece[self.valid], flat[self.valid]

    def counts(self, piece: np.ndarray) -> tuple[int, int, int]:
        """(tp, fp, fn) of the cross-sections ``piece`` (from :meth:`cut`, some set to 0)
        against the complete annotated objects, matched at IoU > 0.5 (such a match is
        one-to-one, so no assignment problem is solved)."""
        truth = self.truth
        area_p = np.bincount(piece)
        area_t = np.bincount(truth)
        n_pred = int(np.count_nonzero(area_p[1:]))
        n_true = int(np.count_nonzero(area_t[1:]))
        both = (piece > 0) & (truth > 0)
        base = int(area_p.size)
        keys, inter = np.unique(truth[both] * base + piece[both], return_counts=True)
        t, q = keys // base, keys % base
        # IoU = i / (a + b - i) > 0.5  <=>  3 i > a + b
        tp = int(np.count_nonzero(inter * 3 > area_t[t] + area_p[q]))
        return tp, n_pred - tp, n_true - tp


def _typical_size(areas: Sequence[int], ndim: int) -> float:
    """Typical object size in voxels: the median area in 2D; in 3D the volume of the
    sphere whose random cross-sections have the median area (mean section 2/3 pi R^2)."""
    area = float(np.median(areas))
    if ndim == 2:
        return area
    radius = np.sqrt(1.5 * area / np.pi)
    return 4.0 / 3.0 * np.pi * radius**3


def calibrate_instances(
    probabilities: np.ndarray | Sequence[np.ndarray],
    annotation: np.ndarray | Sequence[np.ndarray],
    *,
    candidates: Sequence[float] = DEFAULT_THRESHOLDS,
    size_fractions: Sequence[float] = SIZE_FRACTIONS,
    min_objects: int = MIN_OBJECTS,
) -> dict:
    """Choose ``interior_threshold`` and ``min_size`` that best reproduce the annotation.

    Every candidate threshold runs :func:`~.postprocess.instance_labels` once on the
    whole image; each result is then cut by ``min_size`` = fraction x the typical
    annotated object size for every fraction in ``size_fractions``. Each setting is
    scored by instance F1 (IoU > 0.5) on the annotated planes (the whole image in 2D;
    the annotated z-, y- and x-slices of a volume, compared as 2D cross-sections), over
    the objects annotated completely there (objects next to unannotated pixels or the
    edge of the plane are ignored). Settings within ``TIE`` (0.005) of the best F1 count
    as equal: the earliest threshold in ``candidates`` wins, then the ``min_size``
    closest to ``PRIOR_FRACTION`` (0.1) x the typical size, since F1 on a few planes is
    a noisy guide to the size of whole objects.

    Several images (the cases of a dataset) are scored together: give lists of
    probabilities and annotations of equal length; matches are counted over all of
    them.

    Args:
        probabilities: (3, *spatial) float: the model's background, interior and
            boundary probabilities on the image it was trained on (or a list of them).
        annotation: (*spatial) integers: 0 = not annotated, 1 = background, 2.. = object
            ids, the annotation it was trained on (or a list, one per image).
        candidates: seed thresholds to try, each in [-1, 1).
        size_fractions: fractions of the typical object size to try as ``min_size``.
        min_objects: fewer complete annotated objects than this: the defaults are
            returned unchanged (``calibrated`` False).

    Returns:
        dict(interior_threshold, min_size, f1, default_f1 (F1 of the defaults), n_objects
        (complete annotated objects or cross-sections), typical_size, calibrated (bool),
        scores ({"threshold/min_size": F1})).
    """
    several = isinstance(probabilities, (list, tuple))
    probs = [np.asarray(x) for x in probabilities] if several else [np.asarray(probabilities)]
    if several != isinstance(annotation, (list, tuple)):
        raise ValueError("give one annotation per probability map (both lists, or neither)")
    anns = [np.asarray(a) for a in annotation] if several else [np.asarray(annotation)]
    if len(probs) != len(anns) or not probs:
        raise ValueError(f"{len(probs)} probability maps for {len(anns)} annotations")
    for p, ann in zip(probs, anns):
        if p.ndim != ann.ndim + 1 or p.shape[1:] != ann.shape:
            raise ValueError(
                f"probabilities {p.shape} do not match the annotation {ann.shape}; "
                "expected (3, *spatial) for the annotated image"
            )
    if not len(candidates):
        raise ValueError("candidates must hold at least one seed threshold")
    references = [_Reference(ann) for ann in anns]
    areas = [a for ref in references for a in ref.areas]
    result: dict = {
        **DEFAULTS,
        "f1": None,
        "default_f1": None,
        "n_objects": len(areas),
        "typical_size": None,
        "calibrated": False,
        "scores": {},
    }
    if len(areas) < max(1, int(min_objects)):
        return result
    typical = _typical_size(areas, anns[0].ndim)
    result["typical_size"] = round(float(typical), 1)
    sizes = sorted({round(f * typical) for f in size_fractions} | {0})

    def f1(tp: int, fp: int, fn: int) -> float:
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0

    allowed = list(dict.fromkeys(float(c) for c in candidates))
    # the default is scored too (for default_f1), but chosen only when a candidate
    default_threshold = float(DEFAULTS["interior_threshold"])
    default_size = int(DEFAULTS["min_size"])
    thresholds = allowed + [t for t in [default_threshold] if t not in allowed]
    scores: dict[tuple[float, int], float] = {}
    for threshold in thresholds:
        totals = dict.fromkeys(sizes, (0, 0, 0))
        for p, reference in zip(probs, references):
            if reference.n_objects == 0:
                continue
            labels = instance_labels(p, interior_threshold=threshold)
            volumes = np.bincount(labels.ravel())
            piece, obj = reference.cut(labels)
            for size in sizes:
                kept = np.where(volumes[obj] >= size, piece, 0) if size > 1 else piece
                counts = reference.counts(kept)
                totals[size] = tuple(a + b for a, b in zip(totals[size], counts))  # type: ignore[assignment]
        for size in sizes:
            scores[threshold, size] = f1(*totals[size])
    result["scores"] = {f"{t:g}/{m}": round(v, 4) for (t, m), v in scores.items()}
    result["default_f1"] = scores.get((default_threshold, default_size))
    top = max(v for (t, _), v in scores.items() if t in allowed)
    # among the settings within TIE of the best: the earliest threshold, then the size
    # closest to PRIOR_FRACTION of the typical size (F1 on a few planes is noisy)
    prior = PRIOR_FRACTION * typical
    near = [(t, m) for (t, m), v in scores.items() if t in allowed and v >= top - TIE]
    threshold, size = min(near, key=lambda tm: (allowed.index(tm[0]), abs(tm[1] - prior)))
    result.update(
        interior_threshold=threshold,
        min_size=int(size),
        f1=scores[threshold, size],
        calibrated=True,
    )
    return result


def calibrate_model(
    checkpoint: Any,
    cases: Sequence[Any],
    *,
    max_cases: int = MAX_CASES,
    cancel: Any = None,
) -> dict | None:
    """Calibrate an instance model on the cases it was trained on.

    Predicts the first ``max_cases`` annotated cases (each ``Case.image`` (C, *spatial)
    in its own grid, resampled by the model as at prediction) and runs
    :func:`calibrate_instances` over all of them. Returns its result dict, or None when
    the model is not an instance model, no case has an annotation, or ``cancel`` was
    set while predicting.
    """
    from .inference import predict_volume

    if getattr(checkpoint, "task", None) != "instances":
        return None
    probs, anns = [], []
    for case in [c for c in cases if c.annotation is not None][: max(1, int(max_cases))]:
        if cancel is not None and cancel.cancelled:
            return None
        spacing = getattr(getattr(case, "meta", None), "spacing", None)
        try:
            pred = predict_volume(
                checkpoint, np.asarray(case.image), spacing=spacing, cancel=cancel
            )
        except RuntimeError:
            if cancel is not None and cancel.cancelled:
                return None
            raise
        if pred.probabilities is None:
            return None
        probs.append(np.asarray(pred.probabilities, dtype=np.float32))
        anns.append(np.asarray(case.annotation))
    if not probs:
        return None
    return calibrate_instances(probs, anns)
