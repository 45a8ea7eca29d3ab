"""Rules about classes and about continuing a model, shared by the engine and the GUI.

Annotations follow the project's convention: 0 = not annotated, 1 = background, 2.. =
foreground classes (semantic task) or object ids (instance task).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import Checkpoint

#: The semantic task refuses annotations with more foreground classes than this.
MAX_FOREGROUND_CLASSES = 64
#: Output channels of an instance model: background, interior, boundary.
INSTANCE_OUTPUTS = 3


def label_values(annotation: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an annotation (any shape), read in slabs so that a
    memory-mapped annotation is never loaded whole."""
    arr = annotation
    if arr.ndim == 0 or arr.shape[0] <= 1 or arr.size <= 1 << 24:
        return np.unique(np.asarray(arr))
    step = max(1, (1 << 24) // max(1, arr[0].size))
    found = [np.unique(np.asarray(arr[i : i + step])) for i in range(0, arr.shape[0], step)]
    return np.unique(np.concatenate(found))


def resolve_classes(
    annotations: Sequence[np.ndarray],
    task: str,
    class_names: Sequence[str],
    num_classes: int | None = None,
) -> tuple[list[str], int]:
    """Foreground class names and the network's number of outputs for a dataset.

    Args:
        annotations: one annotation per case (any spatial shape), or their distinct
            values (:func:`label_values`).
        task: ``"semantic"`` or ``"instances"``.
        class_names: names the user gave for the foreground classes (label 2 first).
        num_classes: outputs the config asks for (background included), or ``None``.

    Returns:
        ``(names, outputs)``. Semantic: the given names padded with ``"class k"`` up to
        the largest label found (or ``num_classes - 1``), ``outputs`` = names + 1.
        Instances: the given names or ``["object"]``, and 3 outputs (background, interior,
        boundary).

    Raises:
        ValueError: negative labels, or (semantic task) labels above
            ``MAX_FOREGROUND_CLASSES + 1``, naming the odd values.
    """
    values = np.unique(np.concatenate([label_values(np.asarray(a)).ravel() for a in annotations]))
    if values.size and values[0] < 0:
        raise ValueError(
            f"the annotation holds negative values ({_listing(values[values < 0])}): use 0 = "
            "not annotated, 1 = background, 2.. = classes"
        )
    if task == "instances":
        return (list(class_names) or ["object"]), INSTANCE_OUTPUTS
    if task != "semantic":
        raise ValueError(f"task must be 'semantic' or 'instances', not {task!r}")
    top_label = MAX_FOREGROUND_CLASSES + 1
    odd = values[values > top_label]
    if odd.size:
        raise ValueError(
            f"the annotation holds the label value(s) {_listing(odd)}, beyond the "
            f"{MAX_FOREGROUND_CLASSES} foreground classes (values 2..{top_label}) "
            "a semantic model may have: repaint or remove them, or choose the instances "
            "task if these are object ids"
        )
    top = int(values[-1]) - 1 if values.size else 0
    want = int(num_classes) - 1 if num_classes is not None else 0
    n_fg = max(len(class_names), top, want, 1)
    if n_fg > MAX_FOREGROUND_CLASSES:
        raise ValueError(
            f"{n_fg} foreground classes were asked for; at most {MAX_FOREGROUND_CLASSES} "
            "are supported"
        )
    names = list(class_names) + [f"class {k}" for k in range(len(class_names) + 1, n_fg + 1)]
    return names, n_fg + 1


def unnamed_values_warning(
    values: np.ndarray | Sequence[np.ndarray], class_names: Sequence[str]
) -> str | None:
    """A one-line warning when a semantic annotation holds values beyond its named
    classes (e.g. a stray stroke with value 5 when only 2 = "cell" and 3 = "membrane" are
    named), naming the values and the names they will get; None when all are named.

    values: distinct annotation values (:func:`label_values`), or one array of them per
        case of a dataset.
    """
    top_named = len(class_names) + 1
    if isinstance(values, (list, tuple)):  # one array of values per case
        values = np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)
    values = np.unique(np.asarray(values))
    extra = values[values > top_named]
    if not extra.size:
        return None
    named = ", ".join(f"{k + 2} = {n}" for k, n in enumerate(class_names)) or "none"
    return (
        f"the annotation holds value(s) {_listing(extra)} beyond the named classes "
        f"({named}): they train as extra classes named 'class k'; repaint them or add "
        "their names"
    )


def has_background(annotation_values: np.ndarray) -> bool:
    """Whether background (value 1) is among the given annotation values."""
    return bool(np.any(np.asarray(annotation_values) == 1))


def _listing(values: np.ndarray, limit: int = 5) -> str:
    vals = [str(int(v)) for v in np.asarray(values).ravel()]
    text = ", ".join(vals[:limit])
    return text + (f" and {len(vals) - limit} more" if len(vals) > limit else "")


def check_resume(
    resume: Checkpoint, channels: int, spatial_dims: int, task: str, num_classes: int
) -> None:
    """Refuse to continue a model that cannot learn from this data.

    Args:
        resume: the loaded model to continue.
        channels: image channels of the new data.
        spatial_dims: dimensions of the network the new data needs (2 or 3).
        task: task of the new run.
        num_classes: outputs the new annotation needs (background included).

    Raises:
        ValueError: with one line saying what differs and what to do.
    """
    m = resume.config.model
    if m.spatial_dims != spatial_dims or m.in_channels != channels:
        raise ValueError(
            f"the model to continue was trained on {m.in_channels}-channel "
            f"{m.spatial_dims}D images; this image is {channels}-channel {spatial_dims}D: "
            "start a new model instead"
        )
    if resume.task != task:
        raise ValueError(
            f"the model was trained for the {resume.task} task; choose that task to "
            "continue training it"
        )
    if m.num_classes < num_classes:
        raise ValueError(
            f"the annotation has {num_classes - 1} classes but the model to continue "
            f"knows only {m.num_classes - 1}; start a new model instead"
        )
    if resume.normalizer is None:
        raise ValueError("the model to continue has no normalisation record")
    check_weights(resume)


def check_weights(resume: Checkpoint) -> None:
    """Refuse a model whose weights are not finite or do not fit its own architecture
    (a damaged or edited file), before training continues from it.

    Raises:
        CheckpointError: naming the first bad weight.
    """
    import torch

    from .checkpoint import CheckpointError

    for name, tensor in resume.state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"the model to continue holds NaN or infinite weights ({name}): it is "
                "damaged; start a new model or load another one"
            )
    if resume.state_dict:  # (a checkpoint made in code may carry no weights yet)
        resume.build_model("cpu")  # raises CheckpointError when the weights do not fit
