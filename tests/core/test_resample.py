"""Resampling between spacings: shapes, label values and the way back."""

import numpy as np
import pytest

from napari_unetseg.core.resample import (
    median_spacing,
    resample_image,
    resample_labels,
    resample_to_shape,
    resampled_shape,
    spacings_differ,
)


def test_resampled_shape_keeps_the_physical_extent():
    assert resampled_shape((10, 20, 30), (2.0, 1.0, 1.0), (1.0, 1.0, 0.5)) == (20, 20, 60)
    assert resampled_shape((3, 4), (1.0, 1.0), (10.0, 10.0)) == (1, 1)
    with pytest.raises(ValueError, match="target spacing"):
        resampled_shape((3, 4), (1.0, 1.0), (0.0, 1.0))


def test_labels_keep_zero_and_add_no_values_and_go_back_exactly():
    rng = np.random.default_rng(0)
    labels = np.zeros((9, 17, 15), np.uint16)
    labels[2:7, 3:12, 4:10] = 1
    labels[4, 5:8, 5:8] = 65535  # any id survives nearest-neighbour interpolation
    labels[rng.random(labels.shape) < 0.05] = 3
    up = resample_labels(labels, (3.0, 1.0, 1.0), (1.0, 0.7, 0.7))
    assert up.shape == resampled_shape(labels.shape, (3.0, 1.0, 1.0), (1.0, 0.7, 0.7))
    assert up.dtype == labels.dtype
    assert set(np.unique(up)) <= set(np.unique(labels))
    # voxels in the middle of an unannotated region stay unannotated
    assert (up[:3] == 0).mean() > 0.8
    back = resample_to_shape(up, labels.shape, order=0)
    assert back.shape == labels.shape
    assert (back == labels).mean() > 0.9
    assert (back[labels == 0] == 0).mean() > 0.9


def test_images_are_resampled_per_channel_to_float32_and_back():
    z, y, x = np.meshgrid(np.arange(8), np.arange(12), np.arange(10), indexing="ij")
    ramp = np.stack([z + y + x, 2.0 * x]).astype(np.float64)
    out = resample_image(ramp, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), order=1)
    assert out.shape == (2, 16, 12, 10)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[1, 5], 2.0 * x[0], atol=1e-5)  # X untouched
    back = resample_to_shape(out, (8, 12, 10), order=3)
    assert back.shape == (2, 8, 12, 10)
    np.testing.assert_allclose(back[:, 1:-1], ramp[:, 1:-1], atol=0.05)
    with pytest.raises(ValueError, match="cannot resample"):
        resample_to_shape(ramp, (8, 12))


def test_median_and_differ():
    sp = [(3.0, 1.0, 1.0), (1.0, 1.0, 1.0), (2.0, 1.05, 1.0)]
    assert median_spacing(sp) == (2.0, 1.0, 1.0)
    assert spacings_differ(sp)
    assert not spacings_differ([(1.0, 1.0), (1.05, 0.98)])
    assert not spacings_differ([(5.0, 1.0)])
