"""The headless main job on the built-in sample: what ``unetseg demo`` runs.

1. make the synthetic sample (image, dense semantic truth, dense instance truth);
2. keep about 10 % of the slices along each axis as sparse annotations;
3. train a semantic model (two classes) and an instance model (interior + boundary);
4. predict the whole volume with each, and measure against the DENSE truth;
5. write NIfTI files, the model files, ``metrics.json`` and ``figure.png`` to the output.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


#: Training steps per task when ``--iterations`` is not given.
DEMO_ITERATIONS = 200


def run_demo(
    out: Path,
    iterations: int | None = None,
    seed: int = 0,
    task: str = "both",
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    shape=(64, 128, 128),
    fraction: float = 0.1,
) -> int:
    from .core.annotations import sparsify
    from .core.checkpoint import save_checkpoint
    from .core.config import Config
    from .core.evaluation import evaluate
    from .core.inference import predict
    from .core.io import VolumeMeta, write_labels
    from .core.io.atomic import write_text_atomic
    from .core.outputs import OutputError, check_writable_folder
    from .core.progress import drain
    from .core.sample import make_sample
    from .core.training import Trainer

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} is not empty; choose another --out or pass --overwrite")
    check_writable_folder(out)
    t_start = time.perf_counter()

    image, semantic, instances = make_sample(shape=shape, seed=seed)
    meta = VolumeMeta(spacing=(1.0,) * image.ndim, source_format="array")
    tasks = ("semantic", "instances") if task == "both" else (task,)
    report: dict = {"shape": list(image.shape), "fraction_of_slices": fraction, "tasks": {}}
    write_labels(semantic, meta, out / "ground_truth.nii.gz")
    write_labels(instances, meta, out / "ground_truth_instances.nii.gz")

    predictions, annotations = {}, {}
    for t in tasks:
        truth = semantic if t == "semantic" else instances
        annotation = sparsify(truth, fraction=fraction, axes="zyx", mode="random", seed=seed)
        annotations[t] = annotation
        write_labels(annotation, meta, out / f"annotations_{t}.nii.gz")
        cfg = Config()
        cfg.train.task = t
        cfg.train.seed = seed
        cfg.train.device = device
        cfg.infer.device = device
        cfg.class_names = ["bright", "textured"] if t == "semantic" else ["object"]
        # the sample's objects hold 311 to 4932 voxels: specks under 100 are noise (on the
        # demo's models: semantic Dice 0.896 -> 0.916, instance F1 0.67 -> 0.86)
        cfg.infer.min_size = 100
        # 200 steps per task keep the demo near 2.5 minutes on 2 CPU cores; the library
        # default (300) learns a little more
        cfg.train.iterations = DEMO_ITERATIONS if iterations is None else iterations
        _log(
            f"[{t}] training on {float((annotation > 0).mean()):.1%} annotated voxels "
            f"({fraction:.0%} of slices per axis)",
            quiet,
        )
        t0 = time.perf_counter()
        trainer = Trainer(image[None], annotation, cfg, spacing=meta.spacing)
        done = drain(trainer.run(), f"train {t}", quiet)
        train_s = time.perf_counter() - t0
        ckpt = done.result
        save_checkpoint(ckpt, out / f"model_{t}.safetensors")

        t0 = time.perf_counter()
        pred = drain(
            predict(ckpt, image[None], ckpt.config.infer, keep_probabilities=False),
            f"predict {t}",
            quiet,
        ).result
        predict_s = time.perf_counter() - t0
        entry: dict = {
            "train_seconds": round(train_s, 2),
            "predict_seconds": round(predict_s, 2),
            "iterations": int(ckpt.iterations),
        }
        if t == "semantic":
            res = evaluate(pred.labels, semantic, class_names=cfg.class_names)["classes"]
            entry["classes"] = res
            entry["mean_dice"] = float(np.mean([r["dice"] for r in res.values()]))
            entry["mean_iou"] = float(np.mean([r["iou"] for r in res.values()]))
            write_labels(pred.labels, meta, out / "prediction_semantic.nii.gz")
            predictions[t] = pred.labels
        else:
            scores = evaluate(pred.instances, instances, instances=True)
            entry["foreground"] = scores["foreground"]
            entry["instances"] = scores["instances"]
            write_labels(pred.instances, meta, out / "prediction_instances.nii.gz")
            predictions[t] = pred.instances
        report["tasks"][t] = entry

    report["total_seconds"] = round(time.perf_counter() - t_start, 2)
    write_text_atomic(
        out / "metrics.json", json.dumps(report, indent=2, default=float), overwrite=True
    )
    _figure(out / "figure.png", image, semantic, instances, annotations, predictions)
    _print_summary(report, out)
    return 0


def _print_summary(report: dict, out: Path) -> None:
    lines = [
        f"napari-unetseg demo: {report['shape']} volume, "
        f"{report['fraction_of_slices']:.0%} of slices per axis annotated"
    ]
    sem = report["tasks"].get("semantic")
    if sem:
        per = ", ".join(f"{k} {v['dice']:.3f}" for k, v in sem["classes"].items())
        lines.append(
            f"  semantic : Dice {sem['mean_dice']:.3f} ({per}), IoU "
            f"{sem['mean_iou']:.3f}; trained {sem['train_seconds']:.0f} s, "
            f"predicted {sem['predict_seconds']:.1f} s"
        )
    ins = report["tasks"].get("instances")
    if ins:
        i = ins["instances"]
        lines.append(
            f"  instances: F1@0.5 {i['f1']:.3f} (precision {i['precision']:.3f}, "
            f"recall {i['recall']:.3f}, {i['n_pred']} found / {i['n_true']} true), "
            f"foreground Dice {ins['foreground']['dice']:.3f}; trained "
            f"{ins['train_seconds']:.0f} s"
        )
    lines.append(
        f"  total {report['total_seconds']:.0f} s; results in {out}/ "
        f"(metrics.json, figure.png, *.nii.gz, model_*.safetensors)"
    )
    print("\n".join(lines))


def _figure(path: Path, image, semantic, instances, annotations, predictions) -> None:
    """One row of middle-slice panels: image, annotations, truth and predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = image.shape[0] // 2
    ann = next(iter(annotations.values()))
    panels = [
        ("image (middle slice)", image[z], "gray"),
        ("sparse annotations (0 = unpainted)", ann[z], "viridis"),
        ("dense truth", semantic[z], "viridis"),
    ]
    if "semantic" in predictions:
        panels.append(("semantic prediction", predictions["semantic"][z], "viridis"))
    if "instances" in predictions:
        panels.append(("instance truth", instances[z], "tab20"))
        panels.append(("instance prediction", predictions["instances"][z], "tab20"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, data, cmap) in zip(np.atleast_1d(axes), panels):
        ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
