"""Validation and previews of a training run (the evaluating half of the Trainer).

Validation items are ``(image, target)`` pairs: a normalised image ``(C, *spatial)``
float32 (may be memory-mapped) and a target ``(*spatial)`` with ``IGNORE_INDEX`` where a
voxel is not validated. A 2D network on volumes (``slice_axis`` set) is validated and
previewed slice by slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .annotations import IGNORE_INDEX, instance_target
from .config import Config, InferConfig
from .events import Done, Preview, Validation

if TYPE_CHECKING:
    from .data import Normalizer
    from .model import UNet
    from .planning import Plan

#: Validation predicts whole items up to this many voxels in all, else crops around the
#: held-out voxels up to this many voxels in total.
VALIDATION_VOXELS = 8_000_000


def _as_image(image: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.shape == spatial:
        image = image[None]  # one channel given without its channel axis
    if image.ndim != len(spatial) + 1 or tuple(image.shape[1:]) != spatial:
        axes = "(C, Z, Y, X)" if len(spatial) == 3 else "(C, Y, X)"
        raise ValueError(
            f"the image {image.shape} does not match the annotation {spatial}: give the "
            f"image as {axes} with the annotation's spatial shape"
        )
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"the image must hold real numbers, not {image.dtype}")
    return image


def _dense(array) -> np.ndarray:
    """A writable, C-contiguous float32 ndarray (a copy of memory-mapped data)."""
    if (
        isinstance(array, np.memmap)
        or not getattr(array, "flags", None)
        or not (array.flags.writeable)
    ):
        return np.array(array, dtype=np.float32, order="C")
    return np.ascontiguousarray(array, dtype=np.float32)


def prepare_validation(
    validation: Sequence[np.ndarray], cfg: Config, task: str, normalizer: Normalizer
) -> tuple[np.ndarray, np.ndarray]:
    """The given ``(image, dense_reference)`` as a validation item (image, target).

    The image is ``(C, *spatial)`` (one channel may omit C) and is normalised with
    ``normalizer``; the reference ``(*spatial)`` holds 0 = background, k = class / object
    id, and becomes the target of ``task``.
    """
    try:
        val_image, reference = validation
    except (TypeError, ValueError) as e:
        raise ValueError("validation must be a pair (image, dense_reference)") from e
    reference = np.asarray(reference)
    val_image = _as_image(val_image, tuple(reference.shape))
    if val_image.shape[0] != cfg.model.in_channels:
        raise ValueError(
            f"the validation image has {val_image.shape[0]} channel(s), the training "
            f"image {cfg.model.in_channels}"
        )
    if reference.ndim != (cfg.data.image_dims or cfg.model.spatial_dims):
        raise ValueError("the validation volume must have as many axes as the training one")
    if task == "instances":
        truth = instance_target(reference.astype(np.int64) + 1)
    else:
        truth = reference.astype(np.int64)
    return normalizer.for_image(val_image).apply(val_image), truth


class Monitoring:
    """Validation and previews; mixed into :class:`~.training.Trainer`, which sets the
    attributes declared here (model, device, patch size, validation items and crops)."""

    config: Config
    task: str
    metric_names: list[str]
    model: UNet
    device: torch.device
    amp_dtype: torch.dtype | None
    plan: Plan
    patch_size: tuple[int, ...]
    slice_axis: int | None
    #: the image previews show (C, *spatial); None after the Trainer is closed
    image: np.ndarray | None
    _val_items: list[tuple[np.ndarray, np.ndarray]]
    _val_crops: list[tuple[int, tuple[slice, ...]]]
    iteration: int
    history: list[dict]

    def _validation_crops(self, seed: int) -> list[tuple[int, tuple[slice, ...]]]:
        """Regions predicted for validation, as (item, crop): whole items when they are
        small enough (at most ``VALIDATION_VOXELS`` in all), else windows (twice the
        patch) centred on random held-out voxels; for a 2D network on volumes, single
        slices that hold held-out voxels."""
        rng = np.random.default_rng(seed + 1)
        budget = max(1, VALIDATION_VOXELS // len(self._val_items))
        crops: list[tuple[int, tuple[slice, ...]]] = []
        for i, (_, target) in enumerate(self._val_items):
            mask = np.asarray(target) != IGNORE_INDEX
            shape = mask.shape
            if self.slice_axis is not None:
                others = tuple(a for a in range(mask.ndim) if a != self.slice_axis)
                idx = np.flatnonzero(mask.any(axis=others))
                per = max(1, math.prod(shape) // shape[self.slice_axis])
                n = max(1, budget // per)
                if idx.size > n:
                    idx = np.sort(rng.choice(idx, size=n, replace=False))
                for k in idx:
                    crop = [slice(0, s) for s in shape]
                    crop[self.slice_axis] = slice(int(k), int(k) + 1)
                    crops.append((i, tuple(crop)))
                continue
            if math.prod(shape) <= budget:
                crops.append((i, tuple(slice(0, s) for s in shape)))
                continue
            size = [min(s, 2 * p) for s, p in zip(shape, self.patch_size)]
            n = max(1, budget // math.prod(size))
            voxels = np.flatnonzero(mask)
            for flat in rng.choice(voxels, size=min(n, voxels.size), replace=False):
                centre = np.unravel_index(int(flat), shape)
                starts = [
                    min(max(0, int(c) - w // 2), s - w) for c, w, s in zip(centre, size, shape)
                ]
                crops.append((i, tuple(slice(a, a + w) for a, w in zip(starts, size))))
        return crops

    def _probabilities(self, image: np.ndarray, overlap: float | None = None) -> np.ndarray:
        """Softmax probabilities (K, *spatial) of a normalised image (C, *spatial), by
        sliding windows laid out as prediction lays them out
        (:func:`~.inference.inference_layout`: the training patch with added context,
        fitted to the image), cut to the image where it is shorter than the patch;
        ``overlap`` ``None`` = the run's ``infer.overlap``, as prediction will use."""
        from .inference import inference_layout, sliding_window

        overlap = self.config.infer.overlap if overlap is None else overlap
        spatial = image.shape[1:]
        grown, steps = inference_layout(
            spatial,
            self.patch_size,
            overlap,
            self.model.divisor,
            self.config.infer.grow_windows,
        )
        window = tuple(min(w, s) for w, s in zip(grown, spatial))
        infer = InferConfig(
            overlap=overlap,
            window_batch=self.config.infer.window_batch,
            blend="gaussian",
        )
        self.model.eval()
        probs = None
        with torch.no_grad():
            for ev in sliding_window(
                self.model,
                image,
                window,
                infer,
                device=self.device,
                dtype=self.amp_dtype,
                steps=steps,
            ):
                if isinstance(ev, Done):
                    probs = ev.result
        self.model.train()
        if probs is None:
            raise RuntimeError("the sliding-window prediction ended without a result")
        return probs

    def validate(self) -> Validation:
        """Metrics of the current model on the validation voxels (see the class)."""
        from .metrics import semantic_metrics

        if not self._val_crops:
            raise RuntimeError("there is no validation data for this run")
        k = self.config.model.num_classes
        preds, truths, losses = [], [], []
        for item, crop in self._val_crops:
            image, target = self._val_items[item]
            t = np.asarray(target[crop]).astype(np.int64)
            mask = t != IGNORE_INDEX
            region = (slice(None), *crop)  # all channels
            x = _dense(image[region])
            if self.slice_axis is not None:
                x = _dense(np.take(x, 0, axis=1 + self.slice_axis))
                probs = np.expand_dims(self._probabilities(x), 1 + self.slice_axis)
            else:
                probs = self._probabilities(x)
            p = probs[:, mask]  # (K, N): all held-out voxels of all cases together
            t = t[mask]
            preds.append(p.argmax(axis=0).astype(np.uint8))
            truths.append(t.astype(np.uint8) if k < 256 else t)
            picked = p[t, np.arange(t.size)]
            losses.append(-np.log(np.clip(picked, 1e-7, 1.0)))
        pred = np.concatenate(preds)
        truth = np.concatenate(truths)
        names = self.metric_names
        res = semantic_metrics(pred, truth, classes=list(range(1, k)), class_names=names)
        dice = {name: float(r["dice"]) for name, r in res.items()}
        iou = {name: float(r["iou"]) for name, r in res.items()}
        if self.task == "instances":
            key = next(iter(dice))
            mean_dice, mean_iou = dice[key], iou[key]
        else:
            mean_dice = float(np.mean(list(dice.values())))
            mean_iou = float(np.mean(list(iou.values())))
        ce = float(np.concatenate(losses).mean())
        self.history.append(
            {
                "iteration": self.iteration,
                "mean_dice": mean_dice,
                "mean_iou": mean_iou,
                "dice": dice,
                "iou": iou,
                "cross_entropy": ce,
            }
        )
        return Validation(
            iteration=self.iteration,
            dice=dice,
            iou=iou,
            mean_dice=mean_dice,
            mean_iou=mean_iou,
            loss=ce,
        )

    def _open_image(self) -> np.ndarray:
        if self.image is None:
            raise RuntimeError("the Trainer is closed; make a new one")
        return self.image

    def _preview(self, axis: int, index: int) -> Preview:
        """Probabilities (K, H, W) of one slice, predicted from a slab around it."""
        image = self._open_image()
        spatial = image.shape[1:]
        if len(spatial) == 2:
            probs = self._probabilities(_dense(image), overlap=0.0)
            return Preview(self.iteration, axis, index, probs.astype(np.float32))
        sa = self.slice_axis
        if sa is not None:  # a 2D network on the slices along sa
            if axis == sa:
                plane = np.take(image, index, axis=1 + sa)
                probs = self._probabilities(_dense(plane), 0.0)
                return Preview(self.iteration, axis, index, probs.astype(np.float32))
            pos = axis - (axis > sa)  # the preview axis among the slice's two axes
            rows = []
            for k in range(spatial[sa]):
                plane = _dense(np.take(image, k, axis=1 + sa))
                rows.append(np.take(self._probabilities(plane, 0.0), index, axis=1 + pos))
            other = 3 - axis - sa
            plane = np.stack(rows, axis=1 if sa < other else 2)
            return Preview(self.iteration, axis, index, np.ascontiguousarray(plane, np.float32))
        thick = min(spatial[axis], max(self.plan.divisor[axis], min(self.patch_size[axis], 16)))
        lo = min(max(0, index - thick // 2), spatial[axis] - thick)
        sl: list = [slice(None)] * 4
        sl[1 + axis] = slice(lo, lo + thick)
        slab = _dense(image[tuple(sl)])
        probs = self._probabilities(slab, overlap=0.0)
        plane = np.take(probs, index - lo, axis=1 + axis)
        return Preview(self.iteration, axis, index, np.ascontiguousarray(plane, np.float32))
