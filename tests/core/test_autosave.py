"""Annotation recovery store and throttled saver (Qt-free), including a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_unetseg.core import autosave as store


def test_store_roundtrip_list_discard(tmp_path):
    image = np.arange(17 * 33 * 35, dtype=np.float32).reshape(17, 33, 35)
    key = store.image_key(tmp_path / "scan.nii.gz", image)
    assert key == store.image_key(tmp_path / "scan.nii.gz", image.copy())
    assert key != store.image_key(tmp_path / "other.nii.gz", image)
    changed = image.copy()
    changed[0, 0, 0] += 1  # voxel (0,0,0) is in the strided sample
    assert key != store.image_key(tmp_path / "scan.nii.gz", changed)
    assert str(store.recovery_dir()) == os.environ[store.RECOVERY_ENV]

    ann = np.zeros((17, 33, 35), np.uint16)
    ann[3, 4:9, 5] = 2
    rec = store.save_recovery(key, ann, layer_name="scan annotations", class_names=["cell"])
    assert rec.path.parent == store.recovery_dir() / key
    assert not [p for p in rec.path.parent.iterdir() if p.name.startswith(".")]  # no temp
    (found,) = store.list_recoveries(key)
    assert found.layer_name == "scan annotations"
    assert found.info["class_names"] == ["cell"]
    assert found.info["shape"] == [17, 33, 35]
    np.testing.assert_array_equal(found.load(), ann)
    assert store.list_recoveries("other") == []
    assert store.discard_recoveries(key) == 1
    assert store.list_recoveries(key) == []
    assert not (store.recovery_dir() / key).exists()


def test_damaged_recovery_is_one_line_error():
    rec = store.save_recovery("k", np.ones((4, 5), np.uint8), layer_name="a")
    rec.path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"recovery file .*a\.npz is damaged"):
        store.load_recovery(rec)


def test_throttled_saver_writes_at_most_every_interval():
    now = [100.0]
    saver = store.ThrottledSaver("key", "ann", interval=3.0, clock=lambda: now[0])
    arr = np.zeros((5, 6, 7), np.uint16)
    calls = []

    def snap():
        calls.append(1)
        return arr.copy()

    assert saver.changed(snap) == 0.0  # first change: saved at once
    assert saver.wait(10)
    arr[1, 2, 3] = 4
    now[0] += 1.0
    assert saver.changed(snap) == pytest.approx(2.0)  # throttled: no snapshot taken
    assert len(calls) == 1
    assert saver.dirty
    now[0] += 2.0
    assert saver.changed(snap) == 0.0
    assert saver.wait(10)
    assert len(calls) == 2
    assert not saver.dirty
    assert saver.saves == 2
    (rec,) = store.list_recoveries("key")
    np.testing.assert_array_equal(rec.load(), arr)
    saver.discard()
    assert store.list_recoveries("key") == []


def test_saver_reports_write_errors(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(store.RECOVERY_ENV, str(blocker))  # a file, not a folder
    saver = store.ThrottledSaver("key", "ann", interval=0)
    saver.changed(lambda: np.ones((3, 3), np.uint8))
    assert saver.wait(10)
    assert saver.last_error is not None
    assert saver.saves == 0


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    from napari_unetseg.core import autosave as store
    ann = np.zeros((17, 33, 35), np.uint16)
    saver = store.ThrottledSaver(sys.argv[1], "scan annotations", interval=0.2)
    rng = np.random.default_rng(0)
    for stroke in range(30):
        z, y = rng.integers(0, 17), rng.integers(0, 30)
        ann[z, y : y + 3, 4:9] = 2 + stroke % 2
        saver.changed(lambda: ann.copy())
        time.sleep(0.02)
    while saver.dirty:  # the last strokes: saved once the interval passed
        saver.changed(lambda: ann.copy())
        time.sleep(0.05)
    saver.wait(10)
    np.save(sys.argv[2], ann)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_killed_process_loses_no_painted_voxel(tmp_path):
    expected = tmp_path / "expected.npy"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "killkey", str(expected)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (rec,) = store.list_recoveries("killkey")
    want = np.load(expected)
    assert (want > 0).sum() > 30
    np.testing.assert_array_equal(rec.load(), want)
