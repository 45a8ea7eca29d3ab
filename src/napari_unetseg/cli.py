"""The ``unetseg`` command line: parses, calls the core, prints. No rule lives here.

Commands::

    unetseg demo      [--out DIR]                       the whole job on the built-in sample
    unetseg sparsify  --labels GT --out SPARSE          keep a fraction of whole slices
    unetseg train     --image IMG [--image IMG2] --labels SPARSE --out MODEL
    unetseg predict   --model MODEL --image IMG --out LABELS.nii.gz
    unetseg evaluate  --pred LABELS --truth GT [--instances] [--json OUT]
    unetseg suggest   --model MODEL --image IMG --labels ANN [--top K] [--json OUT]
    unetseg export-bioimageio --model MODEL --out model.zip [--test-image IMG]

The setting flags of ``train`` and ``predict`` are generated from the settings schema
(:mod:`napari_unetseg.core.config`): defaults, then ``--config CFG.json``, then flags.
Errors are one line on stderr and a non-zero exit status (``--debug`` shows the
traceback). Existing outputs are only replaced with ``--overwrite``; inputs never.
"""

from __future__ import annotations

import argparse
import sys

from .cli_commands import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    add_setting_flags,
    cmd_demo,
    cmd_evaluate,
    cmd_export_bioimageio,
    cmd_export_dataset,
    cmd_predict,
    cmd_sparsify,
    cmd_suggest,
    cmd_train,
)
from .core.config import ConfigError

#: Settings offered by ``unetseg train`` and ``unetseg predict`` (by section).
TRAIN_SECTIONS = ("data", "model", "train", "")
PREDICT_SECTIONS = ("infer",)


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

    w = sub.add_parser(
        "export-bioimageio", help="write a trained model as a bioimage.io model package (.zip)"
    )
    w.add_argument("--model", required=True, help="the trained model (.safetensors)")
    w.add_argument("--out", required=True, help="package to write (e.g. model.zip)")
    w.add_argument(
        "--test-image", action="append", help="image for the test input; repeat for channels"
    )
    w.add_argument("--name", help="model name (default: napari-unetseg <task> U-Net)")
    w.add_argument("--author", action="append", help="author name; repeat for several")
    common(w)
    w.set_defaults(func=cmd_export_bioimageio)
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
