"""Predict widget: current and loaded models, result layers, re-thresholding, export."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt

from napari_unetseg._napari.state import model_state
from napari_unetseg._napari.widgets._common import annotation_colormap
from napari_unetseg._napari.widgets.predict import PredictWidget
from napari_unetseg._napari.widgets.preview import PREVIEW_LAYER
from napari_unetseg.core.annotations import sparsify
from napari_unetseg.core.checkpoint import save_checkpoint
from napari_unetseg.core.config import Config
from napari_unetseg.core.events import run_to_completion
from napari_unetseg.core.io import meta_from_array, read_labels
from napari_unetseg.core.sample import make_sample

pytestmark = pytest.mark.gui

SHAPE = (12, 24, 28)
SPACING = (2.0, 1.0, 0.5)


def _tiny_checkpoint(image, truth, task):
    from napari_unetseg.core.training import Trainer

    cfg = Config()
    cfg.train.task = task
    cfg.class_names = ["bright", "textured"] if task == "semantic" else ["object"]
    cfg.model.num_classes = 3
    cfg.model.base_width = 4
    cfg.model.depth = 2
    cfg.data.patch_size = (8, 16, 16)
    cfg.train.iterations = 3
    cfg.train.device = "cpu"
    cfg.infer.device = "cpu"
    cfg.train.threads = 1
    ann = sparsify(truth, fraction=0.3, axes="zyx", mode="even", seed=0)
    trainer = Trainer(image[None], ann, cfg, spacing=SPACING)
    return run_to_completion(trainer.run()).result


@pytest.fixture(scope="module")
def data():
    image, semantic, instances = make_sample(shape=SHAPE, seed=4)
    return image, semantic, instances


@pytest.fixture(scope="module")
def models(data, tmp_path_factory):
    image, semantic, instances = data
    sem = _tiny_checkpoint(image, semantic, "semantic")
    inst = _tiny_checkpoint(image, instances, "instances")
    inst.config.infer.min_size = 3
    inst.config.infer.interior_threshold = 0.4
    path = save_checkpoint(inst, tmp_path_factory.mktemp("models") / "objects.safetensors")
    return sem, path


def _run(qtbot, widget):
    with qtbot.waitSignal(widget.runner.finished, timeout=90_000):
        qtbot.mouseClick(widget.run_btn, Qt.LeftButton)
    assert widget.runner.error is None, widget.runner.error


def test_predict_threshold_and_export(
    make_napari_viewer, qtbot, data, models, tmp_path, monkeypatch
):
    image, _semantic, _instances = data
    sem_ckpt, inst_path = models
    viewer = make_napari_viewer()
    meta = meta_from_array(shape=SHAPE, spacing=SPACING)
    viewer.add_image(image, name="scan", scale=SPACING, metadata={"unetseg_meta": meta})
    viewer.add_image(image * 2, name="other channel", scale=SPACING)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.predict.notify_error", errors.append)

    # --- no model yet: the user is told
    widget.image_list.set_checked(["scan"])
    qtbot.mouseClick(widget.run_btn, Qt.LeftButton)
    assert not widget.runner.running
    assert "no model" in errors[-1]

    # --- the current model (as published by the Train widget)
    model_state(viewer).set(sem_ckpt, "trained in this viewer")
    assert "semantic model" in widget.model_label.text()
    viewer.add_image(np.stack([image, image]), name="two channels", scale=SPACING)
    widget.image_list.set_checked(["two channels"])  # two channels: incompatible
    qtbot.mouseClick(widget.run_btn, Qt.LeftButton)
    assert not widget.runner.running
    assert "expects 1 channel" in errors[-1]
    assert "scan prediction" not in viewer.layers
    widget.image_list.set_checked(["scan"])
    _run(qtbot, widget)
    pred = viewer.layers["scan prediction"]
    assert pred.data.shape == SHAPE
    np.testing.assert_allclose(pred.scale, SPACING)
    assert pred.metadata["unetseg_meta"] is meta
    probs = widget.results["scan"].probabilities
    assert probs.shape == (3, *SHAPE)
    np.testing.assert_array_equal(np.asarray(pred.data), np.argmax(probs, axis=0))
    for name in ("bright", "textured"):
        layer = viewer.layers[f"scan probability {name}"]
        np.testing.assert_allclose(layer.scale, SPACING)
        assert layer.data.shape == SHAPE

    # --- threshold / minimum size from the stored probabilities
    fg = 1.0 - probs[0]
    t = float(np.quantile(fg, 0.7))
    threshold = widget.setting("infer.threshold")
    assert threshold.value is None  # auto: the most probable class
    assert threshold.tooltip  # the schema help
    threshold.value = round(t, 2)
    qtbot.waitUntil(
        lambda: (np.asarray(pred.data) > 0).sum() == (fg > threshold.value).sum(),
        timeout=3000,
    )
    widget.setting("infer.min_size").value = 10**6
    qtbot.waitUntil(lambda: not np.asarray(pred.data).any(), timeout=3000)
    widget.setting("infer.min_size").value = 0
    threshold.value = 0.5
    qtbot.waitUntil(lambda: (np.asarray(pred.data) > 0).sum() == (fg > 0.5).sum(), timeout=3000)

    # --- export with the source geometry; asks before replacing a file
    out = widget.export_to(pred, tmp_path / "mask")
    assert out.name == "mask.nii.gz"
    labels, out_meta = read_labels(out)
    np.testing.assert_array_equal(labels, np.asarray(pred.data))
    np.testing.assert_allclose(out_meta.spacing, SPACING)
    asked: list = []
    monkeypatch.setattr(widget, "confirm_overwrite", lambda p: asked.append(p) or False)
    pred.data = np.zeros(SHAPE, np.uint8)
    assert widget.export_to(pred, out) is None
    assert asked == [out]
    np.testing.assert_array_equal(read_labels(out)[0], labels)  # untouched
    monkeypatch.setattr(widget, "confirm_overwrite", lambda p: True)
    assert widget.export_to(pred, out) == out
    assert not read_labels(out)[0].any()

    # --- a model loaded from a file: instances with boundary map and watershed labels
    widget.load_from(inst_path)
    assert model_state(viewer).checkpoint is not sem_ckpt  # the viewer's current model
    assert "instances model" in widget.model_label.text()
    assert "objects.safetensors" in widget.model_label.text()
    # the model's stored post-processing settings become the widget's
    assert widget.setting("infer.min_size").value == 3
    assert widget.setting("infer.interior_threshold").value == pytest.approx(0.4)
    assert not widget.setting("infer.threshold").enabled
    _run(qtbot, widget)
    inst_layer = viewer.layers["scan instances"]
    boundary = viewer.layers["scan boundary probability"]
    assert inst_layer.data.shape == SHAPE
    assert boundary.data.shape == SHAPE
    np.testing.assert_allclose(inst_layer.scale, SPACING)
    assert inst_layer.metadata["unetseg_task"] == "instances"
    assert inst_layer.metadata["unetseg_meta"] is meta
    result = widget.results["scan"]
    np.testing.assert_array_equal(np.asarray(inst_layer.data), result.instances)
    semantic_layer = viewer.layers["scan prediction"]
    np.testing.assert_array_equal(np.asarray(semantic_layer.data), result.instances > 0)
    widget.setting("infer.min_size").value = 10**6
    qtbot.waitUntil(lambda: not np.asarray(inst_layer.data).any(), timeout=5000)


def test_cancel_and_close_during_prediction(make_napari_viewer, qtbot, data, models, monkeypatch):
    """The Cancel button and taking the widget out of the viewer stop the work."""
    from napari_unetseg.core.events import Done, Progress

    image, _semantic, _instances = data
    sem_ckpt, _path = models
    calls: list = []

    def slow_predict(
        checkpoint, img, config=None, *, spacing=None, keep_probabilities=True, cancel=None
    ):
        calls.append(cancel)
        for i in range(100_000):
            if cancel.cancelled:
                yield Done(result=None, cancelled=True)
                return
            time.sleep(0.005)
            yield Progress(i, 100_000, "windows")
        yield Done(result=None)

    monkeypatch.setattr("napari_unetseg.core.inference.predict", slow_predict)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="scan")
    viewer.add_image(image, name="scan 2")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    model_state(viewer).set(sem_ckpt)
    widget.image_list.set_checked(["scan", "scan 2"])
    n_layers = len(viewer.layers)

    qtbot.mouseClick(widget.run_btn, Qt.LeftButton)
    assert widget.runner.running
    assert not widget.run_btn.isEnabled()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=30_000)
    with qtbot.waitSignal(widget.runner.finished, timeout=30_000):
        qtbot.mouseClick(widget.cancel_btn, Qt.LeftButton)
    assert calls[0].cancelled
    assert len(calls) == 1  # the second image is not started after Cancel
    assert widget.last_done.cancelled
    assert widget.progress.text() == "cancelled"
    assert widget.run_btn.isEnabled()
    assert len(viewer.layers) == n_layers  # nothing added

    qtbot.mouseClick(widget.run_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=30_000)
    with qtbot.waitSignal(widget.runner.finished, timeout=30_000):
        viewer.window.remove_dock_widget(widget)
    assert calls[1].cancelled
    assert not widget.runner.running


def test_edited_predictions_are_kept_and_colours_match(
    make_napari_viewer, qtbot, data, models, monkeypatch
):
    """A prediction layer painted by hand is never overwritten; the training preview is
    hidden when a prediction arrives; classes keep their colours; an empty prediction
    says so and what to try."""
    image, _semantic, _instances = data
    sem_ckpt, _path = models
    viewer = make_napari_viewer()
    viewer.add_image(image, name="scan")
    viewer.add_image(np.zeros((*SHAPE, 4), np.uint8), name=PREVIEW_LAYER, rgb=True)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    model_state(viewer).set(sem_ckpt)
    widget.image_list.set_checked(["scan"])
    warnings: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.results._notify_warning", warnings.append)
    _run(qtbot, widget)
    pred = viewer.layers["scan prediction"]
    assert not viewer.layers[PREVIEW_LAYER].visible
    # predicted class k has the colour of class k in an annotation layer (value k + 1)
    ann_cmap = annotation_colormap(3)
    for k in (1, 2):
        np.testing.assert_allclose(pred.colormap.map(k), ann_cmap.map(k + 1))
    assert not warnings

    # --- the user corrects the prediction with the brush (napari records a paint)
    pred.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)
    edited = np.array(pred.data, copy=True)
    widget.setting("infer.threshold").value = 0.3
    qtbot.waitUntil(lambda: "scan prediction (2)" in viewer.layers, timeout=3000)
    np.testing.assert_array_equal(np.asarray(pred.data), edited)  # untouched
    second = viewer.layers["scan prediction (2)"]
    fg = 1.0 - widget.results["scan"].probabilities[0]
    assert (np.asarray(second.data) > 0).sum() == (fg > 0.3).sum()

    # --- nothing found: the user is told what to try
    widget.setting("infer.min_size").value = 10**6
    _run(qtbot, widget)
    np.testing.assert_array_equal(np.asarray(pred.data), edited)
    assert not np.asarray(second.data).any()
    assert warnings
    assert "nothing was found" in warnings[-1]
    assert "Threshold" in warnings[-1]


def test_several_images_with_progress_across_cases(
    make_napari_viewer, qtbot, data, models, monkeypatch
):
    image, _semantic, _instances = data
    sem_ckpt, _path = models
    viewer = make_napari_viewer()
    for k in range(3):
        viewer.add_image(np.roll(image, 2 * k, axis=2), name=f"case{k}", scale=SPACING)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    model_state(viewer).set(sem_ckpt)
    widget.image_list.set_checked(["case0", "case1", "case2"])
    seen: list[tuple[int, int]] = []
    formats: list[str] = []
    original = widget._on_event

    def spy(ev, ckpt):
        original(ev, ckpt)
        seen.append((widget.progress.value(), widget.progress.maximum()))
        formats.append(widget.progress.text())

    monkeypatch.setattr(widget, "_on_event", spy)
    _run(qtbot, widget)
    for k in range(3):
        layer = viewer.layers[f"case{k} prediction"]
        assert layer.data.shape == SHAPE
        np.testing.assert_allclose(layer.scale, SPACING)
        probs = widget.results[f"case{k}"].probabilities
        np.testing.assert_array_equal(np.asarray(layer.data), np.argmax(probs, axis=0))
    # one progress bar over the three cases: never going back, naming the case
    values = [v for v, _m in seen]
    assert values == sorted(values)
    assert seen[-1][1] == 3000
    assert any(f.startswith("3/3 case2") for f in formats)
    assert widget.progress.text() == "done"


@pytest.mark.gui
def test_dragged_channel_layers_are_matched_to_the_model_by_name(make_napari_viewer, monkeypatch):
    from types import SimpleNamespace

    viewer = make_napari_viewer()
    t1, flair = np.zeros(SHAPE, np.float32), np.ones(SHAPE, np.float32)
    # the layer list order is FLAIR first: the model was trained on T1, FLAIR
    viewer.add_image(flair, name="case2 [FLAIR]", scale=SPACING)
    viewer.add_image(t1, name="case2 [T1]", scale=SPACING)
    widget = PredictWidget(viewer)
    shown: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.predict.notify_info", shown.append)
    widget.image_list.set_checked(["case2 [FLAIR]", "case2 [T1]"])
    model = SimpleNamespace(
        config=SimpleNamespace(model=SimpleNamespace(in_channels=2)),
        channel_names=["case1 [T1]", "case1 [FLAIR]"],
    )
    ((_, image),) = widget.cases_to_predict(model)
    assert image[0].max() == 0  # T1 first, as the model expects
    assert image[1].min() == 1
    assert "matched to the model by name" in shown[-1]
