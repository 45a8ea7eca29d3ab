"""The three phases of blockwise prediction, as plain functions of a picklable job.

A :class:`BlockJob` holds the block plan, the image ``(C, *spatial)`` and the targets
``(*spatial)``. Phase 1 (:func:`predict_block`) predicts a block and writes its core;
phase 2 (:func:`match_block`) finds the objects a block shares with its neighbours;
phase 3 (:func:`relabel_block`) rewrites a core with the stitched ids. :func:`run_job`
runs them with an executor: :func:`sequential` here, dask workers in :mod:`.distributed`.
:mod:`.blockwise` re-exports everything here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .blocks import BlockPlan, _best, match_zone, stitch
from .events import Cancelled, CancelToken, Event, Info, Progress

if TYPE_CHECKING:
    from .blockwise import BlockPredictor


@dataclass
class BlockJob:
    """Everything the phases need, picklable when its parts are (a :class:`ZarrVolume`
    image and zarr paths for the outputs, as :mod:`.distributed` passes them).

    ``image``: ``(C, *spatial)`` array-like (numpy, zarr, dask, ZarrVolume); ``labels`` /
    ``instances``: writable ``(*spatial)`` arrays or paths of zarr arrays; ``scratch``: a
    folder for the band labels that phase 2 compares; ``predictor``: a callable returning
    the :class:`BlockPredictor` (built once per process).
    """

    plan: BlockPlan
    image: Any
    labels: Any
    instances: Any
    scratch: str | None
    predictor: Callable[[], BlockPredictor]
    min_size: int = 0


def _open(target: Any) -> Any:
    """An output opened in this process (a dask worker). It stores every chunk it is
    given, as the array created by :func:`~.io.zarr_write.create_labels_zarr` does:
    ``write_empty_chunks`` is a setting of the open array, not of the store, and without it
    a block predicted as all background leaves its chunks missing, which the reader
    rightly refuses."""
    if isinstance(target, (str, os.PathLike)):
        import zarr

        array = zarr.open_array(str(target), mode="r+")
        return array.with_config({"write_empty_chunks": True})  # type: ignore[call-overload]  # zarr ArrayConfigLike union
    return target


def _read(image: Any, region: tuple[slice, ...], dims: int) -> np.ndarray:
    if image.ndim == dims:  # a single-channel image without its channel axis
        return np.asarray(image[region])[None]
    key = (slice(None), *region)
    return np.asarray(image[key])


def _scratch(job: BlockJob) -> Path:
    """The folder where instance blocks keep their band labels for phase 2."""
    if job.scratch is None:
        raise ValueError("BlockJob.scratch is None: instance blocks need a scratch folder")
    return Path(job.scratch)


def predict_block(job: BlockJob, i: int, cancel: CancelToken | None = None) -> dict[str, Any]:
    """Phase 1: predict block ``i``; write its core (labels; signed local instance ids);
    save its labels on the zones of its neighbours' cores for phase 2. Returns
    ``{"index", "count", "sizes", "warnings"}``."""
    plan = job.plan
    block = plan.blocks[i]
    region = _read(job.image, block.region, len(plan.shape))
    cut = [(r.start > 0, r.stop < n) for r, n in zip(block.region, plan.shape)]
    labels, objects, lonely, warnings = job.predictor().predict(region, cancel, cut)
    inner = block.core_in_region
    if objects is None:
        labels = plan.remove_small(labels, block, job.min_size)
    _open(job.labels)[block.core] = labels[inner]
    out: dict[str, Any] = {"index": i, "count": 0, "sizes": None, "warnings": warnings}
    if objects is not None and job.instances is not None:
        core = objects[inner]
        _open(job.instances)[block.core] = core
        out["count"] = int(np.abs(objects).max(initial=0))
        out["sizes"] = np.bincount(np.abs(core).ravel(), minlength=out["count"] + 1)
        zones: dict[str, Any] = {
            f"z{j}": objects[plan.in_region(block, z)] for j, z in plan.zones(i)
        }
        np.savez_compressed(_scratch(job) / f"{i}.npz", lonely=lonely, **zones)
    return out


def match_block(job: BlockJob, i: int) -> np.ndarray:
    """Phase 2: objects of block ``i`` that are objects of its neighbours.

    Returns ``(n, 4)`` int64 rows ``(j, id_j, i, id_i)`` of local ids.
    """
    rows = [np.zeros((0, 4), np.int64)]
    zones = job.plan.zones(i)
    written: Any = _open(job.instances) if zones else None
    lonely = [np.zeros((0, 4), np.int64)]  # (j, id_j, id_i, voxels)
    with np.load(_scratch(job) / f"{i}.npz") as mine:
        for j, zone in zones:
            seeded, alone = match_zone(np.asarray(written[zone]), mine[f"z{j}"], mine["lonely"])
            rows.append(
                np.column_stack(
                    [np.full(len(seeded), j), seeded[:, 0], np.full(len(seeded), i), seeded[:, 1]]
                )
            )
            lonely.append(np.column_stack([np.full(len(alone), j), alone]))
    alone = np.concatenate(lonely)
    if len(alone):  # each object without a seed joins one object: the best over all zones
        best = alone[_best(alone[:, 2], alone[:, 3])]
        rows.append(np.column_stack([best[:, 0], best[:, 1], np.full(len(best), i), best[:, 2]]))
    return np.concatenate(rows).astype(np.int64)


def relabel_block(job: BlockJob, i: int, lut: np.ndarray) -> int:
    """Phase 3: rewrite block ``i``'s core from local ids to final ids; returns ``i``."""
    core = job.plan.blocks[i].core
    out = _open(job.instances)
    out[core] = lut[np.abs(np.asarray(out[core]))]
    return i


def sequential(fn: Callable, args: Iterable[tuple]) -> Iterator[Any]:
    """The one-process executor: call ``fn(*a)`` for each ``a`` in order."""
    for a in args:
        yield fn(*a)


def run_job(
    job: BlockJob,
    execute: Callable[[Callable, Iterable[tuple]], Iterator[Any]] = sequential,
    cancel: CancelToken | None = None,
    *,
    pass_cancel: bool = True,
) -> Generator[Event, None, tuple[int, list[str]]]:
    """Run the three phases with ``execute`` (sequential here, dask in
    :mod:`.distributed`); yields Progress per block and Info for warnings; returns
    ``(objects, warnings)``."""
    plan = job.plan
    total = len(plan.blocks)
    extra = (cancel,) if pass_cancel else ()
    results: list[dict[str, Any]] = [{}] * total
    warnings: list[str] = []
    yield Progress(0, total, "blocks")
    for k, res in enumerate(execute(predict_block, ((job, i, *extra) for i in range(total)))):
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled by the user")
        results[res["index"]] = res
        for w in res["warnings"]:
            if w not in warnings:
                warnings.append(w)
                yield Info(f"block {res['index']}: {w}", level="warning")
        yield Progress(k + 1, total, "blocks")
    if job.instances is None:
        return 0, warnings
    pairs = [p for p in execute(match_block, ((job, i) for i in range(total)))]
    pairs_all = np.concatenate(pairs) if pairs else np.zeros((0, 4), np.int64)
    luts, objects = stitch(
        [r["count"] for r in results], [r["sizes"] for r in results], pairs_all, job.min_size
    )
    yield Info(f"stitched {objects} object(s) across {total} block(s)")
    for k, _ in enumerate(execute(relabel_block, ((job, i, luts[i]) for i in range(total)))):
        yield Progress(k + 1, total, "relabelling")
    return objects, warnings
