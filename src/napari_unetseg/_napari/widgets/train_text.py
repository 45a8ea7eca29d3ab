"""Texts of the Train widget's feedback: the banner's plain-words precision note and
the validation readout."""

from __future__ import annotations

from ...core.events import Validation
from ._common import class_colour


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


#: What the training precision means, in plain words (the banner's first line).
PRECISION_NOTES = {
    "float32": "full 32-bit precision: this device has no fast 16-bit arithmetic "
    "(bfloat16), so nothing is rounded and results are exact",
    "bfloat16": "bfloat16: numbers are rounded to 16 bits where that is safe, which this "
    "device computes natively: faster, half the memory, same accuracy in practice",
    "float16": "float16: 16-bit numbers with loss scaling, faster on this GPU",
}


def explain(message: str) -> str:
    """The trainer's "training on <device>, <precision>" line, with the precision in
    plain words."""
    if message.startswith("training on "):
        precision = message.rsplit(",", 1)[-1].strip()
        note = PRECISION_NOTES.get(precision)
        if note:
            return f"{message}<br><small>{note}</small>"
    return message


def format_validation(ev: Validation) -> str:
    """The readout under the plot; each class name in its plot colour (the legend)."""
    parts = [
        f'<span style="color:{_hex(class_colour(k))}">&#9632;</span> {name}: '
        f"Dice {ev.dice[name]:.3f}, IoU {ev.iou.get(name, float('nan')):.3f}"
        for k, name in enumerate(ev.dice, start=1)
    ]
    return (
        f"validation at iteration {ev.iteration}: mean Dice {ev.mean_dice:.3f}, "
        f"mean IoU {ev.mean_iou:.3f}<br>" + "<br>".join(parts)
    )
