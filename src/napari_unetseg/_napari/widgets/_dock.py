"""Base of the plugin's dock widgets: a scrolling body, a "next step" header, and
tabbing with the plugin's other docks.

Every dock scrolls, so its controls stay reachable on small screens (1366 x 768). When a
second dock of this plugin is opened next to the first, it is tabbed with it instead of
splitting the column, so that the main window never has to grow past the screen.
Only public Qt API is used (QMainWindow.tabifyDockWidget on the dock's own window).
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

#: Width the docks are laid out for (fits next to the layer list on a 1366 px screen).
DOCK_WIDTH = 340


class ScrollingDock(QWidget):
    """A dock widget whose content (``self.body``, a QVBoxLayout) scrolls.

    ``self.header`` is a one-line "what to do next" label at the top.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        inner = QWidget()
        inner.setMinimumWidth(DOCK_WIDTH - 30)
        self.scroll_area.setWidget(inner)
        outer.addWidget(self.scroll_area)
        self.body = QVBoxLayout(inner)
        self.header = QLabel("")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.RichText)
        self.header.setStyleSheet("QLabel { padding: 3px; }")
        self.body.addWidget(self.header)
        self.setMinimumWidth(120)
        from ..reader import prefer_this_reader

        prefer_this_reader()

    def set_next_step(self, text: str) -> None:
        """Show what the user should do next (empty: hide the line)."""
        self.header.setText(f"<b>Next:</b> {text}" if text else "")
        self.header.setVisible(bool(text))

    def sizeHint(self):
        hint = super().sizeHint()
        hint.setWidth(DOCK_WIDTH)
        return hint

    # ------------------------------------------------------------------ docking

    def event(self, event) -> bool:
        if event.type() == QEvent.ParentChange and self.parent() is not None:
            QTimer.singleShot(0, self._tab_with_siblings)
        return super().event(event)

    def dock_widget(self) -> QDockWidget | None:
        """The QDockWidget holding this widget, if any."""
        w = self.parentWidget()
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parentWidget()
        return w

    def _tab_with_siblings(self) -> None:
        try:
            dock = self.dock_widget()
        except RuntimeError:  # deleted meanwhile
            return
        if dock is None or dock.isFloating():
            return
        window = dock.parentWidget()
        if not isinstance(window, QMainWindow) or window.tabifiedDockWidgets(dock):
            return
        area = window.dockWidgetArea(dock)
        for other in window.findChildren(QDockWidget):
            if other is dock or other.isFloating() or not other.isVisible():
                continue
            if window.dockWidgetArea(other) != area:
                continue
            if other.findChild(ScrollingDock) is None:
                continue
            window.tabifyDockWidget(other, dock)
            dock.show()
            dock.raise_()
            return
