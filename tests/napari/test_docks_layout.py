"""The four docks as a user opens them (Plugins menu) on a small and a larger screen:
they are tabbed together, scroll, and every button can be reached."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from qtpy.QtCore import QRect
from qtpy.QtWidgets import QDockWidget, QPushButton

from napari_unetseg._napari.widgets._dock import ScrollingDock

pytestmark = pytest.mark.gui

TITLES = ("Annotate sparse slices", "Train U-Net", "Predict", "Evaluate")


@pytest.mark.parametrize("size", [(1366, 768), (1600, 1000)])
def test_all_docks_fit_the_screen_and_every_button_is_reachable(make_napari_viewer, qtbot, size):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.showNormal()
    window.setGeometry(0, 0, *size)
    viewer.open_sample("napari-unetseg", "blobs3d")
    widgets = []
    for title in TITLES:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-unetseg", title)
        assert isinstance(widget, ScrollingDock)
        widgets.append((dock, widget))
    qtbot.wait(200)  # docks are tabbed on the next turn of the event loop

    screen = QRect(0, 0, *size)
    frame = window.frameGeometry()
    assert screen.contains(frame), (frame, size)
    assert window.minimumSizeHint().width() <= size[0]
    assert window.minimumSizeHint().height() <= size[1]

    # the plugin's docks share one tab group (one column, not four)
    first = widgets[0][0]
    tabbed = set(window.tabifiedDockWidgets(first))
    assert {d for d, _ in widgets[1:]} <= tabbed
    assert all(isinstance(d, QDockWidget) for d, _ in widgets)

    for dock, widget in widgets:
        dock.raise_()
        qtbot.wait(50)
        assert widget.isVisible()
        area = widget.scroll_area
        viewport = area.viewport()
        buttons = [b for b in widget.findChildren(QPushButton) if b.isVisibleTo(widget)]
        assert buttons
        for button in buttons:
            area.ensureWidgetVisible(button)
            qtbot.wait(5)
            top_left = button.mapTo(viewport, button.rect().topLeft())
            bottom_right = button.mapTo(viewport, button.rect().bottomRight())
            visible = viewport.rect()
            where = (type(widget).__name__, button.text())
            assert visible.contains(top_left), where
            assert visible.contains(bottom_right), where
        # the dock fits the window's height (it scrolls instead of growing)
        assert dock.geometry().bottom() <= window.height()
