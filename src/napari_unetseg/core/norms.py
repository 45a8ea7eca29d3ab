"""Instance normalisation for the U-Net (:mod:`.model`), fast in every memory layout
and precision the network runs in on the CPU.

:class:`InstanceNorm` has the parameters and the numbers of torch's
``InstanceNorm2d/3d(affine=True)``; on the CPU it is computed by torch's group-norm
kernel (one channel per group), which keeps the channels-last layout, and channels-last
3D maps take :class:`_ChannelsLastNorm` or a channels-first copy where torch's kernels
take their slow path. :func:`stable_norms` switches the layers back to torch's instance
norm (float64 sums) for the rare maps that overflow float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

#: dtypes of the channels-last 3D maps whose instance norm :class:`InstanceNorm` computes
#: itself on the CPU (torch's kernels take their slow path there)
_CL_NORM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class InstanceNorm(nn.GroupNorm):
    """Instance normalisation with a learned scale and shift per channel, for 2D and 3D.

    The same numbers and the same parameters (``weight``, ``bias``) as torch's
    ``InstanceNorm2d/3d(affine=True)``, so models saved with either load into the other.
    On the CPU it is computed as group normalisation with one channel per group: torch's
    group-norm kernel works in the tensor's own memory layout, while its instance norm
    copies a channels-last tensor to channels-first and back (with ``channels_last_3d``
    the default network predicts 1.45x faster and trains 1.1x faster per step on 2 AMD
    EPYC cores; on 2D maps the kernel alone is 2x faster). Training a channels-last 3D
    map takes :class:`_ChannelsLastNorm` (torch's backward is slow for that layout: the
    float32 training step is 1.13x faster on AMD EPYC, the bfloat16 one 2.7x on a Xeon
    with native bfloat16), and a bfloat16/float16 one is normalised through a
    channels-first copy in prediction too. Other devices use torch's instance norm, as
    before.

    The group-norm kernel sums squares in float32, so it overflows to NaN for maps above
    about 1e19 (an image of 1e30 given to a model trained on ordinary intensities), where
    torch's instance norm on the CPU sums in float64 and stays finite; inside
    :func:`stable_norms` the module uses the latter (prediction retries a pass that way
    when its logits are not finite).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, channels, eps=eps, affine=True)
        self.stable = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not self.stable:
            if (
                x.ndim == 5
                and x.dtype in _CL_NORM_DTYPES
                and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last_3d)
            ):
                if torch.is_grad_enabled() and x.requires_grad:
                    return _ChannelsLastNorm.apply(x, self.weight, self.bias, self.eps)
                if x.dtype != torch.float32:
                    return _reduced_precision_norm(x, self.weight, self.bias, self.eps)
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


#: a reduced-precision channels-last map with at least this many values per sample is
#: normalised by :func:`_tiled_instance_norm`; smaller ones take the copies of
#: :func:`_channels_first_group_norm`, whose fixed cost is lower (a (2, 16, 24, 24, 24)
#: bfloat16 map: 0.35 ms against 0.42 ms on 2 AMD EPYC cores with AVX-512 BF16)
TILED_NORM_MIN_VALUES = 2**19

#: values per row of the tiled view of :func:`_tiled_instance_norm`: whole cache lines of
#: float32 statistics, and rows wide enough for torch's channels-last batch-norm kernels
#: (a row of 8 bfloat16 values is 4.7x slower to reduce than a row of 64)
_TILE_WIDTH = 64

#: narrower rows than this (the voxel count has no suitable factor) take the copies
_MIN_TILE_WIDTH = 32


def _reduced_precision_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Instance norm of a channels-last 3D bfloat16/float16 map, channels-last, outside
    training: tiled (:func:`_tiled_instance_norm`) where the map is large and its voxels
    tile, otherwise through a channels-first copy."""
    if x[0].numel() >= TILED_NORM_MIN_VALUES:
        tiled = _tile_view(x)
        if tiled is not None:
            return _tiled_instance_norm(x, tiled, weight, bias, eps)
    return _channels_first_group_norm(x, weight, bias, eps)[0]


def _tile_view(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """The channels-last map ``x`` (N, C, *spatial) seen as (N, voxels / k, k * C) rows
    without a copy (row ``r`` of sample ``n`` holds voxels ``r*k .. r*k + k - 1``, channels
    innermost), and ``k``; ``None`` where the voxel count has no factor giving rows of at
    least :data:`_MIN_TILE_WIDTH` values."""
    n, c = x.shape[0], x.shape[1]
    voxels = math.prod(x.shape[2:])
    k = max(1, _TILE_WIDTH // c)
    while voxels % k:
        k -= 1
    if k * c < _MIN_TILE_WIDTH:
        return None
    # view, not reshape: a copy here would be normalised and lost (x is channels-last)
    rows = x.permute(0, *range(2, x.ndim), 1).view(n, voxels // k, k * c)
    return rows, k


def _tiled_instance_norm(
    x: torch.Tensor,
    tiled: tuple[torch.Tensor, int],
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Instance norm of a channels-last map without leaving its layout, from torch's
    channels-last batch-norm kernels run on its tiled view (:func:`_tile_view`): each
    column of the view is one channel of a ``k``-th of the voxels, so the kernel's column
    statistics (float32 mean and variance of each column, ``batch_norm_update_stats``)
    combine exactly into each channel's (the variance of equal-sized parts: the mean of
    their variances plus the variance of their means), and the normalisation is the
    kernel's inference form with those statistics repeated ``k`` times along the row,
    computed in float32 and rounded once. Two passes over the map, where the copies of
    :func:`_channels_first_group_norm` take four: a (2, 8, 48, 48, 48) bfloat16 map in
    0.94 ms against 1.9 ms, a (1, 8, 128, 128, 128) one in 20-24 ms against 65-69 ms on 2
    AMD EPYC cores with AVX-512 BF16, with the same error against a float64 reference."""
    rows, k = tiled
    n, c = x.shape[0], x.shape[1]
    width = rows.shape[2]
    # momentum 0 leaves these placeholders as they are; float32 ones make the kernel
    # return float32 statistics for a bfloat16/float16 map
    keep_mean = torch.zeros(width, dtype=torch.float32)
    keep_var = torch.ones(width, dtype=torch.float32)
    col_mean = torch.empty(n, width, dtype=torch.float32)
    col_var = torch.empty(n, width, dtype=torch.float32)
    for i in range(n):
        col_mean[i], col_var[i] = torch.batch_norm_update_stats(rows[i], keep_mean, keep_var, 0.0)
    col_mean, col_var = col_mean.view(n, k, c), col_var.view(n, k, c)
    mean = col_mean.mean(1)
    var = col_var.mean(1) + (col_mean - mean[:, None]).square().mean(1)
    out = torch.empty_like(x)
    out_rows = out.permute(0, *range(2, x.ndim), 1).view(n, rows.shape[1], width)
    w = weight.detach().float().repeat(k)
    b = bias.detach().float().repeat(k)
    unused = torch.empty(0, dtype=torch.float32)
    for i in range(n):
        torch.ops.aten.native_batch_norm.out(
            rows[i],
            w,
            b,
            mean[i].repeat(k),
            var[i].repeat(k),
            False,
            0.0,
            eps,
            out=out_rows[i],
            save_mean=unused,
            save_invstd=unused,
        )
    return out


def _channels_first_group_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instance norm of a channels-last 3D bfloat16/float16 map through a channels-first
    copy, returned channels-last: torch's group-norm kernel is slow on reduced-precision
    channels-last maps (3.5 ms against 1.2 ms with the copies for a (2, 8, 48, 48, 48)
    bfloat16 map on 2 Xeon cores with native bfloat16).

    Returns (output, the channels-first copy of ``x``, mean, rstd): training keeps the copy
    for the backward, which needs that layout."""
    x_cf = x.contiguous()
    y, mean, rstd = _group_norm_stats(x_cf, weight, bias, eps)
    return y.contiguous(memory_format=torch.channels_last_3d), x_cf, mean, rstd


def _group_norm_stats(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's group-norm kernel with one channel per group: (output, mean, rstd)."""
    n, c, voxels = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return torch.native_group_norm(x, weight, bias, n, c, voxels, c, eps)


class _ChannelsLastNorm(torch.autograd.Function):
    """Instance norm of a channels-last 3D map on the CPU, for training: torch's
    group-norm kernel forward (in the map's layout for float32; through a channels-first
    copy for bfloat16/float16, :func:`_channels_first_group_norm`, whose copy is the map
    kept for the backward), and its backward on channels-first maps. torch's
    channels-last group-norm backward is its slow path: for a (2, 8, 48, 48, 48) map,
    30 ms against 10 ms for this one in float32 on 2 AMD EPYC cores, 26 ms against 1.5 ms
    in bfloat16 on 2 Xeon cores with native bfloat16, where it took two thirds of a
    bfloat16 training step (``tests/core/test_norms.py`` checks the gradients against
    torch's).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        if x.dtype == torch.float32:
            y, mean, rstd = _group_norm_stats(x, weight, bias, eps)
        else:
            # the channels-first copy is kept in place of x: the backward needs that
            # layout, so it spares a second copy there at no cost in memory
            y, x, mean, rstd = _channels_first_group_norm(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, voxels = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            grad.to(x.dtype).contiguous(),
            x.contiguous(),
            mean,
            rstd,
            weight,
            n,
            c,
            voxels,
            c,
            list(ctx.needs_input_grad[:3]),
        )
        if dx is not None:
            dx = dx.contiguous(memory_format=torch.channels_last_3d)
        return dx, dw, db, None


@contextmanager
def stable_norms(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the :class:`InstanceNorm` layers of ``model`` use torch's
    instance-norm kernel (float64 sums on the CPU: finite for huge activations)."""
    norms = [m for m in model.modules() if isinstance(m, InstanceNorm)]
    before = [m.stable for m in norms]
    for m in norms:
        m.stable = True
    try:
        yield model
    finally:
        for m, flag in zip(norms, before):
            m.stable = flag
