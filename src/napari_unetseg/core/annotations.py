"""The sparse-annotation convention.

Annotation volume values: 0 = not annotated (ignored), 1 = background, 2.. = foreground
classes (semantic task) or object ids (instance task). Predictions and dense references
use the ordinary convention: 0 = background, k = class or object.

Arrays are numpy arrays in (Z, Y, X) order for volumes and (Y, X) for single images.
Training targets built here use ``IGNORE_INDEX`` for voxels nobody annotated, so the loss
(:class:`napari_unetseg.core.losses.SparseCEDiceLoss`) skips them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNANNOTATED = 0
BACKGROUND = 1
IGNORE_INDEX = -1  # value of unannotated voxels in training targets

#: Axis letters of a (Z, Y, X) volume and of a (Y, X) image.
AXES_3D = "zyx"
AXES_2D = "yx"


def _axis_letters(ndim: int) -> str:
    if ndim == 3:
        return AXES_3D
    if ndim == 2:
        return AXES_2D
    raise ValueError(
        f"expected a (Z, Y, X) volume or a (Y, X) image, got an array with {ndim} "
        "dimensions; select a single channel/time point first"
    )


def _check_integer(array: np.ndarray, what: str) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise TypeError(
            f"{what} must hold integer labels, not {array.dtype}; "
            "load it as a labels layer or cast it with .astype(int)"
        )


def _axis_index(axis: int | str, ndim: int) -> int:
    """Position of ``axis`` (an int, negative allowed, or a letter 'z', 'y', 'x')."""
    letters = _axis_letters(ndim)
    if isinstance(axis, str):
        if axis.lower() not in letters:
            raise ValueError(f"axis {axis!r} is not one of {list(letters)}")
        return letters.index(axis.lower())
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def _choose_slices(size: int, fraction: float, mode: str, rng: np.random.Generator) -> np.ndarray:
    n = min(size, max(1, round(fraction * size)))
    if mode == "even":
        # Centres of n equal bins, so that the kept slices are spread over the whole axis.
        return np.unique(((np.arange(n) + 0.5) * size / n).astype(np.intp))
    return np.sort(rng.choice(size, size=n, replace=False))


def sparsify(
    truth: np.ndarray,
    fraction: float = 0.1,
    axes: str = "zyx",
    mode: str = "random",
    seed: int = 0,
) -> np.ndarray:
    """Annotation volume from a dense reference, keeping whole slices.

    Simulates a person who annotates a few complete slices: along each axis named in
    ``axes``, ``round(fraction * size)`` slices (at least one) are kept. A voxel is
    annotated when it lies in any kept slice of any axis; there it becomes ``truth + 1``
    (1 = background, 2.. = class/object), elsewhere 0 (not annotated).

    Args:
        truth: dense reference (Z, Y, X) or (Y, X), integers, 0 = background.
        fraction: share of slices to keep per axis, in (0, 1].
        axes: letters of the axes to slice along, a subset of "zyx" (3D) or "yx" (2D; a
            "z" next to other letters is ignored there, so the default works for images).
        mode: "random" (seeded choice) or "even" (evenly spaced slices).
        seed: seed of the random choice.

    Returns:
        Annotation array of the same shape; same dtype as ``truth`` when ``truth.max() + 1``
        fits in it, otherwise the next wider unsigned type.
    """
    truth = np.asarray(truth)
    letters = _axis_letters(truth.ndim)
    _check_integer(truth, "the reference")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    if mode not in ("random", "even"):
        raise ValueError(f"mode must be 'random' or 'even', not {mode!r}")
    axes = axes.lower()
    if truth.ndim == 2 and "z" in axes and len(axes) > 1:
        axes = axes.replace("z", "")  # a 2D image has no z: "zyx" means its rows and columns
    if not axes or any(a not in letters for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(
            f"axes must be distinct letters from {letters!r} for a {truth.ndim}D array, "
            f"not {axes!r}"
        )
    if truth.size and truth.min() < 0:
        raise ValueError("the reference has negative labels; 0 = background, k >= 1 = class")

    rng = np.random.default_rng(seed)
    keep = np.zeros(truth.shape, dtype=bool)
    for letter in letters:  # fixed order so the result does not depend on how axes is spelt
        if letter not in axes:
            continue
        ax = letters.index(letter)
        idx = _choose_slices(truth.shape[ax], float(fraction), mode, rng)
        sl: list = [slice(None)] * truth.ndim
        sl[ax] = idx
        keep[tuple(sl)] = True

    top = int(truth.max()) + 1 if truth.size else 1
    dtype = truth.dtype if truth.dtype != bool else np.dtype(np.uint8)
    if top > np.iinfo(dtype).max:
        dtype = np.promote_types(np.min_scalar_type(top), np.uint8)
    out = np.zeros(truth.shape, dtype=dtype)
    out[keep] = truth[keep].astype(dtype) + 1
    return out


def mark_slice_complete(annotation: np.ndarray, axis: int | str, index: int) -> np.ndarray:
    """In place: every 0 in ``annotation`` slice ``index`` along ``axis`` becomes 1.

    Use it after painting the objects of a slice: the rest of that slice is then
    annotated as background instead of ignored.

    Args:
        annotation: annotation (Z, Y, X) or (Y, X), integers (modified in place).
        axis: axis position (0, 1, 2 or negative) or letter ("z", "y", "x").
        index: slice index along that axis (negative counts from the end).

    Returns:
        ``annotation`` itself.
    """
    if not isinstance(annotation, np.ndarray):
        raise TypeError("annotation must be a numpy array (it is modified in place)")
    _check_integer(annotation, "the annotation")
    ax = _axis_index(axis, annotation.ndim)
    size = annotation.shape[ax]
    if not -size <= int(index) < size:
        raise IndexError(f"slice {index} is out of range: the axis has {size} slices")
    sl: list = [slice(None)] * annotation.ndim
    sl[ax] = int(index) % size
    plane = annotation[tuple(sl)]
    plane[plane == UNANNOTATED] = BACKGROUND
    return annotation


def _check_annotation(annotation: np.ndarray) -> np.ndarray:
    annotation = np.asarray(annotation)
    _axis_letters(annotation.ndim)
    _check_integer(annotation, "the annotation")
    if annotation.size and annotation.min() < 0:
        raise ValueError(
            "the annotation has negative values; use 0 = not annotated, 1 = background, "
            "2.. = classes or objects"
        )
    return annotation


def semantic_target(annotation: np.ndarray) -> np.ndarray:
    """Training target for the semantic task.

    Args:
        annotation: (Z, Y, X) or (Y, X), 0 = not annotated, 1 = background, k >= 2 = class.

    Returns:
        int64 array of the same shape: 0 = background, k - 1 = class, ``IGNORE_INDEX``
        where not annotated.
    """
    annotation = _check_annotation(annotation)
    return annotation.astype(np.int64) - 1  # 0 - 1 == IGNORE_INDEX


def _boundary(annotation: np.ndarray) -> np.ndarray:
    """Object voxels that touch a different annotated label (face neighbours only).

    This is ``skimage.segmentation.find_boundaries(labels, connectivity=1, mode="inner",
    background=1)`` restricted to pairs of ANNOTATED neighbours: find_boundaries would
    also mark every object voxel next to an unannotated one (the edge of a painted slice),
    which would teach the network that objects end where the painting ends. The test
    suite checks that both agree on fully annotated volumes.

    "inner" rather than "thick": the boundary voxels stay inside the objects, so the
    foreground (interior + boundary) is exactly the objects and the watershed that floods
    it reproduces their size; two touching objects are still separated by two boundary
    voxels (one on each side), enough for their interior seeds not to merge.
    """
    return _face_changes(annotation, annotation != UNANNOTATED) & (annotation > BACKGROUND)


def _contacts(annotation: np.ndarray) -> np.ndarray:
    """Object voxels with a face neighbour that belongs to ANOTHER object."""
    return _face_changes(annotation, annotation > BACKGROUND)


def _face_changes(annotation: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Voxels of ``within`` whose value differs from a face neighbour also in ``within``
    (both voxels of each such pair are marked)."""
    out = np.zeros(annotation.shape, dtype=bool)
    for ax in range(annotation.ndim):
        lo: list = [slice(None)] * annotation.ndim
        hi: list = [slice(None)] * annotation.ndim
        lo[ax] = slice(None, -1)
        hi[ax] = slice(1, None)
        lo_t, hi_t = tuple(lo), tuple(hi)
        differ = (annotation[lo_t] != annotation[hi_t]) & within[lo_t] & within[hi_t]
        out[lo_t] |= differ
        out[hi_t] |= differ
    return out


def instance_target(annotation: np.ndarray, contact_width: int = 1) -> np.ndarray:
    """Training target for the instance task (three classes).

    Args:
        annotation: (Z, Y, X) or (Y, X), 0 = not annotated, 1 = background, k >= 2 = object
            id (each object its own id).
        contact_width: where two objects touch, the object voxels up to this many face
            steps from the other object are boundary (1 = only the touching voxels, so
            two voxels separate the pair's interiors; 2 = four). The boundary against
            the background stays one voxel thick.

    Returns:
        int64 array: 0 = background, 1 = object interior, 2 = object boundary (object voxels
        whose face neighbour is annotated with a different label: another object or the
        background), ``IGNORE_INDEX`` where not annotated.
    """
    annotation = _check_annotation(annotation)
    if int(contact_width) < 1:
        raise ValueError(f"contact_width must be at least 1 voxel, not {contact_width}")
    target = np.full(annotation.shape, IGNORE_INDEX, dtype=np.int64)
    target[annotation == BACKGROUND] = 0
    target[annotation > BACKGROUND] = 1
    target[_boundary(annotation)] = 2
    if contact_width > 1:
        from scipy import ndimage as ndi

        # grow the contacts inside the objects only (the background is not reached)
        grown = ndi.binary_dilation(
            _contacts(annotation),
            iterations=int(contact_width) - 1,
            mask=annotation > BACKGROUND,
        )
        target[grown] = 2
    return target


def annotated_slices(annotation: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of the slices along each axis in which something was painted in that plane.

    A slice counts when it holds at least one annotated voxel whose whole in-plane 3 x 3
    neighbourhood (3 voxels along the line for a 2D image) is annotated too. This tells a
    painted z-slice from the lines that painted y- and x-slices leave in it.

    Args:
        annotation: (Z, Y, X) or (Y, X); values > 0 are annotated (boolean masks work too).

    Returns:
        {"z": indices, "y": indices, "x": indices} (only "y", "x" for 2D), sorted.
    """
    annotation = np.asarray(annotation)
    letters = _axis_letters(annotation.ndim)
    mask = annotation > 0 if annotation.dtype != bool else annotation
    result = {}
    for ax, letter in enumerate(letters):
        core = mask.copy()
        for other in range(mask.ndim):
            if other == ax or mask.shape[other] < 3:
                # an in-plane extent below 3 cannot hold a 3-wide patch: use what is there
                continue
            lo: list = [slice(None)] * mask.ndim
            mid: list = [slice(None)] * mask.ndim
            hi: list = [slice(None)] * mask.ndim
            lo[other], mid[other], hi[other] = slice(None, -2), slice(1, -1), slice(2, None)
            eroded = np.zeros_like(core)
            eroded[tuple(mid)] = core[tuple(lo)] & core[tuple(mid)] & core[tuple(hi)]
            core = eroded
        reduce_axes = tuple(a for a in range(mask.ndim) if a != ax)
        result[letter] = np.flatnonzero(core.any(axis=reduce_axes))
    return result


def annotation_summary(
    annotation: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    instances: bool = False,
) -> dict:
    """Counts for the GUI: annotated slices per axis, annotated fraction, voxels per class.

    Args:
        annotation: (Z, Y, X) or (Y, X), 0 = not annotated, 1 = background, k >= 2 = class.
        class_names: names of the foreground classes (label 2 is ``class_names[0]``);
            labels without a name are called "class <k - 1>".
        instances: the labels 2.. are object ids (instance task): ``voxels_per_class``
            then holds {"background": n, "objects": n} and ``objects`` counts the painted
            objects; ``class_names`` is not used.

    Returns:
        dict with ``annotated_slices`` ({"z": n, "y": n, "x": n}, see
        :func:`annotated_slices`), ``annotated_fraction`` (share of annotated voxels),
        ``annotated_voxels``, ``voxels_per_class`` ({"background": n, name: n, ...}) and
        ``missing_classes`` (named classes with no annotated voxel yet).
    """
    annotation = _check_annotation(annotation)
    names = list(class_names) if class_names is not None else []
    flat = annotation.ravel()
    counts = np.bincount(flat) if flat.size else np.zeros(1, dtype=np.intp)
    annotated = int(flat.size - counts[0])
    n_labels = max(len(counts), len(names) + 2)

    def name_of(label: int) -> str:
        if label == BACKGROUND:
            return "background"
        k = label - 2
        return names[k] if k < len(names) else f"class {label - 1}"

    slices = {k: len(v) for k, v in annotated_slices(annotation).items()}
    if instances:
        n_bg = int(counts[BACKGROUND]) if len(counts) > BACKGROUND else 0
        return {
            "annotated_slices": slices,
            "annotated_fraction": annotated / flat.size if flat.size else 0.0,
            "annotated_voxels": annotated,
            "voxels_per_class": {"background": n_bg, "objects": annotated - n_bg},
            "missing_classes": [] if annotated - n_bg else ["objects"],
            "objects": int(np.count_nonzero(counts[BACKGROUND + 1 :])),
        }
    voxels = {}
    for label in range(1, n_labels):
        n = int(counts[label]) if label < len(counts) else 0
        if n or label - 2 < len(names):
            voxels[name_of(label)] = n
    missing = [n for n in names if voxels.get(n, 0) == 0]
    return {
        "annotated_slices": slices,
        "annotated_fraction": annotated / flat.size if flat.size else 0.0,
        "annotated_voxels": annotated,
        "voxels_per_class": voxels,
        "missing_classes": missing,
    }
