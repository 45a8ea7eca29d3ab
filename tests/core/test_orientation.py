"""Anatomical display transform: signed mm scale, LPI world axes, axial dims order."""

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.core.io import VolumeMeta, read_volume
from napari_unetseg.core.orientation import display_frame, format_ras, ras_position


def _meta(affine, shape=(6, 12, 10), fmt="nifti"):
    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return VolumeMeta(
        spacing=tuple(float(z) for z in zooms[::-1]), affine=np.asarray(affine), source_format=fmt
    ), shape


def test_ras_canonical_scan_is_negated_into_lpi():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (-10, 20, 5)
    meta, _ = _meta(affine)
    frame = display_frame(meta)
    assert frame.axis_labels == ("I", "P", "L")
    np.testing.assert_allclose(frame.scale, (-4.0, -3.0, -2.0))
    np.testing.assert_allclose(frame.translate, (-5.0, -20.0, 10.0))
    assert frame.order == (0, 1, 2)


def test_flipped_and_permuted_axes():
    # voxel i runs towards posterior, j towards superior, k towards the patient's left
    affine = np.array([[0, 0, -1.5, 0], [-0.8, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1.0]])
    meta, _ = _meta(affine)
    frame = display_frame(meta)
    # array axes (k, j, i) -> R (flipped), S, A (flipped)
    assert frame.ras_axes == (0, 2, 1)
    assert frame.axis_labels == ("L", "I", "P")
    np.testing.assert_allclose(frame.scale, (1.5, -2.0, 0.8))
    assert frame.order == (1, 2, 0)


@pytest.mark.parametrize("fmt", ["tiff", "array"])
def test_no_anatomy_no_frame(fmt):
    meta, _ = _meta(np.eye(4), fmt=fmt)
    assert display_frame(meta) is None
    assert ras_position(meta, (1, 2, 3)) is None


def test_ras_position_uses_the_whole_oblique_affine(tmp_path):
    oblique = np.array(
        [[0.0, 0.2, 3.0, -50.0], [0.8, 0.0, -0.1, 10.0], [0.1, -0.75, 0.3, 4.0], [0, 0, 0, 1]]
    )
    path = tmp_path / "o.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 6), np.float32), oblique), path)
    _, meta = read_volume(path)
    z, y, x = 2, 7, 3
    expected = oblique @ np.array([x, y, z, 1.0])
    np.testing.assert_allclose(ras_position(meta, (z, y, x)), expected[:3])
    assert format_ras((-1.25, 3.0, 0.0)) == "L 1.2  A 3.0  S 0.0 mm"
