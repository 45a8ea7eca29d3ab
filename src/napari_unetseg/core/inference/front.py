"""The prediction front: a scan in its own grid in, labels in that same grid out.

:func:`predict` is what every caller uses (command line, batch, widgets, API). It adapts
the scan to how the model was trained, then calls the sliding-window engine
(:func:`~.prediction.predict_grid`) and brings the result back:

* **normalisation per image**: a model trained with z-score per case (MRI-like data)
  computes the statistics of each scan it predicts (``Normalizer.for_image``);
* **spacing**: a model trained at a target spacing (cases of different spacings) gets
  the scan resampled to it; the probabilities are resampled back to the scan's grid and
  post-processed there, so the labels line up voxel for voxel with the scan;
* **2D networks on volumes**: a 2D model trained on the slices of volumes predicts the
  slices along its ``slice_axis`` one by one and stacks them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..config import InferConfig
from ..events import CancelToken, Done, Event, Info, Progress
from .prediction import Prediction, predict_grid


def _fixed_normalizer(checkpoint: Any, image: np.ndarray) -> Any:
    norm = checkpoint.normalizer
    if norm is None or not getattr(norm, "per_image", False):
        return checkpoint
    return dataclasses.replace(checkpoint, normalizer=norm.for_image(image))


def _as_channels(checkpoint: Any, image: np.ndarray, image_dims: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == image_dims:  # one channel given without its axis
        image = image[None]
    return image


def postprocess(probs: np.ndarray, task: str, config: InferConfig) -> Prediction:
    """Labels (and boundaries, instances) from probabilities ``(K, *spatial)``."""
    from ..postprocess import instance_labels, semantic_labels

    if task == "instances":
        return Prediction(
            labels=(probs[0] < 0.5).astype(np.uint8),
            probabilities=probs,
            boundaries=np.asarray(probs[2], dtype=np.float32),
            instances=instance_labels(
                probs, interior_threshold=config.interior_threshold, min_size=config.min_size
            ),
            task=task,
        )
    labels = semantic_labels(probs, min_size=config.min_size, threshold=config.threshold)
    return Prediction(
        labels=labels, probabilities=probs, boundaries=None, instances=None, task=task
    )


def _run(events: Iterator[Event], progress_stage: str | None = None):
    """Forward events (except Done, and progress when ``progress_stage`` is None), then
    return the Done's Prediction."""
    result = None
    for ev in events:
        if isinstance(ev, Done):
            result = ev.result
        elif isinstance(ev, Progress) and progress_stage is None:
            continue
        else:
            yield ev
    return result


def predict(
    checkpoint: Any,
    image: np.ndarray,
    config: InferConfig | None = None,
    *,
    spacing: Sequence[float] | None = None,
    keep_probabilities: bool = True,
    cancel: CancelToken | None = None,
    window: Sequence[int] | None = None,
    probabilities_dtype: str = "float32",
) -> Iterator[Event]:
    """Predict a raw scan with a trained model, in the scan's own grid.

    Args:
        checkpoint: a :class:`~napari_unetseg.core.checkpoint.Checkpoint`.
        image: raw ``(C, Z, Y, X)`` / ``(C, Y, X)`` intensities, the model's channels in
            its order (a single channel may omit C).
        config: prediction settings; ``None`` = those stored in the model.
        spacing: the scan's voxel spacing in array order; needed only by models trained
            at a target spacing (otherwise the scan is predicted in its own grid).
        keep_probabilities, cancel, window, probabilities_dtype: as for
            :func:`~.prediction.predict_grid`.

    Yields:
        Info, Progress, then Done whose ``result`` is a :class:`Prediction` in the
        scan's grid.
    """
    config = config if config is not None else checkpoint.config.infer
    data = checkpoint.config.data
    net_dims = int(checkpoint.config.model.spatial_dims)
    image_dims = int(getattr(data, "image_dims", None) or net_dims)
    slices = net_dims == 2 and image_dims == 3 and np.ndim(image) in (3, 4)
    target = getattr(data, "target_spacing", None)
    resample = (
        target is not None
        and spacing is not None
        and len(tuple(spacing)) == len(tuple(target))
        and not np.allclose(np.asarray(spacing, float), np.asarray(target, float), rtol=0.01)
    )
    if not slices and not resample:
        image = np.asarray(image)
        ckpt = _fixed_normalizer(checkpoint, _as_channels(checkpoint, image, net_dims))
        yield from predict_grid(
            ckpt,
            image,
            config,
            keep_probabilities=keep_probabilities,
            cancel=cancel,
            window=window,
            probabilities_dtype=probabilities_dtype,
        )
        return

    t0 = time.perf_counter()
    image = _as_channels(checkpoint, image, 3 if slices else net_dims)
    checkpoint = _fixed_normalizer(checkpoint, image)
    grid_cfg = dataclasses.replace(config, min_size=0)
    original = tuple(image.shape[1:])
    if resample:
        from ..resample import resample_image

        assert target is not None
        assert spacing is not None
        image = resample_image(image, spacing, target, order=1)
        sp = " x ".join(f"{s:g}" for s in target)
        yield Info(f"resampled the scan to the model's spacing {sp} for prediction")
    if slices:
        axis = int(getattr(data, "slice_axis", 0) or 0)
        n = image.shape[1 + axis]
        probs = None
        yield Info(f"2D model: predicting {n} slice(s) along axis {'ZYX'[axis]}")
        for i in range(n):
            if cancel is not None and cancel.cancelled:
                yield Done(result=None, cancelled=True, message="cancelled")
                return
            plane = np.ascontiguousarray(np.take(image, i, axis=1 + axis))
            pred = yield from _run(
                predict_grid(
                    checkpoint,
                    plane,
                    grid_cfg,
                    keep_probabilities=True,
                    cancel=cancel,
                    window=window,
                ),
            )
            if pred is None:
                yield Done(result=None, cancelled=True, message="cancelled")
                return
            p = pred.probabilities
            if probs is None:
                probs = np.empty((p.shape[0], *image.shape[1:]), dtype=np.float32)
            index: list[Any] = [slice(None)] * probs.ndim
            index[1 + axis] = i
            probs[tuple(index)] = p
            yield Progress(i + 1, n, "slices")
    else:
        pred = yield from _run(
            predict_grid(
                checkpoint, image, grid_cfg, keep_probabilities=True, cancel=cancel, window=window
            ),
            progress_stage="windows",
        )
        if pred is None:
            yield Done(result=None, cancelled=True, message="cancelled")
            return
        probs = pred.probabilities
    assert probs is not None
    if resample:
        from ..resample import resample_to_shape

        probs = resample_to_shape(probs, original, order=1)
        probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-6)
    result = postprocess(probs.astype(np.float32, copy=False), checkpoint.task, config)
    if not keep_probabilities:
        result.probabilities = None
    elif probabilities_dtype == "float16":
        result.probabilities = probs.astype(np.float16)
    seconds = time.perf_counter() - t0
    yield Done(result=result, message=f"predicted in {seconds:.1f} s", extra={"seconds": seconds})


def predict_volume(
    checkpoint: Any,
    image: np.ndarray,
    config: InferConfig | None = None,
    *,
    spacing: Sequence[float] | None = None,
    keep_probabilities: bool = True,
    cancel: CancelToken | None = None,
    window: Sequence[int] | None = None,
    probabilities_dtype: str = "float32",
) -> Prediction:
    """Run :func:`predict` to the end and return its :class:`Prediction`."""
    done: Done | None = None
    for ev in predict(
        checkpoint,
        image,
        config,
        spacing=spacing,
        keep_probabilities=keep_probabilities,
        cancel=cancel,
        window=window,
        probabilities_dtype=probabilities_dtype,
    ):
        if isinstance(ev, Done):
            done = ev
    if done is None or not isinstance(done.result, Prediction):
        raise RuntimeError("the prediction ended without a result")
    return done.result
