"""Prediction windows against Dice: the training patch, the window ``predict`` uses, and
larger ones, on the same trained models.

A 3D network trained on small patches (48^3 on the CPU) can predict with larger windows:
it is fully convolutional. Each window size gives the same model a different result,
because voxels near a window's border are predicted from padding, and because instance
norm computes its statistics over the window. This measures, per volume, the Dice against
the dense truth and the prediction time for:

* ``patch``: the training patch (MONAI's and nnU-Net's choice);
* ``default``: the windows ``predict`` picks (``prediction_layout``: the patch with added
  context, fitted to the image and inside it, and their steps);
* ``cube N``: N^3 windows (each axis no longer than the image where the image is at least
  the patch), ``--cubes``.

Volumes (``--datasets``), each with its own model trained here with the default settings
(``Config()``, ``--iterations`` steps) on 10 % of the slices along each axis
(``sparsify(truth, 0.1, axes="zyx", mode="random", seed=0)``) and scored on the whole
volume (mean foreground Dice):

* ``sample``: trained on ``make_sample((64, 128, 128), seed=0)``, scored on
  ``make_sample((64, 256, 256), seed=1)`` (the inference benchmark's volume);
* ``mni1_brain`` / ``mni1_gmwm``: the MNI152 2009 template at 1 mm (189 x 233 x 197 as
  (Z, Y, X)) with nilearn's brain mask / grey and white matter masks (3 classes: grey,
  white where not grey), trained and scored on the same volume;
* ``mni3_brain``: the same template and brain mask at 3 mm (64 x 79 x 67), the real volume
  of ``benchmarks.time_to_quality``.

``--crops z20,y40`` also scores crops of ``--crop-length`` (128) voxels of the test volume,
starting at the given voxel along z or y (the same models): where an axis is a little
longer than two windows, ``default`` grows the window along it (``inference_layout``), and
``cube 64`` shows the same model with the 64^3 windows at the overlap's steps.

The MNI152 files ship inside nilearn (package BSD-3-Clause; template (C) McConnell Brain
Imaging Centre, read here, not redistributed).

Usage::

    python -m benchmarks.window_context [--smoke] [--datasets sample,mni1_brain,...]
        [--iterations 300] [--seeds 0] [--cubes 48,64,80,96,128]
        [--crops z20,z50,y40,y90 --crop-length 128] [--out FILE]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks import _common as C
from benchmarks.time_to_quality import mean_dice

DATASETS = "sample,mni1_brain,mni1_gmwm,mni3_brain"


def _mni(resolution: int, task: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from nilearn import datasets

    def zyx(img) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(img.get_fdata()).transpose(2, 1, 0))

    image = zyx(datasets.load_mni152_template(resolution=resolution)).astype(np.float32)
    if task == "brain":
        truth = (zyx(datasets.load_mni152_brain_mask(resolution=resolution)) > 0).astype(np.int32)
        return image, truth, ["brain"]
    grey = zyx(datasets.load_mni152_gm_mask(resolution=resolution)) > 0
    white = zyx(datasets.load_mni152_wm_mask(resolution=resolution)) > 0
    truth = np.zeros(image.shape, np.int32)
    truth[grey] = 1
    truth[white & ~grey] = 2
    return image, truth, ["grey", "white"]


def load(name: str, smoke: bool) -> dict[str, Any]:
    """{"train": (image, truth), "test": (image, truth), "class_names", "source"}."""
    if name == "sample":
        from napari_unetseg.core.sample import make_sample

        train_shape, test_shape = (16, 32, 32), (16, 48, 48)
        if not smoke:
            train_shape, test_shape = (64, 128, 128), (64, 256, 256)
        image, truth, _ = make_sample(shape=train_shape, seed=0)
        test_image, test_truth, _ = make_sample(shape=test_shape, seed=1)
        return {
            "train": (np.asarray(image, np.float32), truth.astype(np.int32)),
            "test": (np.asarray(test_image, np.float32), test_truth.astype(np.int32)),
            "class_names": ["bright", "textured"],
            "source": f"make_sample({train_shape}, seed=0) -> make_sample({test_shape}, seed=1)",
        }
    if name.startswith("mni"):
        try:
            import nilearn
        except ImportError as e:  # pragma: no cover - optional dependency of the benchmark
            raise SystemExit(f"{name} needs nilearn: pip install nilearn") from e
        resolution = int(name[3]) if not smoke else 6
        image, truth, classes = _mni(resolution, name.split("_", 1)[1])
        return {
            "train": (image, truth),
            "test": (image, truth),
            "class_names": classes,
            "source": (
                f"nilearn {nilearn.__version__} MNI152 2009 template and masks at "
                f"{resolution} mm (package BSD-3-Clause; template (C) McConnell Brain Imaging "
                "Centre)"
            ),
        }
    raise SystemExit(f"unknown dataset {name!r}: choose from {DATASETS}")


def _crops(image: np.ndarray, truth: np.ndarray, spec: str, length: int) -> list[tuple]:
    """[(name, image, truth)]: the whole volume, then each crop of ``spec`` (``z20``: the
    ``length`` slices from z = 20; ``y40``: along y), cut to the volume."""
    out = [("whole", image, truth)]
    for item in [c for c in spec.split(",") if c]:
        axis, start = "zyx".index(item[0]), int(item[1:])
        sl = [slice(None)] * 3
        sl[axis] = slice(start, start + length)
        region = tuple(sl)
        out.append((item, np.ascontiguousarray(image[region]), truth[region]))
    return out


def _windows(ckpt: Any, shape: tuple[int, ...], cubes: list[int], divisor) -> dict[str, tuple]:
    from napari_unetseg.core.inference import prediction_window
    from napari_unetseg.core.inference.windows import _within_image

    patch = tuple(int(p) for p in ckpt.config.data.patch_size)
    overlap = ckpt.config.infer.overlap
    grow = ckpt.config.infer.grow_windows
    out = {"patch": patch, "default": prediction_window(ckpt, shape, overlap, divisor, grow)}
    for n in cubes:
        # longer than the patch: no further than predict's own rule lets a window go
        out[f"cube {n}"] = tuple(
            min(n, _within_image(s, p, d)) if n > p else n
            for s, p, d in zip(shape, patch, divisor)
        )
    return out


def _score(ckpt, crop, image, truth, classes, cubes, divisor, base: dict) -> list[dict]:
    """One row per window variant of one test volume (see the module docstring)."""
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.inference import predict

    rows = []
    seen: dict[tuple, dict] = {}
    for label, win in _windows(ckpt, image.shape, cubes, divisor).items():
        # the default runs predict's own layout (its steps too); the others run the
        # given window at the overlap's steps
        key = (win, label == "default")
        if key not in seen:
            t0 = time.perf_counter()
            given = None if label == "default" else win
            done = run_to_completion(
                predict(ckpt, image[None], keep_probabilities=False, window=given)
            )
            seconds = time.perf_counter() - t0
            labels = np.asarray(done.result.labels)
            seen[key] = {
                "dice": mean_dice(labels, truth, list(range(1, classes + 1))),
                "seconds": seconds,
            }
        row = {
            **base,
            "crop": crop,
            "shape": "x".join(map(str, image.shape)),
            "variant": label,
            "window": "x".join(map(str, win)),
            **seen[key],
        }
        print(
            f"  {crop:6s} {label:9s} {row['window']:12s} Dice {row['dice']:.4f} "
            f"{row['seconds']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


def run(args) -> dict:
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import Done
    from napari_unetseg.core.training import Trainer

    env = C.environment()
    print(C.describe_env(env), file=sys.stderr)
    cubes = [int(c) for c in args.cubes.split(",") if c]
    rows, sources = [], {}
    for name in args.datasets.split(","):
        ds = load(name, args.smoke)
        sources[name] = ds["source"]
        (image, truth), (test_image, test_truth) = ds["train"], ds["test"]
        classes = len(ds["class_names"])
        ann = sparsify(truth, 0.1, axes="zyx", mode="random", seed=0)
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = Config()
            cfg.train.seed = seed
            cfg.train.iterations = args.iterations
            cfg.class_names = list(ds["class_names"])
            if args.smoke:
                cfg.model.base_width, cfg.model.depth = 4, 2
                cfg.data.patch_size = [8, 16, 16]
            print(f"{name} seed {seed}: training {args.iterations} steps ...", file=sys.stderr)
            t0 = time.perf_counter()
            ckpt = None
            for ev in Trainer(image[None], ann, cfg).run():
                if isinstance(ev, Done):
                    ckpt = ev.result
            assert ckpt is not None
            train_seconds = time.perf_counter() - t0
            divisor = ckpt.build_model("cpu").divisor
            for crop, test_img, test_lab in _crops(
                test_image, test_truth, args.crops, args.crop_length
            ):
                rows += _score(
                    ckpt,
                    crop,
                    test_img,
                    test_lab,
                    classes,
                    cubes,
                    divisor,
                    {
                        "dataset": name,
                        "seed": seed,
                        "iterations": args.iterations,
                        "train_seconds": train_seconds,
                    },
                )
    return {
        "benchmark": "window_context",
        "command": "python -m benchmarks.window_context " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "settings": {
            "defaults": "Config() with train.iterations and train.seed as given",
            "annotation": "sparsify(truth, 0.1, axes='zyx', mode='random', seed=0)",
            "crops": {"starts": args.crops, "length": args.crop_length},
            "sources": sources,
        },
        "load_average_at_end": C.load_average(),
        "results": rows,
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    cols = [
        ("dataset", "volume", ""),
        ("crop", "crop", ""),
        ("shape", "shape", ""),
        ("seed", "seed", "d"),
        ("variant", "variant", ""),
        ("window", "window", ""),
        ("dice", "Dice", ".4f"),
        ("seconds", "predict s", ".2f"),
    ]
    print(C.table(data["results"], cols))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("window_context", __doc__)
    p.add_argument("--smoke", action="store_true", help="tiny volumes and network")
    p.add_argument("--datasets", default=DATASETS)
    p.add_argument("--iterations", type=int, default=300, help="training steps per model")
    p.add_argument("--seeds", default="0", help="training seeds, comma separated")
    p.add_argument("--cubes", default="48,64,80,96,128", help="N for N^3 windows")
    p.add_argument(
        "--crops", default="", help="crops of the test volume to score too, e.g. z20,y40"
    )
    p.add_argument("--crop-length", type=int, default=128, help="voxels along the crop's axis")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.iterations = min(args.iterations, 3)
        args.cubes = "8,16"
    args.argv = argv
    return C.report("window_context", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
