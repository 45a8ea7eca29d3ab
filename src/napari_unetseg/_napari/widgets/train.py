"""Train a U-Net on the viewer's layers in a background thread, with live feedback.

The Trainer (``core.training``) runs in a napari thread worker; this widget only reads
its controls (a form generated from the settings schema, :mod:`..forms`), starts the
Trainer and turns its events into progress, a loss / Dice plot (:mod:`.plot`), a preview
layer and a banner. torch is imported in the worker thread when training starts, never
when the widget opens.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton

from ...core.cases import Case
from ...core.config import Config, set_value
from ...core.events import Done, Info, Preview, Validation
from ..state import model_state
from ..workers import EventRunner, Steps
from ._common import (
    CLASSES_KEY,
    TASK_KEY,
    StopsWorkWhenGone,
    current_slice,
    image_array,
    notify_error,
    spacing_of,
    stop_work_on_close,
)
from ._dock import ScrollingDock
from .model_box import ModelBox
from .pickers import LayerChecklist, LayerCombo, is_annotation
from .preview import PREVIEW_LAYER, show_preview
from .suggest import SuggestBox
from .train_feedback import TrainFeedback
from .train_settings import TrainSettings
from .training_set import Pair, TrainingSet

__all__ = ["PREVIEW_LAYER", "TrainWidget"]


class TrainWidget(StopsWorkWhenGone, ScrollingDock):
    """Dock widget: inputs, settings, Start / Stop / Continue, progress, plot, preview.

    Scriptable API: :meth:`setting` (a settings control by key, e.g.
    ``"train.iterations"``), :meth:`build_config`, :meth:`start`, :meth:`stop`,
    :meth:`continue_training`, :meth:`save_to`, :meth:`load_from`. ``runner.worker`` is
    the running napari worker (its ``finished`` signal ends every run).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = model_state(self.viewer)
        self.runner = EventRunner()
        self.runner.keep_result = True  # closing mid-run keeps the model reached so far
        self.checkpoint: Any = None  # last trained checkpoint (with optimizer state)
        self.loaded: Any = None  # checkpoint loaded from a file, for fine-tuning
        self.trainer: Any = None
        self.last_done: Done | None = None
        self.last_preview: Preview | None = None  # for "Accept prediction on this slice"
        self._preview_request: tuple[int, int] | None = None
        self._run_inputs: dict = {}
        layout = self.body

        # ---------------------------------------------------------------- inputs
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
        self.image_list = LayerChecklist(self.viewer, "image")
        self.image_list.setToolTip("One checked layer per input channel (same shape)")
        form.addRow("Image channel(s)", self.image_list)
        self.annotation_combo = LayerCombo(self.viewer, "labels", prefer=is_annotation)
        self.annotation_combo.setToolTip("Labels painted in the Annotate widget")
        self.annotation_combo.layer_changed.connect(self._annotation_changed)
        form.addRow("Annotation", self.annotation_combo)
        self.validation_combo = LayerCombo(
            self.viewer, "labels", none_text="(held-out annotated slices)", default_none=True
        )
        self.validation_combo.setToolTip(
            "Optional dense reference of the same image to validate on"
        )
        form.addRow("Validation", self.validation_combo)
        self.training_set = TrainingSet(self.viewer, self.current_pair)
        self.training_set.add_btn.clicked.connect(
            lambda: self._guard(self.training_set.add_current)
        )
        self.training_set.export_btn.clicked.connect(lambda: self._guard(self.export_dialog))
        form.addRow("Training set", self.training_set)
        layout.addWidget(box)

        # ---------------------------------------------------------------- settings
        self.settings = TrainSettings()
        self.device_combo = self.settings.device_combo
        self.plan_btn = self.settings.plan_btn
        self.plan_btn.clicked.connect(lambda: self._guard(self.show_plan))
        layout.addWidget(self.settings)
        self.setting("train.iterations").changed.connect(self._update_continue_text)

        # ---------------------------------------------------------------- run
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.continue_btn = QPushButton("Continue")
        self.start_btn.setToolTip("Train a new model (or fine-tune the loaded one)")
        self.stop_btn.setToolTip("Stop after the current step; the model so far is kept")
        self.start_btn.clicked.connect(lambda: self._guard(self.start))
        self.stop_btn.clicked.connect(self.stop)
        self.continue_btn.clicked.connect(lambda: self._guard(self.continue_training))
        for b in (self.start_btn, self.stop_btn, self.continue_btn):
            row.addWidget(b)
        layout.addLayout(row)
        self.feedback = TrainFeedback()
        layout.addWidget(self.feedback)
        fb = self.feedback
        self.banner, self.progress, self.readout = fb.banner, fb.progress, fb.readout
        self.history, self.validation, self.messages = fb.history, fb.validation, fb.messages

        self.suggest_box = SuggestBox(self)
        layout.addWidget(self.suggest_box)

        # ---------------------------------------------------------------- model
        self.model_box = ModelBox(self.state)
        self.model_box.loaded.connect(self._model_loaded)
        self.model_label = self.model_box.model_label
        self.save_btn, self.load_btn = self.model_box.save_btn, self.model_box.load_btn
        self.finetune_check = QCheckBox("Start from the loaded model (fine-tune)")
        self.finetune_check.setEnabled(False)
        self.model_box.layout().addWidget(self.finetune_check)
        layout.addWidget(self.model_box)
        layout.addStretch(1)

        self.viewer.dims.events.current_step.connect(self._dims_changed)
        self.viewer.layers.events.inserted.connect(self._update_next_step)
        self.viewer.layers.events.removed.connect(self._update_next_step)
        stop_work_on_close(self, self.runner)
        self._annotation_changed(self.annotation_combo.value)
        self._update_continue_text()
        self._set_running(False)

    # ------------------------------------------------------------------ config

    def setting(self, key: str):
        """The magicgui control of setting ``key`` (e.g. ``"train.iterations"``)."""
        return self.settings.setting(key)

    def _annotation_changed(self, layer) -> None:
        if layer is not None and layer.metadata.get(TASK_KEY) in ("semantic", "instances"):
            self.setting("train.task").value = layer.metadata[TASK_KEY]
        self._update_next_step()

    def build_config(self, class_names: list[str] | None = None) -> Config:
        """The Config for a run from the settings (each value checked by the core)."""
        return self.settings.build_config(class_names)

    def current_pair(self) -> tuple[list, Any]:
        """The image layers and annotation layer the pickers show."""
        return self.image_list.layers(), self.annotation_combo.value

    def _gather(self) -> dict:
        """Copy the inputs off the layers (main thread) so that painting during training
        cannot race with the worker: the training set's rows, or the pair the pickers
        show. Shapes and contents are checked by the Trainer."""
        if self.training_set.pairs:
            pairs = self.training_set.pairs
            cases = self.training_set.cases()
            validation = None  # cases (3+) or annotated slices are held out
        else:
            images, ann_layer = self.current_pair()
            if not images:
                raise ValueError("check at least one image layer (one per channel)")
            if ann_layer is None:
                raise ValueError("choose the annotation layer (make one in the Annotate widget)")
            pairs = [Pair(images, ann_layer)]
            cases = [
                Case(
                    images[0].name,
                    image_array(images),
                    np.array(ann_layer.data, copy=True),
                    spacing_of(images[0]),
                )
            ]
            val_layer = self.validation_combo.value
            validation = (
                None if val_layer is None else (cases[0].image, np.asarray(val_layer.data))
            )
        first = pairs[0]
        names = list(first.annotation.metadata.get(CLASSES_KEY) or [])
        return {
            "cases": cases,
            "validation": validation,
            "config": self.build_config(names),
            "source": first.images[0],
            "annotation_layer": first.annotation,
        }

    # ------------------------------------------------------------------ actions

    def start(self, resume: Any = None, iterations: int | None = None):
        """Start training (from scratch, or from the loaded model when fine-tuning is
        ticked; ``iterations`` replaces the setting for this run). Returns the worker."""
        if self.runner.running:
            raise RuntimeError("training is already running")
        inputs = self._gather()
        if iterations is not None:
            set_value(inputs["config"], "train.iterations", int(iterations))
        if resume is None and self.finetune_check.isChecked() and self.loaded is not None:
            resume = self.loaded
        self._run_inputs = inputs
        self.last_done = None
        self.trainer = None
        try:
            self._preview_request = current_slice(self.viewer, inputs["annotation_layer"])
        except ValueError:
            self._preview_request = None
        cfg = inputs["config"]

        def factory(token):
            from ...core.training import Trainer

            trainer = Trainer(
                config=cfg,
                cases=inputs["cases"],
                validation=inputs["validation"],
                resume=resume,
                cancel=token,
            )
            self.trainer = trainer
            req = self._preview_request
            if req is not None:
                with contextlib.suppress(ValueError):  # the first case is another size
                    trainer.set_preview(*req)
            try:
                yield from trainer.run()
            finally:
                trainer.close()

        self.feedback.start(cfg.train.iterations, int(getattr(resume, "iterations", 0) or 0))
        self._set_running(True)
        return self.runner.start(
            factory, self._on_event, on_error=self._on_error, on_finished=self._on_finished
        )

    def show_plan(self):
        """Resolve the automatic settings for the chosen inputs (in the background, since
        it loads torch) and show them in the banner. Returns the worker."""
        if self.runner.running:
            raise RuntimeError("training is running; its plan is in the banner")
        inputs = self._gather()
        cfg = inputs["config"]

        def factory(token):
            from ...core.device import select_device
            from ...core.planning import make_plan

            device, description = select_device(cfg.train.device)
            case = inputs["cases"][0]
            shape = case.image.shape
            plan = make_plan(shape[1:], case.spacing, shape[0], cfg, device=device)
            yield Info(f"{description}: {plan.describe()}")

        def on_event(ev):
            if isinstance(ev, Info):
                self.feedback.set_banner(f"plan (auto settings resolved): {ev.message}")

        self._set_running(True)
        self.feedback.set_banner("planning…")
        return self.runner.start(
            factory,
            on_event,
            on_error=self._on_error,
            on_finished=lambda: self._set_running(False),
        )

    def continue_training(self):
        """Add the set number of iterations to the last model (optimizer state kept).
        Returns the worker."""
        if self.checkpoint is None:
            raise ValueError("nothing to continue: train a model first")
        return self.start(resume=self.checkpoint)

    def stop(self) -> None:
        """Ask training to stop after the current step; the model so far is kept."""
        if self.runner.running:
            self.runner.stop()
            self.progress.setFormat("stopping…")

    def export_dialog(self):
        """Ask for a folder and write the training set there (nnU-Net layout)."""
        return self.training_set.export_dialog(self.export_class_names())

    def export_class_names(self) -> list[str]:
        """Foreground class names of the training set (from the first annotation layer,
        the rest named by the core)."""
        from ...core.annotations import annotation_summary

        pairs = self.training_set.pairs
        if not pairs:
            raise ValueError("the training set is empty: add image/annotation pairs first")
        names = list(pairs[0].annotation.metadata.get(CLASSES_KEY) or [])
        found: dict[str, None] = {}
        for p in pairs:
            counts = annotation_summary(np.asarray(p.annotation.data), class_names=names)
            found.update(dict.fromkeys(n for n in counts["voxels_per_class"] if n != "background"))
        return list(found)

    def save_to(self, path):
        """Save the current model as a .safetensors checkpoint; returns the path."""
        return self.model_box.save_to(path, self.checkpoint)

    def load_from(self, path):
        """Load a .safetensors checkpoint: it becomes the current model (for Predict)
        and can be fine-tuned. Returns the Checkpoint."""
        return self.model_box.load_from(path)

    def _model_loaded(self, ckpt) -> None:
        self.loaded = ckpt
        self.finetune_check.setEnabled(True)
        self.finetune_check.setChecked(True)

    # ------------------------------------------------------------------ events

    @property
    def plot(self):
        """The LivePlot (None before the first run)."""
        return self.feedback.plot

    def _on_event(self, ev) -> None:
        fb = self.feedback
        if isinstance(ev, Steps):
            fb.on_steps(ev)
        elif isinstance(ev, Validation):
            fb.on_validation(ev)
        elif isinstance(ev, Preview):
            inputs = self._run_inputs
            self.last_preview = ev
            if inputs:
                show_preview(self.viewer, ev, inputs["source"], inputs["annotation_layer"])
        elif isinstance(ev, Info):
            fb.on_info(ev)
        elif isinstance(ev, Done):
            self.last_done = ev
            if ev.result is not None:
                self.checkpoint = ev.result
                self.state.set(ev.result, "trained in this viewer")
            fb.on_done(ev)

    def _on_error(self, exc: BaseException) -> None:
        notify_error(f"Training failed: {exc}")
        self.feedback.on_error(exc)

    def _on_finished(self) -> None:
        self.trainer = None
        try:
            self.feedback.finish(self.last_done)
            self._set_running(False)
            self._update_next_step()
        except RuntimeError:  # the widget was deleted while the work ended
            pass

    # ------------------------------------------------------------------ Qt glue

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.plan_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.continue_btn.setEnabled(not running and self.checkpoint is not None)
        self.model_box.set_busy(running)

    def _update_continue_text(self, *_) -> None:
        n = int(self.setting("train.iterations").value)
        self.continue_btn.setText(f"Continue (+{n})")
        self.continue_btn.setToolTip(
            f"Train the last model {n} more iterations (the Iterations setting); the "
            "optimizer state is kept"
        )

    def _update_next_step(self, *_) -> None:
        try:
            if not self.image_list.layers():
                text = "open an image (File > Open, or File > Open Sample)"
            elif self.annotation_combo.value is None:
                text = "paint an annotation layer in the Annotate widget"
            elif self.runner.running:
                text = "watch the loss fall; Stop keeps the model so far"
            elif self.checkpoint is None:
                text = "press Start (the defaults suit a first try)"
            else:
                text = "predict whole images in the Predict widget, or Continue training"
            self.set_next_step(text)
        except RuntimeError:  # deleted with its dock
            pass

    def _dims_changed(self, event=None) -> None:
        layer = self._run_inputs.get("annotation_layer") if self._run_inputs else None
        if layer is None or layer not in self.viewer.layers:
            return
        try:
            req = current_slice(self.viewer, layer)
        except ValueError:
            return
        self._preview_request = req
        trainer = self.trainer
        if trainer is not None:
            trainer.set_preview(*req)

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            notify_error(str(exc))
