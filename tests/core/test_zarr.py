"""Zarr / OME-Zarr: lazy reading with geometry, missing chunks, atomic label writing."""

from __future__ import annotations

import os

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

from napari_unetseg.core.io import (  # noqa: E402
    OutputExistsError,
    VolumeIOError,
    is_zarr_path,
    meta_from_array,
    read_labels,
    read_volume,
)
from napari_unetseg.core.io.zarr import (  # noqa: E402
    open_zarr_volume,
    write_labels_zarr,
    zarr_output,
)


def _ome(path, data, axes, scale, translation=None, version="0.4", top_scale=None):
    """A hand-written OME-Zarr image: level 0 = ``data`` with the given axes."""
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    arr = group.create_array(
        "0", shape=data.shape, chunks=(1, *(4,) * (data.ndim - 1)), dtype=data.dtype
    )
    arr[:] = data
    transforms = [{"type": "scale", "scale": scale}]
    if translation is not None:
        transforms.append({"type": "translation", "translation": translation})
    kinds = {"t": "time", "c": "channel"}
    ms = {
        "axes": [
            {
                "name": a,
                "type": kinds.get(a, "space"),
                **({"unit": "micrometer"} if a in "zyx" else {}),
            }
            for a in axes
        ],
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }
    if top_scale is not None:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": top_scale}]
    if version == "0.4":
        ms["version"] = "0.4"
        group.attrs["multiscales"] = [ms]
    else:
        group.attrs["ome"] = {"version": version, "multiscales": [ms]}
    return path


def test_ome_zarr_is_read_lazily_with_scale_and_translation(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (2, 9, 10, 11)).astype(np.uint16)
    path = _ome(
        tmp_path / "img.ome.zarr",
        data,
        "czyx",
        [1, 2.0, 0.5, 0.25],
        translation=[0, 10.0, 20.0, 30.0],
        top_scale=[1, 2, 1, 1],
    )
    assert is_zarr_path(path)
    image, meta = read_volume(path)
    assert isinstance(image, da.Array)  # nothing read yet
    assert image.shape == (2, 9, 10, 11)
    assert image.dtype == np.uint16
    assert image.chunksize[1:] == (4, 4, 4)  # one dask chunk per store chunk
    np.testing.assert_array_equal(np.asarray(image[1, 2:5, :, 3:]), data[1, 2:5, :, 3:])
    # the multiscale's own scale applies after the level's: z spacing 2 * 2
    assert meta.spacing == (4.0, 0.5, 0.25)
    assert meta.source_format == "ome-zarr"
    assert meta.shape == (9, 10, 11)
    # affine for (i, j, k) = (x, y, z): diagonal spacing, translation scaled by the top level
    np.testing.assert_allclose(np.diag(meta.affine)[:3], [0.25, 0.5, 4.0])
    np.testing.assert_allclose(meta.affine[:3, 3], [30.0, 20.0, 20.0])
    assert meta.extra["units"] == ["micrometer"] * 3
    assert meta.extra["notes"] == []
    assert meta.channel_names == ["channel 0", "channel 1"]


def test_ngff_05_on_zarr_v3_drops_a_single_time_point(tmp_path):
    data = np.arange(1 * 6 * 8 * 8, dtype=np.float64).reshape(1, 6, 8, 8)
    path = _ome(tmp_path / "v3.zarr", data, "tzyx", [1, 3.0, 1.0, 1.0], version="0.5")
    volume = open_zarr_volume(path)
    assert volume.shape == (1, 6, 8, 8)
    assert volume[0, 1].dtype == np.float32  # float64 narrowed
    np.testing.assert_array_equal(volume[:, 2:4, 1:3, 5], data[:, 2:4, 1:3, 5])
    assert volume.meta.spacing == (3.0, 1.0, 1.0)


def test_time_series_is_refused(tmp_path):
    data = np.zeros((3, 4, 8, 8), np.uint8)
    path = _ome(tmp_path / "t.zarr", data, "tzyx", [1, 1, 1, 1])
    with pytest.raises(VolumeIOError, match="time series of 3 time points"):
        read_volume(path)


def test_plain_zarr_array_is_read_with_a_note(tmp_path):
    arr = zarr.create_array(
        str(tmp_path / "plain.zarr"), shape=(5, 6, 7), chunks=(2, 3, 3), dtype="i2"
    )
    arr[:] = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    image, meta = read_volume(tmp_path / "plain.zarr")
    assert image.shape == (1, 5, 6, 7)
    assert meta.spacing == (1.0, 1.0, 1.0)
    assert meta.source_format == "zarr"
    assert "no OME-Zarr (NGFF) metadata" in meta.extra["notes"][0]
    np.testing.assert_array_equal(np.asarray(image)[0], arr[:])


def test_group_with_several_arrays_and_no_metadata_is_refused(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=(4, 4, 4), dtype="u1")
    with pytest.raises(VolumeIOError, match="holding 2 arrays"):
        read_volume(tmp_path / "g.zarr")


def test_missing_chunk_is_a_one_line_error_naming_it(tmp_path):
    labels = np.ones((8, 8, 8), np.uint8)
    path = write_labels_zarr(labels, None, tmp_path / "l.ome.zarr", chunks=(4, 4, 4))
    os.remove(path / "0" / "1" / "0" / "1")
    with pytest.raises(VolumeIOError) as err:
        read_volume(path)
    message = str(err.value)
    assert "chunk '1/0/1'" in message
    assert "(1 of 8 chunks)" in message
    assert "\n" not in message
    # allowed: the missing chunk reads as the fill value
    volume = open_zarr_volume(path, allow_missing_chunks=True)
    assert volume[0, 4:, :4, 4:].sum() == 0
    assert volume[0, :4].sum() == 4 * 8 * 8


def test_labels_round_trip_with_scale_compressed_and_atomic(tmp_path):
    labels = (np.arange(6 * 10 * 12).reshape(6, 10, 12) % 5).astype(np.int32)
    meta = meta_from_array(labels.shape, (2.0, 0.5, 0.5))
    target = tmp_path / "out" / "labels.ome.zarr"
    write_labels_zarr(labels, meta, target, chunks=(4, 4, 4))
    assert sorted(os.listdir(target.parent)) == ["labels.ome.zarr"]  # no temporary left
    back, back_meta = read_labels(target)
    np.testing.assert_array_equal(np.asarray(back), labels)
    assert back_meta.spacing == (2.0, 0.5, 0.5)
    group = zarr.open_group(str(target), mode="r")
    assert "image-label" in group.attrs
    assert group["0"].chunks == (4, 4, 4)
    assert "blosc" in str(group["0"].compressors).lower()
    with pytest.raises(OutputExistsError, match="already exists"):
        write_labels_zarr(labels, meta, target)
    write_labels_zarr(labels * 0, meta, target, overwrite=True)
    assert np.asarray(read_labels(target)[0]).max() == 0


def test_failed_write_leaves_the_existing_store(tmp_path):
    target = tmp_path / "keep.ome.zarr"
    write_labels_zarr(np.ones((4, 4, 4), np.uint8), None, target)

    def failing_write():
        with zarr_output(target, overwrite=True) as tmp:
            write_labels_zarr(np.zeros((4, 4, 4), np.uint8), None, tmp)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_write()
    assert sorted(os.listdir(tmp_path)) == ["keep.ome.zarr"]
    assert np.asarray(read_labels(target)[0]).min() == 1


def test_volume_pickles_as_its_path(tmp_path):
    import pickle

    data = np.arange(2 * 4 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 4)
    path = _ome(tmp_path / "p.zarr", data, "czyx", [1, 1, 1, 1])
    volume = pickle.loads(pickle.dumps(open_zarr_volume(path)))
    np.testing.assert_array_equal(volume[...], data)
