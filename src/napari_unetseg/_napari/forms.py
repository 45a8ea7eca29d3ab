"""Settings forms generated from the core's settings schema (magicgui).

Each :class:`~napari_unetseg.core.config.Setting` becomes one control: a ComboBox for a
setting with choices, a SpinBox / FloatSpinBox with the setting's bounds for numbers, a
CheckBox for booleans and a LineEdit for lists (``1.0, 99.8``). A setting that may be
empty ("automatic") gets an "auto" checkbox next to its control (lists: an empty text).
Every control starts at the schema default and shows the schema help as its tooltip.

The widgets never check values themselves: :func:`apply_form` writes the form into a
:class:`~napari_unetseg.core.config.Config` through ``core.config.set_value``, whose
ConfigError names the setting when a value breaks a rule.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox

from ..core.config import Config, ConfigError, Setting, set_value, settings

#: Widget name of a setting: its key with "." replaced (magicgui names are identifiers).
SEP = "__"
INT_MAX = 2**31 - 1
FLOAT_MAX = 1e9


def widget_name(key: str) -> str:
    return key.replace(".", SEP)


#: Labels where the setting's name is an abbreviation.
LABELS = {"tta": "Test-time augmentation", "ct_window": "CT window"}


def _label(s: Setting) -> str:
    return LABELS.get(s.name, s.name.replace("_", " ").capitalize())


def _float_step(s: Setting) -> float:
    """A step fine enough for the default (1e-2 -> 1e-3) and no coarser than 0.05."""
    ref = abs(float(s.default)) if isinstance(s.default, (int, float)) and s.default else 0.0
    if ref == 0.0:
        return 0.05
    return min(0.05, 10.0 ** (math.floor(math.log10(ref)) - 1))


def _is_sequence(tp: Any) -> bool:
    return typing.get_origin(tp) in (tuple, list)


def _text_of(value: Any) -> str:
    if value is None:
        return ""
    return ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)


def _parse_list(key: str, text: str, base: Any = None) -> Any:
    """``"8, 16, 16"`` or ``"8x16x16"`` -> [8, 16, 16]; ``"a, b"`` -> ["a", "b"] for a
    list of text; empty -> None. Types and bounds are left to the core."""
    text = text.strip()
    if not text or text.lower() == "auto":
        return None
    if typing.get_args(base) and typing.get_args(base)[0] is str:
        return [part.strip() for part in text.split(",") if part.strip()]
    body = text.strip("[]()").replace("x", ",").replace(";", ",")
    try:
        return json.loads(f"[{body}]")
    except json.JSONDecodeError as e:
        raise ConfigError(f"{key}: cannot read {text!r}; give numbers like 8, 16, 16") from e


class OptionalValue(Container):
    """A control plus an "auto" checkbox: ``value`` is None while "auto" is ticked."""

    def __init__(self, inner, *, name: str, label: str, tooltip: str, auto: bool):
        self.inner = inner
        self.auto = CheckBox(value=auto, text="auto", tooltip="choose automatically")
        super().__init__(
            widgets=[inner, self.auto], layout="horizontal", labels=False, name=name, label=label
        )
        self.tooltip = tooltip
        self.margins = (0, 0, 0, 0)
        self.inner.enabled = not auto
        self.auto.changed.connect(lambda on: setattr(self.inner, "enabled", not on))

    @property
    def value(self) -> Any:
        return None if self.auto.value else self.inner.value

    @value.setter
    def value(self, v: Any) -> None:
        self.auto.value = v is None
        if v is not None:
            self.inner.value = v


def setting_widget(s: Setting):
    """One magicgui control for a setting, at its default, with the help as tooltip."""
    base = s.base_type
    name, label, tip = widget_name(s.key), _label(s), s.help
    default = s.default
    common: dict[str, Any] = {"name": name, "label": label, "tooltip": tip}
    own: dict[str, Any] = {} if s.optional else common  # the optional wrapper takes them
    inner: SpinBox | FloatSpinBox | LineEdit
    if _is_sequence(base):
        w = LineEdit(value=_text_of(default), **common)
        if s.optional:
            w.native.setPlaceholderText("auto")
        return w
    if s.choices is not None:
        return ComboBox(choices=list(s.choices), value=default, **common)
    if base is bool:
        return CheckBox(value=bool(default), **common)
    if base is int:
        lo = int(s.low) if s.low is not None else -INT_MAX
        hi = int(s.high) - (1 if s.high_open else 0) if s.high is not None else INT_MAX
        start = default if default is not None else max(lo, min(hi, 1))
        inner = SpinBox(value=start, min=lo, max=hi, **own)
    elif base is float:
        step = _float_step(s)
        flo = float(s.low) if s.low is not None else -FLOAT_MAX
        fhi = float(s.high) - (step if s.high_open else 0.0) if s.high is not None else FLOAT_MAX
        fstart = default if default is not None else max(flo, min(fhi, 0.5))
        inner = FloatSpinBox(value=fstart, min=flo, max=fhi, step=step, **own)
    else:  # free text
        inner = LineEdit(value=default or "", **own)
    if s.optional:
        return OptionalValue(inner, auto=default is None, **common)
    return inner


def settings_form(
    sections: Sequence[str],
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> Container:
    """A form with one control per ``gui`` setting of ``sections`` (schema order).

    Args:
        sections: schema sections, e.g. ("data", "model", "train").
        exclude: setting keys ("train.device") left out (shown elsewhere).
        only: when given, just these keys (in schema order).
    """
    skip = set(exclude)
    keep = set(only) if only is not None else None
    widgets = []
    for section in sections:
        for s in settings(section):
            if not s.gui or s.key in skip or (keep is not None and s.key not in keep):
                continue
            widgets.append(setting_widget(s))
    form = Container(widgets=widgets)
    form.margins = (0, 0, 0, 0)
    return form


def _key(widget) -> str:
    return widget.name.replace(SEP, ".")


def form_widget(form: Container, key: str):
    """The control of setting ``key`` in ``form`` (KeyError when the form lacks it)."""
    for w in form:
        if w.name == widget_name(key):
            return w
    raise KeyError(f"the form has no control for setting {key!r}")


def form_values(form: Container) -> dict[str, Any]:
    """{setting key: value} of every control (None = automatic; lists parsed)."""
    out: dict[str, Any] = {}
    for w in form:
        key = _key(w)
        value = w.value
        if isinstance(w, LineEdit) and not isinstance(value, type(None)):
            from ..core.config import spec_of

            base = spec_of(key).base_type
            if _is_sequence(base):
                value = _parse_list(key, value, base)
        out[key] = value
    return out


def apply_form(form: Container, config: Config | None = None) -> Config:
    """Write the form into ``config`` (a new default Config when None) through
    ``core.config.set_value``, which checks types and bounds; returns the config."""
    cfg = config if config is not None else Config()
    for key, value in form_values(form).items():
        set_value(cfg, key, value)
    return cfg


def set_form_values(form: Container, values: dict[str, Any]) -> None:
    """Show ``values`` ({key: value}) in the form (lists as text)."""
    for key, value in values.items():
        w = form_widget(form, key)
        if isinstance(w, LineEdit) and (value is None or isinstance(value, (list, tuple))):
            w.value = _text_of(value)
        else:
            w.value = value
