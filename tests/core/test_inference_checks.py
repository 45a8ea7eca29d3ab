"""Prediction refuses what cannot work, before predicting: a 2D image for a 3D model,
windows far too small for the image, damaged (NaN) weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unetseg.core.checkpoint import Checkpoint, CheckpointError
from napari_unetseg.core.config import Config, InferConfig, ModelConfig
from napari_unetseg.core.data import Normalizer
from napari_unetseg.core.events import Done, Info
from napari_unetseg.core.inference import (
    MAX_WINDOWS,
    check_window_layout,
    count_windows,
    predict,
    predict_volume,
    sliding_window,
)
from napari_unetseg.core.model import UNet
from napari_unetseg.core.planning import make_plan


def _checkpoint(dims=3, patch=(8, 16, 16), k=3, state=None) -> Checkpoint:
    cfg = Config()
    cfg.model = ModelConfig(spatial_dims=dims, in_channels=1, num_classes=k, base_width=4, depth=3)
    cfg.data.patch_size = patch
    cfg.infer.device = "cpu"
    cfg.infer.precision = "float32"
    cfg.class_names = ["a", "b"][: k - 1]
    torch.manual_seed(0)
    return Checkpoint(
        config=cfg,
        state_dict=state if state is not None else UNet(cfg.model).state_dict(),
        normalizer=Normalizer(mode="zscore", offsets=[10.0], scales=[2.0]),
        task="semantic",
    )


class _Counting:
    """Wraps a checkpoint and counts the networks built from it."""

    def __init__(self, checkpoint: Checkpoint):
        self._ckpt = checkpoint
        self.built = 0

    def __getattr__(self, name):
        return getattr(self._ckpt, name)

    def build_model(self, device="cpu"):
        self.built += 1
        return self._ckpt.build_model(device)


def _first_event(gen):
    return next(iter(gen))


def _raw(shape, seed=0):
    return (10.0 + 2.0 * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# --------------------------------------------------------------------- 3D model, 2D image


@pytest.mark.parametrize("shape", [(1, 21, 23), (1, 1, 21, 23), (21, 23)])
def test_a_3d_model_refuses_a_2d_image_before_predicting(shape):
    ckpt = _Counting(_checkpoint(dims=3, patch=(8, 16, 16)))
    gen = predict(ckpt, _raw(shape))
    with pytest.raises(ValueError, match=r"the model is 3D.* but the image is 2D") as info:
        _first_event(gen)
    message = str(info.value)
    assert "\n" not in message
    assert "train a 2D model" in message
    assert ckpt.built == 0, "refused before the network was built"


def test_a_3d_model_still_predicts_thin_volumes_and_one_slice_deep_windows():
    ckpt = _checkpoint(dims=3, patch=(8, 16, 16))
    thin = predict_volume(ckpt, _raw((1, 3, 21, 23)))
    assert thin.labels.shape == (3, 21, 23)
    # a window one slice deep fits a single slice: nothing is invented along Z
    one = predict_volume(ckpt, _raw((1, 1, 21, 23)), window=(1, 16, 16))
    assert one.labels.shape == (1, 21, 23)
    assert one.probabilities is not None
    np.testing.assert_allclose(one.probabilities.sum(0), 1.0, atol=1e-5)


def test_a_2d_model_still_takes_a_single_channel_2d_image():
    ckpt = _checkpoint(dims=2, patch=(16, 16))
    pred = predict_volume(ckpt, _raw((1, 21, 23)))
    assert pred.labels.shape == (21, 23)


# --------------------------------------------------------------------- tiny windows


def test_tiny_windows_are_refused_with_one_line_suggesting_a_larger_patch(monkeypatch):
    from napari_unetseg.core.inference import windows

    # the 1-voxel patch predicts with 1-voxel windows (no added context)
    monkeypatch.setattr(windows, "CONTEXT_GROWTH", 1.0)
    ckpt = _Counting(_checkpoint(dims=3, patch=(1, 1, 1)))
    ckpt.config.infer.overlap = 0.25  # 1-voxel windows stepping by 0.75: more than voxels
    shape = (16, 32, 32)
    n = count_windows(shape, (1, 1, 1), ckpt.config.infer.overlap)
    assert 30_000 < n < MAX_WINDOWS  # more windows than voxels, yet under the hard cap
    with pytest.raises(ValueError, match="larger patch size") as info:
        _first_event(predict(ckpt, _raw((1, *shape))))
    message = str(info.value)
    assert "\n" not in message
    assert "smaller depth" not in message
    assert f"{n:,} windows" in message
    # the generic engine (used by training's validation) refuses the same layout
    model = UNet(ckpt.config.model).eval()
    with pytest.raises(ValueError, match="larger patch size"):
        list(sliding_window(model, _raw((1, *shape)), (1, 1, 1), InferConfig()))


def test_window_layout_limits():
    # a sane layout passes and reports its window count
    assert check_window_layout((16, 32, 32), (8, 16, 16), 0.25) == count_windows(
        (16, 32, 32), (8, 16, 16), 0.25
    )
    # no overlap: one-voxel windows advance, but the count passes the hard limit
    with pytest.raises(ValueError, match=f"more than the limit of {MAX_WINDOWS:,}"):
        check_window_layout((64, 64, 64), (1, 1, 1), 0.0)
    # windows smaller than the pooling divisor along an axis longer than them
    with pytest.raises(ValueError, match=r"pooling divisor 4x4x4"):
        check_window_layout((16, 32, 32), (2, 16, 16), 0.25, divisor=(4, 4, 4))
    # ... but a thin image axis may be shorter than the divisor
    assert check_window_layout((2, 32, 32), (2, 16, 16), 0.25, divisor=(4, 4, 4)) == 9


def test_predict_refuses_a_window_below_the_pooling_divisor():
    ckpt = _checkpoint(dims=3, patch=(8, 16, 16))  # depth 3: divisor 4 per axis
    with pytest.raises(ValueError, match="pooling divisor"):
        _first_event(predict(ckpt, _raw((1, 11, 21, 23)), window=(2, 16, 16)))


def test_planning_a_user_patch_too_small_to_pool_suggests_a_larger_patch():
    cfg = Config()
    cfg.data.patch_size = (1, 1, 1)
    notes = " ".join(make_plan((16, 32, 32), None, 1, cfg, memory_bytes=1 << 30).notes)
    assert "larger patch_size" in notes
    assert "smaller depth" not in notes


# --------------------------------------------------------------------- damaged weights


def test_nan_weights_are_refused_before_predicting():
    good = _checkpoint()
    state = {name: t.clone() for name, t in good.state_dict.items()}
    name = next(n for n, t in state.items() if t.is_floating_point() and t.ndim > 1)
    state[name].view(-1)[0] = float("nan")
    ckpt = _Counting(_checkpoint(state=state))
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights.*retrain or load") as e:
        _first_event(predict(ckpt, _raw((1, 11, 21, 23))))
    assert name in str(e.value)
    assert ckpt.built == 0


class _NaNNet(torch.nn.Module):
    """Finite weights, NaN output: what an overflowing or broken network produces."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.divisor = inner.divisor

    def forward(self, x):
        return self.inner(x) * float("nan")


def test_a_network_that_outputs_nan_is_an_error_not_an_empty_mask():
    ckpt = _Counting(_checkpoint())
    ckpt.build_model = lambda device="cpu": _NaNNet(ckpt._ckpt.build_model(device))
    events: list = []

    def consume():
        events.extend(predict(ckpt, _raw((1, 11, 21, 23)), keep_probabilities=False))

    with pytest.raises(CheckpointError, match=r"produced NaN: its weights are damaged"):
        consume()
    assert any(isinstance(e, Info) for e in events)
    assert not any(isinstance(e, Done) for e in events)
