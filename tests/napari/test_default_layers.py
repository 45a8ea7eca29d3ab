"""Default layer choices on the sample (File > Open Sample adds an image and hidden
ground truth) as a user meets them, and each dock's "next step" line."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_unetseg._napari.widgets.annotate import AnnotateWidget
from napari_unetseg._napari.widgets.evaluate import EvaluateWidget
from napari_unetseg._napari.widgets.predict import PredictWidget
from napari_unetseg._napari.widgets.train import TrainWidget

pytestmark = pytest.mark.gui

TRUTH = "blobs3d semantic truth"


def test_defaults_follow_what_the_user_does(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unetseg", "blobs3d")
    assert not viewer.layers[TRUTH].visible
    annotate, train = AnnotateWidget(viewer), TrainWidget(viewer)
    predict, evaluate = PredictWidget(viewer), EvaluateWidget(viewer)
    for w in (annotate, train, predict, evaluate):
        viewer.window.add_dock_widget(w)
        assert w.header.text().startswith("<b>Next:</b>")  # every dock says what to do

    # --- the hidden truth is never the layer to paint or train on
    assert annotate.annotation_combo.value is None
    assert train.annotation_combo.value is None
    assert train.validation_combo.value is None
    assert train.image_list.checked_names() == ["blobs3d"]
    assert "New annotation layer" in annotate.header.text()
    # ... but it is the natural reference to simulate from and to compare with
    assert annotate.truth_combo.value.name == TRUTH
    assert evaluate.ref_combo.value.name == TRUTH
    assert evaluate.pred_combo.value is None

    # --- a new annotation layer becomes the annotation in Annotate and Train
    layer = annotate.new_annotation_layer()
    assert annotate.annotation_combo.value is layer
    assert train.annotation_combo.value is layer
    assert evaluate.pred_combo.value is None  # an annotation is not a prediction
    # a labels layer the user adds later does not replace the annotation layer
    viewer.add_labels(np.zeros(layer.data.shape, np.uint8), name="scribbles")
    assert train.annotation_combo.value is layer
    # ... but a mask of unknown origin may be compared with the truth
    assert evaluate.pred_combo.value.name == "scribbles"
    assert evaluate.ref_combo.value.name == TRUTH
    viewer.layers.remove("scribbles")
    assert evaluate.pred_combo.value is None
    assert evaluate.ref_combo.value.name == TRUTH

    # --- a prediction: the prediction pickers take it; prediction != reference
    pred = viewer.add_labels(
        np.zeros(layer.data.shape, np.uint8),
        name="blobs3d prediction",
        metadata={"unetseg_role": "prediction", "unetseg_task": "semantic"},
    )
    assert evaluate.pred_combo.value is pred
    assert evaluate.ref_combo.value.name == TRUTH
    assert predict.export_combo.value is pred
    # an instance prediction is compared with the instance truth
    objects = viewer.add_labels(
        np.zeros(layer.data.shape, np.int32),
        name="blobs3d instances",
        metadata={"unetseg_role": "prediction", "unetseg_task": "instances"},
    )
    assert evaluate.pred_combo.value is objects
    assert evaluate.ref_combo.value.name == "blobs3d instances truth"
    assert evaluate.instances_check.isChecked()
    # what the user picks by hand stays
    evaluate.ref_combo.set_value(TRUTH)
    evaluate.pred_combo.set_value(pred)
    viewer.add_labels(
        np.zeros(layer.data.shape, np.uint8),
        name="other prediction",
        metadata={"unetseg_role": "prediction"},
    )
    assert evaluate.ref_combo.value.name == TRUTH
    assert evaluate.pred_combo.value is not evaluate.ref_combo.value


def test_all_channels_of_a_multichannel_file_are_checked(make_napari_viewer, tmp_path):
    import nibabel as nib

    data = np.random.default_rng(0).normal(size=(8, 9, 6, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "mri.nii.gz")
    nib.save(nib.Nifti1Image(data[..., 0], np.eye(4)), tmp_path / "other.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "other.nii.gz"), plugin="napari-unetseg")
    layers = viewer.open(str(tmp_path / "mri.nii.gz"), plugin="napari-unetseg")
    assert len(layers) == 3
    viewer.layers.selection.active = layers[0]
    predict = PredictWidget(viewer)
    assert predict.image_list.checked_names() == [layer.name for layer in layers]
