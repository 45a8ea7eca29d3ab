"""Prediction with a trained model: checks against the checkpoint, then labels.

:func:`predict` takes a :class:`~napari_unetseg.core.checkpoint.Checkpoint` and a raw image
``(C, Z, Y, X)`` / ``(C, Y, X)``, normalises every window as the training image was
normalised, runs :func:`~.sliding.sliding_window_slabs` and turns each finished slab into
labels (and, for the instance task, boundaries and watershed objects).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import InferConfig
from ..events import CancelToken, Done, Event, Info
from .engine import Slab
from .memory import auto_window_batch
from .sliding import sliding_window_slabs
from .windows import _check_window, _fmt, _step_note, check_window_layout, inference_layout


@dataclass
class Prediction:
    """The result of :func:`predict`. Spatial axes are ``(Z, Y, X)`` or ``(Y, X)``.

    Attributes:
        labels: ``(*spatial)`` uint8. Semantic task: 0 = background, k = k-th foreground
            class. Instance task: 1 where the network sees an object (foreground mask).
        probabilities: ``(K, *spatial)`` softmax probabilities (K = classes including the
            background; for the instance task K = 3: background, interior, boundary), or
            ``None`` when they were not kept. float32 unless float16 was requested.
        boundaries: ``(*spatial)`` float32 boundary probability (instance task) or ``None``.
        instances: ``(*spatial)`` int32 object ids, 0 = background (instance task) or
            ``None``.
        task: ``"semantic"`` or ``"instances"``.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    boundaries: np.ndarray | None = None
    instances: np.ndarray | None = None
    task: str = "semantic"


# --------------------------------------------------------------------------- checks


def _model_name(checkpoint: Any) -> str:
    """How messages name the model: its file when the checkpoint knows it."""
    path = getattr(checkpoint, "path", None)
    return f"the model file {path}" if path else "the model"


def _validate_against_checkpoint(
    checkpoint: Any, image: np.ndarray, window: Sequence[int] | None = None
) -> np.ndarray:
    """The image as ``(C, *spatial)`` with the model's channels and dimensions.

    A single-channel image may come without its channel axis. A 3D model refuses a 2D
    image, and a single slice ``(C, 1, Y, X)`` unless its windows (``window``, else the
    training patch) are one slice deep: the network would see the slice repeated along Z,
    which it never saw in training.
    """
    cfg = checkpoint.config.model
    image = np.asarray(image)
    d = cfg.spatial_dims
    if image.ndim == d and cfg.in_channels == 1:
        image = image[None]  # a single-channel image given without its channel axis
    axes = "(C, Z, Y, X)" if d == 3 else "(C, Y, X)"
    if d == 3 and image.ndim < d + 1:
        raise ValueError(
            f"the model is 3D but the image is 2D (shape {image.shape}); predict a volume "
            f"{axes} with this model, or train a 2D model for 2D images"
        )
    if image.ndim != d + 1:
        raise ValueError(
            f"the model is {d}D and needs an image {axes}; got an array of shape {image.shape}"
        )
    c = image.shape[0]
    if c != cfg.in_channels:
        raise ValueError(
            f"the model was trained on {cfg.in_channels} channel(s) but the image has {c} "
            f"(shape {image.shape}, channels first {axes}); give the same channels, in the "
            "same order, as for training"
        )
    if min(image.shape[1:]) < 1:
        raise ValueError(f"the image is empty: shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"the image must hold real numbers, not {image.dtype}")
    if d == 3 and image.shape[1] == 1:
        win = window if window is not None else checkpoint.config.data.patch_size
        if win is None or int(win[0]) > 1:
            deep = f" (its windows are {_fmt(win)} voxels, Z Y X)" if win is not None else ""
            raise ValueError(
                f"the model is 3D{deep} but the image is 2D (a single slice, shape "
                f"{image.shape}); predict a volume {axes} with several slices, or train a "
                "2D model for 2D images"
            )
    return image


def _check_weights(checkpoint: Any) -> None:
    """Refuse a checkpoint whose weights hold NaN or infinite values (one pass over them)."""
    state = getattr(checkpoint, "state_dict", None)
    if not isinstance(state, Mapping):
        return
    import torch

    for name, tensor in state.items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            from ..checkpoint import CheckpointError

            raise CheckpointError(
                f"{_model_name(checkpoint)} holds NaN or infinite weights ({name}): it is "
                "damaged; retrain or load another model"
            )


def _check_output(probabilities: np.ndarray, checkpoint: Any, precision: str) -> None:
    """Refuse probabilities ``(K, ...)`` that are not finite (cheap: one sum)."""
    if math.isfinite(float(probabilities.sum())):
        return
    from ..checkpoint import CheckpointError

    hint = ""
    if precision != "float32":
        hint = f", or predict with precision float32 (not {precision})"
    raise CheckpointError(
        f"{_model_name(checkpoint)} produced NaN: its weights are damaged; retrain or load "
        f"another model{hint}"
    )


def _default_window(checkpoint: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The training patch size; for a hand-made config without one, a capped image size."""
    patch = checkpoint.config.data.patch_size
    if patch is not None:
        return tuple(int(p) for p in patch)
    # A checkpoint always stores its resolved patch; this covers hand-made configs.
    cap = (64, 128, 128) if len(shape) == 3 else (256, 256)
    return tuple(min(s, c) for s, c in zip(shape, cap))


def prediction_layout(
    checkpoint: Any,
    shape: tuple[int, ...],
    overlap: float,
    divisor: Any = None,
    grow: bool = True,
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The window ``predict`` uses for an image of spatial ``shape`` and the step between
    windows per axis: the training patch (:func:`_default_window`) with added context,
    grown where that saves windows unless ``grow`` is off (:func:`.windows.inference_layout`,
    ``InferConfig.grow_windows``). Whole-volume and blockwise prediction both take it
    from here, so they agree."""
    patch = _default_window(checkpoint, shape)
    return inference_layout(shape, patch, overlap, divisor, grow)


def prediction_window(
    checkpoint: Any,
    shape: tuple[int, ...],
    overlap: float,
    divisor: Any = None,
    grow: bool = True,
) -> tuple[int, ...]:
    """The window of :func:`prediction_layout` (without its steps)."""
    return prediction_layout(checkpoint, shape, overlap, divisor, grow)[0]


class _Normalize:
    """The per-window transform: ``(C, *crop)`` raw -> ``(C, *crop)`` float32, normalised
    as the training image was (``normalizer`` ``None``: only converted)."""

    def __init__(self, normalizer: Any):
        self.normalizer = normalizer

    def __call__(self, window_image: np.ndarray) -> np.ndarray:
        if np.issubdtype(window_image.dtype, np.floating) and not np.isfinite(window_image).all():
            raise ValueError(
                "the image contains NaN or infinite values; replace them (e.g. with "
                "numpy.nan_to_num(image, nan=0.0)) before predicting"
            )
        if self.normalizer is None:
            return window_image.astype(np.float32, copy=False)
        return self.normalizer.apply(window_image)


# --------------------------------------------------------------------------- predict


def predict_grid(
    checkpoint: Any,
    image: np.ndarray,
    config: InferConfig | None = None,
    *,
    keep_probabilities: bool = True,
    cancel: CancelToken | None = None,
    window: Sequence[int] | None = None,
    probabilities_dtype: str = "float32",
) -> Iterator[Event]:
    """Predict a raw image with a trained model in the model's own grid and dimensions
    (use :func:`~.front.predict`, which also handles spacing and 2D-on-3D models).

    Args:
        checkpoint: a :class:`~napari_unetseg.core.checkpoint.Checkpoint`.
        image: raw (not normalised) ``(C, Z, Y, X)`` / ``(C, Y, X)``, the channels the
            model was trained on; a single-channel image may omit the channel axis.
        config: prediction settings; ``None`` = those stored in the checkpoint.
        keep_probabilities: also return the ``(K, *spatial)`` probabilities. Without them
            a semantic prediction holds only the labels and one slab of probabilities at a
            time.
        cancel: checked between forward passes.
        window: window size per spatial axis; default: :func:`prediction_window` (the
            training patch, grown along axes little longer than it).
        probabilities_dtype: ``"float32"`` or ``"float16"`` (half the memory) for the
            kept probabilities.

    Yields:
        :class:`Info` (device, windows and plan), :class:`Progress` (windows), then
        :class:`Done` whose ``result`` is a :class:`Prediction`.

    Raises:
        ValueError: before predicting, for an image that does not fit the model (channels,
            a 2D image for a 3D model) or windows far too small for the image.
        CheckpointError: weights that hold NaN or infinite values, before predicting, or
            a network that produces them.
    """
    from ..device import autocast_dtype, select_device
    from ..postprocess import instance_labels, remove_small_components, semantic_labels

    if probabilities_dtype not in ("float32", "float16"):
        raise ValueError(
            f"probabilities_dtype must be 'float32' or 'float16', not {probabilities_dtype!r}"
        )
    config = config if config is not None else checkpoint.config.infer
    config.validate()
    dims = int(checkpoint.config.model.spatial_dims)
    win = _check_window(window, dims) if window is not None else None
    image = _validate_against_checkpoint(checkpoint, image, win)
    spatial = tuple(image.shape[1:])
    task = checkpoint.task
    k = int(checkpoint.num_outputs)
    if task == "instances" and k != 3:
        raise ValueError(
            f"an instance model must have 3 outputs (background, interior, boundary), "
            f"this one has {k}"
        )
    _check_weights(checkpoint)

    device, description = select_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    t0 = time.perf_counter()
    transform = _Normalize(checkpoint.normalizer)

    model = checkpoint.build_model(device)
    divisor = getattr(model, "divisor", None)
    steps: tuple[float, ...] | None = None
    if win is None:
        win, steps = prediction_layout(
            checkpoint, spatial, config.overlap, divisor, config.grow_windows
        )
    n = check_window_layout(spatial, win, config.overlap, divisor, steps)
    batch = config.window_batch or auto_window_batch(win, device, model)
    precision = "float32" if dtype is None else str(dtype).replace("torch.", "")
    yield Info(f"predicting on {description}, {precision}")
    yield Info(
        f"{n} window(s) of {'x'.join(map(str, win))} over {'x'.join(map(str, spatial))}, "
        f"overlap {config.overlap:g}{_step_note(win, config.overlap, steps)}, {batch} per "
        f"pass, {config.blend} blending" + (", flip test-time augmentation" if config.tta else "")
    )

    keep = keep_probabilities or task == "instances"
    # probabilities kept only for the watershed are stored in float16
    half = probabilities_dtype == "float16" or not keep_probabilities
    pdtype = np.float16 if half else np.float32
    probs = np.empty((k, *spatial), dtype=pdtype) if keep else None
    labels = np.zeros(spatial, dtype=np.uint8)
    boundaries = np.empty(spatial, dtype=np.float32) if task == "instances" else None
    run_cfg = dataclasses.replace(config, window_batch=batch)
    for item in sliding_window_slabs(
        model,
        image,
        win,
        run_cfg,
        device=device,
        dtype=dtype,
        cancel=cancel,
        transform=transform,
        steps=steps,
    ):
        if not isinstance(item, Slab):
            yield item
            continue
        sl = slice(item.start, item.stop)
        p = item.probabilities
        _check_output(p, checkpoint, precision)
        if boundaries is not None:  # the instance task
            labels[sl] = p[0] < 0.5
            boundaries[sl] = p[2]
        else:
            # a few slices at a time: the argmax temporaries (a transposed copy of the
            # probabilities and int64 indices) stay small
            step = max(1, (1 << 20) // max(1, math.prod(p.shape[2:])))
            for j in range(0, p.shape[1], step):
                stop = min(j + step, p.shape[1])
                labels[item.start + j : item.start + stop] = semantic_labels(
                    p[:, j:stop], threshold=config.threshold
                )
        if probs is not None:
            probs[:, sl] = p
        del item, p  # free this slab before the next one is computed

    instances = None
    if task == "instances":
        assert probs is not None  # kept for the watershed whatever keep_probabilities says
        instances = instance_labels(
            probs, interior_threshold=config.interior_threshold, min_size=config.min_size
        )
    elif config.min_size > 1:
        remove_small_components(labels, config.min_size)
    if task == "instances" and not keep_probabilities:
        probs = None
    seconds = time.perf_counter() - t0
    result = Prediction(
        labels=labels, probabilities=probs, boundaries=boundaries, instances=instances, task=task
    )
    yield Done(result=result, message=f"predicted in {seconds:.1f} s", extra={"seconds": seconds})
