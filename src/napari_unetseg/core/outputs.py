"""Rules for the files a job writes: checked before any work starts.

* Two outputs of one job are never the same file (resolved paths, links included).
* An output is never one of the job's inputs, even when replacing files is allowed: a
  mask never overwrites the scan it came from, a model never its annotations.
* An existing file is replaced only with ``overwrite=True``.
* The folder of every output must exist (or be creatable) and be writable, so that a
  long training run does not end in "read-only file system" with the model lost.
* Model files end in ``.safetensors``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

MODEL_SUFFIX = ".safetensors"


class OutputError(ValueError):
    """An output path breaks a rule; the message says which path and what to do."""


def _key(path: Path) -> Path:
    """A comparable identity of ``path``: links and ``..`` resolved, even for files that
    do not exist yet (their folder is resolved)."""
    p = Path(path).expanduser()
    try:
        return p.resolve(strict=False)
    except OSError:  # pragma: no cover - e.g. a loop of symbolic links
        return p.absolute()


def _same_file(a: Path, b: Path) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:  # pragma: no cover - unreadable entries cannot be compared
        return False


def check_writable_folder(folder: Path) -> None:
    """Raise OutputError unless files can be created in ``folder`` (created if missing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".unetseg-probe-", dir=folder)
    except OSError as e:
        reason = e.strerror or str(e)
        raise OutputError(
            f"cannot write into {folder} ({reason}); choose a writable folder"
        ) from e
    os.close(fd)
    os.unlink(probe)


def check_outputs(
    outputs: Iterable[str | os.PathLike | None],
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    overwrite: bool = False,
    folders: Sequence[str | os.PathLike] = (),
) -> list[Path]:
    """Check output paths against the rules of this module before a job starts.

    Args:
        outputs: files the job will write (``None`` entries are skipped).
        inputs: files or folders the job reads; an output may be none of them, nor lie
            inside an input folder's tree of the same name.
        overwrite: whether existing outputs may be replaced.
        folders: output folders (batch jobs) to check for writability as well.

    Returns:
        The output paths as ``Path`` objects, in order.

    Raises:
        OutputError: a rule is broken (one line naming the path).
    """
    outs = [Path(p) for p in outputs if p is not None]
    ins = [Path(p) for p in inputs if p is not None]
    for i, a in enumerate(outs):
        for b in outs[:i]:
            if _same_file(a, b):
                raise OutputError(
                    f"two outputs are the same file ({b} and {a}); give each output its own path"
                )
    for out in outs:
        for src in ins:
            if _same_file(out, src):
                raise OutputError(
                    f"the output {out} is one of the inputs; write it elsewhere (inputs "
                    "are never overwritten, not even with --overwrite)"
                )
    existing = [str(p) for p in outs if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{', '.join(existing)} already exist(s); choose another path or pass --overwrite"
        )
    for p in outs:
        if p.is_dir():
            raise OutputError(f"{p} is a folder; give a file name")
    seen: set[Path] = set()
    for folder in [*(p.parent for p in outs), *(Path(f) for f in folders)]:
        k = _key(folder)
        if k not in seen:
            seen.add(k)
            check_writable_folder(folder)
    return outs


def check_model_path(path: str | os.PathLike) -> Path:
    """A model file name must end in ``.safetensors`` (what it is, and what loads it)."""
    p = Path(path)
    if not p.name.lower().endswith(MODEL_SUFFIX):
        raise OutputError(
            f"model files are written as safetensors: name it {p.with_suffix('').name}"
            f"{MODEL_SUFFIX} (got {p.name})"
        )
    return p


def fallback_path(path: str | os.PathLike) -> Path:
    """Where to save a result whose own path failed at the end of a long job: the
    user's home folder, else the temporary folder, under the same name."""
    name = Path(path).name
    for folder in (Path.home(), Path(tempfile.gettempdir())):
        try:
            check_writable_folder(folder)
        except OutputError:
            continue
        candidate = folder / name
        k = 1
        while candidate.exists():
            candidate = folder / f"{Path(name).stem}-{k}{''.join(Path(name).suffixes[-1:])}"
            k += 1
        return candidate
    raise OutputError(f"no writable folder found to save {name}")
