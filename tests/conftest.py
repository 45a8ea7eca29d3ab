"""Shared fixtures: tiny settings that train in a fraction of a second on a CPU.

Tests use tiny networks (base width 4, depth 2) on small odd-shaped volumes, as MONAI's
network tests do; ``tiny_settings()`` is the one definition of "tiny" for all tests.
"""

from __future__ import annotations

import json

import pytest

from unetseg_testing import tiny_settings


@pytest.fixture
def tiny_config():
    """A factory: ``tiny_config(train={"task": "instances"})`` -> a validated Config."""
    from napari_unetseg.core.config import Config

    def make(**sections):
        return Config.from_dict(tiny_settings(**sections)).validate()

    return make


@pytest.fixture
def tiny_config_file(tmp_path):
    """A factory writing tiny settings to a JSON file for ``--config``."""

    def make(**sections):
        path = tmp_path / "tiny.json"
        path.write_text(json.dumps(tiny_settings(**sections)))
        return path

    return make


@pytest.fixture(autouse=True)
def _recovery_store(tmp_path_factory, monkeypatch):
    """Annotation autosaves of every test go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("NAPARI_UNETSEG_RECOVERY_DIR", str(tmp_path_factory.mktemp("recovery")))
