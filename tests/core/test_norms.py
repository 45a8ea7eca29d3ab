"""Instance norm: torch's numbers and parameters, channels-last maps in every precision
the CPU runs, and the float64 fallback for huge maps."""

import pytest
import torch
import torch.nn.functional as F

from napari_unetseg.core import norms
from napari_unetseg.core.norms import InstanceNorm, stable_norms


@pytest.mark.parametrize("dims", [2, 3])
def test_instance_norm_matches_torch_and_loads_its_weights(dims):
    """The CPU group-norm path gives torch's instance norm, forward and backward, and
    the parameters of torch's InstanceNormNd(affine=True) load unchanged (saved models)."""
    torch.manual_seed(0)
    reference = (torch.nn.InstanceNorm3d if dims == 3 else torch.nn.InstanceNorm2d)(
        6, eps=1e-5, affine=True
    )
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2.0)
        reference.bias.uniform_(-1.0, 1.0)
    ours = InstanceNorm(6)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = (3.0 + 2.0 * torch.randn(2, 6, *(5,) * dims)).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    # channels-last input: same numbers, and the layout is kept (no copy to channels-first)
    if dims == 3:
        xl = x.detach().contiguous(memory_format=torch.channels_last_3d)
        yl = ours(xl)
        assert yl.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(yl, y.detach(), rtol=1e-4, atol=1e-5)
        # training in channels-last: the backward on channels-first copies (torch's own
        # channels-last backward is its slow path) gives torch's gradients, in the layout
        xl.requires_grad_(True)
        ours.zero_grad()
        yl = ours(xl)
        assert type(yl.grad_fn).__name__ == "_ChannelsLastNormBackward"
        yl.backward(grad.contiguous(memory_format=torch.channels_last_3d))
        assert xl.grad.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(xl.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_instance_norm_of_reduced_precision_channels_last_maps(dtype):
    """bfloat16/float16 channels-last 3D maps (training and prediction under autocast on
    the CPU) go through channels-first copies, forward and backward (torch's own kernels
    are slow there): the same numbers as float64 within the dtype's rounding, the output
    and the input gradient channels-last and in the map's dtype."""
    torch.manual_seed(1)
    ours = InstanceNorm(4)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1.0, 1.0)
    x64 = (3.0 + 2.0 * torch.randn(2, 4, 6, 7, 5, dtype=torch.float64)).requires_grad_(True)
    w64 = ours.weight.detach().double().requires_grad_(True)
    b64 = ours.bias.detach().double().requires_grad_(True)
    y64 = F.instance_norm(x64, weight=w64, bias=b64)
    grad = torch.randn_like(y64)
    y64.backward(grad)
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3

    x = x64.detach().to(dtype).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():  # prediction
        y = ours(x)
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert not y.is_contiguous()
    torch.testing.assert_close(y.double(), y64.detach(), rtol=tol, atol=tol)

    x.requires_grad_(True)  # training
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = ours(x)
    assert type(y.grad_fn).__name__ == "_ChannelsLastNormBackward"
    # the map kept for the backward is the channels-first copy the forward made (the
    # backward needs that layout; keeping x instead would mean a second copy there)
    maps = [t for t in saved if t.ndim == 5]
    assert len(maps) == 1
    assert maps[0].is_contiguous()
    assert maps[0].dtype == dtype
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    y.backward(grad.to(dtype).contiguous(memory_format=torch.channels_last_3d))
    assert x.grad.dtype == dtype
    assert x.grad.is_contiguous(memory_format=torch.channels_last_3d)
    scale = float(x64.grad.abs().max())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=tol, atol=tol * scale)
    # the parameters' gradients (sums over many rounded voxels) against float64
    for ours_grad, ref in ((ours.weight.grad, w64.grad), (ours.bias.grad, b64.grad)):
        assert ours_grad.dtype == torch.float32
        torch.testing.assert_close(
            ours_grad.double(), ref, rtol=tol, atol=tol * float(ref.abs().max())
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("shape", "k"),
    [
        ((2, 8, 16, 16, 12), 8),  # rows of 8 voxels x 8 channels
        ((1, 12, 10, 10, 10), 5),  # 12 channels: 5 voxels per row of 60
        ((1, 8, 7, 7, 7), 7),  # 343 voxels: no factor 8, 7 voxels per row
        ((2, 64, 4, 4, 4), 1),  # one voxel per row
    ],
)
def test_large_reduced_precision_maps_are_normalised_tiled(monkeypatch, dtype, shape, k):
    """Large bfloat16/float16 channels-last maps are normalised in their own layout
    (the tiled view's column statistics combined per channel): float32 statistics, so a
    map far from zero (mean 40, sd 2) comes out as the float64 reference does within the
    output's rounding, channels-last, in the map's dtype, for channel counts that do and
    do not divide the row width, and voxel counts with and without the preferred factor."""
    monkeypatch.setattr(norms, "TILED_NORM_MIN_VALUES", 1)
    calls = []
    tiled = norms._tiled_instance_norm

    def spy(x, view, *args):
        calls.append(view[1])
        return tiled(x, view, *args)

    monkeypatch.setattr(norms, "_tiled_instance_norm", spy)
    torch.manual_seed(2)
    c = shape[1]
    ours = InstanceNorm(c)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1.0, 1.0)
    x64 = 40.0 + 2.0 * torch.randn(shape, dtype=torch.float64)
    x64[:, 0] *= 0.25  # channels of different spread
    x = x64.to(dtype).contiguous(memory_format=torch.channels_last_3d)
    # the reference normalises the rounded map: what is compared is the normalisation
    ref = F.instance_norm(x.double(), weight=ours.weight.double(), bias=ours.bias.double())
    with torch.no_grad():
        y = ours(x)
    assert calls == [k]
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    # one rounding of outputs up to about 4: half a unit in the last place
    tol = 2.0**-8 * 4 if dtype == torch.bfloat16 else 2.0**-11 * 4
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=tol)


def test_maps_that_do_not_tile_or_are_small_take_the_channels_first_copies(monkeypatch):
    """Maps below :data:`~napari_unetseg.core.norms.TILED_NORM_MIN_VALUES` and maps whose
    rows would be narrower than the minimum (13 voxels of 8 channels) take the copies,
    with the same numbers."""
    calls = []
    monkeypatch.setattr(norms, "_tiled_instance_norm", lambda *a: calls.append(a))
    ours = InstanceNorm(8)
    small, prime = (2, 8, 4, 4, 4), (1, 8, 1, 1, 13)
    for shape in (small, prime):
        if shape == prime:
            monkeypatch.setattr(norms, "TILED_NORM_MIN_VALUES", 1)
        x = torch.randn(shape).bfloat16().contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad():
            y = ours(x)
        ref = F.instance_norm(x.double(), weight=ours.weight.double(), bias=ours.bias.double())
        torch.testing.assert_close(y.double(), ref, rtol=0, atol=2.0**-8 * 4)
    assert calls == []


def test_stable_norms_use_torch_instance_norm_for_huge_maps():
    """Maps of 1e30 overflow float32 sums of squares; inside stable_norms the norm is
    torch's instance norm (float64 sums on the CPU): finite, and equal to it."""
    torch.manual_seed(0)
    reference = torch.nn.InstanceNorm3d(4, eps=1e-5, affine=True)
    net = torch.nn.Sequential(InstanceNorm(4))
    x = torch.randn(2, 4, 6, 6, 6) * 1e30
    with stable_norms(net):
        assert net[0].stable
        y = net(x)
    assert not net[0].stable  # restored after the block
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, reference(x), rtol=1e-4, atol=1e-5)
