"""Texts of the Train widget's feedback: the banner's plain-words precision note and
the validation readout."""

from __future__ import annotations

from ...core.events import Validation
from ._common import class_colour


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


#: What the training precision means, in plain words (the banner's first line).
PRECISION_NOTES = {
    "float32": "float32 = full 32-bit precision, numbers not rounded: used when the device "
    "has no fast 16-bit (bfloat16) arithmetic, or when the settings ask for it",
    "bfloat16": "bfloat16 = 16-bit precision where it is safe: this device computes it "
    "natively, so training runs faster in half the memory with practically the same "
    "accuracy",
    "float16": "float16 = 16-bit precision with loss scaling: faster on this GPU",
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
