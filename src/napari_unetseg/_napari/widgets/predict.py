"""Predict whole images with the viewer's current model; re-threshold without re-running;
export labels as NIfTI in the source image's geometry.

The settings come from the schema (:mod:`..forms`): test-time augmentation for the run,
threshold / interior threshold / minimum size for the labels. Labels are made by
``core.postprocess`` from the stored probabilities, so moving a setting does not run the
network again. A prediction layer the user has painted in is never overwritten: new
labels then go to a new layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ...core.config import set_value
from ...core.events import Done, Info, Progress
from ..forms import apply_form, form_widget, settings_form
from ..state import model_state
from ..workers import EventRunner
from ._common import StopsWorkWhenGone, image_array, notify_error, notify_info, stop_work_on_close
from ._dock import ScrollingDock
from .device import DeviceCombo
from .model_box import ModelBox
from .pickers import LayerChecklist, LayerCombo, is_prediction
from .results import ResultLayers

RUN_SETTINGS = ("infer.tta",)
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
        self.image_list.setToolTip("One checked layer per model input channel")
        form.addRow("Image channel(s)", self.image_list)
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

        box = QGroupBox("Export labels")
        form = QFormLayout(box)
        self.export_combo = LayerCombo(self.viewer, "labels", prefer=is_prediction)
        form.addRow("Layer", self.export_combo)
        self.export_btn = QPushButton("Export as NIfTI…")
        self.export_btn.setToolTip("Saved with the source image's affine and header")
        self.export_btn.clicked.connect(self._export_dialog)
        form.addRow(self.export_btn)
        layout.addWidget(box)
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

    def run(self):
        """Predict the checked image layer(s) in the background. Returns the worker."""
        if self.runner.running:
            raise RuntimeError("a prediction is already running")
        ckpt = self.checkpoint
        if ckpt is None:
            raise ValueError("no model: train one in the Train widget or load a model file")
        layers = self.image_list.layers()
        image = image_array(layers)
        source = layers[0]
        infer = self.infer_config(ckpt)
        self._made_with = {"threshold": None, "interior": infer.interior_threshold}
        self._made_with["min_size"] = infer.min_size
        self.last_done = None

        def factory(token):
            from ...core.inference import predict

            return predict(ckpt, image, infer, keep_probabilities=True, cancel=token)

        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        self._set_running(True)

        def on_event(ev):
            self._on_event(ev, source, ckpt)

        return self.runner.start(
            factory, on_event, on_error=self._on_error, on_finished=self._on_finished
        )

    def cancel(self) -> None:
        if self.runner.running:
            self.runner.stop()
            self.progress.setFormat("cancelling…")

    def _on_event(self, ev, source, ckpt) -> None:
        if isinstance(ev, Progress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.progress.setFormat(f"{ev.stage} {ev.done}/{ev.total}".strip())
        elif isinstance(ev, Info):
            self.progress.setFormat(ev.message[:80])
        elif isinstance(ev, Done):
            self.last_done = ev
            if ev.cancelled or ev.result is None:
                return
            self.results[source.name] = ev.result
            self.outputs.show(source, ev.result, ckpt)
            if ev.result.probabilities is not None and self._settings_moved(ev.result):
                self.recompute(only=source.name)
            self.outputs.report_empty(source.name)
            layer = self.outputs.main_layer(source.name)
            if layer is not None:
                self.export_combo.refresh()
                self.export_combo.set_value(layer)

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
        """Save a labels layer as NIfTI with its source image's geometry. Asks before
        replacing an existing file; returns the path, or None when the user declined."""
        from ...core.io import write_labels
        from ..writer import meta_for_layer

        if layer is None:
            raise ValueError("choose a labels layer to export")
        path = Path(path)
        if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
            path = path.with_name(path.name + ".nii.gz")
        if path.exists() and not self.confirm_overwrite(path):
            return None
        meta = meta_for_layer(layer, self.viewer)
        out = Path(write_labels(np.asarray(layer.data), meta, path, overwrite=True))
        notify_info(f"saved {layer.name!r} to {out}")
        return out

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask the user whether to replace ``path`` (tests replace this method)."""
        answer = QMessageBox.question(
            self,
            "Replace file?",
            f"{path} exists. Replace it?",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    def _export_dialog(self) -> None:
        layer = self.export_combo.value
        if layer is None:
            notify_error("choose a labels layer to export")
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export labels",
            f"{layer.name}.nii.gz",
            "NIfTI (*.nii.gz *.nii)",
            options=QFileDialog.DontConfirmOverwrite,
        )
        if path:
            self._guard(lambda: self.export_to(layer, path))

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
