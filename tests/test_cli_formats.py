"""``unetseg predict`` on a DICOM series writes a DICOM SEG named by the model's classes."""

import numpy as np
import pytest
import torch

from napari_unetseg.cli import main
from napari_unetseg.core.checkpoint import Checkpoint, save_checkpoint
from napari_unetseg.core.config import Config
from napari_unetseg.core.data import Normalizer
from napari_unetseg.core.io import read_dicom_seg, read_labels
from napari_unetseg.core.io.dicom import series_datasets
from napari_unetseg.core.model import UNet

pytest.importorskip("highdicom")
from dicom_testing import make_series


@pytest.fixture
def model(tmp_path):
    """An untrained 3-output model (classes liver, lesion): predictions need not be good."""
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.base_width = 4
    cfg.model.depth = 2
    cfg.model.num_classes = 3
    cfg.data.patch_size = (8, 16, 16)
    cfg.class_names = ["liver", "lesion"]
    ckpt = Checkpoint(
        config=cfg,
        state_dict=UNet(cfg.model).state_dict(),
        normalizer=Normalizer("zscore", [0.0], [500.0]),
        class_names=["liver", "lesion"],
    )
    return save_checkpoint(ckpt, tmp_path / "m.safetensors")


def test_predict_dicom_series_to_seg_and_nrrd(model, tmp_path, capsys):
    folder = tmp_path / "ct"
    _, uid = make_series(folder, n=6)
    seg = tmp_path / "pred.dcm"
    base = ["predict", "--model", str(model), "--image", str(folder), "--quiet"]
    assert main([*base, "--out", str(seg)]) == 0
    assert main([*base, "--out", str(tmp_path / "pred.nrrd")]) == 0
    uids = [str(d.SOPInstanceUID) for d in series_datasets(folder)]
    labels, names, ref = read_dicom_seg(seg, uids)
    assert ref == uid
    assert names == ["liver", "lesion"]
    same, _ = read_labels(tmp_path / "pred.nrrd")
    assert np.array_equal(labels, same)
    # A SEG for an image that is not DICOM is refused in one line.
    capsys.readouterr()
    nrrd_input = [*base[:4], str(tmp_path / "pred.nrrd"), "--quiet"]
    assert main([*nrrd_input, "--out", str(tmp_path / "x.dcm")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.endswith("write them as NIfTI, NRRD or MetaImage instead.")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x.dcm").exists()
