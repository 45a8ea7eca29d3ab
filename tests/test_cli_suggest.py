"""``unetseg suggest`` and ``unetseg predict --uncertainty``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.cli import main
from napari_unetseg.core.sample import make_sample
from unetseg_testing import tiny_settings

SHAPE = (12, 24, 20)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A NIfTI image, its annotation (two painted slices), a second channel file, a
    labels file of another shape and a tiny one-channel model."""
    from napari_unetseg.core.checkpoint import save_checkpoint
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.training import Trainer

    d = tmp_path_factory.mktemp("suggest")
    image, semantic, _ = make_sample(shape=SHAPE, seed=3)
    ann = np.zeros(SHAPE, dtype=np.uint8)
    ann[6] = semantic[6] + 1
    ann[:, 12] = semantic[:, 12] + 1
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    # NIfTI stores (x, y, z): transpose the (z, y, x) arrays
    nib.save(nib.Nifti1Image(image.T.astype(np.float32), affine), d / "image.nii.gz")
    nib.save(nib.Nifti1Image(image.T[::-1].astype(np.float32), affine), d / "image2.nii.gz")
    nib.save(nib.Nifti1Image(ann.T, affine), d / "ann.nii.gz")
    nib.save(nib.Nifti1Image(ann.T[:-1], affine), d / "ann_small.nii.gz")
    cfg = Config.from_dict(tiny_settings(train={"iterations": 2})).validate()
    ckpt = run_to_completion(Trainer(image[None], ann, cfg).run()).result
    save_checkpoint(ckpt, d / "model.safetensors")
    return d


def _args(d, *extra):
    return [
        "suggest",
        "--model",
        str(d / "model.safetensors"),
        "--image",
        str(d / "image.nii.gz"),
        "--quiet",
        *extra,
    ]


def test_suggest_writes_json(files, tmp_path, capsys):
    out = tmp_path / "s.json"
    code = main(
        _args(
            files,
            "--labels",
            str(files / "ann.nii.gz"),
            "--top",
            "4",
            "--method",
            "entropy",
            "--spread",
            "--json",
            str(out),
        )
    )
    assert code == 0
    rows = json.loads(out.read_text())
    assert 1 <= len(rows) <= 4
    for row in rows:
        assert set(row) == {"axis", "index", "score", "reason"}
        assert isinstance(row["axis"], int)
        assert isinstance(row["index"], int)
        assert isinstance(row["score"], float)
        assert 0 <= row["index"] < SHAPE[row["axis"]]
        assert (row["axis"], row["index"]) not in {(0, 6), (1, 12)}  # painted slices
    printed = capsys.readouterr().out
    assert "slice" in printed
    assert str(out) in printed
    # the printed table lists the same slices
    assert all(f"{r['index']:5d}" in printed for r in rows)


def test_suggest_labels_of_another_shape(files, capsys):
    code = main(_args(files, "--labels", str(files / "ann_small.nii.gz")))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1
    assert "ann_small.nii.gz has shape" in err[0]
    assert "annotation made for this scan" in err[0]


def test_suggest_model_of_another_channel_count(files, capsys):
    args = _args(files, "--labels", str(files / "ann.nii.gz"))
    args[args.index("--quiet") : args.index("--quiet")] = ["--image", str(files / "image2.nii.gz")]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1
    assert "trained on 1 channel(s)" in err[0]
    assert "hold(s) 2" in err[0]


def test_predict_writes_uncertainty(files, tmp_path):
    labels, unc = tmp_path / "pred.nii.gz", tmp_path / "unc.nii.gz"
    code = main(
        [
            "predict",
            "--model",
            str(files / "model.safetensors"),
            "--image",
            str(files / "image.nii.gz"),
            "--out",
            str(labels),
            "--uncertainty",
            str(unc),
            "--quiet",
        ]
    )
    assert code == 0
    u = nib.load(unc)
    assert u.shape == SHAPE[::-1]
    assert np.allclose(u.affine, nib.load(files / "image.nii.gz").affine)
    data = np.asarray(u.dataobj)
    assert data.dtype == np.float32
    assert data.min() >= 0.0
    assert data.max() <= 1.0
    assert data.max() > 0.0  # a 2-step model is unsure somewhere
