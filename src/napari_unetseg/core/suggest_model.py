"""Slice suggestions driven by a model: predict (with flips for test-time
augmentation), then rank with :func:`~.suggest.suggest_slices`; and the file-to-file
form the ``unetseg suggest`` command calls."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .suggest import DEFAULT_METHOD, METHODS, Suggestion, suggest_slices


def flip_probabilities(
    checkpoint: Any, image: np.ndarray, config: Any = None, cancel=None, quiet: bool = True
) -> list[np.ndarray]:
    """Predictions ``[(K, *spatial), ...]`` of the image ``(C, *spatial)`` flipped along
    each spatial axis, each flipped back (one prediction of the volume per axis)."""
    from .inference import predict
    from .progress import drain

    image = np.asarray(image)
    spatial_dims = int(checkpoint.config.model.spatial_dims)
    if image.ndim == spatial_dims:
        image = image[None]
    out = []
    for a in range(spatial_dims):
        flipped = np.ascontiguousarray(np.flip(image, axis=1 + a))
        done = drain(
            predict(checkpoint, flipped, config, keep_probabilities=True, cancel=cancel),
            f"predicting flipped {'zyx'[3 - spatial_dims + a]}",
            quiet,
        )
        if done.cancelled:
            break
        out.append(np.ascontiguousarray(np.flip(done.result.probabilities, axis=1 + a)))
    return out


def check_channels(
    checkpoint: Any, image: np.ndarray, spatial_ndim: int, what: str = "the image"
) -> None:
    """Raise a one-line ValueError when ``image`` ``(C, *spatial)`` (or ``(*spatial)``
    for one channel, ``spatial_ndim`` axes) does not hold the model's channel count."""
    want = int(checkpoint.config.model.in_channels)
    have = int(image.shape[0]) if image.ndim > spatial_ndim else 1
    if have != want:
        raise ValueError(
            f"the model was trained on {want} channel(s) but {what} holds {have}: give the "
            "same channels, in the same order, as for training"
        )


def suggest_events(
    checkpoint: Any,
    image: np.ndarray,
    annotation: np.ndarray,
    *,
    top: int = 10,
    axes: str = "zyx",
    method: str = DEFAULT_METHOD,
    min_distance: int | None = None,
    spread: bool = False,
    config: Any = None,
    spacing: Sequence[float] | None = None,
    cancel: Any = None,
) -> Iterator[Any]:
    """:func:`suggest_for` as a generator of events, for a worker thread.

    Yields the Info and Progress events of the prediction(s) (``Progress.stage`` names
    which one), then ``Done`` whose ``result`` is the list of :class:`Suggestion`, best
    first (empty and ``cancelled=True`` when ``cancel`` was set). Arguments as for
    :func:`suggest_for`; ``spacing``: the scan's voxel spacing in array order (for models
    trained at a target spacing).
    """
    from .checkpoint import Checkpoint, load_checkpoint
    from .events import Cancelled, Done, Progress
    from .inference import predict

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    annotation = np.asarray(annotation)
    image = np.asarray(image)
    spatial = tuple(image.shape[-annotation.ndim :]) if image.ndim >= annotation.ndim else ()
    if spatial != tuple(annotation.shape):
        raise ValueError(
            f"the annotation has shape {tuple(annotation.shape)} but the image "
            f"{tuple(image.shape)}: give the annotation made for this image"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    check_channels(ckpt, image, annotation.ndim)
    if image.ndim == annotation.ndim:
        image = image[None]
    probabilities, tta = None, []
    if method != "diversity":
        flips = range(annotation.ndim) if method == "tta" else ()
        for flip in (None, *flips):
            letter = "" if flip is None else "zyx"[3 - annotation.ndim + flip]
            stage = f"predicting flipped {letter}" if letter else "predicting"
            src = image if flip is None else np.ascontiguousarray(np.flip(image, 1 + flip))
            done = None
            try:
                for ev in predict(
                    ckpt, src, config, spacing=spacing, keep_probabilities=True, cancel=cancel
                ):
                    if isinstance(ev, Done):
                        done = ev
                    elif isinstance(ev, Progress):
                        yield Progress(ev.done, ev.total, stage)
                    else:
                        yield ev
            except Cancelled:
                done = None
            if done is None or done.cancelled or done.result is None:
                yield Done(result=[], cancelled=True, message="suggestion cancelled")
                return
            p = done.result.probabilities
            if flip is None:
                probabilities = p
            else:
                tta.append(np.ascontiguousarray(np.flip(p, axis=1 + flip)))
    yield Progress(0, 1, "ranking slices")
    picks = suggest_slices(
        probabilities,
        annotation,
        top=top,
        axes=axes,
        method=method,
        tta_probabilities=tta or None,
        min_distance=min_distance,
        spread=spread,
    )
    yield Progress(1, 1, "ranking slices")
    yield Done(result=picks, message=f"{len(picks)} slice(s) suggested")


def suggest_for(
    checkpoint: Any,
    image: np.ndarray,
    annotation: np.ndarray,
    *,
    top: int = 10,
    axes: str = "zyx",
    method: str = DEFAULT_METHOD,
    min_distance: int | None = None,
    spread: bool = False,
    config: Any = None,
    cancel: Any = None,
    quiet: bool = True,
) -> list[Suggestion]:
    """Predict ``image`` with ``checkpoint`` (keeping probabilities), then rank the slices.

    Args:
        checkpoint: a Checkpoint or the path of a model file.
        image: raw ``(C, *spatial)`` intensities (a single channel may omit C).
        annotation: ``(*spatial)`` annotation of that image.
        config: an InferConfig; default: the model's own.
        cancel: a CancelToken, checked between forward passes (a cancelled run returns
            an empty list).
        quiet: no progress bar on stderr.
        top, axes, method, min_distance, spread: as in :func:`suggest_slices`.

    Returns:
        The suggestions, best first.

    Widgets: run :func:`suggest_events` in a worker thread (it reports progress); for a
    model already predicted, call :func:`suggest_slices` with the kept probabilities
    instead (no forward pass).
    """
    from .progress import drain

    done = drain(
        suggest_events(
            checkpoint,
            image,
            annotation,
            top=top,
            axes=axes,
            method=method,
            min_distance=min_distance,
            spread=spread,
            config=config,
            cancel=cancel,
        ),
        "suggesting",
        quiet,
    )
    return list(done.result or [])


def suggest_from_files(
    model: Any,
    images: Sequence[Any],
    labels: Any,
    *,
    top: int = 10,
    axes: str = "zyx",
    method: str = DEFAULT_METHOD,
    min_distance: int | None = None,
    spread: bool = False,
    quiet: bool = True,
) -> list[Suggestion]:
    """:func:`suggest_for` on files: a model file, image file(s) (one per channel group)
    and the annotation file of that scan. Errors name the file at fault.
    """
    from .checkpoint import load_checkpoint
    from .io import read_channels, read_labels
    from .jobs import check_same_geometry

    ckpt = load_checkpoint(model)
    image, meta = read_channels(images)
    want = int(ckpt.config.model.in_channels)
    if image.shape[0] != want:
        names = ", ".join(str(p) for p in images)
        raise ValueError(
            f"the model {model} was trained on {want} channel(s) but {names} hold(s) "
            f"{image.shape[0]}: give the same channels, in the same order, as for training"
        )
    annotation, ann_meta = read_labels(labels)
    if tuple(annotation.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"{labels} has shape {tuple(annotation.shape)} but the image "
            f"{tuple(image.shape[1:])}: give the annotation made for this scan"
        )
    check_same_geometry(meta, ann_meta, labels)
    return suggest_for(
        ckpt,
        image,
        annotation,
        top=top,
        axes=axes,
        method=method,
        min_distance=min_distance,
        spread=spread,
        quiet=quiet,
    )


def accepted_plane(
    annotation: np.ndarray, prediction: np.ndarray, overwrite: bool = False
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The edit that copies a predicted slice into an annotation slice.

    Args:
        annotation: ``(Y, X)`` (any 2D plane) annotation values (0 = not annotated,
            1 = background, 2.. = classes or objects).
        prediction: the same plane of a prediction (0 = background, k = class k or
            object k); it becomes annotation value ``k + 1``.
        overwrite: also replace voxels the user painted (default: only unannotated ones).

    Returns:
        ``(indices, values)``: the in-plane coordinates (a tuple of two index arrays) of
        the voxels that change, and their new values.
    """
    annotation = np.asarray(annotation)
    prediction = np.asarray(prediction)
    if annotation.shape != prediction.shape:
        raise ValueError(
            f"the prediction's slice has shape {prediction.shape} but the annotation's "
            f"{annotation.shape}: predict the image this annotation belongs to"
        )
    if prediction.size and int(prediction.min()) < 0:
        raise ValueError("the prediction holds negative values: choose a labels prediction")
    new = prediction.astype(np.int64) + 1
    change = new != annotation
    if not overwrite:
        change &= annotation == 0
    hits = np.nonzero(change)
    return hits, new[hits]
