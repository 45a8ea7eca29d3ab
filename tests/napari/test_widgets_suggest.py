"""The human-in-the-loop section of the Train dock, driven as a user would: suggest the
next slice (the viewer goes there), accept the prediction on a slice (and undo it),
fine-tune the current model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt

from napari_unetseg._napari.state import model_state
from napari_unetseg._napari.widgets._common import current_slice
from napari_unetseg._napari.widgets.train import TrainWidget
from napari_unetseg.core.io import meta_from_array
from napari_unetseg.core.sample import make_sample
from napari_unetseg.core.suggest import Suggestion

pytestmark = pytest.mark.gui

SHAPE = (16, 32, 32)
PAINTED_Z = (3, 12)


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.suggest.notify_error", errors.append)
    monkeypatch.setattr("napari_unetseg._napari.widgets.train.notify_error", errors.append)
    viewer = make_napari_viewer()
    image, semantic, _ = make_sample(shape=SHAPE, seed=2)
    meta = meta_from_array(shape=SHAPE, spacing=(1.0, 1.0, 1.0))
    viewer.add_image(image, name="scan", metadata={"unetseg_meta": meta})
    ann = np.zeros(SHAPE, np.uint8)
    for z in PAINTED_Z:
        ann[z] = semantic[z] + 1
    layer = viewer.add_labels(
        ann,
        name="scan annotations",
        metadata={
            "unetseg_role": "annotation",
            "unetseg_class_names": ["bright", "textured"],
            "unetseg_task": "semantic",
        },
    )
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_list.set_checked(["scan"])
    widget.annotation_combo.set_value("scan annotations")
    widget.setting("model.base_width").value = 4
    widget.setting("model.depth").value = 2
    widget.setting("data.patch_size").value = "8,16,16"
    widget.setting("data.validation_fraction").value = 0.0
    widget.setting("train.iterations").value = 3
    widget.setting("train.batch_size").value = 1
    widget.setting("train.preview_seconds").value = 0.0
    widget.setting("train.threads").value = 1
    widget.device_combo.set_device("cpu")
    return viewer, widget, layer, semantic, errors


def _train(qtbot, widget, button, errors):
    with qtbot.waitSignal(widget.runner.finished, timeout=90_000):
        qtbot.mouseClick(button, Qt.LeftButton)
    assert widget.runner.error is None, widget.runner.error
    assert not errors, errors


def test_suggest_jumps_to_the_best_slice_and_drops_painted_ones(setup, qtbot):
    viewer, widget, layer, semantic, errors = setup
    _train(qtbot, widget, widget.start_btn, errors)
    box = widget.suggest_box
    box.method_combo.setCurrentText("entropy")
    with qtbot.waitSignal(box.runner.finished, timeout=60_000):
        qtbot.mouseClick(box.suggest_btn, Qt.LeftButton)
    assert box.runner.error is None, box.runner.error
    assert not errors, errors
    picks = box.open_suggestions()
    assert 2 <= len(picks) <= 5
    assert all((p.axis, p.index) not in [(0, z) for z in PAINTED_Z] for p in picks)
    # the viewer shows the best slice, along its axis
    assert current_slice(viewer, layer) == (picks[0].axis, picks[0].index)
    assert box.list.count() == len(picks)
    assert "score" in box.list.item(0).text()
    assert box.progress.text() == f"{len(picks)} slice(s) suggested"

    # the user paints the best slice: it leaves the list; a click goes to the next one
    sl: list = [slice(None)] * 3
    sl[picks[0].axis] = picks[0].index
    data = np.asarray(layer.data)
    data[tuple(sl)] = np.take(semantic, picks[0].index, axis=picks[0].axis) + 1
    layer.refresh()
    assert box.open_suggestions() == picks[1:]
    assert box.list.count() == len(picks) - 1
    box.list.itemClicked.emit(box.list.item(0))
    assert current_slice(viewer, layer) == (picks[1].axis, picks[1].index)
    # a painted slice is refused when asked for directly
    with pytest.raises(ValueError, match="annotated since"):
        box.jump_to(picks[0])

    # any axis can be brought on screen
    box.jump_to(Suggestion(axis=2, index=5, score=0.0, reason=""))
    assert current_slice(viewer, layer) == (2, 5)
    box.jump_to(Suggestion(axis=1, index=7, score=0.0, reason=""))
    assert current_slice(viewer, layer) == (1, 7)


def test_accept_prediction_on_a_slice_and_undo(setup, qtbot):
    viewer, widget, layer, semantic, errors = setup
    box = widget.suggest_box
    # no prediction yet: a clear message
    viewer.dims.set_current_step(0, 7)
    qtbot.mouseClick(box.accept_btn, Qt.LeftButton)
    assert errors
    assert "no prediction of this slice" in errors[-1]

    pred = (semantic > 0).astype(np.uint8) * semantic.astype(np.uint8)
    viewer.add_labels(
        pred,
        name="scan prediction",
        metadata={
            "unetseg_role": "prediction",
            "unetseg_task": "semantic",
            "unetseg_source": "scan",
        },
    )
    # a stroke the user painted on z = 7 stays
    data = np.asarray(layer.data)
    data[7, 0:3, 0:3] = 3
    before = data.copy()
    viewer.layers.selection.active = layer
    viewer.dims.set_current_step(0, 7)
    assert current_slice(viewer, layer) == (0, 7)
    n = box.accept_prediction()
    after = np.asarray(layer.data)
    expected = np.where(before[7] == 0, pred[7].astype(np.int64) + 1, before[7])
    np.testing.assert_array_equal(after[7], expected)
    assert n == int((before[7] == 0).sum())
    # other slices are untouched
    others = [z for z in range(SHAPE[0]) if z != 7]
    np.testing.assert_array_equal(after[others], before[others])
    # Ctrl+Z (the layer's undo) restores the slice
    layer.undo()
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    layer.redo()
    np.testing.assert_array_equal(np.asarray(layer.data)[7], expected)
    # "Replace painted voxels" takes the prediction everywhere on the slice
    box.overwrite_check.setChecked(True)
    qtbot.mouseClick(box.accept_btn, Qt.LeftButton)
    np.testing.assert_array_equal(np.asarray(layer.data)[7], pred[7] + 1)
    assert len(errors) == 1


def test_finetune_continues_the_current_model(setup, qtbot):
    import torch

    from napari_unetseg.core.model import UNet

    viewer, widget, layer, semantic, errors = setup
    _train(qtbot, widget, widget.start_btn, errors)
    first = model_state(viewer).checkpoint
    assert first.iterations == 3
    # two more slices painted, then a short fine-tuning run
    data = np.asarray(layer.data)
    for z in (7, 9):
        data[z] = semantic[z] + 1
    layer.refresh()
    box = widget.suggest_box
    box.steps_spin.setValue(2)
    _train(qtbot, widget, box.finetune_btn, errors)
    second = model_state(viewer).checkpoint
    assert second is not first
    assert second.iterations == 5
    assert [h["iteration"] for h in widget.history] == [4, 5]
    assert any("fine-tune factor" in m for m in widget.messages)
    # warm start: the weights moved a little from the first model, not from a new one
    torch.manual_seed(int(first.config.train.seed))
    fresh = UNet(first.config.model).state_dict()

    def distance(a, b):
        keys = [k for k in a if a[k].is_floating_point()]
        return sum(float((a[k].float() - b[k].float()).norm()) for k in keys)

    assert distance(second.state_dict, first.state_dict) > 0
    assert distance(second.state_dict, first.state_dict) < distance(second.state_dict, fresh)
