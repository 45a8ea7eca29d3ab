"""The machinery behind the settings schema of :mod:`napari_unetseg.core.config`.

A setting is a dataclass field declared with :func:`setting`; its type is the field's
annotation and its rules (bounds, choices, help, flag) live in the field's metadata.
:func:`settings` lists them as :class:`Setting` records, from which the command-line
flags, the widgets' forms, type checking and the reference docs are generated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

SECTIONS = ("data", "model", "train", "infer")


class ConfigError(ValueError):
    """A setting has a value the engine cannot use; the message says which and why."""


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    flag: str | None = None,
    cli: bool = True,
    gui: bool = True,
) -> Any:
    """Declare one setting (a dataclass field with its rules in ``metadata``).

    Args:
        default / factory: the default value (or a factory for lists).
        help: one sentence for ``--help``, tooltips and the reference docs.
        choices: the allowed values.
        low / high: inclusive bounds for numbers (``high_open``: strictly below ``high``).
        flag: the command-line flag when it differs from ``--name-with-dashes``.
        cli / gui: whether the setting is offered as a flag / in the widgets' forms
            (values the planner derives from the data are neither).
    """
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "high_open": high_open,
        "flag": flag,
        "cli": cli,
        "gui": gui,
    }
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Setting:
    """One declared setting: where it lives, its type and its rules."""

    section: str | None  # "data", "model", "train", "infer", or None for top level
    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None
    low: float | None
    high: float | None
    high_open: bool
    flag: str | None
    cli: bool
    gui: bool

    @property
    def key(self) -> str:
        """``section.name`` (or ``name`` for top-level settings)."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def optional(self) -> bool:
        """True when ``None`` ("automatic") is allowed."""
        return _is_optional(self.type)

    @property
    def base_type(self) -> Any:
        """The type without ``| None``."""
        return _strip_none(self.type)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """``value`` converted to the declared type (JSON lists -> tuples), or a
        ConfigError naming the setting."""
        return _coerce(self.key, value, self.type)

    def check(self, value: Any) -> None:
        """Raise a ConfigError naming the setting when ``value`` breaks a rule."""
        value = self.coerce(value)
        if value is None:
            return
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"{self.key} must be one of {', '.join(map(str, self.choices))}, not {value!r}"
            )
        numbers = value if isinstance(value, (tuple, list)) else [value]
        for v in numbers:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if self.low is not None and v < self.low:
                raise ConfigError(f"{self.key} must be at least {self.low:g}, not {v}")
            if self.high is not None and (v >= self.high if self.high_open else v > self.high):
                side = "below" if self.high_open else "at most"
                raise ConfigError(f"{self.key} must be {side} {self.high:g}, not {v}")


def settings(section: str | None = None) -> list[Setting]:
    """The declared settings, in declaration order (``section=None``: all of them,
    top-level ones last)."""
    out: list[Setting] = []
    from .config import Config, DataConfig, InferConfig, ModelConfig, TrainConfig

    classes = {
        "data": DataConfig,
        "model": ModelConfig,
        "train": TrainConfig,
        "infer": InferConfig,
    }
    wanted = SECTIONS if section is None else (section,)
    for sec in wanted:
        if sec == "":
            continue
        out.extend(_section_settings(classes[sec], sec))
    if section in (None, ""):
        out.extend(s for s in _section_settings(Config, None) if s.name not in SECTIONS)
    return out


def spec_of(key: str) -> Setting:
    """The Setting called ``section.name`` (or a top-level ``name``)."""
    section, _, name = key.rpartition(".")
    for s in settings(section or ""):
        if s.name == name:
            return s
    raise ConfigError(f"unknown setting {key!r}")


def iter_values(cfg: Any) -> Iterator[tuple[Setting, Any]]:
    """(setting, current value) for every setting of ``cfg``."""
    for s in settings():
        owner = getattr(cfg, s.section) if s.section else cfg
        yield s, getattr(owner, s.name)


def get_value(cfg: Any, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def set_value(cfg: Any, key: str, value: Any) -> None:
    """Set one setting by key, type-checked (a ConfigError names it)."""
    spec = spec_of(key)
    value = spec.coerce(value)
    spec.check(value)
    setattr(getattr(cfg, spec.section) if spec.section else cfg, spec.name, value)


def settings_markdown() -> str:
    """The reference table of every setting (``docs/settings.md`` is this text)."""
    lines = [
        "# Settings reference",
        "",
        "Generated from `napari_unetseg.core.config` (do not edit by hand; a test keeps",
        "it in step). Empty/`null` means *automatic*. In JSON files settings are nested",
        'by section: `{"train": {"iterations": 300}}`. Flags are those of `unetseg train`',
        "(`data`, `model`, `train`, class names) and `unetseg predict` (`infer`).",
        "",
        "| setting | type | default | flag | rules | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in settings():
        rules = []
        if s.choices:
            rules.append("one of " + ", ".join(f"`{c}`" for c in s.choices))
        if s.low is not None:
            rules.append(f">= {s.low:g}")
        if s.high is not None:
            rules.append(f"{'<' if s.high_open else '<='} {s.high:g}")
        default = json.dumps(_plain(s.default))
        flag = f"`{s.cli_flag}`" if s.cli else "JSON only"
        lines.append(
            f"| `{s.key}` | {_type_name(s.type)} | `{default}` | {flag} | "
            f"{'; '.join(rules)} | {s.help} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- internals


def _section_settings(cls: type, section: str | None) -> list[Setting]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"setting {cls.__name__}.{f.name} has no default")
        m = f.metadata
        out.append(
            Setting(
                section=section,
                name=f.name,
                type=hints[f.name],
                default=default,
                help=m["help"],
                choices=m["choices"],
                low=m["low"],
                high=m["high"],
                high_open=m["high_open"],
                flag=m["flag"],
                cli=m["cli"],
                gui=m["gui"],
            )
        )
    return out


def _is_optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp) and _is_union(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _strip_none(tp: Any) -> Any:
    if _is_union(tp):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    return tp


def _type_name(tp: Any) -> str:
    base = _strip_none(tp)
    origin = typing.get_origin(base)
    if origin is tuple:
        args = typing.get_args(base)
        inner = args[0].__name__
        name = f"{len(args)} {inner}s" if Ellipsis not in args else f"list of {inner}"
    elif origin is list:
        (inner,) = typing.get_args(base)
        name = f"list of {_type_name(inner)}"
    else:
        name = getattr(base, "__name__", str(base))
    return name + (" or empty" if _is_optional(tp) else "")


_KIND = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    if value is None:
        if _is_optional(tp):
            return None
        raise ConfigError(f"{key} cannot be empty (null); give {_type_name(tp)}")
    tp = _strip_none(tp)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{key} must be a list ({_type_name(tp)}), not {value!r}")
        items = list(value)
        args = typing.get_args(tp)
        if origin is tuple and Ellipsis not in args:
            if len(items) != len(args):
                raise ConfigError(f"{key} needs {len(args)} values, got {len(items)}: {value!r}")
            return tuple(_coerce(key, v, a) for v, a in zip(items, args))
        inner = args[0]
        converted = [_coerce(key, v, inner) for v in items]
        return tuple(converted) if origin is tuple else converted
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key} must be a finite number, not {value}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - every declared type is handled above
        return value
    raise ConfigError(f"{key} must be {_KIND.get(tp, _type_name(tp))}, not {value!r}")


def _plain(obj: Any) -> Any:
    """Tuples -> lists so that the dict is JSON-ready and round-trips unchanged."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _update(instance: Any, values: Any, section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    known = {s.name: s for s in settings(section)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in {section!r}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    kwargs = {name: known[name].coerce(value) for name, value in values.items()}
    return dataclasses.replace(instance, **kwargs)
