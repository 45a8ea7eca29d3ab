"""The shared atomic-write helper: all or nothing, one-line errors, no temporary leftovers."""

import errno
import os
import tempfile

import numpy as np
import pytest

from napari_unetseg.core.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    save_checkpoint,
)
from napari_unetseg.core.config import Config
from napari_unetseg.core.io import (
    OutputExistsError,
    VolumeIOError,
    WriteError,
    atomic_write,
    meta_from_array,
    write_labels,
    write_text_atomic,
)
from napari_unetseg.core.io import atomic as atomic_mod


def _write_to_full_disk(tmp):
    """A writer whose data land on /dev/full: the OS answers ENOSPC (errno 28)."""
    with open(tmp, "wb") as f:
        f.write(b"partial")
    with open("/dev/full", "wb") as full:
        full.write(b"x" * 10000)
        full.flush()


def test_text_is_written_and_existing_files_are_protected(tmp_path):
    path = tmp_path / "sub" / "scores.csv"
    assert write_text_atomic(path, "a,b\n1,2\n", overwrite=False) == path
    assert path.read_text() == "a,b\n1,2\n"
    with pytest.raises(OutputExistsError, match="already exists") as info:
        write_text_atomic(path, "other", overwrite=False)
    assert isinstance(info.value, VolumeIOError)
    assert isinstance(info.value, FileExistsError)
    assert str(path) in str(info.value)
    assert path.read_text() == "a,b\n1,2\n"
    write_text_atomic(path, '{"x": 1}', overwrite=True)
    assert path.read_text() == '{"x": 1}'
    assert os.listdir(path.parent) == ["scores.csv"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_gives_one_line_naming_path_and_reason(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(WriteError) as info:
        atomic_write(path, _write_to_full_disk, overwrite=True)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert "errno 28" in msg
    assert "disk is full" in msg
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, VolumeIOError)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_read_only_folder_gives_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(WriteError, match=r"errno 30.*read-only file system; choose another"):
        write_text_atomic(tmp_path / "a.txt", "x", overwrite=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("writer broke")])
def test_interrupted_or_failed_writer_leaves_nothing(tmp_path, exc):
    path = tmp_path / "m.nii.gz"
    path.write_bytes(b"precious")

    def write(tmp):
        tmp.write_bytes(b"half a file")
        raise exc

    expected = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else WriteError
    with pytest.raises(expected):
        atomic_write(path, write, overwrite=True)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["m.nii.gz"]


def test_detached_data_files_are_moved_and_checked(tmp_path):
    def write(tmp):
        tmp.with_suffix(".raw").write_bytes(b"data")
        tmp.write_text(f"ElementDataFile = {tmp.with_suffix('.raw').name}\n")

    out = atomic_write(tmp_path / "v.mhd", write, overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["v.mhd", "v.raw"]
    assert out.read_text() == "ElementDataFile = v.raw\n"
    (tmp_path / "v.mhd").unlink()
    # The header is new but its data file would replace an existing one: refused.
    with pytest.raises(OutputExistsError, match=r"v\.raw already exists"):
        atomic_write(tmp_path / "v.mhd", write, overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["v.raw"]


def test_writer_that_writes_nothing_and_folder_targets_are_refused(tmp_path):
    with pytest.raises(WriteError, match="produced no file"):
        atomic_write(tmp_path / "a.txt", lambda tmp: None, overwrite=True)
    (tmp_path / "d.txt").mkdir()
    with pytest.raises(WriteError, match="is a folder"):
        write_text_atomic(tmp_path / "d.txt", "x", overwrite=True)
    assert os.listdir(tmp_path) == ["d.txt"]


def test_volume_writer_refuses_existing_file_without_overwrite(tmp_path):
    target = tmp_path / "m.nii.gz"
    target.write_bytes(b"precious")
    meta = meta_from_array(shape=(2, 3, 4))
    with pytest.raises(VolumeIOError, match="already exists"):
        write_labels(np.ones((2, 3, 4), np.uint8), meta, target, overwrite=False)
    assert target.read_bytes() == b"precious"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_model_file_on_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    cfg = Config()
    ckpt = Checkpoint(config=cfg, state_dict={}, normalizer=None)
    save_checkpoint(ckpt, path)
    first = path.read_bytes()

    real_open = open

    def open_full(file, mode="r", *args, **kwargs):
        return real_open("/dev/full", mode, *args, **kwargs)

    monkeypatch.setattr(atomic_mod, "open", open_full, raising=False)
    ckpt.iterations = 5
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(ckpt, path)
    assert isinstance(info.value, CheckpointError)
    assert isinstance(info.value, OSError)
    assert str(path) in str(info.value)
    assert "disk is full" in str(info.value)
    assert path.read_bytes() == first
    assert os.listdir(tmp_path) == ["m.safetensors"]
    monkeypatch.undo()
    save_checkpoint(ckpt, path)
    assert load_checkpoint(path).iterations == 5
