"""Peak memory of blockwise prediction on volumes of 0.1 to 1 G voxels.

Zarr volumes ``(1, Z, 1024, 1024)`` uint8 are written chunk by chunk (never whole in
memory), tiled from the synthetic sample; each is predicted by
:func:`napari_unetseg.core.blockwise.predict_blockwise` into an OME-Zarr label image in a
fresh interpreter, whose peak RSS (``VmHWM``) is reported beside the input size. The
model is small (U-Net base width 4, depth 2, a few training steps; its quality does not
matter here); windows 32 x 128 x 128 without overlap and blocks 32 x 256 x 256 without
halo, so every size predicts the same block shape and only the number of blocks grows.

Before each size the time is estimated from the rate of the previous one; a size whose
estimate exceeds ``--budget-min`` minutes is skipped and reported as such.

Usage::

    python -m benchmarks.scale_memory [--sizes 0.1,0.5,1] [--budget-min 15] [--smoke]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _common

WINDOW = (32, 128, 128)
BLOCK = (32, 256, 256)
PLANE = (1024, 1024)


def _settings(iterations: int) -> dict:
    return {
        "model": {"base_width": 4, "depth": 2},
        "data": {"patch_size": list(WINDOW), "validation_fraction": 0.0},
        "train": {"iterations": iterations, "batch_size": 1, "device": "cpu"},
        "infer": {"overlap": 0.0, "device": "cpu"},
    }


def _train_model(path: Path, iterations: int) -> Path:
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.checkpoint import save_checkpoint
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import train

    image, semantic, _ = make_sample(shape=(32, 128, 128), seed=0)
    cfg = Config.from_dict(_settings(iterations)).validate()
    save_checkpoint(train(image[None], sparsify(semantic, 0.3, seed=0), cfg), path)
    return path


def make_volume(path: Path, depth: int, plane: tuple[int, int] = PLANE) -> Path:
    """A ``(1, depth, *plane)`` uint8 zarr written one chunk slab at a time."""
    import zarr

    from napari_unetseg.core.sample import make_sample

    tile = (make_sample(shape=(BLOCK[0], 128, 128), seed=1)[0] * 150).clip(0, 255)
    tile = tile.astype(np.uint8)
    reps = (1, -(-plane[0] // 128), -(-plane[1] // 128))
    slab = np.tile(tile, reps)[:, : plane[0], : plane[1]]
    arr = zarr.create_array(
        str(path), shape=(1, depth, *plane), chunks=(1, *BLOCK), dtype="u1", overwrite=True
    )
    for z in range(0, depth, BLOCK[0]):
        n = min(BLOCK[0], depth - z)
        arr[0, z : z + n] = slab[:n]
    return path


def _worker(args: dict) -> dict:
    """In a fresh interpreter: blockwise prediction of one volume; seconds, blocks."""
    import torch

    from napari_unetseg.core.blockwise import predict_blockwise
    from napari_unetseg.core.checkpoint import load_checkpoint
    from napari_unetseg.core.events import run_to_completion

    torch.set_num_threads(int(args["threads"]))
    ckpt = load_checkpoint(args["model"])
    cfg = ckpt.config.infer
    cfg.overlap = 0.0
    t0 = time.perf_counter()
    done = run_to_completion(
        predict_blockwise(
            ckpt, args["image"], args["out"], block=BLOCK, halo=0, config=cfg, overwrite=True
        )
    )
    return {"seconds": time.perf_counter() - t0, "blocks": done.result.blocks}


def run(args) -> dict[str, Any]:
    import shutil

    import torch

    sizes = [float(s) for s in args.sizes.split(",")]
    plane = (256, 256) if args.smoke else PLANE
    threads = torch.get_num_threads()
    rows: list[dict] = []
    rate = None
    with tempfile.TemporaryDirectory(prefix="unetseg-scale-memory-") as tmp:
        tmp = Path(tmp)
        model = _train_model(tmp / "model.safetensors", 2 if args.smoke else 10)
        for size in sizes:
            depth = max(BLOCK[0], round(size * 1e9 / (plane[0] * plane[1])))
            voxels = depth * plane[0] * plane[1]
            row: dict[str, Any] = {"shape": (depth, *plane), "voxels": voxels}
            row["input_mib"] = voxels / 2**20
            if rate is not None and voxels / rate > args.budget_min * 60:
                row["skipped"] = f"estimated {voxels / rate / 60:.0f} min"
                rows.append(row)
                continue
            image = make_volume(tmp / "in.zarr", depth, plane)
            load_before = os.getloadavg()
            res = _common.run_worker(
                "benchmarks.scale_memory",
                {
                    "model": str(model),
                    "image": str(image),
                    "out": str(tmp / "out.ome.zarr"),
                    "threads": threads,
                },
                timeout=6 * 3600,
            )
            shutil.rmtree(tmp / "in.zarr")
            shutil.rmtree(tmp / "out.ome.zarr", ignore_errors=True)
            rate = voxels / res["seconds"]
            row |= {
                "blocks": res["blocks"],
                "seconds": res["seconds"],
                "voxels_per_second": rate,
                "peak_rss_mib": _common.mib(res["peak_rss_bytes"]),
                "load_before": load_before,
                "load_after": os.getloadavg(),
            }
            rows.append(row)
            print(row, flush=True)
    measured = [r["peak_rss_mib"] for r in rows if "peak_rss_mib" in r]
    return {
        "benchmark": "scale_memory",
        "command": "python -m benchmarks.scale_memory " + " ".join(sys.argv[1:]),
        "smoke": bool(args.smoke),
        "environment": _common.environment(),
        "model": _settings(0)["model"] | {"window": WINDOW, "block": BLOCK, "overlap": 0.0},
        "memory": rows,
        "peak_over_smallest": max(measured) / min(measured) if measured else None,
    }


def print_table(data: dict) -> None:
    print(_common.describe_env(data["environment"]))
    for r in data["memory"]:
        if "skipped" in r:
            print(f"{r['shape']}: {r['voxels']:,d} voxels, not measured ({r['skipped']})")
            continue
        print(
            f"{r['shape']}: {r['voxels']:,d} voxels, input {r['input_mib']:.0f} MiB, "
            f"{r['blocks']} blocks, {r['seconds']:.0f} s, {r['voxels_per_second']:,.0f} vox/s, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, load {r['load_before'][0]:.1f} -> "
            f"{r['load_after'][0]:.1f}"
        )
    if data["peak_over_smallest"] is not None:
        print(f"largest peak / smallest peak: {data['peak_over_smallest']:.3f}")


def main(argv=None) -> int:
    parser = _common.arg_parser("scale_memory", __doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--sizes", default="0.1,0.5,1", help="G voxels per volume")
    parser.add_argument("--budget-min", type=float, default=15.0, help="skip longer sizes")
    parser.add_argument("--out", help="JSON file (default results/scale_memory.json)")
    args = parser.parse_args(argv)
    if args.smoke and args.sizes == "0.1,0.5,1":
        args.sizes = "0.002,0.004"
    return _common.report("scale_memory", args, run, print_table)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _common.worker_entry(_worker)
    else:
        sys.exit(main())
