"""Class resolution and the resume check shared by the engine and the GUI."""

import numpy as np
import pytest

from napari_unetseg.core.checkpoint import Checkpoint
from napari_unetseg.core.classes import (
    MAX_FOREGROUND_CLASSES,
    check_resume,
    label_values,
    resolve_classes,
)
from napari_unetseg.core.config import Config
from napari_unetseg.core.data import Normalizer


def test_semantic_names_are_padded_over_all_cases():
    a = np.array([[0, 1, 2]])
    b = np.array([[0, 1, 4]])
    names, outputs = resolve_classes([a, b], "semantic", ["cell"])
    assert names == ["cell", "class 2", "class 3"]
    assert outputs == 4
    names, outputs = resolve_classes([a], "semantic", [], num_classes=4)
    assert names == ["class 1", "class 2", "class 3"]
    assert outputs == 4


def test_instances_have_three_outputs():
    ids = np.array([[0, 1, 2, 900, 65535]])
    assert resolve_classes([ids], "instances", []) == (["object"], 3)
    assert resolve_classes([ids], "instances", ["nucleus"]) == (["nucleus"], 3)


def test_a_stray_65535_is_refused_with_the_odd_values_named():
    ann = np.zeros((4, 8, 8), np.uint16)
    ann[0] = 1
    ann[1, :2] = 2
    ann[2, 0, 0] = 65535
    with pytest.raises(ValueError, match="65535") as err:
        resolve_classes([ann], "semantic", [])
    message = str(err.value)
    assert "instances" in message
    assert "\n" not in message
    ok = np.minimum(ann, MAX_FOREGROUND_CLASSES + 1)
    assert resolve_classes([ok], "semantic", [])[1] == MAX_FOREGROUND_CLASSES + 1
    with pytest.raises(ValueError, match="negative"):
        resolve_classes([np.array([-1, 2])], "semantic", [])


def test_label_values_reads_large_arrays_in_slabs():
    big = np.zeros((300, 300, 200), np.uint8)
    big[299, 5, 5] = 7
    np.testing.assert_array_equal(label_values(big), [0, 7])


def _ckpt(spatial_dims=3, channels=1, classes=3, task="semantic", normalizer=True):
    cfg = Config()
    cfg.model.spatial_dims = spatial_dims
    cfg.model.in_channels = channels
    cfg.model.num_classes = classes
    norm = Normalizer("zscore", [0.0] * channels, [1.0] * channels) if normalizer else None
    return Checkpoint(config=cfg, state_dict={}, normalizer=norm, task=task)


@pytest.mark.parametrize(
    ("kwargs", "args", "needle"),
    [
        ({}, (2, 3, "semantic", 3), "1-channel 3D"),
        ({}, (1, 2, "semantic", 3), "this image is 1-channel 2D"),
        ({}, (1, 3, "instances", 3), "semantic task"),
        ({}, (1, 3, "semantic", 5), "knows only 2"),
        ({"normalizer": False}, (1, 3, "semantic", 3), "normalisation"),
    ],
)
def test_check_resume_explains_what_differs(kwargs, args, needle):
    with pytest.raises(ValueError, match=needle):
        check_resume(_ckpt(**kwargs), *args)


def test_check_resume_accepts_a_matching_model():
    check_resume(_ckpt(), 1, 3, "semantic", 2)
    check_resume(_ckpt(spatial_dims=2, classes=3, task="instances"), 1, 2, "instances", 3)
