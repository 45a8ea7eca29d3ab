"""Whole jobs from files to files, with the rules that protect the user's work.

The command line is a thin parser over these functions; a script can call them too.

* Outputs are checked before any work starts (:mod:`.outputs`): never an input, never
  twice the same file, replaced only with ``overwrite``, folder writable.
* A training run interrupted before its first step never replaces an existing model.
* A model whose own path fails at the end (disk full, folder gone) is saved to a
  fallback path, and the message says where.
* Under torchrun (:mod:`.ddp`) the ranks train together; rank 0 alone reports progress
  and saves the model, the other ranks return an empty message.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .outputs import OutputError, check_model_path, check_outputs, fallback_path
from .progress import TerminalProgress, drain


def check_same_geometry(
    image_meta: Any, labels_meta: Any, labels_path: Any, what: str = "the image"
) -> None:
    """Refuse labels whose voxel grid differs from the image's (or the reference's):
    the same shape with another affine means the voxels do not correspond."""
    a, b = getattr(image_meta, "affine", None), getattr(labels_meta, "affine", None)
    if a is None or b is None:
        return
    if not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-3):
        raise ValueError(
            f"{labels_path} has another geometry (affine) than {what}: it was made for "
            "another scan or resampled; use labels in the scan's own grid"
        )


def save_model(ckpt: Any, path: str | Path, *, overwrite: bool) -> tuple[Path, str]:
    """Save a checkpoint to ``path``; if that fails (disk full, read-only), save to a
    fallback path instead. Returns (path written, message for the user)."""
    from .checkpoint import save_checkpoint

    path = Path(path)
    try:
        if path.exists() and not overwrite:
            raise OutputError(f"{path} appeared while training; not replacing it")
        save_checkpoint(ckpt, path)
        return path, f"saved model to {path}"
    except (OSError, OutputError) as first:
        other = fallback_path(path)
        save_checkpoint(ckpt, other)
        reason = getattr(first, "strerror", None) or str(first)
        return other, f"could not write {path} ({reason}); the model was saved to {other}"


def train_to_file(
    *,
    out: str | Path,
    images: Sequence[str | Path],
    labels: str | Path,
    config: Config,
    resume: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> tuple[Path | None, str]:
    """Train on image file(s) (one per channel) and an annotation file; save the model.

    Returns:
        (path written or None when nothing was saved, a one-line message).
    """
    from .cases import Case
    from .checkpoint import load_checkpoint
    from .io import read_channels, read_labels

    check_model_path(out)
    check_outputs([out], [*images, labels, resume], overwrite=overwrite)
    image, meta = read_channels(images)
    annotation, ann_meta = read_labels(labels)
    check_same_geometry(meta, ann_meta, labels)
    ckpt = load_checkpoint(resume) if resume else None
    case = Case(
        name=Path(labels).name,
        image=image,
        annotation=annotation,
        spacing=meta.spacing,
        meta=meta,
        channel_names=list(meta.channel_names),
    )
    return _train_and_save([case], config, ckpt, out, overwrite, quiet)


def train_dataset_to_file(
    *,
    out: str | Path,
    dataset: str | Path,
    config: Config,
    resume: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> tuple[Path | None, str]:
    """Train one model on an nnU-Net raw dataset folder (``dataset.json``, ``imagesTr``,
    ``labelsTr``; unannotated voxels carry the ignore label). Cases are loaded one at a
    time while the training data is prepared. Class names come from ``dataset.json``
    unless the config names them.

    Returns:
        (path written or None when nothing was saved, a one-line message).
    """
    from .checkpoint import load_checkpoint
    from .dataset import read_nnunet_dataset

    check_model_path(out)
    check_outputs([out], [dataset, resume], overwrite=overwrite)
    info, cases = read_nnunet_dataset(dataset, load=False)
    if config.class_names == Config().class_names and info.class_names:
        config.class_names = list(info.class_names)
    ckpt = load_checkpoint(resume) if resume else None
    return _train_and_save(cases, config, ckpt, out, overwrite, quiet)


def _train_and_save(cases, config, resume, out, overwrite, quiet) -> tuple[Path | None, str]:
    from . import ddp

    with ddp.session():
        path, message = _train_and_save_rank(cases, config, resume, out, overwrite, quiet)
        ddp.barrier()  # the other ranks end when rank 0 has saved
    return path, message


def _train_and_save_rank(cases, config, resume, out, overwrite, quiet):
    from . import ddp
    from .events import CancelToken, run_to_completion
    from .training import Trainer

    main = ddp.is_main()
    quiet = quiet or not main
    cancel = CancelToken()
    trainer = Trainer(cases=cases, config=config, resume=resume, cancel=cancel)
    start = trainer.iteration
    t0 = time.perf_counter()
    progress = TerminalProgress("training", quiet=quiet)
    try:
        done = run_to_completion(trainer.run(), progress)
    except KeyboardInterrupt:
        cancel.cancel()
        progress.close()
        if trainer.iteration == start or not main:
            return None, "" if not main else "interrupted before the first step: nothing was saved"
        path, msg = save_model(trainer.checkpoint(), out, overwrite=overwrite)
        return path, f"interrupted after {trainer.iteration} iterations: {msg}"
    finally:
        progress.close()
    if not main:
        return Path(out), ""
    path, msg = save_model(done.result, out, overwrite=overwrite)
    return path, f"{msg} after {time.perf_counter() - t0:.1f} s"


def predict_to_files(
    *,
    model: str | Path,
    images: Sequence[str | Path],
    out: str | Path,
    probabilities: str | Path | None = None,
    boundaries: str | Path | None = None,
    instances: str | Path | None = None,
    settings: Callable[[Config], Config] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    uncertainty: str | Path | None = None,
) -> list[Path]:
    """Predict image file(s) (one per channel) with a model file; write labels (and
    optionally probabilities, boundaries, instances, the per-voxel uncertainty of
    :func:`~.suggest.uncertainty_map`) in the source geometry.

    Args:
        settings: called with the model's stored config to change prediction settings
            (e.g. the command-line flags); returns the config to use.

    Returns:
        The paths written, labels first.
    """
    from .channel_match import order_channels
    from .checkpoint import load_checkpoint
    from .events import Info
    from .inference import predict
    from .io import check_labels_target, read_channels, write_image, write_labels

    outs = [out, probabilities, boundaries, instances, uncertainty]
    check_outputs(outs, [model, *images], overwrite=overwrite)
    ckpt = load_checkpoint(model)
    cfg = ckpt.config.copy()
    if settings is not None:
        cfg = settings(cfg)
    if (boundaries or instances) and ckpt.task != "instances":
        raise ValueError(
            f"boundaries and instances need a model trained for instances; {model} is {ckpt.task}"
        )
    image, meta = read_channels(images)
    check_labels_target(out, meta)
    image, match = order_channels(image, ckpt.channel_names, meta.channel_names)
    notes = [Info(str(n)) for n in meta.extra.get("notes", [])]
    if match.message:
        notes.append(Info(match.message, "warning" if match.warning else "info"))
    keep = probabilities is not None or uncertainty is not None
    pred = drain(
        itertools.chain(
            notes,
            predict(ckpt, image, cfg.infer, spacing=meta.spacing, keep_probabilities=keep),
        ),
        "predicting",
        quiet,
    ).result
    names = ckpt.class_names
    written = [write_labels(pred.labels, meta, out, overwrite=overwrite, class_names=names)]
    if probabilities is not None:
        written.append(write_image(pred.probabilities, meta, probabilities, overwrite=overwrite))
    if boundaries is not None:
        written.append(write_image(pred.boundaries, meta, boundaries, overwrite=overwrite))
    if instances is not None:
        written.append(write_labels(pred.instances, meta, instances, overwrite=overwrite))
    if uncertainty is not None:
        from .suggest import uncertainty_map

        u = uncertainty_map(pred.probabilities)
        written.append(write_image(u, meta, uncertainty, overwrite=overwrite))
    return written
