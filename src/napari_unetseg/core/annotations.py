"""The sparse-annotation convention.

Annotation volume values: 0 = not annotated (ignored), 1 = background, 2.. = foreground
classes (semantic task) or object ids (instance task). Predictions and dense references
use the ordinary convention: 0 = background, k = class or object.
"""

from __future__ import annotations

import numpy as np

UNANNOTATED = 0
BACKGROUND = 1
IGNORE_INDEX = -1  # value of unannotated voxels in training targets


def sparsify(truth: np.ndarray, fraction: float = 0.1, axes: str = "zyx",
             mode: str = "random", seed: int = 0) -> np.ndarray:
    """Annotation volume from a dense reference (0 = bg, k = class/object)."""
    raise NotImplementedError


def mark_slice_complete(annotation: np.ndarray, axis: int, index: int) -> np.ndarray:
    """In place: every 0 in ``annotation`` slice ``index`` along ``axis`` becomes 1."""
    raise NotImplementedError


def semantic_target(annotation: np.ndarray) -> np.ndarray:
    """int64 target: annotation - 1 (bg 0, class k-1), IGNORE_INDEX where unannotated."""
    raise NotImplementedError


def instance_target(annotation: np.ndarray) -> np.ndarray:
    """int64 target: 0 bg, 1 interior, 2 boundary, IGNORE_INDEX where unannotated."""
    raise NotImplementedError


def annotation_summary(annotation: np.ndarray, class_names=None) -> dict:
    """Counts for the GUI: annotated slices per axis, annotated fraction, voxels per class."""
    raise NotImplementedError
