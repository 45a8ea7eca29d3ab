"""The Train widget's training set: (image channel layers, annotation layer) pairs, one
row per case, each with its annotated slices and voxels per class.

Training on the set builds :class:`~napari_unetseg.core.cases.Case` objects (data copied
off the layers on the main thread); "Export training set…" writes them as an nnU-Net raw
dataset with ``core.dataset.write_nnunet_dataset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.channel_match import channel_keys
from ._common import (
    CLASSES_KEY,
    META_KEY,
    TASK_KEY,
    ask_yes_no,
    channel_names,
    image_array,
    notify_info,
    spacing_of,
)

HEADERS = ["images", "annotation", "annotated"]


@dataclass
class Pair:
    """One row: the image layers (one per channel group) and the annotation layer."""

    images: list
    annotation: object

    @property
    def name(self) -> str:
        return self.images[0].name


def describe_annotation(layer) -> str:
    """ "z 3, y 0, x 0 slices; background 900, cell 40" (core ``annotation_summary``)."""
    from ...core.annotations import annotation_summary

    instances = layer.metadata.get(TASK_KEY) == "instances"
    names = None if instances else layer.metadata.get(CLASSES_KEY)
    s = annotation_summary(np.asarray(layer.data), class_names=names, instances=instances)
    parts = []
    if layer.ndim >= 3:
        slices = ", ".join(f"{k} {v}" for k, v in s["annotated_slices"].items())
        parts.append(f"slices {slices}")
    if instances:
        parts.append(f"{s['objects']} objects")
    parts.append(", ".join(f"{k} {v}" for k, v in s["voxels_per_class"].items()))
    return "; ".join(parts)


class TrainingSet(QWidget):
    """Table of (images, annotation) rows with Add / Remove / Export buttons.

    ``get_current`` returns the (image layers, annotation layer) the Train widget's
    pickers show; "Add to training set" appends them as a row.
    """

    def __init__(self, viewer, get_current, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self._get_current = get_current
        self.pairs: list[Pair] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Stretch)
        self.table.setMaximumHeight(120)
        self.table.setToolTip(
            "Cases to train on together; empty: train on the image and annotation above"
        )
        layout.addWidget(self.table)
        row = QHBoxLayout()
        self.add_btn = QPushButton("Add to training set")
        self.remove_btn = QPushButton("Remove")
        self.export_btn = QPushButton("Export…")
        self.add_btn.setToolTip("Add the image channel(s) and annotation chosen above")
        self.remove_btn.setToolTip("Remove the selected rows")
        self.export_btn.setToolTip("Write the training set as an nnU-Net raw dataset folder")
        for b in (self.add_btn, self.remove_btn, self.export_btn):
            row.addWidget(b)
        layout.addLayout(row)
        self.remove_btn.clicked.connect(self.remove_selected)
        viewer.layers.events.removed.connect(self._layers_removed)

    # ------------------------------------------------------------------ rows

    def add_current(self) -> Pair:
        """Add the pair the pickers show; returns it."""
        images, annotation = self._get_current()
        return self.add(images, annotation)

    def add(self, images, annotation) -> Pair:
        """Add a row (image layers, annotation layer); returns it."""
        images = list(images)
        if not images:
            raise ValueError("check the image channel layer(s) of the case first")
        if annotation is None:
            raise ValueError("choose the annotation layer of the case first")
        for pair in self.pairs:
            if pair.annotation is annotation:
                raise ValueError(f"{annotation.name!r} is already in the training set")
        pair = Pair(images, annotation)
        self.pairs.append(pair)
        self.refresh()
        annotation.events.paint.connect(self._schedule_refresh)
        return pair

    def remove(self, index: int) -> None:
        del self.pairs[index]
        self.refresh()

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for r in rows:
            del self.pairs[r]
        self.refresh()

    def refresh(self, *_) -> None:
        """Redraw the rows (the annotation counts are recomputed)."""
        try:
            self.table.setRowCount(len(self.pairs))
        except RuntimeError:  # deleted with its dock
            return
        for r, pair in enumerate(self.pairs):
            cells = [
                ", ".join(layer.name for layer in pair.images),
                pair.annotation.name,
                describe_annotation(pair.annotation),
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(r, c, item)

    def _schedule_refresh(self, *_) -> None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(300, self.refresh)

    def _layers_removed(self, event=None) -> None:
        layers = set(map(id, self.viewer.layers))
        kept = [
            p
            for p in self.pairs
            if id(p.annotation) in layers and all(id(im) in layers for im in p.images)
        ]
        if len(kept) != len(self.pairs):
            self.pairs = kept
            self.refresh()

    # ------------------------------------------------------------------ cases

    def cases(self) -> list:
        """The rows as core Cases (data copied off the layers)."""
        from ...core.cases import Case

        out = []
        names: set[str] = set()
        for i, pair in enumerate(self.pairs):
            name = pair.name if pair.name not in names else f"{pair.name}_{i}"
            names.add(name)
            out.append(
                Case(
                    name=name,
                    image=image_array(pair.images),
                    annotation=np.array(pair.annotation.data, copy=True),
                    spacing=spacing_of(pair.images[0]),
                    meta=pair.images[0].metadata.get(META_KEY),
                    channel_names=channel_names(pair.images),
                )
            )
        return out

    def export_to(self, folder, class_names: list[str]) -> Path | None:
        """Write the set as an nnU-Net raw dataset in ``folder``; asks before replacing an
        existing dataset. Returns the path of dataset.json, or None when declined."""
        from ...core.dataset import write_nnunet_dataset

        if not self.pairs:
            raise ValueError("the training set is empty: add image/annotation pairs first")
        folder = Path(folder)
        overwrite = False
        if (folder / "dataset.json").exists():
            if not self.confirm_overwrite(folder):
                return None
            overwrite = True
        cases = self.cases()
        channels = channel_keys(channel_names(self.pairs[0].images), lower=False)
        out = write_nnunet_dataset(
            folder,
            cases,
            channel_names=channels,
            class_names=class_names,
            overwrite=overwrite,
        )
        notify_info(f"training set written to {folder}")
        return Path(out)

    def confirm_overwrite(self, folder: Path) -> bool:
        """Ask whether to replace the dataset in ``folder`` (tests replace this)."""
        return ask_yes_no(
            self, "Replace dataset?", f"{folder} already holds a dataset. Replace it?"
        )

    def export_dialog(self, class_names: list[str]) -> Path | None:
        folder = QFileDialog.getExistingDirectory(self, "Export training set to folder")
        if not folder:
            return None
        return self.export_to(folder, class_names)
