"""Train on a training set of two image/annotation pairs; export it as nnU-Net data."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt

from napari_unetseg._napari.widgets.train import TrainWidget
from napari_unetseg.core.annotations import sparsify
from napari_unetseg.core.sample import make_sample

pytestmark = pytest.mark.gui

SHAPE = (12, 24, 24)
META = {"unetseg_class_names": ["bright", "textured"], "unetseg_task": "semantic"}


@pytest.fixture
def two_cases(make_napari_viewer):
    viewer = make_napari_viewer()
    for seed in (1, 2):
        image, semantic, _ = make_sample(shape=SHAPE, seed=seed)
        viewer.add_image(image, name=f"scan{seed}")
        ann = sparsify(semantic, fraction=0.3, axes="z", mode="even", seed=seed)
        viewer.add_labels(ann, name=f"scan{seed} annotations", metadata=dict(META))
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_train_on_two_pairs(two_cases, qtbot, monkeypatch):
    viewer, widget = two_cases
    errors: list[str] = []
    monkeypatch.setattr("napari_unetseg._napari.widgets.train.notify_error", errors.append)
    for seed in (1, 2):
        widget.image_list.set_checked([f"scan{seed}"])
        widget.annotation_combo.set_value(f"scan{seed} annotations")
        qtbot.mouseClick(widget.training_set.add_btn, Qt.LeftButton)
    assert not errors
    table = widget.training_set.table
    assert table.rowCount() == 2
    assert table.item(1, 0).text() == "scan2"
    assert table.item(1, 1).text() == "scan2 annotations"
    summary = table.item(0, 2).text()
    ann = np.asarray(viewer.layers["scan1 annotations"].data)
    assert "slices z " in summary
    assert f"bright {(ann == 2).sum()}" in summary
    # the same annotation twice is refused
    qtbot.mouseClick(widget.training_set.add_btn, Qt.LeftButton)
    assert "already in the training set" in errors[-1]
    assert table.rowCount() == 2
    # painting updates the row
    layer = viewer.layers["scan1 annotations"]
    z = int(np.flatnonzero(~ann.any(axis=(1, 2)))[0])  # a slice not annotated yet
    expected = f"textured {(ann == 3).sum() + 1}"
    layer.data_setitem((np.array([z]), np.array([1]), np.array([1])), 3)
    qtbot.waitUntil(lambda: expected in table.item(0, 2).text())

    widget.setting("model.base_width").value = 4
    widget.setting("model.depth").value = 2
    widget.setting("data.patch_size").value = "8, 16, 16"
    widget.setting("train.iterations").value = 3
    widget.setting("train.threads").value = 1
    widget.device_combo.set_device("cpu")
    with qtbot.waitSignal(widget.runner.finished, timeout=120_000):
        qtbot.mouseClick(widget.start_btn, Qt.LeftButton)
    assert widget.runner.error is None, widget.runner.error
    ckpt = widget.checkpoint
    assert ckpt.iterations == 3
    assert ckpt.class_names == ["bright", "textured"]
    assert ckpt.config.model.base_width == 4
    assert [h["iteration"] for h in widget.history] == [1, 2, 3]

    # --- rows can be removed (and go when their layers go)
    table.selectRow(0)
    qtbot.mouseClick(widget.training_set.remove_btn, Qt.LeftButton)
    assert [p.name for p in widget.training_set.pairs] == ["scan2"]
    viewer.layers.remove("scan2 annotations")
    assert widget.training_set.pairs == []
    assert table.rowCount() == 0


def test_export_training_set(two_cases, tmp_path, monkeypatch):
    viewer, widget = two_cases
    for seed in (1, 2):
        widget.training_set.add(
            [viewer.layers[f"scan{seed}"]], viewer.layers[f"scan{seed} annotations"]
        )
    out = tmp_path / "Dataset001_blobs"
    path = widget.training_set.export_to(out, widget.export_class_names())
    spec = json.loads(path.read_text())
    assert spec["numTraining"] == 2
    assert spec["labels"]["bright"] == 1
    assert spec["labels"]["textured"] == 2
    assert len(list((out / "imagesTr").iterdir())) == 2
    assert len(list((out / "labelsTr").iterdir())) == 2
    # an existing dataset is replaced only when the user agrees
    asked: list = []
    monkeypatch.setattr(
        widget.training_set, "confirm_overwrite", lambda f: asked.append(f) or False
    )
    before = path.stat().st_mtime_ns
    assert widget.training_set.export_to(out, ["bright", "textured"]) is None
    assert asked == [out]
    assert path.stat().st_mtime_ns == before
    monkeypatch.setattr(widget.training_set, "confirm_overwrite", lambda f: True)
    assert widget.training_set.export_to(out, ["bright", "textured"]) == path
