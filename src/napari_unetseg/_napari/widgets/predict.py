"""Predict whole volumes with the current or a loaded model; re-threshold without re-running;
export labels as NIfTI in the source image's geometry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.events import Done, Info, Progress
from ..state import describe_checkpoint, model_state
from ..workers import EventRunner
from ._common import (
    ROLE_KEY,
    TASK_KEY,
    LayerChecklist,
    LayerCombo,
    StopsWorkWhenGone,
    class_colour,
    geometry_kwargs,
    image_array,
    notify_error,
    notify_info,
    set_or_add_layer,
    stop_work_on_close,
)

CURRENT = "current model (trained or loaded in Train)"
FILE = "model loaded here from a file"


class PredictWidget(StopsWorkWhenGone, QWidget):
    """Dock widget: model, image channel(s), Run / Cancel, post-processing, export.

    Scriptable API: :meth:`run`, :meth:`cancel`, :meth:`load_from`,
    :meth:`recompute`, :meth:`export_to`. ``results`` maps the source image name to its
    :class:`~napari_unetseg.core.inference.Prediction`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = model_state(self.viewer)
        self.runner = EventRunner()
        self.loaded: Any = None
        self._synced: Any = None  # the checkpoint whose settings the controls hold
        self._made_with: tuple[float, int] = (0.5, 0)
        self.loaded_name = ""
        self.results: dict[str, Any] = {}
        self.result_layers: dict[str, dict[str, Any]] = {}
        self.last_done: Done | None = None

        layout = QVBoxLayout(self)

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        self.model_combo.addItems([CURRENT, FILE])
        self.model_combo.currentIndexChanged.connect(self._update_model_label)
        form.addRow("Use", self.model_combo)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        self.load_btn = QPushButton("Load model…")
        self.load_btn.clicked.connect(self._load_dialog)
        form.addRow(self.load_btn)
        layout.addWidget(box)

        box = QGroupBox("Predict")
        form = QFormLayout(box)
        self.image_list = LayerChecklist(self.viewer, "image")
        self.image_list.setToolTip("One checked layer per model input channel")
        form.addRow("Image channel(s)", self.image_list)
        self.tta_check = QCheckBox("average over flips (slower, smoother)")
        form.addRow("Test-time augmentation", self.tta_check)
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
        form = QFormLayout(box)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip(
            "Foreground where the foreground probability exceeds this (semantic); "
            "object seeds where the smoothed interior-minus-boundary score exceeds it (instances)"
        )
        form.addRow("Threshold", self.threshold_spin)
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 10_000_000)
        self.min_size_spin.setSuffix(" voxels")
        form.addRow("Minimum size", self.min_size_spin)
        layout.addWidget(box)
        self._recompute_timer = QTimer(self)
        self._recompute_timer.setSingleShot(True)
        self._recompute_timer.setInterval(150)
        self._recompute_timer.timeout.connect(lambda: self._guard(self.recompute))
        self.threshold_spin.valueChanged.connect(lambda _v: self._recompute_timer.start())
        self.min_size_spin.valueChanged.connect(lambda _v: self._recompute_timer.start())

        box = QGroupBox("Export labels")
        form = QFormLayout(box)
        self.export_combo = LayerCombo(self.viewer, "labels")
        form.addRow("Layer", self.export_combo)
        self.export_btn = QPushButton("Export as NIfTI…")
        self.export_btn.setToolTip("Saved with the source image's affine and header")
        self.export_btn.clicked.connect(self._export_dialog)
        form.addRow(self.export_btn)
        layout.addWidget(box)
        layout.addStretch(1)

        self.state.changed.connect(self._update_model_label)
        stop_work_on_close(self, self.runner)
        self._update_model_label()
        self._set_running(False)

    # ------------------------------------------------------------------ model

    @property
    def checkpoint(self):
        if self.model_combo.currentText() == FILE:
            return self.loaded
        return self.state.checkpoint

    def load_from(self, path):
        """Load a .safetensors model for this widget. Returns the Checkpoint."""
        from ...core.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        self.loaded = ckpt
        self.loaded_name = Path(path).name
        self.model_combo.setCurrentText(FILE)
        self._update_model_label()
        return ckpt

    def _update_model_label(self, *_):
        try:
            if self.model_combo.currentText() == FILE:
                text = describe_checkpoint(self.loaded, self.loaded_name)
            else:
                text = self.state.describe()
            self.model_label.setText(text)
            self._sync_postprocess()
        except RuntimeError:  # the label was deleted with the widget
            pass

    def _sync_postprocess(self) -> None:
        """A newly chosen model's stored post-processing (minimum size; for an instance
        model the seed threshold) becomes the starting point of the controls; the
        user's edits stay until the model changes."""
        ckpt = self.checkpoint
        if ckpt is None or ckpt is self._synced:
            return
        self._synced = ckpt
        self.min_size_spin.setValue(int(ckpt.config.infer.min_size))
        if ckpt.task == "instances":
            self.threshold_spin.setValue(float(ckpt.config.infer.interior_threshold))
        else:
            self.threshold_spin.setValue(0.5)

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
        m = ckpt.config.model
        if image.shape[0] != m.in_channels or image.ndim - 1 != m.spatial_dims:
            raise ValueError(
                f"the model expects {m.in_channels} channel(s) of {m.spatial_dims}D data; "
                f"the checked layers give {image.shape[0]} channel(s) of "
                f"{image.ndim - 1}D data"
            )
        source = layers[0]
        infer = dataclasses.replace(
            ckpt.config.infer,
            tta=self.tta_check.isChecked(),
            min_size=int(self.min_size_spin.value()),
        )
        if ckpt.task == "instances":
            infer.interior_threshold = float(self.threshold_spin.value())
        # what the labels will have been made with (semantic: plain argmax = 0.5), so
        # that they are recomputed on arrival only if the controls moved meanwhile
        self._made_with = (
            infer.interior_threshold if ckpt.task == "instances" else 0.5,
            infer.min_size,
        )
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
            self._show_result(source, ev.result, ckpt)

    def _show_result(self, source, pred, ckpt) -> None:
        name = source.name
        layers: dict[str, Any] = {}
        task = getattr(pred, "task", ckpt.task)
        probs = pred.probabilities
        if task == "instances":
            if probs is not None:
                fg = (1.0 - probs[0]).astype(np.float32)
                layers["foreground"] = set_or_add_layer(
                    self.viewer,
                    "image",
                    fg,
                    f"{name} foreground probability",
                    colormap="green",
                    blending="additive",
                    contrast_limits=(0.0, 1.0),
                    visible=False,
                    **geometry_kwargs(source, **{ROLE_KEY: "probability"}),
                )
            if pred.boundaries is not None:
                layers["boundary"] = set_or_add_layer(
                    self.viewer,
                    "image",
                    np.asarray(pred.boundaries, np.float32),
                    f"{name} boundary probability",
                    colormap="magma",
                    blending="additive",
                    contrast_limits=(0.0, 1.0),
                    visible=False,
                    **geometry_kwargs(source, **{ROLE_KEY: "boundary"}),
                )
            semantic = (np.asarray(pred.instances) > 0).astype(np.uint8)
            layers["labels"] = set_or_add_layer(
                self.viewer,
                "labels",
                semantic,
                f"{name} prediction",
                **geometry_kwargs(
                    source,
                    **{
                        ROLE_KEY: "prediction",
                        TASK_KEY: "semantic",
                        "unetseg_class_names": list(ckpt.class_names),
                    },
                ),
            )
            layers["instances"] = set_or_add_layer(
                self.viewer,
                "labels",
                np.asarray(pred.instances),
                f"{name} instances",
                **geometry_kwargs(source, **{ROLE_KEY: "prediction", TASK_KEY: "instances"}),
            )
        else:
            if probs is not None:
                for k in range(1, probs.shape[0]):
                    cname = ckpt.class_names[k - 1] if k - 1 < len(ckpt.class_names) else k
                    colour = class_colour(k)
                    layers[f"probability {k}"] = set_or_add_layer(
                        self.viewer,
                        "image",
                        np.asarray(probs[k], np.float32),
                        f"{name} probability {cname}",
                        colormap=_colormap(f"unetseg class {k}", colour),
                        blending="additive",
                        contrast_limits=(0.0, 1.0),
                        visible=False,
                        **geometry_kwargs(source, **{ROLE_KEY: "probability"}),
                    )
            layers["labels"] = set_or_add_layer(
                self.viewer,
                "labels",
                np.asarray(pred.labels),
                f"{name} prediction",
                **geometry_kwargs(
                    source,
                    **{
                        ROLE_KEY: "prediction",
                        TASK_KEY: "semantic",
                        "unetseg_class_names": list(ckpt.class_names),
                    },
                ),
            )
        self.result_layers[name] = layers
        self.export_combo.refresh()
        self.export_combo.set_value(layers.get("instances", layers["labels"]))
        now = (float(self.threshold_spin.value()), int(self.min_size_spin.value()))
        if probs is not None and now != self._made_with:
            self.recompute()

    def recompute(self) -> None:
        """Labels again from the stored probabilities with the threshold / minimum size
        (core.postprocess); the network is not run again."""
        from ...core.postprocess import instance_labels, semantic_labels

        threshold = float(self.threshold_spin.value())
        min_size = int(self.min_size_spin.value())
        for name, pred in self.results.items():
            layers = self.result_layers.get(name, {})
            probs = pred.probabilities
            if probs is None:
                continue
            if getattr(pred, "task", "semantic") == "instances":
                inst = instance_labels(
                    probs,
                    interior_threshold=threshold,
                    foreground_threshold=0.5,
                    min_size=min_size,
                )
                if "instances" in layers and layers["instances"] in self.viewer.layers:
                    layers["instances"].data = inst
                if "labels" in layers and layers["labels"] in self.viewer.layers:
                    layers["labels"].data = (inst > 0).astype(np.uint8)
            else:
                labels = semantic_labels(probs, min_size=min_size, threshold=threshold)
                if "labels" in layers and layers["labels"] in self.viewer.layers:
                    layers["labels"].data = labels

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

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "Model (*.safetensors)")
        if path:
            self._guard(lambda: self.load_from(path))

    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            notify_error(str(exc))


def _colormap(name: str, colour) -> Any:
    from napari.utils.colormaps import Colormap

    return Colormap([[0.0, 0.0, 0.0, 0.0], list(colour)], name=name)
