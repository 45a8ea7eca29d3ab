"""Ctrl-C (SIGINT) and a hard kill (SIGKILL) during train, predict and export-dataset.

The command runs in a subprocess (``python -m napari_unetseg.cli``); the signal is sent
once its output shows the phase to interrupt. The guarantees checked:

* SIGINT during ``train --overwrite`` over an existing model: if no step completed, the
  old model is intact; otherwise a valid model (with the steps done) replaces it.
* SIGKILL during train / predict / export: no partial or corrupt file is left under an
  output name, and a file that existed before is either unchanged or completely replaced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fault_files import digest, valid_image, valid_labels
from napari_unetseg.core.checkpoint import load_checkpoint
from unetseg_testing import tiny_settings

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """A ``unetseg`` subprocess whose output is read line by line (\\r or \\n) in a thread."""

    def __init__(self, *args):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "napari_unetseg.cli", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            # a shell without job control starts background jobs with SIGINT ignored, and
            # children inherit that: give the command Ctrl-C as a terminal would
            preexec_fn=_default_sigint,
        )
        self.text = ""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while chunk := self.proc.stdout.read1(4096):
            self.text += chunk.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 240) -> None:
        end = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            assert self.proc.poll() is None, f"ended before {pattern!r}: {self.text[-2000:]}"
            assert time.monotonic() < end, f"no {pattern!r} in time: {self.text[-2000:]}"
            time.sleep(0.01)

    def signal(self, sig) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=120)
        self._thread.join(timeout=10)
        return rc


@pytest.fixture
def inputs(tmp_path):
    cfg = tmp_path / "long.json"
    cfg.write_text(
        json.dumps(tiny_settings(train={"iterations": 100_000, "validate_every": 10**6}))
    )
    old = tmp_path / "model.safetensors"
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps(tiny_settings(train={"iterations": 2})))
    img, lab = valid_image(tmp_path), valid_labels(tmp_path)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_unetseg.cli",
            "train",
            "--image",
            img,
            "--labels",
            lab,
            "--out",
            old,
            "--config",
            quick,
            "--quiet",
        ],
        check=True,
        capture_output=True,
    )
    return {"image": img, "labels": lab, "config": cfg, "model": old}


def _train(inputs, out):
    return Command(
        *["train", "--image", inputs["image"], "--labels", inputs["labels"], "--out", out],
        *["--config", inputs["config"], "--overwrite"],
    )


@pytest.mark.parametrize("moment", ["at-start", "after-steps"])
def test_sigint_during_train_keeps_old_or_saves_a_valid_model(inputs, moment):
    old = inputs["model"]
    before = digest(old)
    old_iterations = load_checkpoint(old).iterations
    cmd = _train(inputs, old)
    cmd.wait_for(r"training on" if moment == "at-start" else r"\d+/100000.*loss=")
    rc = cmd.signal(signal.SIGINT)
    assert "Traceback" not in cmd.text, cmd.text[-3000:]
    assert rc in (0, 130), cmd.text[-2000:]
    if "nothing was saved" in cmd.text:
        assert moment == "at-start"
        assert digest(old) == before  # a run without a step never replaces a model
    else:
        ckpt = load_checkpoint(old)  # a complete, valid model
        assert ckpt.iterations >= 1
        assert digest(old) != before or ckpt.iterations == old_iterations
        assert re.search(r"interrupted after \d+ iterations", cmd.text)
    assert not [p for p in old.parent.iterdir() if p.name.startswith(".model")]


def test_sigkill_during_train_leaves_the_old_model(inputs):
    old = inputs["model"]
    before = digest(old)
    cmd = _train(inputs, old)
    cmd.wait_for(r"\d+/100000.*loss=")
    assert cmd.signal(signal.SIGKILL) == -signal.SIGKILL
    assert digest(old) == before
    load_checkpoint(old)


def _big_image(folder: Path, name: str) -> Path:
    rng = np.random.default_rng(0)
    path = folder / name
    data = rng.normal(size=(40, 96, 96)).astype(np.float32)
    nib.save(nib.Nifti1Image(data.T, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_sigkill_during_predict_leaves_no_partial_output(inputs, tmp_path):
    image = _big_image(tmp_path, "big.nii.gz")
    out = tmp_path / "pred.nii.gz"
    out.write_bytes(b"an earlier result")
    before = digest(out)
    cmd = Command(
        *["predict", "--model", inputs["model"], "--image", image, "--out", out],
        *["--overwrite", "--window-batch", "1"],
    )
    cmd.wait_for(r"predicting: +\d+%")
    assert cmd.signal(signal.SIGKILL) == -signal.SIGKILL
    if digest(out) != before:  # replaced whole, never half written
        assert np.asarray(nib.load(out).dataobj).shape == (96, 96, 40)
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert "pred.nii.gz" in visible


def test_sigkill_during_export_leaves_only_complete_files(inputs, tmp_path):
    ann = np.zeros((40, 96, 96), np.uint8)
    ann[5], ann[5, 10:30, 10:30] = 1, 2
    labels = tmp_path / "big_labels.nii.gz"
    nib.save(nib.Nifti1Image(ann.T, np.diag([1.0, 1.0, 2.0, 1.0])), labels)
    cases = []
    for k in range(12):
        cases += ["--image", _big_image(tmp_path, f"img{k}.nii.gz"), "--labels", labels]
    out = tmp_path / "Dataset001_Test"
    cmd = Command("export-dataset", *cases, "--out", out, "--class-names", "cell")
    cmd.wait_for(r"ms|%|export", timeout=240)
    time.sleep(0.5)
    rc = cmd.signal(signal.SIGKILL)
    assert rc in (-signal.SIGKILL, 0, 1)
    for path in out.rglob("*"):
        if path.name.startswith(".") or any(p.name.startswith(".") for p in path.parents):
            continue  # the atomic writer's hidden temporary folders
        if path.name.endswith(".nii.gz"):
            np.asarray(nib.load(path).dataobj)  # complete: reads to the end
        elif path.suffix == ".json":
            json.loads(path.read_text())
