"""bioimage.io export: a tiny trained model becomes a package that bioimageio.core tests."""

import sys
import zipfile

import numpy as np
import pytest
import yaml

from napari_unetseg.cli import main
from napari_unetseg.core.bioimageio import BioimageioError, export_bioimageio
from napari_unetseg.core.checkpoint import save_checkpoint
from napari_unetseg.core.config import Config
from napari_unetseg.core.io import meta_from_array, write_image
from napari_unetseg.core.sample import make_sample
from unetseg_testing import tiny_settings

pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny semantic model trained for 3 iterations, its file and training image."""
    from napari_unetseg.core.training import train

    d = tmp_path_factory.mktemp("bioimageio")
    image, semantic, _ = make_sample(shape=(12, 24, 20), seed=3)
    annotation = np.zeros_like(semantic, dtype=np.uint8)
    annotation[::4] = semantic[::4] + 1  # every fourth slice annotated
    cfg = Config.from_dict(tiny_settings(train={"iterations": 3})).validate()
    cfg.class_names = ["blob"]
    ckpt = train(image[None].astype(np.float32), annotation, cfg)
    model = save_checkpoint(ckpt, d / "tiny.safetensors")
    img = write_image(image.astype(np.float32), meta_from_array(image.shape), d / "img.nii.gz")
    return ckpt, model, img


@pytest.mark.slow
def test_cli_export_passes_bioimageio_test_model(trained, tmp_path, capsys):
    from bioimageio.core import test_model

    _, model, img = trained
    out = tmp_path / "model.zip"
    args = ["export-bioimageio", "--model", str(model), "--out", str(out)]
    assert main([*args, "--test-image", str(img), "--author", "Ada Lovelace", "--quiet"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    summary = test_model(str(out))
    assert summary.status == "passed", summary.format()

    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert {"weights_torchscript.pt", "weights_state_dict.pt", "README.md"} <= names
    assert {"test_input.npy", "test_output.npy"} <= names
    assert rdf["format_version"].startswith("0.5")
    assert rdf["license"] == "MIT"
    assert rdf["authors"] == [{"name": "Ada Lovelace"}]
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert set(rdf["weights"]) == {"torchscript", "pytorch_state_dict"}
    (inp,), (outp,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "z", "y", "x"]
    assert outp["postprocessing"][0]["id"] == "softmax"
    channels = outp["axes"][1]["channel_names"]
    assert channels[:2] == ["background", "blob"]
    assert len(channels) == trained[0].num_outputs
    # An existing package is kept unless --overwrite.
    assert main([*args, "--quiet"]) != 0
    assert main([*args, "--quiet", "--overwrite"]) == 0


def test_preprocessing_follows_the_models_normaliser(trained, tmp_path):
    ckpt, _, _ = trained
    out = export_bioimageio(ckpt, tmp_path / "m.zip")
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        x = np.load(z.open("test_input.npy"))
        y = np.load(z.open("test_output.npy"))
    steps = [s for s in rdf["inputs"][0]["preprocessing"] if s["id"] != "ensure_dtype"]
    norm = ckpt.normalizer
    if norm.per_image:
        assert [s["id"] for s in steps] == ["zero_mean_unit_variance"]
    else:
        assert steps[-1]["id"] == "fixed_zero_mean_unit_variance"
        assert steps[-1]["kwargs"]["mean"] == pytest.approx(norm.offsets)
    assert x.shape[:2] == (1, 1)
    assert y.shape == (1, ckpt.num_outputs, *x.shape[2:])
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)  # softmax output


def test_bad_requests_are_one_line(trained, tmp_path, monkeypatch):
    ckpt, _, _ = trained
    with pytest.raises(BioimageioError, match=r"m\.yaml: a bioimage\.io package is a \.zip"):
        export_bioimageio(ckpt, tmp_path / "m.yaml")
    with pytest.raises(BioimageioError, match=r"smaller than the model's smallest input"):
        export_bioimageio(ckpt, tmp_path / "m.zip", test_image=np.zeros((2, 3, 3), np.float32))
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    with pytest.raises(BioimageioError) as info:
        export_bioimageio(ckpt, tmp_path / "m.zip")
    assert str(info.value) == (
        'exporting to bioimage.io needs bioimageio.spec: pip install "napari-unetseg[bioimageio]"'
    )
    assert list(tmp_path.iterdir()) == []


def test_export_command_prints_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export-bioimageio", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: unetseg export-bioimageio")
    assert "--test-image" in out
