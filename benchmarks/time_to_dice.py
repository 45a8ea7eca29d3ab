"""Time to a good segmentation from sparse slices, and Dice against the annotated share.

Part 1 (time to Dice): train on :func:`make_sample` (64x128x128) with
``sparsify(semantic, 0.1)`` (10 % of the slices along each axis) using the default
settings; every ``--eval-every`` steps pause, predict the WHOLE volume with
:func:`predict` and compute the mean foreground Dice against the DENSE truth. The clock
counts training only (the pauses for this evaluation are excluded; the Trainer's own
validation on held-out slices is part of training and is counted). Stops at Dice
``>= --target`` (0.9) or after ``--max-seconds`` of training.

Part 2 (sparse-fraction curve): the same training budget (``--curve-iterations``) with
annotations of 1 slice per axis, 2 slices per axis, 5 %, 10 %, 30 % of the slices per
axis and the dense truth; final Dice on the whole volume, and its ratio to the Dice of
the dense run (the reference of this part, measured in the same run).

Usage::

    python -m benchmarks.time_to_dice [--smoke] [--out benchmarks/results/time_to_dice.json]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import _common as C

GOAL_SECONDS = 60.0
GOAL_DICE = 0.9
GOAL_RELATIVE_10 = 0.9
CURVE = ("1 slice/axis", "2 slices/axis", "5 %", "10 %", "30 %", "dense")


def _config(smoke: bool, iterations: int):
    from napari_unetseg.core.config import Config

    cfg = Config()
    cfg.model.num_classes = 3
    cfg.class_names = ["bright", "textured"]
    cfg.train.device = "cpu"
    cfg.infer.device = "cpu"
    cfg.train.iterations = iterations
    if smoke:
        cfg.model.base_width = 4
        cfg.model.depth = 2
        cfg.data.patch_size = (8, 16, 16)
        cfg.train.batch_size = 1
    return cfg


def slices_annotation(truth: np.ndarray, per_axis: int) -> np.ndarray:
    """Annotation (0 unannotated, truth + 1 inside) of ``per_axis`` evenly spaced whole
    slices along every axis of a (Z, Y, X) dense reference."""
    ann = np.zeros(truth.shape, dtype=np.uint8)
    for axis, n in enumerate(truth.shape):
        for k in range(per_axis):
            index = int((k + 1) * n / (per_axis + 1))
            sl = [slice(None)] * truth.ndim
            sl[axis] = index
            ann[tuple(sl)] = truth[tuple(sl)] + 1
    return ann


def make_annotation(name: str, truth: np.ndarray) -> np.ndarray:
    from napari_unetseg.core.annotations import sparsify

    if name == "dense":
        return (truth.astype(np.int64) + 1).astype(np.uint8)
    if name.endswith("/axis"):
        return slices_annotation(truth, int(name.split()[0]))
    fraction = float(name.split()[0]) / 100.0
    return sparsify(truth, fraction=fraction, axes="zyx", mode="random", seed=0)


def whole_volume_dice(trainer, image, truth) -> float:
    """Mean foreground Dice of the current model on the whole (Z, Y, X) volume."""
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.inference import predict
    from napari_unetseg.core.metrics import semantic_metrics

    ckpt = trainer.checkpoint()
    pred = run_to_completion(
        predict(ckpt, image[None], ckpt.config.infer, keep_probabilities=False)
    ).result
    res = semantic_metrics(pred.labels, truth, classes=[1, 2])
    return float(np.mean([r["dice"] for r in res.values()]))


def train_and_track(
    image,
    truth,
    annotation,
    cfg,
    *,
    eval_every: int | None,
    target: float | None,
    max_seconds: float | None,
    save=None,
) -> dict:
    """Train; optionally evaluate every ``eval_every`` steps and stop at ``target`` Dice
    or after ``max_seconds`` of training. Evaluation time is excluded from the clock."""
    from napari_unetseg.core.events import CancelToken, Done, Step, Validation
    from napari_unetseg.core.training import Trainer

    cancel = CancelToken()
    trainer = Trainer(image[None], annotation, cfg, cancel=cancel)
    curve: list[dict] = []
    train_s = 0.0
    train_cpu = 0.0
    eval_s = 0.0
    reached = None
    validation_reached = None
    validations: list[dict] = []
    iteration = 0
    gen = trainer.run()
    t, c = time.perf_counter(), time.process_time()
    for ev in gen:
        train_s += time.perf_counter() - t
        train_cpu += time.process_time() - c
        if isinstance(ev, Step):
            iteration = ev.iteration
            due = eval_every and ev.iteration % eval_every == 0 and reached is None
            if due and not cancel.cancelled:
                t_eval = time.perf_counter()
                dice = whole_volume_dice(trainer, image, truth)
                eval_s += time.perf_counter() - t_eval
                curve.append(
                    {
                        "iteration": iteration,
                        "train_seconds": train_s,
                        "train_cpu_seconds": train_cpu,
                        "dice": dice,
                    }
                )
                print(
                    f"    it {iteration:4d}  {train_s:6.1f} s  Dice {dice:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
                if target is not None and dice >= target:
                    reached = dict(curve[-1])
                    cancel.cancel()
            if max_seconds is not None and train_s > max_seconds:
                cancel.cancel()
        elif isinstance(ev, Validation):
            # the Trainer's own validation: Dice on held-out annotated slices
            validations.append(
                {"iteration": ev.iteration, "train_seconds": train_s, "dice": ev.mean_dice}
            )
            if target is not None and validation_reached is None and ev.mean_dice >= target:
                validation_reached = dict(validations[-1])
        elif isinstance(ev, Done):
            break
        t, c = time.perf_counter(), time.process_time()
    t_eval = time.perf_counter()
    final = whole_volume_dice(trainer, image, truth)
    eval_s += time.perf_counter() - t_eval
    if save:
        trainer.save(save)
    return {
        "iterations": iteration,
        "train_seconds": train_s,
        "train_cpu_seconds": train_cpu,
        "evaluation_seconds": eval_s,
        "final_dice": final,
        "reached": reached,
        "validation_reached": validation_reached,
        "curve": curve,
        "validations": validations,
    }


def run(args) -> dict:
    import torch

    from napari_unetseg.core.sample import make_sample

    env = C.environment()
    print(C.describe_env(env), file=sys.stderr)
    shape = (16, 32, 32) if args.smoke else (64, 128, 128)
    image, semantic, _ = make_sample(shape=shape, seed=0)

    ttd = None
    if args.parts in ("both", "time"):
        print("part 1: time to Dice", file=sys.stderr, flush=True)
        ann10 = make_annotation("10 %", semantic)
        cfg = _config(args.smoke, args.iterations)
        ttd = train_and_track(
            image,
            semantic,
            ann10,
            cfg,
            eval_every=args.eval_every,
            target=args.target,
            max_seconds=args.max_seconds,
            save=args.save_checkpoint,
        )
        ttd["threads"] = torch.get_num_threads()
        ttd["annotated_fraction"] = float((ann10 > 0).mean())

    curve = []
    names = [n.strip() for n in args.annotations.split(",")] if args.annotations else CURVE
    unknown = [n for n in names if n not in CURVE]
    if unknown:
        raise SystemExit(f"unknown annotation(s) {unknown}; choose from {', '.join(CURVE)}")
    for name in names if args.parts in ("both", "curve") else ():
        if name == names[0]:
            print("part 2: sparse-fraction curve", file=sys.stderr, flush=True)
        ann = make_annotation(name, semantic)
        cfg = _config(args.smoke, args.curve_iterations)
        t0 = time.perf_counter()
        save = args.save_checkpoint if (name == "10 %" and ttd is None) else None
        res = train_and_track(
            image, semantic, ann, cfg, eval_every=None, target=None, max_seconds=None, save=save
        )
        print(
            f"  {name:>14}: Dice {res['final_dice']:.4f} ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        curve.append(
            {
                "annotation": name,
                "annotated_fraction": float((ann > 0).mean()),
                "iterations": res["iterations"],
                "train_seconds": res["train_seconds"],
                "train_cpu_seconds": res["train_cpu_seconds"],
                "dice": res["final_dice"],
            }
        )
    dense = next((r["dice"] for r in curve if r["annotation"] == "dense"), float("nan"))
    for row in curve:
        row["relative_to_dense"] = row["dice"] / dense if dense > 0 else float("nan")
    rel10 = next((r["relative_to_dense"] for r in curve if r["annotation"] == "10 %"), None)
    reached = ttd["reached"] if ttd else None
    val_reached = ttd["validation_reached"] if ttd else None
    return {
        "benchmark": "time_to_dice",
        "command": "python -m benchmarks.time_to_dice " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "setup": {
            "data": f"make_sample{shape}, seed 0; Dice = mean over classes 1, 2 on the "
            "whole volume against the dense truth",
            "time_to_dice_iterations_setting": args.iterations,
            "eval_every": args.eval_every,
            "target": args.target,
            "max_seconds": args.max_seconds,
            "curve_iterations": args.curve_iterations,
            "config": "defaults (num_classes 3)" + (", tiny model" if args.smoke else ""),
        },
        "load_average_at_end": C.load_average(),
        "time_to_dice": ttd,
        "curve": curve,
        "goals": {
            "seconds_to_dice": GOAL_SECONDS,
            "dice": GOAL_DICE,
            "relative_at_10_percent": GOAL_RELATIVE_10,
            "seconds_measured": reached["train_seconds"] if reached else None,
            "time_goal_met": None
            if ttd is None
            else bool(
                reached and reached["train_seconds"] <= GOAL_SECONDS and args.target >= GOAL_DICE
            ),
            # the Trainer's own validation Dice (held-out annotated slices)
            "validation_seconds_measured": val_reached["train_seconds"] if val_reached else None,
            "validation_time_goal_met": None
            if ttd is None
            else bool(
                val_reached
                and val_reached["train_seconds"] <= GOAL_SECONDS
                and args.target >= GOAL_DICE
            ),
            "relative_at_10_percent_measured": rel10,
            "fraction_goal_met": None if rel10 is None else bool(rel10 >= GOAL_RELATIVE_10),
        },
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    t = data["time_to_dice"]
    g = data["goals"]
    if t is not None:
        _print_time(data, t, g)
    if data["curve"]:
        _print_curve(data, g)


def _print_time(data: dict, t: dict, g: dict) -> None:
    print("time to Dice (10 % of slices annotated, evaluation excluded):")
    print(
        C.table(
            t["curve"],
            [
                ("iteration", "iteration", "d"),
                ("train_seconds", "train s", ".1f"),
                ("train_cpu_seconds", "CPU s", ".1f"),
                ("dice", "Dice", ".4f"),
            ],
        )
    )
    if t["reached"]:
        r = t["reached"]
        print(
            f"Dice {r['dice']:.4f} >= {data['setup']['target']} after {r['train_seconds']:.1f} s "
            f"({r['iteration']} iterations); goal <= {g['seconds_to_dice']:.0f} s: "
            f"{'met' if g['time_goal_met'] else 'NOT met'}"
        )
    else:
        print(
            f"target Dice not reached: final Dice {t['final_dice']:.4f} after "
            f"{t['train_seconds']:.1f} s ({t['iterations']} iterations); goal NOT met"
        )

    v = t.get("validation_reached")
    if v:
        print(
            f"validation Dice (held-out annotated slices) {v['dice']:.4f} >= "
            f"{data['setup']['target']} after {v['train_seconds']:.1f} s ({v['iteration']} "
            f"iterations); goal <= {g['seconds_to_dice']:.0f} s: "
            f"{'met' if g['validation_time_goal_met'] else 'NOT met'}"
        )
    elif t.get("validations"):
        best = max(x["dice"] for x in t["validations"])
        print(f"validation Dice never reached the target (best {best:.4f})")


def _print_curve(data: dict, g: dict) -> None:
    print(f"\nsparse-fraction curve ({data['setup']['curve_iterations']} iterations each):")
    rows = [dict(r, pct=100 * r["annotated_fraction"]) for r in data["curve"]]
    print(
        C.table(
            rows,
            [
                ("annotation", "annotation", ""),
                ("pct", "voxels %", ".1f"),
                ("train_seconds", "train s", ".1f"),
                ("dice", "Dice", ".4f"),
                ("relative_to_dense", "/ dense", ".3f"),
            ],
        )
    )
    print(
        f"10 % / dense = {g['relative_at_10_percent_measured']:.3f} (goal >= "
        f"{g['relative_at_10_percent']}: {'met' if g['fraction_goal_met'] else 'NOT met'})"
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("time_to_dice", __doc__)
    p.add_argument("--smoke", action="store_true", help="tiny model, volume and budgets")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="Trainer iterations for part 1 (default: the config default)",
    )
    p.add_argument("--eval-every", type=int, default=None, help="steps between evaluations")
    p.add_argument("--target", type=float, default=GOAL_DICE, help="Dice to reach (0.9)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="training seconds before part 1 gives up (default 180)",
    )
    p.add_argument(
        "--curve-iterations",
        type=int,
        default=None,
        help="training iterations per annotation in part 2 (default: the config default)",
    )
    p.add_argument(
        "--parts",
        choices=("both", "time", "curve"),
        default="both",
        help="run part 1 (time), part 2 (curve) or both (default)",
    )
    p.add_argument(
        "--annotations",
        default=None,
        help="part 2: comma-separated subset of: " + ", ".join(CURVE),
    )
    p.add_argument(
        "--save-checkpoint",
        default=None,
        help="save the part-1 model (part 2 alone: the 10 %% model) here, e.g. for the "
        "inference benchmark",
    )
    p.add_argument("--out", default=None, help="JSON output")
    args = p.parse_args(argv)
    args.argv = argv
    if args.smoke:
        args.iterations = args.iterations or 4
        args.eval_every = args.eval_every or 2
        args.max_seconds = args.max_seconds or 30.0
        args.curve_iterations = args.curve_iterations or 2
    else:
        from napari_unetseg.core.config import TrainConfig

        args.iterations = args.iterations or TrainConfig().iterations
        args.eval_every = args.eval_every or 25
        args.max_seconds = args.max_seconds or 180.0
        args.curve_iterations = args.curve_iterations or TrainConfig().iterations
    return C.report("time_to_dice", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
