"""NIfTI / TIFF input and output: geometry round trips checked against nibabel itself."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_unetseg.core import io as vio
from napari_unetseg.core.io import (
    VolumeIOError,
    VolumeMeta,
    meta_from_array,
    read_labels,
    read_volume,
    write_image,
    write_labels,
)

# Oblique (rotated + sheared), anisotropic voxel-to-world matrix, as scanners write them.
OBLIQUE = np.array(
    [
        [0.0, 0.3, 2.5, -40.0],
        [0.9, 0.1, -0.2, 12.0],
        [0.05, -0.7, 0.4, 3.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture
def oblique_nifti(tmp_path):
    """A float volume in file order (i, j, k) = (7, 9, 11) saved with the oblique affine."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 9, 11)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, OBLIQUE), path)
    return path, data


def test_nifti_read_transposes_to_zyx_and_keeps_geometry(oblique_nifti):
    path, data = oblique_nifti
    image, meta = read_volume(path)
    assert image.shape == (1, 11, 9, 7)
    assert image.dtype == np.float32
    assert image[0, 4, 2, 6] == data[6, 2, 4]
    assert np.allclose(meta.affine, nib.load(path).affine)
    zooms = nib.load(path).header.get_zooms()
    assert np.allclose(meta.spacing, zooms[::-1])
    assert meta.spacing[0] > meta.spacing[2]  # anisotropic: k is the coarse axis
    assert meta.shape == (11, 9, 7)
    assert meta.source_format == "nifti"
    assert meta.source_path == str(path)
    assert isinstance(meta.header, bytes)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_labels_round_trip_matches_source_voxel_for_voxel(oblique_nifti, tmp_path, suffix):
    path, data = oblique_nifti
    image, meta = read_volume(path)
    labels = np.zeros(image.shape[1:], dtype=np.int64)
    labels[image[0] > 0.5] = 2
    labels[image[0] < -0.5] = 1
    out = write_labels(labels, meta, tmp_path / f"mask{suffix}")
    written = nib.load(out)
    src = nib.load(path)
    assert np.array_equal(written.affine, src.affine)
    assert written.shape == src.shape
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(src.affine)
    assert written.header["sform_code"] == src.header["sform_code"]
    assert written.header["qform_code"] == src.header["qform_code"]
    # Voxel (i, j, k) of the mask is the label of voxel (i, j, k) of the source.
    expected = np.where(data > 0.5, 2, np.where(data < -0.5, 1, 0))
    assert np.array_equal(written.get_fdata(), expected)
    with open(out, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == (suffix == ".nii.gz")
    back, meta2 = read_labels(out)
    assert np.array_equal(back, labels)
    assert np.allclose(meta2.spacing, meta.spacing)


def test_labels_use_smallest_integer_dtype(tmp_path):
    meta = meta_from_array(shape=(3, 4, 5), spacing=(2.0, 1.0, 0.5))
    cases = [
        (1, np.uint8),
        (255, np.uint8),
        (256, np.uint16),
        (70000, np.int32),
        (-3, np.int8),
        (-300, np.int16),
    ]
    for value, expected in cases:
        labels = np.zeros((3, 4, 5), dtype=np.int64)
        labels[1, 2, 3] = value
        out = write_labels(labels, meta, tmp_path / f"v{value}.nii.gz")
        img = nib.load(out)
        assert img.get_data_dtype() == np.dtype(expected), value
        assert img.get_fdata()[3, 2, 1] == value


def test_array_meta_gets_diagonal_affine_from_spacing(tmp_path):
    meta = meta_from_array(shape=(3, 4, 5), spacing=(2.0, 1.0, 0.5))
    labels = np.arange(60).reshape(3, 4, 5)
    img = nib.load(write_labels(labels, meta, tmp_path / "a.nii.gz"))
    assert img.shape == (5, 4, 3)
    assert np.allclose(img.affine, np.diag([0.5, 1.0, 2.0, 1.0]))
    assert img.get_fdata()[4, 1, 2] == labels[2, 1, 4]
    # A bare VolumeMeta without a shape (as the demo builds it) also works.
    bare = VolumeMeta(spacing=(1.0, 1.0, 1.0), source_format="array")
    assert nib.load(write_labels(labels, bare, tmp_path / "b.nii")).shape == (5, 4, 3)


def test_float_labels_with_whole_values_are_accepted_and_others_refused(tmp_path):
    meta = meta_from_array(shape=(2, 3, 4))
    ok = np.full((2, 3, 4), 3.0, dtype=np.float32)
    assert nib.load(write_labels(ok, meta, tmp_path / "ok.nii.gz")).get_data_dtype() == np.uint8
    with pytest.raises(VolumeIOError, match="non-integer"):
        write_labels(ok + 0.5, meta, tmp_path / "bad.nii.gz")
    nan = ok.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(VolumeIOError, match="NaN"):
        write_labels(nan, meta, tmp_path / "nan.nii.gz")


def test_four_d_channels_last_nifti_reads_as_channels(tmp_path):
    # BraTS-like layout: (i, j, k, modality), here small.
    data = np.random.default_rng(1).normal(size=(8, 10, 6, 4)).astype(np.float32)
    path = tmp_path / "brats.nii.gz"
    nib.save(nib.Nifti1Image(data, OBLIQUE), path)
    image, meta = read_volume(path)
    assert image.shape == (4, 6, 10, 8)
    for c in range(4):
        assert np.array_equal(image[c], data[..., c].T)
    assert len(meta.channel_names) == 4
    assert meta.shape == (6, 10, 8)
    # A mask written with this meta has the 3D source geometry.
    out = write_labels(np.ones((6, 10, 8), np.uint8), meta, tmp_path / "m.nii.gz")
    img = nib.load(out)
    assert img.shape == (8, 10, 6)
    assert np.array_equal(img.affine, nib.load(path).affine)
    with pytest.raises(VolumeIOError, match="single channel"):
        read_labels(path)


def test_write_image_probabilities_as_4d_channels_last(oblique_nifti, tmp_path):
    path, _ = oblique_nifti
    image, meta = read_volume(path)
    rng = np.random.default_rng(2)
    probs = rng.random((3, *image.shape[1:])).astype(np.float64)
    probs /= probs.sum(axis=0, keepdims=True)
    out = write_image(probs, meta, tmp_path / "probs.nii.gz")
    img = nib.load(out)
    assert img.shape == (7, 9, 11, 3)
    assert img.get_data_dtype() == np.float32
    assert np.array_equal(img.affine, nib.load(path).affine)
    stored = np.asarray(img.dataobj)
    assert np.allclose(stored[6, 2, 4, :], probs[:, 4, 2, 6], atol=1e-6)
    back, _ = read_volume(out)
    assert back.shape == probs.shape
    assert np.allclose(back, probs, atol=1e-6)
    # Single map (boundary probabilities) keeps the 3D shape.
    single = write_image(probs[1], meta, tmp_path / "boundary.nii.gz")
    assert nib.load(single).shape == (7, 9, 11)


def test_tiff_2d_3d_and_channels(tmp_path):
    rng = np.random.default_rng(3)
    plane = rng.integers(0, 4000, size=(13, 17), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "plane.tif", plane)
    image, meta = read_volume(tmp_path / "plane.tif")
    assert image.shape == (1, 13, 17)
    assert np.array_equal(image[0], plane)
    assert meta.spacing == (1.0, 1.0)
    assert meta.source_format == "tiff"

    stack = rng.random((5, 13, 17)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "stack.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
    )
    image, meta = read_volume(tmp_path / "stack.tif")
    assert image.shape == (1, 5, 13, 17)
    assert np.allclose(meta.spacing, (2.0, 0.5, 0.25), rtol=1e-4)

    chans = rng.random((5, 2, 13, 17)).astype(np.float32)  # ImageJ order Z, C, Y, X
    tifffile.imwrite(tmp_path / "chans.tif", chans, imagej=True, metadata={"axes": "ZCYX"})
    image, meta = read_volume(tmp_path / "chans.tif")
    assert image.shape == (2, 5, 13, 17)
    assert np.array_equal(image[1], chans[:, 1])
    assert len(meta.channel_names) == 2

    rgb = rng.integers(0, 255, size=(13, 17, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    image, meta = read_volume(tmp_path / "rgb.tif")
    assert image.shape == (3, 13, 17)
    assert np.array_equal(image[2], rgb[..., 2])


def test_ome_tiff_physical_sizes_give_the_spacing(tmp_path):
    data = np.random.default_rng(6).random((3, 2, 5, 6)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "cells.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeX": 0.3,
            "PhysicalSizeY": 0.4,
            "PhysicalSizeZ": 2.0,
        },
    )
    image, meta = read_volume(tmp_path / "cells.ome.tif")
    assert image.shape == (2, 3, 5, 6)
    assert np.array_equal(image[1], data[:, 1])
    assert np.allclose(meta.spacing, (2.0, 0.4, 0.3))


def test_nifti2_header_round_trip(tmp_path):
    data = np.zeros((4, 5, 6), np.float32)
    path = tmp_path / "n2.nii.gz"
    nib.save(nib.Nifti2Image(data, OBLIQUE), path)
    _, meta = read_volume(path)
    assert len(meta.header) == 540
    out = write_labels(np.ones(meta.shape, np.uint8), meta, tmp_path / "m.nii.gz")
    img = nib.load(out)
    assert isinstance(img, nib.Nifti2Image)
    assert np.array_equal(img.affine, nib.load(path).affine)
    assert img.shape == (4, 5, 6)


def test_meta_from_array_validates_its_input():
    meta = meta_from_array(shape=(4, 5))
    assert meta.spacing == (1.0, 1.0)
    assert meta.source_format == "array"
    assert np.allclose(meta.nifti_affine(), np.eye(4))
    with pytest.raises(ValueError, match="different lengths"):
        meta_from_array(shape=(4, 5, 6), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        meta_from_array(shape=(4, 5), spacing=(0.0, 1.0))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_tiff_labels_and_probabilities_round_trip(tmp_path, dtype):
    meta = meta_from_array(shape=(4, 6, 5), spacing=(3.0, 0.5, 0.5))
    labels = np.random.default_rng(4).integers(0, 3, size=(4, 6, 5)).astype(dtype)
    labels[0, 0, 0] = 100000 if dtype == np.int32 else 200
    out = write_labels(labels, meta, tmp_path / "m.tif")
    back, meta2 = read_labels(out)
    assert np.array_equal(back, labels)
    assert np.allclose(meta2.spacing, meta.spacing, rtol=1e-4)
    probs = np.random.default_rng(5).random((2, 4, 6, 5)).astype(np.float32)
    back, _ = read_volume(write_image(probs, meta, tmp_path / "p.tiff"))
    assert np.allclose(back, probs)


def test_two_d_nifti_round_trip(tmp_path):
    meta = meta_from_array(shape=(6, 9), spacing=(0.5, 2.0))
    labels = np.arange(54).reshape(6, 9) % 4
    out = write_labels(labels, meta, tmp_path / "slice.nii.gz")
    img = nib.load(out)
    assert img.shape == (9, 6)
    assert np.allclose(np.diag(img.affine)[:2], (2.0, 0.5))
    back, meta2 = read_labels(out)
    assert np.array_equal(back, labels)
    assert meta2.spacing == (0.5, 2.0)


def test_overwrite_false_refuses_existing_file(tmp_path):
    meta = meta_from_array(shape=(2, 2, 2))
    target = tmp_path / "m.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(VolumeIOError, match="already exists"):
        write_labels(np.ones((2, 2, 2), np.uint8), meta, target, overwrite=False)
    assert target.read_bytes() == b"precious"
    write_labels(np.ones((2, 2, 2), np.uint8), meta, target)
    assert nib.load(target).shape == (2, 2, 2)


def test_failed_write_leaves_existing_file_and_no_temp_files(tmp_path, monkeypatch):
    meta = meta_from_array(shape=(4, 5, 6))
    target = tmp_path / "m.nii.gz"
    target.write_bytes(b"precious")

    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(VolumeIOError, match="disk full"):
        write_labels(np.ones((4, 5, 6), np.uint8), meta, target)
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["m.nii.gz"]


def test_corrupt_and_truncated_files_raise_clear_errors(oblique_nifti, tmp_path):
    path, _ = oblique_nifti
    raw = path.read_bytes()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeIOError, match="damaged, truncated"):
        read_volume(truncated)
    garbage = tmp_path / "junk.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header at all" * 3))
    with pytest.raises(VolumeIOError, match=r"junk\.nii\.gz"):
        read_volume(garbage)
    bad_tiff = tmp_path / "bad.tif"
    bad_tiff.write_bytes(b"II*\x00garbage")
    with pytest.raises(VolumeIOError, match=r"bad\.tif"):
        read_volume(bad_tiff)
    with pytest.raises(VolumeIOError, match="not found"):
        read_volume(tmp_path / "missing.nii.gz")


def test_unknown_extension_is_refused(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"x")
    with pytest.raises(VolumeIOError, match=r"\.nii"):
        read_volume(tmp_path / "scan.png")
    with pytest.raises(VolumeIOError, match="unknown file type"):
        write_labels(np.ones((2, 2, 2), np.uint8), meta_from_array((2, 2, 2)), tmp_path / "m.png")


def test_five_d_volumes_are_refused(tmp_path):
    path = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2, 2), np.float32), np.eye(4)), path)
    with pytest.raises(VolumeIOError, match="5 dimensions"):
        read_volume(path)
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((2, 3, 2, 4, 5), np.float32), imagej=True)
    with pytest.raises(VolumeIOError, match="axes"):
        read_volume(tmp_path / "five.tif")
    meta = meta_from_array(shape=(3, 4, 5))
    with pytest.raises(VolumeIOError, match="spatial axes"):
        write_labels(np.zeros((1, 1, 3, 4, 5), np.uint8), meta, tmp_path / "m.nii.gz")
    with pytest.raises(VolumeIOError, match="expected"):
        write_image(np.zeros((1, 1, 3, 4, 5), np.float32), meta, tmp_path / "p.nii.gz")


def test_mask_with_other_shape_than_image_is_refused(oblique_nifti, tmp_path):
    path, _ = oblique_nifti
    _, meta = read_volume(path)
    with pytest.raises(VolumeIOError, match=r"voxel for voxel"):
        write_labels(np.zeros((11, 9, 8), np.uint8), meta, tmp_path / "m.nii.gz")
    with pytest.raises(VolumeIOError, match=r"\(7, 9, 11\)"):
        # File order instead of array order: a classic transposition slip.
        write_labels(np.zeros((7, 9, 11), np.uint8), meta, tmp_path / "m.nii.gz")
    assert not (tmp_path / "m.nii.gz").exists()


def test_non_integer_file_is_refused_as_labels(oblique_nifti):
    path, _ = oblique_nifti
    with pytest.raises(VolumeIOError, match="non-integer"):
        read_labels(path)


def test_nifti_with_scaling_keeps_values(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, 1.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    image, meta = read_volume(path)
    assert np.allclose(image[0], (data * 2.0 + 1.0).T)
    # The label file written from it holds plain integers, not rescaled ones.
    out = write_labels(np.ones(meta.shape, np.uint8), meta, tmp_path / "m.nii")
    assert np.array_equal(nib.load(out).get_fdata(), np.ones((2, 3, 4)))


def test_module_exports():
    for name in ("read_volume", "read_labels", "write_labels", "write_image", "meta_from_array"):
        assert callable(getattr(vio, name))


def test_nifti_time_series_is_no_channel_stack(tmp_path):
    import nibabel as nib

    from napari_unetseg.core.io import VolumeIOError, read_volume

    def save(n, unit, name):
        img = nib.Nifti1Image(np.zeros((6, 5, 4, n), np.float32), np.eye(4))
        img.header.set_xyzt_units("mm", unit)
        nib.save(img, tmp_path / name)
        return tmp_path / name

    with pytest.raises(VolumeIOError, match=r"time series of 40 volumes.*extract one volume"):
        read_volume(save(40, "sec", "fmri.nii.gz"))
    image, meta = read_volume(save(3, "sec", "phases.nii.gz"))
    assert image.shape == (3, 4, 5, 6)
    assert meta.extra["notes"] == [
        f"{tmp_path / 'phases.nii.gz'}: its 3 time points are read as 3 channels"
    ]
    image, meta = read_volume(save(40, "unknown", "channels.nii.gz"))
    assert image.shape[0] == 40
    assert "notes" not in meta.extra
