"""The one way the project writes files: atomically, never leaving half a file behind.

:func:`atomic_write` lets a writer produce its file(s) in a hidden temporary folder next to
the destination, then moves them into place with ``os.replace`` (an atomic rename on the
same file system). On any failure, including ``KeyboardInterrupt``, the temporary folder is
removed and an existing file under the target name is left untouched. Formats with a
detached data file (``.mhd`` + ``.raw``, ``.nhdr`` + ``.raw.gz``) work too: every file the
writer creates is moved, the data files first and the named file last.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .meta import VolumeIOError


class WriteError(VolumeIOError, OSError):
    """A file cannot be written (no space, read-only folder, no permission, writer failed).

    Both a :class:`VolumeIOError` and an :class:`OSError`, so callers catching either see it.
    """


class OutputExistsError(VolumeIOError, FileExistsError):
    """The target file exists and overwriting was not allowed."""


_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write elsewhere",
    errno.EROFS: "the folder is on a read-only file system; choose another folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
}


def describe_os_error(exc: BaseException) -> str:
    """A one-line reason for an exception raised while writing."""
    if isinstance(exc, OSError) and exc.errno in _HINTS:
        return f"{exc.strerror or exc} (errno {exc.errno}): {_HINTS[exc.errno]}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return " ".join(str(exc).split()) or type(exc).__name__


def atomic_write(
    path: str | os.PathLike,
    write_fn: Callable[[Path], None],
    *,
    overwrite: bool,
    error: type[Exception] = WriteError,
) -> Path:
    """Write ``path`` atomically.

    write_fn(tmp) must write the file to ``tmp``, a path in a fresh hidden folder beside
    ``path`` with exactly ``path``'s file name (so writers that pick the format or a data
    file's name from the suffix behave as for the real name). It may create further files
    in that folder (a detached data file); each is moved next to ``path``.

    overwrite: when False, an existing ``path`` (or an existing file that a detached data
        file would replace) is refused with :class:`OutputExistsError`.
    error: exception class for failures; it is given one line naming the path and the
        reason. The default :class:`WriteError` is a VolumeIOError and an OSError.
    Returns ``path`` as a Path. Errors raised by write_fn that already are ``error`` or
    :class:`VolumeIOError` pass through unchanged; ``KeyboardInterrupt`` is re-raised after
    the clean-up.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        _refuse_existing(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise error(f"cannot write {path}: {describe_os_error(exc)}") from exc
    try:
        write_fn(tmp_dir / path.name)
        written = sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name)
        if not written or written[-1].name != path.name:
            raise error(f"cannot write {path}: the writer produced no file")
        if not overwrite:
            for item in written:
                if (path.parent / item.name).exists():
                    _refuse_existing(path.parent / item.name)
        for item in written:
            os.replace(item, path.parent / item.name)
    except (error, VolumeIOError):
        raise
    except Exception as exc:
        raise error(f"cannot write {path}: {describe_os_error(exc)}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _refuse_existing(path: Path) -> None:
    raise OutputExistsError(
        f"{path} already exists; choose another name or allow overwriting "
        "(overwrite=True, --overwrite on the command line)."
    )


def write_bytes_atomic(
    path: str | os.PathLike,
    data: bytes,
    *,
    overwrite: bool,
    error: type[Exception] = WriteError,
) -> Path:
    """Write ``data`` to ``path`` atomically and flushed to disk (fsync)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write, overwrite=overwrite, error=error)


def write_text_atomic(
    path: str | os.PathLike,
    text: str,
    *,
    overwrite: bool,
    encoding: str = "utf-8",
    error: type[Exception] = WriteError,
) -> Path:
    """Write ``text`` (JSON, CSV, ...) to ``path`` atomically, encoded as ``encoding``."""
    return write_bytes_atomic(path, text.encode(encoding), overwrite=overwrite, error=error)
