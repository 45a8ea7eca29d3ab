"""Test helpers shared by every test folder (importable because tests/conftest.py puts
tests/ on the path): the one definition of a "tiny" run."""

from __future__ import annotations

import copy

#: The settings of a tiny run, as a JSON-ready dict (for --config files and Config).
TINY_SETTINGS = {
    "model": {"base_width": 4, "depth": 2},
    "data": {"patch_size": [8, 16, 16], "validation_fraction": 0.0},
    "train": {
        "iterations": 3,
        "batch_size": 1,
        "validate_every": 2,
        "device": "cpu",
        "threads": 1,
    },
}


def tiny_settings(**sections) -> dict:
    """TINY_SETTINGS with sections updated, e.g. ``tiny_settings(train={"iterations": 2})``."""
    out = copy.deepcopy(TINY_SETTINGS)
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


def tiny_slice_model(shape, seed: int = 0):
    """A tiny semantic model trained 2 steps on the sample of ``shape`` with its middle
    z-slice annotated: (checkpoint, image (Z, Y, X), annotation, config)."""
    import numpy as np

    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import Trainer

    image, sem, _ = make_sample(shape=shape, seed=seed)
    ann = np.zeros(shape, np.uint8)
    ann[shape[0] // 2] = sem[shape[0] // 2] + 1
    cfg = Config.from_dict(tiny_settings(train={"iterations": 2})).validate()
    ckpt = run_to_completion(Trainer(image[None], ann, cfg).run()).result
    return ckpt, image, ann, cfg
