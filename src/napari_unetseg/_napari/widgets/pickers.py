"""Layer pickers of the dock widgets, kept in step with the viewer's layer list.

Default choices follow what a user expects:

- a hidden layer (``visible=False``, e.g. the sample's ground truth) is never the
  default of a picker whose layer is written or trained on (``hidden_ok=False``);
- two pickers of one widget never default to the same layer (``partner``);
- layers made by the plugin for the picker's purpose come first (``prefer``: annotation
  layers for "annotation", prediction layers for "prediction");
- a layer the user has just added, or selects in the layer list, becomes the choice
  when it suits the picker (a selection is followed until the user picks by hand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem

from ._common import DERIVED_ROLES, ROLE_KEY, TASK_KEY, layer_type_name

Predicate = Callable[[Any], bool]


def role(layer: Any) -> str | None:
    return layer.metadata.get(ROLE_KEY) if hasattr(layer, "metadata") else None


def task_of(layer: Any) -> str:
    """ "instances" for layers of object ids, else "semantic"."""
    if layer is None or not hasattr(layer, "metadata"):
        return "semantic"
    return "instances" if layer.metadata.get(TASK_KEY) == "instances" else "semantic"


def is_annotation(layer: Any) -> bool:
    """A labels layer made by the Annotate widget (or marked as annotation)."""
    return role(layer) == "annotation"


def is_prediction(layer: Any) -> bool:
    return role(layer) == "prediction"


def is_input_or_truth(layer: Any) -> bool:
    """Annotation, ground truth or preview: never a default "prediction"."""
    return role(layer) in ("annotation", "truth", "preview")


def is_reference(layer: Any) -> bool:
    """A layer that can serve as ground truth: not made by the plugin for training or
    prediction (the sample's truth qualifies)."""
    return role(layer) not in ("annotation", "prediction", "preview")


def prefer_layer(
    candidates: Sequence[Any],
    prefer: Predicate | None = None,
    avoid: Any = None,
    hidden_ok: bool = False,
    never: Predicate | None = None,
) -> Any:
    """The best default among ``candidates`` (viewer order), or None.

    Ranked by: not ``avoid``; visible (unless ``hidden_ok``); ``prefer``; the most
    recently added (top of the layer list). None when only ``avoid`` or hidden layers
    (``hidden_ok=False``) are left. Layers for which ``never`` is true are never chosen.
    """
    best, best_score = None, None
    for order, layer in enumerate(candidates):
        if never is not None and never(layer):
            continue
        score = (
            layer is not avoid,
            hidden_ok or bool(getattr(layer, "visible", True)),
            prefer is None or bool(prefer(layer)),
            order,
        )
        if best_score is None or score > best_score:
            best, best_score = layer, score
    if best_score is not None and not (best_score[0] and best_score[1]):
        return None  # only hidden layers, or only the partner's layer, are left
    return best


def _disconnect(viewer, callback) -> None:
    events = viewer.layers.events
    for ev in (events.inserted, events.removed, events.moved):
        ev.disconnect(callback)


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of one kind, kept up to date.

    Args:
        kind: "image" or "labels".
        none_text: an entry for "no layer" (listed first).
        predicate: only layers for which it is true are listed.
        prefer: layers preferred as the default choice.
        partner: another LayerCombo of the same widget; the default avoids its layer.
        never_default: layers never chosen by default (e.g. annotations as predictions).
        hidden_ok: a hidden layer may be the default (e.g. ground truth to compare with).
        default_none: start on ``none_text`` rather than a layer.
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer,
        kind: str = "image",
        *,
        none_text: str | None = None,
        predicate: Predicate | None = None,
        prefer: Predicate | None = None,
        partner: LayerCombo | None = None,
        hidden_ok: bool = False,
        default_none: bool = False,
        never_default: Predicate | None = None,
        parent=None,
    ):
        super().__init__(parent)
        self._viewer = viewer
        self._kind = kind
        self._none_text = none_text
        self._predicate = predicate
        self._prefer = prefer
        self.partner = partner
        self._hidden_ok = hidden_ok
        self._default_none = default_none and none_text is not None
        self._never = never_default
        self._user_chose = False
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self.refresh)
        events.inserted.connect(self._on_inserted)
        viewer.layers.selection.events.active.connect(self._on_active)
        self.activated.connect(self._on_user_choice)
        self.currentIndexChanged.connect(lambda _i: self.layer_changed.emit(self.value))
        self.refresh()

    def candidates(self) -> list:
        out = []
        for layer in self._viewer.layers:
            if layer_type_name(layer).lower() != self._kind:
                continue
            if self._predicate is not None and not self._predicate(layer):
                continue
            out.append(layer)
        return out

    def default_layer(self) -> Any:
        if self._default_none:
            return None
        avoid = self.partner.value if self.partner is not None else None
        return prefer_layer(self.candidates(), self._prefer, avoid, self._hidden_ok, self._never)

    def refresh(self, event=None) -> None:
        try:
            current = self.currentText()
        except RuntimeError:  # the Qt object was deleted with its widget
            self._detach()
            return
        self.blockSignals(True)
        try:
            self.clear()
            if self._none_text is not None:
                self.addItem(self._none_text)
            for layer in self.candidates():
                self.addItem(layer.name)
                layer.events.name.disconnect(self.refresh)
                layer.events.name.connect(self.refresh)
            idx = self.findText(current) if current else -1
            if idx < 0:
                default = self.default_layer()
                if default is not None:
                    idx = self.findText(default.name)
                elif self._none_text is not None:
                    idx = 0
            self.setCurrentIndex(idx)
        finally:
            self.blockSignals(False)
        if self.currentText() != current:
            self.layer_changed.emit(self.value)

    def repick(self, *_) -> None:
        """Choose the default again, unless the user picked a layer by hand."""
        try:
            if self._user_chose:
                return
            default = self.default_layer()
            if default is None:
                self.setCurrentIndex(0 if self._none_text is not None else -1)
            else:
                self.set_value(default, chosen=False)
        except RuntimeError:
            self._detach()

    def _suits(self, layer) -> bool:
        if layer is None or layer_type_name(layer).lower() != self._kind:
            return False
        if self._predicate is not None and not self._predicate(layer):
            return False
        if not self._hidden_ok and not layer.visible:
            return False
        if self.partner is not None and self.partner.value is layer:
            return False
        return self._prefer is None or bool(self._prefer(layer))

    def _on_inserted(self, event) -> None:
        layer = getattr(event, "value", None)
        try:
            if not self._default_none and self._suits(layer):
                self.set_value(layer, chosen=False)
        except RuntimeError:
            self._detach()

    def _on_active(self, event=None) -> None:
        layer = self._viewer.layers.selection.active
        try:
            if not self._user_chose and not self._default_none and self._suits(layer):
                self.set_value(layer, chosen=False)
        except RuntimeError:
            self._detach()

    def _on_user_choice(self, _index: int) -> None:
        self._user_chose = True

    def _detach(self) -> None:
        _disconnect(self._viewer, self.refresh)
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        self._viewer.layers.selection.events.active.disconnect(self._on_active)

    @property
    def value(self):
        name = self.currentText()
        if not name or name == self._none_text or name not in self._viewer.layers:
            return None
        return self._viewer.layers[name]

    def set_value(self, layer_or_name, chosen: bool = True) -> None:
        """Choose a layer (by layer or name). ``chosen``: an explicit choice, which
        the default rules then no longer change."""
        name = getattr(layer_or_name, "name", layer_or_name)
        idx = self.findText(str(name))
        if idx < 0:
            raise ValueError(f"no {self._kind} layer named {name!r}")
        self._user_chose = self._user_chose or chosen
        self.setCurrentIndex(idx)


def channel_siblings(layer, layers: Sequence) -> list:
    """``layer`` and the other channel layers read from the same file (the reader's
    ``unetseg_source`` and ``unetseg_channel`` metadata), in list order: all channels of
    one image are checked together."""
    md = getattr(layer, "metadata", None) or {}
    source = md.get("unetseg_source")
    if source is None or "unetseg_channel" not in md:
        return [layer]
    return [
        other
        for other in layers
        if (other.metadata or {}).get("unetseg_source") == source
        and "unetseg_channel" in (other.metadata or {})
    ]


class LayerChecklist(QListWidget):
    """Checkable list of image layers (one checked layer per input channel). The
    plugin's own outputs (previews, probabilities) are not listed."""

    changed = Signal()

    def __init__(self, viewer, kind: str = "image", parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._kind = kind
        self.setMaximumHeight(90)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self.refresh)
        self.itemChanged.connect(lambda _i: self.changed.emit())
        self.refresh()

    def candidates(self) -> list:
        return [
            layer
            for layer in self._viewer.layers
            if layer_type_name(layer).lower() == self._kind and role(layer) not in DERIVED_ROLES
        ]

    def refresh(self, event=None) -> None:
        try:
            checked = set(self.checked_names())
        except RuntimeError:  # the Qt object was deleted with its widget
            _disconnect(self._viewer, self.refresh)
            return
        self.blockSignals(True)
        try:
            self.clear()
            layers = self.candidates()
            for layer in layers:
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                on = layer.name in checked
                item.setCheckState(Qt.Checked if on else Qt.Unchecked)
                self.addItem(item)
            if layers and not self.checked_names():
                for layer in channel_siblings(prefer_layer(layers), layers):
                    self.findItems(layer.name, Qt.MatchExactly)[0].setCheckState(Qt.Checked)
        finally:
            self.blockSignals(False)
        self.changed.emit()

    def checked_names(self) -> list[str]:
        return [
            self.item(i).text()
            for i in range(self.count())
            if self.item(i).checkState() == Qt.Checked
        ]

    def set_checked(self, names: Sequence[str]) -> None:
        names = [getattr(n, "name", n) for n in names]
        missing = [n for n in names if not self.findItems(n, Qt.MatchExactly)]
        if missing:
            raise ValueError(f"no {self._kind} layer(s) named {missing}")
        for i in range(self.count()):
            item = self.item(i)
            item.setCheckState(Qt.Checked if item.text() in names else Qt.Unchecked)

    def layers(self) -> list:
        return [self._viewer.layers[n] for n in self.checked_names() if n in self._viewer.layers]
