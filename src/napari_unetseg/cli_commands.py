"""The ``unetseg`` commands: each parses nothing and decides nothing; it takes the
parsed arguments, calls the core and prints what the core returns. The settings flags are
generated from the settings schema (:mod:`napari_unetseg.core.config`)."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

from .core.config import Config, Setting, set_value, settings

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
            kw["help"] = f"{s.help} (default: {default})".replace("%", "%%")  # argparse formats
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
                else:
                    kw["metavar"] = s.name.upper()
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
    if message:  # empty on the ranks other than 0 under torchrun
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


def cmd_export_bioimageio(args) -> int:
    from .core.bioimageio import export_bioimageio
    from .core.io import read_channels
    from .core.outputs import check_outputs

    check_outputs([args.out], [args.model, *(args.test_image or [])], overwrite=args.overwrite)
    test_image = read_channels(args.test_image)[0] if args.test_image else None
    path = export_bioimageio(
        args.model,
        args.out,
        test_image=test_image,
        name=args.name,
        authors=args.author or ("napari-unetseg user",),
        overwrite=args.overwrite,
    )
    print(f"wrote {path} (bioimage.io model package; check it with: bioimageio test {path})")
    return 0
