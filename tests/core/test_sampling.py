"""Patches across cases: class balance over the whole set, case weights, padding, memmaps,
and 2D slices of volumes."""

import numpy as np
import pytest

from napari_unetseg.core.annotations import IGNORE_INDEX
from napari_unetseg.core.sampling import DatasetSampler


def _case(shape, counts, seed):
    """A target with ``counts[k]`` voxels of class k (0 = background), rest unannotated."""
    rng = np.random.default_rng(seed)
    target = np.full(shape, IGNORE_INDEX, np.int8)
    flat = target.reshape(-1)
    spots = rng.permutation(flat.size)
    start = 0
    for k, n in enumerate(counts):
        flat[spots[start : start + n]] = k
        start += n
    image = rng.normal(size=(1, *shape)).astype(np.float32)
    return image, target


def _centre_labels(sampler, n):
    out = []
    for _ in range(n):
        case, flat = sampler._pick()
        out.append((case, int(sampler.targets[case].reshape(-1)[flat])))
    return out


def test_a_class_of_one_case_is_drawn_as_often_as_a_common_one():
    # class 1 is plentiful in both cases; class 2 exists only in case 1, with 20 voxels
    a = _case((8, 16, 16), [400, 300, 0], seed=0)
    b = _case((8, 16, 16), [400, 300, 20], seed=1)
    sampler = DatasetSampler(
        [a[0], b[0]], [a[1], b[1]], (4, 8, 8), foreground_fraction=1.0, augment=False, seed=0
    )
    assert sampler.classes == [1, 2]
    picks = _centre_labels(sampler, 4000)
    share = np.mean([label == 2 for _, label in picks])
    assert 0.46 < share < 0.54
    assert all(case == 1 for case, label in picks if label == 2)
    # class 1 centres come from both cases, in proportion to their class-1 voxels (1:1)
    from_a = np.mean([case == 0 for case, label in picks if label == 1])
    assert 0.44 < from_a < 0.56


def test_random_centres_weight_cases_by_annotated_voxels():
    a = _case((8, 16, 16), [100, 50], seed=0)  # 150 annotated voxels
    b = _case((8, 16, 16), [300, 150], seed=1)  # 450
    sampler = DatasetSampler(
        [a[0], b[0]], [a[1], b[1]], (4, 8, 8), foreground_fraction=0.0, augment=False, seed=3
    )
    picks = _centre_labels(sampler, 4000)
    share_b = np.mean([case == 1 for case, _ in picks])
    assert 0.72 < share_b < 0.78
    assert all(label != IGNORE_INDEX for _, label in picks)


def test_memmapped_cases_give_the_same_patches(tmp_path):
    cases = [_case((6, 20, 18), [200, 100, 30], seed=s) for s in range(2)]
    mm_images, mm_targets = [], []
    for i, (img, tgt) in enumerate(cases):
        np.save(tmp_path / f"i{i}.npy", img)
        np.save(tmp_path / f"t{i}.npy", tgt)
        mm_images.append(np.load(tmp_path / f"i{i}.npy", mmap_mode="r"))
        mm_targets.append(np.load(tmp_path / f"t{i}.npy", mmap_mode="r"))
    ram = DatasetSampler([c[0] for c in cases], [c[1] for c in cases], (8, 16, 16), seed=5)
    disk = DatasetSampler(mm_images, mm_targets, (8, 16, 16), seed=5)
    assert all(isinstance(im, np.memmap) for im in disk.images)
    for _ in range(3):
        xr, yr = ram.sample(2)
        xd, yd = disk.sample(2)
        np.testing.assert_array_equal(xr, xd)
        np.testing.assert_array_equal(yr, yd)
        assert yd.dtype == np.int64
        assert xd.flags.c_contiguous


def test_2d_patches_from_the_annotated_slices_of_volumes():
    image = np.zeros((1, 10, 12, 14), np.float32)
    target = np.full((10, 12, 14), IGNORE_INDEX, np.int8)
    target[3] = 0
    target[7, 2:6, 2:6] = 1
    image[0] = np.arange(10, dtype=np.float32)[:, None, None]  # value = slice index
    for axis, patch in ((0, (8, 8)), (1, (6, 8))):
        sampler = DatasetSampler([image], [target], patch, augment=False, slice_axis=axis, seed=0)
        x, y = sampler.sample(16)
        assert x.shape == (16, 1, *patch)
        assert y.shape == (16, *patch)
        assert all((y[b] != IGNORE_INDEX).any() for b in range(16))
        if axis == 0:  # every patch is one of the two annotated z-slices
            assert set(np.unique(x)) <= {3.0, 7.0}
    with pytest.raises(ValueError, match="patch_size"):
        DatasetSampler([image], [target], (4, 8, 8), slice_axis=0)


def test_cases_smaller_than_the_patch_are_padded_per_patch():
    img, tgt = _case((3, 5, 6), [10, 5], seed=0)
    sampler = DatasetSampler([img], [tgt], (4, 8, 8), augment=False)
    x, y = sampler.sample(2)
    assert x.shape == (2, 1, 4, 8, 8)
    assert ((y != IGNORE_INDEX).sum(axis=(1, 2, 3)) == 15).all()
    outside = np.ones((4, 8, 8), bool)
    outside[0:3, 1:6, 1:7] = False  # the case sits centred: padding (0, 1), (1, 2), (1, 1)
    assert (x[:, 0][:, outside] == 0).all()
