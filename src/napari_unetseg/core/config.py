"""One configuration schema shared by the napari widgets, the command line and checkpoints.

Every setting has a default that works on the built-in sample. ``None`` means "choose
automatically" (see :mod:`napari_unetseg.core.planning`); the chosen values are written
back into the config that is stored with the model, so a checkpoint always says what was
actually used.

A JSON file can carry any subset of the settings::

    {"train": {"iterations": 300}, "model": {"base_width": 8}}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

TASKS = ("semantic", "instances")
NORMALIZATIONS = ("auto", "zscore", "ct", "percentile", "none")
NORMS = ("instance", "batch", "group")


class ConfigError(ValueError):
    """A setting has a value the engine cannot use; the message says which and why."""


@dataclass
class DataConfig:
    """How images are normalised and how training patches are drawn."""

    #: ``auto`` picks ``ct`` for data that looks like Hounsfield units, ``percentile`` for
    #: integer microscopy data, ``zscore`` otherwise.
    normalization: str = "auto"
    #: Intensity window for ``ct`` (Hounsfield units), mapped to [-1, 1].
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    #: Lower/upper percentile for ``percentile`` normalisation.
    percentiles: tuple[float, float] = (1.0, 99.8)
    #: Patch size in voxels, (Z, Y, X) or (Y, X); ``None`` = planned automatically.
    patch_size: tuple[int, ...] | None = None
    #: Share of patches centred on a foreground (class >= 2) annotated voxel.
    foreground_fraction: float = 0.5
    #: Random flips, 90-degree in-plane rotations, intensity scale/shift and gamma.
    augment: bool = True
    #: Share of annotated slices held out for validation (0 = no validation split).
    validation_fraction: float = 0.15
    #: Names of the cases held out for validation when 3 or more cases are annotated;
    #: ``None`` = about ``validation_fraction`` of the cases (at least 1), chosen with the
    #: seed. With fewer cases, annotated slices of each case are held out instead.
    validation_cases: list[str] | None = None
    #: Voxel spacing (array order) the cases are resampled to for training; ``None`` = the
    #: median spacing when the cases' spacings differ by more than 10 % on some axis, else
    #: each case keeps its own grid. The value used is stored with the model.
    target_spacing: tuple[float, ...] | None = None
    #: Folder for the normalised images as ``.npy`` files read back memory-mapped;
    #: ``None`` = a temporary folder, used only when the data would fill more than a
    #: quarter of the available memory (removed when training ends).
    cache_dir: str | None = None
    #: Axis of 3D cases along which a 2D network (``model.spatial_dims`` 2) takes its
    #: slices (0 = Z).
    slice_axis: int = 0
    #: Spatial axes of the training images (3 with ``model.spatial_dims`` 2: the network
    #: works on slices along ``slice_axis``; prediction stacks the slices). Set by training.
    image_dims: int | None = None


@dataclass
class ModelConfig:
    """U-Net architecture. ``num_classes`` counts the background."""

    spatial_dims: int = 3
    in_channels: int = 1
    #: Output channels of the softmax, background included (classes + 1).
    num_classes: int = 2
    #: Feature maps at the first level; doubled at every level below. 8 learns the
    #: built-in sample to validation Dice 0.9 in under a minute on 2 CPU cores; on a GPU
    #: 16-32 are affordable (``None`` lets the planner choose per device).
    base_width: int | None = 8
    #: Number of resolution levels (depth - 1 poolings).
    depth: int = 4
    norm: str = "instance"
    #: Pooling kernel per level transition, e.g. [[1, 2, 2], [2, 2, 2], ...];
    #: ``None`` = planned from the voxel spacing.
    pool: list[list[int]] | None = None

    def validate(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, not {self.spatial_dims}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, not {self.norm!r}")
        if self.depth < 1:
            raise ConfigError("depth must be at least 1")
        if self.num_classes < 2:
            raise ConfigError("num_classes counts the background and must be at least 2")
        if self.pool is not None and len(self.pool) != self.depth - 1:
            raise ConfigError(
                f"pool lists {len(self.pool)} kernels but depth {self.depth} needs "
                f"{self.depth - 1}"
            )


@dataclass
class TrainConfig:
    """The optimisation loop."""

    task: str = "semantic"
    #: Length of the schedule (warm-up, then cosine decay over all iterations). On the
    #: sample with 10 % of slices on 2 CPU cores, 300 reached validation Dice 0.909 at
    #: iteration 150 (48 s) and whole-volume Dice 0.906; a 150-iteration schedule, whose
    #: learning rate has decayed to zero by then, ended at 0.86 / 0.85.
    iterations: int = 300
    batch_size: int = 2
    #: Peak AdamW learning rate (after a short warm-up, then cosine decay). 1e-2 reached
    #: validation Dice 0.9 on the sample in half the steps that 3e-3 needed.
    learning_rate: float = 1e-2
    weight_decay: float = 1e-5
    #: Weights of the two loss terms (cross-entropy with ignore index, soft Dice).
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    #: Validate every this many iterations (and at the end).
    validate_every: int = 50
    #: Send a preview of the requested slice at most every this many seconds.
    preview_seconds: float = 3.0
    #: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    device: str = "auto"
    #: Mixed precision: ``auto`` = bfloat16/float16 autocast where it is faster.
    precision: str = "auto"
    seed: int = 0
    #: CPU threads; ``None`` = the number of physical cores.
    threads: int | None = None
    #: Compile the training step with ``torch.compile``. On 2 CPU cores steps were 14 %
    #: faster, but the first run took 47 s to compile (later runs reuse PyTorch's
    #: on-disk cache): worth it for long runs, not for a first try.
    compile: bool = False

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, not {self.task!r}")
        if self.iterations < 1:
            raise ConfigError("iterations must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate must be positive")


@dataclass
class InferConfig:
    """Sliding-window prediction."""

    #: Fraction of the window shared with its neighbour, in [0, 1).
    overlap: float = 0.25
    #: Windows per forward pass; ``None`` = planned from the memory available.
    window_batch: int | None = None
    #: Average over flips along every spatial axis (2**dims forward passes).
    tta: bool = False
    #: ``gaussian`` or ``constant`` blending of overlapping windows.
    blend: str = "gaussian"
    device: str = "auto"
    precision: str = "auto"
    #: Remove objects (instance task) or connected pieces of a class (semantic task)
    #: with fewer voxels than this; 0 keeps everything. Set it below your smallest
    #: object: on the built-in sample (objects of 311 to 4932 voxels) 100 removes the
    #: false-positive specks of an under-trained model.
    min_size: int = 0
    #: Instance task: a voxel seeds an object where the smoothed
    #: ``p_interior - p_boundary`` exceeds this (higher splits touching objects more).
    interior_threshold: float = 0.8

    def validate(self) -> None:
        if self.min_size < 0:
            raise ConfigError(f"min_size must be 0 or more voxels, not {self.min_size}")
        if not -1.0 < self.interior_threshold < 1.0:
            raise ConfigError(
                f"interior_threshold must lie in (-1, 1), not {self.interior_threshold}"
            )
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), not {self.overlap}")
        if self.blend not in ("gaussian", "constant"):
            raise ConfigError(f"blend must be 'gaussian' or 'constant', not {self.blend!r}")
        if self.window_batch is not None and self.window_batch < 1:
            raise ConfigError("window_batch must be at least 1")


@dataclass
class Config:
    """All settings of a run. ``class_names`` lists the foreground classes only."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    class_names: list[str] = field(default_factory=lambda: ["foreground"])

    def validate(self) -> Config:
        if self.data.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization must be one of {NORMALIZATIONS}, not {self.data.normalization!r}"
            )
        if not 0.0 <= self.data.foreground_fraction <= 1.0:
            raise ConfigError("foreground_fraction must be in [0, 1]")
        if not 0.0 <= self.data.validation_fraction < 1.0:
            raise ConfigError("validation_fraction must be in [0, 1)")
        self.model.validate()
        self.train.validate()
        self.infer.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Build a config from a (possibly partial) dict; unknown keys are an error."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        cfg = cls()
        for section in ("data", "model", "train", "infer"):
            if section in d:
                setattr(cfg, section, _update(getattr(cfg, section), d[section], section))
        if "class_names" in d:
            cfg.class_names = [str(n) for n in d["class_names"]]
        return cfg

    @classmethod
    def from_json(cls, text: str) -> Config:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from e

    @classmethod
    def load(cls, path: str | Path) -> Config:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return cls.from_json(path.read_text())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    def copy(self) -> Config:
        return Config.from_dict(self.to_dict())


def _plain(obj: Any) -> Any:
    """Tuples -> lists so that the dict is JSON-ready and round-trips unchanged."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _update(instance: Any, values: dict[str, Any], section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    known = {f.name: f for f in fields(instance)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in {section!r}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in values.items():
        default = getattr(instance, name)
        if isinstance(default, tuple) or (name == "patch_size" and value is not None):
            value = tuple(value)
        kwargs[name] = value
    return dataclasses.replace(instance, **kwargs)
