"""Grouping of fast events before they reach the main thread (no display needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("qtpy")

from napari_unetseg._napari.workers import Steps, coalesce
from napari_unetseg.core.events import Done, Info, Progress, Step, Validation


def _step(i: int, total: int = 10) -> Step:
    return Step(
        iteration=i,
        total=total,
        loss=1.0 / i,
        learning_rate=1e-3,
        voxels_per_second=1.0,
        seconds=0.01 * i,
    )


def test_steps_are_grouped_in_order_and_none_is_lost():
    val = Validation(iteration=5, dice={"a": 0.5}, iou={"a": 0.3}, mean_dice=0.5, mean_iou=0.3)
    events = [
        Info("device"),
        *(_step(i) for i in range(1, 6)),
        val,
        *(_step(i) for i in range(6, 11)),
        Done(result="model"),
    ]
    out = list(coalesce(iter(events), step_interval=3600.0))
    kinds = [type(e).__name__ for e in out]
    assert kinds == ["Info", "Steps", "Validation", "Steps", "Done"]
    assert [s.iteration for s in out[1].steps] == [1, 2, 3, 4, 5]
    assert [s.iteration for s in out[3].steps] == [6, 7, 8, 9, 10]
    assert out[3].last.iteration == 10
    assert out[-1].result == "model"


def test_zero_interval_passes_every_step_and_progress():
    events = [_step(1), _step(2), Progress(1, 3), Progress(2, 3), Progress(3, 3)]
    out = list(coalesce(iter(events), step_interval=0.0))
    assert [len(e.steps) for e in out if isinstance(e, Steps)] == [1, 1]
    assert [e.done for e in out if isinstance(e, Progress)] == [1, 2, 3]


def test_progress_is_thinned_but_the_last_one_arrives():
    events = [Progress(i, 100) for i in range(1, 100)] + [Done()]
    out = list(coalesce(iter(events), step_interval=3600.0))
    progress = [e for e in out if isinstance(e, Progress)]
    assert progress[-1].done == 99
    assert len(progress) < 5
    assert isinstance(out[-1], Done)


def test_trailing_steps_are_flushed():
    out = list(coalesce(iter([_step(1), _step(2)]), step_interval=3600.0))
    assert len(out) == 1
    assert [s.iteration for s in out[0].steps] == [1, 2]


def test_callbacks_of_a_deleted_widget_are_skipped_not_raised():
    from napari_unetseg._napari.workers import _deliver

    def gone(*_):
        raise RuntimeError("wrapped C/C++ object of type QTimer has been deleted")

    def broken(*_):
        raise RuntimeError("a real failure")

    _deliver(gone, Done())  # silently skipped
    _deliver(None)
    with pytest.raises(RuntimeError, match="a real failure"):
        _deliver(broken)


@pytest.mark.gui
def test_detached_runner_delivers_only_the_final_done(qtbot):
    from napari_unetseg._napari.workers import EventRunner

    runner = EventRunner(step_interval=0.0)
    runner.keep_result = True
    seen: list = []
    gate = []

    def factory(token):
        yield Info("first")
        while not token.cancelled:
            gate.append(1)
            yield Info("more")
        yield Done(result="model so far", cancelled=True)

    def on_event(ev):
        seen.append(ev)
        if isinstance(ev, Info) and ev.message == "first":
            runner.abort()  # the widget closes: stop, but keep the result

    def finished():
        raise RuntimeError("wrapped C/C++ object of type QTimer has been deleted")

    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(factory, on_event, on_finished=finished)
    assert isinstance(seen[-1], Done)
    assert seen[-1].result == "model so far"
    assert all(not (isinstance(e, Info) and e.message == "more") for e in seen)
