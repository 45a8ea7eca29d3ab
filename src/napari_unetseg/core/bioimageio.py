"""Export a trained model as a bioimage.io model package (model description format 0.5).

:func:`export_bioimageio` writes one ``.zip`` holding ``rdf.yaml`` and:

* ``weights_torchscript.pt``: the network traced with TorchScript (a zip archive of
  TorchScript code, tensors and pickled constants), loadable without this package;
* ``weights_state_dict.pt``: the same weights as a PyTorch state dict (``torch.save``, a
  pickle), with the architecture given as :class:`UNetFromKwargs` of this package;
* the preprocessing of the model's own normaliser: per-image z-score
  (``zero_mean_unit_variance`` over the spatial axes, per channel) when the model
  normalises each image on its own, else the stored numbers (``clip`` for CT windows and
  percentiles, then ``fixed_zero_mean_unit_variance`` per channel);
* a ``softmax`` over the channel axis as postprocessing (the network gives logits): the
  output is one probability per class, background first;
* a test input and the output expected for it (``.npy``), a README, authors, licence
  (MIT) and citation.

The input axes are ``batch, channel, z, y, x`` (``batch, channel, y, x`` for a 2D network);
each spatial size is a multiple of the network's pooling divisor, at least twice it, so
the traced network never needs padding. bioimageio.spec (and bioimageio.core to test the
package) are optional: ``pip install "napari-unetseg[bioimageio]"``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .config import ModelConfig
from .io.atomic import WriteError, atomic_write
from .model import UNet

CITATION = (
    "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
    "Biomedical Image Segmentation. MICCAI 2015.",
    "https://doi.org/10.1007/978-3-319-24574-4_28",
)


class BioimageioError(ValueError):
    """A model cannot be exported (one line saying why and what to do)."""


class UNetFromKwargs(UNet):
    """The project's :class:`UNet` built from plain keyword arguments (the fields of
    :class:`ModelConfig`), as bioimage.io's ``pytorch_state_dict`` weights need.
    Input (B, C, Z, Y, X) or (B, C, Y, X); output logits of the same spatial size."""

    def __init__(self, **kwargs):
        cfg = ModelConfig()
        for key, value in kwargs.items():
            setattr(cfg, key, value)
        super().__init__(cfg)


def _spec():
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5
    except ImportError as exc:
        raise BioimageioError(
            "exporting to bioimage.io needs bioimageio.spec: "
            'pip install "napari-unetseg[bioimageio]"'
        ) from exc
    return v0_5, save_bioimageio_package


def _model_kwargs(cfg: ModelConfig) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, tuple):
            value = list(value)
        if f.name == "pool" and value is not None:
            value = [[int(k) for k in kernel] for kernel in value]
        out[f.name] = value
    return out


def _test_input(ckpt: Checkpoint, model: UNet, image: np.ndarray | None) -> np.ndarray:
    """A (1, C, *spatial) float32 test input: image cropped to a valid size, or noise."""
    dims, channels = model.spatial_dims, model.in_channels
    divisor = np.asarray(model.divisor)
    if image is None:
        shape = 2 * divisor * np.maximum(1, np.ceil(8 / (2 * divisor)).astype(int))
        rng = np.random.default_rng(0)
        return rng.normal(size=(1, channels, *shape)).astype(np.float32)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == dims:
        image = image[None]
    if image.ndim == dims + 2:  # (C, Z, Y, X) image for a 2D network: the middle slice
        axis = int(ckpt.config.data.slice_axis) + 1
        image = np.take(image, image.shape[axis] // 2, axis=axis)
    if image.ndim != dims + 1 or image.shape[0] != channels:
        raise BioimageioError(
            f"the test image has shape {image.shape}; the model takes {channels} channel(s) "
            f"of {dims}D data: give an image like the training images"
        )
    spatial = np.asarray(image.shape[1:])
    size = (np.minimum(spatial, 64) // divisor) * divisor
    if np.any(size < 2 * divisor):
        raise BioimageioError(
            f"the test image {tuple(spatial)} is smaller than the model's smallest input "
            f"{tuple(2 * divisor)}; give a larger image"
        )
    start = (spatial - size) // 2
    crop = tuple(slice(int(s), int(s + n)) for s, n in zip(start, size))
    index = (slice(None), *crop)
    return np.ascontiguousarray(image[index])[None]


def _preprocessing(v0_5, ckpt: Checkpoint, spatial_ids, channels: int) -> list:
    norm = ckpt.normalizer
    if norm is None or norm.mode == "none":
        return []
    if norm.per_image:
        return [
            v0_5.ZeroMeanUnitVarianceDescr(
                kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=spatial_ids)
            )
        ]
    steps = []
    if norm.clip_low is not None and norm.clip_high is not None:
        lo, hi = min(norm.clip_low), max(norm.clip_high)
        if len(set(norm.clip_low)) > 1 or len(set(norm.clip_high)) > 1:
            raise BioimageioError(
                "the model clips each channel to its own range, which bioimage.io cannot "
                "describe; export a model trained with z-score normalisation"
            )
        steps.append(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=lo, max=hi)))
    steps.append(
        v0_5.FixedZeroMeanUnitVarianceDescr(
            kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                mean=list(norm.offsets), std=list(norm.scales), axis=v0_5.AxisId("channel")
            )
        )
    )
    return steps


def _normalise(ckpt: Checkpoint, x: np.ndarray) -> np.ndarray:
    """Apply the preprocessing as bioimage.io does ((x - mean) / (std + 1e-6)); x (1, C, ...)."""
    norm = ckpt.normalizer
    if norm is None or norm.mode == "none":
        return x
    axes = tuple(range(2, x.ndim))
    if norm.per_image:
        return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + 1e-6)
    if norm.clip_low is not None and norm.clip_high is not None:
        x = np.clip(x, min(norm.clip_low), max(norm.clip_high))
    shape = (1, -1) + (1,) * len(axes)
    mean = np.asarray(norm.offsets, np.float32).reshape(shape)
    std = np.asarray(norm.scales, np.float32).reshape(shape)
    return (x - mean) / (std + np.float32(1e-6))


def _readme(name: str, ckpt: Checkpoint, pre: str) -> str:
    classes = ", ".join(["background", *ckpt.class_names])
    return f"""# {name}

A {ckpt.config.model.spatial_dims}D U-Net trained with napari-unetseg from sparse slice
annotations ({ckpt.task} task, {ckpt.iterations} iterations).

* Input `raw`: {ckpt.config.model.in_channels} channel(s)
  ({", ".join(ckpt.channel_names) or "image"}), float32; each spatial size a multiple of
  the network's divisor and at least twice it.
* Preprocessing: {pre}.
* Output `probabilities`: one channel per class ({classes}) after a softmax over the
  channels; the label of a voxel is the channel with the highest probability.
* Training voxel spacing (z, y, x): {ckpt.spacing or "not recorded"}; resample new images
  to it before prediction.

Weights: `weights_torchscript.pt` (TorchScript, runs without napari-unetseg) and
`weights_state_dict.pt` (PyTorch state dict for `napari_unetseg.core.bioimageio.UNetFromKwargs`).
Both are loaded through Python's pickle machinery: open packages from trusted sources only.
napari-unetseg's own `.safetensors` model files hold no executable data.
"""


def _describe_preprocessing(ckpt: Checkpoint) -> str:
    norm = ckpt.normalizer
    if norm is None or norm.mode == "none":
        return "none (the network takes the raw intensities)"
    if norm.per_image:
        return "z-score per image and channel (zero mean, unit variance over the volume)"
    clip = ""
    if norm.clip_low is not None and norm.clip_high is not None:
        clip = f"clip to [{min(norm.clip_low):g}, {max(norm.clip_high):g}], then "
    return f"{clip}fixed z-score with mean {norm.offsets} and std {norm.scales} per channel"


def export_bioimageio(
    model: str | os.PathLike | Checkpoint,
    out: str | os.PathLike,
    *,
    test_image: np.ndarray | None = None,
    name: str | None = None,
    authors: Sequence[str] = ("napari-unetseg user",),
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bioimage.io model package (``.zip``, format 0.5) for a trained model.

    model: a model file (.safetensors) or a loaded Checkpoint.
    test_image: (C, *spatial) or (*spatial) image like the training images; a centred crop
        (at most 64 voxels per axis) is the package's test input; default random noise.
    authors: author names for the package. Returns the path written (atomically).
    Raises BioimageioError for models bioimage.io cannot describe.
    """
    v0_5, save_package = _spec()
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    out = Path(out)
    if not out.name.lower().endswith(".zip"):
        raise BioimageioError(f"{out}: a bioimage.io package is a .zip file; name it *.zip")
    cfg = ckpt.config.model
    kwargs = _model_kwargs(cfg)
    net = UNetFromKwargs(**kwargs)
    net.load_state_dict(ckpt.state_dict, strict=True)
    net.eval()
    x = _test_input(ckpt, net, test_image)
    with torch.no_grad():
        logits = net(torch.from_numpy(_normalise(ckpt, x).astype(np.float32)))
        y = torch.softmax(logits, dim=1).numpy().astype(np.float32)
    title = name or f"napari-unetseg {ckpt.task} U-Net"
    spatial = ["z", "y", "x"][-cfg.spatial_dims :]
    divisor = dict(zip(spatial, net.divisor))

    with tempfile.TemporaryDirectory(prefix="unetseg-bioimageio-") as tmp_name:
        tmp = Path(tmp_name)
        np.save(tmp / "test_input.npy", x)
        np.save(tmp / "test_output.npy", y)
        with torch.no_grad(), warnings.catch_warnings():
            # The shape checks of UNet.forward become constants: valid for every input
            # size the package allows (multiples of the divisor, no padding needed).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(net, torch.from_numpy(x), check_trace=False)
        traced.save(str(tmp / "weights_torchscript.pt"))
        torch.save(net.state_dict(), tmp / "weights_state_dict.pt")
        (tmp / "README.md").write_text(_readme(title, ckpt, _describe_preprocessing(ckpt)))

        batch = v0_5.BatchAxis()
        in_axes = [
            batch,
            v0_5.ChannelAxis(
                channel_names=[
                    v0_5.Identifier(_identifier(n, f"channel{c}"))
                    for c, n in enumerate(_channel_names(ckpt))
                ]
            ),
        ] + [
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId(a),
                size=v0_5.ParameterizedSize(min=2 * int(divisor[a]), step=int(divisor[a])),
            )
            for a in spatial
        ]
        classes = ["background", *ckpt.class_names]
        if ckpt.task == "instances":
            classes = ["background", "interior", "boundary"]
        out_axes = [
            batch,
            v0_5.ChannelAxis(
                channel_names=[
                    v0_5.Identifier(_identifier(n, f"class{k}")) for k, n in enumerate(classes)
                ]
            ),
        ] + [
            v0_5.SpaceOutputAxis(
                id=v0_5.AxisId(a),
                size=v0_5.SizeReference(tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(a)),
            )
            for a in spatial
        ]
        spatial_ids = [v0_5.AxisId(a) for a in spatial]
        inputs = v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description="image, float32",
            axes=in_axes,
            test_tensor=v0_5.FileDescr(source=tmp / "test_input.npy"),
            preprocessing=_preprocessing(v0_5, ckpt, spatial_ids, cfg.in_channels),
        )
        outputs = v0_5.OutputTensorDescr(
            id=v0_5.TensorId("probabilities"),
            description="class probabilities (softmax over the channels), background first",
            axes=out_axes,
            test_tensor=v0_5.FileDescr(source=tmp / "test_output.npy"),
            postprocessing=[
                v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel")))
            ],
        )
        torch_version = v0_5.Version(torch.__version__.split("+")[0])
        weights = v0_5.WeightsDescr(
            torchscript=v0_5.TorchscriptWeightsDescr(
                source=tmp / "weights_torchscript.pt", pytorch_version=torch_version
            ),
            pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                source=tmp / "weights_state_dict.pt",
                architecture=v0_5.ArchitectureFromLibraryDescr(
                    import_from="napari_unetseg.core.bioimageio",
                    callable=v0_5.Identifier("UNetFromKwargs"),
                    kwargs=kwargs,
                ),
                pytorch_version=torch_version,
            ),
        )
        from .. import __version__

        try:
            descr = v0_5.ModelDescr(
                name=title,
                description=description
                or f"{cfg.spatial_dims}D U-Net for {', '.join(ckpt.class_names)} trained from "
                "sparse slice annotations with napari-unetseg",
                authors=[v0_5.Author(name=a) for a in authors],
                cite=[v0_5.CiteEntry(text=CITATION[0], doi=v0_5.Doi(CITATION[1][16:]))],
                license=v0_5.LicenseId("MIT"),
                documentation=v0_5.FileDescr(source=tmp / "README.md"),
                tags=["segmentation", "unet", f"{cfg.spatial_dims}d", "napari-unetseg"],
                inputs=[inputs],
                outputs=[outputs],
                weights=weights,
                version=v0_5.Version("0.1.0"),
                config={"napari_unetseg": {"version": __version__, "task": ckpt.task}},
            )
        except Exception as exc:
            raise BioimageioError(
                f"cannot describe {out} for bioimage.io: {_reason(exc)}"
            ) from exc

        def write(target: Path) -> None:
            built = save_package(descr, output_path=target)
            if Path(built) != target:
                shutil.move(str(built), target)

        try:
            return atomic_write(out, write, overwrite=overwrite)
        except WriteError:
            raise
        except Exception as exc:
            raise BioimageioError(f"cannot export {out} to bioimage.io: {_reason(exc)}") from exc


def _channel_names(ckpt: Checkpoint) -> list[str]:
    n = int(ckpt.config.model.in_channels)
    names = list(ckpt.channel_names)[:n]
    return names + [f"channel{c}" for c in range(len(names), n)]


def _identifier(name: str, fallback: str) -> str:
    """A bioimage.io identifier (letters, digits, _ ; no leading digit) for a name."""
    text = "".join(ch if ch.isalnum() else "_" for ch in str(name)).strip("_")
    if not text or not text[0].isalpha():
        return fallback
    return text


def _reason(exc: Exception) -> str:
    """One line for a bioimageio.spec failure, with the known pydantic mismatch explained."""
    text = " ".join(str(exc).split())
    if "index_key" in text:
        import pydantic
        from bioimageio.spec import __version__ as spec_version

        return (
            f"bioimageio.spec {spec_version} does not work with pydantic {pydantic.VERSION}; "
            'install pydantic<2.14 (pip install "pydantic<2.14") or a newer bioimageio.spec'
        )
    return text[:300]
