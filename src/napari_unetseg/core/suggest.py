"""Which slices to annotate next: unannotated slices ranked by how much painting them
is expected to help.

After (or during) training, the model's probabilities ``(K, *spatial)`` say where it is
unsure. Every slice along every axis asked for gets a score; the slices already
annotated are left out, and the top ones are picked greedily so that no two picks (nor a
pick and an annotated slice) lie closer than ``min_distance`` slices on the same axis.

Scores (``method``):

* ``"entropy"``: normalised predictive entropy averaged over the slice's
  foreground-likely region (voxels weighted by ``1 - p(background)``): the background,
  most of a slice and predicted with certainty, would otherwise dilute it;
* ``"margin"``: ``1 - (p_first - p_second)`` averaged the same way;
* ``"tta"``: disagreement between predictions of flipped copies of the image (the mutual
  information between the prediction and the flip), averaged the same way; needs
  ``tta_probabilities`` (:func:`suggest_for` predicts them: one forward pass per
  spatial axis more);
* ``"diversity"``: distance (as a share of the axis) to the nearest annotated or already
  suggested slice on the same axis; ignores the probabilities.

``benchmarks/active.py`` measures the scores against evenly spaced and random slices.

A slice counts as annotated when something was painted IN that plane: it holds an
annotated voxel whose whole in-plane 3 x 3 neighbourhood is annotated
(:func:`~.annotations.annotated_slices`) and which is not annotated on both sides along
the slice's axis (beyond the volume counts as annotated). The second condition keeps a
band left by three or more neighbouring painted slices of another axis (annotated on
both sides) from counting; of a block of painted neighbouring slices, the outer two
count and the ones inside are skipped anyway, as is every slice whose voxels are all
annotated. Voxels already annotated add nothing
to a score.

Arrays: probabilities ``(K, Z, Y, X)`` or ``(K, Y, X)``; annotation ``(Z, Y, X)`` or
``(Y, X)`` (0 = not annotated, 1 = background, 2.. = classes or objects). A
:class:`Suggestion`'s ``axis`` is the array axis (0 = Z for volumes, 0 = Y for images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

from .annotations import _axis_letters, annotated_slices

METHODS = ("entropy", "margin", "tta", "diversity")
#: The best on average in ``benchmarks/active.py`` (see benchmarks/RESULTS.md): with a
#: few fine-tuning steps per round, filling the largest gaps matched or beat every
#: uncertainty score, and needs no prediction.
DEFAULT_METHOD = "diversity"
#: Slices of the first axis handled at once (bounds the float32 temporaries).
_CHUNK_VOXELS = 1 << 22
#: The weighted mean of a slice is taken over its foreground weight plus this share of
#: its area: a slice whose likely foreground is a handful of uncertain voxels (often at
#: the border of the volume) does not beat one with a large uncertain region.
_PRIOR_FRACTION = 0.05


@dataclass(frozen=True)
class Suggestion:
    """One slice to annotate next.

    Attributes:
        axis: array axis (0 = Z, 1 = Y, 2 = X for a (Z, Y, X) volume).
        index: slice index along that axis.
        score: the ranking score (higher = more useful; comparable within one call).
        reason: one line for the user, e.g. "uncertain over 1,234 likely-foreground voxels".
    """

    axis: int
    index: int
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- voxels


def _entropy(p: np.ndarray) -> np.ndarray:
    """Normalised entropy ``(*chunk)`` in [0, 1] of probabilities ``(K, *chunk)``."""
    k = p.shape[0]
    if k < 2:
        return np.zeros(p.shape[1:], dtype=np.float32)
    h = np.zeros(p.shape[1:], dtype=np.float32)
    tmp = np.empty(p.shape[1:], dtype=np.float32)
    for c in range(k):  # in place: one temporary for all classes
        pc = np.asarray(p[c], dtype=np.float32)
        np.maximum(pc, 1e-12, out=tmp)
        np.log(tmp, out=tmp)
        tmp *= pc
        h -= tmp
    h *= np.float32(1.0 / math.log(k))
    return np.clip(h, 0.0, 1.0, out=h)


def _margin(p: np.ndarray) -> np.ndarray:
    """``1 - (p_first - p_second)`` ``(*chunk)`` in [0, 1]."""
    if p.shape[0] < 2:
        return np.zeros(p.shape[1:], dtype=np.float32)
    first = np.asarray(p[0], dtype=np.float32).copy()
    second = np.zeros_like(first)
    for c in range(1, p.shape[0]):
        pc = np.asarray(p[c], dtype=np.float32)
        np.maximum(second, np.minimum(first, pc), out=second)
        np.maximum(first, pc, out=first)
    out = 1.0 - (first - second)
    return np.clip(out, 0.0, 1.0, out=out)


def _check_probabilities(probabilities: Any) -> np.ndarray:
    p = np.asarray(probabilities)
    if p.ndim not in (3, 4) or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(
            f"probabilities must be a float array (K, Z, Y, X) or (K, Y, X), got {p.dtype} "
            f"of shape {p.shape}; predict with keep_probabilities=True"
        )
    return p


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """Per-voxel normalised entropy ``H(p) / log K`` of ``(K, *spatial)`` probabilities.

    Returns:
        ``(*spatial)`` float32 in [0, 1]: 0 where one class has probability 1, 1 where
        all K classes are equally likely. Computed a few slices at a time.
    """
    p = _check_probabilities(probabilities)
    out = np.empty(p.shape[1:], dtype=np.float32)
    step = max(1, _CHUNK_VOXELS // max(1, math.prod(p.shape[2:]) * p.shape[0]))
    for z in range(0, p.shape[1], step):
        out[z : z + step] = _entropy(p[:, z : z + step])
    return out


def _mean(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise mean of equally shaped arrays (summed in order, in their dtype)."""
    total = arrays[0]
    for a in arrays[1:]:
        total = total + a
    return total / len(arrays)


def _voxel_uncertainty(
    p: np.ndarray, method: str, tta: Sequence[np.ndarray] | None, sl: slice
) -> tuple[np.ndarray, np.ndarray]:
    """(uncertainty, foreground weight) of the chunk ``sl`` of the first spatial axis."""
    chunk = p[:, sl].astype(np.float32, copy=False)
    if method == "margin":
        u = _margin(chunk)
    elif method == "tta":
        members = [chunk] + [np.asarray(t[:, sl], dtype=np.float32) for t in tta or ()]
        mean = _mean(members)
        u = np.clip(_entropy(mean) - _mean([_entropy(m) for m in members]), 0.0, 1.0)
        chunk = mean
    else:
        u = _entropy(chunk)
    w = np.clip(1.0 - chunk[0], 0.0, 1.0) if chunk.shape[0] > 1 else np.ones_like(u)
    return u, w


def _slice_sums(
    p: np.ndarray,
    annotation: np.ndarray,
    method: str,
    tta: Sequence[np.ndarray] | None,
    axes: Sequence[int],
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each axis: (sum of uncertainty x weight, sum of weight) per slice, over the
    voxels nobody annotated."""
    spatial = p.shape[1:]
    sums = {a: (np.zeros(spatial[a]), np.zeros(spatial[a])) for a in axes}
    step = max(1, _CHUNK_VOXELS // max(1, math.prod(spatial[1:])))
    for z in range(0, spatial[0], step):
        sl = slice(z, min(z + step, spatial[0]))
        u, w = _voxel_uncertainty(p, method, tta, sl)
        w[annotation[sl] > 0] = 0.0
        u *= w
        for arr, j in ((u, 0), (w, 1)):
            # sum over the last axis once; the first two axes' sums come from that
            last = arr.sum(axis=-1, dtype=np.float64)
            for a in axes:
                if a == len(spatial) - 1:
                    sums[a][j][:] += arr.sum(axis=tuple(range(arr.ndim - 1)), dtype=np.float64)
                elif a == 0:
                    rest = tuple(range(1, last.ndim))
                    sums[a][j][sl] += last.sum(axis=rest) if rest else last
                else:
                    sums[a][j][:] += last.sum(axis=0)
    return sums


# --------------------------------------------------------------------------- ranking


def painted_slices(annotation: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of the slices painted in their own plane, per axis letter (see the module
    docstring): ``{"z": indices, "y": ..., "x": ...}`` (``"y"``, ``"x"`` for images)."""
    annotation = np.asarray(annotation)
    letters = _axis_letters(annotation.ndim)
    mask = annotation > 0
    inplane = annotated_slices(mask)
    out = {}
    for ax, letter in enumerate(letters):
        candidates = inplane[letter]
        if candidates.size == 0:
            out[letter] = candidates
            continue
        m = np.moveaxis(mask, ax, 0)
        # beyond the volume counts as annotated: a band reaching the border is a band
        before = np.ones_like(m)
        after = np.ones_like(m)
        before[1:], after[:-1] = m[:-1], m[1:]
        keep = [i for i in candidates if (m[i] & ~(before[i] & after[i])).any()]
        out[letter] = np.asarray(keep, dtype=np.intp)
    return out


def _parse_axes(axes: str, ndim: int) -> list[int]:
    letters = _axis_letters(ndim)
    axes = axes.lower()
    if ndim == 2 and "z" in axes and len(axes) > 1:
        axes = axes.replace("z", "")  # an image has no z: "zyx" means its rows and columns
    if not axes or any(a not in letters for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct letters from {letters!r}, not {axes!r}")
    return sorted(letters.index(a) for a in axes)


def _auto_min_distance(size: int) -> int:
    return max(2, size // 16)


def suggest_slices(
    probabilities: np.ndarray | None,
    annotation: np.ndarray,
    *,
    top: int = 10,
    axes: str = "zyx",
    method: str = DEFAULT_METHOD,
    tta_probabilities: Sequence[np.ndarray] | None = None,
    min_distance: int | None = None,
    spread: bool = False,
) -> list[Suggestion]:
    """Rank the unannotated slices by how much painting them is expected to help.

    Args:
        probabilities: ``(K, *spatial)`` softmax output of the current model (channel 0 =
            background); may be ``None`` for ``method="diversity"``.
        annotation: ``(*spatial)`` annotation (0 = not annotated); its annotated slices
            are never suggested (see the module docstring for what counts).
        top: how many slices to return (fewer when fewer are left).
        axes: letters of the axes to suggest slices along, e.g. "z" or "zyx".
        method: one of :data:`METHODS` (see the module docstring).
        tta_probabilities: for ``"tta"``: ``(K, *spatial)`` predictions of flipped copies
            of the image, flipped back to the image's orientation.
        min_distance: no two suggestions, nor a suggestion and an annotated slice, lie
            closer than this many slices on the same axis (relaxed only when nothing
            else is left); ``None`` = ``max(2, axis size // 16)`` per axis.
        spread: multiply the score by the ``"diversity"`` score (distance to the nearest
            annotated or suggested slice as a share of the axis, the volume's borders
            counting as annotated slices half a gap away): uncertain slices in large
            gaps first, border slices (often unsure because they lack context) last.

    Returns:
        Up to ``top`` :class:`Suggestion` objects, best first.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    annotation = np.asarray(annotation)
    spatial = tuple(annotation.shape)
    ax_list = _parse_axes(axes, annotation.ndim)
    if int(top) < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    if method == "tta" and not tta_probabilities:
        raise ValueError("method 'tta' needs tta_probabilities (predictions of flipped images)")
    sums = None
    if method != "diversity":
        if probabilities is None:
            raise ValueError(f"method {method!r} needs the model's probabilities")
        p = _check_probabilities(probabilities)
        for q in [p, *(tta_probabilities or [])]:
            if tuple(np.shape(q)[1:]) != spatial:
                raise ValueError(
                    f"the annotation has shape {spatial} but the probabilities "
                    f"{tuple(np.shape(q))}: give the annotation of the predicted scan"
                )
        sums = _slice_sums(p, annotation, method, tta_probabilities, ax_list)
    done = painted_slices(annotation)
    full = annotation > 0
    letters = _axis_letters(annotation.ndim)
    picked: list[Suggestion] = []
    # per axis: score, distance to the nearest annotated/picked slice, still available
    state: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray | None]] = {}
    for a in ax_list:
        n = spatial[a]
        taken = np.asarray(done[letters[a]], dtype=np.intp)
        idx = np.arange(n)
        dist = (
            np.abs(idx[:, None] - taken[None, :]).min(axis=1).astype(float)
            if taken.size
            else np.full(n, np.inf)
        )
        others = tuple(b for b in range(annotation.ndim) if b != a)
        # a slice annotated everywhere needs nothing
        avail = cast(np.ndarray, ~full.all(axis=others))
        avail[taken] = False
        gap = _auto_min_distance(n) if min_distance is None else max(1, int(min_distance))
        if sums is not None:
            num, den = sums[a]
            area = math.prod(s for b, s in enumerate(spatial) if b != a)
            score = num / (den + _PRIOR_FRACTION * area)
        else:
            score = np.zeros(n)
        state[a] = (score, dist, avail, gap, sums[a][1] if sums is not None else None)
    for _ in range(int(top)):
        best = None
        for relaxed in (False, True):
            for a, (score, dist, avail, gap, _den) in state.items():
                ok = avail & ((dist >= gap) | relaxed)
                if not ok.any():
                    continue
                s = _spread(dist, spatial[a])
                if sums is not None:
                    s = score * s if spread else score
                i = int(np.flatnonzero(ok)[np.argmax(s[ok])])
                if best is None or s[i] > best[2]:
                    best = (a, i, float(s[i]))
            if best is not None:
                break
        if best is None:
            break
        a, i, best_score = best
        _, dist, avail, _, held = state[a]
        reason = _reason(method, best_score, dist[i], held[i] if held is not None else None)
        picked.append(Suggestion(axis=a, index=i, score=best_score, reason=reason))
        avail[i] = False
        np.minimum(dist, np.abs(np.arange(spatial[a]) - i), out=dist)
    return picked


def still_open(annotation: np.ndarray, suggestions: Sequence[Suggestion]) -> list[Suggestion]:
    """The suggestions whose slice is still unpainted in ``annotation`` ``(*spatial)``
    (painted since the ranking: as :func:`painted_slices` sees it, or every voxel of the
    slice annotated), in their order."""
    annotation = np.asarray(annotation)
    done = painted_slices(annotation)
    letters = _axis_letters(annotation.ndim)
    out = []
    for s in suggestions:
        if s.index in done[letters[s.axis]] or (np.take(annotation, s.index, s.axis) > 0).all():
            continue
        out.append(s)
    return out


def _spread(dist: np.ndarray, n: int) -> np.ndarray:
    """Diversity score: distance to the nearest annotated/picked slice as a share of the
    axis, the borders counting as annotated slices half a gap away (so that the first
    pick on an empty axis is its middle, and picks fill the largest gaps)."""
    idx = np.arange(n)
    border = 2.0 * np.minimum(idx + 0.5, n - 0.5 - idx)
    return np.minimum(dist, border) / n


def _reason(method: str, score: float, dist: float, weight: float | None) -> str:
    near = (
        "no annotated slice on this axis yet"
        if math.isinf(dist)
        else f"{int(dist)} slice(s) from the nearest annotated or suggested slice"
    )
    if method == "diversity":
        return f"far from the annotated slices: {near}"
    what = {
        "entropy": "mean uncertainty (entropy)",
        "margin": "mean uncertainty (1 - margin)",
        "tta": "mean disagreement between flipped predictions",
    }[method]
    region = f" over {weight:,.0f} likely-foreground voxels" if weight is not None else ""
    return f"{what} {score:.3f}{region}; {near}"


# The model-driven helpers live in :mod:`.suggest_model` (they import torch through the
# predictor); their names stay importable from here.
_MODEL_NAMES = ("flip_probabilities", "suggest_for", "suggest_from_files")


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from . import suggest_model

        return getattr(suggest_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
