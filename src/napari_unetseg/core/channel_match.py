"""Which given channel is which of the model's: channels matched by name, not by position.

A model stores the names of the channels it was trained on (``Checkpoint.channel_names``,
e.g. ``["T1", "T1ce", "T2", "FLAIR"]``, or the napari layer names ``"case1 [T1]"``). The
channels given at prediction (napari layers in list order, files on the command line)
carry names too. Dragging a layer, or listing files in another order, must not feed the
FLAIR sequence where the network expects T1 without a word.

Names are compared by their channel part: the text in a trailing ``[...]`` when there is
one, else what is left after the prefix the names of one image share (``BraTS_002_t1``,
``BraTS_002_t1ce`` -> ``t1``, ``t1ce``), case-insensitively; a model name also matches a
given name that holds it as a separate word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_BRACKET = re.compile(r"\[([^\]]+)\]\s*$")
_SEPARATORS = "_- ."
#: nnU-Net's channel file suffix: these names are positions, not channel names.
_INDEX = re.compile(r"\d{4}")


@dataclass(frozen=True)
class ChannelMatch:
    """order: given-channel index for each model channel (model order); ``None`` when
    the names do not tell (the given order is used). message: what the user should know
    (a reordering, or a warning), or None. warning: whether ``message`` is a warning."""

    order: list[int] | None
    message: str | None = None
    warning: bool = False

    @property
    def reordered(self) -> bool:
        return self.order is not None and self.order != sorted(self.order)


def channel_keys(names: Sequence[str], *, lower: bool = True) -> list[str]:
    """The channel part of each name (see the module docstring), lower case unless
    ``lower`` is False."""
    names = [str(n).strip() for n in names]
    bracketed = [_BRACKET.search(n) for n in names]
    if all(bracketed):
        keys = [m.group(1).strip() for m in bracketed if m is not None]
    else:
        keys = list(names)
        if len(keys) > 1:
            prefix = keys[0].lower()
            for k in keys[1:]:
                while not k.lower().startswith(prefix):
                    prefix = prefix[:-1]
            cut = max((prefix.rfind(c) for c in _SEPARATORS), default=-1)
            if cut >= 0:
                keys = [k[cut + 1 :] for k in keys]
    return [k.lower() for k in keys] if lower else keys


def _find(key: str, given: list[str]) -> list[int]:
    exact = [i for i, g in enumerate(given) if g == key]
    if exact:
        return exact
    word = re.compile(rf"(^|[^a-z0-9]){re.escape(key)}($|[^a-z0-9])")
    return [i for i, g in enumerate(given) if word.search(g)]


def match_channels(expected: Sequence[str], given: Sequence[str]) -> ChannelMatch:
    """Match the given channels to the model's by name.

    Args:
        expected: the model's channel names in its order (may be empty: nothing to check).
        given: the names of the given channels in their order.

    Returns:
        A :class:`ChannelMatch`: every model channel found exactly once gives the order
        (a message says when it differs from the given one); names that do not match
        give ``order`` None and a warning naming both lists, except when either side
        has no names to compare (a one-channel model, positional nnU-Net file suffixes).
    """
    expected, given = [str(e) for e in expected], [str(g) for g in given]
    if len(expected) < 2 or len(expected) != len(given):
        return ChannelMatch(order=None)
    want, have = channel_keys(expected), channel_keys(given)
    if all(_INDEX.fullmatch(k) for k in have) or all(_INDEX.fullmatch(k) for k in want):
        return ChannelMatch(order=None)
    found = [_find(k, have) for k in want]
    order = [f[0] for f in found if len(f) == 1]
    if len(order) == len(want) and len(set(order)) == len(order):
        if order == list(range(len(order))):
            return ChannelMatch(order=order)
        text = ", ".join(f"{given[i]} as {name}" for i, name in zip(order, expected))
        return ChannelMatch(order=order, message=f"channels matched to the model by name: {text}")
    return ChannelMatch(
        order=None,
        warning=True,
        message=(
            f"the model was trained on channels {', '.join(expected)}; the given "
            f"{', '.join(given)} do not match them by name, so they are used in the given "
            "order: check that it is the model's"
        ),
    )


def order_channels(
    image: np.ndarray, expected: Sequence[str], given: Sequence[str]
) -> tuple[np.ndarray, ChannelMatch]:
    """``image`` (C, *spatial) with its channels in the model's order when the names
    tell it (see :func:`match_channels`), and the match (its message for the user)."""
    match = match_channels(expected, given)
    if match.reordered and match.order is not None:
        image = np.asarray(image)[match.order]
    return image, match


#: Most channels an image layer is taken to have along a guessed channel axis.
MAX_CHANNELS = 8


def guess_channel_axis(shape: Sequence[int]) -> int:
    """The channel axis of a 4D array without metadata: 1 when it looks like
    (Z, C, Y, X) (as napari's own reader gives ImageJ hyperstacks: a second axis of at
    most ``MAX_CHANNELS`` entries, shorter than the first), else 0 (C, Z, Y, X)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4 and shape[1] <= MAX_CHANNELS and shape[1] < shape[0]:
        return 1
    return 0
