"""Fault suite of the Python API: readers, writers, model files and settings given
damaged or odd input. Each case expects a one-line error naming the file or setting, or
a correct acceptance; inputs are hashed before and after and never change.
Case ids start with their category (see scripts/count_faults.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from fault_files import (
    CONFIG_FAULTS,
    IMAGE_FAULTS,
    MODEL_FAULTS,
    SHAPE,
    TIFF_FAULTS,
    digest,
    make_fault,
    sample_image,
    sample_labels,
    valid_image,
    valid_labels,
)
from napari_unetseg.core import io as vio
from napari_unetseg.core.checkpoint import CheckpointError, load_checkpoint
from napari_unetseg.core.config import Config

FILE_FAULTS = {**IMAGE_FAULTS, **TIFF_FAULTS}
#: faults that read_volume accepts (the values are refused where they are used)
READABLE = {"all-nan", "all-inf"}


def _one_line(exc: BaseException, needle: str) -> None:
    text = str(exc)
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text
    assert needle in text, f"{needle!r} not in {text!r}"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """One tiny trained model file."""
    from napari_unetseg.core.checkpoint import save_checkpoint
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.training import Trainer
    from unetseg_testing import tiny_settings

    d = tmp_path_factory.mktemp("api_model")
    cfg = Config.from_dict(tiny_settings(train={"iterations": 1})).validate()
    result = run_to_completion(Trainer(sample_image()[None], sample_labels(), cfg).run())
    path = d / "model.safetensors"
    save_checkpoint(result.result, path)
    return path


@pytest.mark.parametrize("reader", ["read_volume", "read_labels", "read_channels"])
@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_api_read_fault(tmp_path, reader, fault):
    ext = ".tif" if fault in TIFF_FAULTS else ".nii.gz"
    bad = make_fault(FILE_FAULTS, fault, tmp_path, "bad" + ext)
    before = digest(bad)
    fn = {
        "read_volume": vio.read_volume,
        "read_labels": vio.read_labels,
        "read_channels": lambda p: vio.read_channels([p]),
    }[reader]
    if fault in READABLE and reader != "read_labels":
        image, _meta = fn(bad)
        assert image.shape == (1, *SHAPE)
        assert not np.isfinite(image).any()
    else:
        with pytest.raises(vio.VolumeIOError) as info:
            fn(bad)
        _one_line(info.value, "bad")
    assert digest(bad) == before


@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
def test_api_model_fault(tmp_path, model_file, fault):
    bad = MODEL_FAULTS[fault](tmp_path, "bad.safetensors", model_file)
    before, good = digest(bad), digest(model_file)
    if fault in ("nan-weights", "wrong-weight-shape"):
        # the file itself reads; the weights are refused before any use
        from napari_unetseg.core.classes import check_weights

        ckpt = load_checkpoint(bad)
        with pytest.raises(CheckpointError) as info:
            check_weights(ckpt)
        _one_line(info.value, "NaN" if fault == "nan-weights" else "do not fit")
    else:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(bad)
        _one_line(info.value, "bad.safetensors")
    assert digest(bad) == before
    assert digest(model_file) == good


def _plan(cfg):
    from napari_unetseg.core.planning import make_plan

    return make_plan(SHAPE, (2.0, 1.0, 1.0), 1, cfg)


def _device(cfg):
    from napari_unetseg.core.device import select_device

    return select_device(cfg.train.device)


LATER = {"patch-size-negative": _plan, "device-unknown": _device}


@pytest.mark.parametrize("fault", list(CONFIG_FAULTS))
def test_api_config_fault(tmp_path, fault):
    text, needle = CONFIG_FAULTS[fault]
    path = tmp_path / "tiny.json"
    path.write_text(text)
    if fault in LATER:  # a valid setting for the file; refused where it is used
        cfg = Config.load(path).validate()
        with pytest.raises(ValueError) as info:
            LATER[fault](cfg)
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            Config.load(path).validate()
    _one_line(info.value, needle)
    assert path.read_text() == text


def _image_case(kind: str):
    base = sample_image()
    return {
        "complex": (base.astype(np.complex64) * 1j, "complex"),
        "beyond-float32": (base.astype(np.float64) * 1e300, "float32 range"),
        "negative-beyond-float32": (-np.abs(base.astype(np.float64)) * 1e300, "float32"),
        "object-dtype": (base.astype(object), "dtype"),
        "string-dtype": (base.astype(str), "dtype"),
        "wrong-shape": (base[:, :5], "shape"),
        "too-many-axes": (base[None, None], "shape"),
        "nan-probabilities": (np.where(base > 0, np.nan, base), None),
        "float64-in-range": (base.astype(np.float64) * 1e30, None),
        "bool-mask": (base > 0, None),
        "int64": (base.astype(np.int64), None),
        "channels-first": (np.stack([base, -base]), None),
    }[kind]


IMAGE_WRITES = [
    "complex",
    "beyond-float32",
    "negative-beyond-float32",
    "object-dtype",
    "string-dtype",
    "wrong-shape",
    "too-many-axes",
    "nan-probabilities",
    "float64-in-range",
    "bool-mask",
    "int64",
    "channels-first",
]


@pytest.mark.parametrize("suffix", [".nii.gz", ".tif"])
@pytest.mark.parametrize("kind", IMAGE_WRITES)
def test_api_write_image_fault(tmp_path, kind, suffix):
    data, needle = _image_case(kind)
    meta = vio.meta_from_array(shape=SHAPE, spacing=(2.0, 1.0, 1.0))
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"old")  # a refusal leaves an existing file as it was
    if needle is not None:
        with pytest.raises(vio.VolumeIOError) as info:
            vio.write_image(data, meta, out, overwrite=True)
        _one_line(info.value, needle)
        assert out.read_bytes() == b"old"
    else:
        vio.write_image(data, meta, out, overwrite=True)
        back, _ = vio.read_volume(out)
        want = np.asarray(data, dtype=np.float32)
        want = want if want.ndim == 4 else want[None]
        np.testing.assert_array_equal(back, want)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


LABEL_WRITES = {
    "negative": (lambda a: a.astype(np.int16) - 2, None),
    "fractions": (lambda a: a + 0.5, "non-integer"),
    "wrong-shape": (lambda a: a[:, :4], "shape"),
    "big-ids": (lambda a: a.astype(np.int64) * 70_000, None),
    "bool": (lambda a: a > 0, None),
    "whole-floats": (lambda a: a.astype(np.float64), None),
}


@pytest.mark.parametrize("suffix", [".nii.gz", ".tif"])
@pytest.mark.parametrize("kind", list(LABEL_WRITES))
def test_api_write_labels_fault(tmp_path, kind, suffix):
    make, needle = LABEL_WRITES[kind]
    data = make(sample_labels())
    meta = vio.meta_from_array(shape=SHAPE, spacing=(2.0, 1.0, 1.0))
    out = tmp_path / f"out{suffix}"
    if needle is not None:
        with pytest.raises(vio.VolumeIOError) as info:
            vio.write_labels(data, meta, out)
        _one_line(info.value, needle)
        assert not out.exists()
    else:
        vio.write_labels(data, meta, out)
        back, _ = vio.read_labels(out)
        np.testing.assert_array_equal(back, np.asarray(data).astype(np.int64))


@pytest.mark.parametrize(
    "kind", ["other-spacing", "other-shape", "labels-as-channel", "three-files", "duplicate"]
)
def test_api_read_channels_mismatch(tmp_path, kind):
    a = valid_image(tmp_path, "a.nii.gz")
    if kind == "other-spacing":
        import nibabel as nib

        b = tmp_path / "b.nii.gz"
        nib.save(nib.Nifti1Image(sample_image().T, np.diag([1.0, 1.0, 5.0, 1.0])), b)
    elif kind == "other-shape":
        import nibabel as nib

        b = tmp_path / "b.nii.gz"
        nib.save(nib.Nifti1Image(sample_image()[:3].T, np.diag([1.0, 1.0, 2.0, 1.0])), b)
    elif kind == "labels-as-channel":
        b = valid_labels(tmp_path, "b.nii.gz")
    elif kind == "three-files":
        b = valid_image(tmp_path, "b.nii.gz")
        c = valid_image(tmp_path, "c.nii.gz")
        image, _ = vio.read_channels([a, b, c])
        assert image.shape == (3, *SHAPE)
        return
    else:
        b = a
    before = digest(a), digest(b)
    if kind in ("labels-as-channel", "duplicate"):
        image, _ = vio.read_channels([a, b])  # any file is a valid channel
        assert image.shape == (2, *SHAPE)
    else:
        with pytest.raises(vio.VolumeIOError) as info:
            vio.read_channels([a, b])
        _one_line(info.value, "b.nii.gz")
    assert (digest(a), digest(b)) == before
