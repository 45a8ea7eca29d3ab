"""Sliding-window prediction: blending, layout, TTA, cancellation, memory, predict()."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from napari_unetseg.core.config import Config, InferConfig, ModelConfig
from napari_unetseg.core.events import Cancelled, CancelToken, Done, Info, Progress
from napari_unetseg.core.inference import (
    MIN_WEIGHT,
    Prediction,
    Slab,
    auto_window_batch,
    count_windows,
    importance_map,
    inference_layout,
    inference_window,
    layout_steps,
    predict,
    predict_volume,
    sliding_window,
    sliding_window_slabs,
    window_grid,
    window_starts,
)
from napari_unetseg.core.inference.windows import (
    CONTEXT_GROWTH,
    CONTEXT_WINDOW,
    MAX_VOLUME_GROWTH,
    MIN_WINDOW_SAVING,
    check_window_layout,
    context_window,
)
from napari_unetseg.core.model import UNet


def _drain(gen):
    events = list(gen)
    assert isinstance(events[-1], Done)
    return events[-1].result, events[:-1]


def _full_softmax(model, image):
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()


def _conv1(cin, k, dims=3, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(cin, k, 1) if dims == 3 else torch.nn.Conv2d(cin, k, 1)
    return conv.eval()


def _symmetric_conv(cin, k, seed=0):
    """A 3x3x3 convolution whose kernel is symmetric under every flip: flip-equivariant."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(cin, k, 3, padding=1)
    with torch.no_grad():
        w = conv.weight
        for axes in ((2,), (3,), (4,)):
            w.copy_((w + torch.flip(w, axes)) / 2)
    return conv.eval()


def _unet(cin=1, k=3, dims=3, seed=0):
    torch.manual_seed(seed)
    return UNet(
        ModelConfig(spatial_dims=dims, in_channels=cin, num_classes=k, base_width=4, depth=3)
    ).eval()


def _image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------------ layout


def test_window_starts_cover_the_axis_flush_with_the_border():
    for size, window, overlap in [(100, 32, 0.25), (33, 16, 0.5), (35, 8, 0.0), (64, 64, 0.5)]:
        starts = window_starts(size, window, overlap)
        assert starts[0] == 0
        assert starts[-1] + window == size
        steps = np.diff(starts)
        assert (steps <= window * (1 - overlap) + 0.5).all()
        assert (steps > 0).all()
    assert window_starts(10, 32, 0.5) == [0]


def test_window_count_is_not_above_monai():
    # MONAI: interval int(w * (1 - overlap)), ceil((size - w) / interval) + 1 windows.
    for size, window, overlap in [(100, 30, 0.25), (513, 96, 0.5), (77, 20, 0.3)]:
        interval = max(int(window * (1 - overlap)), 1)
        monai = int(np.ceil((size - window) / interval)) + 1
        assert len(window_starts(size, window, overlap)) <= monai


def test_window_positions_are_monai_s_unless_that_costs_a_window():
    def monai(size, window, overlap):
        interval = max(int(window * (1 - overlap)), 1)
        n = int(np.ceil((size - window) / interval)) + 1
        return [min(i * interval, size - window) for i in range(n)]

    for size, window, overlap in [(256, 48, 0.25), (64, 48, 0.25), (513, 96, 0.5), (77, 20, 0.3)]:
        assert window_starts(size, window, overlap) == monai(size, window, overlap)
    # 30 * 0.75 = 22.5: MONAI steps by 22 and needs 4 windows over 75 voxels, 3 suffice
    assert len(monai(75, 30, 0.25)) == 4
    starts = window_starts(75, 30, 0.25)
    assert starts == [0, 22, 45]
    assert min(a + 30 - b for a, b in itertools.pairwise(starts)) >= int(0.25 * 30)


def test_window_grid_is_sorted_along_the_first_axis():
    grid = window_grid((40, 30, 20), (16, 16, 16), 0.5)
    assert len(grid) == count_windows((40, 30, 20), (16, 16, 16), 0.5)
    assert [g[0] for g in grid] == sorted(g[0] for g in grid)


def test_3d_windows_get_more_context_than_the_training_patch():
    """3D windows are the patch x 4/3 per axis in divisor steps, at most 64 and at most
    the image (rounded up), never below the patch; 2D networks keep their patch."""
    assert CONTEXT_GROWTH == 4 / 3
    assert CONTEXT_WINDOW == 64
    assert context_window((64, 256, 256), (48, 48, 48), (16, 16, 16)) == (64, 64, 64)
    assert context_window((64, 256, 256), (48, 48, 48), (8, 8, 8)) == (64, 64, 64)
    assert context_window((64, 256, 256), (40, 40, 40), (8, 8, 8)) == (56, 56, 56)
    # a thin anisotropic patch grows in proportion, not to the cap
    assert context_window((64, 256, 256), (16, 96, 96), (4, 8, 8)) == (24, 96, 96)
    # a patch at or over the cap is kept
    assert context_window((200, 200, 200), (96, 64, 128), (8, 8, 8)) == (96, 64, 128)
    # the window stays inside the image (the patch where the image is shorter)
    assert context_window((30, 40, 50), (48, 48, 48), (8, 8, 8)) == (48, 48, 48)
    assert context_window((61, 73, 61), (48, 48, 48), (8, 8, 8)) == (56, 64, 56)
    assert context_window((256, 256), (128, 128), (16, 16)) == (128, 128)
    # always the patch plus whole divisor steps: 56 + 16 would pass the cap of 64
    assert context_window((200, 200, 200), (56, 40, 8), (16, 8, 4)) == (56, 56, 12)
    for p in range(1, 80):
        for d in (1, 2, 4, 8, 16):
            w = context_window((300, 300, 300), (p, p, p), (d, d, d))[0]
            assert (w - p) % d == 0
            assert p <= w <= max(p, 64)
    # inference_window starts from it
    assert inference_window((64, 256, 256), (48, 48, 48), 0.25, (8, 8, 8)) == (64, 64, 64)


def test_inference_window_grows_only_where_it_saves_computed_voxels():
    # 64 slices: two 48-slice windows compute 96 slices, one 64-slice window 64 (-33 %);
    # a 2D network (no added context) shows the growth alone
    assert inference_window((64, 256), (48, 48), 0.125, (16, 16)) == (64, 48)
    # 256 = 6 x 48 at overlap 0.125 steps of 42; no longer window up to 72 saves 25 %
    win = inference_window((256,), (48,), 0.125, (16,))
    assert win == (48,)
    # the saving threshold: growth is kept only with at least MIN_WINDOW_SAVING fewer voxels
    for size in range(20, 200):
        (w,) = inference_window((size,), (48,), 0.125, (16,))
        base = len(window_starts(size, 48, 0.125)) * 48
        cost = len(window_starts(size, w, 0.125)) * w
        assert w % 16 == 0
        assert 48 <= w <= 72
        assert w == 48 or w <= size  # never past the image
        assert w == 48 or cost <= (1 - MIN_WINDOW_SAVING) * base
    # axes no longer than the patch keep it; the divisor sets the steps
    assert inference_window((30, 40), (32, 32), 0.25, (8, 8)) == (32, 40)
    assert inference_window((30, 40), (32, 32), 0.25) == (32, 40)
    # 48 would reach past the 40-pixel axis: the window stays inside the image
    assert inference_window((30, 40), (32, 32), 0.25, (16, 16)) == (32, 32)
    # 50 = two windows of 32 (64 computed); no window up to 48 covers it in one
    assert inference_window((30, 50), (32, 32), 0.25, (8, 8)) == (32, 32)


def test_grown_windows_keep_the_margin_of_the_window_they_grew_from():
    # 128 slices: three 64-slice windows (192 computed) at overlap 0.25; two 72-slice
    # windows sharing the same 16 slices compute 144 (-25 %); 512 gains 8 %, not enough
    win, steps = inference_layout((128, 512, 512), (48, 48, 48), 0.25, (8, 8, 8))
    assert win == (72, 64, 64)
    assert steps == (56.0, 48.0, 48.0)
    assert window_starts(128, 72, 0.25, steps[0]) == [0, 56]  # 16 slices shared
    assert len(window_starts(128, 72, 0.25)) == 3  # a fraction of 72 would share 18
    assert layout_steps((72, 64), (64, 64), 0.25) == (56.0, 48.0)
    assert layout_steps((40,), (32,), 0.3) == pytest.approx((30.4,))  # 32 * 0.7 + 8
    # where growth saves too little, the context window and the overlap's steps stay
    assert inference_layout((64, 256, 256), (48, 48, 48), 0.25, (8, 8, 8)) == (
        (64, 64, 64),
        (48.0, 48.0, 48.0),
    )
    assert inference_layout((189, 233, 197), (48, 48, 48), 0.25, (8, 8, 8))[0] == (64, 64, 64)
    assert inference_window((128, 512, 512), (48, 48, 48), 0.25, (8, 8, 8)) == win


def test_3d_window_volume_growth_is_capped_and_only_taken_for_the_saving():
    rng = np.random.default_rng(0)
    for _ in range(150):
        shape = tuple(int(v) for v in rng.integers(40, 400, size=3))
        win, steps = inference_layout(shape, (48, 48, 48), 0.25, (8, 8, 8))
        base = context_window(shape, (48, 48, 48), (8, 8, 8))
        assert all(w >= b and (w - b) % 8 == 0 for w, b in zip(win, base))
        assert np.prod(win) <= MAX_VOLUME_GROWTH * np.prod(base)
        assert all(w == b or w <= s for w, b, s in zip(win, base, shape))  # inside the image
        cost = count_windows(shape, win, 0.25, steps) * np.prod(win)
        base_cost = count_windows(shape, base, 0.25) * np.prod(base)
        assert win == base or cost <= (1 - MIN_WINDOW_SAVING) * base_cost
        # every shared margin is at least the context window's
        for size, w, t in zip(shape, win, steps):
            starts = window_starts(size, w, 0.25, t)
            assert all(a + w - b >= 16 for a, b in itertools.pairwise(starts))
            assert starts[-1] + w == max(size, w)


def test_layout_steps_are_checked():
    with pytest.raises(ValueError, match="advance by more than 0"):
        window_starts(100, 10, 0.25, 0.0)
    with pytest.raises(ValueError, match="2 window steps for a 3-axis window"):
        count_windows((20, 20, 20), (8, 8, 8), 0.25, (6, 6))
    with pytest.raises(ValueError, match="advance by less than one voxel"):
        check_window_layout((20, 20, 20), (8, 8, 8), 0.25, steps=(6, 0.5, 6))
    assert check_window_layout((20, 20, 20), (8, 8, 8), 0.25, steps=(6, 12, 6)) == 3 * 2 * 3


def test_sliding_window_follows_the_given_steps():
    model = _conv1(2, 4)
    image = _image((2, 17, 33, 35))
    cfg = InferConfig(overlap=0.25, window_batch=3)
    steps = (3.0, 9.0, 7.0)  # 60 windows where the overlap's steps give 36
    probs, events = _drain(sliding_window(model, image, (8, 16, 12), cfg, steps=steps))
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)
    total = count_windows((17, 33, 35), (8, 16, 12), 0.25, steps)
    assert total == 60
    assert count_windows((17, 33, 35), (8, 16, 12), 0.25) == 36
    assert [e.done for e in events if isinstance(e, Progress)][-1] == total


def test_predict_with_the_grown_window_matches_the_patch_window_closely():
    model = _unet(k=2)
    image = _image((1, 16, 24, 40), seed=3)
    cfg = InferConfig(overlap=0.125)
    win = inference_window(image.shape[1:], (12, 16, 16), cfg.overlap, model.divisor)
    assert win[0] > 12
    grown, _ = _drain(sliding_window(model, image, win, cfg))
    patch, _ = _drain(sliding_window(model, image, (12, 16, 16), cfg))
    # fewer windows, and the same labels almost everywhere on a random network
    assert count_windows(image.shape[1:], win, cfg.overlap) < count_windows(
        image.shape[1:], (12, 16, 16), cfg.overlap
    )
    assert (grown.argmax(0) == patch.argmax(0)).mean() > 0.9


def test_importance_map_is_symmetric_peaked_and_positive():
    w = importance_map((9, 16, 17))
    assert w.shape == (9, 16, 17)
    assert w.max() == pytest.approx(1.0)
    assert w.min() >= MIN_WEIGHT
    for axis in range(3):
        np.testing.assert_allclose(w, np.flip(w, axis), atol=1e-7)
    assert w[4, 8, 8] > w[0, 8, 8] > 0
    assert (importance_map((4, 4), "constant") == 1).all()


def test_automatic_window_batch_on_the_cpu_is_bounded_by_window_size():
    small = auto_window_batch((32, 32, 32), "cpu")
    assert small > 1
    assert auto_window_batch((96, 192, 192), "cpu") == 1
    assert auto_window_batch((8, 8, 8), "cpu") >= small


# ------------------------------------------------------------------------ blending


def test_single_window_equals_full_forward_pass():
    model = _unet(cin=2, k=3)
    image = _image((2, 17, 33, 35))
    probs, events = _drain(sliding_window(model, image, (17, 33, 35), InferConfig()))
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-5)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 1


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.7])
def test_many_windows_on_a_pointwise_network_equal_the_full_forward(overlap):
    model = _conv1(2, 4)
    image = _image((2, 17, 33, 35))
    cfg = InferConfig(overlap=overlap, window_batch=7)
    probs, events = _drain(sliding_window(model, image, (8, 16, 12), cfg))
    assert probs.shape == (4, 17, 33, 35)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)
    total = count_windows((17, 33, 35), (8, 16, 12), overlap)
    assert total > 10
    assert [e.done for e in events if isinstance(e, Progress)][-1] == total


def test_constant_blending_also_reproduces_the_full_forward():
    model = _conv1(1, 2)
    image = _image((1, 20, 21, 22))
    cfg = InferConfig(overlap=0.5, blend="constant", window_batch=2)
    probs, _ = _drain(sliding_window(model, image, (8, 8, 8), cfg))
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)


def test_2d_images_and_multichannel():
    model = _conv1(3, 2, dims=2)
    image = _image((3, 45, 31))
    probs, _ = _drain(sliding_window(model, image, (16, 16), InferConfig(overlap=0.3)))
    assert probs.shape == (2, 45, 31)
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)
    unet_probs, _ = _drain(sliding_window(_unet(cin=3, k=2, dims=2), image, (16, 16)))
    np.testing.assert_allclose(unet_probs.sum(0), 1.0, atol=1e-5)


def test_volume_smaller_than_the_window_is_padded_and_cropped_back():
    model = _conv1(1, 3)
    image = _image((1, 5, 33, 9))
    probs, _ = _drain(sliding_window(model, image, (16, 16, 16), InferConfig()))
    assert probs.shape == (3, 5, 33, 9)
    # a pointwise network does not see the padding
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)
    # mirrored padding: the padded window is the mirror image around the volume
    image = _image((1, 10, 20, 12))
    seen = []

    def record(x):
        seen.append(x.clone())
        return model(x)

    probs, _ = _drain(sliding_window(record, image, (16, 16, 16), InferConfig()))
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)
    x = seen[0][0, 0].numpy()  # (16, 16, 16) window, the image centred in Z and X
    np.testing.assert_array_equal(x[3:13, :16, 2:14], image[0, :, :16])
    np.testing.assert_array_equal(x[2, :16, 2:14], image[0, 1, :16])  # reflected in Z
    np.testing.assert_array_equal(x[3:13, :16, 1], image[0, :, :16, 1])  # reflected in X
    # a network with context sees it; the output is still a distribution of the right shape
    image = _image((1, 3, 7, 40))  # padding wider than the axis itself: replicate padding
    probs, _ = _drain(sliding_window(_unet(k=3), image, (16, 16, 16)))
    assert probs.shape == (3, 3, 7, 40)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_window_batch_does_not_change_the_result():
    model = _unet(cin=1, k=3)
    image = _image((1, 13, 21, 18))
    results = [
        _drain(sliding_window(model, image, (8, 12, 12), InferConfig(window_batch=b)))[0]
        for b in (1, 4)
    ]
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    assert not np.allclose(results[0], results[0][:, ::-1])  # not a trivial output


def test_flip_tta_on_a_flip_equivariant_network_changes_nothing():
    model = _symmetric_conv(1, 3)
    image = _image((1, 19, 22, 21))
    plain, _ = _drain(sliding_window(model, image, (12, 12, 12), InferConfig(overlap=0.5)))
    tta, _ = _drain(sliding_window(model, image, (12, 12, 12), InferConfig(overlap=0.5, tta=True)))
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    # ... while on a general network TTA does change the output
    unet = _unet(k=3)
    image = image[:, :12, :12, :12]
    a, _ = _drain(sliding_window(unet, image, (12, 12, 12), InferConfig()))
    b, _ = _drain(sliding_window(unet, image, (12, 12, 12), InferConfig(tta=True)))
    assert np.abs(a - b).max() > 1e-4


def test_bad_input_is_rejected_with_a_clear_message():
    model = _conv1(1, 2)
    with pytest.raises(ValueError, match="channels first"):
        list(sliding_window(model, np.zeros((4, 4), np.float32), (4, 4)))
    with pytest.raises(ValueError, match="one size per axis"):
        list(sliding_window(model, np.zeros((1, 4, 4, 4), np.float32), (4, 4)))
    bad = np.zeros((1, 6, 6, 6), np.float32)
    bad[0, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        list(sliding_window(model, bad, (4, 4, 4)))


# ------------------------------------------------------------------------ control


def test_cancel_between_batches_raises_cancelled():
    model = _conv1(1, 2)
    image = _image((1, 30, 30, 30))
    token = CancelToken()
    gen = sliding_window(model, image, (8, 8, 8), InferConfig(window_batch=1), cancel=token)
    seen = []

    def consume():
        for ev in gen:
            if isinstance(ev, Progress):
                seen.append(ev.done)
                if ev.done == 2:
                    token.cancel()

    with pytest.raises(Cancelled):
        consume()
    assert seen[-1] == 2


class _OOMOnce(torch.nn.Module):
    """Raises an out-of-memory error the first time it sees a batch of more than one."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.raised = 0

    def forward(self, x):
        if x.shape[0] > 1 and not self.raised:
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


class _OOMLargeWindow(torch.nn.Module):
    """Runs out of memory for any window longer than ``limit`` voxels along an axis."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.raised = 0

    def forward(self, x):
        if max(x.shape[2:]) > self.limit:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_window_batch_and_gives_the_same_result():
    inner = _unet(k=2)
    image = _image((1, 13, 21, 18))
    ref, _ = _drain(sliding_window(inner, image, (8, 12, 12), InferConfig(window_batch=1)))
    model = _OOMOnce(inner)
    probs, events = _drain(sliding_window(model, image, (8, 12, 12), InferConfig(window_batch=4)))
    assert model.raised == 1
    warnings = [e for e in events if isinstance(e, Info) and e.level == "warning"]
    assert any("retrying with 2" in e.message for e in warnings)
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_out_of_memory_with_one_window_halves_the_window():
    inner = _conv1(1, 3)
    image = _image((1, 21, 24, 27))
    model = _OOMLargeWindow(inner, limit=8)
    probs, events = _drain(sliding_window(model, image, (16, 16, 16), InferConfig(window_batch=2)))
    assert model.raised >= 2
    assert any(isinstance(e, Info) and "(8, 8, 8)" in e.message for e in events)
    np.testing.assert_allclose(probs, _full_softmax(inner, image), atol=1e-6)


def test_out_of_memory_at_the_smallest_window_is_a_clear_error():
    model = _OOMLargeWindow(_conv1(1, 2), limit=0)
    with pytest.raises(RuntimeError, match="device 'cpu'"):
        list(sliding_window(model, _image((1, 4, 4, 4)), (2, 2, 2)))


# ------------------------------------------------------------------------ memory


def test_slabs_tile_the_first_axis_and_never_hold_the_whole_volume():
    k, shape = 4, (96, 48, 48)
    model = _conv1(1, k)
    image = _image((1, *shape))
    full = k * int(np.prod(shape)) * 4
    labels = np.zeros(shape, np.uint8)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        covered = 0
        for item in sliding_window_slabs(
            model, image, (8, 16, 16), InferConfig(overlap=0.25, window_batch=4)
        ):
            if isinstance(item, Slab):
                assert item.start == covered
                assert item.probabilities.shape == (k, item.stop - item.start, 48, 48)
                labels[item.start : item.stop] = item.probabilities.argmax(0)
                covered = item.stop
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert covered == shape[0]
    # the blending buffers and slabs are numpy-backed, so the peak counts them
    assert peak > 0.05 * full
    assert peak < 0.4 * full, f"peak {peak / 2**20:.1f} MiB vs full {full / 2**20:.1f} MiB"
    np.testing.assert_array_equal(labels, _full_softmax(model, image).argmax(0))


def test_sliding_window_writes_the_slabs_into_its_result_without_copies():
    # one slab per row of windows; each is written into the result in place, so the
    # peak is the result plus the blending buffers, with no slab-sized array per slab
    k, shape = 4, (96, 48, 48)
    model = _conv1(1, k)
    image = _image((1, *shape))
    full = k * int(np.prod(shape)) * 4
    cfg = InferConfig(overlap=0.25, window_batch=4)
    slabs = [
        s for s in sliding_window_slabs(model, image, (8, 16, 16), cfg) if isinstance(s, Slab)
    ]
    biggest = max(s.probabilities.nbytes for s in slabs)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        probs, _ = _drain(sliding_window(model, image, (8, 16, 16), cfg))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(probs, _full_softmax(model, image), atol=1e-6)
    buffers = peak - full  # what besides the result was held at the peak
    assert buffers > 0
    assert buffers < 2 * biggest, f"{buffers / 2**20:.2f} MiB besides the result"


# ------------------------------------------------------------------------ predict


class _StandInCheckpoint:
    """The parts of a Checkpoint that predict() uses."""

    def __init__(self, model_cfg: ModelConfig, task: str, patch, seed=0):
        from napari_unetseg.core.data import Normalizer

        self.config = Config()
        self.config.model = model_cfg
        self.config.data.patch_size = patch
        self.config.train.task = task
        self.config.infer.device = "cpu"
        self.config.infer.precision = "float32"
        self.task = task
        cin = model_cfg.in_channels
        self.normalizer = Normalizer(mode="zscore", offsets=[10.0] * cin, scales=[2.0] * cin)
        torch.manual_seed(seed)
        self._state = UNet(model_cfg).state_dict()

    @property
    def num_outputs(self):
        return self.config.model.num_classes

    def build_model(self, device="cpu"):
        model = UNet(self.config.model)
        model.load_state_dict(self._state)
        return model.to(device).eval()


def _checkpoint(task="semantic", cin=1, k=3, dims=3, patch=(16, 16, 16)):
    cfg = ModelConfig(spatial_dims=dims, in_channels=cin, num_classes=k, base_width=4, depth=3)
    try:
        from napari_unetseg.core.checkpoint import Checkpoint
        from napari_unetseg.core.data import Normalizer
    except ImportError:
        return _StandInCheckpoint(cfg, task, patch)
    stand_in = _StandInCheckpoint(cfg, task, patch)
    config = stand_in.config
    config.class_names = ["a", "b"][: k - 1] if task == "semantic" else ["object"]
    return Checkpoint(
        config=config,
        state_dict=stand_in._state,
        normalizer=Normalizer(mode="zscore", offsets=[10.0] * cin, scales=[2.0] * cin),
        spacing=None,
        class_names=config.class_names,
        task=task,
        version="test",
        iterations=0,
        optimizer_state=None,
        history=[],
    )


@pytest.fixture
def postprocess():
    return pytest.importorskip("napari_unetseg.core.postprocess")


@pytest.mark.parametrize("grow", [True, False])
def test_predict_follows_the_grow_windows_setting(postprocess, grow):
    # 120 slices: three 64-slice windows (192 computed) or two of 68 sharing 16 (136)
    ckpt = _checkpoint(task="semantic", k=3, patch=(48, 16, 16))
    ckpt.config.infer.grow_windows = grow
    raw = 10.0 + 2.0 * _image((1, 120, 24, 24))
    events = list(predict(ckpt, raw, ckpt.config.infer, keep_probabilities=False))
    message = next(e.message for e in events if isinstance(e, Info) and "window(s)" in e.message)
    if grow:
        assert message.startswith("2 window(s) of 68x24x24"), message
        assert "(steps of 52x18x18 voxels)" in message
    else:
        assert message.startswith("3 window(s) of 64x24x24"), message
        assert "steps of" not in message
    assert events[-1].result.labels.shape == (120, 24, 24)
    assert inference_layout((120, 24, 24), (48, 16, 16), 0.25, (4, 4, 4), grow=False) == (
        (64, 24, 24),
        (48.0, 18.0, 18.0),
    )


def test_predict_semantic_end_to_end(postprocess):
    ckpt = _checkpoint(task="semantic", cin=2, k=3, patch=(8, 16, 16))
    raw = 10.0 + 2.0 * _image((2, 11, 21, 23))
    events = list(predict(ckpt, raw, keep_probabilities=True))
    infos = [e for e in events if isinstance(e, Info)]
    assert any("window" in e.message for e in infos)
    assert any("cpu" in e.message.lower() for e in infos)
    assert any(isinstance(e, Progress) for e in events)
    pred = events[-1].result
    assert isinstance(pred, Prediction)
    assert pred.task == "semantic"
    assert pred.labels.shape == (11, 21, 23)
    assert pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (3, 11, 21, 23)
    assert pred.probabilities.dtype == np.float32
    assert pred.boundaries is None
    assert pred.instances is None
    # same as running the sliding window on the normalised image by hand, with the
    # window predict picks for this shape (the patch, grown along the short axes)
    model = ckpt.build_model("cpu")
    win = inference_window((11, 21, 23), (8, 16, 16), ckpt.config.infer.overlap, model.divisor)
    assert any(f"{win[0]}x{win[1]}x{win[2]}" in e.message for e in infos), win
    ref, _ = _drain(sliding_window(model, (raw - 10.0) / 2.0, win, ckpt.config.infer))
    np.testing.assert_allclose(pred.probabilities, ref, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, ref.argmax(0))
    labels_only = predict_volume(ckpt, raw, keep_probabilities=False)
    assert labels_only.probabilities is None
    np.testing.assert_array_equal(labels_only.labels, pred.labels)
    half = predict_volume(ckpt, raw, probabilities_dtype="float16")
    assert half.probabilities.dtype == np.float16


def test_predict_instances_2d(postprocess):
    ckpt = _checkpoint(task="instances", cin=1, k=3, dims=2, patch=(16, 16))
    raw = 10.0 + 2.0 * _image((1, 40, 37))
    pred = predict_volume(ckpt, raw, keep_probabilities=False)
    assert pred.task == "instances"
    assert pred.probabilities is None
    assert pred.boundaries.shape == (40, 37)
    assert pred.boundaries.dtype == np.float32
    assert pred.boundaries.min() >= 0.0
    assert pred.boundaries.max() <= 1.0
    assert pred.instances.shape == (40, 37)
    assert pred.instances.dtype == np.int32
    assert set(np.unique(pred.labels)) <= {0, 1}
    # every object voxel lies in the foreground mask
    assert (pred.labels[pred.instances > 0] == 1).all()


def test_predict_applies_the_stored_min_size_and_interior_threshold(postprocess):
    # semantic: every piece of a class smaller than min_size becomes background
    ckpt = _checkpoint(task="semantic", cin=1, k=3, patch=(8, 16, 16))
    raw = 10.0 + 2.0 * _image((1, 11, 21, 23))
    plain = predict_volume(ckpt, raw)
    min_size = 30
    ckpt.config.infer.min_size = min_size
    cleaned = predict_volume(ckpt, raw)
    expected = postprocess.semantic_labels(plain.probabilities, min_size=min_size)
    np.testing.assert_array_equal(cleaned.labels, expected)
    assert (cleaned.labels != plain.labels).any(), "a random network leaves small pieces"
    for k in (1, 2):
        comp, n = ndi.label(cleaned.labels == k)
        assert n == 0 or np.bincount(comp.ravel())[1:].min() >= min_size

    # instances: the threshold and size reach the watershed
    ckpt = _checkpoint(task="instances", cin=1, k=3, dims=2, patch=(16, 16))
    raw = 10.0 + 2.0 * _image((1, 40, 37))
    probs = predict_volume(ckpt, raw).probabilities
    ckpt.config.infer.min_size = 4
    ckpt.config.infer.interior_threshold = -0.2
    pred = predict_volume(ckpt, raw)
    expected = postprocess.instance_labels(probs, interior_threshold=-0.2, min_size=4)
    np.testing.assert_array_equal(pred.instances, expected)


def test_predict_rejects_wrong_channels_and_dimensions():
    ckpt = _checkpoint(task="semantic", cin=2, k=2)
    with pytest.raises(ValueError, match="trained on 2 channel"):
        list(predict(ckpt, np.zeros((1, 8, 8, 8), np.float32)))
    with pytest.raises(ValueError, match="3D"):
        list(predict(ckpt, np.zeros((2, 8, 8), np.float32)))


def test_predict_rejects_nan_with_a_clear_message():
    ckpt = _checkpoint(task="semantic", cin=1, k=2, patch=(8, 8, 8))
    raw = _image((1, 10, 9, 9))
    raw[0, 9, 8, 8] = np.nan  # in the last window only
    with pytest.raises(ValueError, match=r"NaN or infinite values.*before predicting"):
        predict_volume(ckpt, raw)


def test_predict_labels_only_never_holds_full_probabilities(postprocess):
    k, shape = 4, (512, 32, 32)
    ckpt = _checkpoint(task="semantic", cin=1, k=k, patch=(16, 32, 32))
    ckpt.config.infer.window_batch = 2
    raw = 10.0 + 2.0 * _image((1, *shape))
    predict_volume(ckpt, raw[:, :20], keep_probabilities=False)  # first-use imports
    full = k * int(np.prod(shape)) * 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        pred = predict_volume(ckpt, raw, keep_probabilities=False)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert pred.probabilities is None
    assert pred.labels.shape == shape
    # labels (1/16 of full) + blending buffers and one slab, each about 28/512 of full
    assert peak < 0.4 * full, f"peak {peak / 2**20:.2f} MiB vs full {full / 2**20:.2f} MiB"


def test_huge_image_gives_finite_probabilities_equal_to_torch_instance_norm():
    """A pass whose logits are not finite (the CPU's fast instance norm overflows on an
    image of 1e30) is retried with torch's instance norm: finite, and the same
    probabilities as a network built with torch's InstanceNorm3d."""
    torch.manual_seed(0)
    cfg = ModelConfig(base_width=4, depth=3, num_classes=2)
    net = UNet(cfg).eval().use_channels_last()
    reference = UNet(cfg).eval()
    for module in list(reference.modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__ == "InstanceNorm":
                plain = torch.nn.InstanceNorm3d(child.num_channels, eps=child.eps, affine=True)
                setattr(module, child_name, plain)
    reference.load_state_dict(net.state_dict())
    image = (np.random.default_rng(0).random((1, 12, 16, 16)) * 1e30).astype(np.float32)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    one_per_pass = InferConfig(window_batch=1)  # 2 windows: 2 passes
    probs, _ = _drain(sliding_window(net, image, (8, 16, 16), one_per_pass))
    expected, _ = _drain(sliding_window(reference, image, (8, 16, 16), one_per_pass))
    probs, expected = np.asarray(probs), np.asarray(expected)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    # the first pass is computed twice, the second one directly with torch's norm
    assert len(calls) == 3
