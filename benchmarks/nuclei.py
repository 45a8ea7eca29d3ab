"""Instance segmentation of real touching nuclei, and of the built-in sample.

Data: the example images of the StarDist package (BSD-3-Clause, https://github.com/
stardist/stardist): ``img2d.tif`` + ``mask2d.tif`` (2D, a crop of the DSB2018 nuclei
data, dense instance masks) and ``img3d.tif`` + ``mask3d.tif`` (3D). Install the files
with ``pip install --no-deps stardist==0.9.2``; they are read with tifffile, the
package itself (which needs TensorFlow) is never imported.

Per dataset the instance task is trained ONCE with the default settings (except the
number of steps), on the first half of the image along its longest axis with the full
mask as annotation (mask id k -> k + 1, background -> 1); the second half is predicted
and its probabilities are turned into objects by three post-processings, compared on the
same probabilities:

a. ``old``: the former pipeline: seeds = pieces of the smoothed p_interior - p_boundary
   above 0.8 (``seeds="threshold"``), flooding the boundary probability;
b. ``new``: the current defaults of ``instance_labels`` (distance-map seeds) with the
   seed threshold of the settings (0.8); ``new_0.5``: the same with threshold 0.5;
c. ``calibrated``: ``new`` with ``interior_threshold`` and ``min_size`` chosen by
   ``core.calibrate.calibrate_instances`` on the model's probabilities of its own
   training half (nothing of the predicted half is used).

The built-in sample (``make_sample``, 64x128x128, 10 % of the slices per axis annotated
with ``sparsify``, 200 steps as in ``unetseg demo``) is trained on its sparse annotation
and the whole volume is scored against the dense truth, with the demo's ``min_size=100``
for ``old`` and ``new``.

Scores: foreground Dice, instance F1 / precision / recall at IoU 0.5, objects found /
true. Usage::

    python -m benchmarks.nuclei [--iterations N] [--quick] [--parts 2d,3d,sample]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import _common as C

SOURCE = (
    "StarDist example data (stardist 0.9.2 wheel, stardist/data/images; 2D: a crop of the "
    "DSB2018 nuclei images), BSD-3-Clause, https://github.com/stardist/stardist"
)
INSTALL = "pip install --no-deps stardist==0.9.2"
ITERATIONS = {"2d": 300, "3d": 300, "sample": 200}
QUICK_ITERATIONS = {"2d": 20, "3d": 10, "sample": 10}
GOALS = {"2d": 0.85, "3d": 0.9, "sample": 0.862}
VARIANTS = ("old", "new", "new_0.5", "calibrated")
SAMPLE_MIN_SIZE = 100  # what ``unetseg demo`` sets for the sample


def load_stardist(name: str) -> np.ndarray:
    """One of the StarDist example images (``img2d``, ``mask2d``, ``img3d``, ``mask3d``)."""
    import importlib.metadata

    import tifffile

    try:
        path = importlib.metadata.distribution("stardist").locate_file(
            f"stardist/data/images/{name}.tif"
        )
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise SystemExit(f"the StarDist example images are missing; install them: {INSTALL}")
    return tifffile.imread(str(path))


def as_annotation(mask: np.ndarray) -> np.ndarray:
    """Dense instance mask (0 = background, k = object) -> annotation (1, k + 1)."""
    return np.where(mask > 0, mask.astype(np.int32) + 1, 1).astype(np.int32)


def split_halves(image: np.ndarray, mask: np.ndarray):
    """(train image, train mask, test image, test mask): halves along the longest axis."""
    axis = int(np.argmax(image.shape))
    half = image.shape[axis] // 2
    first = [slice(None)] * image.ndim
    second = [slice(None)] * image.ndim
    first[axis], second[axis] = slice(0, half), slice(half, None)
    a, b = tuple(first), tuple(second)
    return image[a], mask[a], image[b], mask[b], axis


def _config(iterations: int):
    from napari_unetseg.core.config import Config

    cfg = Config()
    cfg.train.task = "instances"
    cfg.train.iterations = int(iterations)
    cfg.class_names = ["nucleus"]
    return cfg


def train_and_predict(train_image, annotation, test_image, iterations: int, min_size=0):
    """Train once; probabilities of the test image and of the training image."""
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.inference import predict
    from napari_unetseg.core.training import Trainer

    cfg = _config(iterations)
    cfg.infer.min_size = int(min_size)
    t0 = time.perf_counter()
    trainer = Trainer(train_image[None].astype(np.float32), annotation, cfg)
    ckpt = run_to_completion(trainer.run()).result
    train_s = time.perf_counter() - t0

    def probs(image):
        done = run_to_completion(predict(ckpt, image[None].astype(np.float32), ckpt.config.infer))
        return done.result.probabilities.astype(np.float32)

    t0 = time.perf_counter()
    p_test = probs(test_image)
    predict_s = time.perf_counter() - t0
    p_train = p_test if test_image is train_image else probs(train_image)
    return (
        p_test,
        p_train,
        {
            "train_seconds": round(train_s, 1),
            "predict_seconds": round(predict_s, 1),
            "patch_size": list(ckpt.config.data.patch_size),
            "iterations": int(ckpt.iterations),
        },
    )


def score(labels: np.ndarray, truth: np.ndarray) -> dict:
    from napari_unetseg.core.metrics import instance_metrics

    r = instance_metrics(labels, truth, iou_threshold=0.5)
    a, b = labels > 0, truth > 0
    dice = 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))
    keys = ("f1", "precision", "recall", "n_pred", "n_true", "mean_matched_iou")
    return {"foreground_dice": round(dice, 4), **{k: r[k] for k in keys}}


def compare(p_test, p_train, annotation, truth, min_size: int = 0) -> dict:
    """The three post-processings on the same probabilities."""
    from napari_unetseg.core.calibrate import calibrate_instances
    from napari_unetseg.core.postprocess import instance_labels

    out = {}
    t0 = time.perf_counter()
    out["old"] = score(instance_labels(p_test, min_size=min_size, seeds="threshold"), truth)
    out["old"]["seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    out["new"] = score(instance_labels(p_test, min_size=min_size), truth)
    out["new"]["seconds"] = round(time.perf_counter() - t0, 2)
    labels = instance_labels(p_test, interior_threshold=0.5, min_size=min_size)
    out["new_0.5"] = score(labels, truth)
    t0 = time.perf_counter()
    cal = calibrate_instances(p_train, annotation)
    cal_s = time.perf_counter() - t0
    labels = instance_labels(
        p_test, interior_threshold=cal["interior_threshold"], min_size=cal["min_size"]
    )
    out["calibrated"] = score(labels, truth)
    out["calibrated"]["calibration"] = {
        k: (float(v) if isinstance(v, np.floating) else v) for k, v in cal.items()
    }
    out["calibrated"]["calibration_seconds"] = round(cal_s, 2)
    return out


def run_nuclei(dims: str, iterations: int) -> dict:
    image = load_stardist(f"img{dims}")
    mask = load_stardist(f"mask{dims}")
    tr_img, tr_mask, te_img, te_mask, axis = split_halves(image, mask)
    annotation = as_annotation(tr_mask)
    t0 = time.perf_counter()
    p_test, p_train, timing = train_and_predict(tr_img, annotation, te_img, iterations)
    result = compare(p_test, p_train, annotation, te_mask.astype(np.int32))
    result.update(
        image_shape=list(image.shape),
        image_dtype=str(image.dtype),
        objects_in_mask=int(np.unique(mask[mask > 0]).size),
        split_axis=axis,
        train_shape=list(tr_img.shape),
        test_shape=list(te_img.shape),
        seconds=round(time.perf_counter() - t0, 1),
        **timing,
    )
    return result


def run_sample(iterations: int) -> dict:
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.sample import make_sample

    image, _, truth = make_sample()
    annotation = sparsify(truth, fraction=0.1, axes="zyx", mode="random", seed=0)
    t0 = time.perf_counter()
    p, _, timing = train_and_predict(
        image, annotation, image, iterations, min_size=SAMPLE_MIN_SIZE
    )
    result = compare(p, p, annotation, truth, min_size=SAMPLE_MIN_SIZE)
    result.update(
        image_shape=list(image.shape),
        annotated_fraction=round(float((annotation > 0).mean()), 4),
        seconds=round(time.perf_counter() - t0, 1),
        **timing,
    )
    return result


def run(args) -> dict:
    import torch

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(ITERATIONS)
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {sorted(unknown)}; use 2d, 3d, sample")
    if any(p in ("2d", "3d") for p in parts):
        load_stardist("img2d")  # fail early, with the install hint
    steps = dict(QUICK_ITERATIONS if args.quick else ITERATIONS)
    if args.iterations:
        steps = {k: int(args.iterations) for k in steps}
    env = C.environment()
    env["avx512_bf16"] = "avx512_bf16" in C.cpu_flags()
    data = {
        "benchmark": "nuclei",
        "environment": env,
        "torch": torch.__version__,
        "source": SOURCE,
        "licence": "BSD-3-Clause (StarDist example images); the sample is synthetic",
        "quick": bool(args.quick),
        "iterations": {p: steps[p] for p in parts},
        "goals_f1": GOALS,
        "results": {},
    }
    t_all = time.perf_counter()
    for part in parts:
        print(f"[{part}] training {steps[part]} steps ...", file=sys.stderr, flush=True)
        if part == "sample":
            res = run_sample(steps[part])
        else:
            res = run_nuclei(part, steps[part])
        data["results"][part] = res
        print(f"[{part}] done in {res['seconds']:.0f} s", file=sys.stderr, flush=True)
    data["total_seconds"] = round(time.perf_counter() - t_all, 1)
    data["environment"]["load_average_at_end"] = C.load_average()
    return data


def print_table(data: dict) -> None:
    rows = []
    for part, res in data["results"].items():
        for variant in VARIANTS:
            r = res[variant]
            rows.append(
                {
                    "data": part,
                    "variant": variant,
                    "dice": r["foreground_dice"],
                    "f1": r["f1"],
                    "precision": r["precision"],
                    "recall": r["recall"],
                    "found": f"{r['n_pred']}/{r['n_true']}",
                }
            )
    columns = [
        ("data", "data", ""),
        ("variant", "post-processing", ""),
        ("dice", "fg Dice", ".3f"),
        ("f1", "F1@0.5", ".3f"),
        ("precision", "precision", ".3f"),
        ("recall", "recall", ".3f"),
        ("found", "found/true", ""),
    ]
    print(C.table(rows, columns))
    for part, res in data["results"].items():
        cal = res["calibrated"]["calibration"]
        print(
            f"{part}: trained {res['train_seconds']:.0f} s ({res['iterations']} steps), "
            f"calibration {res['calibrated']['calibration_seconds']:.1f} s -> threshold "
            f"{cal['interior_threshold']:g}, min_size {cal['min_size']}"
        )


def main(argv=None) -> int:
    parser = C.arg_parser("nuclei", __doc__)
    parser.add_argument("--iterations", type=int, help="training steps for every part")
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke run)")
    parser.add_argument("--parts", default="2d,3d,sample", help="comma-separated parts")
    parser.add_argument("--out", help="JSON output (default results/nuclei.json)")
    args = parser.parse_args(argv)
    args.smoke = args.quick
    return C.report("nuclei", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
