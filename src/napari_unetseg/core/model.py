"""A U-Net for 2D images and 3D volumes with per-level (anisotropic) pooling.

The layout follows the U-Net of Ronneberger et al. (2015) and its 3D form (Çiçek et al.,
2016) in the way nnU-Net (Isensee et al., 2021) builds it:

* ``depth`` resolution levels; level ``l`` has ``base_width * 2**l`` feature maps, capped
  at 320 (3D) or 512 (2D) as in nnU-Net, so deep networks stay affordable;
* every level holds two 3x3(x3) convolutions, each followed by a normalisation
  (instance norm with affine parameters, batch norm or group norm) and LeakyReLU(0.01);
  instance norm is computed by torch's group-norm kernel on the CPU (see
  :class:`~.norms.InstanceNorm`);
* the encoder goes down with a strided convolution (default, as nnU-Net) or a max-pool
  whose kernel/stride is the level's entry of ``cfg.pool``: ``[1, 2, 2]`` halves Y and X
  and keeps Z, which suits volumes with thick slices;
* the decoder goes up with a transposed convolution whose kernel equals its stride equals
  the pooling factor, concatenates the encoder features of the same level and applies
  two convolutions; a 1x1(x1) convolution gives the class logits.

All convolutions are 3 wide along every axis, also along an axis that is not pooled at
the first levels of a strongly anisotropic volume: a thin volume gets fewer poolings
along Z (see :mod:`napari_unetseg.core.planning`), which keeps the receptive field along
Z sensible without a separate kernel-size setting, and keeps the architecture a function
of :class:`~napari_unetseg.core.config.ModelConfig` alone.

The network accepts any spatial size: :meth:`UNet.forward` pads the input to a multiple
of the product of the pooling factors along each axis and crops the logits back.

Memory layout: on the CPU a 3D network runs in ``channels_last_3d`` (oneDNN's
convolutions and the group-norm kernel work in that layout without copies);
:func:`prefers_channels_last` is the rule, :meth:`UNet.place` applies it, and training
and prediction both call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, ModelConfig
from .norms import InstanceNorm
from .planning import divisor as pool_divisor

#: Widest level (feature maps) per number of spatial dimensions, as in nnU-Net.
MAX_WIDTH = {2: 512, 3: 320}
NEGATIVE_SLOPE = 0.01
DOWNSAMPLING = ("conv", "maxpool")
_NORMS = (nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)


def prefers_channels_last(device: torch.device | str, spatial_dims: int) -> bool:
    """Whether a network runs in ``channels_last_3d`` on ``device``: 3D networks on the CPU.

    On CUDA the layout is left to cuDNN (not measured there), and 2D networks keep the
    default layout.
    """
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    return kind == "cpu" and spatial_dims == 3


def level_widths(base_width: int, depth: int, spatial_dims: int = 3) -> list[int]:
    """Feature maps per level: ``base_width * 2**level`` capped at :data:`MAX_WIDTH`."""
    cap = MAX_WIDTH[spatial_dims]
    return [min(base_width * 2**level, cap) for level in range(depth)]


def default_pool(spatial_dims: int, depth: int) -> list[list[int]]:
    """Isotropic factor-2 pooling at every level transition (``depth - 1`` kernels)."""
    return [[2] * spatial_dims for _ in range(depth - 1)]


def _norm(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    if kind == "instance":
        return InstanceNorm(channels, eps=1e-5)
    if kind == "batch":
        batch = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        return batch(channels, eps=1e-5)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels, eps=1e-5, affine=True)
    raise ConfigError(f"norm must be 'instance', 'batch' or 'group', not {kind!r}")


def group_count(channels: int, max_groups: int = 8, min_per_group: int = 2) -> int:
    """Groups for GroupNorm: the largest divisor of ``channels`` that is at most
    ``max_groups`` and leaves at least ``min_per_group`` channels per group (1 for very
    narrow layers)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0 and channels // g >= min_per_group:
            return g
    return 1


def _size3(v: Sequence[int] | int) -> tuple[int, int, int] | int:
    if isinstance(v, int):
        return v
    z, y, x = v
    return int(z), int(y), int(x)


def _size2(v: Sequence[int] | int) -> tuple[int, int] | int:
    if isinstance(v, int):
        return v
    y, x = v
    return int(y), int(x)


def _conv(
    spatial_dims: int,
    in_ch: int,
    out_ch: int,
    kernel: Sequence[int] | int,
    stride: Sequence[int] | int = 1,
    padding: int = 0,
    *,
    transpose: bool = False,
) -> nn.Module:
    """A 2D or 3D convolution (transposed when asked) with a bias; ``kernel`` and
    ``stride`` are one int or one value per spatial axis (Z, Y, X) / (Y, X)."""
    if spatial_dims == 3:
        k3, s3 = _size3(kernel), _size3(stride)
        if transpose:
            return nn.ConvTranspose3d(in_ch, out_ch, kernel_size=k3, stride=s3)
        return nn.Conv3d(in_ch, out_ch, kernel_size=k3, stride=s3, padding=padding, bias=True)
    k2, s2 = _size2(kernel), _size2(stride)
    if transpose:
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=k2, stride=s2)
    return nn.Conv2d(in_ch, out_ch, kernel_size=k2, stride=s2, padding=padding, bias=True)


class ConvNormAct(nn.Sequential):
    """Convolution -> normalisation -> LeakyReLU(0.01)."""

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        norm: str,
        stride: Sequence[int] | int = 1,
    ):
        super().__init__(
            _conv(spatial_dims, in_ch, out_ch, kernel=3, stride=stride, padding=1),
            _norm(norm, out_ch, spatial_dims),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
        )


class Level(nn.Sequential):
    """Two :class:`ConvNormAct` blocks; the first one may be strided (downsampling)."""

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        norm: str,
        stride: Sequence[int] | int = 1,
    ):
        super().__init__(
            ConvNormAct(spatial_dims, in_ch, out_ch, norm, stride=stride),
            ConvNormAct(spatial_dims, out_ch, out_ch, norm),
        )


class UNet(nn.Module):
    """U-Net built from a :class:`~napari_unetseg.core.config.ModelConfig`.

    Args:
        cfg: architecture (``spatial_dims``, ``in_channels``, ``num_classes``,
            ``base_width``, ``depth``, ``norm``, ``pool``). ``pool = None`` means factor-2
            pooling along every axis at every level.
        downsampling: ``"conv"`` (strided 3x3(x3) convolution, the default and what
            saved models use) or ``"maxpool"``.
        pad_mode: how :meth:`forward` pads inputs whose size is not a multiple of
            :attr:`divisor`: ``"replicate"`` (default) or ``"zeros"``.

    Input ``(B, C, Z, Y, X)`` (3D) or ``(B, C, Y, X)`` (2D), any spatial size; output
    logits ``(B, num_classes, Z, Y, X)`` / ``(B, num_classes, Y, X)`` of the same size.
    """

    def __init__(
        self, cfg: ModelConfig, *, downsampling: str = "conv", pad_mode: str = "replicate"
    ):
        super().__init__()
        cfg.validate()
        if downsampling not in DOWNSAMPLING:
            raise ConfigError(f"downsampling must be one of {DOWNSAMPLING}")
        if pad_mode not in ("replicate", "zeros"):
            raise ConfigError("pad_mode must be 'replicate' or 'zeros'")
        d = cfg.spatial_dims
        if cfg.base_width is None:
            raise ConfigError(
                "model.base_width is not set: give it, or let training plan it (make_plan)"
            )
        pool = [list(map(int, k)) for k in (cfg.pool or default_pool(d, cfg.depth))]
        for kernel in pool:
            if len(kernel) != d or any(k < 1 for k in kernel):
                raise ConfigError(
                    f"every pool kernel needs {d} positive factors (one per spatial axis), "
                    f"got {kernel}"
                )
        self.spatial_dims = d
        self.in_channels = cfg.in_channels
        self.num_classes = cfg.num_classes
        self.pool = pool
        self.widths = level_widths(cfg.base_width, cfg.depth, d)
        self.divisor = pool_divisor(pool, d)
        self.pad_mode = pad_mode
        self.downsampling = downsampling
        self.channels_last = False

        max_pool = nn.MaxPool3d if d == 3 else nn.MaxPool2d

        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        in_ch = cfg.in_channels
        for level, width in enumerate(self.widths):
            stride: Sequence[int] | int = 1
            if level > 0:
                kernel = pool[level - 1]
                if downsampling == "conv":
                    stride = kernel
                    self.down.append(nn.Identity())
                else:
                    self.down.append(max_pool(tuple(kernel), tuple(kernel)))
            self.encoder.append(Level(d, in_ch, width, cfg.norm, stride=stride))
            in_ch = width

        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(cfg.depth - 2, -1, -1):
            kernel = pool[level]
            width, below = self.widths[level], self.widths[level + 1]
            self.up.append(_conv(d, below, width, kernel, stride=kernel, transpose=True))
            self.decoder.append(Level(d, 2 * width, width, cfg.norm))

        head_cls = nn.Conv3d if d == 3 else nn.Conv2d
        self.head = head_cls(self.widths[0], cfg.num_classes, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation for the LeakyReLU slope; zero biases; unit norms."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _NORMS) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def place(self, device: torch.device | str) -> UNet:
        """Move the network to ``device`` in the memory layout that is fastest there
        (:func:`prefers_channels_last`); training and prediction both call it. Returns
        ``self``."""
        self.to(device)
        return self.use_channels_last(prefers_channels_last(device, self.spatial_dims))

    def use_channels_last(self, enable: bool = True) -> UNet:
        """Hold the weights in ``channels_last_3d`` and feed every input that way (3D
        networks only; ``enable=False`` goes back to the default layout). Returns ``self``.

        The logits come out channels-last too; the numbers do not change.
        """
        self.channels_last = bool(enable) and self.spatial_dims == 3
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        # torch's stubs lack the memory_format keyword of Module.to
        self.to(memory_format=layout)  # type: ignore[call-overload]
        return self

    def padded_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Smallest spatial shape >= ``spatial`` that the network can take without padding.

        Each axis is rounded up to a multiple of :attr:`divisor`. When the lowest level
        would hold a single voxel (normalisation needs at least two), the last axis is
        doubled.
        """
        shape = [max(1, math.ceil(s / k)) * k for s, k in zip(spatial, self.divisor)]
        if all(s == k for s, k in zip(shape, self.divisor)):
            shape[-1] *= 2
        return tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x``.

        Args:
            x: ``(B, C, Z, Y, X)`` for a 3D network or ``(B, C, Y, X)`` for a 2D one, with
                ``C == in_channels`` and any spatial size.

        Returns:
            logits ``(B, num_classes, Z, Y, X)`` / ``(B, num_classes, Y, X)``, the spatial
            size of ``x``.
        """
        if x.ndim != self.spatial_dims + 2:
            axes = "(B, C, Z, Y, X)" if self.spatial_dims == 3 else "(B, C, Y, X)"
            raise ValueError(
                f"this {self.spatial_dims}D U-Net expects input {axes}, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"the network was built for {self.in_channels} input channel(s), the input "
                f"has {x.shape[1]}"
            )
        spatial = tuple(x.shape[2:])
        target = self.padded_shape(spatial)
        if target != spatial:
            pad: list[int] = []
            for s, t in zip(reversed(spatial), reversed(target)):
                pad += [0, t - s]
            if self.pad_mode == "replicate":
                x = F.pad(x, pad, mode="replicate")
            else:
                x = F.pad(x, pad, mode="constant", value=0.0)

        if self.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = self.down[level - 1](x)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder):
            x = up(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        x = self.head(x)

        if target != spatial:
            crop = (slice(None), slice(None), *(slice(0, s) for s in spatial))
            x = x[crop]
        return x


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
