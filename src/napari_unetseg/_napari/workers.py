"""Run the core's event generators in a background thread for the dock widgets.

The core's long-running work (training, prediction) is a generator of small typed
events (:mod:`napari_unetseg.core.events`). :class:`EventRunner` drives such a generator
in a napari thread worker and hands every event to a callback on the main thread, where
the widget turns it into layer and plot updates. The worker thread never touches the
viewer or a Qt object.

Optimisation steps can arrive hundreds of times per second with a small model, so the
worker side groups consecutive :class:`~napari_unetseg.core.events.Step` events into one
:class:`Steps` message at most every ``step_interval`` seconds (and drops intermediate
:class:`~napari_unetseg.core.events.Progress` events the same way): the main thread then
stays responsive whatever the speed of the work.

Stopping is cooperative: :meth:`EventRunner.stop` sets the
:class:`~napari_unetseg.core.events.CancelToken` that the core checks between steps, and
the core still yields its final ``Done`` (with the model so far). :meth:`EventRunner.abort`
additionally quits the worker, for when the widget or the viewer goes away; a runner
with ``keep_result`` set only stops there, so that the final ``Done`` still reaches
``on_event`` after its widget was closed (the Train widget keeps the model reached so far,
as Ctrl-C does on the command line). Callbacks that meet a deleted Qt object (the widget
or the viewer closed meanwhile) are skipped silently.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from qtpy.QtCore import QObject, Signal

from ..core.events import CancelToken, Done, Progress, Step


class WorkError(Exception):
    """A RuntimeError raised by the background work, passed on under another type."""


@dataclass
class Steps:
    """Consecutive optimisation steps grouped for the main thread (oldest first)."""

    steps: list = field(default_factory=list)

    @property
    def last(self) -> Step:
        return self.steps[-1]


def coalesce(events: Iterator[Any], step_interval: float = 0.1) -> Iterator[Any]:
    """Group Step events into :class:`Steps` and thin out Progress events.

    Every other event passes through unchanged and in order; pending steps are flushed
    before it, so the order of information is kept. Runs in the worker thread.
    """
    pending: list = []
    last_progress: Progress | None = None
    last_emit = time.perf_counter()
    for ev in events:
        now = time.perf_counter()
        if isinstance(ev, Step):
            pending.append(ev)
            if now - last_emit >= step_interval:
                yield Steps(pending)
                pending = []
                last_emit = now
            continue
        if isinstance(ev, Progress):
            last_progress = ev
            if now - last_emit >= step_interval or ev.done >= ev.total:
                yield ev
                last_progress = None
                last_emit = now
            continue
        if pending:
            yield Steps(pending)
            pending = []
        if last_progress is not None and isinstance(ev, Done):
            yield last_progress
            last_progress = None
        last_emit = now
        yield ev
    if pending:
        yield Steps(pending)


def _deleted(exc: RuntimeError) -> bool:
    """Whether ``exc`` says a Qt object (a closed widget's timer, label...) is gone."""
    text = str(exc)
    return "deleted" in text and ("C/C++ object" in text or "Internal C++ object" in text)


def _deliver(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Call a main-thread callback; skip it quietly when its widget was deleted."""
    if callback is None:
        return
    try:
        callback(*args)
    except RuntimeError as exc:
        if not _deleted(exc):
            raise


class EventRunner(QObject):
    """Drive one core event generator at a time in a napari ``GeneratorWorker``.

    ``factory(token)`` is called IN THE WORKER THREAD and returns the event generator, so
    that slow set-up (importing torch, building the model) does not block the window.
    Callbacks run on the main thread:

    - ``on_event(event)`` for every event (Step events arrive grouped as :class:`Steps`);
    - ``on_error(exception)`` when the work raised;
    - ``on_finished()`` at the very end, whether it completed, failed or was stopped.

    The runner's own ``finished`` signal is emitted after ``on_finished`` for every run.
    ``keep_result``: :meth:`abort` only stops, so the final event is still delivered.
    """

    finished = Signal()

    def __init__(self, step_interval: float = 0.1, parent=None):
        super().__init__(parent)
        self.step_interval = step_interval
        self.worker = None
        self.token: CancelToken | None = None
        self.error: BaseException | None = None
        self.keep_result = False
        self._detached = False

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        factory: Callable[[CancelToken], Iterator[Any]],
        on_event: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ):
        """Start the work; returns the worker (its ``finished`` signal ends every run)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("work is already running; stop it first")
        token = CancelToken()
        interval = self.step_interval

        def _work():
            try:
                yield from coalesce(factory(token), interval)
            except RuntimeError as exc:
                # superqt treats a RuntimeError leaving the work as "Qt object deleted"
                # and then emits neither ``errored`` nor ``finished``; torch reports most
                # failures (out of memory, shape mismatches) as RuntimeError.
                raise WorkError(str(exc)) from exc

        worker = create_worker(_work, _start_thread=False, _ignore_errors=True)
        self.token = token
        self._detached = False
        self.error = None
        self.worker = worker

        def _errored(exc):
            if isinstance(exc, WorkError) and exc.__cause__ is not None:
                exc = exc.__cause__  # the original error, for the message
            self.error = exc
            if on_error is not None:
                _deliver(on_error, exc)
            else:
                from napari.utils.notifications import show_error

                show_error(f"{type(exc).__name__}: {exc}")

        def _finished():
            if self.worker is worker:
                self.worker = None
            try:
                _deliver(on_finished)
            finally:
                with contextlib.suppress(RuntimeError):  # the runner itself was deleted
                    self.finished.emit()

        def _yielded(ev):
            # after abort() with keep_result only the final Done goes on (the model so
            # far); previews and plots of a closed widget are dropped
            if not self._detached or isinstance(ev, Done):
                _deliver(on_event, ev)

        # a plain function, not the widget's method: Qt would drop a slot of a deleted widget
        worker.yielded.connect(_yielded)
        worker.errored.connect(_errored)
        worker.finished.connect(_finished)
        worker.start()
        return worker

    def stop(self) -> None:
        """Ask the work to stop after the current step; it still reports ``Done``."""
        if self.token is not None:
            self.token.cancel()

    def abort(self) -> None:
        """Stop and quit the worker without waiting for its last events (with
        ``keep_result``: only stop, the last events still arrive)."""
        self.stop()
        if self.keep_result:
            self._detached = self.worker is not None
            return
        worker = self.worker
        if worker is not None:
            worker.quit()
