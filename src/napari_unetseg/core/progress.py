"""Terminal progress for the engine's event generators (the command line and the demo).

:func:`drain` runs a generator of :mod:`napari_unetseg.core.events` to its ``Done`` and
draws a tqdm bar on stderr with a few printed lines (warnings, validation scores). The
napari widgets turn the same events into layer updates instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any


class TerminalProgress:
    """Turns engine events into a tqdm bar and a few printed lines."""

    def __init__(self, desc: str, quiet: bool = False):
        self.desc = desc
        self.quiet = quiet
        self.bar: Any = None
        self._stage = ""
        self.last_validation: Any = None

    def __call__(self, ev: Any) -> None:
        from . import events as E

        if isinstance(ev, E.Info):
            self.write(("warning: " if ev.level == "warning" else "") + ev.message)
        elif isinstance(ev, E.Step):
            bar = self._bar(ev.total)
            bar.update(ev.iteration - bar.n)
            bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)
        elif isinstance(ev, E.Progress):
            bar = self._bar(ev.total, ev.stage)
            bar.update(ev.done - bar.n)
        elif isinstance(ev, E.Validation):
            self.last_validation = ev
            per_class = " ".join(f"{k}={v:.3f}" for k, v in ev.dice.items())
            self.write(
                f"iteration {ev.iteration}: validation Dice {ev.mean_dice:.3f} "
                f"IoU {ev.mean_iou:.3f} ({per_class})"
            )

    def _bar(self, total: int, stage: str = "") -> Any:
        desc = stage or self.desc
        if self.bar is None or self.bar.total != total or self._stage != desc:
            from tqdm import tqdm

            self.close()
            self._stage = desc
            self.bar = tqdm(
                total=total, desc=desc, disable=self.quiet, dynamic_ncols=True, file=sys.stderr
            )
        return self.bar

    def write(self, msg: str) -> None:
        """Print one line on stderr without breaking the bar."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def drain(events: Iterator[Any], desc: str = "", quiet: bool = False) -> Any:
    """Run an event generator to its ``Done`` event (returned), showing progress."""
    from .events import run_to_completion

    progress = TerminalProgress(desc, quiet)
    try:
        return run_to_completion(events, progress)
    finally:
        progress.close()
