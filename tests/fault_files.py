"""Damaged and odd input files for the fault suites (tests/test_faults.py,
tests/core/test_faults_api.py, tests/napari/test_faults_reader.py).

Each maker writes one file (or folder) under a folder and returns its path. ``IMAGE_FAULTS``
maps a case id to (maker, outcome): "error" when every reader must refuse the file with
one line naming it, "ok" when it must be accepted. Arrays are (Z, Y, X) = SHAPE.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import struct
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

SHAPE = (9, 20, 22)


def _nifti(folder: Path, name: str, data: np.ndarray, **header) -> Path:
    img = nib.Nifti1Image(np.asarray(data).T, np.diag([1.0, 1.0, 2.0, 1.0]))
    for k, v in header.items():
        img.header[k] = v
    path = folder / name
    nib.save(img, path)
    return path


def sample_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=SHAPE).astype(np.float32)


def sample_labels() -> np.ndarray:
    ann = np.zeros(SHAPE, np.uint8)
    ann[2] = 1
    ann[2, 4:10, 5:12] = 2
    ann[6] = 1
    ann[6, 8:15, 3:9] = 2
    return ann


def valid_image(folder: Path, name: str = "image.nii.gz") -> Path:
    return _nifti(folder, name, sample_image())


def valid_labels(folder: Path, name: str = "labels.nii.gz") -> Path:
    return _nifti(folder, name, sample_labels())


# --------------------------------------------------------------------------- damaged bytes


def _random_bytes(folder, name, n=4000):
    path = folder / name
    path.write_bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def _truncated(folder, name, source_maker, keep):
    src = source_maker(folder, "full_" + name)
    data = src.read_bytes()
    src.unlink()
    path = folder / name
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    return path


def _gz_of_garbage(folder, name):
    path = folder / name
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    return path


def _text_file(folder, name):
    path = folder / name
    path.write_text("patient,value\n1,2\n")
    return path


def _empty(folder, name):
    path = folder / name
    path.write_bytes(b"")
    return path


def _folder(folder, name):
    path = folder / name
    path.mkdir()
    return path


def _bad_dim_header(folder, name):
    path = _nifti(folder, name, sample_image())
    raw = bytearray(
        gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    )
    raw[40:42] = struct.pack("<h", 9)  # dim[0] = 9 is not a valid NIfTI rank
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return path


def _huge_dims_header(folder, name):
    path = _nifti(folder, name, sample_image())
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[42:48] = struct.pack("<hhh", 30000, 30000, 30000)  # claims 27e12 voxels
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _tiff(folder, name, data):
    path = folder / name
    tifffile.imwrite(path, data)
    return path


def _h(maker, *args):
    return lambda folder, name: maker(folder, name, *args)


# outcome: "error" (refused in one line naming the file) or "ok" (accepted)
IMAGE_FAULTS: dict[str, tuple] = {
    "missing-file": (lambda folder, name: folder / name, "error"),
    "empty-nii-gz": (_empty, "error"),
    "random-bytes": (_random_bytes, "error"),
    "gzip-of-garbage": (_gz_of_garbage, "error"),
    "text-named-nifti": (_text_file, "error"),
    "truncated-half": (_h(_truncated, valid_image, 0.5), "error"),
    "truncated-header": (_h(_truncated, valid_image, 0.05), "error"),
    "folder-named-nifti": (_folder, "error"),
    "invalid-rank-header": (_bad_dim_header, "error"),
    "huge-dims-header": (_huge_dims_header, "error"),
    "one-dimensional": (lambda f, n: _nifti(f, n, np.arange(30, dtype=np.float32)), "error"),
    "five-dimensional": (
        lambda f, n: _nifti(f, n, np.zeros((2, 2, 3, 4, 5), np.float32)),
        "error",
    ),
    "all-nan": (lambda f, n: _nifti(f, n, np.full(SHAPE, np.nan, np.float32)), "error"),
    "all-inf": (lambda f, n: _nifti(f, n, np.full(SHAPE, np.inf, np.float32)), "error"),
    "complex-voxels": (
        lambda f, n: _nifti(f, n, np.ones(SHAPE, np.complex64)),
        "error",
    ),
}

TIFF_FAULTS: dict[str, tuple] = {
    "empty-tiff": (_empty, "error"),
    "random-bytes-tiff": (_random_bytes, "error"),
    "truncated-tiff": (
        _h(_truncated, lambda f, n: _tiff(f, n, sample_image()), 0.3),
        "error",
    ),
}


def make_fault(table: dict, case: str, folder: Path, name: str) -> Path:
    maker, _outcome = table[case]
    return maker(folder, name)


# --------------------------------------------------------------------------- model files


def _pickle_model(folder, name):
    import pickle

    path = folder / name
    with open(path, "wb") as f:
        pickle.dump({"weights": [1, 2, 3]}, f)
    return path


def _truncated_model(folder, name, model: Path, keep: float):
    data = model.read_bytes()
    path = folder / name
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _model_without_metadata(folder, name):
    from safetensors.numpy import save_file

    path = folder / name
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    return path


def _model_with_bad_metadata(folder, name, model: Path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(model), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (not a dict)
        meta = dict(f.metadata() or {})
    for k in list(meta):
        meta[k] = "{not json"
    path = folder / name
    save_file(tensors, str(path), metadata=meta)
    return path


def _model_with_shrunk_weights(folder, name, model: Path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(model), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata() or {})
    first = sorted(k for k in tensors if tensors[k].ndim > 1)[0]
    tensors[first] = tensors[first][:1].copy()
    path = folder / name
    save_file(tensors, str(path), metadata=meta)
    return path


def _model_with_nan_weights(folder, name, model: Path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(model), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata() or {})
    for k, v in tensors.items():
        if v.dtype.kind == "f":
            tensors[k] = np.full_like(v, np.nan)
    path = folder / name
    save_file(tensors, str(path), metadata=meta)
    return path


#: model faults: maker(folder, name, good_model_path) -> path; all must be refused
MODEL_FAULTS: dict = {
    "missing-model": lambda f, n, m: f / n,
    "empty-model": lambda f, n, m: _empty(f, n),
    "random-bytes-model": lambda f, n, m: _random_bytes(f, n),
    "pickle-model": lambda f, n, m: _pickle_model(f, n),
    "truncated-model": lambda f, n, m: _truncated_model(f, n, m, 0.5),
    "header-only-model": lambda f, n, m: _truncated_model(f, n, m, 0.02),
    "huge-header-length": lambda f, n, m: _huge_header(f, n),
    "header-not-json": lambda f, n, m: _raw_header(f, n, b"{nope"),
    "no-metadata-model": lambda f, n, m: _model_without_metadata(f, n),
    "bad-metadata-model": lambda f, n, m: _model_with_bad_metadata(f, n, m),
    "wrong-weight-shape": lambda f, n, m: _model_with_shrunk_weights(f, n, m),
    "nan-weights": lambda f, n, m: _model_with_nan_weights(f, n, m),
    "folder-model": lambda f, n, m: _folder(f, n),
}


def _huge_header(folder, name):
    path = folder / name
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    return path


def _raw_header(folder, name, text: bytes):
    path = folder / name
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


# --------------------------------------------------------------------------- config files

#: settings files with a wrong type or value: (JSON text, a word the error must contain)
CONFIG_FAULTS: dict[str, tuple[str, str]] = {
    "iterations-string": ('{"train": {"iterations": "many"}}', "iterations"),
    "iterations-negative": ('{"train": {"iterations": -5}}', "iterations"),
    "iterations-float": ('{"train": {"iterations": 2.5}}', "iterations"),
    "iterations-list": ('{"train": {"iterations": [1, 2]}}', "iterations"),
    "learning-rate-string": ('{"train": {"learning_rate": "fast"}}', "learning_rate"),
    "learning-rate-negative": ('{"train": {"learning_rate": -1}}', "learning_rate"),
    "batch-size-zero": ('{"train": {"batch_size": 0}}', "batch_size"),
    "patch-size-string": ('{"data": {"patch_size": "big"}}', "patch_size"),
    "patch-size-negative": ('{"data": {"patch_size": [-8, 16, 16]}}', "patch_size"),
    "base-width-zero": ('{"model": {"base_width": 0}}', "base_width"),
    "depth-string": ('{"model": {"depth": "deep"}}', "depth"),
    "unknown-section": ('{"trian": {"iterations": 3}}', "trian"),
    "unknown-setting": ('{"train": {"iteratons": 3}}', "iteratons"),
    "section-not-object": ('{"train": 5}', "train"),
    "top-level-list": ("[1, 2, 3]", "tiny.json"),
    "invalid-json": ('{"train": {"iterations": 3', "tiny.json"),
    "empty-file": ("", "tiny.json"),
    "class-names-number": ('{"class_names": 5}', "class_names"),
    "device-unknown": ('{"train": {"device": "quantum"}}', "device"),
    "validation-fraction-2": ('{"data": {"validation_fraction": 2.0}}', "validation_fraction"),
}


# --------------------------------------------------------------------------- helpers


def digest(path: Path) -> str:
    """Hash of a file's bytes, or of every file under a folder (inputs must stay untouched)."""
    path = Path(path)
    if not path.exists():
        return "absent"
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode())
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line(err: str, needle: str) -> None:
    """A user error: one line, no traceback, naming the file or setting."""
    text = err.strip()
    assert text, "no error message"
    assert "Traceback" not in text, text
    assert len(text.splitlines()) <= 2, text
    assert needle in text, f"{needle!r} not in {text!r}"


def fill_disk(folder: Path) -> None:
    """Write a filler file into ``folder`` until its file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != 28:  # ENOSPC: full, as intended; anything else is a real failure
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "48k", read_only: bool = False):
    """Mount a tiny tmpfs at ``folder`` (root only); yields False when mounting fails."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
