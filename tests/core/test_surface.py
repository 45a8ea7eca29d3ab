"""HD95 and region masks: hand-computable cases, empty-mask conventions, MONAI agreement."""

import numpy as np
import pytest

from napari_unetseg.core.surface import hausdorff95, region_masks, surface_distances


def test_two_points_distance_uses_spacing_in_array_order():
    pred = np.zeros((9, 10, 11), bool)
    truth = np.zeros_like(pred)
    pred[2, 3, 4] = True
    truth[2, 3, 7] = True  # 3 voxels apart along x
    assert hausdorff95(pred, truth, (2.0, 1.0, 0.5)) == pytest.approx(1.5)
    pred2 = np.zeros_like(pred)
    pred2[5, 3, 7] = True  # 3 voxels apart along z
    assert hausdorff95(pred2, truth, (2.0, 1.0, 0.5)) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("axis", "spacing", "gap", "expected"), [(0, 2.5, 4, 10.0), (2, 0.7, 3, 2.1)]
)
def test_parallel_planes_are_gap_times_spacing_apart(axis, spacing, gap, expected):
    shape = (9, 8, 10)
    pred = np.zeros(shape, bool)
    truth = np.zeros(shape, bool)
    sl = [slice(None)] * 3
    sl[axis] = 1
    truth[tuple(sl)] = True
    sl[axis] = 1 + gap
    pred[tuple(sl)] = True
    sp = [1.0, 1.0, 1.0]
    sp[axis] = spacing
    assert hausdorff95(pred, truth, sp) == pytest.approx(expected)
    assert hausdorff95(truth, pred, sp) == pytest.approx(expected)


def _ball(shape, center_mm, radius_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, center_mm))
    return d2 <= radius_mm**2


def test_concentric_spheres_anisotropic_spacing():
    spacing = (2.0, 0.8, 0.6)
    shape = (15, 33, 41)
    center = (14.0, 12.8, 12.0)
    inner = _ball(shape, center, 6.0, spacing)
    outer = _ball(shape, center, 10.0, spacing)
    hd = hausdorff95(outer, inner, spacing)
    # Radius difference 4 mm, up to one (coarsest) voxel of discretisation error.
    assert abs(hd - 4.0) <= max(spacing)
    # Ignoring the spacing gives a clearly different (wrong) answer.
    assert abs(hausdorff95(outer, inner, None) - 4.0) > 1.0


def test_identical_masks_have_zero_distance_and_2d_works():
    mask = np.zeros((12, 14), bool)
    mask[3:9, 4:11] = True
    assert hausdorff95(mask, mask, (0.5, 0.5)) == 0.0
    shifted = np.roll(mask, 2, axis=1)
    assert hausdorff95(shifted, mask, (0.5, 0.25)) == pytest.approx(0.5)


def test_empty_mask_conventions():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[2, 3, 3] = True
    assert hausdorff95(empty, empty, (1, 1, 1)) == 0.0
    assert hausdorff95(full, empty, (1, 1, 1)) == float("inf")
    assert hausdorff95(empty, full, (1, 1, 1)) == float("inf")
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(empty, full)


def test_bad_inputs_give_clear_errors():
    a = np.zeros((4, 5, 6), bool)
    with pytest.raises(ValueError, match="same image grid"):
        hausdorff95(a, a[:3], (1, 1, 1))
    with pytest.raises(ValueError, match="one spacing per axis"):
        hausdorff95(a, a, (1, 1))
    with pytest.raises(ValueError, match="positive"):
        hausdorff95(a, a, (1, 0, 1))


def test_union_percentile_lies_between_directed_percentiles():
    rng = np.random.default_rng(3)
    pred, truth = _blobs(rng, (17, 21, 23))
    d1, d2 = surface_distances(pred, truth, (1.5, 1.0, 0.7))
    p1, p2 = np.percentile(d1, 95), np.percentile(d2, 95)
    hd = hausdorff95(pred, truth, (1.5, 1.0, 0.7))
    assert min(p1, p2) - 1e-9 <= hd <= max(p1, p2) + 1e-9


def _blobs(rng, shape):
    from scipy import ndimage

    def blob():
        noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
        mask = noise > np.percentile(noise, 80)
        mask[:2] = mask[-2:] = False
        mask[:, :2] = mask[:, -2:] = False
        mask[:, :, :2] = mask[:, :, -2:] = False
        return mask

    return blob(), blob()


def test_matches_monai_surface_distances():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    spacing = (2.0, 1.0, 0.6)
    for _ in range(3):
        pred, truth = _blobs(rng, (17, 33, 35))
        # MONAI reports the larger directed 95th percentile; our directed sets must give
        # the same number, and the symmetric union percentile can only be smaller.
        ref = monai_metrics.compute_hausdorff_distance(
            pred[None, None].astype(np.float32),
            truth[None, None].astype(np.float32),
            include_background=True,
            percentile=95,
            spacing=spacing,
        )
        ref = float(np.asarray(ref).ravel()[0])
        d1, d2 = surface_distances(pred, truth, spacing)
        directed_max = max(np.percentile(d1, 95), np.percentile(d2, 95))
        assert directed_max == pytest.approx(ref, rel=1e-4, abs=1e-4)
        hd = hausdorff95(pred, truth, spacing)
        assert 0 < hd <= ref + 1e-4


def test_region_masks_unite_labels():
    labels = np.array([[0, 1, 2], [3, 3, 1]])
    masks = region_masks(labels, {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]})
    assert list(masks) == ["WT", "TC", "ET"]
    np.testing.assert_array_equal(masks["WT"], labels > 0)
    np.testing.assert_array_equal(masks["TC"], [[False, False, True], [True, True, False]])
    np.testing.assert_array_equal(masks["ET"], labels == 3)
    assert masks["ET"].dtype == bool
    with pytest.raises(TypeError, match="integers"):
        region_masks(labels.astype(float), {"WT": [1]})
    with pytest.raises(ValueError, match="names no labels"):
        region_masks(labels, {"WT": []})
