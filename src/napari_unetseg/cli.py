"""The ``unetseg`` command line: the same engine as the napari widgets, without a screen.

Commands::

    unetseg demo      [--out DIR]                       the whole job on the built-in sample
    unetseg sparsify  --labels GT --out SPARSE          keep a fraction of whole slices
    unetseg train     --image IMG [--image IMG2] --labels SPARSE --out MODEL
    unetseg predict   --model MODEL --image IMG --out LABELS.nii.gz
    unetseg evaluate  --pred LABELS --truth GT [--instances] [--json OUT]

Settings come from the defaults, then ``--config CFG.json``, then the flags. Errors are
one line on stderr and a non-zero exit status (``--debug`` shows the traceback).
Existing output files are never replaced unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .core.config import Config, ConfigError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# --------------------------------------------------------------------------- helpers


def _check_outputs(paths, overwrite: bool) -> None:
    existing = [str(p) for p in paths if p is not None and Path(p).exists()]
    if existing and not overwrite:
        raise CLIError(
            f"{', '.join(existing)} already exist(s); choose another path or pass --overwrite"
        )


def _load_config(args) -> Config:
    cfg = Config.load(args.config) if getattr(args, "config", None) else Config()
    return cfg


def _read_channels(paths):
    """Read one or more image files and stack their channels: (C, *spatial), meta of the
    first file."""
    import numpy as np

    from .core.io import read_volume

    arrays, metas = [], []
    for p in paths:
        arr, meta = read_volume(p)
        arrays.append(arr)
        metas.append(meta)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        listing = ", ".join(f"{p}: {a.shape[1:]}" for p, a in zip(paths, arrays))
        raise CLIError(f"the images given as channels differ in shape ({listing})")
    image = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return image, metas[0]


class _Progress:
    """Turns engine events into a tqdm bar and a few printed lines."""

    def __init__(self, desc: str, quiet: bool = False):
        self.desc = desc
        self.quiet = quiet
        self.bar = None
        self.last_validation = None

    def __call__(self, ev) -> None:
        from .core import events as E

        if isinstance(ev, E.Info):
            self._write(("warning: " if ev.level == "warning" else "") + ev.message)
        elif isinstance(ev, E.Step):
            self._bar(ev.total).update(ev.iteration - self.bar.n)
            self.bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)
        elif isinstance(ev, E.Progress):
            self._bar(ev.total, ev.stage).update(ev.done - self.bar.n)
        elif isinstance(ev, E.Validation):
            self.last_validation = ev
            per_class = " ".join(f"{k}={v:.3f}" for k, v in ev.dice.items())
            self._write(
                f"iteration {ev.iteration}: validation Dice {ev.mean_dice:.3f} "
                f"IoU {ev.mean_iou:.3f} ({per_class})"
            )

    def _bar(self, total: int, stage: str = ""):
        if self.bar is None or self.bar.total != total:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(
                total=total,
                desc=stage or self.desc,
                disable=self.quiet,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        return self.bar

    def _write(self, msg: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _drain(events, progress: _Progress):
    """Run an event generator to its Done; Ctrl-C cancels cooperatively."""
    from .core.events import run_to_completion

    try:
        return run_to_completion(events, progress)
    finally:
        progress.close()


def _apply_train_flags(cfg: Config, args) -> Config:
    t, d, m = cfg.train, cfg.data, cfg.model
    if args.task is not None:
        t.task = args.task
    if args.iterations is not None:
        t.iterations = args.iterations
    if args.batch_size is not None:
        t.batch_size = args.batch_size
    if args.lr is not None:
        t.learning_rate = args.lr
    if args.device is not None:
        t.device = args.device
        cfg.infer.device = args.device
    if args.seed is not None:
        t.seed = args.seed
    if args.compile:
        t.compile = True
    if args.patch is not None:
        d.patch_size = tuple(args.patch)
    if args.normalization is not None:
        d.normalization = args.normalization
    if args.no_augment:
        d.augment = False
    if args.base_width is not None:
        m.base_width = args.base_width
    if args.depth is not None:
        m.depth = args.depth
    if args.class_names is not None:
        cfg.class_names = list(args.class_names)
    return cfg.validate()


def _print_metrics(results: dict, out=None) -> None:
    out = out or sys.stdout
    cols = ("dice", "iou", "sensitivity", "specificity")
    width = max([len("class")] + [len(str(k)) for k in results])
    print(f"{'class':<{width}}  " + "  ".join(f"{c:>11}" for c in cols), file=out)
    for name, row in results.items():
        print(f"{name:<{width}}  " + "  ".join(f"{row[c]:>11.4f}" for c in cols), file=out)


def _print_instances(res: dict, out=None) -> None:
    out = out or sys.stdout
    print(
        f"instances @ IoU {res.get('iou_threshold', 0.5)}: F1 {res['f1']:.4f}  "
        f"precision {res['precision']:.4f}  recall {res['recall']:.4f}  "
        f"TP {res['tp']} FP {res['fp']} FN {res['fn']}  "
        f"mean matched IoU {res['mean_matched_iou']:.4f}",
        file=out,
    )


# --------------------------------------------------------------------------- commands


def cmd_sparsify(args) -> int:
    from .core.annotations import sparsify
    from .core.io import read_labels, write_labels

    _check_outputs([args.out], args.overwrite)
    truth, meta = read_labels(args.labels)
    sparse = sparsify(truth, args.fraction, args.axes, args.mode, args.seed)
    write_labels(sparse, meta, args.out)
    annotated = float((sparse > 0).mean())
    print(f"wrote {args.out}: {annotated:.1%} of voxels annotated")
    return 0


def cmd_train(args) -> int:
    from .core.checkpoint import load_checkpoint, save_checkpoint
    from .core.events import CancelToken
    from .core.io import read_labels
    from .core.training import Trainer

    _check_outputs([args.out], args.overwrite)
    cfg = _apply_train_flags(_load_config(args), args)
    image, meta = _read_channels(args.image)
    annotation, _ = read_labels(args.labels)
    resume = load_checkpoint(args.resume) if args.resume else None
    cancel = CancelToken()
    trainer = Trainer(image, annotation, cfg, spacing=meta.spacing, resume=resume, cancel=cancel)
    progress = _Progress("training", quiet=args.quiet)
    t0 = time.perf_counter()
    try:
        done = _drain(trainer.run(), progress)
    except KeyboardInterrupt:
        cancel.cancel()
        save_checkpoint(trainer.checkpoint(), args.out)
        print(f"interrupted: the model so far was saved to {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    save_checkpoint(done.result, args.out)
    print(f"saved model to {args.out} after {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_predict(args) -> int:
    from .core.checkpoint import load_checkpoint
    from .core.inference import predict
    from .core.io import write_image, write_labels

    outputs = [args.out, args.probabilities, args.boundaries, args.instances]
    _check_outputs(outputs, args.overwrite)
    ckpt = load_checkpoint(args.model)
    cfg = ckpt.config.infer
    if args.overlap is not None:
        cfg.overlap = args.overlap
    if args.tta:
        cfg.tta = True
    if args.device is not None:
        cfg.device = args.device
    if args.window_batch is not None:
        cfg.window_batch = args.window_batch
    if args.min_size is not None:
        cfg.min_size = args.min_size
    if args.interior_threshold is not None:
        cfg.interior_threshold = args.interior_threshold
    cfg.validate()
    if args.instances and ckpt.task != "instances":
        raise CLIError(
            f"--instances needs a model trained for instances; {args.model} is {ckpt.task}"
        )
    image, meta = _read_channels(args.image)
    done = _drain(
        predict(ckpt, image, cfg, keep_probabilities=args.probabilities is not None),
        _Progress("predicting", quiet=args.quiet),
    )
    pred = done.result
    write_labels(pred.labels, meta, args.out)
    written = [args.out]
    if args.probabilities is not None:
        write_image(pred.probabilities, meta, args.probabilities)
        written.append(args.probabilities)
    if args.boundaries is not None:
        if pred.boundaries is None:
            raise CLIError("--boundaries needs a model trained for instances")
        write_image(pred.boundaries, meta, args.boundaries)
        written.append(args.boundaries)
    if args.instances is not None:
        write_labels(pred.instances, meta, args.instances)
        written.append(args.instances)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_evaluate(args) -> int:
    from .core.io import read_labels
    from .core.metrics import instance_metrics, semantic_metrics

    pred, _ = read_labels(args.pred)
    truth, _ = read_labels(args.truth)
    if pred.shape != truth.shape:
        raise CLIError(f"prediction shape {pred.shape} differs from reference {truth.shape}")
    report: dict = {"prediction": str(args.pred), "reference": str(args.truth)}
    if args.instances:
        res = instance_metrics(pred, truth, iou_threshold=args.iou_threshold)
        res["iou_threshold"] = args.iou_threshold
        report["instances"] = res
        fg = semantic_metrics((pred > 0).astype("uint8"), (truth > 0).astype("uint8"))
        report["foreground"] = fg
        _print_metrics({"foreground": fg[next(iter(fg))]})
        _print_instances(res)
    else:
        res = semantic_metrics(pred, truth)
        report["classes"] = res
        _print_metrics(res)
    if args.json:
        _check_outputs([args.json], args.overwrite)
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(
        out=Path(args.out),
        iterations=args.iterations,
        seed=args.seed,
        task=args.task,
        device=args.device,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="unetseg",
        description="Train a 3D U-Net from a few annotated slices and segment whole volumes.",
    )
    version = f"napari-unetseg {__version__}"
    p.add_argument("--version", action="version", version=version)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp):
        sp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        sp.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    d = sub.add_parser("demo", help="train and predict on the built-in synthetic sample")
    d.add_argument(
        "--out", default="demo_output", help="folder for results (default: %(default)s)"
    )
    d.add_argument(
        "--iterations", type=int, default=None, help="training iterations per task (default 200)"
    )
    d.add_argument("--task", choices=("semantic", "instances", "both"), default="both")
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    common(d)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("sparsify", help="keep a fraction of whole slices of a dense mask")
    s.add_argument("--labels", required=True, help="dense reference (0 = background)")
    s.add_argument("--out", required=True, help="annotation file to write")
    s.add_argument("--fraction", type=float, default=0.1, help="share of slices per axis")
    s.add_argument("--axes", default="zyx", help="axes to take slices along (default zyx)")
    s.add_argument("--mode", choices=("random", "even"), default="random")
    s.add_argument("--seed", type=int, default=0)
    common(s)
    s.set_defaults(func=cmd_sparsify)

    t = sub.add_parser("train", help="train a model from sparse annotations")
    t.add_argument(
        "--image",
        action="append",
        required=True,
        help="image file; repeat for more channels (e.g. MRI sequences)",
    )
    t.add_argument(
        "--labels",
        required=True,
        help="annotation volume: 0 unannotated, 1 background, 2.. classes/objects",
    )
    t.add_argument("--out", required=True, help="model file to write (.safetensors)")
    t.add_argument("--config", help="JSON file with settings (flags override it)")
    t.add_argument("--task", choices=("semantic", "instances"))
    t.add_argument("--iterations", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument(
        "--compile",
        action="store_true",
        help="compile the training step (faster steps after a slow first one; long runs)",
    )
    t.add_argument("--patch", type=int, nargs="+", metavar="N", help="patch size (Z Y X)")
    t.add_argument("--normalization", choices=("auto", "zscore", "ct", "percentile", "none"))
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--base-width", type=int)
    t.add_argument("--depth", type=int)
    t.add_argument("--class-names", nargs="+", help="names of the foreground classes")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", help="continue training this model (weights and optimizer)")
    common(t)
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("predict", help="segment a volume with a trained model")
    q.add_argument("--model", required=True)
    q.add_argument("--image", action="append", required=True, help="repeat for channels")
    q.add_argument("--out", required=True, help="semantic labels (NIfTI or TIFF)")
    q.add_argument("--probabilities", help="also write class probabilities (C, ...)")
    q.add_argument("--boundaries", help="also write the boundary probability (instance task)")
    q.add_argument("--instances", help="also write watershed instances (instance task)")
    q.add_argument("--overlap", type=float)
    q.add_argument("--window-batch", type=int, help="windows per forward pass")
    q.add_argument("--tta", action="store_true", help="average over flips (slower)")
    q.add_argument(
        "--min-size",
        type=int,
        help="remove objects / class pieces with fewer voxels (default: the model's, 0)",
    )
    q.add_argument(
        "--interior-threshold",
        type=float,
        help="instance seeds: smoothed p_interior - p_boundary above this (default 0.5)",
    )
    q.add_argument("--device")
    common(q)
    q.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="compare a prediction with a reference")
    e.add_argument("--pred", required=True)
    e.add_argument("--truth", required=True)
    e.add_argument("--instances", action="store_true", help="match objects (instance F1)")
    e.add_argument("--iou-threshold", type=float, default=0.5)
    e.add_argument("--json", help="write the metrics as JSON")
    common(e)
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("unetseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # every error reaches the user as one line
        if args.debug:
            raise
        print(f"unetseg {args.command}: error: {_describe(exc)}", file=sys.stderr)
        if not _is_expected(exc):
            print("(run again with --debug to see the traceback)", file=sys.stderr)
        return EXIT_ERROR


def _expected_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [CLIError, ConfigError, FileNotFoundError, ValueError]
    for mod, name in (
        ("napari_unetseg.core.io", "VolumeIOError"),
        ("napari_unetseg.core.checkpoint", "CheckpointError"),
    ):
        module = sys.modules.get(mod)
        if module is not None and hasattr(module, name):
            errors.append(getattr(module, name))
    return tuple(errors)


def _is_expected(exc: BaseException) -> bool:
    return isinstance(exc, _expected_errors())


def _describe(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if not _is_expected(exc):
        msg = f"{type(exc).__name__}: {msg}"
    return msg


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
