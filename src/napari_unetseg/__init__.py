"""napari-unetseg: train a U-Net from a few annotated slices, in napari or headless.

Importing this package is cheap: it imports neither Qt, napari nor torch. The public
API below is loaded on first use::

    from napari_unetseg import Config, read_volume, sparsify, train, predict, evaluate

    image, meta = read_volume("scan.nii.gz")              # (C, Z, Y, X), geometry
    model = train(image, annotation, Config())            # a Checkpoint
    result = predict(model, image)                        # labels, probabilities, ...
    report = evaluate(result.labels, truth)               # Dice, IoU, ... per class
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: public name -> module of napari_unetseg that defines it
_API = {
    "Config": "core.config",
    "ConfigError": "core.config",
    "Case": "core.cases",
    "read_volume": "core.io",
    "read_labels": "core.io",
    "read_channels": "core.io",
    "write_labels": "core.io",
    "write_image": "core.io",
    "sparsify": "core.annotations",
    "Trainer": "core.training",
    "train": "core.training",
    "predict": "core.api",
    "load_model": "core.api",
    "save_model": "core.checkpoint",
    "evaluate": "core.evaluation",
    "evaluate_cases": "core.evaluation",
    "read_nnunet_dataset": "core.dataset",
    "write_nnunet_dataset": "core.dataset",
    "predict_folder": "core.batch",
    "evaluate_folders": "core.batch",
    "run_to_completion": "core.events",
}
_RENAMED = {"save_model": "save_checkpoint"}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'napari_unetseg' has no attribute {name!r}")
    module = importlib.import_module(f".{_API[name]}", __name__)
    value = getattr(module, _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
