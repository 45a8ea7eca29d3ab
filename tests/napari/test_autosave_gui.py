"""Annotation autosave in the viewer: painting is saved, a killed viewer loses nothing,
and reopening the image offers the recovery as a new layer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_unetseg._napari.widgets import autosave as gui_autosave
from napari_unetseg._napari.widgets.annotate import AnnotateWidget
from napari_unetseg.core import autosave as store
from napari_unetseg.core.sample import make_sample

pytestmark = pytest.mark.gui

SHAPE = (9, 24, 26)


def _image():
    return make_sample(shape=SHAPE, seed=5)[0]


def test_painting_is_autosaved_and_restored(make_napari_viewer, qtbot, monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(gui_autosave, "ask_restore", lambda *a: asked.append(a[1]) or "keep")
    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="scan")
    widget = AnnotateWidget(viewer)
    widget.autosave.interval = 0.3
    viewer.window.add_dock_widget(widget)
    layer = widget.new_annotation_layer(image)
    layer.data_setitem((np.array([2, 2]), np.array([3, 4]), np.array([5, 5])), 2)
    saver = widget.autosave.saver(layer)
    assert saver is not None
    qtbot.waitUntil(lambda: not saver.dirty, timeout=5000)
    assert saver.wait(10)
    key = gui_autosave.source_key(image)
    (rec,) = store.list_recoveries(key)
    assert rec.layer_name == "scan annotations"
    np.testing.assert_array_equal(rec.load(), np.asarray(layer.data))

    # a second stroke inside the interval is saved once the interval passed
    layer.data_setitem((np.array([7]), np.array([1]), np.array([1])), 3)
    qtbot.waitUntil(lambda: not saver.dirty, timeout=5000)
    assert saver.wait(10)
    np.testing.assert_array_equal(store.list_recoveries(key)[0].load(), np.asarray(layer.data))
    assert asked == []  # the image had no recovery when it opened

    # the same image opened in a new viewer: restore makes a new layer, never overwrites
    monkeypatch.setattr(gui_autosave, "ask_restore", lambda *a: "restore")
    painted = np.array(layer.data)
    viewer2 = make_napari_viewer()
    other = viewer2.add_labels(np.zeros(SHAPE, np.uint16), name="scan annotations")
    widget2 = AnnotateWidget(viewer2)
    viewer2.window.add_dock_widget(widget2)
    viewer2.add_image(_image(), name="scan")
    qtbot.waitUntil(lambda: "scan annotations (recovered)" in viewer2.layers, timeout=5000)
    restored = viewer2.layers["scan annotations (recovered)"]
    np.testing.assert_array_equal(np.asarray(restored.data), painted)
    assert restored.metadata["unetseg_role"] == "annotation"
    assert not np.asarray(other.data).any()


def test_discarding_a_recovery_deletes_it(make_napari_viewer, qtbot, monkeypatch):
    image = _image()
    key = store.image_key("scan", image)
    store.save_recovery(key, np.ones(SHAPE, np.uint16), layer_name="scan annotations")
    monkeypatch.setattr(gui_autosave, "ask_restore", lambda *a: "discard")
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(AnnotateWidget(viewer))
    viewer.add_image(image, name="scan")
    qtbot.waitUntil(lambda: store.list_recoveries(key) == [], timeout=5000)
    assert [la.name for la in viewer.layers] == ["scan"]


VIEWER_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication
    from napari_unetseg._napari.widgets.annotate import AnnotateWidget
    from napari_unetseg.core.sample import make_sample
    viewer = napari.Viewer(show=False)
    image = viewer.add_image(make_sample(shape=(9, 24, 26), seed=5)[0], name="scan")
    widget = AnnotateWidget(viewer)
    widget.autosave.interval = 0.2
    layer = widget.new_annotation_layer(image)
    rng = np.random.default_rng(1)
    for k in range(12):
        z, y, x = rng.integers(0, 9), rng.integers(0, 22), rng.integers(0, 24)
        layer.paint((z, y, x), 2 + k % 2)  # a brush stroke
        QApplication.processEvents()
    saver = widget.autosave.saver(layer)
    app = QApplication.instance()
    while saver.dirty:  # the timer saves the strokes within the interval
        app.processEvents()
    saver.wait(30)
    np.save(sys.argv[1], np.asarray(layer.data))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.slow
def test_killed_viewer_is_recovered(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    expected = tmp_path / "painted.npy"
    proc = subprocess.run(
        [sys.executable, "-c", VIEWER_SCRIPT, str(expected)],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    painted = np.load(expected)
    assert (painted > 1).sum() >= 12

    monkeypatch.setattr(gui_autosave, "ask_restore", lambda *a: "restore")
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(AnnotateWidget(viewer))
    viewer.add_image(_image(), name="scan")
    qtbot.waitUntil(lambda: "scan annotations (recovered)" in viewer.layers, timeout=5000)
    np.testing.assert_array_equal(
        np.asarray(viewer.layers["scan annotations (recovered)"].data), painted
    )


def test_undo_on_the_slice_on_screen_is_autosaved(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="scan")
    widget = AnnotateWidget(viewer)
    widget.autosave.interval = 0.2
    layer = widget.new_annotation_layer(image)
    z = int(viewer.dims.current_step[0])
    layer.data_setitem((np.array([z, z]), np.array([3, 4]), np.array([5, 5])), 2)
    saver = widget.autosave.saver(layer)
    key = gui_autosave.source_key(image)
    qtbot.waitUntil(lambda: not saver.dirty, timeout=5000)
    assert saver.wait(10)
    assert int((store.list_recoveries(key)[0].load() > 0).sum()) == 2
    layer.undo()  # napari announces an undo with a refresh only
    qtbot.waitUntil(lambda: not saver.dirty and not np.asarray(layer.data).any(), timeout=5000)
    qtbot.wait(400)
    assert saver.wait(10)
    assert not store.list_recoveries(key)[0].load().any()


def test_saving_the_layer_discards_its_recovery(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="scan")
    widget = AnnotateWidget(viewer)
    widget.autosave.interval = 0.2
    layer = widget.new_annotation_layer(image)
    layer.data_setitem((np.array([2, 2]), np.array([3, 4]), np.array([5, 5])), 2)
    saver = widget.autosave.saver(layer)
    qtbot.waitUntil(lambda: not saver.dirty, timeout=5000)
    assert saver.wait(10)
    key = gui_autosave.source_key(image)
    assert len(store.list_recoveries(key)) == 1
    out = tmp_path / "annotations.nii.gz"
    layer.save(str(out), plugin="napari-unetseg")
    assert out.exists()
    assert store.list_recoveries(key) == []
