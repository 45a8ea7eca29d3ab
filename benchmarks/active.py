"""Active annotation: does painting the suggested slices beat evenly spaced or random ones?

A simulated annotator starts from one slice per axis (the middle one) of a DENSE
reference: the slice's objects are painted (reference value + 1) and the slice is marked
complete with :func:`~napari_unetseg.core.annotations.mark_slice_complete`, as a user
does. A model is trained from scratch for ``--initial-steps``. Then, for ``--rounds``
rounds, each strategy adds ``--add`` slices of the reference and fine-tunes the previous
model for ``--steps`` steps (warm start: ``Trainer(..., resume=checkpoint)``); after each
round the whole volume is predicted and scored against the dense reference (mean
foreground Dice; instance F1 at IoU 0.5 for the instance task).

Strategies: the scores of :func:`napari_unetseg.core.suggest.suggest_slices`
(``entropy``, ``margin``, ``tta``, and ``entropy+spread``, ``tta+spread`` with
``spread=True``) with their default ``min_distance``; ``even``
(``method="diversity"``: the largest gap of the axis with the largest relative gap is
bisected, i.e. evenly spaced slices added one at a time); ``random`` (uniform among the
unannotated slices of all axes, seeded).

Reference point: a model trained from scratch for the same total number of steps with
``sparsify(truth, 0.1, mode="even")`` (10 % of the slices per axis, evenly spaced). The
goal: a suggestion strategy reaches that Dice with at most half as many slices.

Fine-tuning check (first dataset only): after the first round of the best strategy's
run, steps of fine-tuning until the Dice of the previous model is reached again,
against the steps the previous model was trained from scratch for.

Datasets: ``sample`` (:func:`make_sample`, 48x96x96, semantic: 2 classes),
``sample-instances`` (the same volume, instance task) and ``mni`` (the MNI ICBM152 2009a
T1 template shipped with nilearn, resampled by nilearn to 3 mm; reference: nilearn's
own grey- and white-matter masks, white matter winning where the two overlap).

Usage::

    python -m benchmarks.active [--smoke] [--datasets sample,mni] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import _common as C

STRATEGIES = ("entropy", "entropy+spread", "margin", "tta", "tta+spread", "even", "random")
#: torch threads (set by --threads). One by default: on a machine shared with other
#: work, two OpenMP threads on two cores spin-wait for each other (measured: 17x slower
#: steps at load average 15 on 2 cores).
THREADS = [1]


# --------------------------------------------------------------------------- data


def load_dataset(name: str, smoke: bool) -> dict:
    """{"image": (Z, Y, X) float32, "truth": (Z, Y, X) int, "task", "source"}."""
    if name in ("sample", "sample-instances"):
        from napari_unetseg.core.sample import make_sample

        shape = (24, 48, 48) if smoke else (48, 96, 96)
        image, semantic, instances = make_sample(shape=shape, seed=0)
        inst = name == "sample-instances"
        return {
            "image": image,
            "truth": instances if inst else semantic.astype(np.int32),
            "task": "instances" if inst else "semantic",
            "source": f"napari_unetseg.core.sample.make_sample(shape={shape}, seed=0)",
        }
    if name == "mni":
        return _mni(smoke)
    raise SystemExit(f"unknown dataset {name!r}: choose sample, sample-instances or mni")


def _mni(smoke: bool) -> dict:
    """The MNI152 T1 template and nilearn's grey/white-matter masks, 3 mm, cropped."""
    try:
        from nilearn import datasets
    except ImportError as e:  # pragma: no cover - an optional dependency of the benchmark
        raise SystemExit("the mni dataset needs nilearn: pip install nilearn") from e
    import nilearn

    res = 6 if smoke else 3
    t1 = datasets.load_mni152_template(resolution=res)
    gm = datasets.load_mni152_gm_mask(resolution=res)
    wm = datasets.load_mni152_wm_mask(resolution=res)
    # nibabel arrays are (X, Y, Z); the project's arrays are (Z, Y, X)
    image = np.asarray(t1.get_fdata(), dtype=np.float32).transpose(2, 1, 0)
    g = np.asarray(gm.get_fdata()).transpose(2, 1, 0) > 0
    w = np.asarray(wm.get_fdata()).transpose(2, 1, 0) > 0
    truth = np.zeros(image.shape, dtype=np.int32)
    truth[g] = 1
    truth[w] = 2  # white matter wins where nilearn's two masks overlap
    nz = np.argwhere(truth > 0)
    lo, hi = np.maximum(nz.min(0) - 2, 0), np.minimum(nz.max(0) + 3, truth.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    return {
        "image": np.ascontiguousarray(image[crop]),
        "truth": np.ascontiguousarray(truth[crop]),
        "task": "semantic",
        "source": (
            f"nilearn {nilearn.__version__} (BSD-3-Clause): load_mni152_template / "
            f"load_mni152_gm_mask / load_mni152_wm_mask(resolution={res}) = MNI ICBM152 "
            "2009a symmetric template and tissue masks (McConnell Brain Imaging Centre)"
        ),
    }


def add_slice(annotation: np.ndarray, truth: np.ndarray, axis: int, index: int) -> None:
    """Paint slice ``index`` along ``axis`` as a user would: its objects (truth + 1),
    then the rest of the slice as background."""
    from napari_unetseg.core.annotations import mark_slice_complete

    sl: list = [slice(None)] * truth.ndim
    sl[axis] = index
    t, a = truth[tuple(sl)], annotation[tuple(sl)]
    a[t > 0] = t[t > 0] + 1
    mark_slice_complete(annotation, axis, index)


def n_slices(annotation: np.ndarray) -> int:
    """Painted slices over all axes, as :func:`~napari_unetseg.core.suggest.painted_slices`
    sees them (the runs below also keep the exact list of slices they painted)."""
    from napari_unetseg.core.suggest import painted_slices

    return int(sum(len(v) for v in painted_slices(annotation).values()))


# --------------------------------------------------------------------------- model


def make_config(task: str, iterations: int, smoke: bool, lr: float | None = None):
    from napari_unetseg.core.config import Config

    cfg = Config()
    cfg.train.task = task
    cfg.train.device = "cpu"
    cfg.infer.device = "cpu"
    cfg.train.iterations = iterations
    cfg.train.validate_every = 10**6
    cfg.data.validation_fraction = 0.0
    cfg.model.base_width = 4 if smoke else 8
    cfg.model.depth = 2 if smoke else 3
    cfg.data.patch_size = (16, 32, 32)
    cfg.train.batch_size = 2
    cfg.train.threads = THREADS[0]
    if lr is not None:
        cfg.train.learning_rate = lr
    return cfg


def train(image, annotation, cfg, resume=None, on_step=None):
    """Train (or fine-tune ``resume``) for ``cfg.train.iterations`` steps; the checkpoint.
    ``on_step(trainer, iteration)`` may return True to stop early."""
    from napari_unetseg.core.events import CancelToken, Done, Step
    from napari_unetseg.core.training import Trainer

    cancel = CancelToken()
    trainer = Trainer(image[None], annotation, cfg, resume=resume, cancel=cancel)
    result = None
    for ev in trainer.run():
        if isinstance(ev, Step) and on_step is not None and on_step(trainer, ev.iteration):
            cancel.cancel()
        if isinstance(ev, Done):
            result = ev.result
    return result


def score(ckpt, image, truth, task) -> tuple[dict, np.ndarray]:
    """({"dice": mean foreground Dice, "f1": instance F1 or None}, probabilities)."""
    from napari_unetseg.core.evaluation import evaluate
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.inference import predict

    pred = run_to_completion(predict(ckpt, image[None], keep_probabilities=True)).result
    if task == "instances":
        rep = evaluate(pred.instances, truth, instances=True)
        out = {"dice": rep["foreground"]["dice"], "f1": rep["instances"]["f1"]}
    else:
        classes = [int(k) for k in np.unique(truth) if k > 0]
        rep = evaluate(pred.labels, truth, classes=classes)
        out = {"dice": float(np.mean([r["dice"] for r in rep["classes"].values()])), "f1": None}
    return out, pred.probabilities


def choose(
    strategy, ckpt, image, annotation, probabilities, k, rng, painted
) -> tuple[list, float]:
    """(K (axis, index) pairs, seconds spent choosing besides the first prediction).
    ``painted``: the set of (axis, index) painted so far."""
    from napari_unetseg.core.suggest import flip_probabilities, suggest_slices

    t0 = time.perf_counter()
    if strategy == "random":
        free = [
            (a, i)
            for a in range(annotation.ndim)
            for i in range(annotation.shape[a])
            if (a, i) not in painted
        ]
        picks = [free[j] for j in rng.choice(len(free), size=k, replace=False)]
        return picks, time.perf_counter() - t0
    method = "diversity" if strategy == "even" else strategy.split("+")[0]
    tta = flip_probabilities(ckpt, image) if method == "tta" else None
    sugg = suggest_slices(
        None if method == "diversity" else probabilities,
        annotation,
        top=k,
        method=method,
        tta_probabilities=tta,
        spread=strategy.endswith("+spread"),
    )
    return [(s.axis, s.index) for s in sugg], time.perf_counter() - t0


# --------------------------------------------------------------------------- runs


def run_dataset(name: str, args) -> dict:
    ds = load_dataset(name, args.smoke)
    image, truth, task = ds["image"], ds["truth"], ds["task"]
    print(f"{name}: {image.shape}, task {task}", file=sys.stderr, flush=True)
    ann0 = np.zeros(truth.shape, dtype=np.int32)
    for axis, n in enumerate(truth.shape):
        add_slice(ann0, truth, axis, n // 2)
    t0 = time.perf_counter()
    ckpt0 = train(image, ann0, make_config(task, args.initial_steps, args.smoke))
    s0, p0 = score(ckpt0, image, truth, task)
    print(f"  start: {n_slices(ann0)} slices, Dice {s0['dice']:.4f}", file=sys.stderr)
    out = {
        "shape": list(image.shape),
        "task": task,
        "source": ds["source"],
        "initial": {"slices": n_slices(ann0), **s0, "seconds": time.perf_counter() - t0},
        "curves": {},
    }
    total = args.initial_steps + args.rounds * args.steps
    from napari_unetseg.core.annotations import sparsify

    ref_ann = sparsify(truth, 0.1, mode="even")
    ref = train(image, ref_ann, make_config(task, total, args.smoke))
    s_ref, _ = score(ref, image, truth, task)
    out["reference_even_10pct"] = {"slices": n_slices(ref_ann), "steps": total, **s_ref}
    print(
        f"  reference: even 10 % = {n_slices(ref_ann)} slices, {total} steps: "
        f"Dice {s_ref['dice']:.4f}",
        file=sys.stderr,
        flush=True,
    )
    for strategy in args.strategies:
        rng = np.random.default_rng(args.seed)
        ann, ckpt, probs = ann0.copy(), ckpt0, p0
        painted = {(a, n // 2) for a, n in enumerate(truth.shape)}
        curve = [{"round": 0, "slices": len(painted), "steps": args.initial_steps, **s0}]
        for r in range(1, args.rounds + 1):
            picks, choose_s = choose(strategy, ckpt, image, ann, probs, args.add, rng, painted)
            for axis, index in picks:
                add_slice(ann, truth, axis, index)
                painted.add((axis, index))
            t = time.perf_counter()
            cfg = make_config(task, args.steps, args.smoke, args.finetune_lr)
            ckpt = train(image, ann, cfg, resume=ckpt)
            train_s = time.perf_counter() - t
            s, probs = score(ckpt, image, truth, task)
            curve.append(
                {
                    "round": r,
                    "slices": len(painted),
                    "painted_slices_seen": n_slices(ann),
                    "steps": args.initial_steps + r * args.steps,
                    "picks": [list(p) for p in picks],
                    "choose_seconds": choose_s,
                    "train_seconds": train_s,
                    **s,
                }
            )
            f1 = f", F1 {s['f1']:.4f}" if s["f1"] is not None else ""
            print(
                f"  {strategy:>8} round {r}: {curve[-1]['slices']} slices, Dice "
                f"{s['dice']:.4f}{f1} (picked {picks})",
                file=sys.stderr,
                flush=True,
            )
        out["curves"][strategy] = curve
    out["goal"] = _goal(out)
    return out


def _goal(out: dict) -> dict:
    target = out["reference_even_10pct"]["dice"]
    budget = out["reference_even_10pct"]["slices"] / 2
    res = {"target_dice": target, "max_slices": budget, "strategies": {}}
    for strategy, curve in out["curves"].items():
        hit = [c["slices"] for c in curve if c["dice"] >= target]
        best = max(c["dice"] for c in curve if c["slices"] <= budget)
        res["strategies"][strategy] = {
            "slices_to_target": min(hit) if hit else None,
            "met": bool(hit) and min(hit) <= budget,
            "best_dice_within_budget": best,
            "gap_within_budget": target - best,
        }
    return res


def finetune_check(name: str, args) -> dict:
    """Steps of fine-tuning after two added slices until the previous Dice is back,
    against the steps the previous model was trained from scratch for."""
    ds = load_dataset(name, args.smoke)
    image, truth, task = ds["image"], ds["truth"], ds["task"]
    ann = np.zeros(truth.shape, dtype=np.int32)
    for axis, n in enumerate(truth.shape):
        for k in (1, 2):
            add_slice(ann, truth, axis, k * n // 3)
    scratch = args.initial_steps + args.steps
    ckpt = train(image, ann, make_config(task, scratch, args.smoke))
    before, probs = score(ckpt, image, truth, task)
    from napari_unetseg.core.suggest import suggest_slices

    for s in suggest_slices(probs, ann, top=2, method=args.finetune_method):
        add_slice(ann, truth, s.axis, s.index)
    every = max(1, scratch // 20)
    curve: list[dict] = []

    def check(trainer, iteration):
        if (iteration - scratch) % every:
            return False
        d, _ = score(trainer.checkpoint(), image, truth, task)
        curve.append({"steps": iteration - scratch, "dice": d["dice"]})
        return d["dice"] >= before["dice"]

    cfg = make_config(task, scratch // 4, args.smoke, args.finetune_lr)
    train(image, ann, cfg, resume=ckpt, on_step=check)
    reached = next((c["steps"] for c in curve if c["dice"] >= before["dice"]), None)
    return {
        "scratch_steps": scratch,
        "finetune_learning_rate": args.finetune_lr,
        "dice_before": before["dice"],
        "finetune_curve": curve,
        "steps_to_previous_dice": reached,
        "met": reached is not None and reached < scratch / 4,
    }


def suggestion_speed(shape=(128, 256, 256), k: int = 3) -> dict:
    """Seconds of :func:`suggest_slices` (top 10, all axes) and :func:`uncertainty_map` on
    float32 probabilities of ``shape`` (the prediction itself excluded)."""
    from scipy import ndimage as ndi

    from napari_unetseg.core.suggest import suggest_slices, uncertainty_map

    rng = np.random.default_rng(0)
    small = rng.normal(size=(k, *(max(1, s // 8) for s in shape))).astype(np.float32)
    logits = ndi.zoom(small, (1, *(s / m for s, m in zip(shape, small.shape[1:]))), order=1)
    logits = 4.0 * logits[(slice(None), *(slice(0, s) for s in shape))]
    p = np.exp(logits - logits.max(0, keepdims=True))
    p /= p.sum(0, keepdims=True)
    flips = [np.ascontiguousarray(np.flip(p, axis=1 + a)) for a in range(3)]
    ann = np.zeros(shape, dtype=np.uint8)
    for a, n in enumerate(shape):
        sl = [slice(None)] * 3
        sl[a] = n // 2
        ann[tuple(sl)] = 1
    out = {"shape": list(shape), "classes": k}
    t = time.perf_counter()
    uncertainty_map(p)
    out["uncertainty_map_s"] = time.perf_counter() - t
    for method in ("entropy", "margin", "tta", "diversity"):
        t = time.perf_counter()
        suggest_slices(p, ann, top=10, method=method, tta_probabilities=flips)
        out[f"{method}_s"] = time.perf_counter() - t
    return out


def run(args) -> dict:
    env = C.environment()
    env["avx512_bf16"] = "avx512_bf16" in C.cpu_flags()
    print(C.describe_env(env), file=sys.stderr)
    t0 = time.perf_counter()
    data = {
        "benchmark": "active",
        "command": " ".join(sys.argv),
        "environment": env,
        "settings": {
            k: getattr(args, k)
            for k in (
                "finetune_lr",
                "rounds",
                "add",
                "steps",
                "initial_steps",
                "seed",
                "strategies",
                "smoke",
                "threads",
            )
        },
        "datasets": {},
    }
    for name in args.datasets:
        t = time.perf_counter()
        data["datasets"][name] = run_dataset(name, args)
        data["datasets"][name]["seconds"] = time.perf_counter() - t
    if args.finetune:
        data["finetune"] = finetune_check((args.datasets or ["sample"])[0], args)
    if args.speed:
        data["speed"] = suggestion_speed((16, 32, 32) if args.smoke else (128, 256, 256))
    data["seconds"] = time.perf_counter() - t0
    data["environment"]["load_average_at_end"] = C.load_average()
    return data


def print_table(data: dict) -> None:
    for name, ds in data["datasets"].items():
        ref = ds["reference_even_10pct"]
        print(
            f"\n{name} {ds['shape']} ({ds['task']}): reference even 10 % = {ref['slices']} "
            f"slices, Dice {ref['dice']:.4f}"
        )
        rows = []
        for strategy, curve in ds["curves"].items():
            for c in curve:
                rows.append({"strategy": strategy, **c})
        cols = [
            ("strategy", "strategy", ""),
            ("round", "round", "d"),
            ("slices", "slices", "d"),
            ("steps", "steps", "d"),
            ("dice", "Dice", ".4f"),
        ]
        if ds["task"] == "instances":
            cols.append(("f1", "F1", ".4f"))
        print(C.table(rows, cols))
        for strategy, g in ds["goal"]["strategies"].items():
            print(
                f"  {strategy}: slices to reach {ds['goal']['target_dice']:.4f}: "
                f"{g['slices_to_target']} (budget {ds['goal']['max_slices']:g}); met {g['met']}"
            )
    if "speed" in data:
        sp = data["speed"]
        times = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in sp.items() if k.endswith("_s"))
        print(f"\nsuggestion time on {'x'.join(map(str, sp['shape']))}: {times}")
    if "finetune" in data:
        f = data["finetune"]
        print(
            f"\nfine-tuning: previous Dice {f['dice_before']:.4f} after {f['scratch_steps']} "
            f"steps from scratch; back after {f['steps_to_previous_dice']} fine-tuning steps"
        )


def main(argv=None) -> int:
    p = C.arg_parser("active", __doc__)
    p.add_argument("--datasets", default="sample,mni")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--add", type=int, default=3, help="slices added per round")
    p.add_argument("--steps", type=int, default=30, help="fine-tuning steps per round")
    p.add_argument("--initial-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--finetune-method", default="entropy")
    p.add_argument(
        "--finetune-lr",
        type=float,
        help="peak learning rate of the fine-tuning runs (default: the product's, 0.01)",
    )
    p.add_argument(
        "--speed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the suggestions on 128x256x256 probabilities",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="tiny volumes and steps (a test)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    THREADS[0] = args.threads
    import torch

    torch.set_num_threads(args.threads)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.smoke:
        args.rounds, args.steps, args.initial_steps = min(args.rounds, 2), 4, 6
    return C.report("active", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
