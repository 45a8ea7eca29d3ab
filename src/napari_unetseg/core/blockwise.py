"""Blockwise prediction: volumes larger than memory, block by block, into a zarr array.

The volume ``(C, *spatial)`` is cut into blocks (cores) that tile it; each block is
predicted on its core plus a halo (:class:`BlockPlan`), and only the core is written.
Memory is bounded by one block, whatever the size of the volume.

Same labels as a whole-volume prediction: the block grid and the default halo are aligned
with the sliding-window grid (cores and halos are multiples of the window step, and every
window that reaches a core lies inside its region), so each core voxel is blended from the
same windows as in a whole-volume run; labels differ only by float rounding. The default
halo is at least half a window on each side.

Instances (instance task): every block runs the seeded watershed on its whole region and
writes its core with local ids (phase 1); objects of neighbouring blocks that share seed
voxels where a region overlaps a neighbour's core are one object (phase 2, see
:mod:`.blocks`); a union-find (connected components) gives ids 1..n, objects under
``min_size`` voxels over the whole volume are dropped, and every core is relabelled
(phase 3). Objects are exact when every object's seed lies within the halo of the blocks
it reaches; larger objects may be cut where a neighbouring seed floods them.

The phases are plain functions of a picklable :class:`BlockJob` (in :mod:`.block_phases`,
re-exported here), so :mod:`.distributed` runs them on dask workers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .block_phases import (  # noqa: F401  (the phases live there; importable from here too)
    BlockJob,
    match_block,
    predict_block,
    relabel_block,
    run_job,
    sequential,
)
from .blocks import MARGIN, Block, BlockPlan, plan_blocks
from .events import Cancelled, CancelToken, Done, Event, Info

__all__ = [
    "Block",
    "BlockJob",
    "BlockPlan",
    "BlockPredictor",
    "BlockwiseResult",
    "plan_blocks",
    "predict_blockwise",
]


@dataclass
class BlockwiseResult:
    """What :func:`predict_blockwise` wrote. ``labels`` / ``instances``: the zarr paths
    written, or the arrays given; ``objects``: number of stitched instances."""

    labels: Any
    instances: Any = None
    shape: tuple[int, ...] = ()
    blocks: int = 0
    objects: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


class BlockPredictor:
    """A checkpoint's network, built once, predicting image regions ``(C, *region)``."""

    def __init__(self, checkpoint: Any, config: Any = None, spatial: Sequence[int] = ()):
        from .device import autocast_dtype, select_device
        from .inference.memory import auto_window_batch
        from .inference.prediction import _check_weights, _Normalize, prediction_layout

        self.checkpoint = checkpoint
        config = config if config is not None else checkpoint.config.infer
        config.validate()
        self.task = checkpoint.task
        if self.task == "instances" and checkpoint.num_outputs != 3:
            raise ValueError(
                "an instance model must have 3 outputs (background, interior, boundary)"
            )
        _check_weights(checkpoint)
        self.device, self.description = select_device(config.device)
        self.dtype = autocast_dtype(self.device, config.precision)
        self.model = checkpoint.build_model(self.device)
        # the window a whole-volume prediction of this volume uses, so blocks agree with it
        self.window, self.steps = prediction_layout(
            checkpoint,
            tuple(spatial),
            config.overlap,
            getattr(self.model, "divisor", None),
            config.grow_windows,
        )
        batch = config.window_batch or auto_window_batch(self.window, self.device, self.model)
        self.config = dataclasses.replace(config, window_batch=batch)
        self.transform = _Normalize(checkpoint.normalizer)

    def predict(
        self,
        image: np.ndarray,
        cancel: CancelToken | None = None,
        cut: Sequence[tuple[bool, bool]] = (),
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
        """Predict a raw region ``(C, *region)``.

        ``cut``: per spatial axis, whether the region's start / end face lies inside the
        volume. No watershed seed is placed within :data:`~.blocks.MARGIN` voxels of such
        a face, where smoothing the seed score would see the cut instead of the image.

        Returns labels ``(*region)`` uint8; for the instance task the watershed objects
        ``(*region)`` int32 (ids 1..n, negative on seed voxels, no size filter), else
        None; the ids of objects without a seed voxel; and the warnings.
        """
        from scipy import ndimage as ndi

        from .inference.engine import Slab
        from .inference.prediction import _check_output
        from .inference.sliding import sliding_window_slabs
        from .postprocess import instance_labels, semantic_labels

        cfg = self.config
        spatial = image.shape[1:]
        labels = np.zeros(spatial, dtype=np.uint8)
        probs = np.empty((3, *spatial), np.float16) if self.task == "instances" else None
        warnings: list[str] = []
        for item in sliding_window_slabs(
            self.model,
            image,
            self.window,
            cfg,
            device=self.device,
            dtype=self.dtype,
            cancel=cancel,
            transform=self.transform,
            steps=self.steps,
        ):
            if isinstance(item, Info) and item.level == "warning":
                warnings.append(item.message)
            if not isinstance(item, Slab):
                continue
            p, sl = item.probabilities, slice(item.start, item.stop)
            _check_output(p, self.checkpoint, str(self.dtype or "float32"))
            if probs is not None:
                labels[sl] = p[0] < 0.5
                probs[:, sl] = p
            else:
                labels[sl] = semantic_labels(p, threshold=cfg.threshold)
        if probs is None:
            return labels, None, np.zeros(0, np.int64), warnings
        for axis, (start, stop) in enumerate(cut):  # seed score -1 at the cut faces
            for side, inside in ((slice(0, MARGIN), start), (slice(-MARGIN, None), stop)):
                if inside:
                    strip = (slice(None),) * (axis + 1) + (side,)
                    probs[2][strip[1:]] = 1.0 - probs[0][strip[1:]].astype(np.float32)
                    probs[1][strip[1:]] = 0.0
        objects = instance_labels(probs, interior_threshold=cfg.interior_threshold)
        # the seeds as instance_labels keeps them (its default foreground, smoothing and
        # smallest seed)
        score = ndi.gaussian_filter(probs[1].astype(np.float32) - probs[2], 1.0)
        seeds = (objects > 0) & (score > cfg.interior_threshold) & (probs[0] < 0.5)
        del score, probs
        pieces, n = ndi.label(seeds)
        small = np.bincount(pieces.ravel(), minlength=n + 1) < (20 if seeds.ndim == 3 else 5)
        small[0] = False
        seeds[small[pieces]] = False
        del pieces
        lonely = np.setdiff1d(np.arange(1, int(objects.max(initial=0)) + 1), objects[seeds])
        np.negative(objects, out=objects, where=seeds)
        return labels, objects, lonely, warnings


def predict_blockwise(
    checkpoint: Any,
    image: Any,
    out: Any,
    *,
    block: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    config: Any = None,
    cancel: CancelToken | None = None,
    instances: Any = None,
    meta: Any = None,
    overwrite: bool = False,
) -> Iterator[Event]:
    """Predict ``image`` block by block into ``out`` with bounded memory.

    Args:
        checkpoint: a :class:`~napari_unetseg.core.checkpoint.Checkpoint` or a model path.
        image: raw ``(C, Z, Y, X)`` / ``(C, Y, X)`` array-like read region by region
            (a dask array, a zarr array, a :class:`~.io.zarr.ZarrVolume`, numpy), or the
            path of a zarr / OME-Zarr store.
        out: labels ``(*spatial)`` uint8 (semantic classes; the foreground mask for the
            instance task): a writable array (zarr, numpy) or a path, written as an
            OME-Zarr label image atomically (complete or not at all).
        block: core size per spatial axis (or one int for all), rounded up to a multiple
            of the window step; default about 128 voxels.
        halo: voxels added on each side of a block; default: the aligned halo that makes
            the labels those of a whole-volume run (at least half a window).
        config: an ``InferConfig``; default: the model's stored settings.
        instances: instance task: stitched object ids ``(*spatial)`` int32, an array or
            a path like ``out``.
        meta: the image's ``VolumeMeta`` (scale of written OME-Zarr); default: that of a
            zarr image, else spacing 1.
        overwrite: replace existing output paths.

    Yields:
        Info (plan), Progress per block (stage ``"blocks"``, then ``"relabelling"``),
        then Done with a :class:`BlockwiseResult` (``cancelled=True`` after a cancel; no
        output path is then written).
    """
    from .checkpoint import load_checkpoint
    from .io.zarr import open_zarr_volume

    ckpt = (
        load_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    )
    if isinstance(image, (str, os.PathLike)):
        image = open_zarr_volume(image)
    meta = meta if meta is not None else getattr(image, "meta", None)
    config = config if config is not None else ckpt.config.infer
    spatial = check_input(ckpt, image)
    ckpt = fit_to_image(ckpt, image, meta)
    predictor = BlockPredictor(ckpt, config, spatial)
    plan = plan_blocks(
        spatial,
        predictor.window,
        config.overlap,
        steps=predictor.steps,
        block=block,
        halo=halo,
        instances=instances is not None,
    )
    if instances is not None and ckpt.task != "instances":
        raise ValueError(f"instances need a model trained for instances; this one is {ckpt.task}")
    for note in (getattr(meta, "extra", None) or {}).get("notes", []):
        yield Info(note, level="warning")
    yield Info(f"predicting on {predictor.description}")
    yield Info(plan.describe())
    t0 = time.perf_counter()
    try:
        with ExitStack() as stack:
            targets = open_targets(stack, plan, out, instances, meta, overwrite)
            job = BlockJob(
                plan, image, targets[0], targets[1], targets[2], lambda: predictor, config.min_size
            )
            objects, warnings = yield from run_job(job, sequential, cancel)
    except Cancelled:
        yield Done(result=None, cancelled=True, message="cancelled")
        return
    result = BlockwiseResult(
        out, instances, spatial, len(plan.blocks), objects, time.perf_counter() - t0, warnings
    )
    yield Done(
        result=result, message=f"predicted {len(plan.blocks)} block(s) in {result.seconds:.1f} s"
    )


def check_input(checkpoint: Any, image: Any) -> tuple[int, ...]:
    """The spatial shape of ``image`` ``(C, *spatial)`` after checking it against the
    model (dimensions, channels), without reading it."""
    cfg = checkpoint.config.model
    d, shape = int(cfg.spatial_dims), tuple(int(s) for s in image.shape)
    if len(shape) == d and cfg.in_channels == 1:
        return shape
    if len(shape) != d + 1:
        axes = "(C, Z, Y, X)" if d == 3 else "(C, Y, X)"
        raise ValueError(f"the model is {d}D and needs an image {axes}; got shape {shape}")
    if shape[0] != cfg.in_channels:
        raise ValueError(
            f"the model was trained on {cfg.in_channels} channel(s) but the image has "
            f"{shape[0]} (shape {shape}, channels first); give the same channels"
        )
    if not np.issubdtype(np.dtype(image.dtype), np.number):
        raise ValueError(f"the image must hold real numbers, not {image.dtype}")
    return shape[1:]


def fit_to_image(checkpoint: Any, image: Any, meta: Any = None) -> Any:
    """The checkpoint ready for blockwise prediction of ``image`` ``(C, *spatial)``.

    A model normalising each image by its own statistics gets them from a strided
    sample of the whole volume (so every block is normalised alike). Blocks are predicted
    in the scan's grid with the network's dimensions: a model trained at another spacing
    (``meta.spacing``) or a 2D model for volumes is refused with a one-line error.
    """
    data = checkpoint.config.data
    net = int(checkpoint.config.model.spatial_dims)
    if int(getattr(data, "image_dims", None) or net) != net:
        raise ValueError(
            "blockwise prediction runs 3D models on volumes; this 2D model predicts "
            "volumes slice by slice: use unetseg predict without --block / zarr"
        )
    target = getattr(data, "target_spacing", None)
    spacing = getattr(meta, "spacing", None)
    if target is not None and spacing is not None and not np.allclose(spacing, target, rtol=0.01):
        raise ValueError(
            f"the model was trained at spacing {tuple(target)} but the scan has "
            f"{tuple(spacing)}; blockwise prediction runs in the scan's grid: resample the "
            "scan to the model's spacing first"
        )
    norm = checkpoint.normalizer
    if norm is None or not getattr(norm, "per_image", False):
        return checkpoint
    shape = tuple(int(s) for s in image.shape[-net:])
    steps = [max(1, round((math.prod(shape) / 4e6) ** (1 / net)))] * net
    key = (..., *(slice(None, None, k) for k in steps))
    sample = np.asarray(image[key])
    sample = sample if sample.ndim == net + 1 else sample[None]
    return dataclasses.replace(checkpoint, normalizer=norm.for_image(sample))


def open_targets(
    stack: ExitStack, plan: BlockPlan, out: Any, instances: Any, meta: Any, overwrite: bool
) -> tuple[Any, Any, str | None]:
    """Labels and instance targets (a path becomes a fresh OME-Zarr in a hidden folder,
    moved into place when ``stack`` closes without error) and a scratch folder."""
    from .io.zarr import create_labels_zarr, zarr_output

    made = []
    for target, dtype, name in ((out, np.uint8, "labels"), (instances, np.int32, "instances")):
        if isinstance(target, (str, os.PathLike)):
            tmp = stack.enter_context(zarr_output(target, overwrite=overwrite))
            create_labels_zarr(tmp, plan.shape, meta, dtype=dtype, chunks=plan.block, name=name)
            made.append(str(Path(tmp) / "0"))
        else:
            if target is not None and tuple(target.shape) != plan.shape:
                raise ValueError(
                    f"the {name} array has shape {tuple(target.shape)}; the image "
                    f"needs {plan.shape}"
                )
            made.append(target)
    scratch = None
    if instances is not None:
        base = Path(made[1]).parent.parent if isinstance(made[1], str) else None
        scratch = tempfile.mkdtemp(prefix=".blocks.", dir=base)
        stack.callback(shutil.rmtree, scratch, True)
    return made[0], made[1], scratch
