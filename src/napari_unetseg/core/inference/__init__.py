"""Sliding-window prediction with Gaussian blending, slab by slab.

A volume larger than the network's training patch is cut into overlapping windows of the
patch size. Every window is predicted, its logits are weighted by an importance map that
is highest in the window centre (a Gaussian with sigma = 1/8 of the window, as in
nnU-Net) and summed; the sum divided by the summed weights is the blended logit map, and
its softmax gives the probabilities. Blending logits rather than probabilities follows
nnU-Net: one softmax per voxel instead of one per window, and a 1x1 network gives exactly
its full-volume output.

Memory: windows are processed in order along the first spatial axis (Z for volumes, Y for
images), and only the slab of the volume covered by the windows in flight is held in the
accumulators. As soon as no remaining window reaches a slab, that slab is finished and
handed on (:class:`Slab`), so labels for a large volume are produced without ever
holding ``(K, Z, Y, X)`` float32 probabilities.

The modules follow the data flow:

* :mod:`.windows`: where the windows go (:func:`window_starts`, :func:`window_grid`,
  :func:`count_windows`, :func:`inference_layout`, :func:`importance_map`,
  :func:`check_window_layout`);
* :mod:`.memory`: windows per forward pass (:func:`auto_window_batch`) and the fallbacks
  when the device runs out of memory;
* :mod:`.engine`: the batched blending engine and its finished :class:`Slab` objects;
* :mod:`.sliding`: :func:`sliding_window_slabs` (any network, a normalised image in,
  finished slabs out) and :func:`sliding_window` (the whole probability map);
* :mod:`.prediction`: :func:`predict_grid` (and :func:`prediction_layout`, the windows it
  uses): a
  :class:`~napari_unetseg.core.checkpoint.Checkpoint` and a raw image in, a
  :class:`Prediction` out (labels, probabilities, boundary map, watershed instances), in
  the model's own grid;
* :mod:`.front`: :func:`predict` / :func:`predict_volume`, what callers use: per-image
  normalisation, resampling to the model's spacing and back, 2D models on volumes.
"""

from __future__ import annotations

# The public names (see __all__) and, for code written against the single-module version,
# the private helpers it held.
from .engine import Slab, Transform
from .engine import _Engine as _Engine
from .front import postprocess, predict, predict_volume
from .memory import CPU_BATCH_VOXELS, CPU_WINDOW_BATCH, MAX_AUTO_WINDOW_BATCH, auto_window_batch
from .memory import _oom_errors as _oom_errors
from .memory import _ShrinkWindow as _ShrinkWindow
from .memory import _smaller_window as _smaller_window
from .prediction import Prediction, predict_grid, prediction_layout, prediction_window
from .prediction import _default_window as _default_window
from .prediction import _validate_against_checkpoint as _validate_against_checkpoint
from .sliding import _slabs_one_window as _slabs_one_window
from .sliding import sliding_window, sliding_window_slabs
from .windows import (
    MAX_WINDOWS,
    MIN_WEIGHT,
    SIGMA_SCALE,
    check_window_layout,
    count_windows,
    importance_map,
    inference_layout,
    inference_window,
    layout_steps,
    window_grid,
    window_starts,
)
from .windows import _check_image as _check_image
from .windows import _check_window as _check_window

__all__ = [
    "CPU_BATCH_VOXELS",
    "CPU_WINDOW_BATCH",
    "MAX_AUTO_WINDOW_BATCH",
    "MAX_WINDOWS",
    "MIN_WEIGHT",
    "SIGMA_SCALE",
    "Prediction",
    "Slab",
    "Transform",
    "auto_window_batch",
    "check_window_layout",
    "count_windows",
    "importance_map",
    "inference_layout",
    "inference_window",
    "layout_steps",
    "postprocess",
    "predict",
    "predict_grid",
    "predict_volume",
    "prediction_layout",
    "prediction_window",
    "sliding_window",
    "sliding_window_slabs",
    "window_grid",
    "window_starts",
]
