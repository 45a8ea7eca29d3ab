"""Fine-tuning after adding two slices: how many steps until the previous Dice is back,
against training from scratch, measured in the same run.

Goal: "Fine-tuning after adding two slices reaches the previous Dice in under a quarter
of the steps of training from scratch."

Protocol (the helpers of :mod:`benchmarks.active`: a simulated annotator paints whole
slices of a dense reference): two slices per axis are painted (at a third and two thirds
of the axis) and a model is trained from scratch for ``--scratch-steps``; its Dice on
the whole volume against the dense reference is the *previous Dice*. Two suggested
slices (:func:`~napari_unetseg.core.suggest.suggest_slices`, ``--method``) are added,
then:

* ``finetune``: the previous model continues (``Trainer(resume=checkpoint)``: weights
  and optimizer state) with the product's settings, i.e. its peak learning rate lowered
  by ``train.finetune_lr_factor``;
* ``finetune, factor 1``: the same with ``finetune_lr_factor = 1`` (the full peak, as
  before the factor existed) -- left out with ``--no-full-lr``;
* ``scratch``: a new model trained from scratch on the enlarged annotation (the same
  schedule length as the first model).

Each is scored every ``--every`` steps and stops once it reaches the previous Dice
(fine-tuning runs are capped at ``--scratch-steps // 2`` steps, the scratch run at twice
``--scratch-steps``). Printed: steps to the previous Dice and their ratio to the steps
of the first model and of the scratch run.

Usage::

    python -m benchmarks.finetune [--smoke] [--scratch-steps 130] [--every 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import _common as C
from benchmarks import active as A


def _race(image, truth, task, ann, cfg, target: float, every: int, resume=None) -> dict:
    """Train (or continue ``resume``) scoring every ``every`` steps until the Dice reaches
    ``target`` or ``cfg.train.iterations`` steps are done."""
    curve: list[dict] = []
    start = int(getattr(resume, "iterations", 0) or 0)
    t0 = time.perf_counter()

    def check(trainer, iteration):
        steps = iteration - start
        if steps % every and steps != cfg.train.iterations:
            return False
        d, _ = A.score(trainer.checkpoint(), image, truth, task)
        curve.append({"steps": steps, "dice": d["dice"]})
        print(f"    {steps:4d} steps: Dice {d['dice']:.4f}", file=sys.stderr, flush=True)
        return d["dice"] >= target

    A.train(image, ann, cfg, resume=resume, on_step=check)
    reached = next((c["steps"] for c in curve if c["dice"] >= target), None)
    return {"curve": curve, "steps_to_target": reached, "seconds": time.perf_counter() - t0}


def run(args) -> dict:
    from napari_unetseg.core.suggest import suggest_slices

    env = C.environment()
    env["avx512_bf16"] = "avx512_bf16" in C.cpu_flags()
    env["load_average_at_start"] = C.load_average()
    print(C.describe_env(env), file=sys.stderr)
    t0 = time.perf_counter()
    ds = A.load_dataset("sample", args.smoke)
    image, truth, task = ds["image"], ds["truth"], ds["task"]
    n = int(args.scratch_steps)
    every = max(1, int(args.every))
    ann = np.zeros(truth.shape, dtype=np.int32)
    for axis, size in enumerate(truth.shape):
        for k in (1, 2):
            A.add_slice(ann, truth, axis, k * size // 3)
    print(f"first model: {n} steps from scratch", file=sys.stderr, flush=True)
    ckpt = A.train(image, ann, A.make_config(task, n, args.smoke))
    before, probs = A.score(ckpt, image, truth, task)
    target = before["dice"]
    print(f"  previous Dice {target:.4f}", file=sys.stderr, flush=True)
    picks = suggest_slices(probs, ann, top=2, method=args.method)
    for s in picks:
        A.add_slice(ann, truth, s.axis, s.index)
    runs: dict[str, dict] = {}
    variants = [("finetune", None)] + ([("finetune, factor 1", 1.0)] if args.full_lr else [])
    for name, factor in variants:
        cfg = A.make_config(task, max(1, n // 2), args.smoke)
        if factor is not None:
            cfg.train.finetune_lr_factor = factor
        print(f"{name}:", file=sys.stderr, flush=True)
        runs[name] = {
            "finetune_lr_factor": cfg.train.finetune_lr_factor,
            **_race(image, truth, task, ann, cfg, target, every, resume=ckpt),
        }
    print("scratch on the enlarged annotation:", file=sys.stderr, flush=True)
    runs["scratch"] = _race(
        image, truth, task, ann, A.make_config(task, 2 * n, args.smoke), target, every
    )
    ref = runs["scratch"]["steps_to_target"]
    for r in runs.values():
        k = r["steps_to_target"]
        r["ratio_to_first_model"] = None if k is None else k / n
        r["ratio_to_scratch"] = None if k is None or not ref else k / ref
    ft = runs["finetune"]["steps_to_target"]
    # without a scratch figure the first model's steps are the reference
    reference = ref if ref else n
    return {
        "benchmark": "finetune",
        "command": " ".join(sys.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "settings": {"scratch_steps": n, "every": every, "method": args.method},
        "shape": list(image.shape),
        "source": ds["source"],
        "previous_dice": target,
        "added": [[s.axis, s.index] for s in picks],
        "runs": runs,
        "met": ft is not None and ft < reference / 4,
        "seconds": time.perf_counter() - t0,
        "load_average_at_end": C.load_average(),
    }


def print_table(data: dict) -> None:
    rows = [
        {
            "run": name,
            "steps": r["steps_to_target"],
            "first": r["ratio_to_first_model"],
            "scratch": r["ratio_to_scratch"],
            "last": r["curve"][-1]["dice"] if r["curve"] else None,
            "seconds": r["seconds"],
        }
        for name, r in data["runs"].items()
    ]
    n = data["settings"]["scratch_steps"]
    print(
        f"\nprevious Dice {data['previous_dice']:.4f} ({n} steps from scratch); added "
        f"slices (axis, index) {data['added']}"
    )
    print(
        C.table(
            rows,
            [
                ("run", "run", ""),
                ("steps", "steps to previous Dice", ""),
                ("first", f"ratio to {n}", ".3f"),
                ("scratch", "ratio to scratch", ".3f"),
                ("last", "last Dice", ".4f"),
                ("seconds", "s", ".0f"),
            ],
        )
    )
    print(f"goal (fine-tuning under a quarter of the scratch steps): met {data['met']}")


def main(argv=None) -> int:
    p = C.arg_parser("finetune", __doc__)
    p.add_argument("--scratch-steps", type=int, default=130)
    p.add_argument("--every", type=int, default=6, help="score every this many steps")
    p.add_argument("--method", default="diversity", help="how the two slices are chosen")
    p.add_argument(
        "--full-lr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fine-tune at the full peak learning rate (finetune_lr_factor 1)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="tiny volume and steps (a test)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    A.THREADS[0] = args.threads
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.scratch_steps, args.every = min(args.scratch_steps, 8), 2
    return C.report("finetune", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
