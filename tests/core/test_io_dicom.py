"""DICOM series: ordering by position, rescaling, geometry against SimpleITK's series reader."""

import shutil

import numpy as np
import pytest

from napari_unetseg.core.io import VolumeIOError, read_dicom, read_volume, write_labels
from napari_unetseg.core.io.sitk import itk_to_affine

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

# Oblique slice orientation: row and column directions (orthonormal), in LPS.
_A = 0.35
ROW = np.array([np.cos(_A), np.sin(_A), 0.0])
COL = np.array([-np.sin(_A) * np.cos(0.2), np.cos(_A) * np.cos(0.2), np.sin(0.2)])
NORMAL = np.cross(ROW, COL)
ORIGIN = np.array([-80.5, 20.25, -33.0])
DY, DX, STEP = 0.8, 0.6, 2.5


def _series(folder, n=6, desc="CT axial", uid=None, shear=0.0, skip=(), seed=0):
    """Write n slices (rows 8, columns 10) with shuffled file names and instance numbers.

    Returns the stored raw values (n, 8, 10) in position order and the series UID.
    """
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2500, size=(n, 8, 10)).astype(np.int16)
    uid = uid or generate_uid()
    study = generate_uid()
    names = rng.permutation(n)
    instances = rng.permutation(n) + 1
    for z in range(n):
        if z in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.PatientID = "phantom"
        ds.PatientName = "Phantom"
        ds.Modality = "CT"
        ds.SeriesDescription = desc
        ds.InstanceNumber = int(instances[z])
        position = ORIGIN + z * STEP * NORMAL + z * shear * ROW
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*ROW, *COL)]
        ds.PixelSpacing = [DY, DX]
        ds.SliceThickness = STEP
        ds.Rows, ds.Columns = raw.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.PixelData = raw[z].tobytes()
        ds.save_as(folder / f"s{seed}_{names[z]:03d}.dcm", enforce_file_format=True)
    return raw, uid


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
