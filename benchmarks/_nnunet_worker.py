"""nnU-Net v2 side of :mod:`benchmarks.time_to_quality`, run by nnU-Net's own interpreter.

``python benchmarks/_nnunet_worker.py ARGS.json`` (ARGS as written by time_to_quality;
the dataset itself, an nnU-Net raw folder with the ignore label, is written beforehand
by ``time_to_quality`` with the project's ``write_nnunet_dataset``). The clock starts
before ``nnUNetv2_plan_and_preprocess`` and includes the trainer's set-up. The trainer is
``nnUNetTrainer`` with 25 training and 5 validation iterations per epoch (its default:
250 + 50), fold ``all``, device cpu; the network is snapshotted at fixed wall times and
the snapshots are evaluated after the clock stopped with ``nnUNetPredictor`` (Gaussian,
step 0.5, no mirroring). Prints one JSON line. Imports nothing of napari-unetseg.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


class _Stop(Exception):
    pass


def _times(budget: float) -> list[float]:
    times = set(range(10, 61, 10)) | {90, 120} | set(range(180, 3601, 60))
    return [float(t) for t in sorted(times) if t <= budget] or [float(budget)]


def main(arg_path: str) -> dict:
    a = json.loads(Path(arg_path).read_text())
    root = Path(a["workdir"])
    raw, pre, res = root / "raw", root / "preprocessed", root / "results"
    os.environ.update(
        nnUNet_raw=str(raw),
        nnUNet_preprocessed=str(pre),
        nnUNet_results=str(res),
        nnUNet_n_proc_DA="1",
        nnUNet_compile="false",
    )
    t0 = time.perf_counter()
    bindir = Path(sys.executable).parent
    plan = subprocess.run(
        [
            str(bindir / "nnUNetv2_plan_and_preprocess"),
            "-d",
            str(a["dataset_id"]),
            "-c",
            "3d_fullres",
            "-np",
            "1",
            "-npfp",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    if plan.returncode != 0:
        raise SystemExit(plan.stderr[-3000:] + plan.stdout[-2000:])
    plan_s = time.perf_counter() - t0

    import nnunetv2
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(int(a.get("threads") or torch.get_num_threads()))
    due = _times(a["budget"])
    snaps: list[dict] = []
    box = {"paused": 0.0, "iters": 0}

    class Trainer(nnUNetTrainer):
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            # nnU-Net records its constructor's arguments by name: keep them explicit
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = 25
            self.num_val_iterations_per_epoch = 5
            self.num_epochs = 1000

        def train_step(self, batch):
            out = super().train_step(batch)
            box["iters"] += 1
            now = time.perf_counter() - t0 - box["paused"]
            box.setdefault("first", now)
            box["last"] = now
            if due and now >= due[0]:
                ts = time.perf_counter()
                state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
                while due and now >= due[0]:
                    snaps.append({"due": due.pop(0), "seconds": now, "state": state})
                box["paused"] += time.perf_counter() - ts
            if now >= a["budget"] or (a["smoke"] and box["iters"] >= 3):
                raise _Stop()
            return out

    name = next(p.name for p in pre.iterdir() if p.name.startswith(f"Dataset{a['dataset_id']}"))
    plans = load_json(str(pre / name / "nnUNetPlans.json"))
    dataset_json = load_json(str(pre / name / "dataset.json"))
    plans["continue_training"] = False  # what nnUNetv2_train sets (run_training.py)
    trainer = Trainer(plans, "3d_fullres", "all", dataset_json, device=torch.device("cpu"))
    with contextlib.suppress(_Stop):  # raised by train_step when the budget is spent
        trainer.run_training()
    first_iter = box["iters"]
    now = time.perf_counter() - t0 - box["paused"]
    if snaps:
        snaps += [{"due": d, "seconds": now, "state": snaps[-1]["state"]} for d in due]
    try:
        trainer.on_train_end()
    except Exception:  # the logger/data loader shutdown is not measured
        print("on_train_end failed (ignored)", file=sys.stderr)
    train_s = now - plan_s

    # ---- evaluation, outside the clock
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    data = np.load(a["data"])
    truth = data["truth"]
    img, props = SimpleITKIO().read_images([str(raw / name / "imagesTr" / "case_0000.nii.gz")])
    if img[0].shape != truth.shape:
        raise SystemExit(f"nnU-Net reads {img[0].shape}, truth is {truth.shape}")
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's own validation does
    net = trainer.network
    net = getattr(net, "_orig_mod", net)
    out_snaps, cache, predict_seconds = [], {}, []
    classes = list(range(1, int(a["n_classes"]) + 1))
    for s in snaps:
        key = id(s["state"])
        if key not in cache:
            net.load_state_dict(s["state"])
            predictor.manual_initialization(
                net,
                trainer.plans_manager,
                trainer.configuration_manager,
                [s["state"]],
                trainer.dataset_json,
                "nnUNetTrainer",
                None,
            )
            tp = time.perf_counter()
            seg = predictor.predict_single_npy_array(img, props, None, None, False)
            predict_seconds.append(time.perf_counter() - tp)
            cache[key] = float(np.mean([_dice(seg == k, truth == k) for k in classes]))
        out_snaps.append({"due": s["due"], "seconds": s["seconds"], "dice": cache[key]})
    # seconds per training iteration between the first and the last one (the data loader
    # start-up and the first epoch's set-up excluded; validation iterations included)
    per_iter = (box["last"] - box["first"]) / (first_iter - 1) if first_iter > 1 else train_s
    return {
        "tool": "nnunet",
        "version": f"nnunetv2 {_version(nnunetv2)} (torch {torch.__version__})",
        "settings": {
            "configuration": "3d_fullres",
            "fold": "all",
            "iterations_per_epoch": 25,
            "val_iterations_per_epoch": 5,
            "patch_size": list(trainer.configuration_manager.patch_size),
            "batch_size": trainer.configuration_manager.batch_size,
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "nnUNet_n_proc_DA": 1,
        },
        "plan_and_preprocess_seconds": plan_s,
        "iterations": first_iter,
        "train_seconds": train_s,
        "seconds_per_iteration": per_iter,
        "default_schedule_hours": per_iter * 250 * 1000 / 3600,
        "snapshots": out_snaps,
        # one whole-volume prediction per distinct snapshot (outside the clock)
        "predict_seconds": predict_seconds,
    }


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    d = int(p.sum()) + int(t.sum())
    return 1.0 if d == 0 else 2.0 * int((p & t).sum()) / d


def _version(mod) -> str:
    try:
        from importlib.metadata import version

        return version("nnunetv2")
    except Exception:
        return getattr(mod, "__version__", "unknown")


if __name__ == "__main__":
    result = main(sys.argv[1])
    sys.stdout.write("\n" + json.dumps(result) + "\n")
