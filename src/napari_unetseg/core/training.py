"""Training a U-Net from sparse annotations: a cancellable generator of typed events.

A dataset of annotated cases (:class:`~.cases.Case`: image ``(C, *spatial)`` and
annotation ``(*spatial)``, 0 = not annotated, 1 = background, 2.. = classes or objects)
goes in -- one (image, annotation) pair is the one-case dataset -- and a
:class:`~.checkpoint.Checkpoint` comes out. In between :meth:`Trainer.run` yields

* :class:`~.events.Info`: device, precision, the plan, the validation split, resampling
  and cache decisions (``level="warning"`` e.g. for a case without painted background);
* :class:`~.events.Step`: after every optimisation step (loss, learning rate, speed);
* :class:`~.events.Validation`: Dice/IoU per class over all held-out voxels (held-out
  cases, held-out annotated slices, or a densely labelled validation volume) every
  ``train.validate_every`` steps and at the end;
* :class:`~.events.Preview`: probabilities of the slice asked for with
  :meth:`Trainer.set_preview`, at most every ``train.preview_seconds`` seconds;
* :class:`~.events.Done`: last, with the checkpoint as ``result`` (also after a
  cancellation, then with ``cancelled=True``).

The recipe: AdamW, a short linear warm-up and a cosine decay of the learning rate,
cross-entropy + soft Dice computed on annotated voxels only (unannotated voxels are
ignored, as in Çiçek et al., 2016), random patches that always contain annotated
voxels, half of them centred on a foreground class chosen class-balanced. On the CPU the
3D network runs in ``channels_last_3d`` memory layout (faster convolutions with oneDNN)
and in bfloat16 only when the processor computes bfloat16 natively; on CUDA it uses
automatic mixed precision (bfloat16, or float16 with loss scaling).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .annotations import IGNORE_INDEX
from .cases import Case, as_cases
from .checkpoint import Checkpoint, save_checkpoint
from .config import Config, ConfigError
from .events import CancelToken, Done, Event, Info, Step
from .monitoring import VALIDATION_VOXELS, Monitoring  # noqa: F401 (the limit's old home)
from .resample import resampled_shape

#: Share of the run used for the linear learning-rate warm-up (at most 50 steps).
WARMUP_FRACTION = 0.05
#: The learning rate decays (cosine) to this fraction of its peak.
FINAL_LR_FRACTION = 0.02
INSTANCE_CLASS_NAMES = ("interior", "boundary")


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier for 0-based ``step`` of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * cosine


def _drop_axis(values, axis: int | None, dims: int):
    """``values`` (a patch size or pool kernel) without ``axis`` when it has one entry per
    axis of the ``dims``-D images (settings written for the volume, used by a 2D network)."""
    if values is None or axis is None or len(values) != dims:
        return values
    return type(values)(v for a, v in enumerate(values) if a != axis)


class Trainer(Monitoring):
    """Train on a dataset of annotated cases; one (image, annotation) pair is the
    one-case dataset.

    Usage::

        trainer = Trainer(image, annotation, config, spacing=(2.0, 1.0, 1.0))
        trainer = Trainer(config=config, cases=[Case("a", img_a, ann_a, (2, 1, 1)), ...])
        for event in trainer.run():      # Info, Step, Validation, Preview, Done
            ...
        trainer.save("model.safetensors")
        trainer.close()                  # removes the temporary data cache, if any

    Args:
        image: (C, Z, Y, X) or (C, Y, X) raw intensities (a single channel may omit C).
        annotation: (Z, Y, X) or (Y, X) integers: 0 = not annotated, 1 = background,
            2.. = foreground classes (semantic task) or object ids (instance task).
        config: all settings (``None`` = defaults); it is copied, and the copy gets the
            planned values.
        cases: instead of image and annotation, annotated
            :class:`~napari_unetseg.core.cases.Case` objects (images may be memory-mapped).
        spacing: voxel spacing of ``image`` in array order; ``None`` = isotropic.
        validation: optional ``(image, dense_reference)`` to validate on instead of
            held-out annotated slices or cases (reference: 0 = background, k = class /
            object id), in the training grid.
        resume: a loaded :class:`~.checkpoint.Checkpoint` to continue: its architecture,
            normalisation, weights, optimizer state and iteration count are kept; the
            run adds ``config.train.iterations`` steps.
        cancel: a :class:`~.events.CancelToken`, checked between steps.

    Across cases: patches are drawn class-balanced over the whole set
    (:class:`~.sampling.DatasetSampler`); with 3 or more annotated cases whole cases are
    held out for validation (``data.validation_cases``), else annotated slices of each
    case; intensities are normalised with dataset statistics
    (:func:`~.dataset.fit_dataset_normalizer`); cases whose spacings differ are resampled
    to the median spacing (``data.target_spacing``); data larger than a quarter of the
    memory is read memory-mapped from ``data.cache_dir``.

    2D networks on volumes: with ``model.spatial_dims`` 2 (and always for one-slice
    volumes ``(1, Y, X)``) a 2D network learns from the slices along ``data.slice_axis``
    that hold annotated voxels. The stored config then has ``model.spatial_dims`` 2 and
    ``data.image_dims`` 3 (with ``data.slice_axis``): prediction applies the network
    slice by slice along that axis and stacks the results. Plain 2D images store
    ``data.image_dims`` 2.

    The final :class:`~.events.Done` event's ``result`` is the trained Checkpoint.
    """

    def __init__(
        self,
        image: np.ndarray | None = None,
        annotation: np.ndarray | None = None,
        config: Config | None = None,
        *,
        cases: Sequence[Case] | None = None,
        spacing: Sequence[float] | None = None,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        resume: Checkpoint | None = None,
        cancel: CancelToken | None = None,
    ):
        from .classes import check_resume, has_background, resolve_classes
        from .device import autocast_dtype, configure_threads, select_device
        from .geometry import case_spacings, check_cases, network_dims, training_spacing
        from .losses import SparseCEDiceLoss
        from .model import UNet
        from .planning import make_plan
        from .sampling import DatasetSampler
        from .training_data import fit_dataset_normalizer, prepare_cases

        if cases is not None and spacing is not None:
            raise ValueError("give the spacing of each case in its Case, not as spacing=")
        if image is not None and annotation is None and cases is None:
            raise ValueError("give the annotation with the image (0 = not annotated)")
        config = config if config is not None else Config()
        if not isinstance(config, Config):
            raise ConfigError("config must be a napari_unetseg Config")
        all_cases = as_cases(image, annotation, cases=cases, spacing=spacing)
        self.cancel = cancel if cancel is not None else CancelToken()
        cfg = config.copy().validate()
        self.task = cfg.train.task
        self.info: list[Info] = []
        notes: list[Info] = []

        # ---- cases, classes, dimensions
        used, values, skipped = check_cases(all_cases)
        notes += [Info(t, level="warning") for t in skipped]
        num_classes = cfg.model.num_classes if self.task == "semantic" else None
        class_names, num_classes = resolve_classes(values, self.task, cfg.class_names, num_classes)
        if self.task == "semantic":
            bare = [c.name for c, v in zip(used, values) if not has_background(v)]
            if bare:
                which = "the annotation" if len(used) == 1 else "case(s) " + ", ".join(bare)
                notes.append(
                    Info(
                        f"{which}: no background (value 1) painted; the network learns "
                        "background only from other cases or not at all - paint some",
                        level="warning",
                    )
                )
        self.metric_names = list(INSTANCE_CLASS_NAMES) if self.task == "instances" else class_names
        cfg.class_names = class_names
        self.class_names = class_names
        channels = used[0].channels
        net_dims, image_dims, slice_axis = network_dims(used, cfg, resume)
        self.slice_axis = slice_axis
        if resume is not None:
            check_resume(resume, channels, net_dims, self.task, num_classes)

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
            cfg.model = resume.config.model
            cfg.data.patch_size = resume.config.data.patch_size
            cfg.data.normalization = resume.config.data.normalization
            self.normalizer = resume.normalizer
        else:
            cfg.model.spatial_dims = net_dims
            cfg.model.in_channels = channels
            cfg.model.num_classes = num_classes
            cfg.data.patch_size = _drop_axis(cfg.data.patch_size, slice_axis, image_dims)
            if cfg.model.pool is not None:
                cfg.model.pool = [_drop_axis(k, slice_axis, image_dims) for k in cfg.model.pool]
            self.normalizer = fit_dataset_normalizer(
                [c.image for c in used], [c.annotation for c in used], cfg.data
            )
        self.device, device_text = select_device(cfg.train.device)
        if self.device.type == "cpu":
            configure_threads(cfg.train.threads)
            device_text = f"CPU ({torch.get_num_threads()} threads)"
        self.amp_dtype = autocast_dtype(self.device, cfg.train.precision)
        self.spacing = train_spacing
        # cases without a spacing count as isotropic 1 when the others are resampled
        spacings = [sp if sp is not None else (1.0,) * image_dims for sp in spacings]
        shapes = [
            resampled_shape(c.spatial_shape, sp, t) if t is not None else c.spatial_shape
            for c, sp, t in zip(used, spacings, per_case)
        ]
        plan_shape = tuple(int(v) for v in np.median(np.asarray(shapes), axis=0))
        plan_spacing = train_spacing
        if slice_axis is not None:
            plan_shape = _drop_axis(plan_shape, slice_axis, image_dims)
            plan_spacing = _drop_axis(train_spacing, slice_axis, image_dims)
        self.plan = make_plan(plan_shape, plan_spacing, channels, cfg, device=self.device)
        self.plan.apply(cfg)
        cfg.validate()
        self.config = cfg
        self.patch_size = tuple(cfg.data.patch_size)

        # ---- data
        seed = int(cfg.train.seed)
        split_cfg = cfg.data
        if validation is not None:
            split_cfg = dataclasses.replace(cfg.data, validation_fraction=0.0)
            split_cfg.validation_cases = None
        self.data = prepare_cases(
            used,
            split_cfg,
            task=self.task,
            num_outputs=num_classes,
            normalizer=self.normalizer,
            target_spacings=per_case,
            source_spacings=spacings,
            seed=seed,
            slice_axis=slice_axis,
        )
        self._finalizer = weakref.finalize(self, self.data.store.close)
        notes += [Info(t) for t in self.data.notes]
        val_text = self.data.validation_text
        self._val_items = self.data.val
        if validation is not None:
            self._val_items = [self._prepare_validation(validation, cfg)]
            val_text = "validation on the given densely labelled volume"
        self.sampler = DatasetSampler(
            [img for img, _ in self.data.train],
            [tgt for _, tgt in self.data.train],
            self.patch_size,
            foreground_fraction=cfg.data.foreground_fraction,
            augment=cfg.data.augment,
            seed=seed,
            slice_axis=slice_axis,
        )
        self.image = self.data.train[0][0]  # the case previews show
        self._val_crops = self._validation_crops(seed) if self._val_items else []
        # ---- model, optimizer, loss
        torch.manual_seed(seed)
        self.model = UNet(cfg.model)
        if resume is not None:
            self.model.load_state_dict(resume.state_dict)
        self.model.to(self.device)
        self.channels_last = self.device.type == "cpu" and net_dims == 3
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
        # the network as the training step calls it: compiled on request (validation and
        # previews keep the eager module, which shares the weights)
        self._step_model = self.model
        self._compile_pending = False
        self._notes: list[Info] = []
        if cfg.train.compile:
            try:
                self._step_model = torch.compile(self.model)
                self._compile_pending = True
            except Exception as e:  # e.g. a Python version torch.compile does not support
                self._notes.append(_compile_failed(e))
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.train.learning_rate,
            weight_decay=cfg.train.weight_decay,
        )
        if resume is not None and resume.optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(resume.optimizer_state)
            except (ValueError, KeyError) as e:
                raise ValueError(
                    f"the optimizer state of the resumed model is damaged: {e}"
                ) from e
        self.loss_fn = SparseCEDiceLoss(cfg.train.ce_weight, cfg.train.dice_weight)
        self.scaler = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if self.amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")

        self.iteration = int(resume.iterations) if resume is not None else 0
        self.history: list[dict] = list(resume.history) if resume is not None else []
        self.resumed = resume is not None
        self._preview_lock = threading.Lock()
        self._preview_request: tuple[int, int] | None = None
        self._ran = False

        precision = "float32" if self.amp_dtype is None else str(self.amp_dtype)[6:]
        n_ann, n_all = self.data.annotated_voxels, self.data.total_voxels
        where = "the image" if len(used) == 1 else f"{len(used)} cases"
        norm = f"{self.normalizer.mode} normalisation"
        norm += " (per case)" if self.normalizer.per_image else ""
        if slice_axis is not None:
            norm += f"; 2D network on the slices along axis {'ZYX'[slice_axis]}"
        self.info = [
            Info(f"training on {device_text}, {precision}"),
            Info(self.plan.describe()),
            Info(
                f"{n_ann} annotated voxels ({n_ann / max(1, n_all):.1%} of {where}), "
                f"{norm}; {val_text}"
            ),
            *notes,
        ]
        if resume is not None:
            self.info.append(Info(f"continuing from iteration {self.iteration}"))
        if cfg.train.compile:
            self.info.append(
                Info("compiling the network (torch.compile): the first step takes a while")
            )

    # ------------------------------------------------------------------ set-up helpers

    # ------------------------------------------------------------------ public API

    def set_preview(self, axis: int, index: int) -> None:
        """Ask for previews of slice ``index`` along ``axis`` (thread-safe)."""
        ndim = self.image.ndim - 1
        if not -ndim <= int(axis) < ndim:
            raise ValueError(f"preview axis {axis} does not exist in a {ndim}D image")
        axis = int(axis) % ndim
        size = self.image.shape[1 + axis]
        if not 0 <= int(index) < size:
            raise ValueError(f"slice {index} is outside 0..{size - 1} along axis {axis}")
        with self._preview_lock:
            self._preview_request = (axis, int(index))

    def run(self) -> Iterator[Event]:
        """Train ``config.train.iterations`` steps, yielding events (see the module)."""
        cfg = self.config.train
        yield from self.info
        while self._notes:
            yield self._notes.pop(0)
        start = self.iteration
        n = int(cfg.iterations)
        total = start + n
        warmup = 0 if self.resumed or self._ran else min(50, int(WARMUP_FRACTION * n))
        self._ran = True
        t0 = time.perf_counter()
        next_preview = t0
        validate_every = max(1, int(cfg.validate_every))
        last_val = None
        for step in range(n):
            if self.cancel.cancelled:
                yield Done(
                    result=self.checkpoint(),
                    cancelled=True,
                    message=f"cancelled after {self.iteration} iterations",
                )
                return
            lr = cfg.learning_rate * _lr_factor(step, n, warmup)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            t_step = time.perf_counter()
            loss, annotated = self._train_step()
            self.iteration += 1
            now = time.perf_counter()
            yield Step(
                iteration=self.iteration,
                total=total,
                loss=loss,
                learning_rate=lr,
                voxels_per_second=annotated / max(now - t_step, 1e-9),
                seconds=now - t0,
            )
            while self._notes:  # e.g. compiling failed and the eager network took over
                yield self._notes.pop(0)
            if self._val_crops and (self.iteration % validate_every == 0 or step + 1 == n):
                last_val = self.validate()
                yield last_val
            request = self._preview_request
            if request is not None and time.perf_counter() >= next_preview:
                tp = time.perf_counter()
                yield self._preview(*request)
                cost = time.perf_counter() - tp
                # never spend more than about a fifth of the time on previews
                next_preview = time.perf_counter() + max(float(cfg.preview_seconds), 4 * cost)
        message = f"trained {self.iteration} iterations in {time.perf_counter() - t0:.1f} s"
        if last_val is not None:
            message += f"; validation Dice {last_val.mean_dice:.3f}"
        yield Done(result=self.checkpoint(), cancelled=False, message=message)

    def checkpoint(self) -> Checkpoint:
        """The current model as a Checkpoint (weights and optimizer state copied to the CPU)."""
        state = {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in self.model.state_dict().items()
        }
        opt = self.optimizer.state_dict()
        opt_copy = {
            "state": {
                pid: {
                    key: (v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v)
                    for key, v in entry.items()
                }
                for pid, entry in opt["state"].items()
            },
            "param_groups": [dict(g) for g in opt["param_groups"]],
        }
        return Checkpoint(
            config=self.config.copy(),
            state_dict=state,
            normalizer=self.normalizer,
            spacing=self.spacing,
            class_names=list(self.class_names),
            task=self.task,
            iterations=self.iteration,
            optimizer_state=opt_copy,
            history=[dict(h) for h in self.history],
        )

    def close(self) -> None:
        """Remove the temporary data cache (if one was made). Also done when the Trainer
        is garbage-collected or Python exits; the Trainer cannot train after it."""
        self.sampler = None
        self.image = None
        self._val_items = []
        self._finalizer()

    def save(self, path: str | Path) -> Path:
        """Write the current model to ``path`` (a ``.safetensors`` file)."""
        return save_checkpoint(self.checkpoint(), path)

    # ------------------------------------------------------------------ internals

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.device, non_blocking=True)
        if self.channels_last and t.ndim == 5:
            t = t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _compiled_forward(self, x):
        """The training forward pass; if compiling fails (no C++ compiler, an operation
        the compiler does not support), training goes on with the eager network and an
        Info says so."""
        if not self._compile_pending:
            return self._step_model(x)
        try:
            logits = self._step_model(x)
        except Exception as e:  # torch.compile's errors have no common base class
            self._step_model = self.model
            self._notes.append(_compile_failed(e))
            logits = self.model(x)
        self._compile_pending = False
        return logits

    def _train_step(self) -> tuple[float, int]:
        x_np, y_np = self.sampler.sample(self.config.train.batch_size)
        x = self._to_device(x_np)
        y = torch.from_numpy(y_np).to(self.device, non_blocking=True)
        self.model.train()
        with self._autocast():
            logits = self._compiled_forward(x)
        loss = self.loss_fn(logits.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at iteration {self.iteration + 1}; lower the "
                "learning rate or use precision 'float32'"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), int((y_np != IGNORE_INDEX).sum())


def _compile_failed(e: Exception) -> Info:
    first = (str(e).splitlines() or [""])[0][:200]
    return Info(
        f"compiling failed ({type(e).__name__}: {first}); training continues without it",
        level="warning",
    )


def train(image=None, annotation=None, config: Config | None = None, **kwargs) -> Checkpoint:
    """Train to the end without looking at the events; returns the Checkpoint.

    ``train(image, annotation, config, spacing=...)`` or ``train(cases=cases,
    config=config)``; other keyword arguments as for :class:`Trainer`.
    """
    from .events import run_to_completion

    if config is not None and not isinstance(config, Config):
        raise ConfigError("config must be a napari_unetseg Config")
    trainer = Trainer(image, annotation, config, **kwargs)
    try:
        return run_to_completion(trainer.run()).result
    finally:
        trainer.close()
