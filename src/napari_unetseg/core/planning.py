"""Automatic choice of patch size, pooling and batch sizes ("the plan").

The rules follow nnU-Net's experiment planning (Isensee et al., 2021), scaled down for a
laptop CPU and a single image:

* **Pooling.** At every level transition an axis is halved only while its current voxel
  spacing is at most twice the finest current spacing, and only while the patch still
  has at least :data:`MIN_FEATURE` voxels along it after pooling. A volume with 3 mm
  slices and 0.6 mm pixels is therefore pooled in-plane first (``[1, 2, 2]``) until the
  in-plane spacing has caught up with the slice spacing, then along all axes.
* **Patch size.** Start from the image shape (never larger than the image, rounded up to
  the pooling divisor) and shrink the largest axis in *physical* size until the patch
  fits a voxel budget that depends on the device (CPU: about 32 x 64 x 64 voxels per
  sample; GPU: about 128**3, limited by free memory). 2D images get 2D patches.
* **Batch sizes.** Training uses ``train.batch_size`` (set in the config); prediction
  (``window_batch``) takes as many windows per forward pass as memory allows, with a
  small cap on the CPU where larger batches do not run faster.

Only settings the config leaves ``None`` are planned (``data.patch_size``,
``model.pool``, ``infer.window_batch``); values the user set are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import Config, ConfigError

#: Smallest feature-map size along an axis that may still be pooled further.
MIN_FEATURE = 4
#: Voxels per training sample the planner aims at, per device type.
CPU_PATCH_VOXELS = 32 * 64 * 64
GPU_PATCH_VOXELS = 128**3
CPU_PATCH_VOXELS_2D = 192 * 192
GPU_PATCH_VOXELS_2D = 512 * 512
#: Feature maps at the first level when the config leaves ``model.base_width`` unset: on
#: a CPU, 8 trains about three times faster than 16 for a small loss in accuracy.
CPU_BASE_WIDTH = 8
#: Upper bound on windows per forward pass during prediction.
CPU_MAX_WINDOW_BATCH = 2
GPU_MAX_WINDOW_BATCH = 8
#: Rough bytes of activation memory per voxel per base-width feature map (float32,
#: forward + backward of the whole network, both convolutions, skip connections).
_BYTES_PER_VOXEL_PER_WIDTH = 4 * 2 * 6


def plan_pooling(
    spacing: Sequence[float] | None,
    patch_size: Sequence[int],
    depth: int,
    min_feature: int = MIN_FEATURE,
) -> list[list[int]]:
    """Pooling factors (1 or 2) per axis for each of the ``depth - 1`` level transitions.

    Args:
        spacing: voxel size per axis in array order ((Z, Y, X) or (Y, X)); ``None`` =
            isotropic.
        patch_size: training patch size per axis, same order.
        depth: number of resolution levels of the U-Net.
        min_feature: an axis is pooled only while it keeps at least this many voxels.

    Returns:
        ``depth - 1`` kernels, e.g. ``[[1, 2, 2], [2, 2, 2], [2, 2, 2]]``. A transition
        where no axis can be pooled gets all ones (the level keeps its resolution).
    """
    dims = len(patch_size)
    if spacing is None:
        spacing = (1.0,) * dims
    if len(spacing) != dims:
        raise ConfigError(
            f"spacing {tuple(spacing)} has {len(spacing)} values but the patch has {dims} axes"
        )
    if any(not (s > 0 and math.isfinite(s)) for s in spacing):
        raise ConfigError(f"voxel spacing must be positive and finite, got {tuple(spacing)}")
    if depth < 1:
        raise ConfigError("depth must be at least 1")
    current = [float(s) for s in spacing]
    size = [int(p) for p in patch_size]
    pools: list[list[int]] = []
    for _ in range(depth - 1):
        poolable = [a for a in range(dims) if size[a] >= 2 * min_feature]
        kernel = [1] * dims
        if poolable:
            # the finest spacing among the axes that can still be pooled
            finest = min(current[a] for a in poolable)
            for axis in poolable:
                if current[axis] <= 2.0 * finest:
                    kernel[axis] = 2
        for axis, k in enumerate(kernel):
            current[axis] *= k
            size[axis] //= k
        pools.append(kernel)
    return pools


def divisor(pool: Sequence[Sequence[int]], dims: int) -> tuple[int, ...]:
    """Product of the pooling factors per axis: network input sizes must be multiples of
    it (the model imports it as ``pool_divisor``)."""
    div = [1] * dims
    for kernel in pool:
        for axis, k in enumerate(kernel):
            div[axis] *= int(k)
    return tuple(div)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


def _patch_for_budget(
    shape: Sequence[int], spacing: Sequence[float], budget: int, floor: int
) -> list[int]:
    """Largest patch that is a cube in physical units, clipped to the image, and holds at
    most ``budget`` voxels (axes shorter than the cube keep the image size)."""

    def patch_for(edge: float) -> list[int]:
        return [
            min(int(s), max(min(floor, int(s)), int(edge / sp))) for s, sp in zip(shape, spacing)
        ]

    if math.prod(shape) <= budget:
        return [int(s) for s in shape]
    lo, hi = 0.0, max(s * sp for s, sp in zip(shape, spacing))
    for _ in range(60):  # bisection on the physical edge length
        mid = 0.5 * (lo + hi)
        if math.prod(patch_for(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return patch_for(lo)


@dataclass
class Plan:
    """What the planner chose (and what the user had fixed).

    ``patch_size`` and every pool kernel are in array order ((Z, Y, X) or (Y, X)).
    """

    patch_size: tuple[int, ...]
    pool: list[list[int]]
    batch_size: int
    window_batch: int
    depth: int
    base_width: int
    notes: list[str] = field(default_factory=list)
    spacing: tuple[float, ...] | None = None
    device_type: str = "cpu"

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input sizes the network takes without padding are multiples of this."""
        return divisor(self.pool, len(self.patch_size))

    def apply(self, config: Config) -> Config:
        """Write the plan into ``config`` (in place) and return it."""
        config.data.patch_size = tuple(int(p) for p in self.patch_size)
        config.model.pool = [list(map(int, k)) for k in self.pool]
        config.model.depth = int(self.depth)
        config.model.base_width = int(self.base_width)
        config.model.spatial_dims = len(self.patch_size)
        config.train.batch_size = int(self.batch_size)
        config.infer.window_batch = int(self.window_batch)
        return config

    def describe(self) -> str:
        """One paragraph for the user: what will be trained and why."""
        dims = len(self.patch_size)
        axes = "Z x Y x X" if dims == 3 else "Y x X"
        patch = " x ".join(str(p) for p in self.patch_size)
        pools = ", ".join("x".join(str(k) for k in kernel) for kernel in self.pool) or "none"
        widths = [self.base_width * 2**level for level in range(self.depth)]
        text = (
            f"{dims}D U-Net with {self.depth} levels ({'/'.join(map(str, widths))} feature "
            f"maps), trained on patches of {patch} voxels ({axes}), {self.batch_size} per "
            f"step; pooling per level {pools}"
        )
        if self.spacing is not None:
            sp = " x ".join(f"{s:g}" for s in self.spacing)
            text += f" for a voxel spacing of {sp}"
        text += (
            f"; prediction runs {self.window_batch} window(s) per pass on the "
            f"{self.device_type.upper()}."
        )
        if self.notes:
            text += " " + " ".join(self.notes)
        return text


def make_plan(
    spatial_shape: Sequence[int],
    spacing: Sequence[float] | None,
    channels: int,
    config: Config,
    device=None,
    memory_bytes: int | None = None,
) -> Plan:
    """Plan patch size, pooling and batch sizes for an image; keep what ``config`` sets.

    Args:
        spatial_shape: image size (Z, Y, X) or (Y, X) (channels excluded).
        spacing: voxel spacing in the same order, or ``None`` (isotropic).
        channels: number of image channels (memory estimate).
        config: settings; ``data.patch_size``, ``model.pool`` and ``infer.window_batch``
            are planned only when ``None``.
        device: ``torch.device``, a device string or ``None`` (CPU).
        memory_bytes: memory available for training; ``None`` = ask the device.

    Returns:
        a :class:`Plan`; call :meth:`Plan.apply` to write it into a config.
    """
    shape = tuple(int(s) for s in spatial_shape)
    dims = len(shape)
    if dims not in (2, 3) or any(s < 1 for s in shape):
        raise ConfigError(
            f"expected a (Z, Y, X) or (Y, X) image shape with positive sizes, got {shape}"
        )
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)[-dims:]
        if len(spacing) != dims:
            raise ConfigError(f"spacing {spacing} does not match the image shape {shape}")
        if any(not (s > 0 and math.isfinite(s)) for s in spacing):
            raise ConfigError(f"voxel spacing must be positive and finite, got {spacing}")
    iso = spacing if spacing is not None else (1.0,) * dims
    device_type = "cpu"
    if device is not None:
        device_type = getattr(device, "type", None) or str(device).split(":")[0]
    gpu = device_type in ("cuda", "mps")
    m, d, t = config.model, config.data, config.train
    notes: list[str] = []
    # depth, width and batch size are normally set in the config; should a config leave
    # them None, they are planned for the device like the other settings
    depth = int(m.depth) if m.depth is not None else (5 if gpu else 4)
    base = int(m.base_width) if m.base_width is not None else (32 if gpu else CPU_BASE_WIDTH)
    batch = int(t.batch_size) if t.batch_size is not None else 2

    if memory_bytes is None and gpu:
        from .device import available_memory

        try:
            memory_bytes = available_memory(device)
        except Exception:
            memory_bytes = None

    # -- patch size
    if d.patch_size is not None:
        patch = [int(p) for p in d.patch_size]
        if len(patch) != dims:
            raise ConfigError(
                f"patch_size {tuple(patch)} has {len(patch)} axes but the image has {dims} "
                f"({shape}); give {dims} numbers or leave it unset"
            )
        if any(p < 1 for p in patch):
            raise ConfigError(f"patch_size must be positive, got {tuple(patch)}")
    else:
        if dims == 3:
            budget = GPU_PATCH_VOXELS if gpu else CPU_PATCH_VOXELS
        else:
            budget = GPU_PATCH_VOXELS_2D if gpu else CPU_PATCH_VOXELS_2D
        if memory_bytes is not None:
            per_voxel = _BYTES_PER_VOXEL_PER_WIDTH * base * batch + 4 * channels
            fits = int(0.5 * memory_bytes / max(per_voxel, 1))
            if fits < budget:
                budget = max(fits, 8**dims)
                notes.append("The patch size was reduced to fit the free memory.")
        patch = _patch_for_budget(shape, iso, budget, floor=2 * MIN_FEATURE)

    # -- pooling from the (provisional) patch size, then round the patch to its divisor
    if m.pool is not None:
        pool = [list(map(int, k)) for k in m.pool]
        if len(pool) != depth - 1 or any(len(k) != dims for k in pool):
            raise ConfigError(
                f"model.pool {pool} does not fit depth {depth} and {dims}D data: give "
                f"{depth - 1} kernels of {dims} factors or leave it unset"
            )
    else:
        pool = plan_pooling(iso, patch, depth)
    div = divisor(pool, dims)
    if d.patch_size is None:
        # axes cut from a larger image round down to the divisor, axes that span the
        # whole image round up (the sampler pads them)
        patch = [
            _round_up(p, k) if p >= s else max(k, p // k * k) for p, s, k in zip(patch, shape, div)
        ]
        if any(p > s for p, s in zip(patch, shape)):
            notes.append(
                "The image is smaller than the network's pooling needs along some axes; "
                "it is padded during training."
            )
    elif any(p % k for p, k in zip(patch, div)):
        notes.append(
            f"The patch size is not a multiple of {div}; each patch is padded inside the network."
        )
    if any(all(k == 1 for k in kernel) for kernel in pool):
        # a patch the user chose is what is too small; a planned one is bounded by the image
        advice = "consider a smaller depth"
        if d.patch_size is not None:
            advice = "give a larger patch_size"
        notes.append(f"The patch is too small for all levels to pool; {advice}.")

    # -- prediction windows per pass
    if config.infer.window_batch is not None:
        window_batch = int(config.infer.window_batch)
    else:
        cap = GPU_MAX_WINDOW_BATCH if gpu else CPU_MAX_WINDOW_BATCH
        window_batch = cap
        if memory_bytes is not None:
            # inference needs roughly a third of the training activations per window
            per_window = math.prod(patch) * (_BYTES_PER_VOXEL_PER_WIDTH // 3 * base + 4)
            window_batch = max(1, min(cap, int(0.5 * memory_bytes // max(per_window, 1))))

    return Plan(
        patch_size=tuple(patch),
        pool=pool,
        batch_size=batch,
        window_batch=window_batch,
        depth=depth,
        base_width=base,
        notes=notes,
        spacing=tuple(spacing) if spacing is not None else None,
        device_type=device_type,
    )
