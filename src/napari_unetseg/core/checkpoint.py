"""Model files: one ``.safetensors`` file that describes itself and never runs code.

Layout of a checkpoint file:

* tensors (safetensors): the network weights under ``model.<parameter name>`` and the
  optimizer's tensors (e.g. Adam moments) under ``optim.<parameter index>.<key>``;
* metadata (the safetensors header's string map): ``format = "napari-unetseg"``,
  ``format_version`` and ``description``, a JSON document with the full configuration
  (including the planned patch size and pooling), the intensity normalisation, the voxel
  spacing, the foreground class names, the task, the package version, the number of
  training iterations, the training history and the non-tensor part of the optimizer
  state (hyper-parameters, step counts).

Reading such a file parses JSON and copies raw numbers; nothing is unpickled, so a model
file received from someone else cannot run code. PyTorch ``.pt``/``.pth`` files (pickles)
are refused with a message that says so. Files are written atomically: a crash while
saving never leaves a half-written model under the target name
(:func:`napari_unetseg.core.io.atomic.atomic_write`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import Config, ConfigError
from .io.atomic import write_bytes_atomic

if TYPE_CHECKING:  # pragma: no cover
    from .data import Normalizer
    from .model import UNet

FORMAT = "napari-unetseg"
FORMAT_VERSION = "1"
_MODEL = "model."
_OPTIM = "optim."


class CheckpointError(Exception):
    """A model file cannot be read or written; the message says why and what to do."""


class CheckpointWriteError(CheckpointError, OSError):
    """A model file cannot be written (disk full, read-only folder); also an OSError."""


def _package_version() -> str:
    from .. import __version__

    return str(__version__)


@dataclass
class Checkpoint:
    """A trained model with everything needed to use it on new images.

    Attributes:
        config: the full configuration, with the planned values filled in (patch size,
            pooling, window batch), so the network can be rebuilt exactly.
        state_dict: network weights (CPU tensors).
        normalizer: the intensity normalisation fitted on the training image.
        spacing: voxel spacing of the training image in array order, or ``None``.
        class_names: names of the foreground classes (background excluded).
        task: ``"semantic"`` or ``"instances"``.
        version: package version that wrote the model.
        iterations: optimisation steps done so far (resumed training continues from it).
        optimizer_state: ``torch.optim.Optimizer.state_dict()`` or ``None``.
        history: list of dicts (e.g. validation metrics per iteration).
        settings: the settings as the user gave them (``None`` = automatic kept), apart
            from ``config``, the resolved plan the network was built from.
        channel_names: one name per input channel, in the order the network takes them
            (e.g. "T1", "FLAIR"; file names when nothing better was known).
    """

    config: Config
    state_dict: dict[str, torch.Tensor]
    normalizer: Normalizer | None
    spacing: tuple[float, ...] | None = None
    class_names: list[str] = field(default_factory=lambda: ["foreground"])
    task: str = "semantic"
    version: str = field(default_factory=_package_version)
    iterations: int = 0
    optimizer_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    settings: Config | None = None
    channel_names: list[str] = field(default_factory=list)

    @property
    def num_outputs(self) -> int:
        """Output channels of the network: classes + background, or 3 for instances
        (background, interior, boundary)."""
        return int(self.config.model.num_classes)

    def build_model(self, device: torch.device | str = "cpu") -> UNet:
        """The network with these weights on ``device``, in eval mode, in the memory
        layout that is fastest there (:meth:`~.model.UNet.place`)."""
        from .model import UNet

        model = UNet(self.config.model)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(
                f"the weights in this model file do not fit its own architecture ({first}); "
                "the file is damaged or was edited: retrain it or load another model"
            ) from e
        return model.place(device).eval()


# --------------------------------------------------------------------------- optimizer


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and a JSON-ready remainder."""
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, entries in state.get("state", {}).items():
        plain: dict[str, Any] = {}
        tensor_keys: list[str] = []
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{pid}.{key}"] = value.detach().cpu().contiguous().clone()
                tensor_keys.append(key)
            else:
                plain[key] = value
        plain_state[str(pid)] = {"values": plain, "tensors": tensor_keys}
    return tensors, {"state": plain_state, "param_groups": state.get("param_groups", [])}


def _unflatten_optimizer(desc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid_text, entry in desc.get("state", {}).items():
        pid = int(pid_text)
        values = dict(entry.get("values", {}))
        for key in entry.get("tensors", []):
            name = f"{_OPTIM}{pid}.{key}"
            if name not in tensors:
                raise CheckpointError(f"the optimizer tensor {name!r} is missing from the file")
            values[key] = tensors[name]
        state[pid] = values
    return {"state": state, "param_groups": desc.get("param_groups", [])}


# --------------------------------------------------------------------------- save


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``ckpt`` to ``path`` (a single ``.safetensors`` file), atomically.

    An existing file is replaced. Raises CheckpointWriteError (a CheckpointError and an
    OSError) naming the path and the reason when the file cannot be written; no partial
    file is left behind.
    """
    from safetensors.torch import save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in ckpt.state_dict.items():
        tensors[_MODEL + name] = value.detach().cpu().contiguous().clone()
    optimizer_desc = None
    if ckpt.optimizer_state is not None:
        opt_tensors, optimizer_desc = _flatten_optimizer(ckpt.optimizer_state)
        tensors.update(opt_tensors)
    normalizer = ckpt.normalizer.to_dict() if ckpt.normalizer is not None else None
    description = {
        "config": ckpt.config.to_dict(),
        "normalizer": normalizer,
        "spacing": list(ckpt.spacing) if ckpt.spacing is not None else None,
        "class_names": list(ckpt.class_names),
        "task": ckpt.task,
        "version": ckpt.version,
        "iterations": int(ckpt.iterations),
        "history": ckpt.history,
        "optimizer": optimizer_desc,
        "settings": ckpt.settings.to_dict() if ckpt.settings is not None else None,
        "channel_names": list(ckpt.channel_names),
    }
    try:
        text = json.dumps(description, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the model description cannot be written as JSON: {e}") from e
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "description": text}
    data = save(tensors, metadata=metadata)

    return write_bytes_atomic(path, data, overwrite=True, error=CheckpointWriteError)


# --------------------------------------------------------------------------- load


def _refuse_foreign(path: Path, head: bytes) -> None:
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointError(
            f"{path} is a PyTorch .pt/.pth (zip/pickle) file; napari-unetseg loads only its "
            "own .safetensors model files, because opening a pickle can run arbitrary code. "
            "Train a model with napari-unetseg, or convert the weights to safetensors."
        )
    if head[:1] == b"\x80" and head[1:2] in {bytes([p]) for p in range(2, 6)}:
        raise CheckpointError(
            f"{path} is a Python pickle (e.g. torch.save output); napari-unetseg loads only "
            ".safetensors model files, because opening a pickle can run arbitrary code."
        )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a model file written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, is a pickle/PyTorch file, is not a valid
            safetensors file, or is a safetensors file of another program.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    _refuse_foreign(path, head)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a valid safetensors model file ({type(e).__name__}: {e}); "
            "choose a .safetensors file written by napari-unetseg"
        ) from e
    if metadata.get("format") != FORMAT or "description" not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not a napari-unetseg model (no "
            f"'{FORMAT}' description in its metadata)"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses model-file format {metadata.get('format_version')!r}; this "
            f"version of napari-unetseg reads format {FORMAT_VERSION!r}; update napari-unetseg"
        )
    try:
        desc = json.loads(metadata["description"])
        config = Config.from_dict(desc["config"]).validate()
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path} has a damaged model description: {e}") from e

    normalizer = None
    if desc.get("normalizer") is not None:
        from .data import Normalizer

        try:
            normalizer = Normalizer.from_dict(desc["normalizer"])
        except Exception as e:
            raise CheckpointError(f"{path} has a damaged normalisation record: {e}") from e
    state_dict = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    optimizer_state = None
    if desc.get("optimizer") is not None:
        optimizer_state = _unflatten_optimizer(desc["optimizer"], tensors)
    spacing = desc.get("spacing")
    return Checkpoint(
        config=config,
        state_dict=state_dict,
        normalizer=normalizer,
        spacing=tuple(float(s) for s in spacing) if spacing is not None else None,
        class_names=[str(n) for n in desc.get("class_names", [])],
        task=str(desc.get("task", "semantic")),
        version=str(desc.get("version", "unknown")),
        iterations=int(desc.get("iterations", 0)),
        optimizer_state=optimizer_state,
        history=list(desc.get("history", [])),
        settings=_settings(desc.get("settings")),
        channel_names=[str(n) for n in desc.get("channel_names", [])],
    )


def _settings(d: Any) -> Config | None:
    """The stored user settings, or None (older files, or settings this version cannot
    read: they only document the run, the resolved config rebuilds the network)."""
    if not isinstance(d, dict):
        return None
    try:
        return Config.from_dict(d)
    except ValueError:
        return None
