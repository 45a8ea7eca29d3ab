"""Live training plot: loss per iteration (log scale), and validation Dice (solid) / IoU
(dashed) per class, drawn with matplotlib's Qt canvas (matplotlib is a base dependency).

Drawing axes and tick labels costs ~0.1 s, too long to do while training without
stalling the window, so the axes are drawn once per run (x: the run's iterations; y:
fixed ranges, widened only when the loss leaves them) and the curves are then blitted
onto the saved background, which takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ._common import class_colour

LOSS_RANGE = (0.02, 5.0)


class LivePlot(QWidget):
    """Two stacked axes: training loss, validation Dice / IoU per class.

    ``loss_line`` and ``curves[(class name, "dice" | "iou")]`` are matplotlib Line2D
    objects (``get_data()`` returns what is drawn). Class k (in the order given) has the
    project's colour of class k.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 3.0), dpi=72)
        self.figure.subplots_adjust(left=0.17, right=0.97, top=0.97, bottom=0.13, hspace=0.12)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.canvas.setFixedHeight(230)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.loss_ax, self.val_ax = self.figure.subplots(2, 1, sharex=True)
        self.loss_ax.set_ylabel("loss")
        self.loss_ax.set_yscale("log")
        self.loss_ax.set_ylim(*LOSS_RANGE)
        self.val_ax.set_ylabel("Dice / IoU")
        self.val_ax.set_xlabel("iteration")
        self.val_ax.set_ylim(0.0, 1.0)
        for ax in (self.loss_ax, self.val_ax):
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        (self.loss_line,) = self.loss_ax.plot([], [], color="#1f77b4", lw=1, animated=True)
        self.curves: dict[tuple[str, str], object] = {}
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_draw)

    # ------------------------------------------------------------------ data

    def set_range(self, first: int, last: int) -> None:
        """The run covers iterations ``first`` .. ``last``: redraws the axes."""
        self.val_ax.set_xlim(first, max(last, first + 1))
        self.canvas.draw_idle()

    def clear(self) -> None:
        """Forget the drawn data (a new run starts)."""
        self.loss_line.set_data([], [])
        for line in self.curves.values():
            line.set_data([], [])
        self.canvas.draw_idle()

    def set_loss(self, iterations: Sequence[float], losses: Sequence[float]) -> None:
        """Draw the loss curve (iterations and losses of equal length)."""
        y = np.asarray(losses, float)
        self.loss_line.set_data(np.asarray(iterations, float), y)
        finite = y[np.isfinite(y) & (y > 0)]
        lo, hi = self.loss_ax.get_ylim()
        if finite.size and (finite.max() > hi or finite.min() < lo):
            self.loss_ax.set_ylim(min(lo, finite.min() / 2), max(hi, finite.max() * 2))
            self.canvas.draw_idle()  # new axis: full redraw (rare)
        else:
            self._blit()

    def set_validation(
        self, iterations: Sequence[float], scores: dict[str, dict[str, Sequence[float]]]
    ) -> None:
        """Draw validation scores: ``scores[class name]["dice" | "iou"]`` per iteration."""
        x = np.asarray(iterations, float)
        for k, (name, metrics) in enumerate(scores.items(), start=1):
            for metric, style in (("dice", "-"), ("iou", "--")):
                key = (name, metric)
                if key not in self.curves:
                    (self.curves[key],) = self.val_ax.plot(
                        [], [], style, marker="o", ms=3, color=class_colour(k)[:3], animated=True
                    )
                self.curves[key].set_data(x, np.asarray(metrics.get(metric, []), float))
        self._blit()

    # ------------------------------------------------------------------ drawing

    def _artists(self) -> list:
        return [self.loss_line, *self.curves.values()]

    def _on_draw(self, _event=None) -> None:
        """After a full draw: keep the background, then draw the curves on it."""
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_artists()

    def _draw_artists(self) -> None:
        for line in self._artists():
            line.axes.draw_artist(line)

    def _blit(self) -> None:
        if self._background is None:
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self._background)
        self._draw_artists()
        self.canvas.blit(self.figure.bbox)
