"""What the Train widget shows while it trains: a banner of the trainer's messages, the
progress bar with ETA, the live plot (:mod:`.plot`) and the validation readout."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from ...core.events import Done, Info, Validation
from ..workers import Steps
from ._common import format_seconds
from .train_text import explain, format_validation


class TrainFeedback(QWidget):
    """Banner, progress, plot and readout of one training run at a time.

    ``history`` ({"iteration", "loss"} per step), ``validation`` (Validation events) and
    ``messages`` (banner lines) are kept for the current run; ``plot`` is the LivePlot
    (made when the first run starts, so that matplotlib loads only then).
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.history: list[dict] = []
        self.validation: list[Validation] = []
        self.messages: list[str] = []
        self.plot = None
        self._first_iteration = 0
        self._started_at = 0.0
        self._dirty = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.banner.hide()
        layout.addWidget(self.banner)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        layout.addWidget(self.progress)
        self.plot_host = QVBoxLayout()
        layout.addLayout(self.plot_host)
        self.readout = QLabel("")
        self.readout.setWordWrap(True)
        self.readout.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.readout)
        self._timer = QTimer(self)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.refresh_plot)

    def start(self, iterations: int, first_iteration: int = 0) -> None:
        """A run of ``iterations`` steps starts after ``first_iteration`` (resumed)."""
        self.history.clear()
        self.validation.clear()
        self.messages.clear()
        self._first_iteration = int(first_iteration)
        self._started_at = time.perf_counter()
        self.progress.setRange(0, max(int(iterations), 1))
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.set_banner("starting: preparing data and model…")
        if self.plot is None:
            from .plot import LivePlot

            self.plot = LivePlot()
            self.plot_host.addWidget(self.plot)
        else:
            self.plot.clear()
        self.plot.set_range(self._first_iteration, self._first_iteration + int(iterations))
        self._timer.start()

    def on_steps(self, batch: Steps) -> None:
        for s in batch.steps:
            self.history.append({"iteration": s.iteration, "loss": s.loss})
        last = batch.last
        done_here = max(last.iteration - self._first_iteration, 0)
        total_here = max(last.total - self._first_iteration, 1)
        if total_here != self.progress.maximum():
            self.progress.setRange(0, total_here)
        self.progress.setValue(min(done_here, self.progress.maximum()))
        elapsed = time.perf_counter() - self._started_at
        rate = (last.seconds if last.seconds > 0 else elapsed) / max(done_here, 1)
        eta = rate * max(total_here - done_here, 0)
        self.progress.setFormat(
            f"{last.iteration}/{last.total}  loss {last.loss:.3f}  ETA {format_seconds(eta)}"
        )
        self._dirty = True

    def on_validation(self, ev: Validation) -> None:
        self.validation.append(ev)
        self._dirty = True
        self.readout.setText(format_validation(ev))

    def on_info(self, ev: Info) -> None:
        self.messages.append(explain(ev.message))
        self.set_banner("<br>".join(self.messages[-4:]), warning=ev.level == "warning")

    def on_done(self, ev: Done) -> None:
        it = getattr(ev.result, "iterations", "?")
        if ev.cancelled:
            msg = f"stopped at iteration {it}; the model so far is kept"
        else:
            msg = ev.message or f"finished: {it} iterations"
        self.messages.append(msg)
        self.set_banner("<br>".join(self.messages[-4:]))
        self._dirty = True

    def on_error(self, exc: BaseException) -> None:
        self.set_banner(f"training failed: {exc}", warning=True)

    def finish(self, last_done: Done | None) -> None:
        """The run ended: final plot, and the progress bar says how."""
        self._timer.stop()
        self.refresh_plot()
        if last_done is None:
            self.progress.setFormat("failed or aborted")
            return
        it = getattr(last_done.result, "iterations", "?")
        if last_done.cancelled:
            self.progress.setFormat(f"stopped at iteration {it}")
        else:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(f"finished: {it} iterations")

    def set_banner(self, html: str, warning: bool = False) -> None:
        colour = "#b26a00" if warning else "#2e6da4"
        self.banner.setStyleSheet(
            f"QLabel {{ padding: 4px; border: 1px solid {colour}; border-radius: 3px; }}"
        )
        self.banner.setText(html)
        self.banner.show()

    def refresh_plot(self) -> None:
        if self.plot is None or not self._dirty:
            return
        self._dirty = False
        if self.history:
            self.plot.set_loss(
                [h["iteration"] for h in self.history], [h["loss"] for h in self.history]
            )
        if self.validation:
            names = list(self.validation[-1].dice)
            scores = {
                n: {
                    "dice": [v.dice.get(n, np.nan) for v in self.validation],
                    "iou": [v.iou.get(n, np.nan) for v in self.validation],
                }
                for n in names
            }
            self.plot.set_validation([v.iteration for v in self.validation], scores)
