import numpy as np
import pytest

from napari_unetseg.core.annotations import IGNORE_INDEX, semantic_target, sparsify
from napari_unetseg.core.config import DataConfig
from napari_unetseg.core.data import Normalizer, PatchSampler, fit_normalizer, split_validation


def _cfg(**kw):
    return DataConfig(**kw)


# ----------------------------------------------------------------- normalisation


def test_normalizer_round_trip_and_apply():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(5, 2, (6, 7, 8)), rng.normal(-3, 0.5, (6, 7, 8))])
    norm = fit_normalizer(image.astype(np.float32), _cfg(normalization="zscore"))
    again = Normalizer.from_dict(norm.to_dict())
    assert again == norm
    out = again.apply(image)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    np.testing.assert_allclose(out.reshape(2, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(out.reshape(2, -1).std(1), 1, atol=1e-4)


def test_nan_is_rejected_with_a_clear_message():
    image = np.zeros((1, 4, 5, 6), np.float32)
    image[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_normalizer(image, _cfg())
    norm = Normalizer("none", [0.0], [1.0])
    with pytest.raises(ValueError, match="nan_to_num"):
        norm.apply(image)


def test_auto_picks_ct_for_hounsfield_units():
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(1, 5, 9, 9)).astype(np.int16)
    norm = fit_normalizer(hu, _cfg())
    assert norm.mode == "ct"
    out = norm.apply(hu)
    assert out.min() >= -1.0
    assert out.max() <= 1.0
    # -1000 HU (air) -> -1, +1000 HU -> +1 with the default window
    np.testing.assert_allclose(
        norm.apply(np.array([[[-1000.0, 0.0, 1000.0]]])).ravel(), [-1, 0, 1], atol=1e-6
    )


def test_auto_picks_percentile_for_microscopy_and_zscore_for_floats():
    rng = np.random.default_rng(0)
    micro = rng.integers(0, 4000, size=(2, 4, 16, 16)).astype(np.uint16)
    norm = fit_normalizer(micro, _cfg())
    assert norm.mode == "percentile"
    lo, hi = np.percentile(micro[1].astype(float), [1.0, 99.8])
    assert norm.clip_low[1] == pytest.approx(lo)
    assert norm.clip_high[1] == pytest.approx(hi)
    out = norm.apply(micro)
    assert out.min() == pytest.approx(0.0)
    assert out.max() == pytest.approx(1.0)
    assert fit_normalizer(rng.normal(size=(1, 4, 5, 6)), _cfg()).mode == "zscore"
    # resampled CT stored as float is still CT; signed non-HU data is not
    float_ct = rng.uniform(-1024, 1500, size=(1, 4, 5, 6))
    assert fit_normalizer(float_ct, _cfg()).mode == "ct"
    assert fit_normalizer(float_ct - 5000, _cfg()).mode == "zscore"
    assert fit_normalizer(rng.integers(-5, 5, size=(1, 3, 4)), _cfg()).mode == "zscore"


def test_zscore_ignores_zero_background_when_mostly_empty():
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, :3] = np.random.default_rng(0).normal(100, 10, (3, 10, 10))
    norm = fit_normalizer(image, _cfg(normalization="zscore"))
    tissue = image[0, :3]
    assert norm.offsets[0] == pytest.approx(tissue.mean(), rel=1e-5)
    assert norm.scales[0] == pytest.approx(tissue.std(), rel=1e-4)


def test_normalizer_rejects_wrong_channel_count():
    norm = Normalizer("zscore", [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="channel"):
        norm.apply(np.zeros((1, 3, 3, 3)))


# ----------------------------------------------------------------- validation split


def test_split_validation_holds_out_whole_slices():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(20, 30, 30))
    target = semantic_target(sparsify(truth, 0.2, seed=1))
    train, val = split_validation(target, 0.2, seed=0)
    t_ann, v_ann = train != IGNORE_INDEX, val != IGNORE_INDEX
    assert v_ann.any()
    assert not (t_ann & v_ann).any()
    np.testing.assert_array_equal(t_ann | v_ann, target != IGNORE_INDEX)
    np.testing.assert_array_equal(val[v_ann], target[v_ann])
    np.testing.assert_array_equal(train[t_ann], target[t_ann])
    # every validation voxel belongs to a held-out slice that is entirely validation
    held = np.zeros_like(v_ann)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        whole = (v_ann | (target == IGNORE_INDEX)).all(axis=other) & v_ann.any(axis=other)
        sl = [slice(None)] * 3
        sl[axis] = np.flatnonzero(whole)
        held[tuple(sl)] = True
    assert held[v_ann].all()
    assert 0.1 < v_ann.sum() / (target != IGNORE_INDEX).sum() < 0.5


def test_split_validation_too_few_slices_or_zero_fraction():
    target = np.full((5, 6, 7), IGNORE_INDEX, np.int64)
    target[2] = 0
    target[2, 1:3, 1:3] = 1
    train, val = split_validation(target, 0.3)
    assert (val == IGNORE_INDEX).all()
    np.testing.assert_array_equal(train, target)
    full = semantic_target(sparsify(np.ones((8, 8, 8), int), 0.5))
    _, val0 = split_validation(full, 0.0)
    assert (val0 == IGNORE_INDEX).all()


# ----------------------------------------------------------------- patch sampler


def _sampler_data(shape, channels=1, seed=0, fraction=0.2):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int64)
    truth[rng.random(shape) < 0.03] = 2  # rare class
    truth[rng.random(shape) < 0.2] = 1
    axes = "zyx" if len(shape) == 3 else "yx"
    target = semantic_target(sparsify(truth, fraction, axes=axes, seed=seed))
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    return image, target


@pytest.mark.parametrize(
    ("shape", "patch", "channels"),
    [
        ((17, 33, 35), (8, 16, 16), 1),
        ((17, 33, 35), (9, 12, 10), 2),
        ((40, 37), (16, 16), 1),
        ((40, 37), (16, 16), 3),
        ((5, 9, 11), (8, 16, 16), 1),  # smaller than the patch
        ((7, 9), (16, 16), 2),
    ],
)
def test_patch_sampler_shapes_dtypes_and_annotated(shape, patch, channels):
    image, target = _sampler_data(shape, channels)
    sampler = PatchSampler(image, target, patch, seed=1)
    for _ in range(5):
        x, y = sampler.sample(3)
        assert x.shape == (3, channels, *patch)
        assert y.shape == (3, *patch)
        assert x.dtype == np.float32
        assert y.dtype == np.int64
        assert x.flags.c_contiguous
        assert y.flags.c_contiguous
        assert all((y[b] != IGNORE_INDEX).any() for b in range(3))
        assert set(np.unique(y)) <= {IGNORE_INDEX, 0, 1, 2}


def test_small_volume_is_padded_with_zero_and_ignore():
    image = np.ones((1, 3, 4, 5), np.float32)
    target = np.zeros((3, 4, 5), np.int64)
    sampler = PatchSampler(image, target, (6, 8, 8), augment=False)
    x, y = sampler.sample(1)
    assert (x == 1).sum() == 3 * 4 * 5
    assert (y == 0).sum() == 3 * 4 * 5
    assert (x[0, 0][y[0] == IGNORE_INDEX] == 0).all()


def test_foreground_share_and_class_balance():
    image, target = _sampler_data((20, 40, 40), fraction=0.3)
    sampler = PatchSampler(
        image, target, (4, 8, 8), foreground_fraction=1.0, augment=False, seed=0
    )
    with_rare = sum((sampler.sample(1)[1] == 2).any() for _ in range(200))
    none_fg = PatchSampler(image, target, (4, 8, 8), foreground_fraction=0.0, augment=False)
    with_rare_random = sum((none_fg.sample(1)[1] == 2).any() for _ in range(200))
    # the rare class is drawn in half of the forced patches (2 classes, balanced)
    assert with_rare >= 0.5 * 200
    assert with_rare > with_rare_random


def test_patch_sampler_is_deterministic_with_seed():
    image, target = _sampler_data((17, 33, 35), 2)
    a = PatchSampler(image, target, (8, 16, 16), seed=3)
    b = PatchSampler(image, target, (8, 16, 16), seed=3)
    c = PatchSampler(image, target, (8, 16, 16), seed=4)
    xa, ya = a.sample(4)
    xb, yb = b.sample(4)
    xc, _ = c.sample(4)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)


@pytest.mark.parametrize(("shape", "patch"), [((12, 16, 16), (8, 12, 12)), ((20, 18), (12, 12))])
def test_augmentation_keeps_image_and_target_aligned(shape, patch):
    # image encodes the target, so any geometric transform must keep them together
    _, target = _sampler_data(shape)
    image = (target.astype(np.float32) * 10)[None]
    sampler = PatchSampler(image, target, patch, seed=0)
    sampler._intensity = lambda x: None  # geometry only
    seen = set()
    for _ in range(20):
        x, y = sampler.sample(2)
        np.testing.assert_array_equal(x[:, 0], y.astype(np.float32) * 10)
        seen.add(y[0].tobytes())
    assert len(seen) > 10


def test_patch_sampler_rejects_empty_annotation_and_bad_patch():
    image = np.zeros((1, 4, 5, 6), np.float32)
    with pytest.raises(ValueError, match="no annotated voxel"):
        PatchSampler(image, np.full((4, 5, 6), IGNORE_INDEX, np.int64), (4, 4, 4))
    with pytest.raises(ValueError, match="patch_size"):
        PatchSampler(image, np.zeros((4, 5, 6), np.int64), (4, 4))
    with pytest.raises(ValueError, match="differs"):
        PatchSampler(image, np.zeros((4, 5, 7), np.int64), (4, 4, 4))


def test_large_candidate_pools_are_thinned_but_keep_rare_classes(monkeypatch):
    import napari_unetseg.core.data as data

    monkeypatch.setattr(data, "_MAX_CANDIDATES", 50)
    image, target = _sampler_data((12, 30, 30), fraction=0.3)
    sampler = PatchSampler(image, target, (4, 8, 8), foreground_fraction=1.0, augment=False)
    assert sampler.classes == [1, 2]
    assert all(0 < pool.size <= 50 for pool in (sampler._annotated, *sampler._by_class))
    assert all((target.ravel()[pool] == k).all() for k, pool in zip([1, 2], sampler._by_class))
    assert any((sampler.sample(1)[1] == 2).any() for _ in range(20))


def test_split_validation_keeps_every_class_in_training():
    target = np.full((12, 12, 12), IGNORE_INDEX, np.int64)
    for z in (1, 4, 7, 10):
        target[z] = 0
    target[4, 5:8, 5:8] = 1  # the only slice with class 1
    for seed in range(10):
        train, val = split_validation(target, 0.5, seed=seed)
        assert (train == 1).sum() == 9
        assert (val != IGNORE_INDEX).any()
        assert (train == 0).any()


def test_flips_and_rotations_cover_the_dihedral_group_in_2d():
    target = np.arange(16 * 16, dtype=np.int64).reshape(16, 16) % 7
    image = target.astype(np.float32)[None]
    sampler = PatchSampler(image, target, (16, 16), seed=0)  # one possible position
    sampler._intensity = lambda x: None
    seen = {sampler.sample(1)[1][0].tobytes() for _ in range(200)}
    dihedral = set()
    for k in range(4):
        r = np.rot90(target, k)
        dihedral |= {r.tobytes(), np.flip(r, 0).tobytes()}
    assert seen == dihedral
    plain = PatchSampler(image, target, (16, 16), augment=False)
    assert plain.sample(1)[1][0].tobytes() == target.tobytes()
