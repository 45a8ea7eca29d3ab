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

import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from . import ddp
from .cases import Case, as_cases
from .checkpoint import Checkpoint, save_checkpoint
from .config import Config, ConfigError, InferConfig
from .events import CancelToken, Done, Event, Info, Step
from .monitoring import VALIDATION_VOXELS, Monitoring, prepare_validation  # noqa: F401
from .training_setup import INSTANCE_CLASS_NAMES, setup_run  # noqa: F401
from .training_step import Optimisation

#: Share of the run used for the linear learning-rate warm-up (at most 50 steps).
WARMUP_FRACTION = 0.05
#: The learning rate decays (cosine) to this fraction of its peak.
FINAL_LR_FRACTION = 0.02


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier for 0-based ``step`` of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * cosine


class Trainer(Monitoring, Optimisation):
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
        from .sampling import DatasetSampler

        if cases is not None and spacing is not None:
            raise ValueError("give the spacing of each case in its Case, not as spacing=")
        if image is not None and annotation is None and cases is None:
            raise ValueError("give the annotation with the image (0 = not annotated)")
        config = config if config is not None else Config()
        if not isinstance(config, Config):
            raise ConfigError("config must be a napari_unetseg Config")
        all_cases = as_cases(image, annotation, cases=cases, spacing=spacing)
        self.cancel = cancel if cancel is not None else CancelToken()
        self.settings = config.copy()  # as given: "automatic" stays None
        names = next((list(c.channel_names) for c in all_cases if c.channel_names), [])
        if not names:
            meta = getattr(all_cases[0], "meta", None)
            names = list(getattr(meta, "channel_names", None) or [])
        self.channel_names = names
        self._cases = list(all_cases)  # raw cases, for the instance calibration
        self.info: list[Info] = []

        # ---- cases -> classes, dimensions, spacing, normalisation, plan, data
        setup = setup_run(all_cases, config, resume=resume, own_validation=validation is not None)
        cfg = setup.config
        self.task = setup.task
        self.metric_names = setup.metric_names
        self.class_names = setup.class_names
        self.slice_axis = setup.slice_axis
        self.normalizer = setup.normalizer
        self.device, self.amp_dtype = setup.device, setup.amp_dtype
        self.spacing = setup.spacing
        self.plan = setup.plan
        self.config = cfg
        self.patch_size = tuple(int(p) for p in setup.plan.patch_size)
        self.data = setup.data
        self._finalizer = weakref.finalize(self, self.data.store.close)
        val_text = self.data.validation_text
        self._val_items = self.data.val
        if validation is not None:
            self._val_items = [prepare_validation(validation, cfg, self.task, self.normalizer)]
            val_text = "validation on the given densely labelled volume"
        seed = int(cfg.train.seed)
        # under torchrun: the same plan on every rank, a patch per rank at least
        ddp.check_same((*self.patch_size, cfg.train.batch_size), "patch size and batch size")
        ddp.check_batch(cfg.train.batch_size)
        self.sampler = DatasetSampler(
            [img for img, _ in self.data.train],
            [tgt for _, tgt in self.data.train],
            self.patch_size,
            foreground_fraction=cfg.data.foreground_fraction,
            augment=cfg.data.augment,
            seed=ddp.rank_seed(seed),  # each rank its own patches
            slice_axis=self.slice_axis,
        )
        self.image = self.data.train[0][0]  # the case previews show
        validates = self._val_items and ddp.is_main()  # rank 0 alone validates
        self._val_crops = self._validation_crops(seed) if validates else []

        # ---- model, optimizer, loss
        self._build_network(resume)
        self.iteration = int(resume.iterations) if resume is not None else 0
        self.history: list[dict] = list(resume.history) if resume is not None else []
        self.resumed = resume is not None
        self._preview_lock = threading.Lock()
        self._preview_request: tuple[int, int] | None = None
        self._ran = False

        precision = "float32" if self.amp_dtype is None else str(self.amp_dtype)[6:]
        n_ann, n_all = self.data.annotated_voxels, self.data.total_voxels
        where = "the image" if setup.cases == 1 else f"{setup.cases} cases"
        norm = f"{self.normalizer.mode} normalisation"
        norm += " (per case)" if self.normalizer.per_image else ""
        if self.slice_axis is not None:
            norm += f"; 2D network on the slices along axis {'ZYX'[self.slice_axis]}"
        self.info = [
            Info(f"training on {setup.device_text}, {precision}"),
            Info(self.plan.describe()),
            Info(
                f"{n_ann} annotated voxels ({n_ann / max(1, n_all):.1%} of {where}), "
                f"{norm}; {val_text}"
            ),
            *setup.notes,
        ]
        if ddp.active():
            self.info.append(
                Info(f"{ddp.describe()}, {cfg.train.batch_size} patches per step in all")
            )
        if resume is not None:
            self.info.append(Info(f"continuing from iteration {self.iteration}"))
        if cfg.train.compile:
            self.info.append(
                Info("compiling the network (torch.compile): the first step takes a while")
            )

    # ------------------------------------------------------------------ public API

    def set_preview(self, axis: int, index: int) -> None:
        """Ask for previews of slice ``index`` along ``axis`` (thread-safe)."""
        image = self._open_image()
        ndim = image.ndim - 1
        if not -ndim <= int(axis) < ndim:
            raise ValueError(f"preview axis {axis} does not exist in a {ndim}D image")
        axis = int(axis) % ndim
        size = image.shape[1 + axis]
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
        # a continued run (already lowered by train.finetune_lr_factor) warms up briefly,
        # so that its first steps do not undo what the model has learned
        continued = self.resumed or self._ran
        warmup = min(10 if continued else 50, int(WARMUP_FRACTION * n))
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
            lr = cfg.learning_rate * _lr_factor(step, n, warmup) * self.guard.lr_scale
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
            while self.guard.notes:  # a non-finite step was skipped
                yield self.guard.notes.pop(0)
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
        yield from self._calibrate()
        yield Done(result=self.checkpoint(), cancelled=False, message=message)

    def _calibrate(self) -> Iterator[Event]:
        """Instance task: store the post-processing settings that best reproduce the
        annotated objects in ``config.infer`` (see :mod:`.calibrate`)."""
        if self.task != "instances" or not self.config.train.calibrate or not ddp.is_main():
            return  # (with several ranks, rank 0 alone calibrates: it alone saves)
        given, default = self.settings.infer, InferConfig()
        if (given.interior_threshold, given.min_size) != (
            default.interior_threshold,
            default.min_size,
        ):
            yield Info("instance settings kept as given (no calibration)")
            return
        from .calibrate import calibrate_model

        yield Info("choosing the instance settings from the annotated objects...")
        result = calibrate_model(self.checkpoint(), self._cases, cancel=self.cancel)
        if result is None:
            return
        if not result["calibrated"]:
            yield Info(
                f"instance settings left at their defaults: {result['n_objects']} complete "
                "annotated objects, too few to choose from"
            )
            return
        self.config.infer.interior_threshold = float(result["interior_threshold"])
        self.config.infer.min_size = int(result["min_size"])
        yield Info(
            f"instance settings from {result['n_objects']} annotated objects: seed "
            f"threshold {result['interior_threshold']:g}, smallest object "
            f"{result['min_size']} voxels (F1 {result['f1']:.3f} on the annotation, "
            f"{result['default_f1']:.3f} with the defaults)"
        )

    def close(self) -> None:
        """Remove the temporary data cache (if one was made). Also done when the Trainer
        is garbage-collected or Python exits; the Trainer cannot train after it."""
        self.sampler = None
        self.image = None
        self._cases = []
        self._val_items = []
        self._finalizer()

    def save(self, path: str | Path) -> Path:
        """Write the current model to ``path`` (a ``.safetensors`` file)."""
        return save_checkpoint(self.checkpoint(), path)


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
