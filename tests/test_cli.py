"""The ``unetseg`` command line, driven as a user would: files in, files and lines out."""

import json
import pickle
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.cli import main
from napari_unetseg.core.io import VolumeMeta, write_labels
from napari_unetseg.core.postprocess import instance_labels
from napari_unetseg.core.sample import make_sample
from unetseg_testing import tiny_settings

TINY = tiny_settings(train={"iterations": 3})


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A small NIfTI image with an oblique affine, its dense truth, and a tiny config."""
    d = tmp_path_factory.mktemp("cli")
    image, semantic, instances = make_sample(shape=(12, 24, 20), seed=3)
    affine = np.array(
        [[0.0, 0.0, 1.5, 10.0], [0.0, 0.8, 0.1, -4.0], [0.7, 0.0, 0.0, 2.0], [0, 0, 0, 1]]
    )
    # NIfTI stores (i, j, k) = (x, y, z): transpose our (z, y, x) arrays.
    nib.save(nib.Nifti1Image(image.T.astype(np.float32), affine), d / "image.nii.gz")
    nib.save(nib.Nifti1Image(semantic.T.astype(np.uint8), affine), d / "truth.nii.gz")
    nib.save(nib.Nifti1Image(instances.T.astype(np.int32), affine), d / "inst.nii.gz")
    (d / "tiny.json").write_text(json.dumps(TINY))
    return d, affine, semantic


def test_sparsify_train_predict_evaluate_round_trip(volume, tmp_path, capsys):
    d, affine, semantic = volume
    sparse = tmp_path / "sparse.nii.gz"
    assert (
        main(
            [
                "sparsify",
                "--labels",
                str(d / "truth.nii.gz"),
                "--out",
                str(sparse),
                "--fraction",
                "0.25",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    ann = nib.load(sparse)
    assert np.allclose(ann.affine, affine)
    ann_zyx = np.asarray(ann.dataobj).T
    annotated = ann_zyx > 0
    assert 0 < annotated.mean() < 1
    # inside annotated voxels the annotation is truth + 1
    assert np.array_equal(ann_zyx[annotated], semantic[annotated] + 1)

    model = tmp_path / "model.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(d / "image.nii.gz"),
                "--labels",
                str(sparse),
                "--out",
                str(model),
                "--config",
                str(d / "tiny.json"),
                "--quiet",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    assert model.stat().st_size > 0

    pred = tmp_path / "pred.nii.gz"
    probs = tmp_path / "probs.nii.gz"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--image",
                str(d / "image.nii.gz"),
                "--out",
                str(pred),
                "--probabilities",
                str(probs),
                "--quiet",
            ]
        )
        == 0
    )
    p = nib.load(pred)
    assert p.shape == semantic.T.shape
    assert np.allclose(p.affine, affine)
    assert np.issubdtype(p.get_data_dtype(), np.integer)
    prob = np.asarray(nib.load(probs).dataobj)
    assert prob.shape[:3] == semantic.T.shape
    assert prob.shape[3] == 3
    assert np.allclose(prob.sum(axis=3), 1.0, atol=1e-3)

    # --min-size reaches the post-processing: no piece of 12x24x20 holds 10**5 voxels
    cleaned = tmp_path / "cleaned.nii.gz"
    args = ["predict", "--model", str(model), "--image", str(d / "image.nii.gz")]
    assert main([*args, "--out", str(cleaned), "--min-size", "100000", "--quiet"]) == 0
    assert not np.asarray(nib.load(cleaned).dataobj).any()
    assert np.asarray(p.dataobj).any(), "without --min-size something is foreground"
    assert main([*args, "--out", str(tmp_path / "x.nii.gz"), "--min-size", "-3"]) == 1
    assert "min_size" in capsys.readouterr().err

    # --threshold reaches the semantic labels: they equal the core rule applied to the
    # written probabilities
    from napari_unetseg.core.postprocess import semantic_labels

    strict = tmp_path / "strict.nii.gz"
    assert main([*args, "--out", str(strict), "--threshold", "0.5", "--quiet"]) == 0
    p_kzyx = np.stack([prob[..., k].T for k in range(prob.shape[3])])
    expected = semantic_labels(p_kzyx.astype(np.float32), threshold=0.5)
    got = np.asarray(nib.load(strict).dataobj).T
    assert np.mean(got == expected) > 0.999
    assert main([*args, "--out", str(tmp_path / "y.nii.gz"), "--threshold", "1.5"]) == 1
    assert "infer.threshold" in capsys.readouterr().err

    capsys.readouterr()
    out_json = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--truth",
                str(d / "truth.nii.gz"),
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "dice" in printed
    report = json.loads(out_json.read_text())
    for row in report["classes"].values():
        assert 0.0 <= row["dice"] <= 1.0


def test_instances_pipeline_writes_boundaries_and_instances(volume, tmp_path):
    d, affine, _ = volume
    sparse = tmp_path / "sparse_inst.nii.gz"
    main(
        ["sparsify", "--labels", str(d / "inst.nii.gz"), "--out", str(sparse), "--fraction", "0.3"]
    )
    model = tmp_path / "inst.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(d / "image.nii.gz"),
                "--labels",
                str(sparse),
                "--task",
                "instances",
                "--out",
                str(model),
                "--config",
                str(d / "tiny.json"),
                "--quiet",
            ]
        )
        == 0
    )
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("labels", "boundaries", "instances")}
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--image",
                str(d / "image.nii.gz"),
                "--out",
                str(out["labels"]),
                "--boundaries",
                str(out["boundaries"]),
                "--instances",
                str(out["instances"]),
                "--quiet",
            ]
        )
        == 0
    )
    b = np.asarray(nib.load(out["boundaries"]).dataobj)
    assert b.shape == nib.load(d / "image.nii.gz").shape
    assert b.min() >= 0.0
    assert b.max() <= 1.0
    assert np.allclose(nib.load(out["instances"]).affine, affine)

    # --interior-threshold and --min-size reach the watershed: the written objects equal
    # the post-processing of the written probabilities with those settings
    tuned, probs = tmp_path / "tuned.nii.gz", tmp_path / "probs.nii.gz"
    args = ["predict", "--model", str(model), "--image", str(d / "image.nii.gz")]
    extra = ["--interior-threshold", "0.3", "--min-size", "5", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "l.nii.gz"), "--instances", str(tuned),
                 "--probabilities", str(probs), *extra]) == 0  # fmt: skip
    p_zyx = np.asarray(nib.load(probs).dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    expected = instance_labels(p_zyx, interior_threshold=0.3, min_size=5)
    np.testing.assert_array_equal(np.asarray(nib.load(tuned).dataobj).T, expected)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(out["instances"]),
                "--truth",
                str(d / "inst.nii.gz"),
                "--instances",
            ]
        )
        == 0
    )


def test_existing_output_is_not_replaced_without_overwrite(volume, tmp_path, capsys):
    d, _, _ = volume
    target = tmp_path / "sparse.nii.gz"
    target.write_bytes(b"precious")
    code = main(["sparsify", "--labels", str(d / "truth.nii.gz"), "--out", str(target)])
    assert code == 1
    assert target.read_bytes() == b"precious"
    err = capsys.readouterr().err
    assert "--overwrite" in err
    assert (
        main(
            ["sparsify", "--labels", str(d / "truth.nii.gz"), "--out", str(target), "--overwrite"]
        )
        == 0
    )
    assert target.read_bytes() != b"precious"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["evaluate", "--pred", "{d}/missing.nii.gz", "--truth", "{d}/truth.nii.gz"],
            "missing.nii.gz",
        ),
        (
            [
                "train",
                "--image",
                "{d}/image.nii.gz",
                "--labels",
                "{d}/truth.nii.gz",
                "--out",
                "{t}/m.safetensors",
                "--config",
                "{t}/nope.json",
            ],
            "nope.json",
        ),
        (
            [
                "predict",
                "--model",
                "{t}/evil.safetensors",
                "--image",
                "{d}/image.nii.gz",
                "--out",
                "{t}/p.nii.gz",
            ],
            "safetensors",
        ),
    ],
)
def test_errors_are_one_clear_line(volume, tmp_path, capsys, argv, needle):
    d, _, _ = volume
    with open(tmp_path / "evil.safetensors", "wb") as f:
        pickle.dump({"weights": [1, 2, 3]}, f)
    argv = [a.format(d=d, t=tmp_path) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_shape_mismatch_between_prediction_and_truth_is_reported(volume, tmp_path, capsys):
    d, _, _ = volume
    other = tmp_path / "other.nii.gz"
    write_labels(np.zeros((5, 6, 7), np.uint8), VolumeMeta(spacing=(1.0, 1.0, 1.0)), other)
    assert main(["evaluate", "--pred", str(other), "--truth", str(d / "truth.nii.gz")]) == 1
    assert "shape" in capsys.readouterr().err


def test_console_script_runs_and_reports_usage_errors():
    exe = shutil.which("unetseg")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_unetseg.cli"]
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0
    for name in ("demo", "sparsify", "train", "predict", "evaluate"):
        assert name in ok.stdout
    bad = subprocess.run([*cmd, "train"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "--image" in bad.stderr


def test_demo_writes_its_outputs(tmp_path, capsys):
    from napari_unetseg.demo import run_demo

    out = tmp_path / "demo"
    assert run_demo(out, iterations=2, quiet=True, shape=(16, 32, 32)) == 0
    for name in (
        "metrics.json",
        "figure.png",
        "prediction_semantic.nii.gz",
        "prediction_instances.nii.gz",
        "model_semantic.safetensors",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["tasks"]) == {"semantic", "instances"}
    assert 0.0 <= report["tasks"]["semantic"]["mean_dice"] <= 1.0
    assert "F1" in capsys.readouterr().out
    # a second run into the same folder refuses to overwrite
    assert main(["demo", "--out", str(out), "--iterations", "1", "--quiet"]) == 1


def test_train_compile_flag_compiles_the_training_step(volume, tmp_path, monkeypatch):
    import torch

    d, _, _ = volume
    sparse = tmp_path / "sparse.nii.gz"
    main(["sparsify", "--labels", str(d / "truth.nii.gz"), "--out", str(sparse)])
    compiled = []

    def fake_compile(module):  # stands in for torch.compile: records, runs eagerly
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    args = ["train", "--image", str(d / "image.nii.gz"), "--labels", str(sparse)]
    args += ["--config", str(d / "tiny.json"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.safetensors")]) == 0
    assert compiled == []
    assert main([*args, "--out", str(tmp_path / "b.safetensors"), "--compile"]) == 0
    assert len(compiled) == 1


@pytest.mark.parametrize(
    "command", ["demo", "sparsify", "train", "predict", "evaluate", "export-dataset", "suggest"]
)
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: unetseg " + command)
    if command == "train":  # the generated setting flags, help from the schema
        assert "--target-spacing" in out
        assert "10 %" in out


def _channels_args(command, files, out, *extra):
    """``unetseg <command>`` arguments with one --image per channel file."""
    images = [a for f in files for a in ("--image", str(f))]
    return [command, *images, "--out", str(out), *extra]


def test_predict_puts_swapped_channel_files_back_in_the_model_order(volume, tmp_path, capsys):
    d, affine, semantic = volume
    image = np.asarray(nib.load(d / "image.nii.gz").dataobj)
    t1, t2 = tmp_path / "case1_t1.nii.gz", tmp_path / "case1_t2.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), t1)
    nib.save(nib.Nifti1Image(image[::-1].copy(), affine), t2)
    ann = tmp_path / "ann.nii.gz"
    nib.save(nib.Nifti1Image((semantic.T + 1).astype(np.uint8), affine), ann)
    model = tmp_path / "m.safetensors"
    tiny = ("--config", str(d / "tiny.json"), "--labels", str(ann), "--quiet")
    assert main(_channels_args("train", [t1, t2], model, *tiny)) == 0
    out1, out2 = tmp_path / "p1.nii.gz", tmp_path / "p2.nii.gz"
    assert main(_channels_args("predict", [t1, t2], out1, "--model", str(model))) == 0
    capsys.readouterr()
    assert main(_channels_args("predict", [t2, t1], out2, "--model", str(model))) == 0
    assert "matched to the model by name" in capsys.readouterr().err
    np.testing.assert_array_equal(nib.load(out1).dataobj, nib.load(out2).dataobj)


def test_predict_uses_the_grown_window_layout(volume, tmp_path, monkeypatch):
    """The CLI's predict runs the windows the core's rule picks (prediction_layout): on
    this 12 x 24 x 20 image the 8 x 16 x 16 patch grows (with context, then along y)."""
    from napari_unetseg.core.checkpoint import load_checkpoint
    from napari_unetseg.core.inference import engine, prediction_layout

    d, _, _ = volume
    sparse = tmp_path / "sparse.nii.gz"
    assert main(["sparsify", "--labels", str(d / "truth.nii.gz"), "--out", str(sparse)]) == 0
    model = tmp_path / "m.safetensors"
    args = ["train", "--image", str(d / "image.nii.gz"), "--labels", str(sparse)]
    assert main([*args, "--config", str(d / "tiny.json"), "--out", str(model), "--quiet"]) == 0
    windows = []
    original = engine._Engine.__init__

    def spy(self, model_, image, window, *rest, **kw):
        windows.append((tuple(window), rest[5]))  # rest: config ... transform, steps
        original(self, model_, image, window, *rest, **kw)

    monkeypatch.setattr(engine._Engine, "__init__", spy)
    out = tmp_path / "pred.nii.gz"
    args = ["predict", "--model", str(model), "--image", str(d / "image.nii.gz")]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    ckpt = load_checkpoint(model)
    shape = tuple(np.asarray(nib.load(out).dataobj).T.shape)
    expected, steps = prediction_layout(
        ckpt, shape, ckpt.config.infer.overlap, ckpt.build_model("cpu").divisor
    )
    assert windows == [(expected, steps)]
    patch = tuple(ckpt.config.data.patch_size)
    assert all(w >= p for w, p in zip(expected, patch))
    assert expected != patch


def test_train_resume_continues_a_model_saved_with_torch_adamw(volume, tmp_path, monkeypatch):
    """`unetseg train --resume` on a model file written before training had its own AdamW
    (torch.optim.AdamW's state): the run continues the iterations and the Adam moments."""
    import torch

    from napari_unetseg.core import training_step
    from napari_unetseg.core.checkpoint import load_checkpoint

    d, _, _ = volume
    sparse = tmp_path / "sparse.nii.gz"
    assert main(["sparsify", "--labels", str(d / "truth.nii.gz"), "--out", str(sparse)]) == 0
    args = ["train", "--image", str(d / "image.nii.gz"), "--labels", str(sparse)]
    args += ["--config", str(d / "tiny.json"), "--quiet"]
    old = tmp_path / "old.safetensors"
    with monkeypatch.context() as m:
        m.setattr(training_step, "AdamW", torch.optim.AdamW)
        assert main([*args, "--out", str(old)]) == 0
    first = load_checkpoint(old)
    assert {float(s["step"]) for s in first.optimizer_state["state"].values()} == {3.0}
    new = tmp_path / "new.safetensors"
    assert main([*args, "--resume", str(old), "--out", str(new)]) == 0
    ckpt = load_checkpoint(new)
    assert ckpt.iterations == 2 * first.iterations
    steps = {float(s["step"]) for s in ckpt.optimizer_state["state"].values()}
    assert steps == {float(ckpt.iterations)}
    moments = [s["exp_avg_sq"] for s in ckpt.optimizer_state["state"].values()]
    before = [s["exp_avg_sq"] for s in first.optimizer_state["state"].values()]
    assert any(not torch.equal(a, b) for a, b in zip(moments, before))
