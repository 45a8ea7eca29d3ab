"""Slice suggestions: annotated slices skipped, picks spread out, uncertain slices first."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unetseg.core.suggest import (
    METHODS,
    Suggestion,
    suggest_for,
    suggest_slices,
    uncertainty_map,
)

SHAPE = (17, 33, 35)


def _certain(shape=SHAPE, k=3) -> np.ndarray:
    """(K, *shape) probabilities: background with certainty everywhere."""
    p = np.zeros((k, *shape), dtype=np.float32)
    p[0] = 1.0
    return p


def _make_uncertain(p: np.ndarray, axis: int, index: int, level: float = 0.5) -> None:
    """Make slice ``index`` along ``axis`` foreground-likely and unsure (in place)."""
    sl: list = [slice(None)] * (p.ndim - 1)
    sl[axis] = index
    region = (slice(None), *sl)
    p[region] = 0.0
    p[(0, *sl)] = 1.0 - level
    p[(1, *sl)] = level / 2
    p[(2, *sl)] = level / 2


def test_uncertainty_map_range_and_certain_voxels():
    rng = np.random.default_rng(0)
    p = rng.random((3, *SHAPE)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    p[:, 0] = 0.0
    p[1, 0] = 1.0  # one class certain in slice 0
    p[:, 1] = 1.0 / 3  # all equally likely in slice 1
    u = uncertainty_map(p)
    assert u.shape == SHAPE
    assert u.dtype == np.float32
    assert u.min() >= 0.0
    assert u.max() <= 1.0
    assert np.all(u[0] == 0.0)
    np.testing.assert_allclose(u[1], 1.0, atol=1e-5)
    assert 0.0 < u[2:].mean() < 1.0


def test_uncertainty_map_refuses_labels():
    with pytest.raises(ValueError, match="keep_probabilities"):
        uncertainty_map(np.zeros(SHAPE, dtype=np.uint8))


@pytest.mark.parametrize("method", ["entropy", "margin"])
def test_prefers_the_uncertain_slice(method):
    p = _certain()
    _make_uncertain(p, 0, 5, level=0.9)  # very unsure
    _make_uncertain(p, 0, 12, level=0.2)  # fairly sure it is background
    out = suggest_slices(p, np.zeros(SHAPE, np.uint8), top=2, axes="z", method=method)
    assert [s.index for s in out] == [5, 12]
    assert out[0].score > out[1].score > 0
    assert all(isinstance(s, Suggestion) and s.axis == 0 for s in out)
    assert "likely-foreground" in out[0].reason


def test_foreground_region_not_diluted_by_background():
    """A slice with a small very unsure object beats one with a faint haze everywhere."""
    p = _certain()
    p[:, 4] = 0.0
    p[0, 4], p[1, 4], p[2, 4] = 0.97, 0.015, 0.015  # faint haze over the whole slice
    p[:, 10, 5:25, 5:25] = 1.0 / 3  # one unsure object
    p[0, 10, 5:25, 5:25] = 1.0 / 3
    out = suggest_slices(p, np.zeros(SHAPE, np.uint8), top=1, axes="z", method="entropy")
    assert out[0].index == 10


def test_annotated_slices_are_never_suggested():
    p = _certain()
    for z in range(SHAPE[0]):
        _make_uncertain(p, 0, z, level=0.3 + 0.02 * z)  # the higher z the more unsure
    ann = np.zeros(SHAPE, np.uint8)
    ann[16] = 1  # the most uncertain slice is annotated
    ann[15, 3:9, 3:9] = 2  # a painted patch in slice 15
    ann[:, 7, :] = 1  # a painted y-slice crosses every z-slice as a line: not annotated
    out = suggest_slices(p, ann, top=5, axes="z", min_distance=1, method="entropy")
    picked = [s.index for s in out]
    assert 16 not in picked
    assert 15 not in picked
    assert picked[0] == 14
    out = suggest_slices(p, ann, top=40, axes="y", min_distance=1, method="entropy")
    assert 7 not in [s.index for s in out]
    assert len(out) == SHAPE[1] - 1


def test_top_picks_are_spread_out():
    p = _certain()
    for z in range(3, 9):  # a run of neighbouring uncertain slices
        _make_uncertain(p, 0, z, level=0.8)
    _make_uncertain(p, 0, 14, level=0.4)
    ann = np.zeros(SHAPE, np.uint8)
    out = suggest_slices(p, ann, top=3, axes="z", min_distance=3, method="entropy")
    idx = [s.index for s in out]
    assert len(set(idx)) == 3
    gaps = np.diff(sorted(idx))
    assert gaps.min() >= 3
    assert 14 in idx  # diversity brings in the less uncertain but distant slice
    # without the minimum distance the three top picks are neighbours
    near = [
        s.index for s in suggest_slices(p, ann, top=3, axes="z", min_distance=1, method="entropy")
    ]
    assert np.diff(sorted(near)).max() == 1


def test_distance_from_annotated_slices():
    p = _certain()
    for z in range(SHAPE[0]):
        _make_uncertain(p, 0, z, level=0.6)
    p[:, 9] = 0.0
    p[0, 9], p[1, 9], p[2, 9] = 0.2, 0.4, 0.4  # the most uncertain, next to slice 8
    ann = np.zeros(SHAPE, np.uint8)
    ann[8] = 1
    out = suggest_slices(p, ann, top=1, axes="z", min_distance=4, method="entropy")
    assert abs(out[0].index - 8) >= 4


def test_diversity_fills_the_largest_gaps():
    ann = np.zeros(SHAPE, np.uint8)
    out = suggest_slices(None, ann, top=3, axes="z", method="diversity")
    first = out[0].index
    assert abs(first - SHAPE[0] // 2) <= 1  # an empty axis: its middle first
    assert sorted(s.index for s in out)[0] < first < sorted(s.index for s in out)[-1]


def test_all_axes_and_json_ready():
    rng = np.random.default_rng(1)
    p = rng.random((2, *SHAPE)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    out = suggest_slices(p, np.zeros(SHAPE, np.uint8), top=9, method="entropy")
    assert len(out) == 9
    assert {s.axis for s in out} <= {0, 1, 2}
    assert [s.score for s in out] == sorted((s.score for s in out), reverse=True)
    d = out[0].to_dict()
    assert set(d) == {"axis", "index", "score", "reason"}
    assert 0 <= d["index"] < SHAPE[d["axis"]]


def test_tta_disagreement():
    p = _certain()
    for z in (4, 12):
        _make_uncertain(p, 0, z, level=0.6)
    flipped = p.copy()
    flipped[:, 12] = p[:, 12][[0, 2, 1]]  # the flip disagrees on slice 12 only
    flipped[1, 12], flipped[2, 12] = 0.55, 0.05
    out = suggest_slices(
        p, np.zeros(SHAPE, np.uint8), top=1, axes="z", method="tta", tta_probabilities=[flipped]
    )
    assert out[0].index == 12
    with pytest.raises(ValueError, match="tta_probabilities"):
        suggest_slices(p, np.zeros(SHAPE, np.uint8), method="tta")


def test_image_2d():
    p = _certain((33, 35))
    _make_uncertain(p, 1, 20)
    out = suggest_slices(p, np.zeros((33, 35), np.uint8), top=1, axes="zyx", method="entropy")
    assert (out[0].axis, out[0].index) == (1, 20)


def test_errors():
    p = _certain()
    with pytest.raises(ValueError, match="shape"):
        suggest_slices(p, np.zeros((17, 33, 34), np.uint8), method="entropy")
    with pytest.raises(ValueError, match="method"):
        suggest_slices(p, np.zeros(SHAPE, np.uint8), method="magic")
    with pytest.raises(ValueError, match="axes"):
        suggest_slices(p, np.zeros(SHAPE, np.uint8), axes="q", method="entropy")
    assert set(METHODS) >= {"entropy", "margin", "tta", "diversity"}


@pytest.fixture(scope="module")
def tiny_model():
    from unetseg_testing import tiny_slice_model

    return tiny_slice_model(SHAPE)[:3]


@pytest.mark.parametrize("method", ["entropy", "tta"])
def test_suggest_for_predicts_then_ranks(tiny_model, method):
    ckpt, image, ann = tiny_model
    out = suggest_for(ckpt, image, ann, top=4, method=method)
    assert 1 <= len(out) <= 4
    assert all(not (s.axis == 0 and s.index == 8) for s in out)


def test_suggest_for_refuses_another_shape(tiny_model):
    ckpt, image, ann = tiny_model
    with pytest.raises(ValueError, match="annotation has shape"):
        suggest_for(ckpt, image, ann[:-1])


def test_spread_prefers_uncertain_slices_in_large_gaps():
    p = _certain()
    _make_uncertain(p, 0, 0, level=0.6)  # the border slice: the most unsure
    _make_uncertain(p, 0, 9, level=0.4)  # between the annotated slices 4 and 14
    ann = np.zeros(SHAPE, np.uint8)
    ann[4] = 1
    ann[14] = 1
    plain = suggest_slices(p, ann, top=1, axes="z", min_distance=1, method="entropy")
    assert plain[0].index == 0
    spread = suggest_slices(p, ann, top=1, axes="z", min_distance=1, spread=True, method="entropy")
    assert spread[0].index == 9


def test_neighbouring_painted_slices_do_not_hide_other_axes():
    from napari_unetseg.core.suggest import painted_slices

    ann = np.zeros(SHAPE, np.uint8)
    ann[:, 10:14, :] = 1  # four neighbouring y-slices: a 4-wide band in every z-slice
    ann[5] = 1  # one painted z-slice
    found = painted_slices(ann)
    assert found["z"].tolist() == [5]
    assert found["y"].tolist() == [10, 13]  # the outer two of the block
    assert found["x"].tolist() == []
    p = _certain()
    for z in range(SHAPE[0]):
        _make_uncertain(p, 0, z, level=0.5)
    out = suggest_slices(p, ann, top=3, axes="z", min_distance=1, method="entropy")
    assert len(out) == 3
    assert 5 not in [s.index for s in out]
    inner = suggest_slices(p, ann, top=40, axes="y", min_distance=1, method="entropy")
    assert not {11, 12} & {s.index for s in inner}  # annotated everywhere: nothing to add
