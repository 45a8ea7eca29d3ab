"""bfloat16 against float32 training on a real one-slice image: same Dice, no NaN.

A real 2D nuclei microscopy image (StarDist's ``img2d``/``mask2d`` example, 512 x 256,
BSD-3-Clause; ``pip install --no-deps stardist``) is saved the way a user gives a 2D
image as a volume: one slice, (1, Y, X). The top half is annotated densely (instances),
the bottom half is predicted. The same run trains with ``precision: float32`` and with
``precision: bfloat16`` (forced, so that a CPU that emulates bfloat16 reproduces the
path a GPU or a native-bfloat16 CPU takes), interleaved over seeds, and reports for
each: the network dimension chosen (a one-slice volume must train as 2D), foreground
Dice and instance F1 at IoU 0.5 on the unseen half, steps skipped as non-finite, and the
seconds per step. The ratio reported is the bfloat16 Dice over the float32 Dice.

    python -m benchmarks.precision [--iterations 300] [--seeds 2] [--smoke]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from . import _common as C
from .nuclei import as_annotation, load_stardist, score, split_halves

PRECISIONS = ("float32", "bfloat16")


def train_once(precision: str, seed: int, iterations: int, crop: int | None) -> dict:
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import Done, Info
    from napari_unetseg.core.inference import predict_volume
    from napari_unetseg.core.training import Trainer

    image, mask = load_stardist("img2d"), load_stardist("mask2d")
    if crop:
        image, mask = image[:crop, : 2 * crop], mask[:crop, : 2 * crop]
    tr_img, tr_mask, te_img, te_mask, _ = split_halves(image, mask)
    cfg = Config()
    cfg.train.task = "instances"
    cfg.train.iterations = int(iterations)
    cfg.train.precision = precision
    cfg.train.seed = int(seed)
    cfg.class_names = ["nucleus"]
    annotation = as_annotation(tr_mask)[None]  # one slice: (1, Y, X)
    t0 = time.perf_counter()
    trainer = Trainer(tr_img[None, None].astype(np.float32), annotation, cfg)
    skipped = 0
    done = None
    try:
        for ev in trainer.run():
            if isinstance(ev, Info) and "non-finite" in ev.message:
                skipped += 1
            if isinstance(ev, Done):
                done = ev
    finally:
        trainer.close()
    seconds = time.perf_counter() - t0
    if done is None:
        raise RuntimeError("training ended without a model")
    ckpt = done.result
    pred = predict_volume(ckpt, te_img[None, None].astype(np.float32))
    s = score(pred.instances[0], te_mask)
    losses = [float(h["loss"]) for h in ckpt.history if "loss" in h]
    return {
        "precision": precision,
        "seed": seed,
        "network_dims": int(ckpt.config.model.spatial_dims),
        "foreground_dice": s["foreground_dice"],
        "f1": s["f1"],
        "n_pred": s["n_pred"],
        "n_true": s["n_true"],
        "non_finite_notes": skipped,
        "final_loss_finite": bool(not losses or np.isfinite(losses[-1])),
        "seconds_per_step": round(seconds / max(1, iterations), 3),
    }


def run(args) -> dict:
    iterations = 4 if args.smoke else int(args.iterations)
    crop = 64 if args.smoke else None
    seeds = [0] if args.smoke else list(range(int(args.seeds)))
    variants = {
        f"{p}/{s}": (lambda p=p, s=s: train_once(p, s, iterations, crop))
        for s in seeds
        for p in PRECISIONS
    }
    rows = [r for results in C.interleave(variants, 1).values() for r in results]
    summary = {}
    for p in PRECISIONS:
        mine = [r for r in rows if r["precision"] == p]
        summary[p] = {
            "foreground_dice": round(C.median([r["foreground_dice"] for r in mine]), 4),
            "f1": round(C.median([r["f1"] for r in mine]), 4),
        }
    f32 = summary["float32"]["foreground_dice"]
    ratio = summary["bfloat16"]["foreground_dice"] / f32 if f32 else float("nan")
    return {
        "environment": C.environment(),
        "smoke": bool(args.smoke),
        "command": "python -m benchmarks.precision " + " ".join(sys.argv[1:]),
        "data": "StarDist img2d/mask2d (BSD-3-Clause), one-slice volume (1, Y, X)",
        "iterations": iterations,
        "rows": rows,
        "summary": summary,
        "dice_ratio_bf16_over_f32": round(ratio, 4),
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    cols = [
        ("precision", "precision", ""),
        ("seed", "seed", ""),
        ("network_dims", "net", ""),
        ("foreground_dice", "Dice", ".3f"),
        ("f1", "F1@0.5", ".3f"),
        ("non_finite_notes", "skipped", ""),
        ("seconds_per_step", "s/step", ".2f"),
    ]
    print(C.table(data["rows"], cols))
    print(f"Dice bfloat16 / float32 (medians): {data['dice_ratio_bf16_over_f32']:.4f}")


def main(argv=None) -> int:
    parser = C.arg_parser("precision", __doc__)
    parser.add_argument("--iterations", type=int, default=300, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=2, help="runs per precision")
    parser.add_argument("--smoke", action="store_true", help="a crop and a few steps (a test)")
    parser.add_argument("--out", help="JSON output (default results/precision.json)")
    args = parser.parse_args(argv)
    return C.report("precision", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
