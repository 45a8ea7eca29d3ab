"""napari tests: skip tests marked ``gui`` cleanly when no real (virtual) display is usable.

pytest-xvfb starts Xvfb and sets DISPLAY before collection when Xvfb is installed. Without
a display, without OpenGL, or without napari/Qt the ``gui`` tests are skipped with the
reason. QT_QPA_PLATFORM=offscreen is never set here: it crashes when image layers draw.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys

import pytest


def _gui_unavailable() -> str | None:
    """The reason a napari viewer cannot be opened here, or None when it can."""
    for module in ("napari", "qtpy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'napari-unetseg[all]')"
    if not any(importlib.util.find_spec(m) for m in ("PyQt6", "PySide6", "PyQt5", "PySide2")):
        return "no Qt binding is installed (pip install 'napari-unetseg[all]' for PyQt6)"
    if os.environ.get("QT_QPA_PLATFORM", "") == "offscreen":
        return "QT_QPA_PLATFORM=offscreen cannot draw napari layers; unset it and use Xvfb"
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return "no display: install Xvfb (pytest-xvfb starts it) or run under a desktop"
        if ctypes.util.find_library("GL") is None:
            return "no OpenGL library (libGL, e.g. Mesa) found"
    return None


def pytest_collection_modifyitems(config, items):
    gui_items = [item for item in items if item.get_closest_marker("gui")]
    if not gui_items:
        return
    reason = _gui_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"GUI test skipped: {reason}")
    for item in gui_items:
        item.add_marker(skip)
