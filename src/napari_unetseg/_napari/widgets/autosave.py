"""Autosave of annotation layers and the offer to restore them (napari has no autosave).

:class:`AnnotationAutosave` watches every annotation layer of a viewer (those the
Annotate widget made or the user picked as annotation): after each paint stroke, fill,
undo / redo or data change it hands a copy of the layer's array to a
:class:`~napari_unetseg.core.autosave.ThrottledSaver` at most every few seconds; the
saver compresses and writes it in a background thread, atomically, under the recovery
store of the layer's source image (``core.autosave``).

When an image is added for which recoveries exist, :func:`ask_restore` asks what to do
(a message box; tests replace this module-level function). Restoring adds NEW labels
layers ("<name> (recovered)") in the image's geometry; existing layers are never touched.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from ...core import autosave as store
from ._common import (
    CLASSES_KEY,
    ROLE_KEY,
    TASK_KEY,
    annotation_colormap,
    current_slice,
    geometry_kwargs,
)

#: Layer metadata: the recovery entry of an annotation layer (kept when renamed).
ENTRY_KEY = "unetseg_recovery_entry"
#: Layer metadata: the recovery key of the layer's source image.
IMAGE_KEY = "unetseg_recovery_key"
#: On an annotation layer: the recovery store key its autosaves go under.
SAVED_KEY = "unetseg_recovery_of"


def discard_saved(metadata: dict | None) -> int:
    """Remove the autosave of a layer that has just been saved to a file (its metadata
    names the store key and entry); returns how many recoveries were removed."""
    metadata = metadata or {}
    key, entry = metadata.get(SAVED_KEY), metadata.get(ENTRY_KEY)
    if not key or not entry:
        return 0
    gone = [r for r in store.list_recoveries(str(key)) if r.entry == entry]
    for recovery in gone:
        store.discard_recovery(recovery)
    return len(gone)


def ask_restore(parent: Any, image_name: str, recoveries: list) -> str:
    """Ask whether to restore the unsaved annotations of ``image_name``: returns
    "restore", "discard" or "keep" (ask again next time)."""
    from qtpy.QtWidgets import QMessageBox

    names = ", ".join(repr(r.layer_name) for r in recoveries)
    box = QMessageBox(parent)
    box.setWindowTitle("Recover annotations")
    box.setText(
        f"Autosaved annotations of {image_name!r} were found ({names}), e.g. from a "
        "session that ended unexpectedly. Restore them as new layers?"
    )
    restore = box.addButton("Restore", QMessageBox.AcceptRole)
    discard = box.addButton("Discard", QMessageBox.DestructiveRole)
    box.addButton("Later", QMessageBox.RejectRole)
    box.exec_() if hasattr(box, "exec_") else box.exec()
    clicked = box.clickedButton()
    return "restore" if clicked is restore else "discard" if clicked is discard else "keep"


def source_key(image) -> str:
    """The recovery key of an image layer (cached in its metadata)."""
    key = image.metadata.get(IMAGE_KEY)
    if not key:
        path = image.metadata.get("unetseg_source") or getattr(image.source, "path", None)
        key = store.image_key(path or image.name, image.data)
        image.metadata[IMAGE_KEY] = key
    return key


def _viewed_plane(viewer, layer) -> tuple[tuple, int] | None:
    """((axis, index), checksum) of the slice of ``layer`` on screen (2D layers: the whole
    image), from public API only; None in the 3D view."""
    data = layer.data
    if np.ndim(data) == 2:
        key: tuple = ()
        plane = np.asarray(data)
    else:
        try:
            axis, index = current_slice(viewer, layer)
        except ValueError:
            return None
        key = (axis, index)
        plane = np.asarray(np.take(data, index, axis=axis))
    return key, zlib.crc32(np.ascontiguousarray(plane).tobytes())


class AnnotationAutosave(QObject):
    """Autosave every annotation layer of ``viewer``; offer recoveries for new images.

    ``interval``: seconds between two saves of one layer. Public: :meth:`watch`,
    :meth:`saver` (the ThrottledSaver of a layer), :meth:`flush`, :meth:`offer`.
    """

    def __init__(self, viewer, parent=None, interval: float = store.DEFAULT_INTERVAL):
        super().__init__(parent)
        self.viewer = viewer
        self.interval = interval
        self._watched: dict[int, tuple[Any, store.ThrottledSaver | None, QTimer, dict]] = {}
        self._offered: set[str] = set()
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self._removed)
        for layer in list(viewer.layers):
            if type(layer).__name__ == "Image":
                QTimer.singleShot(0, lambda im=layer: self._offer_later(im))
            else:
                self.watch(layer)

    # ------------------------------------------------------------------ watching

    def watch(self, layer) -> bool:
        """Autosave ``layer`` if it is an annotation labels layer; True when watched."""
        if layer is None or layer.metadata.get(ROLE_KEY) != "annotation":
            return False
        if type(layer).__name__ != "Labels" or id(layer) in self._watched:
            return id(layer) in self._watched
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.timeout.connect(lambda: self._changed(layer))
        self._watched[id(layer)] = (layer, None, timer, {})
        for ev in (layer.events.paint, layer.events.data, layer.events.set_data):
            ev.connect(self._on_event)
        return True

    def saver(self, layer) -> store.ThrottledSaver | None:
        """The saver of a watched layer (None before its first change)."""
        item = self._watched.get(id(layer))
        return None if item is None else item[1]

    def _make_saver(self, layer) -> store.ThrottledSaver:
        image = self._image_of(layer)
        key = source_key(image) if image is not None else store.image_key(layer.name, layer.data)
        entry = layer.metadata.get(ENTRY_KEY) or store.entry_name(layer.name)
        layer.metadata[ENTRY_KEY] = entry
        layer.metadata[SAVED_KEY] = key  # the writer discards the recovery once saved
        return store.ThrottledSaver(
            key,
            layer.name,
            entry=entry,
            interval=self.interval,
            class_names=list(layer.metadata.get(CLASSES_KEY) or []),
            task=layer.metadata.get(TASK_KEY, "semantic"),
            image_name=None if image is None else image.name,
        )

    def _image_of(self, layer):
        """The image an annotation layer belongs to: the one named in its metadata, else
        the only image of its spatial shape."""
        name = layer.metadata.get("unetseg_source")
        images = [la for la in self.viewer.layers if type(la).__name__ == "Image"]
        for im in images:
            if im.name == name:
                return im
        shape = tuple(np.shape(layer.data))
        same = [im for im in images if tuple(np.shape(im.data))[-len(shape) :] == shape]
        return same[0] if len(same) == 1 else None

    def _on_event(self, event=None) -> None:
        layer = getattr(event, "source", None)
        item = self._watched.get(id(layer))
        if item is None:
            return
        planes = item[3]
        viewed = _viewed_plane(self.viewer, layer)
        # slicing refreshes too: count a refresh only when the slice on screen changed
        # since it was last seen (undo / redo, which napari announces with a refresh only)
        refresh = getattr(event, "type", "") == "set_data"
        if refresh and (viewed is None or planes.get(viewed[0], viewed[1]) == viewed[1]):
            if viewed is not None:
                planes[viewed[0]] = viewed[1]
            return
        if viewed is not None:
            planes[viewed[0]] = viewed[1]
        if getattr(event, "type", "") == "paint":
            # napari announces a stroke before it writes the voxels: copy them after this
            # event, the saver already knowing that a change is pending
            self._saver_of(layer).dirty = True
            QTimer.singleShot(0, lambda: self._changed(layer))
            return
        self._changed(layer)

    def _saver_of(self, layer) -> store.ThrottledSaver:
        """The saver of a watched layer, made at its first change."""
        _layer, saver, timer, planes = self._watched[id(layer)]
        if saver is None:
            saver = self._make_saver(layer)
            self._watched[id(layer)] = (layer, saver, timer, planes)
        return saver

    def _changed(self, layer) -> None:
        item = self._watched.get(id(layer))
        if item is None:
            return
        timer = item[2]
        saver = self._saver_of(layer)
        saver.layer_name = layer.name
        saver.info["class_names"] = list(layer.metadata.get(CLASSES_KEY) or [])
        left = saver.changed(lambda: np.array(layer.data, copy=True))
        if left > 0 and not timer.isActive():
            timer.start(int(left * 1000) + 20)

    def flush(self, timeout: float = 10.0) -> bool:
        """Save every pending change now and wait for the writes; True when all done."""
        ok = True
        for layer, saver, timer, _hist in list(self._watched.values()):
            if saver is not None and saver.dirty:
                timer.stop()
                saver.save_now(np.array(layer.data, copy=True))
            if saver is not None:
                ok = saver.wait(timeout) and ok
        return ok

    def _removed(self, event) -> None:
        layer = event.value
        item = self._watched.pop(id(layer), None)
        if item is None:
            return
        _layer, saver, timer, _hist = item
        with contextlib.suppress(RuntimeError):
            timer.stop()
        for ev in (layer.events.paint, layer.events.data, layer.events.set_data):
            ev.disconnect(self._on_event)
        if saver is not None and saver.dirty:
            saver.save_now(np.array(layer.data, copy=True))

    # ------------------------------------------------------------------ restoring

    def _inserted(self, event) -> None:
        layer = event.value
        if type(layer).__name__ == "Image":
            QTimer.singleShot(0, lambda: self._offer_later(layer))
        else:
            self.watch(layer)

    def _offer_later(self, image) -> None:
        self.offer(image)

    def offer(self, image) -> list:
        """Offer the recoveries of ``image`` (once per image and session); returns the
        layers restored."""
        if image not in self.viewer.layers:
            return []
        key = source_key(image)
        if key in self._offered:
            return []
        self._offered.add(key)
        mine = {s.entry for _l, s, _t, _h in self._watched.values() if s is not None}
        recs = [r for r in store.list_recoveries(key) if r.entry not in mine]
        if not recs:
            return []
        answer = ask_restore(self.parent(), image.name, recs)
        if answer == "discard":
            for r in recs:
                store.discard_recovery(r)
            return []
        if answer != "restore":
            return []
        return [self.restore(image, r) for r in recs]

    def restore(self, image, recovery: store.Recovery):
        """Add ``recovery`` as a new annotation layer on ``image``'s geometry; it keeps
        autosaving to the same entry. Returns the layer."""
        data = recovery.load()
        info = recovery.info
        task = info.get("task") or "semantic"
        names = list(info.get("class_names") or [])
        kwargs = geometry_kwargs(
            image,
            **{ROLE_KEY: "annotation", CLASSES_KEY: names, TASK_KEY: task},
            **{ENTRY_KEY: recovery.entry},
        )
        top = max(int(data.max()) if data.size else 0, len(names) + 1)
        return self.viewer.add_labels(
            data,
            name=f"{recovery.layer_name} (recovered)",
            colormap=annotation_colormap(top, instances=task == "instances"),
            **kwargs,
        )
