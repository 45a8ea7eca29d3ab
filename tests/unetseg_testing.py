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
