"""Recovery copies of annotations, so that a crash or a killed viewer loses at most a few
seconds of painting (napari itself has no autosave).

A recovery store is keyed by the source image (:func:`image_key`: its path, shape and a
cheap hash of a strided sample of its voxels) and lives under the user's cache folder,
``~/.cache/napari-unetseg/recovery`` (``$XDG_CACHE_HOME`` respected), or under
``$NAPARI_UNETSEG_RECOVERY_DIR`` when that is set. Each annotation layer of an image is
one entry: ``<key>/<entry>.npz`` (the annotation array, compressed) and
``<key>/<entry>.json`` (layer name, class names, task, shape, dtype, time), both written
atomically, so a process killed mid-write leaves the previous copy intact.

:class:`ThrottledSaver` takes snapshots on the caller's thread (the GUI thread, where the
array is consistent) at most every ``interval`` seconds and compresses and writes them on
a background thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io.atomic import write_bytes_atomic

#: Environment variable that moves the recovery store (tests, shared machines).
RECOVERY_ENV = "NAPARI_UNETSEG_RECOVERY_DIR"
#: Default seconds between two autosaves of one annotation.
DEFAULT_INTERVAL = 3.0
_SAMPLE_VOXELS = 1 << 16


def recovery_dir() -> Path:
    """The folder of all recovery stores (not created here)."""
    env = os.environ.get(RECOVERY_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "napari-unetseg" / "recovery"


def image_key(source: str | os.PathLike | None, data: Any) -> str:
    """A stable key for a source image: its resolved path (or name), its shape and dtype,
    and a hash of a strided sample of at most ~65k voxels (cheap for large volumes).

    data: the image array, any shape (e.g. (C, Z, Y, X), (Z, Y, X) or (Y, X)); numpy or
    any array that supports strided slicing (dask, zarr).
    """
    shape = tuple(int(s) for s in np.shape(data))
    src = str(source or "")
    if src and os.path.exists(src):
        src = os.path.realpath(src)
    h = hashlib.sha256(f"{src}|{shape}|{getattr(data, 'dtype', '')}".encode())
    if shape and int(np.prod(shape)) > 0:
        per_axis = max(1, int(np.ceil((np.prod(shape) / _SAMPLE_VOXELS) ** (1 / len(shape)))))
        sample = np.ascontiguousarray(
            np.asarray(data[tuple(slice(None, None, per_axis) for _ in shape)])
        )
        h.update(sample.tobytes())
    return h.hexdigest()[:24]


def entry_name(layer_name: str) -> str:
    """A file-system-safe entry name for an annotation layer name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", layer_name).strip("._") or "annotation"
    return slug[:80]


@dataclass
class Recovery:
    """One recovered annotation: ``path`` is the .npz; ``info`` the JSON record (keys
    ``layer_name``, ``class_names``, ``task``, ``shape``, ``dtype``, ``time``,
    ``image_name``, ``source``)."""

    key: str
    entry: str
    path: Path
    info: dict = field(default_factory=dict)

    @property
    def layer_name(self) -> str:
        return str(self.info.get("layer_name", self.entry))

    def load(self) -> np.ndarray:
        """The annotation array, (Z, Y, X) or (Y, X), as it was saved."""
        return load_recovery(self)


def save_recovery(
    key: str,
    annotation: np.ndarray,
    *,
    layer_name: str,
    entry: str | None = None,
    **info: Any,
) -> Recovery:
    """Write ``annotation`` (any shape, integer labels) as entry ``entry`` (default: from
    ``layer_name``) of image ``key``, atomically; ``info`` (class names, task, image name,
    source) goes into the JSON record. Returns the :class:`Recovery`."""
    entry = entry or entry_name(layer_name)
    folder = recovery_dir() / key
    arr = np.asarray(annotation)
    buf = io.BytesIO()
    np.savez_compressed(buf, annotation=arr)
    path = write_bytes_atomic(folder / f"{entry}.npz", buf.getvalue(), overwrite=True)
    record = {
        **info,
        "layer_name": layer_name,
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "time": time.time(),
    }
    text = json.dumps(record, default=str, indent=1)
    write_bytes_atomic(folder / f"{entry}.json", text.encode(), overwrite=True)
    return Recovery(key, entry, path, record)


def list_recoveries(key: str) -> list[Recovery]:
    """The recoveries of image ``key`` that have both files and a readable record,
    newest first."""
    folder = recovery_dir() / key
    if not folder.is_dir():
        return []
    found = []
    for js in folder.glob("*.json"):
        npz = js.with_suffix(".npz")
        if js.name.startswith(".") or not npz.is_file():
            continue
        try:
            info = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            found.append(Recovery(key, js.stem, npz, info))
    return sorted(found, key=lambda r: -float(r.info.get("time", 0) or 0))


def load_recovery(recovery: Recovery) -> np.ndarray:
    """The saved annotation array of ``recovery``; ValueError (one line, naming the file)
    when it is damaged or does not match its record."""
    try:
        with np.load(recovery.path, allow_pickle=False) as z:
            arr = z["annotation"]
    except Exception as exc:
        raise ValueError(f"the recovery file {recovery.path} is damaged ({exc})") from None
    shape = recovery.info.get("shape")
    if shape is not None and list(arr.shape) != list(shape):
        raise ValueError(f"the recovery file {recovery.path} does not match its record")
    return arr


def discard_recovery(recovery: Recovery) -> None:
    """Delete one recovery (both files); the image folder too once it is empty."""
    for p in (recovery.path, recovery.path.with_suffix(".json")):
        p.unlink(missing_ok=True)
    folder = recovery.path.parent
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def discard_recoveries(key: str) -> int:
    """Delete every recovery of image ``key``; returns how many there were."""
    recs = list_recoveries(key)
    for r in recs:
        discard_recovery(r)
    return len(recs)


# one background thread writes for every saver: writes never overlap
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unetseg-autosave")


class ThrottledSaver:
    """Save one annotation at most every ``interval`` seconds, off the caller's thread.

    Call :meth:`changed` after every change with a function that returns a COPY of the
    annotation (called on the caller's thread, only when a save is due). When a save is
    not due yet, :meth:`changed` returns the seconds to wait before calling it again
    (a GUI starts a single-shot timer); the change is remembered meanwhile.

    key, layer_name, entry, info: as for :func:`save_recovery`.
    """

    def __init__(
        self,
        key: str,
        layer_name: str,
        *,
        entry: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        **info: Any,
    ) -> None:
        self.key = key
        self.layer_name = layer_name
        self.entry = entry or entry_name(layer_name)
        self.info = info
        self.interval = float(interval)
        self.clock = clock
        self.dirty = False
        self.saves = 0
        self.last_error: BaseException | None = None
        self._last = -float("inf")
        self._lock = threading.Lock()
        self._queued: np.ndarray | None = None
        self._future: Future | None = None
        self._idle = threading.Event()
        self._idle.set()

    def changed(self, snapshot: Callable[[], np.ndarray]) -> float:
        """Note a change; save now if due (returns 0.0), else return the seconds left."""
        self.dirty = True
        left = self._last + self.interval - self.clock()
        if left > 0:
            return left
        self.save_now(snapshot())
        return 0.0

    def save_now(self, array: np.ndarray) -> None:
        """Queue ``array`` (a copy the caller no longer changes) for writing now."""
        self._last = self.clock()
        self.dirty = False
        with self._lock:
            self._queued = array
            self._idle.clear()
            if self._future is None:
                self._future = _EXECUTOR.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                arr, self._queued = self._queued, None
                if arr is None:
                    self._future = None
                    self._idle.set()
                    return
            try:
                save_recovery(
                    self.key, arr, layer_name=self.layer_name, entry=self.entry, **self.info
                )
                self.saves += 1
                self.last_error = None
            except Exception as exc:  # reported through last_error; the next change retries
                self.last_error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written; False on timeout."""
        return self._idle.wait(timeout)

    def discard(self) -> None:
        """Forget this annotation's recovery (after the user saved it for good)."""
        self.wait(10)
        discard_recovery(
            Recovery(self.key, self.entry, recovery_dir() / self.key / f"{self.entry}.npz")
        )
