"""Human in the loop: which slice to paint next, the model's prediction as a starting
point, and a short fine-tuning of the current model.

A section of the Train dock (:class:`SuggestBox`). It reads the Train dock's image and
annotation pickers and the viewer's current model (:mod:`..state`):

* *Suggest next slice* ranks the unannotated slices (``core.suggest_model.suggest_events``
  in a background worker, with progress), lists the best few with score and reason,
  and jumps the viewer to the best one; clicking a row jumps there. Slices painted since
  the ranking are dropped from the list whenever it is shown or used.
* *Accept prediction on this slice* copies the prediction of the slice on screen (the
  plugin's prediction labels layer of the image, else the last training preview of that
  slice) into the annotation layer as value ``k + 1``, through the layer's edit history
  (Ctrl+Z undoes it); painted voxels are kept unless "Replace painted voxels" is ticked.
* *Fine-tune* continues the current model (weights and optimizer state) on the
  enlarged annotation for a short run; the core lowers the learning rate of a resumed
  run by ``train.finetune_lr_factor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
)

from ...core.events import Done, Info, Progress
from ...core.suggest import DEFAULT_METHOD, METHODS, Suggestion
from ..workers import EventRunner
from ._common import (
    ROLE_KEY,
    TASK_KEY,
    current_slice,
    image_array,
    notify_error,
    notify_info,
    spacing_of,
    stop_work_on_close,
)

#: Suggestions listed.
TOP = 5
#: Default length of a fine-tuning run (steps); benchmarks/RESULTS.md, fine-tuning.
FINETUNE_STEPS = 40


class SuggestBox(QGroupBox):
    """Suggest next slice / Accept prediction on this slice / Fine-tune.

    ``host`` is the Train widget: its ``viewer``, ``state`` (the current model),
    ``image_list`` and ``annotation_combo`` pickers, ``start(resume, iterations)`` and
    ``last_preview``. Scriptable API: :meth:`suggest`, :meth:`jump_to`,
    :meth:`open_suggestions`, :meth:`accept_prediction`, :meth:`finetune`.
    """

    def __init__(self, host, parent=None):
        super().__init__("Next slice (human in the loop)", parent)
        self.host = host
        self.viewer = host.viewer
        self.runner = EventRunner()
        self.suggestions: list[Suggestion] = []
        self._layer: Any = None  # the annotation layer the suggestions were made for
        self._shown: list[Suggestion] = []  # the rows of the list
        form = QFormLayout(self)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setCurrentText(DEFAULT_METHOD)
        self.method_combo.setToolTip(
            "diversity: fill the largest gaps between painted slices (no prediction); "
            "entropy / margin: where the model is unsure; tta: where flipped predictions "
            "disagree (slowest)"
        )
        form.addRow("Ranking", self.method_combo)
        row = QHBoxLayout()
        self.suggest_btn = QPushButton("Suggest next slice")
        self.suggest_btn.setToolTip("Rank the unannotated slices and go to the best one")
        self.suggest_btn.clicked.connect(lambda: self._guard(self.suggest))
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.runner.stop)
        row.addWidget(self.suggest_btn)
        row.addWidget(self.cancel_btn)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setFormat("idle")
        form.addRow(self.progress)
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.setToolTip("Click a slice to go there")
        self.list.itemClicked.connect(lambda item: self._guard(lambda: self._clicked(item)))
        form.addRow(self.list)
        self.accept_btn = QPushButton("Accept prediction on this slice")
        self.accept_btn.setToolTip(
            "Copy the prediction of the slice on screen into the annotation layer, as a "
            "starting point to correct (Ctrl+Z undoes it)"
        )
        self.accept_btn.clicked.connect(lambda: self._guard(self.accept_prediction))
        self.overwrite_check = QCheckBox("Replace painted voxels")
        self.overwrite_check.setToolTip("Unticked: only unannotated voxels get the prediction")
        form.addRow(self.accept_btn)
        form.addRow(self.overwrite_check)
        row = QHBoxLayout()
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(FINETUNE_STEPS)
        self.steps_spin.setSuffix(" steps")
        self.finetune_btn = QPushButton("Fine-tune")
        self.finetune_btn.setToolTip(
            "Continue the current model on the enlarged annotation for a few steps "
            "(weights and optimizer state kept, lower learning rate)"
        )
        self.finetune_btn.clicked.connect(lambda: self._guard(self.finetune))
        row.addWidget(self.finetune_btn)
        row.addWidget(self.steps_spin)
        form.addRow(row)
        stop_work_on_close(self, self.runner)
        self._set_running(False)

    # ------------------------------------------------------------------ suggest

    def _annotation(self) -> Any:
        layer = self.host.annotation_combo.value
        if layer is None:
            raise ValueError("choose the annotation layer (make one in the Annotate widget)")
        return layer

    def suggest(self):
        """Rank the slices of the chosen annotation in the background; the list is
        filled and the viewer jumps to the best slice when done. Returns the worker."""
        from ...core.suggest_model import suggest_events

        if self.runner.running:
            raise RuntimeError("suggestions are already being computed")
        ckpt = self.host.state.checkpoint
        method = self.method_combo.currentText()
        if ckpt is None and method != "diversity":
            raise ValueError("no model: train one (Start) or load a model file first")
        layer = self._annotation()
        images = self.host.image_list.layers()
        if not images:
            raise ValueError("check the image layer(s) the annotation belongs to")
        annotation = np.array(layer.data, copy=True)
        image = image_array(images)
        spacing = spacing_of(images[0])
        axes = "zyx" if annotation.ndim == 3 else "yx"

        def factory(token):
            if ckpt is None:  # diversity needs no model
                from ...core.suggest import suggest_slices

                picks = suggest_slices(None, annotation, top=TOP, axes=axes, method=method)
                yield Done(result=picks)
                return
            yield from suggest_events(
                ckpt,
                image,
                annotation,
                top=TOP,
                axes=axes,
                method=method,
                spacing=spacing,
                cancel=token,
            )

        self._layer = layer
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        self._set_running(True)
        return self.runner.start(
            factory, self._on_event, on_error=self._on_error, on_finished=self._on_finished
        )

    def _on_event(self, ev) -> None:
        if isinstance(ev, Progress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.progress.setFormat(f"{ev.stage} {ev.done}/{ev.total}".strip())
        elif isinstance(ev, Info):
            self.progress.setFormat(ev.message[:80])
        elif isinstance(ev, Done) and not ev.cancelled:
            self.suggestions = list(ev.result or [])
            picks = self.open_suggestions()
            if picks:
                self.jump_to(picks[0])
            else:
                notify_info("no unannotated slice left to suggest")

    def _on_error(self, exc: BaseException) -> None:
        notify_error(f"Suggesting slices failed: {exc}")

    def _on_finished(self) -> None:
        try:
            self._set_running(False)
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if self.suggestions else 0)
            self.progress.setFormat(f"{len(self.suggestions)} slice(s) suggested")
        except RuntimeError:  # deleted with its dock
            pass

    def open_suggestions(self) -> list[Suggestion]:
        """The suggestions whose slice is still unannotated (checked on the layer now);
        the list shows them."""
        from ...core.suggest import still_open

        layer = self._layer
        if layer is None or layer not in self.viewer.layers:
            picks: list[Suggestion] = []
        else:
            picks = still_open(np.asarray(layer.data), self.suggestions)
        self.list.clear()
        letters = "zyx"[3 - layer.ndim :] if layer is not None else "zyx"
        for s in picks:
            self.list.addItem(f"{letters[s.axis]} = {s.index}: score {s.score:.3f}; {s.reason}")
        self._shown = picks
        return picks

    def _clicked(self, item) -> None:
        row = self.list.row(item)
        shown = list(self._shown)
        target = shown[row] if 0 <= row < len(shown) else None
        if target is None or target not in self.open_suggestions():
            notify_info("that slice was annotated since the suggestion; choose another")
            return
        self.jump_to(target)

    def jump_to(self, suggestion: Suggestion) -> None:
        """Show slice ``suggestion.index`` along ``suggestion.axis`` of the annotation
        layer in the 2D view (that axis becomes the sliced one)."""
        from ...core.suggest import still_open

        layer = self._layer if self._layer is not None else self._annotation()
        if not still_open(np.asarray(layer.data), [suggestion]):
            raise ValueError(
                f"slice {suggestion.index} along axis {suggestion.axis} was annotated since "
                "the suggestion: suggest again"
            )
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            dims.ndisplay = 2
        offset = dims.ndim - layer.ndim
        world_axis = offset + int(suggestion.axis)
        if list(dims.not_displayed)[-1:] != [world_axis]:
            spatial = [a for a in range(offset, dims.ndim) if a != world_axis]
            dims.order = (*range(offset), world_axis, *spatial)
        data_pt = np.asarray(layer.world_to_data(np.asarray(dims.point)[offset:]), float)
        data_pt[suggestion.axis] = suggestion.index
        world = np.asarray(layer.data_to_world(data_pt), float)
        dims.set_point(world_axis, float(world[suggestion.axis]))
        self.viewer.layers.selection.active = layer

    # ------------------------------------------------------------------ accept

    def prediction_source(self, layer) -> Any:
        """The plugin's prediction labels layer for ``layer`` (same shape and task; the
        one of the checked image first, the newest otherwise), or None."""
        task = layer.metadata.get(TASK_KEY, "semantic")
        images = [la.name for la in self.host.image_list.layers()]
        found = [
            la
            for la in self.viewer.layers
            if type(la).__name__ == "Labels"
            and la.metadata.get(ROLE_KEY) == "prediction"
            and la.metadata.get(TASK_KEY, "semantic") == task
            and tuple(la.data.shape) == tuple(layer.data.shape)
        ]
        own = [la for la in found if la.metadata.get("unetseg_source") in images]
        return (own or found or [None])[-1]

    def accept_prediction(self, overwrite: bool | None = None) -> int:
        """Copy the prediction of the slice on screen into the annotation layer
        (prediction k -> annotation k + 1) through its edit history, so that Ctrl+Z
        undoes it. ``overwrite``: replace painted voxels too (default: the check box).
        Returns the number of voxels changed."""
        from ...core.suggest_model import accepted_plane

        layer = self._annotation()
        overwrite = self.overwrite_check.isChecked() if overwrite is None else bool(overwrite)
        if layer.ndim == 2:
            axis, index = None, 0
            ann = np.asarray(layer.data)
        else:
            axis, index = current_slice(self.viewer, layer)
            ann = np.take(np.asarray(layer.data), index, axis=axis)
        pred = self._predicted_plane(layer, axis, index)
        hits, values = accepted_plane(ann, pred, overwrite=overwrite)
        if hits[0].size == 0:
            notify_info("nothing to copy: the slice is annotated already")
            return 0
        full = list(hits)
        if axis is not None:
            full.insert(axis, np.full(hits[0].shape, index, dtype=hits[0].dtype))
        with layer.block_history():
            layer.data_setitem(tuple(full), values.astype(layer.data.dtype))
        notify_info(f"{hits[0].size} voxels copied from the prediction; Ctrl+Z undoes it")
        return int(hits[0].size)

    def _predicted_plane(self, layer, axis: int | None, index: int) -> np.ndarray:
        source = self.prediction_source(layer)
        if source is not None:
            data = np.asarray(source.data)
            return data if axis is None else np.take(data, index, axis=axis)
        ev = getattr(self.host, "last_preview", None)
        semantic = layer.metadata.get(TASK_KEY, "semantic") == "semantic"
        if ev is not None and semantic and (axis is None or (ev.axis, ev.index) == (axis, index)):
            return np.argmax(np.asarray(ev.probabilities), axis=0)
        raise ValueError(
            "no prediction of this slice: Run the Predict widget on the image (or train "
            "with the preview on this slice) first"
        )

    # ------------------------------------------------------------------ fine-tune

    def finetune(self, steps: int | None = None):
        """Continue the current model on the annotation for ``steps`` (default: the
        spin box) in the Train dock; returns its worker."""
        ckpt = self.host.state.checkpoint
        if ckpt is None:
            raise ValueError("no model to fine-tune: train one (Start) or load a model file")
        n = int(self.steps_spin.value() if steps is None else steps)
        return self.host.start(resume=ckpt, iterations=n)

    # ------------------------------------------------------------------ Qt glue

    def _set_running(self, running: bool) -> None:
        self.suggest_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            notify_error(str(exc))
