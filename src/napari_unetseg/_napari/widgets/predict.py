"""Predict whole images with the viewer's current model; re-threshold without re-running;
export labels as NIfTI in the source image's geometry.

The settings come from the schema (:mod:`..forms`): test-time augmentation for the run,
threshold / interior threshold / minimum size for the labels. Labels are made by
``core.postprocess`` from the stored probabilities, so moving a setting does not run the
network again. A prediction layer the user has painted in is never overwritten: new
labels then go to a new layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ...core.channel_match import order_channels
from ...core.config import set_value
from ...core.events import Done, Info, Progress
from ..forms import apply_form, form_widget, settings_form
from ..state import model_state
from ..workers import EventRunner
from ._common import (
    StopsWorkWhenGone,
    channel_count,
    channel_names,
    image_array,
    notify_error,
    notify_info,
    notify_warning,
    spacing_of,
    stop_work_on_close,
)
from ._dock import ScrollingDock
from .device import DeviceCombo
from .export import ExportBox
from .model_box import ModelBox
from .pickers import LayerChecklist
from .results import ResultLayers

RUN_SETTINGS = ("infer.tta",)


@dataclass
class CaseStart:
    """The worker starts predicting case ``index`` of ``total`` (image layer ``source``)."""

    index: int
    total: int
    source: Any


LABEL_SETTINGS = ("infer.threshold", "infer.interior_threshold", "infer.min_size")


class PredictWidget(StopsWorkWhenGone, ScrollingDock):
    """Dock widget: model, image channel(s), Run / Cancel, post-processing, export.

    Scriptable API: :meth:`setting` (a settings control by key), :meth:`run`,
    :meth:`cancel`, :meth:`load_from`, :meth:`recompute`, :meth:`export_to`.
    ``results`` maps the source image name to its
    :class:`~napari_unetseg.core.inference.Prediction`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = model_state(self.viewer)
        self.runner = EventRunner()
        self._synced: Any = None  # the checkpoint whose settings the controls hold
        self._made_with: dict[str, Any] = {}
        self._case: CaseStart | None = None
        self.results: dict[str, Any] = {}
        self.outputs = ResultLayers(self.viewer)
        self.last_done: Done | None = None
        layout = self.body

        self.model_box = ModelBox(self.state)
        self.model_label = self.model_box.model_label
        self.load_btn = self.model_box.load_btn
        layout.addWidget(self.model_box)

        box = QGroupBox("Predict")
        form = QFormLayout(box)
        self.image_list = LayerChecklist(self.viewer, "image")
        self.image_list.setToolTip(
            "Images to predict, one after the other; for a model of several channels, "
            "check each image's channel layers in order"
        )
        form.addRow("Image(s)", self.image_list)
        self.run_form = settings_form(("infer",), only=RUN_SETTINGS)
        form.addRow(self.run_form.native)
        self.device_combo = DeviceCombo()
        form.addRow("Device", self.device_combo)
        row = QHBoxLayout()
        self.run_btn = QPushButton("Run")
        self.cancel_btn = QPushButton("Cancel")
        self.run_btn.clicked.connect(lambda: self._guard(self.run))
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        form.addRow(self.progress)
        layout.addWidget(box)

        box = QGroupBox("Labels from the stored probabilities (no re-run)")
        box_layout = QVBoxLayout(box)
        self.labels_form = settings_form(("infer",), only=LABEL_SETTINGS)
        box_layout.addWidget(self.labels_form.native)
        layout.addWidget(box)
        self._recompute_timer = QTimer(self)
        self._recompute_timer.setSingleShot(True)
        self._recompute_timer.setInterval(150)
        self._recompute_timer.timeout.connect(lambda: self._guard(self.recompute))
        self.labels_form.changed.connect(lambda *_: self._recompute_timer.start())

        self.export_box = ExportBox(self.viewer, confirm=lambda p: self.confirm_overwrite(p))
        self.export_combo, self.export_btn = self.export_box.combo, self.export_box.button
        layout.addWidget(self.export_box)
        layout.addStretch(1)

        self.state.changed.connect(self._model_changed)
        stop_work_on_close(self, self.runner)
        self._model_changed()
        self._set_running(False)

    # ------------------------------------------------------------------ model

    @property
    def checkpoint(self):
        return self.state.checkpoint

    def setting(self, key: str):
        """The magicgui control of setting ``key`` (e.g. ``"infer.min_size"``)."""
        form = self.run_form if key in RUN_SETTINGS else self.labels_form
        return form_widget(form, key)

    def load_from(self, path):
        """Load a .safetensors model; it becomes the viewer's current model."""
        return self.model_box.load_from(path)

    def _model_changed(self, *_):
        """A newly chosen model's stored prediction settings become the starting point
        of the controls; the user's edits stay until the model changes."""
        try:
            ckpt = self.checkpoint
            self.set_next_step(
                "train a model in the Train widget, or Load model…"
                if ckpt is None
                else "check the image channel(s) and press Run"
            )
            if ckpt is None or ckpt is self._synced:
                return
            self._synced = ckpt
            infer = ckpt.config.infer
            for key in (*RUN_SETTINGS, *LABEL_SETTINGS):
                self.setting(key).value = getattr(infer, key.split(".")[1])
            instances = ckpt.task == "instances"
            self.setting("infer.threshold").enabled = not instances
            self.setting("infer.interior_threshold").enabled = instances
        except RuntimeError:  # deleted with its dock
            self.state.changed.disconnect(self._model_changed)

    def infer_config(self, ckpt):
        """The model's prediction settings with the widget's controls applied (each
        value checked by the core)."""
        cfg = ckpt.config.copy()
        apply_form(self.run_form, cfg)
        apply_form(self.labels_form, cfg)
        set_value(cfg, "infer.device", self.device_combo.device)
        return cfg.infer

    # ------------------------------------------------------------------ run

    def cases_to_predict(self, ckpt) -> list[tuple[Any, np.ndarray]]:
        """The checked image layers grouped into cases of the model's channel count
        (a one-channel model: every checked image is a case), as (first layer, image
        (C, *spatial)) pairs in layer-list order."""
        layers = self.image_list.layers()
        if not layers:
            raise ValueError("check the image layer(s) to predict")
        wanted = int(ckpt.config.model.in_channels)
        groups: list[list] = []
        current: list = []
        count = 0
        for layer in layers:
            current.append(layer)
            count += channel_count(layer)
            if count >= wanted:
                if count > wanted:
                    raise ValueError(
                        f"the model expects {wanted} channel(s) per image; the checked "
                        f"layers {[la.name for la in current]} give {count}: check the "
                        f"channels of each image in order"
                    )
                groups.append(current)
                current, count = [], 0
        if current:
            raise ValueError(
                f"the model expects {wanted} channel(s) per image; "
                f"{[la.name for la in current]} are left over"
            )
        cases = []
        for group in groups:
            image, match = order_channels(
                image_array(group), ckpt.channel_names, channel_names(group)
            )
            if match.message:
                (notify_warning if match.warning else notify_info)(match.message)
            cases.append((group[0], image))
        return cases

    def run(self):
        """Predict the checked image(s) in the background, one case after the other.
        Returns the worker."""
        if self.runner.running:
            raise RuntimeError("a prediction is already running")
        ckpt = self.checkpoint
        if ckpt is None:
            raise ValueError("no model: train one in the Train widget or load a model file")
        jobs = self.cases_to_predict(ckpt)
        infer = self.infer_config(ckpt)
        self._made_with = {"interior": infer.interior_threshold, "min_size": infer.min_size}
        self.last_done = None
        self._case = None
        n = len(jobs)

        def factory(token):
            from ...core.inference import predict

            for i, (source, image) in enumerate(jobs):
                if token.cancelled:
                    return
                yield CaseStart(i, n, source)
                yield from predict(
                    ckpt,
                    image,
                    infer,
                    spacing=spacing_of(source),
                    keep_probabilities=True,
                    cancel=token,
                )

        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        self._set_running(True)
        return self.runner.start(
            factory,
            lambda ev: self._on_event(ev, ckpt),
            on_error=self._on_error,
            on_finished=self._on_finished,
        )

    def cancel(self) -> None:
        if self.runner.running:
            self.runner.stop()
            self.progress.setFormat("cancelling…")

    def _on_event(self, ev, ckpt) -> None:
        case = self._case
        prefix = f"{case.index + 1}/{case.total} {case.source.name}: " if case else ""
        if isinstance(ev, CaseStart):
            self._case = ev
            self.progress.setRange(0, 1000 * ev.total)
            self.progress.setValue(1000 * ev.index)
            self.progress.setFormat(f"{ev.index + 1}/{ev.total} {ev.source.name}")
        elif isinstance(ev, Progress):
            done = 1000 * (case.index if case else 0) + 1000 * ev.done // max(ev.total, 1)
            self.progress.setValue(done)
            self.progress.setFormat(f"{prefix}{ev.stage} {ev.done}/{ev.total}".strip())
        elif isinstance(ev, Info):
            self.progress.setFormat(f"{prefix}{ev.message}"[:80])
        elif isinstance(ev, Done):
            if self.last_done is None or not self.last_done.cancelled:
                self.last_done = ev
            if ev.cancelled or ev.result is None or case is None:
                return
            source = case.source
            self.results[source.name] = ev.result
            self.outputs.show(source, ev.result, ckpt)
            if ev.result.probabilities is not None and self._settings_moved(ev.result):
                self.recompute(only=source.name)
            self.outputs.report_empty(source.name)
            layer = self.outputs.main_layer(source.name)
            if layer is not None:
                self.export_combo.refresh()
                self.export_combo.set_value(layer, chosen=False)

    def _settings_moved(self, pred) -> bool:
        now = self.infer_config(self.checkpoint) if self.checkpoint is not None else None
        if now is None:
            return False
        if pred.task == "instances":
            made = (self._made_with["interior"], self._made_with["min_size"])
            return made != (now.interior_threshold, now.min_size)
        return (now.threshold, now.min_size) != (None, self._made_with["min_size"])

    def recompute(self, only: str | None = None) -> None:
        """Labels again from the stored probabilities with the threshold / minimum size
        (core.postprocess); the network is not run again."""
        from ...core.postprocess import instance_labels, semantic_labels

        cfg = self.infer_config(self.checkpoint) if self.checkpoint is not None else None
        if cfg is None:
            return
        for name, pred in self.results.items():
            probs = pred.probabilities
            if probs is None or (only is not None and name != only):
                continue
            if getattr(pred, "task", "semantic") == "instances":
                inst = instance_labels(
                    probs,
                    interior_threshold=cfg.interior_threshold,
                    foreground_threshold=0.5,
                    min_size=cfg.min_size,
                )
                self.outputs.update(name, "instances", inst)
                self.outputs.update(name, "labels", (inst > 0).astype(np.uint8))
            else:
                labels = semantic_labels(probs, min_size=cfg.min_size, threshold=cfg.threshold)
                self.outputs.update(name, "labels", labels)

    def _on_error(self, exc: BaseException) -> None:
        notify_error(f"Prediction failed: {exc}")

    def _on_finished(self) -> None:
        try:
            self._set_running(False)
            self.progress.setRange(0, 1)
            if self.last_done is None:
                self.progress.setValue(0)
                self.progress.setFormat("failed or aborted")
            elif self.last_done.cancelled:
                self.progress.setValue(0)
                self.progress.setFormat("cancelled")
            else:
                self.progress.setValue(1)
                self.progress.setFormat("done")
                self.set_next_step("check the labels; paint corrections or Export them")
        except RuntimeError:
            pass

    # ------------------------------------------------------------------ export

    def export_to(self, layer, path) -> Path | None:
        """Save a labels layer as NIfTI with its source image's geometry; see
        :meth:`ExportBox.export_to`."""
        return self.export_box.export_to(layer, path)

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask the user whether to replace ``path`` (tests replace this method)."""
        return self.export_box.ask_overwrite(path)

    # ------------------------------------------------------------------ Qt glue

    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.model_box.set_busy(running)

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            notify_error(str(exc))
