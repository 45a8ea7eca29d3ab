"""Train widget driven as a user would, with a tiny model on a cropped sample."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt, QTimer

from napari_unetseg._napari.state import model_state
from napari_unetseg._napari.widgets.train import PREVIEW_LAYER, TrainWidget
from napari_unetseg.core.annotations import sparsify
from napari_unetseg.core.config import TrainConfig
from napari_unetseg.core.io import meta_from_array
from napari_unetseg.core.sample import make_sample

pytestmark = pytest.mark.gui

SHAPE = (16, 32, 32)


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    image, semantic, _instances = make_sample(shape=SHAPE, seed=2)
    meta = meta_from_array(shape=SHAPE, spacing=(1.0, 1.0, 1.0))
    viewer.add_image(image, name="scan", metadata={"unetseg_meta": meta})
    viewer.add_labels(semantic, name="truth")
    ann = sparsify(semantic, fraction=0.3, axes="zyx", mode="even", seed=0)
    viewer.add_labels(
        ann,
        name="scan annotations",
        metadata={"unetseg_class_names": ["bright", "textured"], "unetseg_task": "semantic"},
    )
    widget = TrainWidget(viewer)
    # the widget opens on the core's defaults (one schema for GUI and command line)
    defaults = TrainConfig()
    assert widget.setting("train.iterations").value == defaults.iterations
    assert widget.setting("train.learning_rate").value == pytest.approx(defaults.learning_rate)
    assert widget.setting("train.preview_seconds").value == pytest.approx(defaults.preview_seconds)
    viewer.window.add_dock_widget(widget)
    widget.image_list.set_checked(["scan"])
    widget.annotation_combo.set_value("scan annotations")
    widget.setting("model.base_width").value = 4
    widget.setting("model.depth").value = 2
    widget.setting("data.patch_size").value = "8,16,16"
    widget.device_combo.set_device("cpu")
    widget.setting("train.preview_seconds").value = 0.0
    widget.setting("train.threads").value = 1
    return viewer, widget


def _run(qtbot, widget, button, timeout=90_000):
    with qtbot.waitSignal(widget.runner.finished, timeout=timeout):
        qtbot.mouseClick(button, Qt.LeftButton)


def test_train_plot_preview_save_load_continue(setup, qtbot, tmp_path, monkeypatch):
    viewer, widget = setup
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.train.notify_error", errors.append)
    # the plot needs matplotlib only (a base dependency), not pyqtgraph
    monkeypatch.setitem(sys.modules, "pyqtgraph", None)

    # --- an empty annotation is refused by the trainer with a message; no model
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="empty")
    widget.annotation_combo.set_value("empty")
    _run(qtbot, widget, widget.start_btn)
    assert widget.checkpoint is None
    assert errors
    assert "annotation is empty" in errors[-1]
    assert widget.progress.text() == "failed or aborted"
    widget.annotation_combo.set_value("scan annotations")

    # --- a setting out of its bounds is named, nothing starts
    widget.setting("data.percentiles").value = "1, 2, 3"
    qtbot.mouseClick(widget.start_btn, Qt.LeftButton)
    assert not widget.runner.running
    assert "data.percentiles" in errors[-1]
    widget.setting("data.percentiles").value = "1, 99.8"

    # --- the plan: what "auto" resolves to, before training
    with qtbot.waitSignal(widget.runner.finished, timeout=60_000):
        qtbot.mouseClick(widget.plan_btn, Qt.LeftButton)
    assert widget.runner.error is None, widget.runner.error
    assert "8 x 16 x 16" in widget.banner.text()  # the patch size set by the user
    assert "4/8 feature maps" in widget.banner.text()

    widget.validation_combo.set_value("truth")
    widget.setting("train.iterations").value = 4
    assert widget.continue_btn.text() == "Continue (+4)"
    viewer.dims.set_current_step(0, 7)
    n_errors = len(errors)
    _run(qtbot, widget, widget.start_btn)
    assert widget.runner.error is None, widget.runner.error
    assert len(errors) == n_errors
    ckpt = widget.checkpoint
    assert ckpt is not None
    assert ckpt.iterations == 4
    assert ckpt.class_names == ["bright", "textured"]
    assert ckpt.config.model.base_width == 4
    assert model_state(viewer).checkpoint is ckpt
    assert [h["iteration"] for h in widget.history] == [1, 2, 3, 4]
    assert widget.progress.value() == widget.progress.maximum() == 4
    assert not widget.last_done.cancelled
    # banner: what the trainer reported (device and plan)
    assert widget.messages
    assert "cpu" in widget.banner.text().lower()
    # the precision is explained in plain words (bfloat16 or not, and what it means)
    assert "bfloat16" in widget.messages[0]
    assert "precision" in widget.messages[0]
    # validation readout and plot
    assert widget.validation
    last = widget.validation[-1]
    assert set(last.dice) == {"bright", "textured"}
    assert "bright: Dice" in widget.readout.text()
    assert f"{last.mean_dice:.3f}" in widget.readout.text()
    # the live plot (matplotlib) drew every step and the validation scores
    curves = widget.plot.curves
    assert ("bright", "dice") in curves
    assert ("textured", "iou") in curves
    xs, ys = widget.plot.loss_line.get_data()
    np.testing.assert_array_equal(xs, [1, 2, 3, 4])
    np.testing.assert_allclose(ys, [h["loss"] for h in widget.history])
    vx, vy = curves[("bright", "dice")].get_data()
    assert len(vx) == len(widget.validation)
    assert vy[-1] == pytest.approx(last.dice["bright"])
    assert widget.progress.text() == "finished: 4 iterations"
    # preview of the viewed slice z = 7, in the class colours (RGBA)
    preview = viewer.layers[PREVIEW_LAYER]
    data = np.asarray(preview.data)
    assert data.shape == (*SHAPE, 4)
    assert data[7, ..., 3].max() > 0
    assert not data[:7].any()
    assert widget.continue_btn.isEnabled()

    # --- save, then load the file back as the model to fine-tune
    path = widget.save_to(tmp_path / "tiny")
    assert path.name == "tiny.safetensors"
    assert path.stat().st_size > 0
    loaded = widget.load_from(path)
    assert loaded.iterations == 4
    assert model_state(viewer).checkpoint is loaded
    assert widget.finetune_check.isChecked()
    assert path.name in widget.model_label.text()

    # --- continue: 3 more iterations on top of the 4, optimizer state kept
    widget.setting("train.iterations").value = 3
    assert "+3" in widget.continue_btn.text()
    _run(qtbot, widget, widget.continue_btn)
    assert widget.runner.error is None, widget.runner.error
    assert widget.checkpoint.iterations == 7
    assert widget.checkpoint.optimizer_state is not None
    assert [h["iteration"] for h in widget.history] == [5, 6, 7]


def test_responsive_stop_and_close_during_training(setup, qtbot):
    viewer, widget = setup
    widget.setting("train.iterations").value = 100_000

    # --- the event loop keeps running while training: largest gap between 10 ms ticks
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    qtbot.mouseClick(widget.start_btn, Qt.LeftButton)
    assert widget.runner.running
    qtbot.waitUntil(lambda: len(widget.history) >= 3, timeout=60_000)  # model built
    last[0] = time.perf_counter()
    timer.start()
    n_before = len(widget.history)
    qtbot.wait(1000)
    qtbot.waitUntil(lambda: len(widget.history) >= n_before + 2, timeout=60_000)
    timer.stop()
    worst = max(gaps)
    print(f"event loop: {len(gaps)} ticks, worst gap {1000 * worst:.0f} ms")
    assert worst < 0.1, f"the event loop stalled for {1000 * worst:.0f} ms"

    # --- Stop keeps the model trained so far
    with qtbot.waitSignal(widget.runner.finished, timeout=30_000):
        qtbot.mouseClick(widget.stop_btn, Qt.LeftButton)
    assert widget.last_done.cancelled
    assert 0 < widget.checkpoint.iterations < 100_000
    assert widget.start_btn.isEnabled()
    assert widget.progress.text() == f"stopped at iteration {widget.checkpoint.iterations}"

    # --- taking the widget out of the viewer stops the work
    qtbot.mouseClick(widget.start_btn, Qt.LeftButton)
    assert widget.runner.running
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=60_000)
    with qtbot.waitSignal(widget.runner.finished, timeout=30_000):
        viewer.window.remove_dock_widget(widget)
    assert not widget.runner.running


def test_worker_error_is_shown_and_ui_reset(setup, qtbot, monkeypatch):
    _viewer, widget = setup
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.train.notify_error", errors.append)

    def broken_run(self):
        yield from ()
        raise RuntimeError("out of memory on the device")

    monkeypatch.setattr("napari_unetseg.core.training.Trainer.run", broken_run)
    widget.setting("train.iterations").value = 2
    _run(qtbot, widget, widget.start_btn)
    assert isinstance(widget.runner.error, RuntimeError)
    assert len(errors) == 1
    assert "Training failed" in errors[0]
    assert "out of memory" in errors[0]
    assert widget.start_btn.isEnabled()
    assert not widget.stop_btn.isEnabled()
    assert widget.progress.text() == "failed or aborted"


def test_closing_the_dock_mid_run_keeps_the_model(setup, qtbot):
    viewer, widget = setup
    widget.setting("train.iterations").value = 100_000
    state = model_state(viewer)
    state.set(None)
    qtbot.mouseClick(widget.start_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(widget.history) >= 2, timeout=60_000)
    with qtbot.waitSignal(widget.runner.finished, timeout=30_000):
        viewer.window.remove_dock_widget(widget)
    assert not widget.runner.running
    assert state.checkpoint is not None  # the viewer's current model, for Predict
    assert 0 < state.checkpoint.iterations < 100_000
    assert widget.last_done.cancelled


def test_closing_the_viewer_mid_run_is_quiet(setup, qtbot):
    viewer, widget = setup
    widget.setting("train.iterations").value = 100_000
    qtbot.mouseClick(widget.start_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=60_000)
    runner = widget.runner
    with qtbot.waitSignal(runner.finished, timeout=30_000):
        viewer.close()
    qtbot.wait(300)  # late queued callbacks would raise here (pytest-qt fails on them)
    assert not runner.running
