"""Several files as the channels of one image: stacking, names, shape and geometry checks."""

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_unetseg.core.io import VolumeIOError, read_channels

AFFINE = np.array(
    [
        [0.0, 0.8, 0.0, -30.0],
        [0.7, 0.0, 0.0, 12.0],
        [0.0, 0.0, 2.5, 4.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _nifti(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_files_stack_into_channels_named_by_stem(tmp_path):
    rng = np.random.default_rng(0)
    t1 = rng.normal(size=(7, 9, 5)).astype(np.float32)
    t2 = rng.normal(size=(7, 9, 5)).astype(np.float32)
    a = _nifti(tmp_path / "t1.nii.gz", t1)
    b = _nifti(tmp_path / "t2.nii", t2)
    image, meta = read_channels([a, b])
    assert image.shape == (2, 5, 9, 7)
    assert np.array_equal(image[0], t1.T)
    assert np.array_equal(image[1], t2.T)
    assert meta.channel_names == ["t1", "t2"]
    assert meta.source_path == str(a)
    assert np.allclose(meta.affine, AFFINE)


def test_single_file_keeps_its_own_names(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    image, meta = read_channels([path])
    assert image.shape == (3, 6, 8)
    assert meta.channel_names == ["red", "green", "blue"]
    # A multi-channel file without names is numbered after its stem, with another file.
    four_d = _nifti(tmp_path / "dwi.nii.gz", np.zeros((4, 5, 6, 2), np.float32))
    other = _nifti(tmp_path / "t1.nii.gz", np.zeros((4, 5, 6), np.float32))
    _, meta = read_channels([four_d, other])
    assert meta.channel_names == ["dwi 0", "dwi 1", "t1"]


def test_same_stem_gives_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _nifti(tmp_path / "a" / "scan.nii.gz", np.zeros((3, 4, 5), np.float32))
    b = _nifti(tmp_path / "b" / "scan.nii.gz", np.zeros((3, 4, 5), np.float32))
    _, meta = read_channels([a, b])
    assert len(set(meta.channel_names)) == 2


def test_different_shapes_are_listed_in_one_line(tmp_path):
    a = _nifti(tmp_path / "a.nii.gz", np.zeros((7, 9, 5), np.float32))
    b = _nifti(tmp_path / "b.nii.gz", np.zeros((7, 9, 6), np.float32))
    with pytest.raises(VolumeIOError) as info:
        read_channels([a, b])
    msg = str(info.value)
    assert "\n" not in msg
    assert r"a.nii.gz (5, 9, 7)" in msg
    assert "b.nii.gz (6, 9, 7)" in msg


def test_different_geometry_is_refused(tmp_path):
    data = np.zeros((7, 9, 5), np.float32)
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5  # half a millimetre: most of a voxel
    a = _nifti(tmp_path / "a.nii.gz", data)
    b = _nifti(tmp_path / "b.nii.gz", data, shifted)
    with pytest.raises(VolumeIOError, match=r"different geometry: a\.nii\.gz origin .*b\.nii\.gz"):
        read_channels([a, b])
    flipped = AFFINE.copy()
    flipped[:3, 0] *= -1
    c = _nifti(tmp_path / "c.nii.gz", data, flipped)
    with pytest.raises(VolumeIOError, match=r"axes .*resample them onto one grid first"):
        read_channels([a, c])
    # A float32 rounding difference is not a different grid.
    tiny = AFFINE.copy()
    tiny[1, 3] += 1e-6
    d = _nifti(tmp_path / "d.nii.gz", data, tiny)
    image, _ = read_channels([a, d])
    assert image.shape == (2, 5, 9, 7)


def test_no_files_is_refused():
    with pytest.raises(VolumeIOError, match="no image files"):
        read_channels([])
