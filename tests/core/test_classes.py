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


def test_values_beyond_the_named_classes_are_warned_with_the_values():
    from napari_unetseg.core.classes import unnamed_values_warning

    assert unnamed_values_warning(np.array([0, 1, 2, 3]), ["cell", "membrane"]) is None
    text = unnamed_values_warning(np.array([0, 1, 2, 5, 7]), ["cell"])
    assert "value(s) 5, 7 beyond the named classes (2 = cell)" in text
    assert "\n" not in text


def test_training_warns_before_the_first_step_about_unnamed_values(tiny_config):
    from napari_unetseg.core.events import Info, Step
    from napari_unetseg.core.training import Trainer

    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 9, 20, 22)).astype(np.float32)
    ann = np.zeros((9, 20, 22), np.uint16)
    ann[2] = 1
    ann[2, 4:9, 4:9] = 2
    ann[2, 12:15, 12:15] = 4  # painted with a value no class is named for
    cfg = tiny_config(train={"iterations": 1})
    cfg.class_names = ["cell"]
    events = list(Trainer(image, ann, cfg).run())
    first_step = next(i for i, e in enumerate(events) if isinstance(e, Step))
    warned = [
        i
        for i, e in enumerate(events)
        if isinstance(e, Info) and e.level == "warning" and "value(s) 4" in e.message
    ]
    assert warned
    assert warned[0] < first_step


def test_unnamed_values_of_a_dataset_are_checked_over_all_cases(tiny_config):
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.classes import unnamed_values_warning
    from napari_unetseg.core.events import Info
    from napari_unetseg.core.training import Trainer

    # one array of values per case, of different lengths (a dataset)
    assert unnamed_values_warning([np.array([0, 1, 2]), np.array([1, 3])], ["a", "b"]) is None
    text = unnamed_values_warning([np.array([0, 1, 2]), np.array([1, 2, 3, 6])], ["a", "b"])
    assert "value(s) 6" in text
    rng = np.random.default_rng(1)
    cases = []
    for k, top in enumerate((2, 3)):
        ann = np.zeros((9, 20, 22), np.uint16)
        ann[4] = 1
        ann[4, 3:9, 3:9] = top
        if k:
            ann[4, 12:15, 12:15] = 2
        image = rng.normal(size=(1, 9, 20, 22)).astype(np.float32)
        cases.append(Case(name=f"c{k}", image=image, annotation=ann))
    cfg = tiny_config(train={"iterations": 1})
    cfg.class_names = ["a", "b"]
    events = list(Trainer(cases=cases, config=cfg).run())
    assert events[-1].result.class_names[-2:] == ["a", "b"]
    assert not [e for e in events if isinstance(e, Info) and "beyond the named" in e.message]


def test_notes_of_the_readers_reach_the_training_events(tiny_config):
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.events import Info
    from napari_unetseg.core.io import VolumeMeta
    from napari_unetseg.core.training import Trainer

    ann = np.zeros((9, 20, 22), np.uint16)
    ann[4] = 1
    ann[4, 3:9, 3:9] = 2
    image = np.random.default_rng(2).normal(size=(3, 9, 20, 22)).astype(np.float32)
    note = "phases.nii.gz: its 3 time points are read as 3 channels"
    meta = VolumeMeta(spacing=(1.0, 1.0, 1.0), extra={"notes": [note]})
    case = Case(name="phases", image=image, annotation=ann, meta=meta)
    trainer = Trainer(cases=[case], config=tiny_config(train={"iterations": 1}))
    try:
        events = list(trainer.run())
    finally:
        trainer.close()
    assert note in [e.message for e in events if isinstance(e, Info)]
