"""Training throughput: the napari-unetseg Trainer against a plain PyTorch loop.

The reference is the loop a course notebook writes: the same U-Net (same configuration,
same patch and batch size), float32, default memory format, ``torch.optim.Adam``,
``nn.CrossEntropyLoss(ignore_index=-1)``, patches cut by a simple numpy random crop, no
augmentation, no channels_last, no thread tuning. Ours is
:class:`napari_unetseg.core.training.Trainer` with the default settings (its sampler,
augmentation, cross-entropy + Dice loss, precision and thread choice), validation moved
out of the measured window.

Both run on :func:`make_sample` (64x128x128) with 10 % of the slices annotated, each
repeat in a fresh interpreter, repeats interleaved (reference, ours, ...); after
``--warmup`` steps, ``--steps`` steps are timed. Throughput is patch voxels per second
(batch x patch voxels per step, the same work on both sides); annotated voxels per second
is reported too.

Each run also records its start-up: the seconds from entering the worker's training
function (torch already imported) to the end of the first step. ``--startup`` adds the
variant ``ours_torch_adamw``, the Trainer with ``torch.optim.AdamW`` put back in place of
its own (:mod:`napari_unetseg.core.optim`), whose creation imports ``torch._dynamo``.
``--norm-backward`` adds ``ours_torch_norm_backward``, the Trainer with torch's own
channels-last group-norm backward in place of the model's (``_ChannelsLastNorm``).
``--float32`` adds ``ours_float32``, the Trainer with ``train.precision: float32``: on a
CPU with native bfloat16, ``auto`` trains under bfloat16 autocast while the reference
runs in float32, and this variant compares at equal precision.

Usage::

    python -m benchmarks.training [--smoke] [--steps 20] [--repeats 3] [--compiled]
        [--startup] [--norm-backward] [--float32] [--out benchmarks/results/training.json]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import _common as C

MODULE = "benchmarks.training"
GOAL_RATIO = 1.5


def _config(smoke: bool):
    from napari_unetseg.core.config import Config

    cfg = Config()
    cfg.model.num_classes = 3
    cfg.class_names = ["bright", "textured"]
    cfg.train.device = "cpu"
    cfg.infer.device = "cpu"
    if smoke:
        cfg.model.base_width = 4
        cfg.model.depth = 2
        cfg.data.patch_size = (8, 16, 16)
        cfg.train.batch_size = 1
    return cfg


def _data(smoke: bool):
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.sample import make_sample

    shape = (16, 32, 32) if smoke else (64, 128, 128)
    image, semantic, _ = make_sample(shape=shape, seed=0)
    annotation = sparsify(semantic, fraction=0.1, seed=0)
    return image, annotation


def resolve_config(smoke: bool) -> dict:
    """Fill the planned values (patch size, pooling, batch size) so both sides agree."""
    from napari_unetseg.core.planning import make_plan

    cfg = _config(smoke)
    image, _ = _data(smoke)
    return make_plan(image.shape, (1.0, 1.0, 1.0), 1, cfg).apply(cfg).to_dict()


# --------------------------------------------------------------------------- workers


def _reference(cfg, image, annotation, warmup: int, steps: int) -> dict:
    """The plain loop: numpy random crop, Adam, CrossEntropyLoss(ignore_index=-1)."""
    import torch
    from torch import nn

    from napari_unetseg.core.model import UNet

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    img = ((image - image.mean()) / (image.std() + 1e-8)).astype(np.float32)
    target = annotation.astype(np.int64) - 1
    patch = tuple(cfg.data.patch_size)
    bs = cfg.train.batch_size

    def random_batch():
        xs, ys = [], []
        for _ in range(bs):
            start = [int(rng.integers(0, max(s - p, 0) + 1)) for s, p in zip(img.shape, patch)]
            sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
            xs.append(img[sl][None])
            ys.append(target[sl])
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    t_start = time.perf_counter()
    first_step = None
    model = UNet(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
    model.train()
    annotated = 0
    t0 = None
    c0 = None
    for it in range(warmup + steps):
        if it == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        x, y = random_batch()
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()
        if first_step is None:
            first_step = time.perf_counter() - t_start
        if it >= warmup:
            annotated += int((y != -1).sum())
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "annotated_voxels": annotated,
        "first_step_seconds": first_step,
        "dtype": "torch.float32",
    }


def _ours(cfg, image, annotation, warmup: int, steps: int) -> dict:
    from napari_unetseg.core.events import Step
    from napari_unetseg.core.training import Trainer

    cfg.train.iterations = warmup + steps
    cfg.train.validate_every = 10**9  # validation is not throughput
    t_start = time.perf_counter()
    trainer = Trainer(image[None], annotation, cfg)
    t0 = t1 = first_step = None
    reported = []
    for ev in trainer.run():
        if isinstance(ev, Step):
            if first_step is None:
                first_step = time.perf_counter() - t_start
            if ev.iteration == warmup:
                t0, c0 = time.perf_counter(), time.process_time()
            elif ev.iteration > warmup:
                reported.append(ev.voxels_per_second)
                if ev.iteration == warmup + steps:
                    t1, c1 = time.perf_counter(), time.process_time()
    if t0 is None or t1 is None:
        raise RuntimeError("the Trainer did not report the expected Step events")
    seconds = t1 - t0
    # the Trainer's own figure: annotated patch voxels per second, averaged over steps
    annotated = float(np.median(reported)) * seconds if reported else None
    return {
        "seconds": seconds,
        "cpu_seconds": c1 - c0,
        "annotated_voxels": annotated,
        "first_step_seconds": first_step,
        "reported_vps": reported,
        "dtype": str(trainer.amp_dtype or "torch.float32"),
    }


def worker(a: dict) -> dict:
    import torch

    from napari_unetseg.core.config import Config

    cfg = Config.from_dict(a["config"])
    image, annotation = _data(a["smoke"])
    if a["variant"] == "ours_compiled":
        cfg.train.compile = True  # compiled during the warm-up steps, not timed
    if a["variant"] == "ours_float32":
        cfg.train.precision = "float32"
    if a["variant"] == "ours_torch_adamw":
        from napari_unetseg.core import training_step

        training_step.AdamW = torch.optim.AdamW  # type: ignore[assignment,misc]
    if a["variant"] == "ours_torch_norm_backward":
        from napari_unetseg.core import norms

        def torch_norm(x, weight, bias, eps):
            return torch.nn.functional.group_norm(x, x.shape[1], weight, bias, eps)

        norms._ChannelsLastNorm.apply = torch_norm  # type: ignore[method-assign]
    fn = _reference if a["variant"] == "reference" else _ours
    res = fn(cfg, image, annotation, a["warmup"], a["steps"])
    res["threads"] = torch.get_num_threads()
    res["variant"] = a["variant"]
    return res


# --------------------------------------------------------------------------- main


def run(args) -> dict:
    env = C.environment()
    print(C.describe_env(env), file=sys.stderr)
    cfg_dict = resolve_config(args.smoke)
    patch = cfg_dict["data"]["patch_size"]
    bs = cfg_dict["train"]["batch_size"]
    voxels_per_step = bs * int(np.prod(patch))
    print(f"patch {patch}, batch {bs}", file=sys.stderr, flush=True)

    def make(variant):
        return lambda: C.run_worker(
            MODULE,
            {
                "variant": variant,
                "config": cfg_dict,
                "smoke": args.smoke,
                "warmup": args.warmup,
                "steps": args.steps,
            },
        )

    variants = ["reference", "ours"] + (["ours_compiled"] if args.compiled else [])
    variants += ["ours_torch_adamw"] if args.startup else []
    variants += ["ours_torch_norm_backward"] if args.norm_backward else []
    variants += ["ours_float32"] if args.float32 else []
    runs = C.interleave({v: make(v) for v in variants}, args.repeats)
    ref_s = C.median([r["seconds"] for r in runs["reference"]])
    ref_cpu = C.median([r["cpu_seconds"] for r in runs["reference"]])
    rows = []
    for v in variants:
        sec = C.median([r["seconds"] for r in runs[v]])
        ann = C.median(
            [
                r["annotated_voxels"] / r["seconds"]
                for r in runs[v]
                if r.get("annotated_voxels") is not None
            ]
        )
        rows.append(
            {
                "variant": v,
                "steps": args.steps,
                "seconds": sec,
                "seconds_all": [r["seconds"] for r in runs[v]],
                "steps_per_second": args.steps / sec,
                "patch_voxels_per_second": args.steps * voxels_per_step / sec,
                "annotated_voxels_per_second": ann,
                "ratio_vs_reference": ref_s / sec,
                "cpu_seconds": C.median([r["cpu_seconds"] for r in runs[v]]),
                "cpu_ratio_vs_reference": ref_cpu / C.median([r["cpu_seconds"] for r in runs[v]]),
                "peak_rss_mib": C.mib(max(r["peak_rss_bytes"] for r in runs[v])),
                "first_step_seconds": C.median([r["first_step_seconds"] for r in runs[v]]),
                "first_step_seconds_all": [r["first_step_seconds"] for r in runs[v]],
                "threads": runs[v][0]["threads"],
                "dtype": runs[v][0].get("dtype"),
            }
        )
    by_name = {r["variant"]: r for r in rows}
    ratio = by_name["ours"]["ratio_vs_reference"]

    def against_ours(variant: str, key: str) -> float | None:
        """``key`` of ``variant`` / that of ours; None when the variant did not run."""
        return by_name[variant][key] / by_name["ours"][key] if variant in by_name else None

    return {
        "benchmark": "training",
        "command": "python -m benchmarks.training " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "setup": {
            "data": "make_sample 16x32x32" if args.smoke else "make_sample 64x128x128",
            "annotation": "sparsify(semantic, 0.1)",
            "patch_size": patch,
            "batch_size": bs,
            "model": {k: cfg_dict["model"][k] for k in ("base_width", "depth", "norm", "pool")},
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "repeats": args.repeats,
            "reference": "UNet + Adam + CrossEntropyLoss(ignore_index=-1), numpy random "
            "crop, float32, no augmentation, default threads",
        },
        "load_average_at_end": C.load_average(),
        "goals": {
            "ratio": GOAL_RATIO,
            "ratio_measured": ratio,
            "met": ratio >= GOAL_RATIO,
            # opt-in train.compile (its compile time excluded, as the warm-up)
            "ratio_compiled": (
                by_name["ours_compiled"]["ratio_vs_reference"]
                if "ours_compiled" in by_name
                else None
            ),
            # time to the end of the first step: torch.optim.AdamW / ours
            "startup_ratio_vs_torch_adamw": against_ours("ours_torch_adamw", "first_step_seconds"),
            # timed steps: torch's channels-last norm backward / ours
            "ratio_vs_torch_norm_backward": against_ours("ours_torch_norm_backward", "seconds"),
            # timed steps: ours in float32 / ours as configured (bfloat16 where native)
            "ratio_vs_float32": against_ours("ours_float32", "seconds"),
        },
        "results": rows,
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    s = data["setup"]
    print(f"patch {s['patch_size']}, batch {s['batch_size']}, {s['timed_steps']} timed steps")
    rows = [
        dict(
            r,
            mvps=r["patch_voxels_per_second"] / 1e6,
            amvps=(r["annotated_voxels_per_second"] or float("nan")) / 1e6,
        )
        for r in data["results"]
    ]
    print(
        C.table(
            rows,
            [
                ("variant", "variant", ""),
                ("seconds", "seconds", ".2f"),
                ("steps_per_second", "steps/s", ".2f"),
                ("mvps", "patch Mvox/s", ".3f"),
                ("amvps", "annotated Mvox/s", ".4f"),
                ("ratio_vs_reference", "x reference", ".2f"),
                ("cpu_seconds", "CPU s", ".1f"),
                ("cpu_ratio_vs_reference", "x reference (CPU s)", ".2f"),
                ("peak_rss_mib", "peak MiB", ".0f"),
                ("first_step_seconds", "s to 1st step", ".2f"),
                ("threads", "threads", "d"),
                ("dtype", "dtype", ""),
            ],
        )
    )
    g = data["goals"]
    print(
        f"ours / reference = {g['ratio_measured']:.2f} "
        f"(goal >= {g['ratio']}: {'met' if g['met'] else 'NOT met'})"
    )
    if g.get("ratio_compiled") is not None:
        print(f"ours with train.compile / reference = {g['ratio_compiled']:.2f}")
    if g.get("ratio_vs_torch_norm_backward") is not None:
        print(
            "steps with torch's channels-last norm backward / ours = "
            f"{g['ratio_vs_torch_norm_backward']:.2f}"
        )
    if g.get("ratio_vs_float32") is not None:
        print(f"steps in float32 / ours = {g['ratio_vs_float32']:.2f}")
    if g.get("startup_ratio_vs_torch_adamw") is not None:
        print(
            "start-up (to the end of the first step), torch.optim.AdamW / ours = "
            f"{g['startup_ratio_vs_torch_adamw']:.2f}"
        )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("training", __doc__)
    p.add_argument("--smoke", action="store_true", help="tiny model and volume")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    p.add_argument(
        "--compiled",
        action="store_true",
        help="also time the Trainer with train.compile (compiled in the warm-up steps)",
    )
    p.add_argument(
        "--startup",
        action="store_true",
        help="also run the Trainer with torch.optim.AdamW (start-up comparison)",
    )
    p.add_argument(
        "--norm-backward",
        action="store_true",
        help="also run the Trainer with torch's channels-last norm backward",
    )
    p.add_argument(
        "--float32",
        action="store_true",
        help="also run the Trainer with train.precision float32 (equal precision with the "
        "reference on a CPU with native bfloat16)",
    )
    p.add_argument("--out", default=None, help="JSON output")
    args = p.parse_args(argv)
    args.argv = argv
    args.steps = args.steps or (3 if args.smoke else 20)
    args.warmup = args.warmup or (1 if args.smoke else 3)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    return C.report("training", args, run, print_table)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        C.worker_entry(worker)
    else:
        sys.exit(main())
