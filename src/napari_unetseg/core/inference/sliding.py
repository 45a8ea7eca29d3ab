"""Sliding-window prediction of any network: finished slabs, or the whole probability map.

A volume larger than the network's training patch is cut into overlapping windows of the
patch size (:mod:`.windows`); the windows go through the network in batches and their
logits are blended (:mod:`.engine`). Images are channels first, ``(C, Z, Y, X)`` or
``(C, Y, X)``; probabilities are ``(K, Z, Y, X)`` / ``(K, Y, X)``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..config import InferConfig
from ..events import CancelToken, Done, Event, Info, Progress
from .engine import Slab, Transform, _Engine
from .memory import _oom_errors, _ShrinkWindow, _smaller_window, auto_window_batch
from .windows import _check_image, _check_window, check_window_layout

if TYPE_CHECKING:
    import torch


def sliding_window_slabs(
    model: torch.nn.Module,
    image: np.ndarray,
    window: Sequence[int],
    config: InferConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    cancel: CancelToken | None = None,
    transform: Transform | None = None,
    steps: Sequence[float] | None = None,
    _destination: Callable[[int], np.ndarray] | None = None,
) -> Iterator[Event | Slab]:
    """Predict ``image`` window by window, yielding finished :class:`Slab` objects.

    Args:
        model: a ``torch.nn.Module`` already on ``device`` (in eval mode) that maps
            ``(B, C, *window)`` to logits ``(B, K, *window)``.
        image: normalised ``(C, Z, Y, X)`` or ``(C, Y, X)`` float32.
        window: window size per spatial axis (usually the training patch size).
        config: overlap, blending, windows per forward pass, flip TTA.
        device: where the network runs.
        dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``) or ``None``.
        cancel: checked before every forward pass; raises
            :class:`~napari_unetseg.core.events.Cancelled`.
        transform: optional callable applied to every window of ``image`` before the
            network, ``(C, *crop)`` array -> ``(C, *crop)`` float32, e.g.
            :meth:`Normalizer.apply <napari_unetseg.core.data.Normalizer.apply>`: then
            ``image`` may be the raw image and no normalised copy of the whole volume is
            made.
        steps: the step between windows per spatial axis, instead of
            ``window * (1 - overlap)`` (:func:`~.windows.inference_layout` gives both);
            dropped if the window is halved after running out of memory.
        _destination: internal: ``K -> (K, *spatial)`` float32 array that the finished
            slabs are written into (their probabilities are then views of it), as
            :func:`sliding_window` passes its result.

    Yields:
        :class:`Progress` (windows done / total), :class:`Info` (fallbacks taken, e.g.
        fewer windows per pass after running out of GPU memory) and :class:`Slab` objects
        covering the first spatial axis in order, without gaps. If a single window does
        not fit into GPU memory the window is halved and the slabs start again from 0
        (after an :class:`Info` that says so), so consumers should write slabs by their
        ``start``/``stop`` rather than append them.

    Raises:
        ValueError: a bad image or window, or windows far too small for the image (see
            :func:`~.windows.check_window_layout`).
    """
    import torch

    config = config if config is not None else InferConfig()
    config.validate()
    image = _check_image(image, convert=transform is None)
    window = _check_window(window, image.ndim - 1)
    run_steps = None if steps is None else tuple(float(t) for t in steps)
    check_window_layout(image.shape[1:], window, config.overlap, steps=run_steps)
    device = torch.device(device)
    batch = config.window_batch or auto_window_batch(window, device, model)

    prev_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one fixed window size: tune once
    try:
        while True:
            try:
                batch = yield from _slabs_one_window(
                    model,
                    image,
                    window,
                    config,
                    device,
                    dtype,
                    batch,
                    cancel,
                    transform,
                    run_steps,
                    _destination,
                )
                return
            except _ShrinkWindow as e:
                yield Info(
                    f"out of memory with one window of {window}; retrying with windows of "
                    f"{e.window}",
                    level="warning",
                )
                window = e.window
                run_steps = None  # the halved window steps by its own overlap
                batch = 1
    finally:
        torch.backends.cudnn.benchmark = prev_benchmark


def _slabs_one_window(
    model: torch.nn.Module,
    image: np.ndarray,
    window: tuple[int, ...],
    config: InferConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    batch: int,
    cancel: CancelToken | None,
    transform: Transform | None,
    steps: tuple[float, ...] | None = None,
    destination: Callable[[int], np.ndarray] | None = None,
) -> Generator[Event | Slab, None, int]:
    """:func:`sliding_window_slabs` for one window size; returns the final window batch.

    Raises :class:`_ShrinkWindow` when one window alone does not fit into memory.
    """
    import torch

    eng = _Engine(model, image, window, config, device, dtype, batch, transform, steps)
    eng.destination = destination
    starts = eng.starts
    total = len(starts)
    yield Progress(0, total, "predicting")
    i = 0
    while i < total:
        if cancel is not None:
            cancel.raise_if_cancelled()
        chunk = starts[i : i + batch]
        if eng.row_bounded(batch):
            chunk = [s for s in chunk if s[0] == chunk[0][0]]
        oom_message = ""
        try:
            logits: torch.Tensor | None = eng.predict_batch(chunk)
        except _oom_errors() as e:
            # leave the except block before freeing memory: the traceback holds the frames
            # (and tensors) of the failed forward pass until then
            oom_message = str(e).splitlines()[0] if str(e) else "out of memory"
            logits = None
        if logits is None:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                yield Info(
                    f"out of memory with {len(chunk)} windows per pass; retrying with {batch}",
                    level="warning",
                )
                continue
            smaller = _smaller_window(window, model)
            if smaller is None:
                raise RuntimeError(
                    f"{oom_message}: out of memory even with one window of the smallest "
                    "size; predict on the CPU (device 'cpu') or free memory on the device"
                )
            raise _ShrinkWindow(smaller)
        info = eng.accumulate(chunk, logits)
        del logits
        if info is not None:
            yield info
        i += len(chunk)
        yield Progress(i, total, "predicting")
        upto = starts[i][0] if i < total else image.shape[1]
        slab = eng.finish(upto)
        if slab is not None:
            yield slab
        del slab  # the consumer has it; do not hold it while the next one is computed
    return batch


def sliding_window(
    model: torch.nn.Module,
    image: np.ndarray,
    window: Sequence[int],
    config: InferConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    cancel: CancelToken | None = None,
    transform: Transform | None = None,
    steps: Sequence[float] | None = None,
) -> Iterator[Event]:
    """Sliding-window softmax probabilities of ``model`` over ``image``.

    Same arguments as :func:`sliding_window_slabs`. Yields :class:`Progress` and
    :class:`Info` events, then a :class:`Done` whose ``result`` is the probabilities
    ``(K, *spatial)`` float32: the softmax of the Gaussian-blended logits.
    """
    image = _check_image(image, convert=transform is None)
    probs: np.ndarray | None = None

    def destination(k: int) -> np.ndarray:
        # the slabs are written straight into the result: no copy of each slab
        nonlocal probs
        if probs is None or probs.shape[0] != k:
            probs = np.empty((k, *image.shape[1:]), dtype=np.float32)
        return probs

    for item in sliding_window_slabs(
        model,
        image,
        window,
        config,
        device=device,
        dtype=dtype,
        cancel=cancel,
        transform=transform,
        steps=steps,
        _destination=destination,
    ):
        if isinstance(item, Slab):
            if probs is None or item.probabilities.base is not probs:  # not written in place
                destination(item.probabilities.shape[0])[:, item.start : item.stop] = (
                    item.probabilities
                )
        else:
            yield item
    yield Done(result=probs)
