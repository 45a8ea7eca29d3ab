"""One model from several sparsely annotated scans against one model from one scan.

Two datasets, both made in the run (no download):

* **BraTS-like**: ``core.sample.make_brats_like`` cases, four MRI-like channels (T1, T1c,
  T2, FLAIR) with different contrasts, nested labels 1 necrosis / 2 oedema / 3 enhancing
  tumour, scored as the BraTS regions WT (1,2,3), TC (1,3) and ET (3). Three cases are
  annotated on 10 % of the slices per axis for training, one for validation; two more
  cases are never seen in training and are scored.
* **sample**: ``core.sample.make_sample`` volumes made with different seeds (two classes
  of touching blobs); three train, two unseen are scored.

Reference: the same recipe (settings, number of steps) trained on ONE of the annotated
cases. Reported: Dice per class/region on the unseen cases, mean over them, and the
ratio multi-case / one-case.

    python -m benchmarks.datasets                   # both datasets, 200 steps each
    python -m benchmarks.datasets --smoke           # tiny sizes, for the test suite
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import _common


def _cases(kind: str, seeds, shape, fraction: float):
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.sample import make_brats_like, make_sample

    out = []
    for s in seeds:
        if kind == "brats":
            image, truth = make_brats_like(shape=shape, seed=s)
        else:
            img, truth, _ = make_sample(shape=shape, seed=s)
            image = img[None]
        ann = sparsify(truth, fraction=fraction, axes="zyx", seed=s)
        out.append((Case(f"case{s}", image, ann, spacing=(1.0, 1.0, 1.0)), truth))
    return out


def _score(model, unseen, regions, class_names) -> dict[str, Any]:
    from napari_unetseg.core.api import predict
    from napari_unetseg.core.evaluation import evaluate

    per_case = []
    for case, truth in unseen:
        labels = predict(model, case.image, keep_probabilities=False).labels
        rep = evaluate(labels, truth, regions=regions, class_names=class_names)
        scores = {n: m["dice"] for n, m in rep["classes"].items()}
        scores.update({f"region {n}": m["dice"] for n, m in rep.get("regions", {}).items()})
        per_case.append(scores)
    keys = list(per_case[0])
    return {k: float(np.mean([c[k] for c in per_case])) for k in keys} | {"per_case": per_case}


def _run_dataset(kind: str, args) -> dict[str, Any]:
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.sample import BRATS_REGIONS
    from napari_unetseg.core.training import train

    shape = tuple(args.shape)
    n_train, n_unseen = 3, 2
    seeds = list(range(n_train + 1 + n_unseen))
    data = _cases(kind, seeds, shape, args.fraction)
    train_cases = [c for c, _ in data[: n_train + 1]]
    unseen = data[n_train + 1 :]
    regions = BRATS_REGIONS if kind == "brats" else None
    names = ["necrosis", "oedema", "enhancing"] if kind == "brats" else ["bright", "textured"]
    settings: dict[str, Any] = {
        "train": {"iterations": args.iterations, "seed": 0},
        "class_names": names,
        "data": {"validation_cases": [train_cases[-1].name]},
    }
    if args.smoke:
        settings["model"] = {"base_width": 4, "depth": 2}
        settings["data"]["patch_size"] = [8, 16, 16]
    out: dict[str, Any] = {
        "dataset": kind,
        "shape": list(shape),
        "train_cases": n_train,
        "unseen_cases": n_unseen,
    }
    for variant, cases in (("multi", train_cases), ("one", train_cases[:1])):
        cfg = Config.from_dict(settings)
        if variant == "one":
            cfg.data.validation_cases = None  # one case: held-out slices validate
        t0 = time.perf_counter()
        model = train(cases=cases, config=cfg)
        seconds = time.perf_counter() - t0
        out[variant] = _score(model, unseen, regions, names) | {"train_seconds": seconds}
    keys = [k for k in out["multi"] if k not in ("per_case", "train_seconds")]
    out["ratio"] = {k: out["multi"][k] / max(out["one"][k], 1e-6) for k in keys}
    return out


def run(args) -> dict[str, Any]:
    env = _common.environment()
    results = [_run_dataset(kind, args) for kind in args.datasets]
    return {
        "benchmark": "datasets",
        "environment": env,
        "settings": {
            "iterations": args.iterations,
            "fraction": args.fraction,
            "shape": list(args.shape),
            "smoke": args.smoke,
        },
        "results": results,
        "load_average_end": _common.load_average(),
    }


def print_table(data: dict) -> None:
    print(_common.describe_env(data["environment"]))
    for res in data["results"]:
        keys = [k for k in res["multi"] if k not in ("per_case", "train_seconds")]
        rows = [
            {"score": k, "multi": res["multi"][k], "one": res["one"][k], "ratio": res["ratio"][k]}
            for k in keys
        ]
        print(
            f"\n{res['dataset']}: Dice on {res['unseen_cases']} unseen cases "
            f"(train {res['multi']['train_seconds']:.0f} s / {res['one']['train_seconds']:.0f} s)"
        )
        print(
            _common.table(
                rows,
                [
                    ("score", "score", ""),
                    ("multi", "3 cases", ".3f"),
                    ("one", "1 case", ".3f"),
                    ("ratio", "ratio", ".2f"),
                ],
            )
        )


def main(argv=None) -> int:
    p = _common.arg_parser("datasets", __doc__)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--fraction", type=float, default=0.1, help="annotated slices per axis")
    p.add_argument("--shape", type=int, nargs=3, default=[48, 64, 64])
    p.add_argument(
        "--datasets", nargs="+", default=["brats", "sample"], choices=("brats", "sample")
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a test runs this)")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/datasets.json)")
    args = p.parse_args(argv)
    if args.smoke:
        args.iterations, args.shape = 2, [16, 24, 24]
    return _common.report("datasets", args, run, print_table)


if __name__ == "__main__":
    raise SystemExit(main())
