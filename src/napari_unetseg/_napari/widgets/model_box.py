"""The model box shared by the Train and Predict widgets: the viewer's current model
(one line) with Load and Save buttons.

Loading a model file makes it the viewer's current model (:mod:`..state`), so the Train
widget (to fine-tune) and the Predict widget see the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ._common import notify_error, notify_info

FILTER = "Model (*.safetensors)"


class ModelBox(QGroupBox):
    """Current model, Load model…, Save model…. ``loaded`` is emitted with the
    Checkpoint read from a file."""

    loaded = Signal(object)

    def __init__(self, state, title: str = "Model", parent=None):
        super().__init__(title, parent)
        self.state = state
        layout = QVBoxLayout(self)
        self.model_label = QLabel(state.describe())
        self.model_label.setWordWrap(True)
        layout.addWidget(self.model_label)
        row = QHBoxLayout()
        self.load_btn = QPushButton("Load model…")
        self.save_btn = QPushButton("Save model…")
        self.load_btn.setToolTip("Read a .safetensors model file; it becomes the current model")
        self.save_btn.setToolTip("Write the current model as a .safetensors file")
        self.load_btn.clicked.connect(self._load_dialog)
        self.save_btn.clicked.connect(self._save_dialog)
        row.addWidget(self.load_btn)
        row.addWidget(self.save_btn)
        layout.addLayout(row)
        state.changed.connect(self._refresh)
        self._refresh()

    @property
    def checkpoint(self) -> Any:
        return self.state.checkpoint

    def load_from(self, path) -> Any:
        """Read a .safetensors model; it becomes the viewer's current model."""
        from ...core.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        self.state.set(ckpt, f"loaded from {Path(path).name}")
        self.loaded.emit(ckpt)
        return ckpt

    def save_to(self, path, checkpoint: Any = None) -> Path:
        """Write ``checkpoint`` (default: the current model) to ``path`` (.safetensors
        appended when missing)."""
        from ...core.checkpoint import save_checkpoint

        ckpt = checkpoint if checkpoint is not None else self.state.checkpoint
        if ckpt is None:
            raise ValueError("no model to save: train or load one first")
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        out = Path(save_checkpoint(ckpt, path))
        notify_info(f"model saved to {out}")
        return out

    def set_busy(self, busy: bool) -> None:
        self.load_btn.setEnabled(not busy)
        self.save_btn.setEnabled(not busy and self.state.checkpoint is not None)

    def _refresh(self, *_) -> None:
        try:
            self.model_label.setText(self.state.describe())
            self.save_btn.setEnabled(
                self.load_btn.isEnabled() and self.state.checkpoint is not None
            )
        except RuntimeError:  # deleted with its widget
            self.state.changed.disconnect(self._refresh)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", FILTER)
        if path:
            try:
                self.load_from(path)
            except Exception as exc:
                notify_error(f"cannot load {path}: {exc}")

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.safetensors", FILTER)
        if path:
            try:
                self.save_to(path)
            except Exception as exc:
                notify_error(str(exc))
