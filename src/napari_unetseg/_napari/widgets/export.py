"""Export a labels layer as NIfTI in its source image's geometry (Predict widget)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QFormLayout, QGroupBox, QPushButton

from ._common import ask_yes_no, notify_error, notify_info
from .pickers import LayerCombo, is_prediction


class ExportBox(QGroupBox):
    """Labels layer picker (predictions first) and "Export as NIfTI…".

    ``confirm(path) -> bool`` is asked before a file is replaced (default: a dialog).
    """

    def __init__(self, viewer, confirm=None, parent=None):
        super().__init__("Export labels", parent)
        self.viewer = viewer
        self.confirm = confirm or self.ask_overwrite
        form = QFormLayout(self)
        self.combo = LayerCombo(viewer, "labels", prefer=is_prediction)
        form.addRow("Layer", self.combo)
        self.button = QPushButton("Export as NIfTI…")
        self.button.setToolTip("Saved with the source image's affine and header")
        self.button.clicked.connect(self._export_dialog)
        form.addRow(self.button)

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
        if path.exists() and not self.confirm(path):
            return None
        meta = meta_for_layer(layer, self.viewer)
        out = Path(write_labels(np.asarray(layer.data), meta, path, overwrite=True))
        notify_info(f"saved {layer.name!r} to {out}")
        return out

    def ask_overwrite(self, path: Path) -> bool:
        """Ask the user whether to replace ``path``."""
        return ask_yes_no(self, "Replace file?", f"{path} exists. Replace it?")

    def _export_dialog(self) -> None:
        layer = self.combo.value
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
            try:
                self.export_to(layer, path)
            except Exception as exc:
                notify_error(str(exc))
