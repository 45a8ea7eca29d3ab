"""NRRD, MetaImage and DICOM through the plugin's reader and writer (and napari itself)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unetseg.core.io import VolumeIOError, read_dicom_seg
from napari_unetseg.core.io.dicom import series_datasets
from napari_unetseg.core.io.sitk import itk_to_affine

pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")
from dicom_testing import make_series  # noqa: E402

PLUGIN = "napari-unetseg"


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.gui
def test_dicom_series_opens_in_napari_and_saves_as_seg(make_napari_viewer, tmp_path):
    pytest.importorskip("highdicom")
    folder = tmp_path / "ct"
    raw, uid = make_series(folder)  # oblique, shuffled names, intercept -1024
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin=PLUGIN)
    ref = _sitk_series(folder)
    meta = layer.metadata["unetseg_meta"]
    assert np.allclose(
        meta.affine, itk_to_affine(ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    )
    assert np.allclose(np.abs(layer.scale), ref.GetSpacing()[::-1])  # signed: anatomical display
    assert np.array_equal(layer.data, raw - 1024.0)  # Hounsfield units
    assert np.allclose(layer.data, sitk.GetArrayFromImage(ref))

    mask = np.zeros(layer.data.shape, np.int32)
    mask[1:3, 2:5, 3:7] = 1
    mask[4, 0, 0] = 2
    labels = viewer.add_labels(mask, name="pred", scale=layer.scale)
    labels.metadata.update(unetseg_meta=meta, unetseg_class_names=["liver", "lesion"])
    written = labels.save(str(tmp_path / "pred.dcm"), plugin=PLUGIN)
    assert [str(p) for p in written] == [str(tmp_path / "pred.dcm")]
    uids = [str(d.SOPInstanceUID) for d in series_datasets(folder)]
    back, names, ref_uid = read_dicom_seg(tmp_path / "pred.dcm", uids)
    assert (ref_uid, names) == (uid, ["liver", "lesion"])
    assert np.array_equal(back, mask)


def test_reader_opens_a_dicom_folder_and_declines_folders_without_dicom(tmp_path):
    from napari_unetseg._napari.reader import get_reader

    folder = tmp_path / "ct"
    raw, _ = make_series(folder, n=4)
    ref = _sitk_series(folder)
    ((data, kwargs, kind),) = get_reader(str(folder))(str(folder))
    assert kind == "image"
    assert kwargs["name"] == "ct"
    assert np.array_equal(data, raw - 1024.0)
    meta = kwargs["metadata"]["unetseg_meta"]
    assert np.allclose(
        meta.affine, itk_to_affine(ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    )
    one_file = str(sorted(folder.iterdir())[0])
    assert np.array_equal(get_reader(one_file)(one_file)[0][0], data)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    assert get_reader(str(tmp_path / "notes")) is None
    assert get_reader(str(tmp_path / "empty-does-not-exist")) is None


def test_several_series_open_as_one_layer_each_and_a_broken_one_warns(tmp_path):
    from napari_unetseg._napari.reader import get_reader

    folder = tmp_path / "study"
    raw_a, _ = make_series(folder, n=4, desc="CT soft tissue", seed=1)
    raw_b, _ = make_series(folder, n=5, desc="CT bone", seed=2)
    layers = get_reader(str(folder))(str(folder))
    by_name = {kw["name"]: data for data, kw, _ in layers}
    assert sorted(by_name) == ["study [CT bone]", "study [CT soft tissue]"]
    assert np.array_equal(by_name["study [CT bone]"], raw_b - 1024.0)
    assert np.array_equal(by_name["study [CT soft tissue]"], raw_a - 1024.0)
    make_series(folder, n=6, desc="CT gap", seed=3, skip=(2,))
    with pytest.warns(UserWarning, match=r"series 'CT gap' of .* not opened: .*missing slices"):
        layers = get_reader(str(folder))(str(folder))
    assert len(layers) == 2
    # Only a broken series: its one-line error reaches the user.
    make_series(tmp_path / "gap", n=6, seed=4, skip=(2,))
    with pytest.raises(VolumeIOError, match="uneven slice spacing"):
        get_reader(str(tmp_path / "gap"))(str(tmp_path / "gap"))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_metaimage_open_and_save_in_their_geometry(tmp_path, suffix):
    from napari_unetseg._napari.reader import get_reader
    from napari_unetseg._napari.writer import write_labels

    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 2.5))
    img.SetOrigin((3.0, -4.0, 5.0))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    src = tmp_path / f"scan{suffix}"
    sitk.WriteImage(img, str(src))
    ((data, kwargs, _),) = get_reader(str(src))(str(src))
    assert np.array_equal(data, arr)
    assert np.abs(kwargs["scale"]) == pytest.approx((2.5, 0.9, 0.7))
    mask = (arr % 3 == 0).astype(np.int32)
    out = write_labels(str(tmp_path / f"mask{suffix}"), mask, {"metadata": kwargs["metadata"]})
    saved = sitk.ReadImage(out[0])
    assert np.array_equal(sitk.GetArrayFromImage(saved), mask)
    assert np.allclose(saved.GetDirection(), img.GetDirection())
    assert np.allclose(saved.GetOrigin(), img.GetOrigin())
    assert np.allclose(saved.GetSpacing(), img.GetSpacing())


def test_manifests_list_the_formats_and_stay_identical():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    top = (root / "napari.yaml").read_bytes()
    assert top == (root / "src" / "napari_unetseg" / "napari.yaml").read_bytes()
    manifest = yaml.safe_load(top)["contributions"]
    (reader,) = manifest["readers"]
    assert reader["accepts_directories"] is True
    for pattern in ("*.nrrd", "*.nhdr", "*.mha", "*.mhd", "*.dcm", "*.nii.gz"):
        assert pattern in reader["filename_patterns"]
    (writer,) = manifest["writers"]
    assert set(writer["filename_extensions"]) >= {".nrrd", ".mha", ".dcm", ".nii.gz"}
