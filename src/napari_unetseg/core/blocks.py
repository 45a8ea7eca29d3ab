"""Blocks of a blockwise prediction: where they go (cores, halos) and how instances found
in neighbouring blocks are joined into one object.

Spatial shapes are in array order, ``(Z, Y, X)`` or ``(Y, X)``. Along each axis the
sliding windows of a whole-volume prediction start at multiples of the step
``s = int(window * (1 - overlap))`` (the last one flush with the border, see
:func:`~.inference.windows.window_starts`). Cores are multiples of ``s`` and the default
halo is chosen so that each region's windows are exactly the whole-volume windows that
reach its core:

* before a core: ``s * max(ceil(w / s) - 1, ceil(w / 2s))`` voxels (every window that
  starts before the core and reaches into it, and at least half a window);
* after a core: ``w - s`` voxels (the last window that starts inside the core), plus
  steps of ``s`` until it is at least half a window; a core that the whole-volume window
  flush with the end of the axis reaches gets a region holding that window.

Stitching instances: objects are identified by their watershed seeds. Where a block's
region overlaps a neighbour's core (:meth:`BlockPlan.zones`), both predicted the same
voxels; a seed voxel that both blocks give to an object makes the two objects one
(:func:`match_zone`). An object without any seed in its block's region (its seed lies
beyond the halo) joins the one neighbouring object covering most of it (one only, so that
an unseeded piece spanning two touching objects cannot join them). No seed is placed within
:data:`MARGIN` voxels of a region face inside the volume, where the smoothed seed score
would see the cut.
:func:`stitch` turns the pairs into one id per object (connected components).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

#: Default core edge in voxels (rounded up to a multiple of the window step).
DEFAULT_BLOCK = 128
#: Voxels at a region's faces inside the volume where no watershed seed is placed (the
#: seed score is smoothed with sigma 1, truncated at 4 sigma).
MARGIN = 4
#: An object without a seed joins a neighbour's object covering at least this share of it.
MAJORITY = 0.5


@dataclass(frozen=True)
class Block:
    """One block: ``core`` is written, ``region`` (core + halo) is predicted.

    ``core`` / ``region`` are tuples of slices of the spatial axes; ``position`` is the
    block's place in the grid and ``index`` its raster (C-order) number.
    """

    index: int
    position: tuple[int, ...]
    core: tuple[slice, ...]
    region: tuple[slice, ...]

    @property
    def core_in_region(self) -> tuple[slice, ...]:
        return tuple(
            slice(c.start - r.start, c.stop - r.start) for c, r in zip(self.core, self.region)
        )


@dataclass
class BlockPlan:
    """Blocks tiling a volume of spatial ``shape``, with halos."""

    shape: tuple[int, ...]
    block: tuple[int, ...]
    halo_before: tuple[int, ...]
    halo_after: tuple[int, ...]
    window: tuple[int, ...]
    grid: tuple[int, ...]
    blocks: list[Block]

    def describe(self) -> str:
        f = "x".join
        return (
            f"{len(self.blocks)} block(s) of {f(map(str, self.block))} voxels over "
            f"{f(map(str, self.shape))}, halo {f(map(str, self.halo_before))} before and "
            f"{f(map(str, self.halo_after))} after, windows {f(map(str, self.window))}"
        )

    def in_region(self, block: Block, zone: tuple[slice, ...]) -> tuple[slice, ...]:
        """``zone`` (volume coordinates, inside the block's region) relative to the region."""
        return tuple(
            slice(z.start - r.start, z.stop - r.start) for z, r in zip(zone, block.region)
        )

    def zones(self, i: int) -> list[tuple[int, tuple[slice, ...]]]:
        """``(j, zone)`` for every neighbour ``j`` of block ``i`` (faces, edges, corners):
        ``zone`` is where ``j``'s core meets ``i``'s region; empty zones are left out."""
        me = self.blocks[i]
        trusted = [(r.start, r.stop) for r in me.region]
        out = []
        for step in itertools.product((-1, 0, 1), repeat=len(self.shape)):
            pos = tuple(p + d for p, d in zip(me.position, step))
            if not any(step) or any(p < 0 or p >= g for p, g in zip(pos, self.grid)):
                continue
            j = int(np.ravel_multi_index(pos, self.grid))
            zone = tuple(
                slice(max(o.start, lo), min(o.stop, hi))
                for o, (lo, hi) in zip(self.blocks[j].core, trusted)
            )
            if all(z.stop > z.start for z in zone):
                out.append((j, zone))
        return out

    def remove_small(self, labels: np.ndarray, block: Block, min_size: int) -> np.ndarray:
        """In place on region labels: class pieces under ``min_size`` voxels -> 0, except
        pieces touching a region face inside the volume (they may go on beyond it)."""
        from scipy import ndimage as ndi

        if min_size <= 1:
            return labels
        faces = []
        for axis, (r, n) in enumerate(zip(block.region, self.shape)):
            if r.start > 0:
                faces.append((axis, 0))
            if r.stop < n:
                faces.append((axis, -1))
        for k in np.unique(labels):
            if k == 0:
                continue
            comp, count = ndi.label(labels == k)
            small = np.bincount(comp.ravel(), minlength=count + 1) < min_size
            small[0] = False
            for axis, side in faces:
                small[np.take(comp, side, axis=axis)] = False
            labels[small[comp]] = 0
        return labels


def _per_axis(value: int | Sequence[int] | None, n: int, what: str) -> list[int | None]:
    if value is None:
        return [None] * n
    values: list[int] = (
        [int(cast(int, value))] * n
        if np.ndim(value) == 0
        else [int(v) for v in cast(Sequence[int], value)]
    )
    if len(values) != n or min(values) < 0:
        raise ValueError(f"{what} needs one non-negative size per spatial axis ({n}), got {value}")
    out: list[int | None] = list(values)
    return out


def plan_blocks(
    shape: Sequence[int],
    window: Sequence[int],
    overlap: float,
    *,
    steps: Sequence[float] | None = None,
    block: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    instances: bool = False,
) -> BlockPlan:
    """Plan blocks over a volume of spatial ``shape`` for windows of ``window`` voxels.

    Args:
        steps: the step between windows per axis, as the prediction of each region uses
            it (:func:`~.inference.windows.window_starts`); ``None``: from ``overlap``.
        block: core size per axis (or one int); default :data:`DEFAULT_BLOCK` (at least
            one window), rounded up to a multiple of the window step.
        halo: voxels on each side of a core; default the aligned halo (module docstring).
        instances: the plan is used to stitch instances: the default halo is at least
            half a window plus :data:`MARGIN`; every axis cut into blocks needs a halo of
            at least 1 voxel.

    Raises:
        ValueError (one line) for bad sizes or a halo too small to stitch instances.
    """
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    blocks_req = _per_axis(block, n, "block")
    halos_req = _per_axis(halo, n, "halo")
    if any(b == 0 for b in blocks_req if b is not None):
        raise ValueError(f"block sizes must be positive, got {block}")
    sizes, before, after, cuts = [], [], [], []
    per_axis_steps = [None] * n if steps is None else [float(t) for t in steps]
    for size, w, t, b, h in zip(shape, window, per_axis_steps, blocks_req, halos_req):
        w = min(int(w), size)
        # an axis no longer than the window holds one window: no step to follow
        s = max(1, int(w * (1.0 - overlap) if t is None or w >= size else t))
        b = b if b is not None else max(DEFAULT_BLOCK, w)
        b = min(size, math.ceil(b / s) * s)
        if h is None:
            # instances: MARGIN more, where no seed is placed
            extra = w / 2 + (MARGIN if instances else 0)
            hb = s * max(math.ceil(w / s) - 1, math.ceil(extra / s))
            ha = (w - s) + s * math.ceil(max(0.0, extra - (w - s)) / s)
        else:
            hb = ha = h
        sizes.append(b)
        before.append(hb if b < size else 0)
        after.append(ha if b < size else 0)
        cuts.append([(lo, min(lo + b, size)) for lo in range(0, size, b)])
        if instances and b < size and min(hb, ha) < 1:
            raise ValueError(
                f"a halo of {h} voxels cannot stitch instances across blocks; give a halo "
                "of at least 1 voxel (or leave it unset)"
            )
    blocks = []
    for index, pos in enumerate(itertools.product(*(range(len(c)) for c in cuts))):
        core, region = [], []
        for axis, p in enumerate(pos):
            lo, hi = cuts[axis][p]
            w, size = min(int(window[axis]), shape[axis]), shape[axis]
            r_lo, r_hi = max(0, lo - before[axis]), min(size, hi + after[axis])
            if size - w < hi:
                # the window flush with the end of the axis reaches this core
                r_lo, r_hi = min(r_lo, size - w), size
            core.append(slice(lo, hi))
            region.append(slice(r_lo, r_hi))
        blocks.append(Block(index, tuple(pos), tuple(core), tuple(region)))
    return BlockPlan(
        shape=shape,
        block=tuple(sizes),
        halo_before=tuple(before),
        halo_after=tuple(after),
        window=tuple(min(int(w), s) for w, s in zip(window, shape)),
        grid=tuple(len(c) for c in cuts),
        blocks=blocks,
    )


# --------------------------------------------------------------------------- stitching


def _pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pairs ``(a, b)`` of two id arrays and how often each occurs."""
    keys, counts = np.unique(a.astype(np.int64) << 32 | b.astype(np.int64), return_counts=True)
    return keys >> 32, keys & 0xFFFFFFFF, counts


def _best(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices of the most frequent pair for each distinct value of ``ids``."""
    order = np.argsort(-counts, kind="stable")
    _, first = np.unique(ids[order], return_index=True)
    return order[first]


def match_zone(
    theirs: np.ndarray, mine: np.ndarray, lonely_mine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Objects of two blocks that are one, from their labels on the same zone.

    ``theirs`` and ``mine`` hold local ids, negative on seed voxels (0 = background).

    Returns:
        ``(n, 2)`` int64 pairs ``(id_theirs, id_mine)`` of objects sharing seed voxels
        (for each object, the partner with the most shared seed voxels), and ``(m, 3)``
        rows ``(id_theirs, id_mine, voxels)`` for objects of ``lonely_mine`` (no seed in
        their region): the partner covering most of the object, with at least
        :data:`MAJORITY` of its voxels in the zone, and how many voxels it covers.
    """
    t = theirs.astype(np.int64, copy=False).ravel()
    m = mine.astype(np.int64, copy=False).ravel()
    seeded, lonely = np.zeros((0, 2), np.int64), np.zeros((0, 3), np.int64)
    seed = (t < 0) & (m < 0)
    if seed.any():
        a, b, n = _pair_counts(-t[seed], -m[seed])
        keep = np.union1d(_best(a, n), _best(b, n))
        seeded = np.column_stack([a[keep], b[keep]])
    body = (t != 0) & (m != 0)
    if body.any() and len(lonely_mine):
        m_abs = np.abs(m)
        a, b, n = _pair_counts(np.abs(t[body]), m_abs[body])
        idx = _best(b, n)
        total = np.bincount(m_abs, minlength=int(b.max()) + 1)
        ok = np.isin(b[idx], lonely_mine) & (n[idx] >= MAJORITY * total[b[idx]])
        lonely = np.column_stack([a[idx[ok]], b[idx[ok]], n[idx[ok]]])
    return seeded, lonely


def stitch(
    counts: Sequence[int], sizes: Sequence[np.ndarray | None], pairs: np.ndarray, min_size: int
) -> tuple[list[np.ndarray], int]:
    """One id per object over all blocks.

    Args:
        counts: local ids per block (ids 1..count).
        sizes: per block, voxels of each local id in its core (``bincount``) or None.
        pairs: ``(n, 4)`` rows ``(j, id_j, i, id_i)``: local objects that are one.
        min_size: objects with fewer voxels in the whole volume are dropped (id 0).

    Returns:
        One lookup table per block (local id -> final id, int32, index 0 -> 0) and the
        number of objects; final ids are 1..n in order of the blocks.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count_arr = np.asarray(counts, np.int64)
    offsets = np.concatenate([[0], np.cumsum(count_arr)[:-1]]).astype(np.int64)
    n = int(count_arr.sum()) + 1
    voxels = np.zeros(n, np.int64)
    for off, c, s in zip(offsets, count_arr, sizes):
        if s is not None and c:
            voxels[off + 1 : off + 1 + min(c, len(s) - 1)] = s[1 : c + 1]
    pairs = np.asarray(pairs, np.int64).reshape(-1, 4)
    a = offsets[pairs[:, 0]] + pairs[:, 1]
    b = offsets[pairs[:, 2]] + pairs[:, 3]
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    keep = np.bincount(comp, weights=voxels) >= max(1, min_size)
    keep[comp[0]] = False
    first = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    kept = np.flatnonzero(keep)
    if kept.size > np.iinfo(np.int32).max:
        raise ValueError(f"{kept.size} objects do not fit 32-bit instance ids")
    new = np.zeros(comp.max() + 1, np.int32)
    new[kept[np.argsort(first[kept])]] = np.arange(1, kept.size + 1)
    lut = new[comp]
    luts = [lut[off : off + c + 1].copy() for off, c in zip(offsets, count_arr)]
    for t in luts:
        t[0] = 0
    return luts, int(kept.size)
