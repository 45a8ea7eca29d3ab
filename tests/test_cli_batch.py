"""Batch commands driven as a user would: folders of scans in, folders and tables out."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.cli import main
from napari_unetseg.core.annotations import sparsify
from napari_unetseg.core.sample import make_sample
from unetseg_testing import tiny_settings

TINY = tiny_settings(train={"iterations": 2})


def _save(array, path, affine=None):
    affine = np.diag([0.8, 0.9, 1.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array).T, affine), path)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three two-channel scans in nnU-Net naming, their truths, and a tiny 2-channel
    model trained on the first."""
    d = tmp_path_factory.mktemp("batch")
    (d / "in").mkdir()
    (d / "truth").mkdir()
    for k in range(3):
        image, semantic, _ = make_sample(shape=(12, 24, 20), seed=k)
        _save(image.astype(np.float32), d / "in" / f"scan{k}_0000.nii.gz")
        _save((image * 0.5 + 3).astype(np.float32), d / "in" / f"scan{k}_0001.nii.gz")
        _save(semantic.astype(np.uint8), d / "truth" / f"scan{k}.nii.gz")
        if k == 0:
            ann = sparsify(semantic, fraction=0.3, axes="zyx", seed=0)
            _save(ann.astype(np.uint8), d / "ann0.nii.gz")
    (d / "tiny.json").write_text(json.dumps(TINY))
    model = d / "model.safetensors"
    argv = [
        "train",
        "--image",
        str(d / "in" / "scan0_0000.nii.gz"),
        "--image",
        str(d / "in" / "scan0_0001.nii.gz"),
        "--labels",
        str(d / "ann0.nii.gz"),
        "--out",
        str(model),
        "--config",
        str(d / "tiny.json"),
        "--quiet",
    ]
    assert main(argv) == 0
    return d, model


def test_predict_folder_keeps_each_geometry_skips_done_and_reports_broken(scans, tmp_path, capsys):
    d, model = scans
    inp = tmp_path / "in"
    inp.mkdir()
    for f in (d / "in").iterdir():
        (inp / f.name).write_bytes(f.read_bytes())
    (inp / "broken_0000.nii.gz").write_bytes(b"not a nifti file")
    (inp / "broken_0001.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    code = main(
        ["predict", "--model", str(model), "--input", str(inp), "--out", str(out), "--quiet"]
    )
    assert code == 1  # one case failed: non-zero, the others written
    text = capsys.readouterr()
    assert "3 case(s) done" in text.out
    assert "1 failed" in text.out
    assert "broken" in text.out
    for k in range(3):
        written = nib.load(out / f"scan{k}.nii.gz")
        assert np.allclose(written.affine, nib.load(inp / f"scan{k}_0000.nii.gz").affine)
        assert written.shape == (20, 24, 12)
    # a second run skips the cases already done
    stamp = (out / "scan0.nii.gz").stat().st_mtime_ns
    (inp / "broken_0000.nii.gz").unlink()
    (inp / "broken_0001.nii.gz").unlink()
    assert (
        main(["predict", "--model", str(model), "--input", str(inp), "--out", str(out), "--quiet"])
        == 0
    )
    assert "3 skipped" in capsys.readouterr().out
    assert (out / "scan0.nii.gz").stat().st_mtime_ns == stamp


def test_predict_folder_refuses_bad_folders_in_one_line(scans, tmp_path, capsys):
    d, model = scans
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(
            ["predict", "--model", str(model), "--input", str(empty), "--out", str(tmp_path / "o")]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unetseg predict: error" in err[0]
    assert (
        main(["predict", "--model", str(model), "--input", str(d / "in"), "--out", str(d / "in")])
        == 1
    )
    assert "input" in capsys.readouterr().err


def test_evaluate_folders_writes_per_case_csv_with_mean_and_regions(scans, tmp_path, capsys):
    d, _ = scans
    pred = tmp_path / "pred"
    pred.mkdir()
    for k in range(3):
        truth = np.asarray(nib.load(d / "truth" / f"scan{k}.nii.gz").dataobj)
        p = truth.copy()
        if k == 1:
            p[p == 2] = 1  # class 2 predicted as class 1 in one case
        _save(p.T, pred / f"scan{k}.nii.gz")
    out_csv, out_json = tmp_path / "per_case.csv", tmp_path / "summary.json"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--truth",
                str(d / "truth"),
                "--csv",
                str(out_csv),
                "--json",
                str(out_json),
                "--regions",
                "FG=1,2;B=2",
                "--quiet",
            ]
        )
        == 0
    )
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    per_case = [r for r in rows if r["case"].startswith("scan")]
    assert {r["case"] for r in per_case} == {"scan0", "scan1", "scan2"}
    b = {r["case"]: float(r["dice"]) for r in per_case if r["class"] == "region B"}
    assert b["scan0"] == 1.0
    assert b["scan1"] == 0.0
    fg = {r["case"]: float(r["dice"]) for r in per_case if r["class"] == "region FG"}
    assert fg["scan1"] == 1.0
    mean_b = next(r for r in rows if r["case"] == "mean" and r["class"] == "region B")
    assert float(mean_b["dice"]) == pytest.approx(2 / 3)
    assert float(per_case[0]["hd95"]) >= 0.0
    summary = json.loads(out_json.read_text())
    assert set(summary["cases"]) == {"scan0", "scan1", "scan2"}


def test_export_dataset_round_trips_through_the_nnunet_reader(scans, tmp_path, capsys):
    from napari_unetseg.core.dataset import read_nnunet_dataset

    d, _ = scans
    out = tmp_path / "Dataset001_Test"
    img = f"{d / 'in' / 'scan0_0000.nii.gz'},{d / 'in' / 'scan0_0001.nii.gz'}"
    assert (
        main(
            [
                "export-dataset",
                "--image",
                img,
                "--labels",
                str(d / "ann0.nii.gz"),
                "--out",
                str(out),
                "--class-names",
                "bright",
                "textured",
                "--channel-names",
                "A",
                "B",
            ]
        )
        == 0
    )
    info, cases = read_nnunet_dataset(out)
    assert info.channel_names == ["A", "B"]
    assert info.class_names == ["bright", "textured"]
    ann = np.asarray(nib.load(d / "ann0.nii.gz").dataobj).T
    assert np.array_equal(cases[0].annotation, ann)
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["labels"]["ignore"] == 3
    # the same folder again needs --overwrite
    assert (
        main(
            [
                "export-dataset",
                "--image",
                img,
                "--labels",
                str(d / "ann0.nii.gz"),
                "--out",
                str(out),
                "--class-names",
                "bright",
                "textured",
            ]
        )
        == 1
    )


def test_labels_in_another_geometry_are_refused(scans, tmp_path, capsys):
    d, _ = scans
    truth = np.asarray(nib.load(d / "truth" / "scan0.nii.gz").dataobj)
    shifted = tmp_path / "shifted.nii.gz"
    _save(truth.T, shifted, affine=np.diag([0.8, 0.9, 1.5, 1.0]) + np.eye(4) * 0.5)
    assert (
        main(["evaluate", "--pred", str(shifted), "--truth", str(d / "truth" / "scan0.nii.gz")])
        == 1
    )
    assert "another geometry" in capsys.readouterr().err
    argv = [
        "train",
        "--image",
        str(d / "in" / "scan0_0000.nii.gz"),
        "--image",
        str(d / "in" / "scan0_0001.nii.gz"),
        "--labels",
        str(shifted),
        "--out",
        str(tmp_path / "m.safetensors"),
        "--quiet",
    ]
    assert main(argv) == 1
    assert "another geometry" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_train_on_an_nnunet_dataset_then_predict_unseen_cases(scans, tmp_path, capsys):
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.checkpoint import load_checkpoint
    from napari_unetseg.core.dataset import write_nnunet_dataset

    d, _ = scans
    cases = []
    for k in range(3):
        image, semantic, _ = make_sample(shape=(12, 24, 20), seed=10 + k)
        ann = sparsify(semantic, fraction=0.3, axes="zyx", seed=k)
        cases.append(Case(f"c{k}", np.stack([image, image * 0.5]), ann, spacing=(1.5, 0.9, 0.8)))
    ds = tmp_path / "Dataset002_Blobs"
    write_nnunet_dataset(ds, cases, channel_names=["A", "B"], class_names=["bright", "tex"])
    cfg = tmp_path / "tiny.json"
    cfg.write_text(
        json.dumps(tiny_settings(train={"iterations": 2}, data={"validation_fraction": 0.3}))
    )
    model = tmp_path / "ds.safetensors"
    assert (
        main(["train", "--dataset", str(ds), "--out", str(model), "--config", str(cfg), "--quiet"])
        == 0
    )
    ckpt = load_checkpoint(model)
    assert ckpt.class_names == ["bright", "tex"]
    assert ckpt.config.model.in_channels == 2
    # the trained model segments a folder of unseen two-channel scans
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--input",
                str(d / "in"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [f"scan{k}.nii.gz" for k in range(3)]
    # bad input: the dataset folder without dataset.json is one clear line
    (ds / "dataset.json").unlink()
    assert main(["train", "--dataset", str(ds), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "dataset.json" in err[0]
