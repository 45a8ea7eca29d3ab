"""Train a U-Net on the viewer's layers in a background thread, with live feedback.

The Trainer (``core.training``) runs in a napari thread worker; this widget only turns
its events into progress, a loss / Dice plot, a preview layer and a banner. torch is
imported in the worker thread when training starts, never when the widget opens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.config import TrainConfig
from ...core.events import Done, Info, Preview, Validation
from ..state import describe_checkpoint, model_state
from ..workers import EventRunner, Steps
from ._common import (
    CLASSES_KEY,
    ROLE_KEY,
    TASK_KEY,
    LayerChecklist,
    LayerCombo,
    StopsWorkWhenGone,
    current_slice,
    format_seconds,
    geometry_kwargs,
    image_array,
    notify_error,
    spacing_of,
    stop_work_on_close,
)

MODEL_SIZES = [
    ("auto", None),
    ("tiny (4)", 4),
    ("small (8)", 8),
    ("medium (16)", 16),
    ("large (32)", 32),
]
PREVIEW_LAYER = "training preview"


class DeviceCombo(QComboBox):
    """Device choice. The list of accelerators is looked up (importing torch) only when
    the user opens the list, so that the widget opens without importing torch."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.addItems(["auto", "cpu"])
        self._probed = False

    def showPopup(self) -> None:
        if not self._probed:
            self.probe()
        super().showPopup()

    def probe(self) -> None:
        self._probed = True
        current = self.currentText()
        names = ["auto"]
        try:
            import torch

            names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                names.append("mps")
        except ImportError:
            pass
        names.append("cpu")
        self.blockSignals(True)
        self.clear()
        for n in names:
            label = n
            if n.startswith("cuda:"):
                try:
                    import torch

                    label = f"{n} ({torch.cuda.get_device_name(int(n[5:]))})"
                except Exception:
                    label = n
            self.addItem(label, n)
        idx = self.findData(current)
        self.setCurrentIndex(max(idx, 0))
        self.blockSignals(False)

    @property
    def device(self) -> str:
        data = self.currentData()
        return str(data) if data else self.currentText()


class TrainWidget(StopsWorkWhenGone, QWidget):
    """Dock widget: inputs, settings, Start / Stop / Continue, progress, plot, preview.

    Scriptable API: :meth:`build_config`, :meth:`start`, :meth:`stop`,
    :meth:`continue_training`, :meth:`save_to`, :meth:`load_from`. ``runner.worker`` is
    the running napari worker (its ``finished`` signal ends every run).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = model_state(self.viewer)
        self.runner = EventRunner()
        self.checkpoint: Any = None  # last trained checkpoint (with optimizer state)
        self.loaded: Any = None  # checkpoint loaded from a file, for fine-tuning
        self.trainer: Any = None
        self.history: list[dict] = []  # {"iteration", "loss"}
        self.validation: list[Validation] = []
        self.messages: list[str] = []
        self.last_done: Done | None = None
        self._preview_request: tuple[int, int] | None = None
        self._started_at = 0.0
        self._first_iteration = 0
        self._plot_dirty = False
        self._plot = None
        self._run_inputs: dict = {}

        # everything in a scroll area: the widget is taller than small screens
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        inner = QWidget()
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        layout = QVBoxLayout(inner)

        # ---------------------------------------------------------------- inputs
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
        self.image_list = LayerChecklist(self.viewer, "image")
        self.image_list.setToolTip("One checked layer per input channel (same shape)")
        form.addRow("Image channel(s)", self.image_list)
        self.annotation_combo = LayerCombo(self.viewer, "labels")
        self.annotation_combo.layer_changed.connect(self._annotation_changed)
        form.addRow("Annotation", self.annotation_combo)
        self.task_combo = QComboBox()
        self.task_combo.addItems(["semantic", "instances"])
        form.addRow("Task", self.task_combo)
        self.validation_combo = LayerCombo(
            self.viewer, "labels", none_text="(held-out annotated slices)"
        )
        self.validation_combo.setToolTip(
            "Optional dense reference of the same image to validate on"
        )
        form.addRow("Validation", self.validation_combo)
        layout.addWidget(box)

        # ---------------------------------------------------------------- settings
        box = QGroupBox("Settings (auto = planned from the data)")
        form = QFormLayout(box)
        self.size_combo = QComboBox()
        for label, width in MODEL_SIZES:
            self.size_combo.addItem(label, width)
        form.addRow("Model size", self.size_combo)
        self.depth_spin = QSpinBox()
        self.depth_spin.setRange(0, 6)
        self.depth_spin.setSpecialValueText("auto (4)")
        form.addRow("Depth", self.depth_spin)
        self.patch_edit = QLineEdit()
        self.patch_edit.setPlaceholderText("auto, or e.g. 32,64,64")
        form.addRow("Patch size", self.patch_edit)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 1_000_000)
        self.iterations_spin.setValue(TrainConfig().iterations)
        form.addRow("Iterations", self.iterations_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-3)
        self.lr_spin.setValue(TrainConfig().learning_rate)
        form.addRow("Learning rate", self.lr_spin)
        self.norm_combo = QComboBox()
        self.norm_combo.addItems(["auto", "zscore", "ct", "percentile", "none"])
        form.addRow("Normalisation", self.norm_combo)
        self.augment_check = QCheckBox("flips, rotations, intensity")
        self.augment_check.setChecked(True)
        form.addRow("Augmentation", self.augment_check)
        self.device_combo = DeviceCombo()
        form.addRow("Device", self.device_combo)
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("auto (physical cores)")
        self.threads_spin.setToolTip("CPU threads for training; fewer keeps the computer usable")
        form.addRow("CPU threads", self.threads_spin)
        self.preview_spin = QDoubleSpinBox()
        self.preview_spin.setRange(0.0, 60.0)
        self.preview_spin.setValue(TrainConfig().preview_seconds)
        self.preview_spin.setSuffix(" s")
        self.preview_spin.setToolTip("Preview of the viewed slice at most this often")
        form.addRow("Preview every", self.preview_spin)
        self.plan_btn = QPushButton("Show plan")
        self.plan_btn.setToolTip("What 'auto' settings resolve to for the chosen inputs")
        self.plan_btn.clicked.connect(lambda: self._guard(self.show_plan))
        form.addRow(self.plan_btn)
        layout.addWidget(box)

        # ---------------------------------------------------------------- run
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.banner.setStyleSheet("QLabel { padding: 4px; border: 1px solid #666; }")
        self.banner.hide()
        layout.addWidget(self.banner)
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.continue_btn = QPushButton("Continue")
        self.continue_btn.setToolTip("Train the last model further (optimizer state kept)")
        self.start_btn.clicked.connect(lambda: self._guard(self.start))
        self.stop_btn.clicked.connect(self.stop)
        self.continue_btn.clicked.connect(lambda: self._guard(self.continue_training))
        for b in (self.start_btn, self.stop_btn, self.continue_btn):
            row.addWidget(b)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        layout.addWidget(self.progress)
        self.plot_host = QVBoxLayout()
        layout.addLayout(self.plot_host)
        self.readout = QLabel("")
        self.readout.setWordWrap(True)
        self.readout.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.readout)

        # ---------------------------------------------------------------- model
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_label = QLabel(describe_checkpoint(None))
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        row = QHBoxLayout()
        self.save_btn = QPushButton("Save model…")
        self.load_btn = QPushButton("Load model…")
        self.save_btn.clicked.connect(self._save_dialog)
        self.load_btn.clicked.connect(self._load_dialog)
        row.addWidget(self.save_btn)
        row.addWidget(self.load_btn)
        form.addRow(row)
        self.finetune_check = QCheckBox("Start from the loaded model (fine-tune)")
        self.finetune_check.setEnabled(False)
        form.addRow(self.finetune_check)
        layout.addWidget(box)
        layout.addStretch(1)

        self._plot_timer = QTimer(self)
        self._plot_timer.setInterval(300)
        self._plot_timer.timeout.connect(self._refresh_plot)
        self.viewer.dims.events.current_step.connect(self._dims_changed)
        stop_work_on_close(self, self.runner)
        self._annotation_changed(self.annotation_combo.value)
        self._set_running(False)

    # ------------------------------------------------------------------ config

    def _annotation_changed(self, layer) -> None:
        if layer is not None and layer.metadata.get(TASK_KEY) in ("semantic", "instances"):
            self.task_combo.setCurrentText(layer.metadata[TASK_KEY])

    def class_names(self, annotation: np.ndarray, layer=None) -> list[str]:
        """Foreground class names for the annotation (from the layer, else generic)."""
        if self.task_combo.currentText() == "instances":
            return ["object"]
        names = list((layer.metadata.get(CLASSES_KEY) if layer is not None else None) or [])
        n_fg = max(int(annotation.max()) - 1, 1)
        if len(names) < n_fg:
            names += [f"class {k}" for k in range(len(names) + 1, n_fg + 1)]
        return names

    def build_config(self, channels: int, spatial_dims: int, class_names: list[str]):
        """The Config for a run from the widget settings (None = planned automatically)."""
        from ...core.config import Config

        cfg = Config()
        task = self.task_combo.currentText()
        cfg.train.task = task
        cfg.class_names = list(class_names)
        cfg.model.spatial_dims = spatial_dims
        cfg.model.in_channels = channels
        cfg.model.num_classes = 3 if task == "instances" else len(class_names) + 1
        width = self.size_combo.currentData()
        if width is not None:
            cfg.model.base_width = int(width)
        if self.depth_spin.value() > 0:
            cfg.model.depth = int(self.depth_spin.value())
        text = self.patch_edit.text().strip()
        if text and text.lower() != "auto":
            try:
                patch = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
            except ValueError as e:
                raise ValueError(f"patch size {text!r}: give integers like 32,64,64") from e
            if len(patch) == 1:
                patch = patch * spatial_dims
            if len(patch) != spatial_dims:
                raise ValueError(
                    f"patch size {text!r} has {len(patch)} values; the image has "
                    f"{spatial_dims} spatial axes"
                )
            cfg.data.patch_size = patch
        cfg.train.iterations = int(self.iterations_spin.value())
        cfg.train.learning_rate = float(self.lr_spin.value())
        cfg.data.normalization = self.norm_combo.currentText()
        cfg.data.augment = self.augment_check.isChecked()
        cfg.train.device = self.device_combo.device
        cfg.infer.device = self.device_combo.device
        cfg.train.preview_seconds = float(self.preview_spin.value())
        if self.threads_spin.value() > 0:
            cfg.train.threads = int(self.threads_spin.value())
        return cfg.validate()

    def _gather(self) -> dict:
        """Copy the inputs off the layers (main thread) so that painting during training
        cannot race with the worker."""
        images = self.image_list.layers()
        if not images:
            raise ValueError("check at least one image layer (one per channel)")
        ann_layer = self.annotation_combo.value
        if ann_layer is None:
            raise ValueError("choose the annotation layer (make one in the Annotate widget)")
        image = image_array(images)
        annotation = np.array(ann_layer.data, copy=True)
        if annotation.shape != image.shape[1:]:
            raise ValueError(
                f"annotation {ann_layer.name!r} has shape {annotation.shape} but the image "
                f"has {image.shape[1:]}; annotate on the same volume"
            )
        if not np.any(annotation > 0):
            raise ValueError(
                f"{ann_layer.name!r} has no annotated voxel: paint some slices and mark "
                "them complete first"
            )
        validation = None
        val_layer = self.validation_combo.value
        if val_layer is not None:
            ref = np.asarray(val_layer.data)
            if ref.shape != annotation.shape:
                raise ValueError(
                    f"validation reference {val_layer.name!r} has shape {ref.shape}, "
                    f"not {annotation.shape}"
                )
            validation = (image, ref)
        names = self.class_names(annotation, ann_layer)
        cfg = self.build_config(image.shape[0], image.ndim - 1, names)
        return {
            "image": image,
            "annotation": annotation,
            "validation": validation,
            "config": cfg,
            "spacing": spacing_of(images[0]),
            "source": images[0],
            "annotation_layer": ann_layer,
        }

    # ------------------------------------------------------------------ actions

    def start(self, resume: Any = None):
        """Start training (from scratch, or from the loaded model when fine-tuning is
        ticked). Returns the worker."""
        if self.runner.running:
            raise RuntimeError("training is already running")
        inputs = self._gather()
        if resume is None and self.finetune_check.isChecked() and self.loaded is not None:
            resume = self.loaded
        if resume is not None:
            self._check_compatible(resume, inputs)
        self._run_inputs = inputs
        self.history.clear()
        self.validation.clear()
        self.messages.clear()
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
                inputs["image"],
                inputs["annotation"],
                cfg,
                spacing=inputs["spacing"],
                validation=inputs["validation"],
                resume=resume,
                cancel=token,
            )
            self.trainer = trainer
            req = self._preview_request
            if req is not None:
                trainer.set_preview(*req)
            return trainer.run()

        self._started_at = time.perf_counter()
        self._first_iteration = int(getattr(resume, "iterations", 0) or 0)
        self.progress.setRange(0, cfg.train.iterations)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self._set_banner("starting: preparing data and model…")
        self._ensure_plot()
        self._set_running(True)
        self._plot_timer.start()
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
            plan = make_plan(
                inputs["image"].shape[1:],
                inputs["spacing"],
                inputs["image"].shape[0],
                cfg,
                device=device,
            )
            yield Info(f"{description}: {plan.describe()}")

        def on_event(ev):
            if isinstance(ev, Info):
                self._set_banner(f"plan (auto settings resolved): {ev.message}")

        self._set_running(True)
        self._set_banner("planning…")
        return self.runner.start(
            factory,
            on_event,
            on_error=self._on_error,
            on_finished=lambda: self._set_running(False),
        )

    def continue_training(self):
        """Train the last model further with the current iteration count (optimizer
        state kept). Returns the worker."""
        if self.checkpoint is None:
            raise ValueError("nothing to continue: train a model first")
        return self.start(resume=self.checkpoint)

    def stop(self) -> None:
        """Ask training to stop after the current step; the model so far is kept."""
        if self.runner.running:
            self.runner.stop()
            self.progress.setFormat("stopping…")

    def save_to(self, path) -> Path:
        """Save the current model as a .safetensors checkpoint."""
        from ...core.checkpoint import save_checkpoint

        ckpt = self.checkpoint if self.checkpoint is not None else self.state.checkpoint
        if ckpt is None:
            raise ValueError("no model to save: train or load one first")
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        return Path(save_checkpoint(ckpt, path))

    def load_from(self, path):
        """Load a .safetensors checkpoint: it becomes the current model (for Predict)
        and can be fine-tuned. Returns the Checkpoint."""
        from ...core.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        self.loaded = ckpt
        self.finetune_check.setEnabled(True)
        self.finetune_check.setChecked(True)
        self.state.set(ckpt, f"loaded from {Path(path).name}")
        self.model_label.setText(self.state.describe())
        return ckpt

    def _check_compatible(self, ckpt, inputs) -> None:
        m = ckpt.config.model
        image = inputs["image"]
        if m.in_channels != image.shape[0] or m.spatial_dims != image.ndim - 1:
            raise ValueError(
                f"the model expects {m.in_channels} channel(s) of {m.spatial_dims}D data; "
                f"the chosen image has {image.shape[0]} channel(s) of {image.ndim - 1}D"
            )
        if ckpt.task != inputs["config"].train.task:
            raise ValueError(
                f"the model was trained for the {ckpt.task} task; choose that task to "
                "continue training it"
            )

    # ------------------------------------------------------------------ events

    def _on_event(self, ev) -> None:
        if isinstance(ev, Steps):
            self._on_steps(ev)
        elif isinstance(ev, Validation):
            self.validation.append(ev)
            self._plot_dirty = True
            self.readout.setText(_format_validation(ev))
        elif isinstance(ev, Preview):
            self._on_preview(ev)
        elif isinstance(ev, Info):
            self.messages.append(ev.message)
            self._set_banner("<br>".join(self.messages[-4:]), warning=ev.level == "warning")
        elif isinstance(ev, Done):
            self._on_done(ev)

    def _on_steps(self, batch: Steps) -> None:
        for s in batch.steps:
            self.history.append({"iteration": s.iteration, "loss": s.loss})
        last = batch.last
        done_here = max(last.iteration - self._first_iteration, 0)
        total_here = max(last.total - self._first_iteration, 1)
        if last.total != self.progress.maximum() and total_here > 0:
            self.progress.setRange(0, total_here)
        self.progress.setValue(min(done_here, self.progress.maximum()))
        elapsed = time.perf_counter() - self._started_at
        rate = (
            last.seconds / max(done_here, 1) if last.seconds > 0 else elapsed / max(done_here, 1)
        )
        eta = rate * max(total_here - done_here, 0)
        self.progress.setFormat(
            f"{last.iteration}/{last.total}  loss {last.loss:.3f}  ETA {format_seconds(eta)}"
        )
        self._plot_dirty = True

    def _on_preview(self, ev: Preview) -> None:
        inputs = self._run_inputs
        if not inputs:
            return
        probs = np.asarray(ev.probabilities, dtype=np.float32)
        fg = 1.0 - probs[0] if probs.shape[0] > 1 else probs[0]
        shape = inputs["annotation"].shape
        source = inputs["source"]
        layer = None
        if PREVIEW_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_LAYER]
            if tuple(layer.data.shape) != tuple(shape):
                self.viewer.layers.remove(layer)
                layer = None
        if layer is None:
            layer = self.viewer.add_image(
                np.zeros(shape, dtype=np.float32),
                name=PREVIEW_LAYER,
                colormap="magma",
                blending="additive",
                opacity=0.6,
                contrast_limits=(0.0, 1.0),
                **geometry_kwargs(source, **{ROLE_KEY: "preview"}),
            )
            # keep the annotation layer selected and on top for painting
            ann = inputs.get("annotation_layer")
            if ann is not None and ann in self.viewer.layers:
                self.viewer.layers.selection.active = ann
        sl: list[Any] = [slice(None)] * len(shape)
        if len(shape) == fg.ndim:  # 2D image: the preview is the whole image
            layer.data[...] = fg
        else:
            sl[ev.axis] = ev.index
            layer.data[tuple(sl)] = fg
        layer.refresh()

    def _on_done(self, ev: Done) -> None:
        self.last_done = ev
        ckpt = ev.result
        if ckpt is not None:
            self.checkpoint = ckpt
            self.state.set(ckpt, "trained in this viewer")
            self.model_label.setText(self.state.describe())
        it = getattr(ckpt, "iterations", "?")
        if ev.cancelled:
            msg = f"stopped at iteration {it}; the model so far is kept"
        else:
            msg = ev.message or f"finished: {it} iterations"
        self.messages.append(msg)
        self._set_banner("<br>".join(self.messages[-4:]))
        self._plot_dirty = True

    def _on_error(self, exc: BaseException) -> None:
        notify_error(f"Training failed: {exc}")
        self._set_banner(f"training failed: {exc}", warning=True)

    def _on_finished(self) -> None:
        self._plot_timer.stop()
        self._refresh_plot()
        self.trainer = None
        try:
            self._set_running(False)
            if self.last_done is None:
                self.progress.setFormat("failed or aborted")
            elif self.last_done.cancelled:
                self.progress.setFormat(f"stopped ({self.progress.text()})")
            else:
                self.progress.setValue(self.progress.maximum())
        except RuntimeError:  # the widget was deleted while the work ended
            pass

    # ------------------------------------------------------------------ plot

    def _ensure_plot(self) -> None:
        if self._plot is not None:
            return
        try:
            import pyqtgraph as pg
        except ImportError:
            self._plot = False
            return
        widget = pg.GraphicsLayoutWidget()
        widget.setMinimumHeight(220)
        loss_plot = widget.addPlot(row=0, col=0, title="training loss")
        loss_plot.setLabel("bottom", "iteration")
        val_plot = widget.addPlot(row=1, col=0, title="validation Dice (solid) / IoU (dashed)")
        val_plot.setYRange(0, 1)
        val_plot.addLegend(offset=(-5, 5))
        self.plot_host.addWidget(widget)
        self._plot = {
            "widget": widget,
            "loss": loss_plot.plot(pen=pg.mkPen("#4fc3f7", width=1)),
            "val_plot": val_plot,
            "curves": {},
            "pg": pg,
        }

    def _refresh_plot(self) -> None:
        if not self._plot or not self._plot_dirty:
            return
        self._plot_dirty = False
        plot = self._plot
        if self.history:
            it = np.fromiter((h["iteration"] for h in self.history), float, len(self.history))
            loss = np.fromiter((h["loss"] for h in self.history), float, len(self.history))
            plot["loss"].setData(it, loss)
        if self.validation:
            pg = plot["pg"]
            its = [v.iteration for v in self.validation]
            names = list(self.validation[-1].dice)
            for k, name in enumerate(names):
                colour = pg.intColor(k, hues=max(len(names), 3))
                for metric, style in (("dice", None), ("iou", "dash")):
                    key = (name, metric)
                    if key not in plot["curves"]:
                        pen = pg.mkPen(colour, width=2)
                        if style == "dash":
                            pen.setStyle(Qt.DashLine)
                        plot["curves"][key] = plot["val_plot"].plot(
                            pen=pen,
                            symbol="o",
                            symbolSize=4,
                            name=name if metric == "dice" else None,
                        )
                    ys = [getattr(v, metric).get(name, np.nan) for v in self.validation]
                    plot["curves"][key].setData(its, ys)

    # ------------------------------------------------------------------ Qt glue

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.plan_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.continue_btn.setEnabled(not running and self.checkpoint is not None)
        self.save_btn.setEnabled(not running)
        self.load_btn.setEnabled(not running)

    def _set_banner(self, html: str, warning: bool = False) -> None:
        colour = "#b26a00" if warning else "#2e6da4"
        self.banner.setStyleSheet(
            f"QLabel {{ padding: 4px; border: 1px solid {colour}; border-radius: 3px; }}"
        )
        self.banner.setText(html)
        self.banner.show()

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

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", "model.safetensors", "Model (*.safetensors)"
        )
        if path:
            self._guard(lambda: self.save_to(path))

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "Model (*.safetensors)")
        if path:
            self._guard(lambda: self.load_from(path))


def _format_validation(ev: Validation) -> str:
    parts = [
        f"{name}: Dice {ev.dice[name]:.3f}, IoU {ev.iou.get(name, float('nan')):.3f}"
        for name in ev.dice
    ]
    return (
        f"validation at iteration {ev.iteration}: mean Dice {ev.mean_dice:.3f}, "
        f"mean IoU {ev.mean_iou:.3f}<br>" + "<br>".join(parts)
    )
