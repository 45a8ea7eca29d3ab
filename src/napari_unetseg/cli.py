"""The ``unetseg`` command line: parses, calls the core, prints. No rule lives here.

Commands::

    unetseg demo      [--out DIR]                       the whole job on the built-in sample
    unetseg sparsify  --labels GT --out SPARSE          keep a fraction of whole slices
    unetseg train     --image IMG [--image IMG2] --labels SPARSE --out MODEL
    unetseg predict   --model MODEL --image IMG --out LABELS.nii.gz
    unetseg evaluate  --pred LABELS --truth GT [--instances] [--json OUT]

The setting flags of ``train`` and ``predict`` are generated from the settings schema
(:mod:`napari_unetseg.core.config`): defaults, then ``--config CFG.json``, then flags.
Errors are one line on stderr and a non-zero exit status (``--debug`` shows the
traceback). Existing outputs are only replaced with ``--overwrite``; inputs never.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

from .core.config import Config, ConfigError, Setting, set_value, settings

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Settings offered by ``unetseg train`` and ``unetseg predict`` (by section).
TRAIN_SECTIONS = ("data", "model", "train", "")
PREDICT_SECTIONS = ("infer",)


# --------------------------------------------------------------------------- settings


def _flag_dest(s: Setting) -> str:
    return "setting__" + s.key.replace(".", "__")


def add_setting_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """One flag per declared setting of ``sections`` (help, choices and type from the
    schema; every flag defaults to "not given")."""
    group = parser.add_argument_group("settings (see docs/settings.md)")
    taken = {a for action in parser._actions for a in action.option_strings}
    for sec in sections:
        for s in settings(sec):
            if not s.cli or s.cli_flag in taken:
                continue
            taken.add(s.cli_flag)
            kw: dict[str, Any] = {"dest": _flag_dest(s), "default": None}
            base = s.base_type
            default = "automatic" if s.default is None else json.dumps(s.default)
            kw["help"] = f"{s.help} (default: {default})"
            origin = typing.get_origin(base)
            if base is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif origin in (tuple, list):
                args = typing.get_args(base)
                kw["type"] = args[0]
                kw["nargs"] = len(args) if origin is tuple and Ellipsis not in args else "+"
                kw["metavar"] = "N"
            else:
                kw["type"] = base
                if s.choices:
                    kw["choices"] = s.choices
            group.add_argument(s.cli_flag, **kw)


def apply_setting_flags(cfg: Config, args: argparse.Namespace) -> Config:
    """Write every setting flag the user gave into ``cfg`` (type-checked), validate."""
    for s in settings():
        value = getattr(args, _flag_dest(s), None)
        if value is not None:
            set_value(cfg, s.key, value)
    return cfg.validate()


def _config(args: argparse.Namespace) -> Config:
    cfg = Config.load(args.config) if getattr(args, "config", None) else Config()
    return apply_setting_flags(cfg, args)


# --------------------------------------------------------------------------- commands


def cmd_sparsify(args) -> int:
    from .core.annotations import sparsify
    from .core.io import read_labels, write_labels
    from .core.outputs import check_outputs

    check_outputs([args.out], [args.labels], overwrite=args.overwrite)
    truth, meta = read_labels(args.labels)
    sparse = sparsify(truth, args.fraction, args.axes, args.mode, args.seed)
    write_labels(sparse, meta, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {float((sparse > 0).mean()):.1%} of voxels annotated")
    return 0


def cmd_train(args) -> int:
    from .core.jobs import train_to_file

    cfg = _config(args)
    path, message = train_to_file(
        out=args.out,
        images=args.image,
        labels=args.labels,
        config=cfg,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    print(message)
    return 0 if path is not None else EXIT_INTERRUPTED


def cmd_predict(args) -> int:
    from .core.jobs import predict_to_files

    written = predict_to_files(
        model=args.model,
        images=args.image,
        out=args.out,
        probabilities=args.probabilities,
        boundaries=args.boundaries,
        instances=args.instances,
        settings=lambda cfg: apply_setting_flags(cfg, args),
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_evaluate(args) -> int:
    from .core.evaluation import evaluate, format_rows, report_rows
    from .core.io import read_labels
    from .core.outputs import check_outputs

    if args.json:
        check_outputs([args.json], [args.pred, args.truth], overwrite=args.overwrite)
    pred, _ = read_labels(args.pred)
    truth, meta = read_labels(args.truth)
    report = evaluate(
        pred,
        truth,
        instances=args.instances,
        iou_threshold=args.iou_threshold,
        spacing=meta.spacing,
    )
    print(format_rows(report_rows(report)), end="")
    if args.json:
        from .core.io.atomic import write_text_atomic

        full = {"prediction": str(args.pred), "reference": str(args.truth), **report}
        write_text_atomic(
            args.json, json.dumps(full, indent=2, default=float), overwrite=args.overwrite
        )
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
        description="Train a U-Net from a few annotated slices and segment whole volumes.",
    )
    p.add_argument("--version", action="version", version=f"napari-unetseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp):
        sp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        sp.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    d = sub.add_parser("demo", help="train and predict on the built-in synthetic sample")
    d.add_argument(
        "--out", default="demo_output", help="folder for results (default: %(default)s)"
    )
    d.add_argument("--iterations", type=int, help="training iterations per task (default 200)")
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
    t.add_argument("--resume", help="continue training this model (weights and optimizer)")
    common(t)
    add_setting_flags(t, TRAIN_SECTIONS)
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("predict", help="segment a volume with a trained model")
    q.add_argument("--model", required=True)
    q.add_argument("--image", action="append", required=True, help="repeat for channels")
    q.add_argument("--out", required=True, help="semantic labels (NIfTI or TIFF)")
    q.add_argument("--probabilities", help="also write class probabilities (C, ...)")
    q.add_argument("--boundaries", help="also write the boundary probability (instance task)")
    q.add_argument("--instances", help="also write watershed instances (instance task)")
    common(q)
    add_setting_flags(q, PREDICT_SECTIONS)
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
    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError, ValueError]
    for mod, name in (
        ("napari_unetseg.core.io", "VolumeIOError"),
        ("napari_unetseg.core.checkpoint", "CheckpointError"),
        ("napari_unetseg.core.outputs", "OutputError"),
    ):
        module = sys.modules.get(mod)
        if module is not None and hasattr(module, name):
            errors.append(getattr(module, name))
    return tuple(errors)


def _is_expected(exc: BaseException) -> bool:
    return isinstance(exc, _expected_errors())


def _describe(exc: BaseException) -> str:
    msg = (str(exc) or type(exc).__name__).strip().splitlines()[0]
    if not _is_expected(exc):
        msg = f"{type(exc).__name__}: {msg}"
    return msg


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
