"""Slice suggestions driven by a model: predict (with flips for test-time
augmentation), then rank with :func:`~.suggest.suggest_slices`; and the file-to-file
form the ``unetseg suggest`` command calls."""

from __future__ import annotations

from collections.abc import Sequence
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
        cancel: a CancelToken, checked between forward passes (a cancelled prediction
            raises :class:`~.events.Cancelled`, as :func:`~.inference.predict` does).
        quiet: no progress bar on stderr.
        top, axes, method, min_distance, spread: as in :func:`suggest_slices`.

    Returns:
        The suggestions, best first.

    Widgets: run it in a worker thread; for a model already predicted, call
    :func:`suggest_slices` with the kept probabilities instead (no forward pass).
    """
    from .checkpoint import Checkpoint, load_checkpoint
    from .inference import predict
    from .progress import drain

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
    probabilities, tta = None, None
    if method != "diversity":
        done = drain(
            predict(ckpt, image, config, keep_probabilities=True, cancel=cancel),
            "predicting",
            quiet,
        )
        if done.cancelled:
            return []
        probabilities = done.result.probabilities
        if method == "tta":
            tta = flip_probabilities(ckpt, image, config, cancel, quiet)
            if len(tta) < int(ckpt.config.model.spatial_dims):
                return []
    return suggest_slices(
        probabilities,
        annotation,
        top=top,
        axes=axes,
        method=method,
        tta_probabilities=tta,
        min_distance=min_distance,
        spread=spread,
    )


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
