"""Labels of a DICOM series written as a DICOM SEG that references it, read back."""

import sys

import numpy as np
import pytest

from napari_unetseg.core.io import (
    VolumeIOError,
    meta_from_array,
    read_dicom,
    read_dicom_seg,
    write_dicom_seg,
    write_labels,
)
from napari_unetseg.core.io.dicom import series_datasets

pytest.importorskip("pydicom")
highdicom = pytest.importorskip("highdicom")
from dicom_testing import make_series  # noqa: E402


def _labels(shape):
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:6, 3:8] = 1
    labels[2:5, 0:3, 0:4] = 2
    labels[0, 7, 9] = 3
    return labels


def test_seg_references_the_series_and_matches_the_labels(tmp_path):
    folder = tmp_path / "series"
    _, uid = make_series(folder)  # oblique, shuffled file names
    image, meta = read_dicom(folder)
    labels = _labels(image.shape[1:])
    names = ["liver", "tumour", "vessel"]
    out = write_labels(labels, meta, tmp_path / "seg.dcm", class_names=names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm", "series"]

    ds = __import__("pydicom").dcmread(out)
    assert ds.Modality == "SEG"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert ds.StudyInstanceUID == series_datasets(folder)[0].StudyInstanceUID
    assert [s.SegmentLabel for s in ds.SegmentSequence] == names
    # Frames per segment, on the source slices in read_dicom's (position) order.
    sop_uids = [str(d.SOPInstanceUID) for d in series_datasets(folder)]
    back, read_names, ref_uid = read_dicom_seg(out, source_uids=sop_uids)
    assert ref_uid == uid
    assert read_names == names
    assert np.array_equal(back, labels)
    seg = highdicom.seg.segread(out)
    per_segment = seg.get_pixels_by_source_instance(sop_uids)
    for k in (1, 2, 3):
        assert np.array_equal(per_segment[..., k - 1], labels == k)


def test_seg_from_datasets_names_missing_classes_and_refuses_bad_input(tmp_path):
    folder = tmp_path / "series"
    make_series(folder, n=4)
    image, _ = read_dicom(folder)
    labels = _labels(image.shape[1:])
    shuffled = series_datasets(folder)[::-1]
    out = write_dicom_seg(labels, shuffled, tmp_path / "s.dcm", ["a"])
    back, names, _ = read_dicom_seg(out, [str(d.SOPInstanceUID) for d in shuffled[::-1]])
    assert names == ["a", "class 2", "class 3"]
    assert np.array_equal(back, labels)
    with pytest.raises(VolumeIOError, match=r"shape \(4, 8, 9\) but the DICOM series"):
        write_dicom_seg(np.zeros((4, 8, 9), np.uint8), folder, tmp_path / "bad.dcm")
    with pytest.raises(VolumeIOError, match="not read from DICOM; write them as NIfTI"):
        write_labels(np.zeros((2, 2, 2), np.uint8), meta_from_array((2, 2, 2)), tmp_path / "x.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.dcm", "series"]


def test_missing_highdicom_names_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "series"
    make_series(folder, n=3)
    image, meta = read_dicom(folder)
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(VolumeIOError) as info:
        write_labels(np.zeros(image.shape[1:], np.uint8), meta, tmp_path / "seg.dcm")
    assert str(info.value) == (
        'writing DICOM SEG needs highdicom: pip install "napari-unetseg[formats]"'
    )
    assert not (tmp_path / "seg.dcm").exists()
