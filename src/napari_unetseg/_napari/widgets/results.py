"""The layers that show predictions: probabilities, labels, instances.

A labels layer the user has painted in (napari emits ``paint`` for every brush, fill or
erase) is never overwritten: new labels then go to a new layer, and the user is told.
Predicted class k has the same colour as class k in annotation and preview layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import (
    CLASSES_KEY,
    ROLE_KEY,
    TASK_KEY,
    class_colour,
    geometry_kwargs,
    notify_info,
    prediction_colormap,
)
from .preview import PREVIEW_LAYER


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def _colormap(name: str, colour) -> Any:
    from napari.utils.colormaps import Colormap

    return Colormap([[0.0, 0.0, 0.0, 0.0], list(colour)], name=name)


class ResultLayers:
    """Result layers per source image: ``layers[source name][kind]`` with kinds
    "labels", "instances", "probability k", "foreground", "boundary"."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.layers: dict[str, dict[str, Any]] = {}
        self.edited: set[int] = set()  # id() of labels layers the user painted in
        self._specs: dict[tuple[str, str], tuple[str, str, dict]] = {}

    # ------------------------------------------------------------------ writing

    def _write(self, source_name: str, key: str, kind: str, data, name: str, **kwargs):
        self._specs[(source_name, key)] = (kind, name, kwargs)
        layer = self.layers.setdefault(source_name, {}).get(key)
        if layer is not None and layer in self.viewer.layers:
            if id(layer) in self.edited:
                notify_info(f"{layer.name!r} was edited by hand: the new labels are a new layer")
            elif layer.data.shape == data.shape:
                layer.data = data
                return layer
            else:
                self.viewer.layers.remove(layer)
        new_name, n = name, 2
        while new_name in self.viewer.layers:
            new_name = f"{name} ({n})"
            n += 1
        adder = getattr(self.viewer, f"add_{kind}")
        layer = adder(data, name=new_name, **kwargs)
        if kind == "labels":
            layer.events.paint.connect(self._edit_watcher(id(layer)))
        self.layers[source_name][key] = layer
        return layer

    def _edit_watcher(self, layer_id: int):
        def on_paint(_event=None) -> None:
            self.edited.add(layer_id)

        return on_paint

    def update(self, source_name: str, key: str, data: np.ndarray) -> Any:
        """New data for an existing result (a new layer when the old one was edited or
        removed)."""
        spec = self._specs.get((source_name, key))
        if spec is None:
            return None
        kind, name, kwargs = spec
        return self._write(source_name, key, kind, data, name, **kwargs)

    def show(self, source, pred, ckpt) -> dict[str, Any]:
        """Add or update the layers of a core ``Prediction`` of ``source``; hides the
        training preview."""
        name = source.name
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].visible = False
        task = getattr(pred, "task", ckpt.task)
        probs = pred.probabilities
        hidden = {"blending": "additive", "contrast_limits": (0.0, 1.0), "visible": False}
        classes = list(ckpt.class_names)
        if task == "instances":
            if probs is not None:
                self._write(
                    name,
                    "foreground",
                    "image",
                    (1.0 - probs[0]).astype(np.float32),
                    f"{name} foreground probability",
                    colormap=_colormap("unetseg class 1", class_colour(1)),
                    **hidden,
                    **geometry_kwargs(source, **{ROLE_KEY: "probability"}),
                )
            if pred.boundaries is not None:
                self._write(
                    name,
                    "boundary",
                    "image",
                    np.asarray(pred.boundaries, np.float32),
                    f"{name} boundary probability",
                    colormap="magma",
                    **hidden,
                    **geometry_kwargs(source, **{ROLE_KEY: "boundary"}),
                )
            mask = (np.asarray(pred.instances) > 0).astype(np.uint8)
            self._labels(source, "labels", mask, f"{name} prediction", classes, "semantic")
            self._write(
                name,
                "instances",
                "labels",
                np.asarray(pred.instances),
                f"{name} instances",
                **geometry_kwargs(source, **{ROLE_KEY: "prediction", TASK_KEY: "instances"}),
            )
        else:
            if probs is not None:
                for k in range(1, probs.shape[0]):
                    cname = classes[k - 1] if k - 1 < len(classes) else k
                    self._write(
                        name,
                        f"probability {k}",
                        "image",
                        np.asarray(probs[k], np.float32),
                        f"{name} probability {cname}",
                        colormap=_colormap(f"unetseg class {k}", class_colour(k)),
                        **hidden,
                        **geometry_kwargs(source, **{ROLE_KEY: "probability"}),
                    )
            labels = np.asarray(pred.labels)
            self._labels(source, "labels", labels, f"{name} prediction", classes, "semantic")
        return self.layers[name]

    def _labels(self, source, key, data, layer_name, classes, task) -> Any:
        return self._write(
            source.name,
            key,
            "labels",
            data,
            layer_name,
            colormap=prediction_colormap(max(len(classes), 1)),
            **geometry_kwargs(
                source, **{ROLE_KEY: "prediction", TASK_KEY: task, CLASSES_KEY: classes}
            ),
        )

    # ------------------------------------------------------------------ reading

    def main_layer(self, source_name: str) -> Any:
        """The instances layer of an instance prediction, else the labels layer."""
        layers = self.layers.get(source_name, {})
        return layers.get("instances", layers.get("labels"))

    def report_empty(self, source_name: str) -> bool:
        """Tell the user when the prediction of ``source_name`` found nothing; returns
        True then."""
        layer = self.main_layer(source_name)
        if layer is None or np.asarray(layer.data).any():
            return False
        _notify_warning(
            f"nothing was found in {source_name!r}: lower the Threshold (or Interior "
            "threshold), set Minimum size to 0, or train longer / annotate more slices "
            "with every class"
        )
        return True
