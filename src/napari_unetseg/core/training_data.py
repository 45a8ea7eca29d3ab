"""Preparing annotated cases for training: normalisation over the dataset, resampling to a
common spacing, the memory-mapped cache and the validation split.

Images are ``(C, Z, Y, X)`` or ``(C, Y, X)`` array-likes (memory-mapped files work and
are read one case at a time), annotations ``(Z, Y, X)`` or ``(Y, X)`` in the project's
convention (0 = not annotated, 1 = background, 2.. = classes or object ids). The result,
:class:`TrainingData`, holds per case a normalised float32 image and a small-integer
target (``IGNORE_INDEX`` where not annotated) in the training geometry, either in memory
or as ``.npy`` files opened with ``numpy.load(..., mmap_mode="r")``.
"""

from __future__ import annotations

import math
import mmap
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .annotations import IGNORE_INDEX, instance_target, semantic_target
from .config import DataConfig
from .data import (
    Normalizer,
    _check_finite,
    _zscore_stats,
    fit_normalizer,
    resolve_mode,
    split_validation,
)
from .resample import resample_image, resample_labels, resampled_shape

#: Voxels per channel used for the dataset's intensity statistics (shared by the cases).
STAT_VOXELS = 2_000_000
#: Without ``data.cache_dir``, the cache is used when the normalised data would take more
#: than this share of the available memory.
CACHE_MEMORY_SHARE = 0.25
#: Intensity percentiles of the foreground that bound CT values (nnU-Net's clipping).
CT_PERCENTILES = (0.5, 99.5)


def open_private(array):
    """A memory-mapped array reopened as a fresh mapping of its file (the pages it reads
    leave this process' memory when the result is dropped); other arrays as they are."""
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename:
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        return np.memmap(
            array.filename,
            dtype=array.dtype,
            mode="r",
            offset=array.offset,
            shape=array.shape,
            order=order,
        )
    return array


def _slab_sample(channel, budget: int, mask=None) -> np.ndarray:
    """A regular subsample (float64, at most about ``budget`` values) of one channel
    (*spatial), read as whole slices along the first axis so that a memory-mapped file is
    only partly read; with ``mask`` (same shape) only the voxels where it is True."""
    if not isinstance(channel, np.memmap) and mask is None:
        flat = np.asarray(channel).reshape(-1)
        return flat[:: max(1, flat.size // budget)].astype(np.float64)
    n0 = channel.shape[0]
    per_slice = max(1, math.prod(channel.shape[1:]))
    k = min(n0, max(1, math.ceil(2 * budget / per_slice)))
    rows = np.unique(np.linspace(0, n0 - 1, k).round().astype(int))
    values = np.asarray(channel[rows])
    if mask is not None:
        values = values[np.asarray(mask[rows])]
    values = values.reshape(-1)
    return values[:: max(1, values.size // budget)].astype(np.float64)


def fit_dataset_normalizer(
    images: Sequence, annotations: Sequence | None, cfg: DataConfig | None = None
) -> Normalizer:
    """Per-channel normalisation numbers for a dataset, as nnU-Net finds them.

    Args:
        images: one raw image (C, *spatial) per case (array-like, may be memory-mapped).
        annotations: one annotation (*spatial) per case (0 = not annotated, 1 =
            background, 2.. = classes), or ``None``.
        cfg: ``normalization`` (``auto`` follows
            :func:`~napari_unetseg.core.data.resolve_mode` on a sample of all cases) and
            ``percentiles``.

    Modes:
        * ``ct``: the 0.5 / 99.5 percentiles of the annotated foreground (values >= 2; all
          annotated voxels when no foreground is painted, all voxels without annotations)
          of the whole dataset bound the values, then the mean and standard deviation of
          the clipped foreground z-score them.
        * ``zscore``: one case: its mean and standard deviation (as
          :func:`~napari_unetseg.core.data.fit_normalizer`); several cases: z-score each
          image with its own statistics (``per_image``), also at prediction time.
        * ``percentile``: the ``cfg.percentiles`` of all cases together map to [0, 1].
        * ``none``: values unchanged.
    """
    cfg = cfg if cfg is not None else DataConfig()
    images = list(images)
    if not images:
        raise ValueError("give at least one image to fit the normalisation on")
    channels = int(images[0].shape[0])
    budget = max(1000, STAT_VOXELS // len(images))
    if cfg.normalization == "auto":
        probe = np.concatenate(
            [
                _slab_sample(open_private(im)[c], budget // channels)
                for im in images
                for c in range(channels)
            ]
        )
        mode = resolve_mode(probe, "auto")
    else:
        mode = resolve_mode(images[0], cfg.normalization)
    if len(images) == 1 and mode != "ct":
        single = DataConfig(normalization=mode, percentiles=cfg.percentiles)
        return fit_normalizer(open_private(images[0]), single)
    n = channels
    if mode == "none":
        return Normalizer("none", [0.0] * n, [1.0] * n)
    if mode == "zscore":
        stats = []
        for im in images:
            im = open_private(im)
            stats.append([_zscore_stats(_slab_sample(im[c], budget)) for c in range(n)])
        mean = np.mean(np.asarray(stats), axis=0)  # (n, 2): average offset and scale
        return Normalizer("zscore", list(mean[:, 0]), list(mean[:, 1]), per_image=True)
    offsets, scales, lows, highs = [], [], [], []
    for c in range(n):
        parts = []
        for i, im in enumerate(images):
            im = open_private(im)
            ann = None if annotations is None else open_private(annotations[i])
            if mode == "ct" and ann is not None:
                part = _slab_sample(im[c], budget, mask=np.asarray(ann) >= 2)
                parts.append(part)
            else:
                parts.append(_slab_sample(im[c], budget))
        sample = np.concatenate(parts)
        if mode == "ct" and annotations is not None and sample.size == 0:
            sample = np.concatenate(
                [
                    _slab_sample(open_private(im)[c], budget, np.asarray(annotations[i]) >= 1)
                    for i, im in enumerate(images)
                ]
            )
        if sample.size == 0:
            sample = np.concatenate([_slab_sample(open_private(im)[c], budget) for im in images])
        _check_finite(sample, "an image")
        if mode == "ct":
            lo, hi = np.percentile(sample, CT_PERCENTILES)
            clipped = np.clip(sample, lo, hi)
            std = float(clipped.std())
            offsets.append(float(clipped.mean()))
            scales.append(std if std > 1e-8 else 1.0)
        else:
            p_lo, p_hi = (float(v) for v in cfg.percentiles)
            if not 0.0 <= p_lo < p_hi <= 100.0:
                raise ValueError(
                    f"percentiles must satisfy 0 <= low < high <= 100, not {cfg.percentiles}"
                )
            lo, hi = np.percentile(sample, [p_lo, p_hi])
            hi = hi if hi > lo else lo + 1.0
            offsets.append(float(lo))
            scales.append(float(hi - lo))
        lows.append(float(lo))
        highs.append(float(hi))
    return Normalizer(mode, offsets, scales, clip_low=lows, clip_high=highs)


def target_dtype(num_outputs: int) -> np.dtype:
    """Smallest signed integer type that holds the targets (and ``IGNORE_INDEX``)."""
    return np.dtype(np.int8) if num_outputs <= 127 else np.dtype(np.int16)


class ArrayStore:
    """Where prepared arrays live: in memory, or as ``.npy`` files in a folder read back
    memory-mapped. A temporary folder is removed by :meth:`close`."""

    def __init__(self, folder: str | Path | None, use_files: bool) -> None:
        self.folder: Path | None = None
        self._temporary = False
        if use_files:
            if folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="unetseg-cache-"))
                self._temporary = True
            else:
                base = Path(folder)
                try:
                    base.mkdir(parents=True, exist_ok=True)
                    self.folder = Path(tempfile.mkdtemp(prefix="unetseg-cache-", dir=base))
                except OSError as e:
                    raise ValueError(
                        f"data.cache_dir {str(base)!r} cannot be written ({e}); choose a "
                        "writable folder"
                    ) from e
                self._temporary = True

    @property
    def on_disk(self) -> bool:
        return self.folder is not None

    def keep(self, array: np.ndarray, name: str) -> np.ndarray:
        """``array`` itself, or a read-only memory map of it written to the folder."""
        if self.folder is None:
            return array
        path = self.folder / f"{len(list(self.folder.iterdir())):04d}_{name}.npy"
        np.save(path, np.ascontiguousarray(array))
        return np.load(path, mmap_mode="r")

    def close(self) -> None:
        if self.folder is not None and self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._temporary = False


@dataclass
class TrainingData:
    """Cases ready for training. ``train`` and ``val`` hold ``(image, target)`` pairs:
    image (C, *spatial) float32 normalised, target (*spatial) ``target_dtype`` with
    ``IGNORE_INDEX`` where the voxel is not used (not annotated, or in the other set)."""

    train: list[tuple[np.ndarray, np.ndarray]]
    val: list[tuple[np.ndarray, np.ndarray]]
    train_names: list[str]
    val_names: list[str]
    store: ArrayStore
    annotated_voxels: int
    total_voxels: int
    validation_text: str
    notes: list[str] = field(default_factory=list)


def choose_validation_cases(names: Sequence[str], cfg: DataConfig, seed: int) -> list[str]:
    """Names of the cases held out whole: ``cfg.validation_cases`` when given, else about
    ``validation_fraction`` of 3 or more cases (at least one), chosen with ``seed``; none
    with fewer cases or ``validation_fraction`` 0."""
    names = list(names)
    if cfg.validation_cases is not None:
        chosen = [str(n) for n in cfg.validation_cases]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise ValueError(
                f"data.validation_cases names {', '.join(map(repr, unknown))}, which are not "
                f"among the annotated cases ({', '.join(names)})"
            )
        if len(set(chosen)) >= len(names):
            raise ValueError(
                "data.validation_cases holds out every case: leave at least one for training"
            )
        return chosen
    if len(names) < 3 or cfg.validation_fraction <= 0:
        return []
    n_val = min(len(names) - 1, max(1, round(cfg.validation_fraction * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in sorted(order[:n_val])]


def prepare_cases(
    cases: Sequence,
    cfg: DataConfig,
    *,
    task: str,
    num_outputs: int,
    normalizer: Normalizer,
    target_spacings: Sequence[tuple[float, ...] | None],
    source_spacings: Sequence[tuple[float, ...] | None] | None = None,
    seed: int = 0,
    slice_axis: int | None = None,
) -> TrainingData:
    """Normalise, resample, build targets, split and store the annotated ``cases``.

    Args:
        cases: :class:`~napari_unetseg.core.cases.Case` objects with annotations.
        cfg: ``validation_fraction``, ``validation_cases`` and ``cache_dir``.
        task: ``semantic`` or ``instances`` (how annotations become targets).
        num_outputs: network outputs (picks the target dtype).
        normalizer: fitted on the raw images (:func:`fit_dataset_normalizer`).
        target_spacings: per case, the spacing to resample to, or ``None`` to keep its grid.
        source_spacings: per case, its spacing (default: ``case.spacing``).
        seed: seed of the validation split.
        slice_axis: for 2D networks on 3D cases: held-out slices are then taken along
            this axis only.
    """
    names = [c.name for c in cases]
    if source_spacings is None:
        source_spacings = [c.spacing for c in cases]
    # per case (source spacing, target spacing), or None when it keeps its grid
    moves: list[tuple[tuple[float, ...], tuple[float, ...]] | None] = []
    for c, sp, tsp in zip(cases, source_spacings, target_spacings):
        if tsp is None:
            moves.append(None)
        elif sp is None:
            raise ValueError(
                f"case {c.name!r} has no voxel spacing, so it cannot be resampled to "
                f"{tuple(tsp)}; give its spacing"
            )
        else:
            moves.append((sp, tsp))
    val_names = choose_validation_cases(names, cfg, seed)
    shapes = []
    for c, move in zip(cases, moves):
        s = c.spatial_shape
        shapes.append(resampled_shape(s, *move) if move is not None else s)
    payload = sum((c.channels * 4 + 1) * math.prod(s) for c, s in zip(cases, shapes))
    if cfg.cache_dir is not None:
        use_files = True
    else:
        from .device import available_memory

        use_files = payload > CACHE_MEMORY_SHARE * available_memory("cpu")
    store = ArrayStore(cfg.cache_dir, use_files)
    dtype = target_dtype(num_outputs)
    train, val, train_names = [], [], []
    annotated = total = held = 0
    try:
        for i, (case, move) in enumerate(zip(cases, moves)):
            raw = open_private(case.image)
            image = normalizer.for_image(raw).apply(raw)
            del raw
            ann = np.asarray(open_private(case.annotation))
            if not np.issubdtype(ann.dtype, np.integer):
                ann = ann.astype(np.int64)
            if move is not None:
                image = resample_image(image, *move, order=1)
                ann = resample_labels(ann, *move)
            target = instance_target(ann) if task == "instances" else semantic_target(ann)
            del ann
            n_ann = int((target != IGNORE_INDEX).sum())
            annotated += n_ann
            total += target.size
            image = store.keep(image, f"{case.name}_image")
            if case.name in val_names:
                val.append((image, store.keep(target.astype(dtype), f"{case.name}_val")))
                held += n_ann
                continue
            fraction = 0.0 if val_names else cfg.validation_fraction
            axes = None if slice_axis is None else (slice_axis,)
            part, held_out = split_validation(target, fraction, seed=seed + i, axes=axes)
            if (held_out != IGNORE_INDEX).any():
                held += int((held_out != IGNORE_INDEX).sum())
                val.append((image, store.keep(held_out.astype(dtype), f"{case.name}_val")))
            train.append((image, store.keep(part.astype(dtype), f"{case.name}_target")))
            train_names.append(case.name)
    except BaseException:
        store.close()
        raise
    if val_names:
        text = f"validation on {len(val_names)} held-out case(s): {', '.join(val_names)}"
    elif held:
        share = held / max(1, annotated)
        text = f"validation on {share:.0%} of the annotated voxels (held-out slices)"
    else:
        text = "no validation (too few annotated slices or validation_fraction 0)"
    notes = []
    if store.on_disk:
        notes.append(
            f"the normalised images ({payload / 2**30:.1f} GiB) are read memory-mapped from "
            f"{store.folder}"
        )
    return TrainingData(
        train=train,
        val=val,
        train_names=train_names,
        val_names=val_names,
        store=store,
        annotated_voxels=annotated,
        total_voxels=total,
        validation_text=text,
        notes=notes,
    )
