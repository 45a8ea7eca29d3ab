"""An oblique NIfTI stored in a non-axial voxel order, opened, painted and exported through
napari: shown the way its affine says, saved voxel for voxel in the file's order."""

from __future__ import annotations

import itertools
import re

import nibabel as nib
import numpy as np
import pytest

PLUGIN = "napari-unetseg"

# voxel i runs mostly anterior, j mostly inferior, k mostly towards the patient's right;
# about 10 degrees oblique, anisotropic
OBLIQUE = np.array(
    [
        [0.0, 0.2, 3.0, -50.0],
        [0.8, 0.0, -0.1, 10.0],
        [0.1, -0.75, 0.3, 4.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


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
