"""Training settings against the default, over several seeds, on synthetic and real data.

A single run cannot tell a better setting from a lucky seed: ``train.seed`` changes the
initial weights, the patches and the augmentation, and Dice at a given step moves by a
few hundredths between seeds. Each variant here (a JSON of settings applied on top of
``Config()``) is trained with every seed in ``--seeds`` on each dataset, in this
interpreter, one after the other:

* ``sample``: ``make_sample((64, 128, 128), seed=0)`` with 10 % of the slices annotated
  (``sparsify(truth, 0.1, axes="zyx", mode="random", seed=0)``, as
  :mod:`benchmarks.time_to_quality`), semantic task;
* ``mni``: the MNI152 template and brain mask shipped in nilearn, the same annotation;
* ``nuclei2d`` / ``nuclei3d``: the StarDist example images (``pip install --no-deps
  stardist==0.9.2``), instance task trained on the first half densely, the second half
  predicted and scored (foreground Dice, instance F1 at IoU 0.5), as in
  :mod:`benchmarks.nuclei`.

For ``sample`` and ``mni`` the model is snapshotted every 10 steps (outside the clock) and
every snapshot is scored on the whole volume afterwards: reported are the steps and
seconds to Dice 0.9 (``--target``), Dice at steps 50/100/150 and at the end. The seconds
depend on the machine and its load; the steps and the Dice do not.

Usage::

    python -m benchmarks.settings_sweep [--smoke] [--datasets sample,mni,nuclei2d,nuclei3d]
        [--variants '{}' '{"train": {"learning_rate": 0.02}}'] [--seeds 0,1,2]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from benchmarks import _common as C

MARK_STEPS = (50, 100, 150)
SNAPSHOT_EVERY = 10


def _config(variant: dict, seed: int, smoke: bool):
    from napari_unetseg.core.config import Config

    cfg = Config.from_dict(variant)
    cfg.train.device = cfg.infer.device = "cpu"
    cfg.train.seed = int(seed)
    if smoke:
        cfg.model.base_width, cfg.model.depth = 4, 2
        cfg.train.iterations = 2 * SNAPSHOT_EVERY
    return cfg


def _curve(name: str, variant: dict, seed: int, smoke: bool, target: float) -> dict:
    """Train on a sparsely annotated volume; Dice of every 10th-step snapshot."""
    from benchmarks.time_to_quality import load_dataset, mean_dice
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.events import Done, Step, run_to_completion
    from napari_unetseg.core.inference import predict
    from napari_unetseg.core.training import Trainer

    ds = load_dataset(name, smoke)
    image, truth = ds["image"], ds["truth"]
    ann = sparsify(truth, 0.1, axes="zyx", mode="random", seed=0)
    classes = list(range(1, len(ds["class_names"]) + 1))
    cfg = _config(variant, seed, smoke)
    cfg.class_names = list(ds["class_names"])
    if smoke:
        cfg.data.patch_size = (8, 16, 16)  # the smoke volume is 16x32x32
    t0, paused = time.perf_counter(), 0.0
    trainer = Trainer(image[None], ann, cfg)
    snaps = []
    for ev in trainer.run():
        now = time.perf_counter() - t0 - paused
        if isinstance(ev, Step) and ev.iteration % SNAPSHOT_EVERY == 0:
            t_snap = time.perf_counter()
            snaps.append((ev.iteration, now, trainer.checkpoint()))
            paused += time.perf_counter() - t_snap
        elif isinstance(ev, Done):
            break
    curve = []
    for step, seconds, ckpt in snaps:
        pred = run_to_completion(predict(ckpt, image[None], keep_probabilities=False))
        dice = mean_dice(np.asarray(pred.result.labels), truth, classes)
        curve.append({"step": step, "seconds": round(seconds, 2), "dice": round(dice, 4)})
    hit = next((c for c in curve if c["dice"] >= target), None)
    by_step = {c["step"]: c["dice"] for c in curve}
    return {
        "curve": curve,
        "steps_to_target": hit["step"] if hit else None,
        "seconds_to_target": hit["seconds"] if hit else None,
        "dice_at_steps": {str(s): by_step.get(s) for s in MARK_STEPS},
        "dice_end": curve[-1]["dice"] if curve else None,
    }


def _nuclei(part: str, variant: dict, seed: int, smoke: bool) -> dict:
    """Instance task on a StarDist example image: train on one half, score the other."""
    from benchmarks import nuclei as N
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.inference import predict
    from napari_unetseg.core.training import Trainer

    image, mask = N.load_stardist(f"img{part}"), N.load_stardist(f"mask{part}")
    train_image, train_mask, test_image, test_mask, _ = N.split_halves(image, mask)
    cfg = _config(variant, seed, smoke)
    cfg.train.task = "instances"
    cfg.class_names = ["nucleus"]
    t0 = time.perf_counter()
    trainer = Trainer(train_image[None].astype(np.float32), N.as_annotation(train_mask), cfg)
    ckpt = run_to_completion(trainer.run()).result
    seconds = time.perf_counter() - t0
    pred = run_to_completion(predict(ckpt, test_image[None].astype(np.float32)))
    scores = N.score(np.asarray(pred.result.instances), test_mask)
    return {"train_seconds": round(seconds, 1), **scores}


def run(args) -> dict:
    env = C.environment()
    print(C.describe_env(env), file=sys.stderr)
    variants = [json.loads(v) for v in args.variants]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for name in args.datasets.split(","):
        for variant in variants:
            for seed in seeds:
                load0 = C.load_average()
                if name in ("sample", "mni"):
                    res: dict[str, Any] = _curve(name, variant, seed, args.smoke, args.target)
                elif name in ("nuclei2d", "nuclei3d"):
                    res = _nuclei(name[-2:], variant, seed, args.smoke)
                else:
                    raise SystemExit(f"unknown dataset {name!r}")
                res.update(dataset=name, variant=variant, seed=seed, load_before=load0)
                results.append(res)
                shown = {k: v for k, v in res.items() if k != "curve"}
                print(json.dumps(shown), file=sys.stderr, flush=True)
    return {
        "benchmark": "settings_sweep",
        "command": "python -m benchmarks.settings_sweep " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "target": args.target,
        "load_average_at_end": C.load_average(),
        "results": results,
    }


def summary_rows(data: dict) -> list[dict]:
    """One row per dataset and variant: each seed's figures, side by side."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in data["results"]:
        key = (r["dataset"], json.dumps(r["variant"], sort_keys=True))
        groups.setdefault(key, []).append(r)
    rows = []
    for (name, variant), runs in groups.items():

        def each(key: str, runs: list[dict] = runs) -> str:
            return ", ".join("-" if r.get(key) is None else f"{r[key]:g}" for r in runs)

        row = {"dataset": name, "variant": variant, "seeds": each("seed")}
        if name in ("sample", "mni"):
            row["figures"] = (
                f"steps to {data['target']}: {each('steps_to_target')}; "
                f"Dice at the end: {each('dice_end')}"
            )
        else:
            row["figures"] = f"F1: {each('f1')}; foreground Dice: {each('foreground_dice')}"
        rows.append(row)
    return rows


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    cols = [
        ("dataset", "dataset", ""),
        ("variant", "variant", ""),
        ("seeds", "seeds", ""),
        ("figures", "per seed", ""),
    ]
    print(C.table(summary_rows(data), cols))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("settings_sweep", __doc__)
    p.add_argument("--smoke", action="store_true", help="tiny networks and volumes")
    p.add_argument("--datasets", default="sample,mni,nuclei2d,nuclei3d")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["{}", '{"train": {"learning_rate": 0.02}}'],
        help="JSON settings applied on top of Config(); '{}' is the default",
    )
    p.add_argument("--seeds", default="0,1,2", help="train.seed values, comma separated")
    p.add_argument("--target", type=float, default=0.9, help="Dice whose first step is reported")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.argv = argv
    return C.report("settings_sweep", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
