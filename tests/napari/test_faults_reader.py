"""Fault suite of the napari reader: damaged and odd files give napari a clear one-line
error (or None for files the plugin does not handle), never a traceback from deep inside,
and files that read give layer data napari can construct. Needs napari but no display.
Case ids start with their category (see scripts/count_faults.py).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("napari")

import napari.layers

from fault_files import IMAGE_FAULTS, SHAPE, TIFF_FAULTS, digest, make_fault, valid_image
from napari_unetseg._napari.reader import get_reader
from napari_unetseg.core.io import VolumeIOError

FILE_FAULTS = {**IMAGE_FAULTS, **TIFF_FAULTS}
READABLE = {"all-nan", "all-inf"}


def _construct(layer_data: list[tuple]) -> list:
    """Build the napari layers as napari does from a reader's (data, kwargs, type)."""
    made = []
    for data, kwargs, kind in layer_data:
        cls = {"image": napari.layers.Image, "labels": napari.layers.Labels}[kind]
        made.append(cls(data, **kwargs))
    return made


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_reader_file_fault(tmp_path, fault):
    ext = ".tif" if fault in TIFF_FAULTS else ".nii.gz"
    bad = make_fault(FILE_FAULTS, fault, tmp_path, "bad" + ext)
    before = digest(bad)
    reader = get_reader(str(bad))
    if fault == "folder-named-nifti":
        assert reader is None  # a folder is not this plugin's to open
    elif fault in READABLE:
        layers = _construct(reader(str(bad)))
        assert layers[0].data.shape == SHAPE
    else:
        with pytest.raises(VolumeIOError) as info:
            reader(str(bad))
        text = str(info.value)
        assert "\n" not in text.strip()
        assert "bad" in text
    assert digest(bad) == before


@pytest.mark.parametrize("name", ["notes.txt", "photo.png", "data.csv", "scan.nii.bak"])
def test_reader_not_handled(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    assert get_reader(str(path)) is None
    assert get_reader([str(path), str(valid_image(tmp_path))]) is None
    assert get_reader(object()) is None


def test_reader_list_with_one_damaged_file_names_it(tmp_path):
    good = valid_image(tmp_path)
    bad = make_fault(IMAGE_FAULTS, "truncated-half", tmp_path, "bad.nii.gz")
    reader = get_reader([str(good), str(bad)])
    with pytest.raises(VolumeIOError, match=r"bad\.nii\.gz"):
        reader([str(good), str(bad)])


def _rgb_file(tmp_path, kind: str):
    path = tmp_path / f"{kind}.nii.gz"
    if kind in ("rgb24", "rgba32"):
        fields = "RGBA" if kind == "rgba32" else "RGB"
        arr = np.zeros((7, 6, 5), dtype=[(c, "u1") for c in fields])
        for k, c in enumerate(fields):
            arr[c] = 40 * (k + 1)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
        return path, len(fields)
    arr = np.zeros((7, 6, 5, 1, 3), np.uint8)
    arr[..., 1] = 99
    img = nib.Nifti1Image(arr, np.eye(4))
    img.header.set_intent("vector")
    nib.save(img, path)
    return path, 3


@pytest.mark.parametrize("kind", ["rgb24", "rgba32", "vector-intent"])
def test_reader_rgb_nifti_opens_one_layer_per_colour(tmp_path, kind):
    path, n = _rgb_file(tmp_path, kind)
    before = digest(path)
    layers = _construct(get_reader(str(path))(str(path)))
    assert len(layers) == n
    assert all(layer.data.shape == (5, 6, 7) for layer in layers)
    assert all(layer.data.dtype == np.uint8 for layer in layers)
    if kind != "vector-intent":
        assert [la.name for la in layers][:3] == [f"{kind} [{c}]" for c in "RGB"]
        assert [int(la.data.max()) for la in layers] == [40 * (k + 1) for k in range(n)]
    else:
        assert int(layers[1].data.max()) == 99
    assert digest(path) == before
