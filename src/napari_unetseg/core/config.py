"""The settings schema: every setting declared once, shared by the CLI, the widgets and
the model files.

Each setting is a dataclass field declared with :func:`setting`: its type (the field's
annotation), default, bounds, choices and help text live in that one declaration. From
it come the ``unetseg`` command-line flags (:mod:`napari_unetseg.cli`), the napari
settings forms (magicgui), type checking of JSON files, and the reference table in
``docs/settings.md`` (:func:`settings_markdown`).

``None`` means "choose automatically" (see :mod:`napari_unetseg.core.planning`). A model
file stores two configs: the *settings* the user gave (``None`` kept) and the *resolved*
config the network was built from (every automatic value filled in).

A JSON file can carry any subset of the settings::

    {"train": {"iterations": 300}, "model": {"base_width": 8}}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .schema import (
    SECTIONS,
    ConfigError,
    Setting,
    _plain,
    _update,
    get_value,
    iter_values,
    set_value,
    setting,
    settings,
    settings_markdown,
    spec_of,
)

TASKS = ("semantic", "instances")
NORMALIZATIONS = ("auto", "zscore", "ct", "percentile", "none")
NORMS = ("instance", "batch", "group")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")

__all__ = [
    "NORMALIZATIONS",
    "NORMS",
    "PRECISIONS",
    "SECTIONS",
    "TASKS",
    "Config",
    "ConfigError",
    "DataConfig",
    "InferConfig",
    "ModelConfig",
    "Setting",
    "TrainConfig",
    "get_value",
    "iter_values",
    "set_value",
    "settings",
    "settings_markdown",
    "spec_of",
]


class _Section:
    """Shared by the four sections: type and bounds checks of the section's settings."""

    SECTION: ClassVar[str] = ""

    def validate(self) -> Any:
        """Check every setting of this section; returns ``self``."""
        for s in settings(self.SECTION):
            s.check(getattr(self, s.name))
        return self


@dataclass
class DataConfig(_Section):
    """How images are normalised and how training patches are drawn."""

    SECTION: ClassVar[str] = "data"

    normalization: str = setting(
        "auto",
        "intensity normalisation: auto picks ct for Hounsfield-like data, percentile for "
        "integer microscopy data, zscore otherwise",
        choices=NORMALIZATIONS,
    )
    ct_window: tuple[float, float] = setting(
        (-1000.0, 1000.0), "ct normalisation: intensity window in Hounsfield units"
    )
    percentiles: tuple[float, float] = setting(
        (1.0, 99.8), "percentile normalisation: lower and upper percentile per channel"
    )
    patch_size: tuple[int, ...] | None = setting(
        None,
        "training patch in voxels, (Z Y X) or (Y X); empty = planned from the image",
        flag="--patch",
    )
    foreground_fraction: float = setting(
        0.5, "share of patches centred on a painted class voxel", low=0.0, high=1.0
    )
    augment: bool = setting(
        True, "random flips, in-plane rotations, intensity scale/shift and gamma"
    )
    validation_fraction: float = setting(
        0.15,
        "share of the annotation (slices, or whole cases with 3+ cases) held out for "
        "validation; 0 = none",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    validation_cases: list[str] | None = setting(
        None,
        "names of the cases held out for validation when 3 or more cases are annotated; "
        "empty = about validation_fraction of the cases (at least 1), chosen with the seed",
    )
    target_spacing: tuple[float, ...] | None = setting(
        None,
        "voxel spacing (array order) the cases are resampled to for training; empty = the "
        "median spacing when the cases' spacings differ by more than 10 %, else each case "
        "keeps its own grid",
        low=1e-6,
    )
    cache_dir: str | None = setting(
        None,
        "folder for the normalised images, read back memory-mapped; empty = a temporary "
        "folder, used only when the data would fill more than a quarter of the memory",
        gui=False,
    )
    slice_axis: int = setting(
        0, "axis of volumes along which a 2D network takes its slices (0 = Z)", choices=(0, 1, 2)
    )
    image_dims: int | None = setting(
        None,
        "spatial axes of the training images (set by training)",
        choices=(2, 3),
        cli=False,
        gui=False,
    )


@dataclass
class ModelConfig(_Section):
    """U-Net architecture. ``num_classes`` counts the background."""

    SECTION: ClassVar[str] = "model"

    def validate(self) -> ModelConfig:
        super().validate()
        if self.pool is not None and len(self.pool) != self.depth - 1:
            raise ConfigError(
                f"model.pool lists {len(self.pool)} kernels but depth {self.depth} needs "
                f"{self.depth - 1}"
            )
        return self

    spatial_dims: int = setting(
        3,
        "network for volumes: 3 = a 3D U-Net, 2 = a 2D U-Net on the slices along "
        "data.slice_axis (2D images and one-slice volumes always get a 2D network)",
        choices=(2, 3),
        flag="--dims",
    )
    in_channels: int = setting(
        1, "image channels (set from the data)", low=1, cli=False, gui=False
    )
    num_classes: int = setting(
        2,
        "network outputs, background included (set from the annotation)",
        low=2,
        cli=False,
        gui=False,
    )
    base_width: int | None = setting(
        8,
        "feature maps at the first level, doubled per level (8 learns the sample to "
        "Dice 0.9 in under a minute on 2 CPU cores; empty = planned per device)",
        low=1,
        high=512,
    )
    depth: int = setting(4, "resolution levels (depth - 1 poolings)", low=1, high=8)
    norm: str = setting("instance", "normalisation layer", choices=NORMS)
    pool: list[list[int]] | None = setting(
        None,
        "pooling kernel per level transition, e.g. [[1,2,2],[2,2,2]]; empty = planned "
        "from the voxel spacing",
        cli=False,
        gui=False,
    )


@dataclass
class TrainConfig(_Section):
    """The optimisation loop."""

    SECTION: ClassVar[str] = "train"

    task: str = setting(
        "semantic",
        "semantic: one label per class; instances: objects split by a boundary class",
        choices=TASKS,
    )
    iterations: int = setting(
        300,
        "training steps (warm-up, then cosine decay over all of them); 300 reach "
        "validation Dice 0.9 on the sample",
        low=1,
    )
    batch_size: int = setting(2, "patches per step", low=1)
    learning_rate: float = setting(1e-2, "peak AdamW learning rate", low=0.0, flag="--lr")
    finetune_lr_factor: float = setting(
        0.2,
        "continuing or fine-tuning a model: peak learning rate = learning rate x this "
        "(the full peak undoes what was learned; 1 = no change)",
        low=0.0,
        high=1.0,
    )
    weight_decay: float = setting(1e-5, "AdamW weight decay", low=0.0)
    ce_weight: float = setting(1.0, "weight of the cross-entropy term", low=0.0)
    dice_weight: float = setting(1.0, "weight of the soft Dice term", low=0.0)
    validate_every: int = setting(50, "validate every this many steps", low=1)
    preview_seconds: float = setting(
        3.0, "at most one live preview per this many seconds", low=0.0, cli=False
    )
    device: str = setting("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    precision: str = setting(
        "auto",
        "auto = bfloat16/float16 where the device computes it natively, else float32",
        choices=PRECISIONS,
    )
    seed: int = setting(0, "random seed of sampling, augmentation and initial weights")
    threads: int | None = setting(None, "CPU threads; empty = the number of physical cores", low=1)
    compile: bool = setting(
        False,
        "compile the training step with torch.compile (faster steps after a slow first "
        "one: worth it for long runs)",
    )
    calibrate: bool = setting(
        True,
        "instance task: after training, choose the seed threshold and smallest object "
        "size that best reproduce the annotated objects and store them in the model "
        "(unless infer.interior_threshold or infer.min_size were set)",
    )


@dataclass
class InferConfig(_Section):
    """Sliding-window prediction and post-processing."""

    SECTION: ClassVar[str] = "infer"

    overlap: float = setting(
        0.25,
        "fraction of a window shared with its neighbour",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    window_batch: int | None = setting(
        None, "windows per forward pass; empty = planned from the memory available", low=1
    )
    tta: bool = setting(False, "average over flips along every axis (slower)")
    grow_windows: bool = setting(
        True,
        "3D: let a window grow one step along one axis where that computes a quarter fewer "
        "voxels (about 25 % faster there; 0.003 lower Dice on average on a fine MNI152 "
        "task, the same on coarse ones); off: the patch with added context everywhere",
    )
    blend: str = setting(
        "gaussian", "blending of overlapping windows", choices=("gaussian", "constant")
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = setting("auto", "as for training", choices=PRECISIONS)
    threshold: float | None = setting(
        None,
        "semantic task: a voxel is foreground where 1 - p(background) exceeds this; "
        "empty = the most probable class",
        low=0.0,
        high=1.0,
    )
    min_size: int = setting(
        0,
        "remove objects or class pieces with fewer voxels (set it below your smallest "
        "object); 0 keeps everything",
        low=0,
    )
    interior_threshold: float = setting(
        0.5,
        "instance interiors where the smoothed p_interior - p_boundary exceeds this; one "
        "seed per peak of the interior's distance map (0.5 beat 0.8 on real 2D and 3D "
        "nuclei and on the sample)",
        low=-1.0,
        high=1.0,
        high_open=True,
    )


@dataclass
class Config:
    """All settings of a run. ``class_names`` lists the foreground classes only."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    class_names: list[str] = setting(
        factory=lambda: ["foreground"], help="names of the foreground classes"
    )

    def validate(self) -> Config:
        """Check every setting's type and bounds; returns ``self``."""
        for spec, value in iter_values(self):
            spec.check(value)
        m = self.model
        if m.pool is not None and len(m.pool) != m.depth - 1:
            raise ConfigError(
                f"model.pool lists {len(m.pool)} kernels but depth {m.depth} needs {m.depth - 1}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Build a config from a (possibly partial) dict; unknown keys and values of the
        wrong type are a ConfigError that names the setting."""
        if not isinstance(d, dict):
            raise ConfigError('a config must be a JSON object such as {"train": {...}}')
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown config section(s): {', '.join(sorted(unknown))}; known: "
                f"{', '.join(f.name for f in fields(cls))}"
            )
        cfg = cls()
        for section in SECTIONS:
            if section in d:
                setattr(cfg, section, _update(getattr(cfg, section), d[section], section))
        if "class_names" in d:
            cfg.class_names = spec_of("class_names").coerce(d["class_names"])
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
        try:
            return cls.from_json(path.read_text())
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def save(self, path: str | Path, overwrite: bool = True) -> None:
        path = Path(path)
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} already exists; choose another path")
        path.write_text(self.to_json())

    def copy(self) -> Config:
        return Config.from_dict(self.to_dict())
