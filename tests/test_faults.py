"""Fault suite of the command line: damaged, odd or hostile inputs, settings and outputs.

Every case runs ``unetseg`` in-process and checks one of two outcomes: a refusal in one
line (exit code 1, no traceback, naming the file or setting) that writes nothing, or a
correct acceptance. Inputs are hashed before and after: no case may change them.
Case ids start with their category (see scripts/count_faults.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fault_files import (
    CONFIG_FAULTS,
    IMAGE_FAULTS,
    MODEL_FAULTS,
    TIFF_FAULTS,
    _nifti,
    assert_one_line,
    digest,
    fill_disk,
    make_fault,
    sample_image,
    sample_labels,
    small_tmpfs,
    valid_image,
    valid_labels,
)
from napari_unetseg.cli import main
from unetseg_testing import tiny_settings

FILE_FAULTS = {**IMAGE_FAULTS, **TIFF_FAULTS}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Valid inputs and one tiny trained model, shared by every case."""
    d = tmp_path_factory.mktemp("faults")
    cfg = d / "tiny.json"
    cfg.write_text(json.dumps(tiny_settings(train={"iterations": 1})))
    paths = {"image": valid_image(d), "labels": valid_labels(d), "config": cfg}
    model = d / "model.safetensors"
    argv = ["train", "--image", paths["image"], "--labels", paths["labels"]]
    assert main([str(a) for a in [*argv, "--out", model, "--config", cfg, "--quiet"]]) == 0
    paths["model"] = model
    return paths


def _run(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    return rc, capsys.readouterr().err


def _argv(role: str, base: dict, bad: Path, out: Path) -> list:
    img, lab, cfg, model = base["image"], base["labels"], base["config"], base["model"]
    train = ["--config", cfg, "--quiet"]
    return {
        "predict-image": ["predict", "--model", model, "--image", bad, "--out", out, "--quiet"],
        "train-image": ["train", "--image", bad, "--labels", lab, "--out", out, *train],
        "train-labels": ["train", "--image", img, "--labels", bad, "--out", out, *train],
        "evaluate-pred": ["evaluate", "--pred", bad, "--truth", lab],
        "sparsify-labels": ["sparsify", "--labels", bad, "--out", out],
    }[role]


ROLES = ["predict-image", "train-image", "train-labels", "evaluate-pred", "sparsify-labels"]
NAN_ROLES = {"predict-image", "train-image"}  # the image reads; the check names the values


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_cli_file_fault(base, tmp_path, capsys, role, fault):
    ext = ".tif" if fault in TIFF_FAULTS else ".nii.gz"
    bad = make_fault(FILE_FAULTS, fault, tmp_path, "bad" + ext)
    out = tmp_path / ("out.safetensors" if role.startswith("train") else "out.nii.gz")
    inputs = {p: digest(p) for p in [bad, *base.values()]}
    rc, err = _run(_argv(role, base, bad, out), capsys)
    assert rc == 1
    needle = "NaN" if fault.startswith("all-") and role in NAN_ROLES else "bad"
    assert_one_line(err, needle)
    assert not out.exists()
    assert {p: digest(p) for p in inputs} == inputs


@pytest.mark.parametrize("use", ["predict", "resume"])
@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
def test_cli_model_fault(base, tmp_path, capsys, use, fault):
    bad = MODEL_FAULTS[fault](tmp_path, "bad.safetensors", base["model"])
    out = tmp_path / ("out.nii.gz" if use == "predict" else "out.safetensors")
    inputs = {p: digest(p) for p in [bad, *base.values()]}
    if use == "predict":
        argv = ["predict", "--model", bad, "--image", base["image"], "--out", out, "--quiet"]
    else:
        argv = [*_argv("train-image", base, base["image"], out), "--resume", bad]
    rc, err = _run(argv, capsys)
    assert rc == 1
    needle = "NaN or infinite" if fault == "nan-weights" else "bad.safetensors"
    if fault == "wrong-weight-shape":
        needle = "do not fit"
    assert_one_line(err, needle)
    assert not out.exists()
    assert {p: digest(p) for p in inputs} == inputs


@pytest.mark.parametrize("fault", list(CONFIG_FAULTS))
def test_cli_config_fault(base, tmp_path, capsys, fault):
    text, needle = CONFIG_FAULTS[fault]
    cfg = tmp_path / "tiny.json"
    cfg.write_text(text)
    out = tmp_path / "out.safetensors"
    argv = ["train", "--image", base["image"], "--labels", base["labels"], "--out", out]
    inputs = {p: digest(p) for p in [cfg, *base.values()]}
    rc, err = _run([*argv, "--config", cfg, "--quiet"], capsys)
    assert rc == 1
    assert_one_line(err, needle)
    assert not out.exists()
    assert {p: digest(p) for p in inputs} == inputs


# --------------------------------------------------------------------------- annotations


def _ann(kind: str) -> np.ndarray:
    ann = sample_labels().astype(np.int32)
    if kind == "negative":
        ann[2, 0, 0] = -3
    elif kind == "stray-65535":
        ann[2, 0, 0] = 65535
    elif kind == "nothing-annotated":
        ann[:] = 0
    elif kind == "only-unannotated-and-one-value":
        ann[ann > 0] = 1
    return ann


ANNOTATION_REFUSALS = {
    "negative": "-3",
    "stray-65535": "65535",
    "nothing-annotated": "annot",
    "float-fractions": "bad",
    "other-shape": "shape",
    "other-geometry": "geometry",
    "four-channels": "bad",
}


def _bad_annotation(kind: str, folder: Path) -> Path:
    if kind == "float-fractions":
        return _nifti(folder, "bad.nii.gz", sample_labels() + np.float32(0.5))
    if kind == "other-shape":
        return _nifti(folder, "bad.nii.gz", sample_labels()[:, :10])
    if kind == "other-geometry":
        path = folder / "bad.nii.gz"
        import nibabel as nib

        nib.save(nib.Nifti1Image(sample_labels().T, np.diag([3.0, 1.0, 2.0, 1.0])), path)
        return path
    if kind == "four-channels":
        return _nifti(folder, "bad.nii.gz", np.stack([sample_labels()] * 4, axis=-1))
    return _nifti(folder, "bad.nii.gz", _ann(kind))


@pytest.mark.parametrize("role", ["train-labels", "evaluate-pred", "sparsify-labels"])
@pytest.mark.parametrize("kind", list(ANNOTATION_REFUSALS))
def test_cli_annotation_fault(base, tmp_path, capsys, role, kind):
    bad = _bad_annotation(kind, tmp_path)
    out = tmp_path / ("out.safetensors" if role.startswith("train") else "out.nii.gz")
    inputs = {p: digest(p) for p in [bad, *base.values()]}
    rc, err = _run(_argv(role, base, bad, out), capsys)
    refusals = {
        "train-labels": set(ANNOTATION_REFUSALS),
        "evaluate-pred": {
            *("float-fractions", "other-shape", "other-geometry", "four-channels", "negative")
        },
        "sparsify-labels": {"float-fractions", "four-channels", "negative"},
    }[role]
    assert {p: digest(p) for p in inputs} == inputs
    if kind in refusals:
        assert rc == 1
        assert_one_line(err, ANNOTATION_REFUSALS[kind] if role == "train-labels" else "")
        assert not out.exists()
    else:  # a valid file for this command: accepted
        assert rc == 0, err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "image_fault", ["some-nan", "some-inf", "constant-zero", "huge-values", "int16-scan"]
)
@pytest.mark.parametrize("command", ["predict", "train"])
def test_cli_image_values(base, tmp_path, capsys, command, image_fault):
    data = sample_image()
    if image_fault == "some-nan":
        data[3, 4, 5] = np.nan
    elif image_fault == "some-inf":
        data[3, 4, 5] = -np.inf
    elif image_fault == "constant-zero":
        data[:] = 0
    elif image_fault == "huge-values":
        data = data * np.float32(1e30)
    else:
        data = (data * 300).astype(np.int16)
    bad = _nifti(tmp_path, "bad.nii.gz", data)
    out = tmp_path / ("out.nii.gz" if command == "predict" else "out.safetensors")
    inputs = {p: digest(p) for p in [bad, *base.values()]}
    rc, err = _run(_argv(f"{command}-image", base, bad, out), capsys)
    assert {p: digest(p) for p in inputs} == inputs
    if image_fault in ("some-nan", "some-inf"):
        assert rc == 1
        assert_one_line(err, "NaN")
        assert not out.exists()
    else:  # odd but valid scans are accepted and give a finite result
        assert rc == 0, err
        assert out.is_file()


# --------------------------------------------------------------------------- outputs


def _output_case(fault: str, command: str, base: dict, folder: Path):
    """(argv, output path, expected needle or None when accepted)."""
    suffix = ".safetensors" if command == "train" else ".nii.gz"
    out = folder / f"out{suffix}"
    if fault == "out-is-input":
        out = {"predict": base["image"], "train": base["model"], "sparsify": base["labels"]}[
            command
        ]
    elif fault == "exists-without-overwrite":
        out.write_bytes(b"precious")
    elif fault == "out-is-folder":
        out.mkdir()
    elif fault == "parent-is-a-file":
        (folder / "file").write_text("x")
        out = folder / "file" / f"out{suffix}"
    elif fault == "unknown-extension":
        out = folder / "out.xyz"
    src = {
        "predict": ["predict", "--model", base["model"], "--image", base["image"], "--quiet"],
        "train": [
            *["train", "--image", base["image"], "--labels", base["labels"]],
            *["--config", base["config"], "--quiet"],
        ],
        "sparsify": ["sparsify", "--labels", base["labels"]],
    }[command]
    if fault == "out-is-input":  # even with --overwrite
        src = [*src, "--overwrite"] + (["--resume", base["model"]] if command == "train" else [])
    return [*src, "--out", out], out


OUTPUT_FAULTS = {
    "out-is-input": "input",
    "exists-without-overwrite": "exists",
    "out-is-folder": "out",
    "parent-is-a-file": "file",
    "unknown-extension": "out.xyz",
}


@pytest.mark.parametrize(
    ("fault", "command"),
    [
        (f, c)
        for f in OUTPUT_FAULTS
        for c in ("predict", "train", "sparsify")
        if (f, c) != ("unknown-extension", "train")  # see test_cli_model_path_fault
    ],
)
def test_cli_output_fault(base, tmp_path, capsys, command, fault):
    argv, out = _output_case(fault, command, base, tmp_path)
    before = digest(out)
    inputs = {p: digest(p) for p in base.values()}
    rc, err = _run(argv, capsys)
    assert rc == 1
    assert_one_line(err, OUTPUT_FAULTS[fault])
    assert digest(out) == before
    assert {p: digest(p) for p in inputs} == inputs


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.ckpt", "model"])
def test_cli_model_path_fault(base, tmp_path, capsys, name):
    out = tmp_path / name
    argv = _argv("train-image", base, base["image"], out)
    rc, err = _run(argv, capsys)
    assert rc == 1
    assert_one_line(err, name)
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "sparsify", "train"])
@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_cli_unwritable_disk(base, tmp_path, capsys, monkeypatch, command, disk):
    home = tmp_path / "home"  # where a model that cannot be saved goes instead
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    mnt = tmp_path / "mnt"
    if disk == "read-only" and os.geteuid() != 0:
        mnt.mkdir()
        mnt.chmod(0o500)
        mounted = True
    else:
        cm = small_tmpfs(mnt, read_only=disk == "read-only")
        mounted = cm.__enter__()
    try:
        if not mounted:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        if disk == "full":
            fill_disk(mnt)
        argv, out = _output_case("fine", command, base, mnt)
        inputs = {p: digest(p) for p in base.values()}
        rc, err = _run(argv, capsys)
        assert {p: digest(p) for p in inputs} == inputs
        assert not out.exists()
        assert not [p for p in mnt.iterdir() if p.name.startswith(".out")]  # no temp left
        if command == "train" and disk == "full":
            # the folder passes the up-front check; the model goes to the fallback path
            assert rc == 0, err
            assert (home / "out.safetensors").is_file()
        else:
            assert rc == 1
            assert_one_line(err, "mnt")
    finally:
        if disk == "read-only" and os.geteuid() != 0:
            mnt.chmod(0o700)
        else:
            cm.__exit__(None, None, None)
