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
                    return _channels_first_group_norm(x, self.weight, self.bias, self.eps)[0]
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


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
