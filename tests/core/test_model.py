"""U-Net shapes, padding, pooling and validation of the architecture settings."""

import pytest
import torch
import torch.nn.functional as F

from napari_unetseg.core.config import ConfigError, ModelConfig
from napari_unetseg.core.model import (
    UNet,
    count_parameters,
    default_pool,
    group_count,
    level_widths,
    pool_divisor,
    prefers_channels_last,
)


def tiny(**kw) -> ModelConfig:
    base = {"base_width": 4, "depth": 3}
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("shape", [(17, 33, 35), (16, 16, 16), (5, 9, 3), (1, 1, 1)])
def test_3d_any_size_gives_logits_of_the_input_size(shape):
    torch.manual_seed(0)
    net = UNet(tiny(num_classes=3)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(33, 35), (64, 48), (7, 1)])
def test_2d_network(shape):
    net = UNet(tiny(spatial_dims=2, num_classes=4)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, *shape))
    assert out.shape == (1, 4, *shape)
    assert not any(isinstance(m, torch.nn.Conv3d) for m in net.modules())


def test_multichannel_multiclass():
    net = UNet(tiny(in_channels=3, num_classes=5))
    out = net(torch.randn(1, 3, 9, 20, 21))
    assert out.shape == (1, 5, 9, 20, 21)
    with pytest.raises(ValueError, match="3 input channel"):
        net(torch.randn(1, 1, 9, 20, 21))


@pytest.mark.parametrize("norm", ["instance", "batch", "group"])
def test_each_norm_trains_one_step(norm):
    torch.manual_seed(0)
    net = UNet(tiny(norm=norm, base_width=6))
    x = torch.randn(2, 1, 8, 12, 12)
    y = torch.randint(0, 2, (2, 8, 12, 12))
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    kinds = {type(m).__name__ for m in net.modules()}
    expected = {"instance": "InstanceNorm", "batch": "BatchNorm3d", "group": "GroupNorm"}
    assert expected[norm] in kinds


def test_channels_last_network_gives_the_same_logits():
    torch.manual_seed(0)
    net = UNet(tiny(num_classes=3)).eval()
    x = torch.randn(2, 1, 9, 20, 21)
    with torch.no_grad():
        plain = net(x)
        assert net.use_channels_last() is net
        assert net.channels_last
        fast = net(x)  # a contiguous input is converted by the network
        weight = net.encoder[1][0][0].weight
        assert weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert not weight.is_contiguous()
        net.use_channels_last(False)
        back = net(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(back, plain, rtol=1e-4, atol=1e-5)
    assert net.encoder[1][0][0].weight.is_contiguous()
    # 2D networks keep the default layout
    net2 = UNet(tiny(spatial_dims=2)).use_channels_last()
    assert not net2.channels_last
    # place(): the device's layout, as build_model and the trainer use it
    assert UNet(tiny()).place("cpu").channels_last
    assert not UNet(tiny(spatial_dims=2)).place("cpu").channels_last
    assert prefers_channels_last("cpu", 3)
    assert prefers_channels_last(torch.device("cpu"), 3)
    assert not prefers_channels_last("cpu", 2)
    assert not prefers_channels_last("cuda:0", 3)
    assert not prefers_channels_last("mps", 3)


def test_widths_double_per_level_and_are_capped():
    assert level_widths(8, 4) == [8, 16, 32, 64]
    assert level_widths(32, 6, 3) == [32, 64, 128, 256, 320, 320]
    assert level_widths(32, 6, 2) == [32, 64, 128, 256, 512, 512]
    net = UNet(tiny(base_width=5, depth=4))
    assert net.widths == [5, 10, 20, 40]
    # two convolutions per encoder level
    for level, block in enumerate(net.encoder):
        convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv3d)]
        assert len(convs) == 2
        assert convs[-1].out_channels == net.widths[level]


def test_anisotropic_pooling_keeps_z_at_the_first_level():
    pool = [[1, 2, 2], [2, 2, 2]]
    net = UNet(tiny(pool=pool))
    assert net.divisor == (2, 4, 4)
    seen = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:])))
        for b in net.encoder
    ]
    out = net(torch.randn(1, 1, 6, 16, 16))
    for h in hooks:
        h.remove()
    assert seen == [(6, 16, 16), (6, 8, 8), (3, 4, 4)]
    assert out.shape == (1, 2, 6, 16, 16)
    # an odd size is padded to the divisor per axis
    assert net.padded_shape((5, 13, 16)) == (6, 16, 16)


def test_default_pool_and_divisor():
    assert default_pool(3, 4) == [[2, 2, 2]] * 3
    assert default_pool(2, 1) == []
    assert pool_divisor([[1, 2, 2], [2, 2, 2], [2, 2, 1]], 3) == (4, 8, 4)
    assert UNet(tiny(depth=1)).divisor == (1, 1, 1)


def test_padding_is_replicate_then_crop():
    """Output for an odd-sized input equals the output for the manually padded input,
    cropped back: the padding never shifts the result."""
    torch.manual_seed(1)
    net = UNet(tiny(norm="batch")).eval()
    x = torch.randn(1, 1, 7, 13, 10)
    padded = F.pad(x, [0, 2, 0, 3, 0, 1], mode="replicate")  # -> (8, 16, 12), divisor 4
    assert tuple(padded.shape[2:]) == net.padded_shape((7, 13, 10))
    with torch.no_grad():
        a = net(x)
        b = net(padded)[:, :, :7, :13, :10]
    torch.testing.assert_close(a, b)

    zeros = UNet(tiny(norm="batch"), pad_mode="zeros").eval()
    zeros.load_state_dict(net.state_dict())
    with torch.no_grad():
        c = zeros(x)
        d = zeros(F.pad(x, [0, 2, 0, 3, 0, 1]))[:, :, :7, :13, :10]
    torch.testing.assert_close(c, d)
    assert not torch.allclose(a, c)


def test_maxpool_downsampling_variant():
    net = UNet(tiny(pool=[[1, 2, 2], [2, 2, 2]]), downsampling="maxpool")
    assert any(isinstance(m, torch.nn.MaxPool3d) for m in net.modules())
    assert net(torch.randn(1, 1, 3, 10, 11)).shape == (1, 2, 3, 10, 11)


def test_bad_settings_and_inputs_are_refused_clearly():
    with pytest.raises(ConfigError, match="pool lists 1"):
        UNet(tiny(pool=[[2, 2, 2]]))
    with pytest.raises(ConfigError, match="3 positive factors"):
        UNet(tiny(pool=[[2, 2], [2, 2]]))
    with pytest.raises(ConfigError, match="norm"):
        UNet(tiny(norm="layer"))
    net = UNet(tiny())
    with pytest.raises(ValueError, match=r"\(B, C, Z, Y, X\)"):
        net(torch.randn(1, 16, 16))
    with pytest.raises(ConfigError):
        UNet(tiny(), downsampling="avg")


def test_group_count_divides_channels():
    for ch in (1, 2, 4, 6, 7, 16, 24, 320):
        g = group_count(ch)
        assert ch % g == 0
        assert g <= 8
    assert group_count(16) == 8
    assert group_count(7) == 1


def test_parameter_count_grows_with_width():
    assert count_parameters(UNet(tiny(base_width=8))) > count_parameters(UNet(tiny()))


def test_an_unplanned_base_width_is_refused_clearly():
    with pytest.raises(ConfigError, match="base_width is not set"):
        UNet(tiny(base_width=None))
