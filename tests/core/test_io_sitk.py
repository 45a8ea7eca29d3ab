"""NRRD and MetaImage via SimpleITK: geometry checked against SimpleITK and nibabel."""

import sys

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.core.io import (
    VolumeIOError,
    meta_from_array,
    read_labels,
    read_volume,
    write_image,
    write_labels,
)

sitk = pytest.importorskip("SimpleITK")

# An oblique orthonormal direction (rotations about two axes), anisotropic spacing.
_C, _S = np.cos(0.4), np.sin(0.4)
_ROT = np.array([[_C, -_S, 0.0], [_S, _C, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
    [[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]]
)
SPACING = (0.7, 0.9, 2.5)  # ITK order (x, y, z)
ORIGIN = (10.5, -20.25, 33.0)


def _itk_volume(shape=(5, 6, 7), dtype=np.int16):
    """A SimpleITK image with array (z, y, x) = shape and the oblique geometry."""
    arr = np.random.default_rng(0).integers(-50, 50, size=shape).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(tuple(_ROT.ravel()))
    return img, arr


def _assert_same_geometry(a, b):
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_oblique_round_trip_against_simpleitk(tmp_path, suffix):
    img, arr = _itk_volume()
    src = tmp_path / f"scan{suffix}"
    sitk.WriteImage(img, str(src))
    image, meta = read_volume(src)
    assert image.shape == (1, 5, 6, 7)
    assert image.dtype == np.int16
    assert np.array_equal(image[0], arr)
    assert meta.spacing == pytest.approx(SPACING[::-1])
    expected = np.eye(4)
    expected[:3, :3] = _ROT * np.array(SPACING)
    expected[:3, 3] = ORIGIN
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected  # LPS -> RAS
    assert np.allclose(meta.affine, expected)
    assert meta.source_format == ("nrrd" if suffix in (".nrrd", ".nhdr") else "metaimage")

    labels = (arr > 0).astype(np.uint8) + 2 * (arr > 30)
    for out_suffix in (".nrrd", ".mha"):
        out = write_labels(labels, meta, tmp_path / f"mask{out_suffix}")
        back = sitk.ReadImage(str(out))
        _assert_same_geometry(back, img)
        assert np.array_equal(sitk.GetArrayFromImage(back), labels)
        again, meta2 = read_labels(out)
        assert np.array_equal(again, labels)
        assert np.allclose(meta2.affine, meta.affine)


def test_nifti_and_nrrd_of_the_same_image_agree(tmp_path):
    data = np.random.default_rng(1).normal(size=(7, 6, 5)).astype(np.float32)  # (i, j, k)
    affine = np.eye(4)
    affine[:3, :3] = _ROT * np.array([0.7, 0.9, 2.5])
    affine[:3, 3] = [-12.0, 40.5, 7.25]
    nii = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nii)
    nrrd = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(nii)), str(nrrd))  # SimpleITK's own conversion
    a, meta_a = read_volume(nii)
    b, meta_b = read_volume(nrrd)
    assert np.array_equal(a, b)
    assert np.allclose(meta_a.affine, meta_b.affine, atol=1e-4)
    assert meta_a.spacing == pytest.approx(meta_b.spacing, abs=1e-5)


def test_labels_for_a_nifti_image_written_as_nrrd_and_mha(tmp_path):
    affine = np.eye(4)
    affine[:3, :3] = _ROT * np.array([0.7, 0.9, 2.5])
    affine[:3, 3] = [-12.0, 40.5, 7.25]
    nii = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((7, 6, 5), np.float32), affine), nii)
    _, meta = read_volume(nii)
    labels = np.zeros(meta.shape, np.uint8)
    labels[1, 2, 3] = 4
    reference = sitk.ReadImage(str(nii))
    for suffix in (".nrrd", ".mha"):
        out = write_labels(labels, meta, tmp_path / f"mask{suffix}")
        back = sitk.ReadImage(str(out))
        _assert_same_geometry(back, reference)
        assert np.array_equal(sitk.GetArrayFromImage(back), labels)
        assert back.TransformIndexToPhysicalPoint((3, 2, 1)) == pytest.approx(
            reference.TransformIndexToPhysicalPoint((3, 2, 1)), abs=1e-4
        )
    # ...and back to NIfTI from the NRRD meta: nibabel sees the source affine.
    _, nrrd_meta = read_volume(tmp_path / "mask.nrrd")
    out = write_labels(labels, nrrd_meta, tmp_path / "again.nii.gz")
    assert np.allclose(nib.load(out).affine, affine, atol=1e-5)
    assert nib.load(out).get_fdata()[3, 2, 1] == 4


def test_vector_pixels_are_channels_and_probabilities_are_vectors(tmp_path):
    arr = np.random.default_rng(2).random((4, 5, 6, 3)).astype(np.float32)  # (z, y, x, c)
    img = sitk.GetImageFromArray(arr, isVector=True)
    img.SetSpacing(SPACING)
    sitk.WriteImage(img, str(tmp_path / "rgb.nrrd"))
    image, meta = read_volume(tmp_path / "rgb.nrrd")
    assert image.shape == (3, 4, 5, 6)
    assert np.array_equal(image, np.moveaxis(arr, -1, 0))
    out = write_image(image[:2], meta, tmp_path / "prob.mha")
    back = sitk.ReadImage(str(out))
    assert back.GetNumberOfComponentsPerPixel() == 2
    assert np.allclose(sitk.GetArrayFromImage(back), arr[..., :2])
    assert back.GetSpacing() == pytest.approx(SPACING)


def test_two_d_and_array_meta(tmp_path):
    meta = meta_from_array(shape=(6, 8), spacing=(0.5, 0.25))
    labels = np.arange(48, dtype=np.uint8).reshape(6, 8)
    out = write_labels(labels, meta, tmp_path / "slice.nrrd")
    back = sitk.ReadImage(str(out))
    assert back.GetDimension() == 2
    assert back.GetSpacing() == pytest.approx((0.25, 0.5))
    again, meta2 = read_labels(out)
    assert np.array_equal(again, labels)
    assert meta2.spacing == pytest.approx((0.5, 0.25))


def test_detached_header_written_by_us_and_missing_data_file(tmp_path):
    img, arr = _itk_volume()
    meta = read_volume(_write(img, tmp_path / "src.mha"))[1]
    out = write_labels((arr > 0).astype(np.uint8), meta, tmp_path / "mask.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.mhd", "mask.zraw", "src.mha"]
    _assert_same_geometry(sitk.ReadImage(str(out)), img)
    (tmp_path / "mask.zraw").unlink()
    with pytest.raises(VolumeIOError, match=r"data file .*mask\.zraw is missing"):
        read_volume(out)
    sitk.WriteImage(img, str(tmp_path / "h.nhdr"), True)
    (tmp_path / "h.raw.gz").unlink()
    with pytest.raises(VolumeIOError, match=r"h\.nhdr is a header whose data file .*h\.raw\.gz"):
        read_volume(tmp_path / "h.nhdr")


def _write(img, path):
    sitk.WriteImage(img, str(path))
    return path


def test_unsupported_content_is_refused_in_one_line(tmp_path):
    cplx = sitk.GetImageFromArray((np.ones((3, 4, 5)) + 1j).astype(np.complex64))
    with pytest.raises(VolumeIOError, match="complex-valued pixels"):
        read_volume(_write(cplx, tmp_path / "c.nrrd"))
    four_d = sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False)
    with pytest.raises(VolumeIOError, match="4 dimensions"):
        read_volume(_write(four_d, tmp_path / "t.nrrd"))
    (tmp_path / "junk.mha").write_bytes(b"ObjectType = Image\nNDims = banana\n")
    with pytest.raises(VolumeIOError) as info:
        read_volume(tmp_path / "junk.mha")
    assert "junk.mha" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_simpleitk_is_explained(tmp_path, monkeypatch):
    img, _ = _itk_volume()
    path = _write(img, tmp_path / "scan.nrrd")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(VolumeIOError, match=r"reading \.nrrd needs SimpleITK: pip install"):
        read_volume(path)
    with pytest.raises(VolumeIOError, match=r"writing \.mha needs SimpleITK"):
        write_labels(np.zeros((2, 2, 2), np.uint8), meta_from_array((2, 2, 2)), tmp_path / "m.mha")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nrrd"]


def test_metaimage_unknown_pixel_type_refused_rgb_as_channels(tmp_path):
    # MetaImage has no complex type (SimpleITK stores complex as 2 float components, read
    # back as 2 channels); an element type it does not know is refused in one line.
    odd = tmp_path / "odd.mha"
    odd.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_FANCY\n"
        "ElementDataFile = LOCAL\n" + "\0" * 8
    )
    before = odd.read_bytes()
    with pytest.raises(VolumeIOError) as info:
        read_volume(odd)
    assert str(info.value).startswith(f"cannot read {odd}: the file is damaged")
    assert "Unknown PixelType" in str(info.value)
    assert "\n" not in str(info.value)
    assert odd.read_bytes() == before  # nothing touched
    rgb = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True)
    image, meta = read_volume(_write(rgb, tmp_path / "rgb.mha"))
    assert image.shape == (3, 3, 4, 5)
    assert meta.channel_names == ["channel 0", "channel 1", "channel 2"]
