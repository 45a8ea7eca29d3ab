"""The synthetic sample: deterministic, two classes, touching but distinct instances."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unetseg.core.sample import make_sample


def _touching_pairs(instances):
    pairs = set()
    for ax in range(instances.ndim):
        a = np.moveaxis(instances, ax, 0)
        m = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        for u, v in zip(a[1:][m].tolist(), a[:-1][m].tolist()):
            pairs.add((min(u, v), max(u, v)))
    return pairs


@pytest.fixture(scope="module")
def default_sample():
    return make_sample()


def test_default_shapes_dtypes_and_classes(default_sample):
    image, semantic, instances = default_sample
    assert image.shape == semantic.shape == instances.shape == (64, 128, 128)
    assert image.dtype == np.float32
    assert semantic.dtype == np.uint8
    assert instances.dtype == np.int32
    assert set(np.unique(semantic).tolist()) == {0, 1, 2}
    assert np.all(np.isfinite(image))
    n = int(instances.max())
    assert 30 <= n <= 60
    assert set(np.unique(instances).tolist()) == set(range(n + 1))
    assert np.array_equal(instances > 0, semantic > 0)


def test_each_instance_has_one_class_and_is_connected(default_sample):
    _, semantic, instances = default_sample
    for idx, sl in enumerate(ndi.find_objects(instances), start=1):
        mask = instances[sl] == idx
        classes = np.unique(semantic[sl][mask])
        assert classes.size == 1
        assert classes[0] in (1, 2)
        assert ndi.label(mask)[1] == 1


def test_touching_objects_are_distinct_instances(default_sample):
    _, semantic, instances = default_sample
    pairs = _touching_pairs(instances)
    assert len(pairs) >= 10
    # Touching objects merge into fewer connected components of the foreground.
    assert ndi.label(semantic > 0)[1] < instances.max()


def test_classes_differ_in_brightness_and_shape(default_sample):
    image, semantic, instances = default_sample
    bg, c1, c2 = (float(image[semantic == k].mean()) for k in (0, 1, 2))
    assert c1 > c2 > bg
    # Class 2 objects are elongated: ratio of the principal axes of their voxel clouds.
    ratios = {1: [], 2: []}
    for idx, sl in enumerate(ndi.find_objects(instances), start=1):
        coords = np.argwhere(instances[sl] == idx).astype(float)
        if len(coords) < 50:
            continue
        ev = np.linalg.eigvalsh(np.cov(coords.T))
        k = int(semantic[sl][instances[sl] == idx][0])
        ratios[k].append(np.sqrt(ev[-1] / max(ev[0], 1e-6)))
    assert np.median(ratios[2]) > 1.5 * np.median(ratios[1])


def test_raw_intensity_alone_does_not_separate_the_classes(default_sample):
    image, semantic, _ = default_sample
    # Noise and bias make the two class intensity ranges overlap.
    assert np.percentile(image[semantic == 2], 99) > np.percentile(image[semantic == 1], 5)


def test_deterministic_and_seed_dependent():
    a = make_sample((17, 33, 35), seed=1)
    b = make_sample((17, 33, 35), seed=1)
    c = make_sample((17, 33, 35), seed=2)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("shape", [(12, 24, 20), (17, 33, 35), (8, 64, 64)])
def test_small_shapes_still_hold_both_classes(shape):
    image, semantic, instances = make_sample(shape, seed=3)
    assert image.shape == shape
    assert {1, 2} <= set(np.unique(semantic).tolist())
    assert instances.max() >= 2


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        make_sample((10, 10))


def test_brats_like_case_has_nested_regions_and_distinct_contrasts():
    from napari_unetseg.core.sample import make_brats_like

    image, labels = make_brats_like(shape=(24, 32, 32), seed=3)
    assert image.shape == (4, 24, 32, 32)
    assert image.dtype == np.float32
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # necrosis (1) lies inside the enhancing rim (3): dilating the core stays in the tumour
    from scipy import ndimage as ndi

    core = ndi.binary_dilation(labels == 1)
    assert np.all(labels[core] > 0)
    # each region differs from oedema in some channel by more than the noise
    means = {k: image[:, labels == k].mean(axis=1) for k in (1, 2, 3)}
    for k in (1, 3):
        assert np.abs(means[k] - means[2]).max() > 0.2
    again, _ = make_brats_like(shape=(24, 32, 32), seed=3)
    np.testing.assert_array_equal(image, again)
