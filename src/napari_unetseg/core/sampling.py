"""Training patches drawn across the cases of a dataset, with augmentation.

Images are normalised float arrays ``(C, *spatial)`` and targets integer arrays
``(*spatial)`` with ``IGNORE_INDEX`` where nobody annotated; both may be memory-mapped
(``numpy.load(..., mmap_mode="r")``): a patch reads only its own region, and volumes
smaller than the patch are padded per patch, never copied whole. Numpy only, so that
sampling runs in the training thread without worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .annotations import IGNORE_INDEX

#: Candidate centres kept per pool and case (summed over the cases, about this many);
#: larger pools are thinned regularly (memory, not coverage).
MAX_CANDIDATES = 1 << 22


def _thin(indices: np.ndarray, limit: int) -> np.ndarray:
    step = -(-indices.size // max(1, limit))
    out = indices[::step] if step > 1 else indices
    return out.astype(np.int32) if out.size and out[-1] < 2**31 - 1 else out


class DatasetSampler:
    """Random patches from several cases, each containing an annotated voxel.

    A patch is centred (with some jitter) on a voxel chosen either

    * with probability ``foreground_fraction``: a foreground class (target >= 1) drawn
      uniformly among the classes present in ANY case, then a case among those that hold
      it (weighted by its voxels of that class), then one of those voxels, so a class
      annotated in one case only is seen as often as the others; or
    * otherwise: any annotated voxel of the whole set (a case weighted by its number of
      annotated voxels, then a voxel of it).

    Args:
        images: one normalised image (C, *spatial) float32 per case (ndarray or memmap).
        targets: one target (*spatial) per case, integers, ``IGNORE_INDEX`` = not annotated.
        patch_size: patch size per spatial axis of the targets. With ``slice_axis`` the
            patch size has one axis fewer: 2D patches of single slices along that axis of
            3D cases (only slices holding annotated voxels are drawn).
        foreground_fraction: share of patches forced onto a foreground voxel, in [0, 1].
        augment: random flips along every axis, 90-degree rotations in the last two axes
            when the patch is square there, intensity scale/shift and gamma.
        seed: seed of the sampler's numpy Generator (sampling and augmentation).
        slice_axis: see ``patch_size``; ``None`` = patches as deep as the cases.
        max_candidates: candidate centres kept in total (see :data:`MAX_CANDIDATES`).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        patch_size: Sequence[int],
        *,
        foreground_fraction: float = 0.5,
        augment: bool = True,
        seed: int = 0,
        slice_axis: int | None = None,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        if len(images) != len(targets) or not images:
            raise ValueError("give one target per image, and at least one case")
        ndim = len(targets[0].shape)
        patch = tuple(int(p) for p in patch_size)
        want = ndim - 1 if slice_axis is not None else ndim
        if len(patch) != want or any(p < 1 for p in patch):
            raise ValueError(
                f"patch_size {tuple(patch_size)} must give one positive size per spatial axis "
                f"of the {want}D patches"
            )
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError("foreground_fraction must be in [0, 1]")
        if slice_axis is not None:
            if not 0 <= int(slice_axis) < ndim:
                raise ValueError(f"slice_axis {slice_axis} does not exist in {ndim}D cases")
            full = list(patch)
            full.insert(int(slice_axis), 1)
            self._read_patch = tuple(full)
        else:
            self._read_patch = patch
        self.slice_axis = None if slice_axis is None else int(slice_axis)
        self.patch_size = patch
        self.foreground_fraction = float(foreground_fraction)
        self.augment = bool(augment)
        self.rng = np.random.default_rng(seed)
        self._square = len(patch) >= 2 and patch[-1] == patch[-2]

        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        limit = max(1, int(max_candidates) // len(images))
        annotated_pools, class_pools, n_annotated, class_counts = [], [], [], []
        for i, (image, target) in enumerate(zip(images, targets)):
            if not isinstance(image, np.memmap):
                image = np.ascontiguousarray(image, dtype=np.float32)
            if image.ndim != ndim + 1 or tuple(image.shape[1:]) != tuple(target.shape):
                raise ValueError(
                    f"case {i}: image spatial shape {tuple(image.shape[1:])} differs from "
                    f"target shape {tuple(target.shape)}"
                )
            flat = np.asarray(target).ravel()
            annotated = np.flatnonzero(flat != IGNORE_INDEX)
            labels = flat[annotated]
            if labels.size and labels.min() < 0:
                raise ValueError(
                    f"target values must be {IGNORE_INDEX} (not annotated) or >= 0, found "
                    f"{int(labels.min())}"
                )
            counts = np.bincount(labels.astype(np.intp)) if labels.size else np.zeros(1, int)
            class_counts.append(counts)
            class_pools.append(
                {
                    int(k): _thin(annotated[labels == k], limit)
                    for k in np.flatnonzero(counts)
                    if k >= 1
                }
            )
            n_annotated.append(int(annotated.size))
            annotated_pools.append(_thin(annotated, limit))
            self.images.append(image)
            self.targets.append(target)
        if sum(n_annotated) == 0:
            raise ValueError(
                "there is no annotated voxel to train on: paint background (1) and at least "
                "one class (2..) in some slices first"
            )
        self.shapes = [tuple(int(s) for s in t.shape) for t in self.targets]
        self.classes = sorted({k for pools in class_pools for k in pools})
        self._annotated_pools = annotated_pools
        self._class_pools = class_pools
        self._case_weights = np.cumsum(np.asarray(n_annotated, dtype=np.float64))
        # per class: the cases that hold it and their cumulative voxel counts
        self._class_cases = []
        for k in self.classes:
            cases = [i for i, pools in enumerate(class_pools) if k in pools]
            weights = [float(class_counts[i][k]) for i in cases]
            self._class_cases.append((cases, np.cumsum(weights)))

    @property
    def num_cases(self) -> int:
        return len(self.images)

    # ------------------------------------------------------------------ sampling

    def _choose(self, cumulative: np.ndarray) -> int:
        if cumulative.size == 1:
            return 0  # one candidate: no draw, so one case draws as a single volume did
        return int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], "right"))

    def _pick(self) -> tuple[int, int]:
        """(case, flat voxel index) of a patch centre."""
        if self.classes and self.rng.random() < self.foreground_fraction:
            k = int(self.rng.integers(len(self.classes)))
            cases, cumulative = self._class_cases[k]
            case = cases[self._choose(cumulative)]
            pool = self._class_pools[case][self.classes[k]]
        else:
            case = self._choose(self._case_weights)
            pool = self._annotated_pools[case]
        return case, int(pool[int(self.rng.integers(pool.size))])

    def _corner(self, case: int, flat_index: int) -> tuple[int, ...]:
        shape = self.shapes[case]
        centre = np.unravel_index(flat_index, shape)
        corner = []
        for c, p, s in zip(centre, self._read_patch, shape):
            # put the chosen voxel in the middle half of the patch, not always at its centre
            jitter = int(self.rng.integers(-(p // 4), p // 4 + 1)) if p >= 4 else 0
            if s >= p:
                corner.append(min(max(int(c) - p // 2 + jitter, 0), s - p))
            else:  # smaller than the patch: centred, padded
                corner.append(-((p - s) // 2))
        return tuple(corner)

    def _read(self, case: int, corner: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Image (C, *read_patch) and target (*read_patch) at ``corner`` (may be < 0):
        views inside the case, padded copies (image 0, target ignored) at its edges."""
        image, target = self.images[case], self.targets[case]
        shape = self.shapes[case]
        src = tuple(
            slice(max(0, a), min(s, a + p)) for a, p, s in zip(corner, self._read_patch, shape)
        )
        src_all = (slice(None), *src)  # with all channels
        if all(a >= 0 and a + p <= s for a, p, s in zip(corner, self._read_patch, shape)):
            return image[src_all], target[src]
        dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, corner))
        img = np.zeros((image.shape[0], *self._read_patch), dtype=np.float32)
        tgt = np.full(self._read_patch, IGNORE_INDEX, dtype=np.int64)
        dst_all = (slice(None), *dst)
        img[dst_all] = image[src_all]
        tgt[dst] = target[src]
        return img, tgt

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch.

        Returns:
            x: (B, C, *patch_size) float32, C-contiguous; y: (B, *patch_size) int64.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        c = self.images[0].shape[0]
        x = np.empty((batch_size, c, *self.patch_size), dtype=np.float32)
        y = np.empty((batch_size, *self.patch_size), dtype=np.int64)
        for b in range(batch_size):
            case, flat = self._pick()
            img, tgt = self._read(case, self._corner(case, flat))
            if self.slice_axis is not None:
                img = np.take(img, 0, axis=1 + self.slice_axis)
                tgt = np.take(tgt, 0, axis=self.slice_axis)
            if self.augment:
                img, tgt = self._spatial(img, tgt)
            x[b] = img
            y[b] = tgt
            if self.augment:
                self._intensity(x[b])
        return x, y

    # ------------------------------------------------------------------ augmentation

    def _spatial(self, img: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flips and in-plane 90-degree rotations as numpy views (no interpolation)."""
        nd = tgt.ndim
        flips = self.rng.random(nd) < 0.5
        for ax in np.flatnonzero(flips):
            img = np.flip(img, axis=int(ax) + 1)
            tgt = np.flip(tgt, axis=int(ax))
        if self._square:
            k = int(self.rng.integers(4))
            if k:
                img = np.rot90(img, k, axes=(nd - 1, nd))
                tgt = np.rot90(tgt, k, axes=(nd - 2, nd - 1))
        return img, tgt

    def _intensity(self, x: np.ndarray) -> None:
        """In place on one patch (C, *patch): scale/shift per channel, sometimes gamma."""
        rng = self.rng
        for ch in x:
            if rng.random() < 0.3:
                lo, hi = float(ch.min()), float(ch.max())
                if hi > lo:
                    gamma = float(rng.uniform(0.7, 1.5))
                    span = np.float32(hi - lo)
                    ch -= np.float32(lo)
                    ch /= span
                    np.power(ch, np.float32(gamma), out=ch)
                    ch *= span
                    ch += np.float32(lo)
            if rng.random() < 0.5:
                ch *= np.float32(rng.uniform(0.9, 1.1))
                ch += np.float32(rng.uniform(-0.1, 0.1))
