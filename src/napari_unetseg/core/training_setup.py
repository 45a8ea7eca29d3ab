"""The set-up of a training run: from annotated cases to the planned, prepared data.

:func:`setup_run` goes the way a run is decided: cases -> classes -> network dimensions
-> spacing -> normalisation -> device -> plan -> prepared data (normalised, resampled,
split, possibly memory-mapped). Images are ``(C, *spatial)``, annotations ``(*spatial)``
(0 = not annotated, 1 = background, 2.. = classes or objects); spatial axes are
``(Z, Y, X)`` or ``(Y, X)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from . import ddp
from .cases import Case
from .config import Config
from .events import Info
from .resample import resampled_shape

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .data import Normalizer
    from .planning import Plan
    from .training_data import TrainingData

INSTANCE_CLASS_NAMES = ("interior", "boundary")

_T = TypeVar("_T")


def _drop_axis(values: Sequence[_T], axis: int | None, dims: int) -> list[_T]:
    """``values`` (a patch size, pool kernel or spacing) without ``axis`` when it has one
    entry per axis of the ``dims``-D images (settings written for the volume, used by a 2D
    network); all of them otherwise."""
    if axis is None or len(values) != dims:
        return list(values)
    return [v for a, v in enumerate(values) if a != axis]


@dataclass
class RunSetup:
    """What :func:`setup_run` decided and prepared.

    Attributes:
        config: the validated copy of the settings with the planned values.
        task: ``semantic`` or ``instances``.
        class_names: one name per foreground class (the stored model's).
        metric_names: names of the validated classes (for instances: interior, boundary).
        slice_axis: for a 2D network on volumes, the axis it slices along; else None.
        normalizer: the intensity normalisation (fitted, or the resumed model's).
        device: where the network trains; ``device_text`` says so in words.
        amp_dtype: the autocast dtype, or None for float32.
        spacing: the training voxel spacing (array order), or None when unknown.
        plan: the planner's choices (patch size, pooling, batch sizes).
        data: the prepared training and validation items.
        cases: how many annotated cases are used.
        notes: messages for the user, in the order the decisions were taken.
    """

    config: Config
    task: str
    class_names: list[str]
    metric_names: list[str]
    slice_axis: int | None
    normalizer: Normalizer
    device: torch.device
    device_text: str
    amp_dtype: torch.dtype | None
    spacing: tuple[float, ...] | None
    plan: Plan
    data: TrainingData
    cases: int
    notes: list[Info]


def _background_note(used: Sequence[Case], values: Sequence[np.ndarray]) -> Info | None:
    from .classes import has_background

    bare = [c.name for c, v in zip(used, values) if not has_background(v)]
    if not bare:
        return None
    which = "the annotation" if len(used) == 1 else "case(s) " + ", ".join(bare)
    return Info(
        f"{which}: no background (value 1) painted; the network learns "
        "background only from other cases or not at all - paint some",
        level="warning",
    )


def apply_finetune_lr(cfg: Config) -> Info:
    """Lower the peak learning rate of a run that continues a model (in place):
    ``train.learning_rate`` x ``train.finetune_lr_factor``. A resumed run has no
    warm-up and restarts the cosine schedule at its peak; at the full peak the first
    steps undo much of what was learned (benchmarks/RESULTS.md, fine-tuning). Returns
    the note for the user."""
    base = float(cfg.train.learning_rate)
    factor = float(cfg.train.finetune_lr_factor)
    cfg.train.learning_rate = base * factor
    return Info(
        f"continuing a model: peak learning rate {base * factor:g} "
        f"(learning rate {base:g} x fine-tune factor {factor:g})"
    )


def setup_run(
    all_cases: Sequence[Case],
    config: Config,
    *,
    resume: Checkpoint | None = None,
    own_validation: bool = False,
) -> RunSetup:
    """Decide classes, dimensions, spacing, normalisation and plan, and prepare the data.

    Args:
        all_cases: the annotated cases (images ``(C, *spatial)``); cases without any
            annotated voxel are left out with a note.
        config: the settings (not changed; a validated copy gets the planned values).
        resume: a loaded model to continue: its architecture, patch size and
            normalisation are kept, and the peak learning rate is lowered by
            ``train.finetune_lr_factor`` (:func:`apply_finetune_lr`).
        own_validation: a separate validation volume is given, so nothing is held out.

    Raises:
        ValueError: the cases, settings or the model to continue do not fit together.
    """
    from .classes import check_resume, resolve_classes, unnamed_values_warning
    from .device import autocast_dtype, configure_threads, select_device
    from .geometry import case_spacings, check_cases, network_dims, training_spacing
    from .planning import make_plan
    from .training_data import fit_dataset_normalizer, prepare_cases

    cfg = config.copy().validate()
    task = cfg.train.task
    # what the readers noted about the files (e.g. time points read as channels)
    notes: list[Info] = [
        Info(str(n))
        for case in all_cases
        for n in (getattr(getattr(case, "meta", None), "extra", None) or {}).get("notes", [])
    ]

    # ---- cases, classes, dimensions
    used, values, skipped = check_cases(all_cases)
    notes += [Info(t, level="warning") for t in skipped]
    num_classes = cfg.model.num_classes if task == "semantic" else None
    named = cfg.class_names != Config().class_names  # the default names nothing
    if task == "semantic" and named and (extra := unnamed_values_warning(values, cfg.class_names)):
        notes.append(Info(extra, level="warning"))
    class_names, n_out = resolve_classes(values, task, cfg.class_names, num_classes)
    if task == "semantic":
        note = _background_note(used, values)
        if note is not None:
            notes.append(note)
    metric_names = list(INSTANCE_CLASS_NAMES) if task == "instances" else class_names
    cfg.class_names = class_names
    channels = used[0].channels
    net_dims, image_dims, slice_axis = network_dims(used, cfg, resume)
    if resume is not None:
        check_resume(resume, channels, net_dims, task, n_out)

    # ---- spacing, normalisation and plan
    spacings = case_spacings(used)
    if resume is not None and cfg.data.target_spacing is None:
        cfg.data.target_spacing = getattr(resume.config.data, "target_spacing", None)
    per_case, train_spacing, sp_text = training_spacing(
        spacings, cfg.data.target_spacing, slice_axis
    )
    if sp_text is not None:
        notes.append(Info(sp_text))
    resampled = any(t is not None for t in per_case)
    cfg.data.target_spacing = train_spacing if resampled else None
    cfg.data.image_dims = image_dims
    if slice_axis is not None:
        cfg.data.slice_axis = slice_axis
    if resume is not None:
        if resume.normalizer is None:  # check_resume refuses such a model already
            raise ValueError("the model to continue has no normalisation record")
        cfg.model = resume.config.model
        cfg.data.patch_size = resume.config.data.patch_size
        cfg.data.normalization = resume.config.data.normalization
        normalizer = resume.normalizer
        notes.append(apply_finetune_lr(cfg))
    else:
        cfg.model.spatial_dims = net_dims
        cfg.model.in_channels = channels
        cfg.model.num_classes = n_out
        if cfg.data.patch_size is not None:
            cfg.data.patch_size = tuple(_drop_axis(cfg.data.patch_size, slice_axis, image_dims))
        if cfg.model.pool is not None:
            cfg.model.pool = [_drop_axis(k, slice_axis, image_dims) for k in cfg.model.pool]
        normalizer = fit_dataset_normalizer(
            [c.image for c in used], [c.annotation for c in used], cfg.data
        )
    device, device_text = select_device(cfg.train.device)
    device = ddp.device_for_rank(device)  # cuda:LOCAL_RANK under torchrun
    if device.type == "cpu":
        configure_threads(ddp.threads_for_rank(cfg.train.threads))
        device_text = f"CPU ({torch.get_num_threads()} threads)"
    amp_dtype = autocast_dtype(device, cfg.train.precision)
    # cases without a spacing count as isotropic 1 when the others are resampled
    known = [sp if sp is not None else (1.0,) * image_dims for sp in spacings]
    shapes = [
        resampled_shape(c.spatial_shape, sp, t) if t is not None else c.spatial_shape
        for c, sp, t in zip(used, known, per_case)
    ]
    plan_shape = tuple(int(v) for v in np.median(np.asarray(shapes), axis=0))
    plan_spacing = train_spacing
    if slice_axis is not None:
        plan_shape = tuple(_drop_axis(plan_shape, slice_axis, image_dims))
        if train_spacing is not None:
            plan_spacing = tuple(_drop_axis(train_spacing, slice_axis, image_dims))
    plan = make_plan(plan_shape, plan_spacing, channels, cfg, device=device)
    plan.apply(cfg)
    cfg.validate()

    # ---- data
    split_cfg = cfg.data
    if own_validation:
        split_cfg = dataclasses.replace(cfg.data, validation_fraction=0.0)
        split_cfg.validation_cases = None
    data = prepare_cases(
        used,
        split_cfg,
        task=task,
        num_outputs=n_out,
        normalizer=normalizer,
        target_spacings=per_case,
        source_spacings=known,
        seed=int(cfg.train.seed),
        slice_axis=slice_axis,
    )
    notes += [Info(t) for t in data.notes]
    return RunSetup(
        config=cfg,
        task=task,
        class_names=class_names,
        metric_names=metric_names,
        slice_axis=slice_axis,
        normalizer=normalizer,
        device=device,
        device_text=device_text,
        amp_dtype=amp_dtype,
        spacing=train_spacing,
        plan=plan,
        data=data,
        cases=len(used),
        notes=notes,
    )
