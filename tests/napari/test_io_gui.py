"""Open and save through napari itself: the plugin's reader, writer and sample data."""

from __future__ import annotations

import itertools
import re

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.core.io import VolumeMeta

PLUGIN = "napari-unetseg"

OBLIQUE = np.array(
    [
        [0.0, 0.2, 3.0, -50.0],
        [0.8, 0.0, -0.1, 10.0],
        [0.1, -0.75, 0.3, 4.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture
def scan(tmp_path):
    """Anisotropic, oblique NIfTI in file order (i, j, k) = (10, 12, 6)."""
    data = np.random.default_rng(0).normal(size=(10, 12, 6)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, OBLIQUE), path)
    return path, data


@pytest.mark.gui
def test_open_paint_and_save_keeps_source_geometry(make_napari_viewer, scan, tmp_path):
    path, data = scan
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1
    image = layers[0]
    assert image._type_string == "image"
    assert image.data.shape == (6, 12, 10)
    zooms = nib.load(path).header.get_zooms()
    assert np.allclose(np.abs(image.scale), zooms[::-1])  # signed: radiological display
    meta = image.metadata["unetseg_meta"]
    assert isinstance(meta, VolumeMeta)
    assert np.array_equal(meta.affine, nib.load(path).affine)
    assert image.metadata["unetseg_source"] == str(path)

    # A labels layer painted on the image, without any metadata of its own.
    mask = np.zeros(image.data.shape, dtype=np.int32)
    mask[2, 3:7, 4:9] = 1
    mask[4, 0, 0] = 2
    labels = viewer.add_labels(mask, name="painted", scale=image.scale)
    labels.metadata["unetseg_meta"] = meta
    out = tmp_path / "painted.nii.gz"
    written = labels.save(str(out), plugin=PLUGIN)
    assert [str(p) for p in written] == [str(out)]
    saved = nib.load(out)
    assert np.array_equal(saved.affine, nib.load(path).affine)
    assert saved.shape == data.shape
    vox = saved.get_fdata()
    assert vox[4, 3, 2] == 1  # array (z=2, y=3, x=4) is file (i=4, j=3, k=2)
    assert vox[0, 0, 4] == 2
    assert vox.sum() == mask.sum()


@pytest.mark.gui
def test_writer_finds_geometry_from_matching_image_layer(make_napari_viewer, scan, tmp_path):
    from napari_unetseg._napari.writer import meta_for_layer

    path, _ = scan
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    labels = viewer.add_labels(np.zeros((6, 12, 10), dtype=np.uint8))
    meta = meta_for_layer(labels, viewer)
    assert meta.source_format == "nifti"
    assert np.array_equal(meta.affine, nib.load(path).affine)
    other = viewer.add_labels(np.zeros((3, 4, 5), dtype=np.uint8), scale=(2.0, 1.0, 1.0))
    fallback = meta_for_layer(other, viewer)
    assert fallback.source_format == "array"
    assert fallback.spacing == (2.0, 1.0, 1.0)


@pytest.mark.gui
def test_masks_open_as_labels_and_channels_as_separate_layers(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    mask = np.zeros((5, 6, 7), dtype=np.uint8)
    mask[1:3, 2:4, 3:6] = 2
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "case.nii.gz")
    (layer,) = viewer.open(str(tmp_path / "case.nii.gz"), plugin=PLUGIN)
    assert layer._type_string == "labels"
    assert np.array_equal(layer.data, mask.T)

    four = np.random.default_rng(1).normal(size=(5, 6, 7, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(four, np.eye(4)), tmp_path / "multi.nii.gz")
    layers = viewer.open(str(tmp_path / "multi.nii.gz"), plugin=PLUGIN)
    assert [ly.name for ly in layers] == [f"multi [channel {c}]" for c in range(3)]
    assert np.array_equal(layers[2].data, four[..., 2].T)


@pytest.mark.gui
def test_corrupt_file_reports_an_error(make_napari_viewer, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=r"broken\.nii\.gz"):
        viewer.open(str(bad), plugin=PLUGIN)


@pytest.mark.gui
def test_sample_data_opens_with_geometry(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "blobs3d")
    names = [ly.name for ly in viewer.layers]
    assert names[0] == "blobs3d"
    assert len(viewer.layers) == 3
    image, semantic, instances = viewer.layers
    assert image.data.shape == semantic.data.shape == instances.data.shape == (64, 128, 128)
    assert semantic._type_string == instances._type_string == "labels"
    assert set(np.unique(semantic.data).tolist()) == {0, 1, 2}
    assert image.metadata["unetseg_meta"].shape == (64, 128, 128)


@pytest.mark.gui
def test_file_save_of_bare_labels_uses_the_open_image_geometry(make_napari_viewer, scan, tmp_path):
    path, _ = scan
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    labels = viewer.add_labels(np.ones((6, 12, 10), dtype=np.uint8), name="bare")
    out = tmp_path / "bare.nii.gz"
    viewer.layers.selection = {labels}
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    saved = nib.load(out)
    assert np.array_equal(saved.affine, nib.load(path).affine)
    assert saved.shape == (10, 12, 6)


# ----------------------------------------------------------------- without a viewer


def test_get_reader_declines_what_it_does_not_handle(tmp_path):
    from napari_unetseg._napari.reader import get_reader

    (tmp_path / "folder.nii.gz").mkdir()
    for path in ("image.png", str(tmp_path / "folder.nii.gz"), None, 42, [], ["a.nii", "b.jpg"]):
        assert get_reader(path) is None
    assert callable(get_reader("scan.nii.gz"))
    assert callable(get_reader(["a.tif", "b.TIFF"]))


def test_reader_function_returns_layer_tuples_without_a_viewer(scan):
    from napari_unetseg._napari.reader import get_reader

    path, data = scan
    ((array, kwargs, kind),) = get_reader(str(path))(str(path))
    assert kind == "image"
    assert np.array_equal(array, data.T)
    assert kwargs["name"] == "scan"
    assert np.allclose(np.abs(kwargs["scale"]), nib.load(path).header.get_zooms()[::-1])


def test_looks_like_mask():
    from napari_unetseg._napari.reader import looks_like_mask

    few = np.zeros((4, 5, 6), np.int16)
    few[1, 1, 1] = 3
    ct = np.random.default_rng(0).integers(-1000, 2000, size=(4, 5, 6)).astype(np.int16)
    assert looks_like_mask(few)
    assert not looks_like_mask(ct)
    assert looks_like_mask(ct.clip(0), "liver_seg.nii.gz")
    assert not looks_like_mask(few.astype(np.float32), "mask.nii.gz")


def test_writer_without_viewer_falls_back_to_scale(tmp_path):
    from napari_unetseg._napari.writer import meta_for_layer, write_labels

    mask = np.zeros((3, 4, 5), np.int32)
    mask[1, 2, 3] = 7
    attrs = {"name": "m", "scale": (2.5, 1.0, 0.5), "metadata": {}}
    meta = meta_for_layer(attrs, shape=mask.shape)
    assert meta.spacing == (2.5, 1.0, 0.5)
    (written,) = write_labels(str(tmp_path / "m"), mask, attrs)
    assert written.endswith("m.nii.gz")
    img = nib.load(written)
    assert np.allclose(img.affine, np.diag([0.5, 1.0, 2.5, 1.0]))
    assert img.get_fdata()[3, 2, 1] == 7


def test_writer_refuses_mask_of_other_shape_than_its_image(scan, tmp_path):
    from napari_unetseg._napari.writer import write_labels
    from napari_unetseg.core.io import VolumeIOError, read_volume

    path, _ = scan
    _, meta = read_volume(path)
    attrs = {"scale": meta.spacing, "metadata": {"unetseg_meta": meta}}
    with pytest.raises(VolumeIOError, match="voxel for voxel"):
        write_labels(str(tmp_path / "m.nii.gz"), np.zeros((6, 12, 9), np.uint8), attrs)


@pytest.mark.gui
def test_nifti_opens_with_this_plugin_without_asking(make_napari_viewer, scan):
    """napari's builtin reader also claims *.nii(.gz); once the plugin is open, NIfTI
    files open with its reader without napari's "Choose reader" dialog."""
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    from napari_unetseg._napari.widgets.annotate import AnnotateWidget

    path, _data = scan
    settings = get_settings().plugins
    settings.extension2reader = {}
    viewer = make_napari_viewer()
    # plugin=None is what File > Open does: with two readers and no preference napari
    # raises MultipleReaderError, on which the window shows its "Choose reader" dialog
    with pytest.raises(MultipleReaderError):
        viewer.open(str(path), plugin=None)
    viewer.window.add_dock_widget(AnnotateWidget(viewer))
    assert settings.extension2reader["*.nii.gz"] == PLUGIN
    (layer,) = viewer.open(str(path), plugin=None)
    assert isinstance(layer.metadata["unetseg_meta"], VolumeMeta)
    # a reader the user chose is kept
    settings.extension2reader = {"*.nii": "napari"}
    AnnotateWidget(viewer).close()
    assert settings.extension2reader["*.nii"] == "napari"
    assert settings.extension2reader["*.nii.gz"] == PLUGIN


@pytest.mark.gui
def test_oblique_scan_is_shown_by_its_affine_painted_and_exported(make_napari_viewer, tmp_path):
    from napari_unetseg._napari.widgets.annotate import AnnotateWidget
    from napari_unetseg._napari.widgets.orientation import cursor_text
    from napari_unetseg.core.orientation import format_ras

    data = np.random.default_rng(0).normal(size=(10, 12, 6)).astype(np.float32)
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, OBLIQUE), path)

    viewer = make_napari_viewer()
    annotate = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(annotate)
    (image,) = viewer.open(str(path), plugin=PLUGIN)
    assert image.data.shape == (6, 12, 10)  # the file's voxel order, (k, j, i)

    # the 2D view slices along the inferior-superior axis (array axis 1 = j) and shows
    # anterior-posterior rows and left-right columns
    assert tuple(viewer.dims.order) == (1, 2, 0)
    assert tuple(viewer.dims.axis_labels) == ("L", "I", "P")
    assert all(str(u) == "millimeter" for u in image.units)

    # every world axis follows the affine: world = -RAS along the axis it is named after
    corners = np.array(list(itertools.product((0, 5), (0, 11), (0, 9))), float)  # (z, y, x)
    world = np.array([image.data_to_world(c) for c in corners])
    ras = (OBLIQUE @ np.c_[corners[:, ::-1], np.ones(len(corners))].T).T[:, :3]
    for axis, label in enumerate(("L", "I", "P")):
        ras_axis = "LPI".index(label)
        corr = np.corrcoef(world[:, axis], -ras[:, ras_axis])[0, 1]
        assert corr > 0.95, (label, corr)
    # anterior is up: rows (world axis 2) decrease towards anterior; the patient's right is
    # on the left: columns (world axis 0) decrease towards the right
    front, back = image.data_to_world((2, 5, 9)), image.data_to_world((2, 5, 0))
    assert front[2] < back[2]
    right, left = image.data_to_world((5, 5, 4)), image.data_to_world((0, 5, 4))
    assert right[0] < left[0]

    # the cursor shows the exact RAS position of the voxel under it
    viewer.cursor.position = tuple(image.data_to_world((3, 7, 4)))
    expected = (OBLIQUE @ np.array([4, 7, 3, 1.0]))[:3]
    text = cursor_text(viewer)
    assert text.endswith("(voxel 3, 7, 4 of oblique)")
    letters = re.findall(r"([RLAPSI]) (\d+\.\d)", text)
    assert [a for a, _ in letters] == [w[0] for w in format_ras(expected).split("  ")[:3]]
    signed = [float(v) * (1 if a in "RAS" else -1) for a, v in letters]
    np.testing.assert_allclose(signed, expected, atol=0.051)
    annotate._show_cursor()
    assert annotate.cursor_label.text() == text

    # paint on a new annotation layer (it lies on the scan), export, compare with nibabel
    layer = annotate.new_annotation_layer(image)
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)
    assert tuple(layer.axis_labels) == tuple(image.axis_labels)
    painted = np.zeros(layer.data.shape, dtype=layer.data.dtype)
    painted[3, 7, 4] = 2
    painted[5, 0, 9] = 1
    layer.data = painted
    out = tmp_path / "painted.nii.gz"
    layer.save(str(out), plugin=PLUGIN)
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, nib.load(path).affine)
    vox = np.asarray(saved.dataobj)
    assert vox.shape == data.shape
    assert vox[4, 7, 3] == 2  # array (z, y, x) = (k, j, i)
    assert vox[9, 0, 5] == 1
    assert int((vox > 0).sum()) == 2
