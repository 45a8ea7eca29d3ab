import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from napari_unetseg.core.annotations import (
    BACKGROUND,
    IGNORE_INDEX,
    UNANNOTATED,
    annotation_summary,
    instance_target,
    mark_slice_complete,
    semantic_target,
    sparsify,
)


@pytest.fixture
def truth3d():
    rng = np.random.default_rng(1)
    return rng.integers(0, 3, size=(17, 33, 35)).astype(np.uint8)


def _kept(annotation, axis):
    """Slices along axis that are annotated everywhere."""
    other = tuple(a for a in range(annotation.ndim) if a != axis)
    return np.flatnonzero((annotation > 0).all(axis=other))


@pytest.mark.parametrize("mode", ["random", "even"])
def test_sparsify_keeps_requested_slices_3d(truth3d, mode):
    ann = sparsify(truth3d, fraction=0.2, axes="zyx", mode=mode, seed=3)
    assert ann.shape == truth3d.shape
    for axis, size in enumerate(truth3d.shape):
        kept = _kept(ann, axis)
        assert len(kept) == max(1, round(0.2 * size))
        sl = [slice(None)] * 3
        sl[axis] = kept
        np.testing.assert_array_equal(ann[tuple(sl)], truth3d[tuple(sl)] + 1)
    # outside the kept slices nothing is annotated
    covered = np.zeros(truth3d.shape, bool)
    for axis in range(3):
        sl = [slice(None)] * 3
        sl[axis] = _kept(ann, axis)
        covered[tuple(sl)] = True
    assert not ann[~covered].any()


def test_sparsify_even_spreads_and_random_is_seeded(truth3d):
    even = _kept(sparsify(truth3d, 0.25, axes="y", mode="even"), 1)
    assert even.min() < 33 / 4
    assert even.max() > 3 * 33 / 4
    a = sparsify(truth3d, 0.1, seed=5)
    np.testing.assert_array_equal(a, sparsify(truth3d, 0.1, seed=5))
    assert any(not np.array_equal(a, sparsify(truth3d, 0.1, seed=s)) for s in range(6, 10))


def test_sparsify_single_axis_and_minimum_one_slice(truth3d):
    ann = sparsify(truth3d, fraction=0.01, axes="z")
    assert len(_kept(ann, 0)) == 1
    assert (ann > 0).sum() == 33 * 35


def test_sparsify_2d():
    truth = np.random.default_rng(0).integers(0, 4, size=(40, 31))
    ann = sparsify(truth, 0.1, axes="yx", mode="even")
    assert len(_kept(ann, 0)) == 4
    assert len(_kept(ann, 1)) == 3
    assert ann.max() == 4


def test_sparsify_widens_dtype_when_needed():
    truth = np.full((3, 4, 5), 255, dtype=np.uint8)
    ann = sparsify(truth, 1.0)
    assert ann.max() == 256


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"axes": "zq"}, "axes"),
        ({"mode": "grid"}, "mode"),
    ],
)
def test_sparsify_rejects_bad_arguments(truth3d, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparsify(truth3d, **kwargs)


def test_sparsify_rejects_float_and_2d_axis_z():
    with pytest.raises(TypeError, match="integer"):
        sparsify(np.zeros((4, 5, 6), np.float32))
    with pytest.raises(ValueError, match="axes"):
        sparsify(np.zeros((4, 5), np.uint8), axes="z")


def test_mark_slice_complete(truth3d):
    ann = np.zeros((4, 5, 6), np.uint8)
    ann[1, 2, 3] = 3
    out = mark_slice_complete(ann, 0, 1)
    assert out is ann
    assert ann[1, 2, 3] == 3  # painted voxel kept
    assert (ann[1] > 0).all()
    assert ann[1].sum() == 5 * 6 - 1 + 3
    assert not ann[[0, 2, 3]].any()
    mark_slice_complete(ann, "x", -1)
    assert (ann[:, :, 5] >= BACKGROUND).all()
    assert not ann[0, :, :5].any()
    with pytest.raises(IndexError, match="out of range"):
        mark_slice_complete(ann, "y", 5)


def test_semantic_target_3d_and_2d():
    ann = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    t = semantic_target(ann)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t, [[IGNORE_INDEX, 0, 1], [2, IGNORE_INDEX, 0]])
    t3 = semantic_target(ann[None].repeat(3, 0))
    assert t3.shape == (3, 2, 3)
    assert (t3 == IGNORE_INDEX).sum() == 6


def test_instance_target_matches_find_boundaries_when_dense():
    rng = np.random.default_rng(0)
    objects = np.zeros((9, 20, 21), np.int32)
    objects[2:7, 3:10, 3:10] = 1
    objects[2:7, 3:10, 10:15] = 2  # touches object 1
    objects[1:4, 14:18, 2:6] = 3
    ann = objects + 1
    t = instance_target(ann)
    expected = find_boundaries(ann, connectivity=1, mode="inner", background=BACKGROUND)
    np.testing.assert_array_equal(t == 2, expected)
    np.testing.assert_array_equal(t == 0, objects == 0)
    np.testing.assert_array_equal(t == 1, (objects > 0) & ~expected)
    # the two touching objects are separated by boundary voxels on both sides
    assert t[4, 5, 9] == 2
    assert t[4, 5, 10] == 2
    assert t[4, 5, 8] == 1
    # 2D works and random labels also agree
    ann2 = rng.integers(1, 5, size=(15, 16))
    np.testing.assert_array_equal(
        instance_target(ann2) == 2, find_boundaries(ann2, mode="inner", background=1)
    )


def test_instance_target_wider_contacts_only_between_objects():
    objects = np.zeros((5, 12, 20), np.int32)
    objects[1:4, 2:10, 2:10] = 1
    objects[1:4, 2:10, 10:16] = 2  # touches object 1 at x = 9 | 10
    ann = objects + 1
    thin = instance_target(ann)
    wide = instance_target(ann, contact_width=2)
    # the contact grows to two voxels on each side ...
    assert (wide[2, 5, 8:12] == 2).all()
    assert thin[2, 5, 8] == 1
    assert thin[2, 5, 11] == 1
    assert wide[2, 5, 7] == 1
    assert wide[2, 5, 12] == 1
    # ... the rim against the background stays one voxel, the background untouched
    np.testing.assert_array_equal(wide[2, 5, :8], thin[2, 5, :8])
    np.testing.assert_array_equal(wide == 0, thin == 0)
    # new boundary: x = 8 and 11 in the 6 interior rows of the one interior z-slice
    assert ((wide == 2) & (thin != 2)).sum() == 2 * 6
    # unannotated voxels stay ignored
    ann[0] = UNANNOTATED
    assert (instance_target(ann, contact_width=3)[0] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="contact_width"):
        instance_target(ann, contact_width=0)


def test_instance_target_no_boundary_at_edge_of_annotated_slice():
    objects = np.zeros((7, 12, 12), np.int32)
    objects[:, 3:9, 3:9] = 5  # a column through every z-slice
    ann = np.zeros_like(objects)
    ann[3] = objects[3] + 1  # only z = 3 annotated
    t = instance_target(ann)
    assert (t[[0, 1, 2, 4, 5, 6]] == IGNORE_INDEX).all()
    # inside the slice: only the in-plane rim is boundary, not the whole slice
    assert (t[3, 4:8, 4:8] == 1).all()
    assert (t[3, 3, 3:9] == 2).all()
    assert (t[3, 8, 3:9] == 2).all()
    assert (t[3][objects[3] == 0] == 0).all()
    # unannotated in-plane neighbours do not create boundary either
    ann2 = ann.copy()
    ann2[3, :, :6] = UNANNOTATED
    t2 = instance_target(ann2)
    assert (t2[3, 4:8, 6:8] == 1).all()
    assert t2[3, 5, 6] == 1  # next to an unannotated voxel, still interior


def test_annotation_summary_counts(truth3d):
    ann = sparsify(truth3d, 0.2, axes="zyx", mode="even")
    s = annotation_summary(ann, class_names=["a", "b", "c"])
    assert s["annotated_slices"] == {"z": 3, "y": 7, "x": 7}
    assert s["annotated_fraction"] == pytest.approx((ann > 0).mean())
    expected = {
        "background": int((ann == 1).sum()),
        "a": int((ann == 2).sum()),
        "b": int((ann == 3).sum()),
        "c": 0,
    }
    assert s["voxels_per_class"] == expected
    assert s["missing_classes"] == ["c"]


def test_annotation_summary_z_only_and_2d():
    ann = np.zeros((10, 20, 20), np.uint8)
    ann[4, 5:9, 5:9] = 2
    mark_slice_complete(ann, 0, 7)
    s = annotation_summary(ann)
    assert s["annotated_slices"] == {"z": 2, "y": 0, "x": 0}
    assert s["voxels_per_class"] == {"background": 400, "class 1": 16}
    s2 = annotation_summary(np.zeros((6, 7), np.uint8), ["x"])
    assert s2["annotated_fraction"] == 0.0
    assert s2["missing_classes"] == ["x"]
    assert set(s2["annotated_slices"]) == {"y", "x"}


def test_sparsify_2d_accepts_default_axes():
    truth = np.ones((10, 12), np.uint8)
    np.testing.assert_array_equal(
        sparsify(truth, 0.2, axes="zyx", seed=2), sparsify(truth, 0.2, axes="yx", seed=2)
    )


def test_annotation_summary_for_instances():
    ann = np.zeros((6, 10, 10), np.int32)
    ann[2] = 1
    ann[2, 1:3, 1:3] = 2
    ann[2, 5:8, 5:8] = 9
    s = annotation_summary(ann, instances=True)
    assert s["objects"] == 2
    assert s["voxels_per_class"] == {"background": 100 - 4 - 9, "objects": 13}
    assert s["missing_classes"] == []
    assert annotation_summary(ann == 1, instances=True)["missing_classes"] == ["objects"]
