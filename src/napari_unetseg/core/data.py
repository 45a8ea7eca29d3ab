"""Intensity normalisation, validation split and the training patch sampler.

Images are float arrays (C, Z, Y, X) or (C, Y, X); targets are int64 arrays (Z, Y, X) or
(Y, X) built by :mod:`napari_unetseg.core.annotations` with ``IGNORE_INDEX`` where nobody
annotated. Everything here is numpy only (no torch), so that sampling runs in the training
thread without worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .annotations import IGNORE_INDEX, annotated_slices
from .config import NORMALIZATIONS, DataConfig
from .sampling import DatasetSampler

MODES = ("zscore", "ct", "percentile", "none")

#: Statistics are computed on at most this many voxels per channel (a regular subsample).
_MAX_STAT_VOXELS = 2_000_000


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(
            f"expected an image (C, Z, Y, X) or (C, Y, X), got shape {image.shape}; "
            "add a channel axis with image[None] for a single-channel image"
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise TypeError(f"the image must be numeric, not {image.dtype}")
    return image


def _check_finite(image: np.ndarray, what: str = "the image") -> None:
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        n_nan = int(np.isnan(image).sum())
        n_inf = int(image.size - np.isfinite(image).sum() - n_nan)
        raise ValueError(
            f"{what} contains {n_nan} NaN and {n_inf} infinite values; replace them "
            "(e.g. numpy.nan_to_num(image, nan=0.0)) or crop them away before training"
        )


def _subsample(channel: np.ndarray) -> np.ndarray:
    flat = channel.reshape(-1)
    step = max(1, flat.size // _MAX_STAT_VOXELS)
    return flat[::step]


def _zscore_stats(sample: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a float64 sample; when at least half of it is
    exactly 0 (skull-stripped MRI, masked volumes), of its non-zero values only."""
    nonzero = sample[sample != 0]
    if nonzero.size >= 2 and nonzero.size <= sample.size / 2:
        sample = nonzero
    std = float(sample.std())
    return float(sample.mean()), (std if std > 1e-8 else 1.0)


@dataclass
class Normalizer:
    """Per-channel intensity normalisation: optional clip, then ``(x - offset) / scale``.

    ``mode`` records how the numbers were found ("zscore", "ct", "percentile" or "none");
    ``apply`` only uses the numbers, so a stored Normalizer reproduces training exactly.

    With ``per_image`` (z-score per case, as nnU-Net does for MRI-like data) ``apply``
    computes the mean and standard deviation of each image it is given (see
    :meth:`for_image`); ``offsets``/``scales`` then only record the training cases'
    average. Give such a Normalizer whole images, not windows: call :meth:`for_image`
    on the whole image and apply the result to its windows.
    """

    mode: str
    offsets: list[float]
    scales: list[float]
    clip_low: list[float] | None = None
    clip_high: list[float] | None = None
    per_image: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalisation mode must be one of {MODES}, not {self.mode!r}")
        self.offsets = [float(v) for v in self.offsets]
        self.scales = [float(v) for v in self.scales]
        n = len(self.offsets)
        if n == 0 or len(self.scales) != n:
            raise ValueError("offsets and scales need one value per channel")
        if any(not np.isfinite(s) or s <= 0 for s in self.scales):
            raise ValueError(f"scales must be finite and positive, got {self.scales}")
        for name in ("clip_low", "clip_high"):
            values = getattr(self, name)
            if values is not None:
                values = [float(v) for v in values]
                if len(values) != n:
                    raise ValueError(f"{name} needs one value per channel ({n})")
                setattr(self, name, values)

    @property
    def channels(self) -> int:
        return len(self.offsets)

    def _check_channels(self, image: np.ndarray) -> np.ndarray:
        image = _check_image(image)
        if image.shape[0] != self.channels:
            raise ValueError(
                f"the image has {image.shape[0]} channel(s) but the normaliser (and the model "
                f"trained with it) expects {self.channels}"
            )
        return image

    def for_image(self, image: np.ndarray) -> Normalizer:
        """The fixed Normalizer for ``image`` (C, *spatial): itself, or with ``per_image``
        one with this image's own z-score statistics (the non-zero rule of
        :func:`fit_normalizer` included)."""
        if not self.per_image:
            return self
        image = self._check_channels(image)
        _check_finite(image)
        offsets, scales = [], []
        for c in range(self.channels):
            mean, std = _zscore_stats(_subsample(image[c]).astype(np.float64))
            offsets.append(mean)
            scales.append(std)
        return Normalizer(self.mode, offsets, scales, self.clip_low, self.clip_high)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalise ``image`` (C, *spatial) -> float32 (C, *spatial) (a new array)."""
        image = self._check_channels(image)
        if self.per_image:
            return self.for_image(image).apply(image)
        _check_finite(image)
        out = image.astype(np.float32, copy=True)
        for c in range(self.channels):
            ch = out[c]
            if self.clip_low is not None or self.clip_high is not None:
                lo = None if self.clip_low is None else self.clip_low[c]
                hi = None if self.clip_high is None else self.clip_high[c]
                np.clip(ch, lo, hi, out=ch)
            ch -= np.float32(self.offsets[c])
            ch *= np.float32(1.0 / self.scales[c])
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mode": self.mode,
            "offsets": list(self.offsets),
            "scales": list(self.scales),
            "clip_low": None if self.clip_low is None else list(self.clip_low),
            "clip_high": None if self.clip_high is None else list(self.clip_high),
        }
        if self.per_image:  # written only when set: older readers keep working otherwise
            d["per_image"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        """Read :meth:`to_dict`'s output; descriptions without ``per_image`` (models
        stored before it existed) are fixed normalisers."""
        known = {"mode", "offsets", "scales", "clip_low", "clip_high", "per_image"}
        unknown = set(d) - known
        if unknown or not {"mode", "offsets", "scales"} <= set(d):
            raise ValueError(
                f"not a normaliser description (keys {sorted(d)}; expected {sorted(known)})"
            )
        return cls(
            mode=str(d["mode"]),
            offsets=list(d["offsets"]),
            scales=list(d["scales"]),
            clip_low=None if d.get("clip_low") is None else list(d["clip_low"]),
            clip_high=None if d.get("clip_high") is None else list(d["clip_high"]),
            per_image=bool(d.get("per_image", False)),
        )


def _integer_valued(sample: np.ndarray) -> bool:
    if np.issubdtype(sample.dtype, np.integer) or sample.dtype == bool:
        return True
    probe = sample[:: max(1, sample.size // 10_000)]
    return bool(np.all(probe == np.round(probe)))


def resolve_mode(image: np.ndarray, mode: str = "auto") -> str:
    """The concrete normalisation mode for ``image`` (C, *spatial).

    ``auto`` rule, on all channels together:

    * ``ct`` when the values look like Hounsfield units: minimum between -3100 (the lowest
      value scanners store, -3024) and -500 (air is -1000), and maximum >= 300 (bone);
      integer or not, since resampled CT is often stored as float;
    * ``percentile`` when no value is negative and the values are integers (microscopy
      counts, uint8/uint16 TIFF, also unsigned MRI scans);
    * ``zscore`` otherwise (float MRI and everything else).
    """
    if mode != "auto":
        if mode not in MODES:
            raise ValueError(f"normalisation mode must be one of {NORMALIZATIONS}, not {mode!r}")
        return mode
    sample = _subsample(np.asarray(image))
    lo, hi = float(sample.min()), float(sample.max())
    if -3100.0 <= lo <= -500.0 and hi >= 300.0:
        return "ct"
    if lo >= 0.0 and _integer_valued(sample):
        return "percentile"
    return "zscore"


def fit_normalizer(image: np.ndarray, cfg: DataConfig | None = None) -> Normalizer:
    """Find per-channel normalisation numbers for ``image`` (C, *spatial).

    Modes (``cfg.normalization``):

    * ``zscore``: subtract the mean, divide by the standard deviation. When at least half
      of a channel is exactly 0 (skull-stripped MRI, masked volumes), the statistics come
      from the non-zero voxels only, so that the empty background does not squash the
      tissue contrast.
    * ``ct``: clip to ``cfg.ct_window`` (Hounsfield units) and map the window to [-1, 1].
    * ``percentile``: clip to the ``cfg.percentiles`` percentiles of each channel and map
      that range to [0, 1].
    * ``none``: leave the values as they are (cast to float32).
    * ``auto``: see :func:`resolve_mode`.

    Statistics use a regular subsample of at most two million voxels per channel.

    Raises:
        ValueError: NaN/Inf in the image, an unknown mode or an invalid window.
    """
    cfg = cfg if cfg is not None else DataConfig()
    image = _check_image(image)
    _check_finite(image)
    mode = resolve_mode(image, cfg.normalization)
    n = image.shape[0]
    if mode == "none":
        return Normalizer("none", [0.0] * n, [1.0] * n)
    if mode == "ct":
        lo, hi = (float(v) for v in cfg.ct_window)
        if not hi > lo:
            raise ValueError(f"ct_window must be (low, high) with low < high, not {cfg.ct_window}")
        return Normalizer(
            "ct", [(lo + hi) / 2] * n, [(hi - lo) / 2] * n, clip_low=[lo] * n, clip_high=[hi] * n
        )
    offsets, scales, lows, highs = [], [], [], []
    for c in range(n):
        sample = _subsample(image[c]).astype(np.float64)
        if mode == "percentile":
            p_lo, p_hi = (float(v) for v in cfg.percentiles)
            if not 0.0 <= p_lo < p_hi <= 100.0:
                raise ValueError(
                    f"percentiles must satisfy 0 <= low < high <= 100, not {cfg.percentiles}"
                )
            lo, hi = np.percentile(sample, [p_lo, p_hi])
            if not hi > lo:  # (nearly) constant channel: keep the values, only shift them
                hi = lo + 1.0
            lows.append(float(lo))
            highs.append(float(hi))
            offsets.append(float(lo))
            scales.append(float(hi - lo))
        else:
            mean, std = _zscore_stats(sample)
            offsets.append(mean)
            scales.append(std)
    if mode == "percentile":
        return Normalizer("percentile", offsets, scales, clip_low=lows, clip_high=highs)
    return Normalizer("zscore", offsets, scales)


def split_validation(
    target: np.ndarray, fraction: float, seed: int = 0, axes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole annotated slices for validation.

    Annotated slices (see :func:`napari_unetseg.core.annotations.annotated_slices`) of all
    axes are visited in a seeded random order and moved to the validation set until it
    holds ``fraction`` of the annotated voxels (at least one slice). A slice is skipped when
    taking it would leave no training voxel of some annotated class. Voxels shared with a
    held-out slice leave the training set, so the two sets never overlap.

    Args:
        target: (Z, Y, X) or (Y, X) int64 target, ``IGNORE_INDEX`` where not annotated.
        fraction: share of annotated voxels to hold out, in [0, 1).
        seed: seed of the slice order.
        axes: hold out slices along these axes only (e.g. ``(0,)`` when a 2D network
            learns from the Z slices); ``None`` = all axes.

    Returns:
        (train_target, val_target), new arrays of the same shape and dtype. When
        ``fraction`` is 0 or fewer than three annotated slices exist, ``val_target`` is
        ``IGNORE_INDEX`` everywhere and ``train_target`` is a copy of ``target``.
    """
    target = np.asarray(target)
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), not {fraction}")
    train = target.copy()
    val = np.full_like(target, IGNORE_INDEX)
    annotated = target != IGNORE_INDEX
    total = int(annotated.sum())
    if fraction == 0 or total == 0:
        return train, val
    slices = annotated_slices(annotated)
    candidates = [
        (ax, int(i))
        for ax, idx in enumerate(slices.values())
        if axes is None or ax in axes
        for i in idx
    ]
    if len(candidates) < 3:
        return train, val
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    held = np.zeros(target.shape, dtype=bool)
    goal = fraction * total
    n_held = 0
    # training keeps at least one voxel of every annotated class
    remaining = np.bincount(target[annotated])
    for k in order:
        ax, i = candidates[k]
        sl: list = [slice(None)] * target.ndim
        sl[ax] = i
        sl_t = tuple(sl)
        new = annotated[sl_t] & ~held[sl_t]
        taken = np.bincount(target[sl_t][new], minlength=remaining.size)
        if np.any((remaining > 0) & (remaining - taken <= 0)):
            continue
        held[sl_t] |= new
        remaining -= taken
        n_held += int(taken.sum())
        if n_held >= goal:
            break
    if n_held == 0:
        return train, val
    val[held] = target[held]
    train[held] = IGNORE_INDEX
    return train, val


#: Candidate centres kept per pool; larger pools are thinned regularly (memory, not
#: coverage: every region of the volume keeps candidates).
_MAX_CANDIDATES = 1 << 22


class PatchSampler(DatasetSampler):
    """Random training patches of ONE image, with augmentation (see
    :class:`~napari_unetseg.core.sampling.DatasetSampler`, of which this is the one-case
    form).

    Every patch contains at least one annotated voxel: its centre region holds a voxel
    chosen either among the foreground voxels (target >= 1; a class is drawn uniformly
    among the classes present, then a voxel of it, so rare classes are seen as often as
    common ones) with probability ``foreground_fraction``, or among all annotated voxels.

    Args:
        image: normalised image (C, *spatial) float32, spatial = (Z, Y, X) or (Y, X).
        target: (*spatial) integers, ``IGNORE_INDEX`` where not annotated.
        patch_size: (Z, Y, X) or (Y, X) patch size; volumes smaller than the patch are
            padded (image with 0, target with ``IGNORE_INDEX``).
        foreground_fraction: share of patches forced onto a foreground voxel, in [0, 1].
        augment: random flips along every axis, 90-degree rotations in the (Y, X) plane
            when the patch is square there, intensity scale/shift and gamma.
        seed: seed of the sampler's numpy Generator (sampling and augmentation).
    """

    def __init__(
        self,
        image: np.ndarray,
        target: np.ndarray,
        patch_size: Sequence[int],
        *,
        foreground_fraction: float = 0.5,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        image = _check_image(image)
        target = np.asarray(target)
        if image.shape[1:] != target.shape:
            raise ValueError(
                f"image spatial shape {image.shape[1:]} differs from target shape {target.shape}"
            )
        super().__init__(
            [image],
            [target],
            patch_size,
            foreground_fraction=foreground_fraction,
            augment=augment,
            seed=seed,
            max_candidates=_MAX_CANDIDATES,
        )
        self.image, self.target, self.shape = self.images[0], self.targets[0], self.shapes[0]
        self._annotated = self._annotated_pools[0]
        self._by_class = [self._class_pools[0][k] for k in self.classes]
