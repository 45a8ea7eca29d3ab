import os

import pytest

from napari_unetseg.core.outputs import (
    OutputError,
    check_model_path,
    check_outputs,
    fallback_path,
)


def test_two_outputs_may_not_be_the_same_file(tmp_path):
    a = tmp_path / "same.nii.gz"
    with pytest.raises(OutputError, match="two outputs are the same file"):
        check_outputs([a, tmp_path / "sub" / ".." / "same.nii.gz"])


def test_an_output_may_not_be_an_input_even_with_overwrite(tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"scan")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(scan)
    for out in (scan, link, tmp_path / "." / "scan.nii.gz"):
        with pytest.raises(OutputError, match="is one of the inputs"):
            check_outputs([out], [scan], overwrite=True)
    assert scan.read_bytes() == b"scan"


def test_existing_outputs_need_overwrite(tmp_path):
    old = tmp_path / "m.safetensors"
    old.write_bytes(b"x")
    with pytest.raises(OutputError, match="--overwrite"):
        check_outputs([old])
    assert check_outputs([old], overwrite=True) == [old]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder_is_refused_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write into"):
            check_outputs([ro / "m.safetensors"])
    finally:
        ro.chmod(0o700)


def test_unwritable_folder_is_refused_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot write into"):
        check_outputs([blocker / "m.safetensors"])


def test_model_files_must_be_safetensors():
    assert check_model_path("a/m.safetensors").name == "m.safetensors"
    for bad in ("m.pt", "model", "m.safetensors.bak"):
        with pytest.raises(OutputError, match="safetensors"):
            check_model_path(bad)


def test_fallback_path_does_not_replace_existing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.safetensors").write_bytes(b"old")
    p = fallback_path("/nonexistent/dir/m.safetensors")
    assert p.parent == tmp_path
    assert not p.exists()
