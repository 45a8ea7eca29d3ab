import numpy as np
import pytest

from napari_unetseg.core.calibrate import DEFAULTS, calibrate_instances
from napari_unetseg.core.postprocess import instance_labels


def _discs(shape=(40, 64), centres=((12, 12), (12, 25), (28, 40), (28, 52), (12, 50)), r=6):
    """Dense object ids (0 = background): discs, the first two and the next two touching."""
    yy, xx = np.indices(shape)
    objects = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        objects[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (objects == 0)] = k
    return objects


def _probabilities(objects, specks=()):
    """[background, interior, boundary] with a faint boundary between touching objects
    (p_boundary 0.45) and optional false foreground specks (y, x) of 4 x 4 pixels."""
    fg = objects > 0
    inner = np.zeros_like(fg)
    for k in range(1, objects.max() + 1):
        obj = objects == k
        shrunk = obj.copy()
        shrunk[1:] &= obj[:-1]
        shrunk[:-1] &= obj[1:]
        shrunk[:, 1:] &= obj[:, :-1]
        shrunk[:, :-1] &= obj[:, 1:]
        inner |= shrunk
    p = np.zeros((3, *objects.shape), np.float32)
    p[0] = np.where(fg, 0.05, 0.95)
    p[1] = np.where(inner, 0.9, np.where(fg, 0.5, 0.03))
    for y, x in specks:
        p[0, y : y + 4, x : x + 4] = 0.1
        p[1, y : y + 4, x : x + 4] = 0.9
    p[2] = 1.0 - p[0] - p[1]
    return p


def test_calibration_chooses_a_min_size_that_drops_false_specks():
    objects = _discs()
    p = _probabilities(objects, specks=[(2, 2), (35, 4), (35, 30), (2, 36)])
    annotation = np.where(objects > 0, objects + 1, 1)
    assert instance_labels(p, seed_min_size=1).max() == 9  # 5 objects + 4 specks
    result = calibrate_instances(p, annotation)
    assert result["calibrated"]
    assert result["n_objects"] == 5
    assert result["min_size"] > 16  # specks of 16 pixels are removed...
    assert result["min_size"] < int((objects == 1).sum())  # ...the objects are kept
    assert result["f1"] == pytest.approx(1.0)
    assert result["default_f1"] < 1.0
    labels = instance_labels(
        p, interior_threshold=result["interior_threshold"], min_size=result["min_size"]
    )
    assert labels.max() == 5


def test_calibration_on_annotated_slices_of_a_volume():
    objects = np.stack([_discs()] * 9)  # (9, 40, 64): columns of discs
    p = _probabilities(objects[0], specks=[(2, 2)])
    p = np.repeat(p[:, None], 9, axis=1)
    annotation = np.zeros(objects.shape, np.int32)
    annotation[4] = np.where(objects[4] > 0, objects[4] + 1, 1)  # one painted z-slice
    result = calibrate_instances(p, annotation)
    assert result["calibrated"]
    assert result["n_objects"] == 5
    assert result["f1"] == pytest.approx(1.0)
    # the columns hold 9 x 113 voxels, the specks 9 x 16; estimated sizes sit in between
    assert 9 * 16 < result["min_size"] < 9 * 113


def test_calibration_falls_back_to_defaults_with_few_objects():
    objects = _discs(centres=((12, 12), (28, 40)))
    p = _probabilities(objects)
    annotation = np.where(objects > 0, objects + 1, 1)
    result = calibrate_instances(p, annotation)
    assert not result["calibrated"]
    assert result["n_objects"] == 2
    assert result["interior_threshold"] == DEFAULTS["interior_threshold"]
    assert result["min_size"] == DEFAULTS["min_size"]
    # objects cut by the unannotated region do not count as complete
    partial = annotation.copy()
    partial[:, 30:] = 0
    assert calibrate_instances(p, partial, min_objects=1)["n_objects"] == 1


def test_calibration_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match the annotation"):
        calibrate_instances(np.zeros((3, 8, 8), np.float32), np.ones((8, 9), np.int32))
    with pytest.raises(ValueError, match="candidates"):
        calibrate_instances(np.zeros((3, 8, 8), np.float32), np.ones((8, 8)), candidates=())


def test_calibration_over_several_images_counts_every_object():
    objects = _discs()
    annotation = np.where(objects > 0, objects + 1, 1)
    p = _probabilities(objects, specks=((33, 5),))
    one = calibrate_instances(p, annotation)
    two = calibrate_instances([p, p], [annotation, annotation])
    assert two["n_objects"] == 2 * one["n_objects"]
    assert two["calibrated"]
    assert two["min_size"] == one["min_size"]
    with pytest.raises(ValueError, match="one annotation per probability map"):
        calibrate_instances([p], annotation)


def test_instance_training_stores_calibrated_settings():
    from napari_unetseg.core.calibrate import calibrate_model
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import Info
    from napari_unetseg.core.training import Trainer
    from unetseg_testing import tiny_settings

    objects = np.stack([_discs()] * 4)  # (4, 40, 64): discs through the volume
    image = np.where(objects > 0, 1.0, 0.0).astype(np.float32)
    image += np.random.default_rng(0).normal(0, 0.05, image.shape).astype(np.float32)
    annotation = np.zeros(objects.shape, np.int32)
    annotation[1] = np.where(objects[1] > 0, objects[1] + 1, 1)
    cfg = Config.from_dict(
        tiny_settings(data={"patch_size": [4, 16, 16]}, train={"task": "instances"})
    )
    trainer = Trainer(image, annotation, cfg)
    try:
        events = list(trainer.run())
    finally:
        trainer.close()
    texts = [e.message for e in events if isinstance(e, Info)]
    assert any("instance settings" in t for t in texts), texts
    ckpt = events[-1].result
    # the stored settings are those the calibration of this model gives
    result = calibrate_model(ckpt, [Case(name="discs", image=image[None], annotation=annotation)])
    assert result is not None
    assert result["n_objects"] == 5
    assert result["calibrated"]
    assert ckpt.config.infer.interior_threshold == result["interior_threshold"]
    assert ckpt.config.infer.min_size == result["min_size"]
    # an explicit setting is kept
    cfg.infer.min_size = 3
    trainer = Trainer(image, annotation, cfg)
    try:
        events = list(trainer.run())
    finally:
        trainer.close()
    assert events[-1].result.config.infer.min_size == 3
    assert any("kept as given" in e.message for e in events if isinstance(e, Info))
