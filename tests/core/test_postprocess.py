import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unetseg.core.postprocess import instance_labels, semantic_labels


def _two_touching_spheres(shape=(20, 24, 40)):
    zz, yy, xx = np.indices(shape)
    a = (zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= 8**2
    b = (zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 26) ** 2 <= 8**2
    return a, b


def _probabilities(a, b):
    objects = np.zeros(a.shape, np.int32)
    objects[a] = 1
    objects[b & ~a] = 2
    fg = objects > 0
    # boundary: object voxels touching another label (like the training target)
    grown = [ndi.binary_erosion(objects == k) for k in (1, 2)]
    interior = grown[0] | grown[1]
    fg & ~interior
    p = np.zeros((3, *a.shape), np.float32)
    p[0] = np.where(fg, 0.05, 0.9)
    p[1] = np.where(interior, 0.92, 0.05)
    p[2] = 1.0 - p[0] - p[1]
    return p, objects


def test_instance_labels_separate_touching_objects():
    a, b = _two_touching_spheres()
    assert ndi.label(a | b)[1] == 1  # they do touch
    p, objects = _probabilities(a, b)
    labels = instance_labels(p)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    # each object gets one label, and it covers the object
    for k in (1, 2):
        values, counts = np.unique(labels[objects == k], return_counts=True)
        assert values[np.argmax(counts)] > 0
        assert counts.max() / counts.sum() > 0.95
    assert labels[objects == 1][0] != labels[objects == 2][0]
    np.testing.assert_array_equal(labels > 0, objects > 0)


def test_instance_labels_reapplied_with_other_thresholds():
    a, b = _two_touching_spheres()
    p, _ = _probabilities(a, b)
    assert instance_labels(p, interior_threshold=0.5).max() == 2
    # an interior threshold above every interior probability leaves no seed: the touching
    # pair becomes one object (a seedless foreground component)
    assert instance_labels(p, interior_threshold=0.9).max() == 1
    # foreground threshold above every foreground probability: nothing
    assert instance_labels(p, foreground_threshold=0.99).max() == 0
    # min_size removes everything smaller than the objects
    assert instance_labels(p, min_size=int(a.sum()) + 10).max() == 0
    np.testing.assert_array_equal(instance_labels(p), instance_labels(p.copy()))


def test_instance_labels_2d_and_wrong_channels():
    p = np.zeros((3, 10, 10), np.float32)
    p[0] = 1.0
    p[0, 2:5, 2:5] = 0.0
    p[1, 2:5, 2:5] = 1.0
    labels = instance_labels(p)
    assert labels.shape == (10, 10)
    assert labels.max() == 1
    with pytest.raises(ValueError, match="3 probability channels"):
        instance_labels(np.zeros((2, 4, 4, 4), np.float32))


def test_semantic_labels_argmax_and_min_size():
    p = np.zeros((3, 6, 10, 10), np.float32)
    p[0] = 0.6
    p[1, 1:4, 1:6, 1:6] = 0.9  # 75 voxels of class 1
    p[2, 5, 8, 8] = 0.9  # a single voxel of class 2
    p[1, 5, 0, 0] = 0.9  # a single voxel of class 1
    labels = semantic_labels(p)
    assert labels.dtype == np.uint8
    assert (labels == 1).sum() == 76
    assert (labels == 2).sum() == 1
    cleaned = semantic_labels(p, min_size=2)
    assert (cleaned == 1).sum() == 75
    assert (cleaned == 2).sum() == 0
    assert semantic_labels(p, min_size=100).max() == 0
    assert semantic_labels(p[:, 0]).shape == (10, 10)


def test_instance_labels_noisy_interior_stays_one_object_per_sphere():
    # Voxel-wise noise in the interior/boundary maps: thresholding the raw interior gives
    # many small seeds per object; the smoothed seed score must give one per object.
    a, b = _two_touching_spheres()
    p, objects = _probabilities(a, b)
    rng = np.random.default_rng(0)
    fg = objects > 0
    noise = rng.uniform(-0.6, 0.6, size=a.shape).astype(np.float32)
    p[1] = np.where(fg, np.clip(p[1] + noise, 0.0, 0.95), p[1])
    p[2] = np.where(fg, 1.0 - p[0] - p[1], p[2])
    # without smoothing and seed size the noise breaks the objects apart
    assert instance_labels(p, smoothing=0, seed_min_size=1, interior_threshold=0.5).max() > 4
    # noise this strong (+-0.6) calls for a lower seed threshold and more smoothing than
    # the defaults
    labels = instance_labels(p, interior_threshold=0.5, smoothing=1.5)
    assert labels.max() == 2
    assert labels[objects == 1][0] != labels[objects == 2][0]


def test_semantic_threshold_moves_the_foreground_boundary():
    from napari_unetseg.core.postprocess import semantic_labels

    p = np.zeros((3, 1, 4), np.float32)
    p[0] = [[0.9, 0.6, 0.4, 0.1]]  # background
    p[1] = [[0.05, 0.3, 0.2, 0.2]]
    p[2] = [[0.05, 0.1, 0.4, 0.7]]
    assert semantic_labels(p).tolist() == [[0, 0, 0, 2]]
    assert semantic_labels(p, threshold=0.35).tolist() == [[0, 1, 2, 2]]
    assert semantic_labels(p, threshold=0.95).tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="threshold"):
        semantic_labels(p, threshold=1.5)


def _necked_pair(shape=(40, 60)):
    """Probabilities of two overlapping discs (radius 10, centres 16 apart) whose interior
    is one connected piece (no boundary predicted between them), and their ids."""
    yy, xx = np.indices(shape)
    a = (yy - 20) ** 2 + (xx - 22) ** 2 <= 100
    b = ((yy - 20) ** 2 + (xx - 38) ** 2 <= 100) & ~a
    objects = a * 1 + b * 2
    fg = objects > 0
    inner = ndi.binary_erosion(fg)
    p = np.zeros((3, *shape), np.float32)
    p[0] = np.where(fg, 0.02, 0.95)
    p[1] = np.where(inner, 0.96, np.where(fg, 0.3, 0.03))
    p[2] = 1.0 - p[0] - p[1]
    return p, objects


def test_distance_seeds_split_a_pair_whose_interiors_touch():
    p, objects = _necked_pair()
    # one connected interior: the former threshold seeds give one object for two
    assert instance_labels(p, seeds="threshold").max() == 1
    labels = instance_labels(p)
    assert labels.max() == 2
    for k in (1, 2):
        _values, counts = np.unique(labels[objects == k], return_counts=True)
        assert counts.max() / counts.sum() > 0.9
    assert labels[20, 12] != labels[20, 48]
    # a seed depth above the neck's depth merges the pair again
    assert instance_labels(p, seed_depth=8.0).max() == 1


def test_instance_labels_rejects_unknown_seed_settings():
    p, _ = _necked_pair()
    with pytest.raises(ValueError, match="seeds must be one of"):
        instance_labels(p, seeds="maxima")
    with pytest.raises(ValueError, match="seed_depth"):
        instance_labels(p, seed_depth=-1.0)
