"""The Train widget's settings box: forms generated from the settings schema
(:mod:`..forms`), the device choice and "Show plan"."""

from __future__ import annotations

from qtpy.QtWidgets import QFormLayout, QGroupBox, QPushButton, QVBoxLayout
from superqt import QCollapsible

from ...core.config import Config, set_value
from ..forms import apply_form, form_widget, settings_form
from .device import DeviceCombo

SECTIONS = ("data", "model", "train")
#: Settings shown directly; the other ``gui`` settings are under "More settings".
BASIC_SETTINGS = (
    "train.task",
    "model.base_width",
    "model.depth",
    "data.patch_size",
    "train.iterations",
    "train.learning_rate",
    "data.normalization",
    "data.augment",
    "data.validation_fraction",
)
#: Not in the forms: shown by a dedicated control.
NOT_IN_FORM = ("train.device",)


class TrainSettings(QGroupBox):
    """Every ``gui`` setting of the data, model and train sections, at the schema
    defaults, with the schema help as tooltips."""

    def __init__(self, parent=None):
        super().__init__("Settings", parent)
        layout = QVBoxLayout(self)
        self.basic_form = settings_form(SECTIONS, only=BASIC_SETTINGS)
        layout.addWidget(self.basic_form.native)
        row = QFormLayout()
        self.device_combo = DeviceCombo()
        row.addRow("Device", self.device_combo)
        layout.addLayout(row)
        self.more = QCollapsible("More settings")
        self.advanced_form = settings_form(SECTIONS, exclude=(*BASIC_SETTINGS, *NOT_IN_FORM))
        self.more.addWidget(self.advanced_form.native)
        layout.addWidget(self.more)
        self.plan_btn = QPushButton("Show plan")
        self.plan_btn.setToolTip("What 'auto' settings resolve to for the chosen inputs")
        layout.addWidget(self.plan_btn)

    def setting(self, key: str):
        """The magicgui control of setting ``key`` (e.g. ``"train.iterations"``)."""
        form = self.basic_form if key in BASIC_SETTINGS else self.advanced_form
        return form_widget(form, key)

    def build_config(self, class_names: list[str] | None = None) -> Config:
        """A Config from the forms and the device, written through
        ``core.config.set_value`` (a ConfigError names a setting with a bad value)."""
        cfg = apply_form(self.basic_form, Config())
        apply_form(self.advanced_form, cfg)
        set_value(cfg, "train.device", self.device_combo.device)
        set_value(cfg, "infer.device", self.device_combo.device)
        if class_names is not None:
            set_value(cfg, "class_names", list(class_names))
        return cfg.validate()
