"""Annotate widget driven as a user would: new layer, paint, mark slices, summary, simulate."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.utils.key_bindings import KeyBinding
from qtpy.QtCore import Qt

from napari_unetseg._napari.widgets.annotate import MARK_SLICE_KEY, AnnotateWidget
from napari_unetseg.core.io import meta_from_array
from napari_unetseg.core.sample import make_sample

pytestmark = pytest.mark.gui

SHAPE = (16, 32, 32)


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    image, semantic, instances = make_sample(shape=SHAPE, seed=3)
    meta = meta_from_array(shape=SHAPE, spacing=(2.0, 1.0, 1.0))
    viewer.add_image(image, name="scan", scale=(2.0, 1.0, 1.0), metadata={"unetseg_meta": meta})
    viewer.add_labels(semantic, name="truth", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(instances, name="objects", scale=(2.0, 1.0, 1.0))
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, semantic, instances, meta


def test_annotation_layer_mark_slices_and_summary(setup, qtbot, monkeypatch):
    viewer, widget, _sem, _inst, meta = setup

    # --- new layer: shape, scale, geometry, classes, colours
    widget.image_combo.set_value("scan")
    widget.set_class_names(["background", "cell", "membrane"])
    qtbot.mouseClick(widget.new_btn, Qt.LeftButton)
    layer = viewer.layers["scan annotations"]
    assert layer.data.shape == SHAPE
    assert not np.asarray(layer.data).any()
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    assert layer.metadata["unetseg_meta"] is meta
    assert layer.metadata["unetseg_class_names"] == ["cell", "membrane"]
    assert widget.annotation_combo.value is layer
    cmap = layer.colormap
    assert cmap.map(0)[3] == 0  # unpainted: transparent
    bg = np.asarray(cmap.map(1))  # background: faint grey
    assert 0 < bg[3] < 0.6
    assert np.allclose(bg[0], bg[1])
    assert np.allclose(bg[1], bg[2])
    assert cmap.map(2)[3] == 1
    assert not np.allclose(cmap.map(2), cmap.map(3))

    # --- paint two voxels of class "cell" in z = 5, mark that slice complete
    layer.data_setitem((np.array([5, 5]), np.array([3, 4]), np.array([7, 7])), 2)
    viewer.dims.set_current_step(0, 5)
    qtbot.mouseClick(widget.mark_btn, Qt.LeftButton)
    data = np.asarray(layer.data)
    assert (data[5] > 0).all()
    assert data[5, 3, 7] == 2
    assert data[5, 4, 7] == 2
    assert (data[5] == 1).sum() == 32 * 32 - 2
    assert not data[:5].any()
    assert not data[6:].any()

    # --- summary (debounced, after the paint events)
    qtbot.waitUntil(
        lambda: widget.summary is not None and widget.summary["annotated_slices"]["z"] == 1,
        timeout=3000,
    )
    s = widget.summary
    assert s["voxels_per_class"]["cell"] == 2
    assert s["voxels_per_class"]["background"] == 32 * 32 - 2
    assert s["missing_classes"] == ["membrane"]
    assert "warning" in widget.summary_label.text()
    assert "membrane" in widget.summary_label.text()
    assert s["annotated_fraction"] == pytest.approx(32 * 32 / np.prod(SHAPE))

    # --- undo takes the whole fill back in one step, like a paint stroke
    layer.undo()
    data = np.asarray(layer.data)
    assert (data > 0).sum() == 2
    # ... and the summary follows the undo
    qtbot.waitUntil(lambda: widget.summary["annotated_slices"]["z"] == 0, timeout=3000)
    assert widget.summary["voxels_per_class"]["background"] == 0

    # --- the keyboard shortcut on another axis: (z, x) planes shown, slice y = 9
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_current_step(1, 9)
    viewer.keymap[KeyBinding.from_str(MARK_SLICE_KEY)](viewer)
    data = np.asarray(layer.data)
    assert (data[:, 9, :] > 0).all()
    assert (data > 0).sum() == 16 * 32 + 2  # the y plane plus the two painted voxels
    qtbot.waitUntil(
        lambda: widget.summary is not None and widget.summary["annotated_slices"]["y"] == 1,
        timeout=3000,
    )

    # --- in the 3D view there is no slice: the user is told, nothing changes
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.annotate._notify_error", errors.append)
    before = np.array(layer.data, copy=True)
    viewer.dims.ndisplay = 3
    widget.mark_btn.click()
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    assert errors
    assert "2D" in errors[0]


def test_simulate_from_ground_truth(setup, qtbot):
    viewer, widget, semantic, instances, _meta = setup
    for name, truth, is_instances in (("truth", semantic, False), ("objects", instances, True)):
        widget.truth_combo.set_value(name)
        widget.fraction_spin.setValue(0.25)
        widget.axes_edit.setText("z")
        widget.mode_combo.setCurrentText("even")
        widget.seed_spin.setValue(1)
        widget.instances_check.setChecked(is_instances)
        qtbot.mouseClick(widget.simulate_btn, Qt.LeftButton)
        layer = viewer.layers[f"{name} sparse"]
        ann = np.asarray(layer.data)
        kept = [z for z in range(SHAPE[0]) if ann[z].any()]
        assert 1 <= len(kept) <= SHAPE[0] // 2
        for z in kept:
            np.testing.assert_array_equal(ann[z], truth[z].astype(np.int64) + 1)
        assert not ann[[z for z in range(SHAPE[0]) if z not in kept]].any()
        assert layer.metadata["unetseg_task"] == ("instances" if is_instances else "semantic")
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
        assert widget.annotation_combo.value is layer


def _errors(monkeypatch) -> list[str]:
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.annotate._notify_error", errors.append)
    return errors


def test_acts_only_on_annotation_layers_and_never_on_hidden_ones(setup, qtbot, monkeypatch):
    viewer, widget, _sem, _inst, _meta = setup
    errors = _errors(monkeypatch)
    truth = viewer.layers["truth"]
    before = np.array(truth.data, copy=True)
    # a labels layer the plugin did not make is not written into
    widget.annotation_combo.set_value(truth)
    viewer.dims.set_current_step(0, 3)
    viewer.keymap[KeyBinding.from_str(MARK_SLICE_KEY)](viewer)
    np.testing.assert_array_equal(np.asarray(truth.data), before)
    assert "not an annotation layer" in errors[-1]

    # ... until the user picks it as annotation in the widget's Layer list
    index = widget.annotation_combo.findText("truth")
    widget.annotation_combo.activated.emit(index)
    assert truth.metadata["unetseg_role"] == "annotation"
    # a hidden layer is never written into
    truth.visible = False
    qtbot.mouseClick(widget.mark_btn, Qt.LeftButton)
    np.testing.assert_array_equal(np.asarray(truth.data), before)
    assert "hidden" in errors[-1]
    truth.visible = True
    qtbot.mouseClick(widget.mark_btn, Qt.LeftButton)
    marked = np.asarray(truth.data)
    assert (marked[3] > 0).all()
    np.testing.assert_array_equal(marked[3][before[3] > 0], before[3][before[3] > 0])


def test_instance_layer_new_ids_colours_and_object_count(setup, qtbot):
    from napari.layers.labels._labels_key_bindings import new_label
    from napari.utils.colormaps import label_colormap

    viewer, widget, _sem, _inst, _meta = setup
    widget.image_combo.set_value("scan")
    widget.kind_combo.setCurrentText("objects (instances)")
    qtbot.mouseClick(widget.new_btn, Qt.LeftButton)
    layer = viewer.layers["scan objects"]
    assert layer.metadata["unetseg_task"] == "instances"
    assert layer.selected_label == 2
    assert "M new object" in widget.keys_label.text()
    layer.data_setitem((np.array([4]), np.array([2]), np.array([2])), 2)
    new_label(layer)  # napari's "new label" (key M): the next free id
    assert layer.selected_label == 3
    layer.data_setitem((np.array([4]), np.array([9]), np.array([9])), 3)
    new_label(layer)
    assert layer.selected_label == 4
    # object ids in napari's default Labels colours; background faint grey
    default = label_colormap(49, 0.5, background_value=0)
    for v in (2, 3, 4, 90):
        layer.selected_label = v
        np.testing.assert_allclose(layer.colormap.map(v), default.map(v))
    assert layer.colormap.map(1)[3] < 0.6
    qtbot.waitUntil(lambda: widget.summary is not None and widget.summary.get("objects") == 2)
    assert "2 objects" in widget.summary_label.text()


def test_keys_pick_classes_and_are_shown(setup, qtbot):
    viewer, widget, _sem, _inst, _meta = setup
    widget.set_class_names(["background", "cell", "membrane"])
    layer = widget.new_annotation_layer(viewer.layers["scan"], kind="semantic")
    assert "3 membrane" in widget.keys_label.text()
    assert "1 background" in widget.keys_label.text()
    layer.keymap[KeyBinding.from_str("3")](layer)
    assert layer.selected_label == 3
    assert widget.class_list.currentRow() == 2
    layer.keymap[KeyBinding.from_str("1")](layer)
    assert layer.selected_label == 1


def test_2d_image_is_marked_whole_and_not_summarised_in_slices(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, _sem, _inst = make_sample(shape=(4, 24, 20), seed=1)
    viewer.add_image(image[0], name="photo")
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    layer = widget.new_annotation_layer()
    assert layer.data.shape == (24, 20)
    layer.data_setitem((np.array([3]), np.array([4])), 2)
    assert widget.mark_slice_complete() == 24 * 20 - 1
    data = np.asarray(layer.data)
    assert (data > 0).all()
    assert data[3, 4] == 2
    qtbot.waitUntil(lambda: widget.summary is not None and widget.summary["annotated_voxels"] > 0)
    text = widget.summary_label.text()
    assert "slices" not in text
    assert "pixels" in text


def test_first_run_line(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "Open Sample" in widget.header.text()
    assert "New annotation layer" in widget.header.text()
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="img")
    assert "press New annotation layer" in widget.header.text()
    widget.new_annotation_layer()
    assert "Mark slice complete" in widget.header.text()
