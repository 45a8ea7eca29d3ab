"""Windows whose input is one constant value are computed once and their logits reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unetseg.core.config import InferConfig, ModelConfig
from napari_unetseg.core.events import Done
from napari_unetseg.core.inference import engine as engine_mod
from napari_unetseg.core.inference import sliding_window
from napari_unetseg.core.model import UNet


def _model(cin=1, k=3):
    torch.manual_seed(0)
    cfg = ModelConfig(spatial_dims=3, in_channels=cin, num_classes=k, base_width=4, depth=2)
    return UNet(cfg).eval()


def _image(shape, seed=0):
    """(C, Z, Y, X): zeros around a noisy block, as a scan in its empty surroundings."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, dtype=np.float32)
    c, z, y, x = shape
    img[:, : z // 2, : y // 4, : x // 4] = rng.normal(size=(c, z // 2, y // 4, x // 4))
    return img


def _probs(model, image, window, monkeypatch, reuse, **cfg):
    monkeypatch.setattr(engine_mod._Engine, "reuse_constant", reuse)
    calls = []
    forward = engine_mod._Engine._forward

    def counting(self, x):
        calls.append(int(x.shape[0]))
        return forward(self, x)

    monkeypatch.setattr(engine_mod._Engine, "_forward", counting)
    events = list(sliding_window(model, image, window, InferConfig(window_batch=4, **cfg)))
    assert isinstance(events[-1], Done)
    return events[-1].result, sum(calls)


def _dice(a, b, k):
    p, t = a == k, b == k
    return 2.0 * (p & t).sum() / max(1, p.sum() + t.sum())


@pytest.mark.parametrize("tta", [False, True])
def test_constant_windows_give_the_same_result_with_fewer_windows(monkeypatch, tta):
    model, image, window = _model(), _image((1, 12, 40, 40)), (8, 16, 16)
    ref, n_ref = _probs(model, image, window, monkeypatch, False, tta=tta)
    out, n_out = _probs(model, image, window, monkeypatch, True, tta=tta)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    labels, ref_labels = out.argmax(0), ref.argmax(0)
    for k in range(3):
        assert abs(_dice(labels, ref_labels, k) - 1.0) <= 0.005
    assert n_out < n_ref  # most windows lie in the zeros: computed once
    assert n_out >= 1


def test_a_channel_that_varies_keeps_the_window_computed(monkeypatch):
    model = _model(cin=2)
    image = _image((2, 8, 24, 24))
    image[1] = np.linspace(0, 1, 24, dtype=np.float32)[None, None, :]  # varies everywhere
    ref, n_ref = _probs(model, image, (8, 16, 16), monkeypatch, False)
    out, n_out = _probs(model, image, (8, 16, 16), monkeypatch, True)
    assert n_out == n_ref  # no window is constant in every channel
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_many_constant_values_stay_exact_beyond_the_store(monkeypatch):
    """More distinct constant windows than the store holds: still the plain result."""
    monkeypatch.setattr(engine_mod, "MAX_CONSTANT_WINDOWS", 2)
    model = _model()
    image = np.zeros((1, 8, 8, 32), dtype=np.float32)
    for i in range(4):  # four windows of 8^3, each one constant value
        image[..., 8 * i : 8 * (i + 1)] = float(i)
    ref, _ = _probs(model, image, (8, 8, 8), monkeypatch, False, overlap=0.0)
    out, n_out = _probs(model, image, (8, 8, 8), monkeypatch, True, overlap=0.0)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert n_out == 4  # each value computed once: none repeats


class _BatchSizes(torch.nn.Module):
    """A network wrapper recording the batch size of every forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.model(x)


def test_single_float32_windows_go_through_the_network_in_pairs():
    """torch runs a 3D float32 convolution on one CPU window with its slow reference
    code, so a lone window is doubled (and one copy dropped): same result, no pass of 1."""
    model = _model()
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 12, 20, 20)).astype(np.float32)
    window = (8, 16, 16)
    paired = _BatchSizes(model)
    one = list(sliding_window(paired, image, window, InferConfig(window_batch=1)))[-1].result
    assert paired.sizes
    assert min(paired.sizes) == 2
    two = list(sliding_window(model, image, window, InferConfig(window_batch=2)))[-1].result
    np.testing.assert_allclose(one, two, atol=1e-5)
    # mixed precision (oneDNN at any batch) keeps single windows single
    lone = _BatchSizes(model)
    list(sliding_window(lone, image, window, InferConfig(window_batch=1), dtype=torch.bfloat16))
    assert set(lone.sizes) == {1}
