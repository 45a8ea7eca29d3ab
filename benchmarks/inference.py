"""Sliding-window inference: napari-unetseg against MONAI's ``sliding_window_inference``.

Both sides run the SAME network (a :class:`napari_unetseg.core.model.UNet` with the default
configuration, briefly trained on the built-in sample so that the argmax is meaningful) on
the same normalised volume with the same window (the training patch size), the same
overlap (0.25) and Gaussian blending (MONAI ``mode="gaussian", sigma_scale=0.125``).

Variants, each measured in a fresh interpreter (clean peak RSS, no thread settings leaking
from one variant to the next), repeats interleaved, medians reported:

* ``monai_sw1``   MONAI, ``sw_batch_size=1`` (what a user gets by default), float32, under
                  ``torch.no_grad()``, softmax of the blended logits;
* ``monai_swB``   MONAI with ``sw_batch_size`` B (``--monai-batches``, default 1,2,4,8: MONAI
                  tuned as ours is), ``_bf16``: the network under bfloat16 autocast
                  (the blending in float32), as ``ours_sw_bf16``; the network in the
                  default memory layout, as MONAI's tutorials run it; ``_cl``
                  (``--compare-layouts``): in the layout ours uses
                  (``UNet.use_channels_last``), to show how much of a gap is the layout;
                  ``_ow`` (``--compare-windows``): with the window ours uses
                  (``prediction_layout``: the patch with added context) instead of the
                  training patch, at MONAI's overlap (a scalar: ours' steps, where a
                  grown window keeps its margin, are not available to it), to show how
                  much of a gap is the window;
* ``ours_sw``     :func:`napari_unetseg.core.inference.sliding_window` with the default
                  :class:`InferConfig` (window batch as planned), the window and steps
                  ``predict`` uses (``prediction_layout``) and the memory layout
                  ``predict`` uses (:func:`napari_unetseg.core.model.prefers_channels_last`),
                  float32; ``_bf16``: bfloat16 autocast;
* ``ours_predict`` :func:`napari_unetseg.core.inference.predict` from the raw image
                  (normalisation, sliding window, argmax: the whole user-facing call),
                  labels only (``keep_probabilities=False``), as ``unetseg predict``
                  without ``--probabilities``.

Reported: voxels per second, ratio to ``monai_sw1`` and (goals) of ours to MONAI at its
fastest window batch in the same precision, peak RSS and its rise during the call, the
share of voxels whose argmax agrees with the float32 MONAI reference, and the mean
foreground Dice against the volume's dense truth.

Usage::

    python -m benchmarks.inference [--smoke] [--sizes 64x256x256,128x512x512]
        [--repeats 3] [--out benchmarks/results/inference.json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _common as C

MODULE = "benchmarks.inference"
FULL_SIZES = "64x256x256,128x512x512"
SMOKE_SIZES = "12x40x36"
#: Sizes above this many voxels get a single repeat and only MONAI sw 1 and ours' batch.
LARGE_VOXELS = 20_000_000
GOAL_RATIO = 1.5
#: ours may be at most this much below MONAI's Dice against the truth (higher is no failure)
DICE_TOLERANCE = 0.005
#: MONAI's overlap in its tutorials and in this comparison.
MONAI_OVERLAP = 0.25
GOAL_AGREEMENT = 0.999


# --------------------------------------------------------------------------- set-up


def _parse_sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        parts = tuple(int(p) for p in item.lower().split("x"))
        if len(parts) != 3 or min(parts) < 1:
            raise SystemExit(f"--sizes wants ZxYxX triples separated by commas, got {item!r}")
        sizes.append(parts)
    return sizes


def _base_config(smoke: bool):
    from napari_unetseg.core.config import Config

    cfg = Config()
    cfg.model.num_classes = 3  # the sample has two foreground classes
    cfg.class_names = ["bright", "textured"]
    cfg.train.device = "cpu"
    cfg.infer.device = "cpu"
    cfg.data.validation_fraction = 0.0
    if smoke:
        cfg.model.base_width = 4
        cfg.model.depth = 2
        cfg.data.patch_size = (8, 16, 16)
        cfg.train.batch_size = 1
    return cfg


def prepare_model(args, workdir: Path) -> dict[str, Any]:
    """Train briefly (or load ``--checkpoint``, or keep random weights with
    ``--random-weights``) and write the model where the workers find it:
    ``weights.safetensors`` + ``config.json`` (the network alone) and, unless the weights
    are random, ``model.safetensors`` (a full checkpoint, for ``predict``).

    Returns the facts the workers need: window, window batch, model description.
    """
    from safetensors.torch import save_file

    from napari_unetseg.core.inference import auto_window_batch

    info: dict[str, Any] = {}
    ckpt = None
    if args.random_weights:
        import torch

        from napari_unetseg.core.data import fit_normalizer
        from napari_unetseg.core.model import UNet
        from napari_unetseg.core.planning import make_plan
        from napari_unetseg.core.sample import make_sample

        cfg = _base_config(args.smoke)
        image, _, _ = make_sample(shape=(16, 32, 32) if args.smoke else (64, 128, 128))
        make_plan(image.shape, (1.0, 1.0, 1.0), 1, cfg).apply(cfg)
        torch.manual_seed(0)
        model = UNet(cfg.model).eval()
        normalizer = fit_normalizer(image[None], cfg.data)
        info["weights_from"] = "random (He initialisation, seed 0)"
    else:
        from napari_unetseg.core.checkpoint import load_checkpoint, save_checkpoint

        if args.checkpoint:
            ckpt = load_checkpoint(args.checkpoint)
            info["weights_from"] = f"checkpoint {args.checkpoint}"
        else:
            ckpt = _train_briefly(args, info)
        cfg = ckpt.config
        model = ckpt.build_model("cpu")
        normalizer = ckpt.normalizer
        save_checkpoint(ckpt, workdir / "model.safetensors")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(workdir / "weights.safetensors"))
    (workdir / "config.json").write_text(cfg.to_json())
    (workdir / "normalizer.json").write_text(json.dumps(normalizer.to_dict()))
    window = tuple(int(s) for s in cfg.data.patch_size)
    window_batch = cfg.infer.window_batch or auto_window_batch(window, "cpu", model)
    info.update(
        window=list(window),
        window_batch=int(window_batch),
        overlap=float(cfg.infer.overlap),
        model={
            "base_width": cfg.model.base_width,
            "depth": cfg.model.depth,
            "num_classes": cfg.model.num_classes,
            "norm": cfg.model.norm,
            "pool": cfg.model.pool,
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        infer_config=cfg.to_dict()["infer"],
        has_checkpoint=ckpt is not None,
    )
    return info


def _train_briefly(args, info: dict):
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import Trainer

    cfg = _base_config(args.smoke)
    cfg.train.iterations = args.train_iterations
    cfg.train.validate_every = 10**9
    shape = (16, 32, 32) if args.smoke else (64, 128, 128)
    image, semantic, _ = make_sample(shape=shape, seed=0)
    annotation = sparsify(semantic, fraction=0.1, seed=0)
    t0 = time.perf_counter()
    ckpt = run_to_completion(Trainer(image[None], annotation, cfg).run()).result
    info["weights_from"] = (
        f"trained {ckpt.iterations} iterations on make_sample{shape} with 10 % of "
        f"slices annotated ({time.perf_counter() - t0:.1f} s)"
    )
    return ckpt


def prepare_volume(shape, workdir: Path) -> tuple[Path, Path]:
    """Raw and normalised volumes (1, Z, Y, X) float32 written as .npy files."""
    from napari_unetseg.core.data import Normalizer
    from napari_unetseg.core.sample import make_sample

    normalizer = Normalizer.from_dict(json.loads((workdir / "normalizer.json").read_text()))
    image, truth, _ = make_sample(shape=tuple(shape), seed=1)
    np.save(workdir / f"truth_{'x'.join(map(str, shape))}.npy", truth.astype(np.uint8))
    raw = np.ascontiguousarray(image[None], dtype=np.float32)
    norm = np.ascontiguousarray(normalizer.apply(raw), dtype=np.float32)
    tag = "x".join(map(str, shape))
    raw_path, norm_path = workdir / f"raw_{tag}.npy", workdir / f"norm_{tag}.npy"
    np.save(raw_path, raw)
    np.save(norm_path, norm)
    return raw_path, norm_path


# --------------------------------------------------------------------------- worker


def _load_model(workdir: Path):
    from safetensors.torch import load_file

    from napari_unetseg.core.config import Config
    from napari_unetseg.core.model import UNet

    cfg = Config.from_json((workdir / "config.json").read_text())
    model = UNet(cfg.model)
    model.load_state_dict(load_file(str(workdir / "weights.safetensors")))
    model.eval()
    return model, cfg


def drain_sliding_window(gen) -> Any:
    """Run a sliding-window generator to its end; return what it produced (the value of a
    Done event, a returned value or the last array it yielded)."""
    from napari_unetseg.core.events import Done, Info, Progress

    result = None
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            if stop.value is not None:
                result = stop.value
            break
        if isinstance(ev, Done):
            result = ev.result
        elif not isinstance(ev, (Info, Progress)):
            result = ev
    return result


def _as_probabilities(result) -> np.ndarray:
    import torch

    if isinstance(result, tuple):
        result = result[0]
    if hasattr(result, "probabilities"):
        result = result.probabilities
    if isinstance(result, torch.Tensor):
        result = result.detach().float().cpu().numpy()
    result = np.asarray(result)
    if result.ndim == 5:
        result = result[0]
    return result


def worker(a: dict) -> dict:
    """One measurement (normally in a fresh interpreter): load, warm up on a crop of the
    volume with the very call that is timed, then time that call on the whole volume."""
    import torch

    workdir = Path(a["workdir"])
    variant = a["variant"]
    window = tuple(a["window"])
    model, cfg = _load_model(workdir)
    device = torch.device(a.get("device") or "cpu")
    model = model.to(device)
    amp_type = "cuda" if device.type == "cuda" else "cpu"
    image = np.load(a["norm_path"] if variant != "ours_predict" else a["raw_path"])
    res: dict[str, Any] = {"variant": variant, "dtype": "float32"}

    tokens = _tokens(variant)
    bf16 = "bf16" in tokens
    if variant.startswith("monai"):
        from monai.inferers import sliding_window_inference

        sw = int(a["sw_batch_size"])
        overlap = float(a["overlap"])
        if "ow" in tokens:  # ours' window instead of the training patch
            window, _ = _ours_layout(cfg, image, model, overlap)
            res["window"] = list(window)
        res["dtype"] = "bfloat16" if bf16 else "float32"
        model.use_channels_last("cl" in tokens)
        res["channels_last"] = model.channels_last

        def predictor(x):
            # mixed precision for the network only; MONAI blends what it returns, so
            # return float32 (blending in bfloat16 would lose accuracy)
            with torch.autocast(amp_type, dtype=torch.bfloat16, enabled=bf16):
                return model(x).float()

        def call(img):
            with torch.no_grad():
                logits = sliding_window_inference(
                    torch.from_numpy(img)[None].to(device),
                    roi_size=window,
                    sw_batch_size=sw,
                    predictor=predictor,
                    overlap=overlap,
                    mode="gaussian",
                    sigma_scale=0.125,
                    sw_device=device,
                    device=device,
                )
                return torch.softmax(logits, dim=1)[0].cpu()

    elif variant.startswith("ours_sw"):
        from napari_unetseg.core.device import autocast_dtype, configure_threads
        from napari_unetseg.core.inference import sliding_window

        configure_threads(cfg.train.threads)
        cfg.infer.overlap = float(a["overlap"])
        dtype = autocast_dtype(device, "bfloat16" if bf16 else "float32")
        model.place(device)  # the layout `predict` gives the network (build_model)
        res["channels_last"] = model.channels_last
        res["dtype"] = "float32" if dtype is None else str(dtype).replace("torch.", "")

        win, steps = _ours_layout(cfg, image, model, cfg.infer.overlap)
        res["window"], res["steps"] = list(win), list(steps)

        def call(img):
            return drain_sliding_window(
                sliding_window(model, img, win, cfg.infer, device=device, dtype=dtype, steps=steps)
            )

    elif variant == "ours_predict":
        from napari_unetseg.core.checkpoint import load_checkpoint
        from napari_unetseg.core.device import autocast_dtype
        from napari_unetseg.core.events import run_to_completion
        from napari_unetseg.core.inference import predict, prediction_layout

        ckpt = load_checkpoint(workdir / "model.safetensors")
        ckpt.config.infer.device = str(device)
        dt = autocast_dtype(device, ckpt.config.infer.precision)
        res["dtype"] = "float32" if dt is None else str(dt).replace("torch.", "")
        overlap = ckpt.config.infer.overlap
        grow = ckpt.config.infer.grow_windows
        layout = prediction_layout(ckpt, image.shape[1:], overlap, model.divisor, grow)
        res["window"], res["steps"] = list(layout[0]), list(layout[1])

        def call(img):
            # what `unetseg predict` does without --probabilities: labels only
            return run_to_completion(
                predict(ckpt, img, ckpt.config.infer, keep_probabilities=False)
            ).result

    else:
        raise SystemExit(f"unknown variant {variant}")

    # warm-up: the same call on a crop a little larger than one window, so that lazy
    # imports, kernel selection and first allocations are not counted as inference
    crop = tuple(slice(0, min(s, w + w // 2)) for s, w in zip(image.shape[1:], window))
    call(np.ascontiguousarray(image[(slice(None), *crop)]))

    res["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    res["rss_before_bytes"] = C.current_rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    out = call(image)
    if device.type == "cuda":
        torch.cuda.synchronize()
        res["peak_device_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    res["seconds"] = time.perf_counter() - t0
    res["cpu_seconds"] = time.process_time() - c0
    if variant == "ours_predict":
        labels = np.asarray(out.labels)
    else:
        labels = _as_probabilities(out).argmax(0)
    if a.get("labels_path"):
        np.save(a["labels_path"], labels.astype(np.uint8))
    res["shape"] = list(labels.shape)
    return res


def _sw_batch(variant: str, planned: int) -> int:
    """Windows per pass of a variant: ``monai_sw4_bf16`` -> 4; ours -> the planned batch."""
    if variant.startswith("monai_sw"):
        return int(variant[len("monai_sw") :].split("_")[0])
    return planned


def _ours_layout(
    cfg: Any, image: np.ndarray, model: Any, overlap: float
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The window and steps ``predict`` uses for this (C, *spatial) volume, from predict's
    own rule; the network's config stands in for the checkpoint (the rule reads its patch
    size), so random weights without a checkpoint work too."""
    from types import SimpleNamespace

    from napari_unetseg.core.inference import prediction_layout

    stand_in = SimpleNamespace(config=cfg)
    grow = cfg.infer.grow_windows
    return prediction_layout(stand_in, image.shape[1:], overlap, model.divisor, grow)


def _tokens(variant: str) -> set[str]:
    """The options a variant name carries, as its ``_``-separated parts: ``monai_sw8_o125_bf16``
    -> {monai, sw8, o125, bf16} (``o25``/``o125`` the overlap, ``cl`` channels-last,
    ``ow`` ours' window, ``bf16`` bfloat16 autocast)."""
    return set(variant.split("_"))


def _overlap(variant: str, ours: float) -> float:
    """Window overlap of a variant: MONAI's tutorial value, ours from the model, or the
    other tool's where the variant says so (``_o25`` / ``_o125``)."""
    tokens = _tokens(variant)
    if "o25" in tokens:
        return 0.25
    if "o125" in tokens:
        return 0.125
    return MONAI_OVERLAP if variant.startswith("monai") else ours


def _mean_dice(labels: np.ndarray, truth: np.ndarray) -> float:
    """Mean foreground Dice of (Z, Y, X) labels against the sample's dense truth."""
    out = []
    for k in [int(k) for k in np.unique(truth) if k > 0]:
        p, t = labels == k, truth == k
        out.append(2.0 * float((p & t).sum()) / max(1.0, float(p.sum() + t.sum())))
    return float(np.mean(out)) if out else 1.0


def _goals(rows: list[dict], tag: str) -> dict:
    """Per precision: ours_sw against MONAI at its best window batch (same precision)."""
    out: dict[str, Any] = {}
    mine = [r for r in rows if r["size"] == tag]
    for suffix, prec in (("", "float32"), ("_bf16", "bfloat16")):
        same = [
            r
            for r in mine
            if r["variant"].startswith("monai")
            and ("bf16" in _tokens(r["variant"])) == bool(suffix)
            and r.get("overlap") == MONAI_OVERLAP
        ]
        # MONAI as its tutorials run it, and MONAI given ours' layout (--compare-layouts)
        # or ours' window (--compare-windows)
        monai = [r for r in same if not {"cl", "ow"} & _tokens(r["variant"])]
        monai_cl = [r for r in same if "cl" in _tokens(r["variant"])]
        monai_ow = [r for r in same if "ow" in _tokens(r["variant"])]
        ours = next((r for r in mine if r["variant"] == f"ours_sw{suffix}"), None)
        if not monai or ours is None:
            continue
        best = min(monai, key=lambda r: r["seconds"])
        ratio = best["seconds"] / ours["seconds"]
        out[prec] = {
            "monai_best": best["variant"],
            "ratio_vs_monai_best": ratio,
            "dice_ours": ours["dice_vs_truth"],
            "dice_monai_best": best["dice_vs_truth"],
            "speed_goal_met": ratio >= GOAL_RATIO,
            "dice_difference": ours["dice_vs_truth"] - best["dice_vs_truth"],
            # the speed may not be bought with accuracy: at most 0.005 below MONAI's
            "dice_goal_met": ours["dice_vs_truth"] >= best["dice_vs_truth"] - DICE_TOLERANCE,
        }
        if monai_ow:  # MONAI given ours' window: the part of the gap that is the window
            best_ow = min(monai_ow, key=lambda r: r["seconds"])
            out[prec]["monai_our_window"] = best_ow["variant"]
            out[prec]["ratio_vs_monai_our_window"] = best_ow["seconds"] / ours["seconds"]
            out[prec]["dice_monai_our_window"] = best_ow["dice_vs_truth"]
        if monai_cl:  # MONAI given ours' memory layout: the part of the gap that is layout
            best_cl = min(monai_cl, key=lambda r: r["seconds"])
            out[prec]["monai_channels_last"] = best_cl["variant"]
            out[prec]["ratio_vs_monai_channels_last"] = best_cl["seconds"] / ours["seconds"]
    return out


def _in_process(args: dict) -> dict:
    """The worker called in this interpreter (``--inprocess``: quick, but the memory
    figures then describe the whole run, not one measurement)."""
    res = worker(args)
    res["peak_rss_bytes"] = C.peak_rss_bytes()
    return res


# --------------------------------------------------------------------------- main


def run(args) -> dict:
    env = C.environment()
    print(C.describe_env(env), file=sys.stderr)
    sizes = _parse_sizes(args.sizes or (SMOKE_SIZES if args.smoke else FULL_SIZES))
    repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 3)
    with tempfile.TemporaryDirectory(prefix="unetseg-bench-") as tmp:
        workdir = Path(tmp)
        print("preparing the model ...", file=sys.stderr, flush=True)
        info = prepare_model(args, workdir)
        window, wb = info["window"], info["window_batch"]
        rows = []
        for shape in sizes:
            n_vox = int(np.prod(shape))
            large = n_vox > LARGE_VOXELS
            reps = args.large_repeats if (large and args.large_repeats) else repeats
            raw_path, norm_path = prepare_volume(shape, workdir)
            batches = [int(b) for b in args.monai_batches.split(",")]
            if large and not args.all_variants:
                batches = [b for b in batches if b == 1 or b == wb]
            precisions = args.precisions.split(",")
            variants = []
            for prec in precisions:
                suffix = "" if prec == "float32" else "_bf16"
                variants += [f"monai_sw{b}{suffix}" for b in batches]
                variants.append(f"ours_sw{suffix}")
                if args.compare_overlaps and not large:
                    # each tool at the other's overlap: which part of a gap is the layout
                    other = "o125" if info["overlap"] == MONAI_OVERLAP else "o25"
                    variants.append(f"ours_sw_{other}{suffix}")
                    variants.append(f"monai_sw{max(batches)}_o125{suffix}")
                if args.compare_layouts:
                    variants.append(f"monai_sw{max(batches)}_cl{suffix}")
                if args.compare_windows:
                    variants.append(f"monai_sw{max(batches)}_ow{suffix}")
            if info["has_checkpoint"]:
                variants.append("ours_predict")
            tag = "x".join(map(str, shape))
            print(f"volume {tag}: {variants}, {reps} repeat(s)", file=sys.stderr, flush=True)

            def make(variant, rep_box, tag=tag, raw_path=raw_path, norm_path=norm_path):
                def fn():
                    rep_box[0] += 1
                    labels_path = (
                        workdir / f"labels_{variant}_{tag}.npy" if rep_box[0] == 1 else None
                    )
                    runner = _in_process if args.inprocess else partial(C.run_worker, MODULE)
                    return runner(
                        {
                            "workdir": str(workdir),
                            "variant": variant,
                            "window": window,
                            "sw_batch_size": _sw_batch(variant, wb),
                            "overlap": _overlap(variant, info["overlap"]),
                            "raw_path": str(raw_path),
                            "device": args.device,
                            "norm_path": str(norm_path),
                            "labels_path": str(labels_path) if labels_path else None,
                        },
                    )

                return fn

            runs = C.interleave({v: make(v, [0]) for v in variants}, reps)
            ref = variants[0]  # monai_sw1 unless --monai-batches leaves it out
            ref_labels = np.load(workdir / f"labels_{ref}_{tag}.npy")
            truth = np.load(workdir / f"truth_{tag}.npy")
            ref_s = C.median([r["seconds"] for r in runs[ref]])
            ref_cpu = C.median([r.get("cpu_seconds") for r in runs[ref]])
            for v in variants:
                labels = np.load(workdir / f"labels_{v}_{tag}.npy")
                sec = C.median([r["seconds"] for r in runs[v]])
                rows.append(
                    {
                        "size": tag,
                        "variant": v,
                        "sw_batch": _sw_batch(v, wb),
                        "overlap": _overlap(v, info["overlap"]),
                        "dice_vs_truth": _mean_dice(labels, truth),
                        "repeats": reps,
                        "seconds": sec,
                        "seconds_all": [r["seconds"] for r in runs[v]],
                        "cpu_seconds": C.median([r.get("cpu_seconds") for r in runs[v]]),
                        "voxels_per_second": n_vox / sec,
                        "mvoxels_per_second": n_vox / sec / 1e6,
                        "ratio_vs_monai_sw1": ref_s / sec,
                        "cpu_ratio_vs_monai_sw1": ref_cpu
                        / C.median([r.get("cpu_seconds") for r in runs[v]]),
                        "peak_rss_mib": C.mib(max(r["peak_rss_bytes"] for r in runs[v])),
                        "rss_rise_mib": C.mib(
                            max(
                                max(0, r["peak_rss_bytes"] - r["rss_before_bytes"])
                                for r in runs[v]
                            )
                        ),
                        "reference": ref,
                        "argmax_agreement": float((labels == ref_labels).mean()),
                        "agreement_pct": 100.0 * float((labels == ref_labels).mean()),
                        "threads": runs[v][0].get("threads"),
                        "dtype": runs[v][0].get("dtype"),
                        "window": "x".join(map(str, runs[v][0].get("window", window))),
                        # ours: the step between windows per axis (a grown window keeps
                        # its context window's margin); MONAI: from its overlap
                        "steps": runs[v][0].get("steps"),
                        "peak_device_mib": runs[v][0].get("peak_device_mib"),
                        "channels_last": runs[v][0].get("channels_last"),
                    }
                )
    goals = {tag: _goals(rows, tag) for tag in {r["size"] for r in rows}}
    return {
        "benchmark": "inference",
        "command": "python -m benchmarks.inference " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "setup": {
            **info,
            "overlap": {"monai": MONAI_OVERLAP, "ours": info["overlap"]},
            "blend": "gaussian, sigma_scale 0.125 (MONAI); ours: InferConfig default",
            "reference": "monai.inferers.sliding_window_inference, float32, torch.no_grad",
        },
        "goals": {"ratio": GOAL_RATIO, "argmax_agreement": GOAL_AGREEMENT, "per_size": goals},
        "load_average_at_end": C.load_average(),
        "measured_in": "this interpreter" if args.inprocess else "a fresh interpreter each",
        "results": rows,
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    s = data["setup"]
    print(f"window {s['window']}, window batch {s['window_batch']}, weights: {s['weights_from']}")
    print(
        C.table(
            data["results"],
            [
                ("size", "volume", ""),
                ("variant", "variant", ""),
                ("window", "window", ""),
                ("sw_batch", "batch", "d"),
                ("overlap", "overlap", ".3g"),
                ("dtype", "dtype", ""),
                ("seconds", "seconds", ".2f"),
                ("mvoxels_per_second", "Mvox/s", ".3f"),
                ("ratio_vs_monai_sw1", "x MONAI", ".2f"),
                ("cpu_seconds", "CPU s", ".1f"),
                ("cpu_ratio_vs_monai_sw1", "x MONAI (CPU s)", ".2f"),
                ("peak_rss_mib", "peak MiB", ".0f"),
                ("rss_rise_mib", "rise MiB", ".0f"),
                ("agreement_pct", "agree %", ".3f"),
                ("dice_vs_truth", "Dice", ".4f"),
            ],
        )
    )
    for tag, per in data["goals"]["per_size"].items():
        for prec, g in per.items():
            print(
                f"{tag} {prec}: ours_sw {g['ratio_vs_monai_best']:.2f}x {g['monai_best']} "
                f"(Dice {g['dice_ours']:.4f} vs {g['dice_monai_best']:.4f}; speed goal "
                f"{'met' if g['speed_goal_met'] else 'NOT met'})"
            )
            if "monai_our_window" in g:
                print(
                    f"{tag} {prec}: ours_sw {g['ratio_vs_monai_our_window']:.2f}x "
                    f"{g['monai_our_window']} at ours' window (Dice "
                    f"{g['dice_monai_our_window']:.4f})"
                )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("inference", __doc__)
    p.add_argument("--smoke", action="store_true", help="tiny model and volume, 1 repeat")
    p.add_argument("--sizes", help=f"volumes ZxYxX, comma separated (default {FULL_SIZES})")
    p.add_argument("--repeats", type=int, help="interleaved repeats (default 3)")
    p.add_argument(
        "--large-repeats",
        type=int,
        default=1,
        help=f"repeats for volumes over {LARGE_VOXELS:,} voxels (default 1)",
    )
    p.add_argument(
        "--all-variants",
        action="store_true",
        help="all MONAI window batches on large volumes (default: 1 and ours)",
    )
    p.add_argument(
        "--compare-overlaps",
        action="store_true",
        help="also ours at the other overlap (0.125 / 0.25) and MONAI at 0.125",
    )
    p.add_argument(
        "--compare-layouts",
        action="store_true",
        help="also MONAI at its largest window batch with the network channels-last, as ours",
    )
    p.add_argument(
        "--compare-windows",
        action="store_true",
        help="also MONAI at its largest window batch with ours' window instead of the patch",
    )
    p.add_argument("--monai-batches", default="1,2,4,8", help="MONAI sw_batch_size values to try")
    p.add_argument(
        "--precisions",
        default="float32,bfloat16",
        help="float32 and/or bfloat16 (autocast on both sides)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (timed on that device)")
    p.add_argument("--checkpoint", help="use this model instead of training one briefly")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained network (no predict variant: it needs a checkpoint)",
    )
    p.add_argument(
        "--train-iterations",
        type=int,
        default=None,
        help="iterations of the brief training (default 40; smoke 2)",
    )
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/...)")
    p.add_argument(
        "--inprocess",
        action="store_true",
        help="measure in this interpreter (default with --smoke; memory figures "
        "then cover the whole run)",
    )
    p.add_argument(
        "--subprocess",
        action="store_true",
        help="with --smoke: still measure each variant in a fresh interpreter",
    )
    args = p.parse_args(argv)
    args.argv = argv
    args.inprocess = args.inprocess or (args.smoke and not args.subprocess)
    if args.train_iterations is None:
        args.train_iterations = 2 if args.smoke else 40
    return C.report("inference", args, run, print_table)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        C.worker_entry(worker)
    else:
        sys.exit(main())
