"""DICOM series: ordering by position, rescaling, geometry against SimpleITK's series reader."""

import shutil

import numpy as np
import pytest

from napari_unetseg.core.io import VolumeIOError, read_dicom, read_volume, write_labels
from napari_unetseg.core.io.sitk import itk_to_affine

pydicom = pytest.importorskip("pydicom")
from dicom_testing import DX, DY, STEP  # noqa: E402
from dicom_testing import make_series as _series  # noqa: E402


def test_oblique_series_sorted_by_position_matches_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    folder = tmp_path / "series"
    raw, uid = _series(folder)
    image, meta = read_dicom(folder)
    assert image.shape == (1, 6, 8, 10)
    assert image.dtype == np.float32
    assert np.array_equal(image[0], raw.astype(np.float32) - 1024)
    assert meta.spacing == pytest.approx((STEP, DY, DX))
    assert meta.extra["series_uid"] == uid

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    expected = itk_to_affine(ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    assert np.allclose(meta.affine, expected, atol=1e-4)
    assert np.allclose(image[0], sitk.GetArrayFromImage(ref))
    # Any file of the series, and read_volume on the folder, give the same volume.
    again, meta2 = read_dicom(sorted(folder.iterdir())[3])
    assert np.array_equal(again, image)
    assert np.allclose(meta2.affine, meta.affine)
    assert np.array_equal(read_volume(folder)[0], image)
    # Labels for it written as NRRD land on SimpleITK's grid.
    labels = (image[0] > 0).astype(np.uint8)
    out = sitk.ReadImage(str(write_labels(labels, meta, tmp_path / "mask.nrrd")))
    assert np.allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    assert np.allclose(out.GetDirection(), ref.GetDirection(), atol=1e-5)
    assert np.allclose(out.GetSpacing(), ref.GetSpacing(), atol=1e-5)


def test_several_series_are_listed_and_one_can_be_picked(tmp_path):
    folder = tmp_path / "mixed"
    _, uid_a = _series(folder, n=4, desc="CT soft tissue", seed=1)
    raw_b, uid_b = _series(folder, n=5, desc="CT bone", seed=2)
    with pytest.raises(VolumeIOError) as info:
        read_dicom(folder)
    msg = str(info.value)
    assert "\n" not in msg
    assert "2 DICOM series" in msg
    assert f"'CT soft tissue' {uid_a} (4 files)" in msg
    assert f"'CT bone' {uid_b} (5 files)" in msg
    assert "series_uid" in msg
    image, meta = read_dicom(folder, series_uid=uid_b)
    assert np.array_equal(image[0], raw_b - 1024.0)
    assert meta.extra["series_description"] == "CT bone"
    with pytest.raises(VolumeIOError, match=r"no DICOM series 1\.2\.3"):
        read_dicom(folder, series_uid="1.2.3")
    # A file picks its own series.
    one = next(p for p in folder.iterdir() if pydicom.dcmread(p).SeriesInstanceUID == uid_a)
    assert read_dicom(one)[0].shape == (1, 4, 8, 10)


def test_gap_and_gantry_tilt_are_refused(tmp_path):
    _series(tmp_path / "gap", skip=(3,))
    with pytest.raises(VolumeIOError, match=r"uneven slice spacing .*missing slices"):
        read_dicom(tmp_path / "gap")
    _series(tmp_path / "tilt", shear=0.4)
    with pytest.raises(VolumeIOError, match=r"sheared .*gantry tilt"):
        read_dicom(tmp_path / "tilt")


def test_folders_without_dicom_and_non_dicom_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VolumeIOError, match="holds no DICOM image files"):
        read_volume(tmp_path)
    (tmp_path / "x.dcm").write_bytes(b"not dicom")
    with pytest.raises(VolumeIOError, match=r"x\.dcm is not a DICOM image file"):
        read_volume(tmp_path / "x.dcm")


def test_pydicom_ct_sample_is_in_hounsfield_units(tmp_path):
    from pydicom.data import get_testdata_file

    src = get_testdata_file("CT_small.dcm")
    if src is None:
        pytest.skip("pydicom's CT test file is not available")
    shutil.copy(src, tmp_path / "ct.dcm")
    image, meta = read_dicom(tmp_path / "ct.dcm")
    ds = pydicom.dcmread(src)
    assert image.shape == (1, 1, ds.Rows, ds.Columns)
    assert image.dtype == np.float32
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.allclose(image[0, 0], expected)
    assert -1100 <= image.min() < 0 < image.max() <= 4000
    assert meta.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    assert meta.source_format == "dicom"


def test_series_chosen_by_description_and_listed(tmp_path):
    from napari_unetseg.core.io import list_dicom_series
    from napari_unetseg.core.io.dicom import has_dicom_files

    folder = tmp_path / "mixed"
    _, uid_a = _series(folder, n=4, desc="CT soft tissue", seed=1)
    raw_b, uid_b = _series(folder, n=5, desc="CT bone", seed=2)
    listed = {s["description"]: s for s in list_dicom_series(folder)}
    assert listed["CT bone"]["series_uid"] == uid_b
    assert listed["CT soft tissue"]["files"] == 4
    image, _ = read_dicom(folder, series="CT bone")
    assert np.array_equal(image[0], raw_b - 1024.0)
    assert read_dicom(folder, series=uid_a)[1].extra["series_description"] == "CT soft tissue"
    with pytest.raises(VolumeIOError, match=r"no DICOM series CT lung; it holds 'CT soft"):
        read_dicom(folder, series="CT lung")
    # Two series with one description: the UID is needed.
    _series(folder, n=3, desc="CT bone", seed=3)
    with pytest.raises(VolumeIOError, match=r"2 DICOM series described 'CT bone'"):
        read_dicom(folder, series="CT bone")
    assert has_dicom_files(folder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    assert not has_dicom_files(tmp_path / "empty")
    assert list_dicom_series(tmp_path / "empty") == []
