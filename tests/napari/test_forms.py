"""Settings forms generated from the schema: one control per setting, defaults, bounds,
tooltips, and values written through the core (which checks them)."""

from __future__ import annotations

import pytest

pytest.importorskip("magicgui")

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox

from napari_unetseg._napari.forms import (
    OptionalValue,
    apply_form,
    form_values,
    form_widget,
    settings_form,
)
from napari_unetseg.core.config import Config, ConfigError, settings

pytestmark = pytest.mark.gui

SECTIONS = ("data", "model", "train")


def test_one_control_per_gui_setting_at_its_default(qapp):
    form = settings_form(SECTIONS, exclude=("train.device",))
    expected = [s for sec in SECTIONS for s in settings(sec) if s.gui and s.key != "train.device"]
    assert [w.name.replace("__", ".") for w in form] == [s.key for s in expected]
    for s in expected:
        w = form_widget(form, s.key)
        assert w.tooltip == s.help, s.key
        if s.choices is not None:
            assert isinstance(w, ComboBox)
            assert tuple(w.choices) == tuple(s.choices)
        elif s.base_type is bool:
            assert isinstance(w, CheckBox)
        if s.optional and not isinstance(w, LineEdit):
            assert isinstance(w, OptionalValue)
            assert w.auto.value == (s.default is None)
    # the form starts at the schema defaults: it makes the default Config
    assert apply_form(form).to_dict() == Config().to_dict()
    # bounds come from the schema
    iterations = form_widget(form, "train.iterations")
    assert isinstance(iterations, SpinBox)
    assert iterations.min == 1
    fraction = form_widget(form, "data.validation_fraction")
    assert isinstance(fraction, FloatSpinBox)
    assert fraction.min == 0.0
    assert fraction.max < 1.0  # high_open
    # no free-typed device: excluded, shown by the device picker
    with pytest.raises(KeyError):
        form_widget(form, "train.device")


def test_values_go_through_the_core(qapp):
    form = settings_form(SECTIONS, only=("data.patch_size", "model.base_width", "train.threads"))
    assert form_values(form) == {
        "data.patch_size": None,
        "model.base_width": 8,
        "train.threads": None,
    }
    form_widget(form, "data.patch_size").value = "8x16x16"
    form_widget(form, "model.base_width").value = None  # auto
    form_widget(form, "train.threads").value = 2
    assert not form_widget(form, "train.threads").auto.value
    cfg = apply_form(form, Config())
    assert cfg.data.patch_size == (8, 16, 16)
    assert cfg.model.base_width is None
    assert cfg.train.threads == 2
    # a list the core refuses: the error names the setting
    form_widget(form, "data.patch_size").value = "8, sixteen"
    with pytest.raises(ConfigError, match=r"data\.patch_size"):
        apply_form(form)
    form3 = settings_form(("data",), only=("data.validation_cases",))
    form_widget(form3, "data.validation_cases").value = "case_a, case_b"
    assert apply_form(form3).data.validation_cases == ["case_a", "case_b"]
    form2 = settings_form(("data",), only=("data.percentiles",))
    form_widget(form2, "data.percentiles").value = "1, 2, 3"
    with pytest.raises(ConfigError, match=r"data\.percentiles"):
        apply_form(form2)


def test_list_devices_auto_first_cpu_last():
    from napari_unetseg.core.device import list_devices, select_device

    devices = list_devices()
    specs = [spec for spec, _ in devices]
    assert specs[0] == "auto"
    assert specs[-1] == "cpu"
    for spec, description in devices:
        assert description
        select_device(spec)  # every listed device is usable
