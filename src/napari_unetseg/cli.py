"""The ``unetseg`` command line: parses, calls the core, prints. No rule lives here.

Commands::

    unetseg demo      [--out DIR]                       the whole job on the built-in sample
    unetseg sparsify  --labels GT --out SPARSE          keep a fraction of whole slices
    unetseg train     --image IMG [--image IMG2] --labels SPARSE --out MODEL
    unetseg predict   --model MODEL --image IMG --out LABELS.nii.gz
    unetseg evaluate  --pred LABELS --truth GT [--instances] [--json OUT]
    unetseg suggest   --model MODEL --image IMG --labels ANN [--top K] [--json OUT]

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
    from .core.jobs import train_dataset_to_file, train_to_file

    common = dict(
        out=args.out,
        config=_config(args),
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    if args.dataset is not None:
        if args.image or args.labels:
            raise ValueError("give --dataset DIR or --image/--labels, not both")
        path, message = train_dataset_to_file(dataset=args.dataset, **common)
    elif args.image and args.labels:
        path, message = train_to_file(images=args.image, labels=args.labels, **common)
    else:
        raise ValueError("give --image and --labels (one scan), or --dataset DIR (many)")
    print(message)
    return 0 if path is not None else EXIT_INTERRUPTED


def cmd_predict(args) -> int:
    if (args.image is None) == (args.input is None):
        raise ValueError("give --image (one scan, repeat for channels) or --input DIR (a folder)")
    if args.input is not None and (args.workers or args.scheduler):
        from .core.distributed import predict_folder_on_dask

        result = predict_folder_on_dask(
            model=args.model,
            input_dir=args.input,
            out_dir=args.out,
            workers=args.workers,
            scheduler=args.scheduler,
            settings=lambda cfg: apply_setting_flags(cfg, args),
            overwrite=args.overwrite,
            quiet=args.quiet,
        )
        print(result.summary())
        return EXIT_ERROR if result.failed else 0
    if args.input is not None:
        return _predict_folder(args)
    from .core.io import is_zarr_path

    if (
        args.workers
        or args.scheduler
        or args.block
        or is_zarr_path(args.out)
        or any(is_zarr_path(p) for p in args.image)
    ):  # large volumes: blockwise into OME-Zarr
        from .core.distributed import predict_to_zarr

        if args.probabilities or args.boundaries:
            raise ValueError("--probabilities / --boundaries are not written blockwise")
        written = predict_to_zarr(
            model=args.model,
            images=args.image,
            out=args.out,
            instances=args.instances,
            workers=args.workers,
            scheduler=args.scheduler,
            block=args.block,
            halo=args.halo,
            settings=lambda cfg: apply_setting_flags(cfg, args),
            overwrite=args.overwrite,
            allow_missing_chunks=args.allow_missing_chunks,
            quiet=args.quiet,
        )
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    from .core.jobs import predict_to_files

    written = predict_to_files(
        model=args.model,
        images=args.image,
        out=args.out,
        probabilities=args.probabilities,
        boundaries=args.boundaries,
        instances=args.instances,
        uncertainty=args.uncertainty,
        settings=lambda cfg: apply_setting_flags(cfg, args),
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _predict_folder(args) -> int:
    from .core.batch import predict_folder
    from .core.checkpoint import load_checkpoint
    from .core.progress import drain

    for flag in ("probabilities", "boundaries", "instances", "uncertainty"):
        if getattr(args, flag) is not None:
            raise ValueError(
                f"--{flag} names one file; with --input use --save-probabilities instead"
            )
    ckpt = load_checkpoint(args.model)
    cfg = apply_setting_flags(ckpt.config.copy(), args)
    done = drain(
        predict_folder(
            ckpt,
            args.input,
            args.out,
            config=cfg.infer,
            overwrite=args.overwrite,
            probabilities=args.save_probabilities,
        ),
        "cases",
        args.quiet,
    )
    result = done.result
    print(result.summary())
    return EXIT_ERROR if result.failed else 0


def cmd_evaluate(args) -> int:
    from .core.dataset import parse_regions, read_nnunet_dataset, regions_from_info
    from .core.evaluation import evaluate, format_rows, report_rows
    from .core.io import read_labels
    from .core.outputs import check_outputs

    check_outputs([args.json, args.csv], [args.pred, args.truth], overwrite=args.overwrite)
    regions, class_names = None, None
    if args.dataset_json:
        info, _ = read_nnunet_dataset(Path(args.dataset_json).parent, load=False)
        regions, class_names = regions_from_info(info) or None, info.class_names
    if args.regions:
        regions = parse_regions(args.regions)
    options = dict(
        instances=args.instances,
        iou_threshold=args.iou_threshold,
        regions=regions,
        class_names=class_names,
        hd95=args.hd95,
    )
    failed: dict = {}
    if Path(args.pred).is_dir() or Path(args.truth).is_dir():
        from .core.batch import evaluate_folders
        from .core.progress import drain

        done = drain(evaluate_folders(args.pred, args.truth, **options), "cases", args.quiet)
        rows, summary, reports = done.result
        failed = done.extra.get("failed", {})
        print(format_rows(summary), end="")
    else:
        from .core.jobs import check_same_geometry

        pred, pred_meta = read_labels(args.pred)
        truth, meta = read_labels(args.truth)
        check_same_geometry(meta, pred_meta, args.pred, "the reference")
        report = evaluate(pred, truth, spacing=meta.spacing, **options)
        rows, summary, reports = report_rows(report), [], {"case": report}
        print(format_rows(rows), end="")
    from .core.io.atomic import write_text_atomic

    if args.csv:
        write_text_atomic(
            args.csv, format_rows(rows + summary, delimiter=","), overwrite=args.overwrite
        )
        print(f"wrote {args.csv}")
    if args.json:
        full = {
            "prediction": str(args.pred),
            "reference": str(args.truth),
            "cases": reports,
            "summary": summary,
            "failed": failed,
        }
        if len(reports) == 1 and not Path(args.pred).is_dir():
            full.update(next(iter(reports.values())))
        write_text_atomic(
            args.json, json.dumps(full, indent=2, default=_json_number), overwrite=args.overwrite
        )
        print(f"wrote {args.json}")
    if failed:
        print(f"{len(failed)} case(s) could not be scored", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _json_number(value: Any) -> Any:
    return float(value)


def cmd_suggest(args) -> int:
    from .core.io.atomic import write_text_atomic
    from .core.outputs import check_outputs
    from .core.suggest import suggest_from_files

    check_outputs([args.json], [args.model, *args.image, args.labels], overwrite=args.overwrite)
    found = suggest_from_files(
        args.model,
        args.image,
        args.labels,
        top=args.top,
        axes=args.axes,
        method=args.method,
        min_distance=args.min_distance,
        spread=args.spread,
        quiet=args.quiet,
    )
    if found:
        print("rank  axis  slice  score   (array axes: 0 = Z for volumes)")
    for rank, s in enumerate(found, 1):
        print(f"{rank:4d}  {s.axis:4d}  {s.index:5d}  {s.score:.4f}  {s.reason}")
    if not found:
        print("no slice left to suggest: every slice along these axes is annotated")
    if args.json:
        text = json.dumps([s.to_dict() for s in found], indent=2)
        write_text_atomic(args.json, text + "\n", overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0


def cmd_export_dataset(args) -> int:
    from .core.cases import Case
    from .core.dataset_files import write_nnunet_dataset
    from .core.io import read_channels, read_labels
    from .core.jobs import check_same_geometry
    from .core.outputs import check_outputs

    if len(args.image) != len(args.labels):
        raise ValueError(
            f"give one --labels per --image ({len(args.image)} images, {len(args.labels)} "
            "annotations)"
        )
    inputs = [p for spec in args.image for p in spec.split(",")] + list(args.labels)
    check_outputs([], inputs, folders=[args.out])
    cases = []
    for k, (spec, lab) in enumerate(zip(args.image, args.labels)):
        paths = spec.split(",")
        image, meta = read_channels(paths)
        annotation, ann_meta = read_labels(lab)
        check_same_geometry(meta, ann_meta, lab)
        name = args.prefix + f"_{k:03d}"
        cases.append(Case(name, image, annotation, spacing=meta.spacing, meta=meta))
    channel_names = args.channel_names or list(cases[0].meta.channel_names)
    path = write_nnunet_dataset(
        args.out,
        cases,
        channel_names=channel_names,
        class_names=args.class_names,
        overwrite=args.overwrite,
    )
    print(f"wrote {len(cases)} case(s) as an nnU-Net dataset: {path}")
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
        "--image", action="append", help="image file; repeat for more channels (e.g. MRI)"
    )
    t.add_argument(
        "--labels", help="annotation volume: 0 unannotated, 1 background, 2.. classes/objects"
    )
    t.add_argument(
        "--dataset",
        help="an nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr; the ignore "
        "label marks unannotated voxels): one model from all its cases",
    )
    t.add_argument("--out", required=True, help="model file to write (.safetensors)")
    t.add_argument("--config", help="JSON file with settings (flags override it)")
    t.add_argument("--resume", help="continue training this model (weights and optimizer)")
    common(t)
    add_setting_flags(t, TRAIN_SECTIONS)
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("predict", help="segment a volume with a trained model")
    q.add_argument("--model", required=True)
    q.add_argument("--image", action="append", help="image file; repeat for channels")
    q.add_argument(
        "--input", help="a folder of scans (channels as CASE_0000, CASE_0001, ...): batch mode"
    )
    q.add_argument(
        "--out",
        required=True,
        help="labels file (any supported format), or the output folder with --input",
    )
    q.add_argument(
        "--save-probabilities",
        action="store_true",
        help="with --input: also write CASE_probabilities files",
    )
    q.add_argument("--probabilities", help="also write class probabilities (C, ...)")
    q.add_argument("--boundaries", help="also write the boundary probability (instance task)")
    q.add_argument("--instances", help="also write watershed instances (instance task)")
    q.add_argument(
        "--uncertainty", help="also write the per-voxel uncertainty (normalised entropy, 0-1)"
    )
    b = q.add_argument_group("large volumes (zarr inputs or outputs go blockwise)")
    b.add_argument("--workers", type=int, help="predict on a local dask cluster of N processes")
    b.add_argument("--scheduler", help="predict on the dask scheduler at this address")
    b.add_argument("--block", type=int, nargs="+", metavar="N", help="block size (Z Y X)")
    b.add_argument("--halo", type=int, nargs="+", metavar="N", help="voxels around each block")
    b.add_argument(
        "--allow-missing-chunks",
        action="store_true",
        help="read chunks missing from a zarr image as empty",
    )
    common(q)
    add_setting_flags(q, PREDICT_SECTIONS)
    q.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="compare a prediction with a reference")
    e.add_argument("--pred", required=True, help="predicted labels: a file or a folder")
    e.add_argument("--truth", required=True, help="reference labels: a file or a folder")
    e.add_argument("--instances", action="store_true", help="match objects (instance F1)")
    e.add_argument("--iou-threshold", type=float, default=0.5)
    e.add_argument("--regions", help='score unions of labels, e.g. "WT=1,2,3;TC=1,3;ET=3" (BraTS)')
    e.add_argument(
        "--dataset-json", help="take class names and regions from an nnU-Net dataset.json"
    )
    e.add_argument(
        "--hd95",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="95th-percentile Hausdorff distance in the scans' units (default: on)",
    )
    e.add_argument("--csv", help="write one row per case and class, then mean and std")
    e.add_argument("--json", help="write every figure as JSON")
    common(e)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("suggest", help="rank the slices worth annotating next")
    g.add_argument("--model", required=True, help="the current model (.safetensors)")
    g.add_argument("--image", action="append", required=True, help="image file; repeat")
    g.add_argument("--labels", required=True, help="the annotation so far (0 = not annotated)")
    g.add_argument("--top", type=int, default=10, help="how many slices (default 10)")
    g.add_argument("--axes", default="zyx", help="axes to suggest slices along (default zyx)")
    g.add_argument(
        "--method",
        choices=("diversity", "entropy", "margin", "tta"),
        default="diversity",
        help="score: diversity (default: fill the largest gaps, no prediction), entropy, "
        "margin or tta (flip disagreement: 3 more predictions)",
    )
    g.add_argument(
        "--spread",
        action="store_true",
        help="with entropy, margin or tta: weigh the score by the distance to annotated "
        "slices and to the borders",
    )
    g.add_argument(
        "--min-distance",
        type=int,
        help="slices between two suggestions on one axis (default: axis size / 16, >= 2)",
    )
    g.add_argument("--json", help="write the list as JSON: [{axis, index, score, reason}]")
    common(g)
    g.set_defaults(func=cmd_suggest)

    x = sub.add_parser(
        "export-dataset", help="write images and sparse annotations as an nnU-Net dataset"
    )
    x.add_argument(
        "--image",
        action="append",
        required=True,
        help="one case's image file(s), channels separated by commas; repeat per case",
    )
    x.add_argument(
        "--labels", action="append", required=True, help="that case's annotation; repeat"
    )
    x.add_argument("--out", required=True, help="dataset folder (e.g. Dataset001_Mine)")
    x.add_argument("--class-names", nargs="+", required=True, help="foreground classes")
    x.add_argument("--channel-names", nargs="+", help="e.g. T1 FLAIR (default: file names)")
    x.add_argument("--prefix", default="case", help="case identifiers: PREFIX_000, ...")
    common(x)
    x.set_defaults(func=cmd_export_dataset)
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
        ("napari_unetseg.core.dataset", "DatasetError"),
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
