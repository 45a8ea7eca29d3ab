"""Device choice for training and prediction.

The list comes from :func:`napari_unetseg.core.device.list_devices`, which imports torch:
it is looked up only when the user opens the list, so that the widget opens instantly.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from ...core.config import spec_of


class DeviceCombo(QComboBox):
    """Combo box of device settings ("auto", "cuda:N", "mps", "cpu")."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.addItem("auto", "auto")
        self.addItem("cpu", "cpu")
        self.setToolTip(spec_of("train.device").help)
        self._probed = False

    def showPopup(self) -> None:
        if not self._probed:
            self.probe()
        super().showPopup()

    def probe(self) -> None:
        """Fill the list with the devices of this machine (imports torch)."""
        from ...core.device import list_devices

        self._probed = True
        current = self.device
        self.blockSignals(True)
        try:
            self.clear()
            for spec, description in list_devices():
                self.addItem(description if spec == "auto" else f"{spec}: {description}", spec)
            self.setCurrentIndex(max(self.findData(current), 0))
        finally:
            self.blockSignals(False)

    @property
    def device(self) -> str:
        """The chosen device setting, e.g. "auto", "cpu" or "cuda:0"."""
        data = self.currentData()
        return str(data) if data else self.currentText()

    def set_device(self, spec: str) -> None:
        idx = self.findData(spec)
        if idx < 0:
            self.addItem(spec, spec)
            idx = self.count() - 1
        self.setCurrentIndex(idx)
