"""Scaling: blockwise prediction memory, dask workers, agreement and stitched instances.

Parts (each measurement of memory in a fresh interpreter, peak RSS = ``VmHWM``):

* ``memory``: peak RSS of :func:`napari_unetseg.core.blockwise.predict_blockwise` from a
  zarr volume to an OME-Zarr, for growing volumes (only Z grows, blocks stay the same),
  with a very small U-Net (base width 2, depth 2), beside the input size;
* ``dask``: the same prediction on a dask ``LocalCluster`` of 1 and of 2 worker
  processes (one thread each; cluster start-up not timed): seconds and ratio;
* ``agreement``: share of voxels whose label agrees between blockwise and whole-volume
  prediction (the same model);
* ``instances``: instance F1 of stitched blockwise watershed objects against a
  whole-volume watershed, on probabilities made from the sample's true objects (a
  network that returns them), so the score measures the stitching alone.

Usage::

    python -m benchmarks.scale [--smoke] [--sizes 0.8,1.6,3.2] [--out FILE]

``--sizes`` in millions of voxels (the volumes are ``(Z, 128, 128)``; blocks of
24 x 128 x 128 voxels, so every size holds several blocks along Z and the regions
predicted are the same whatever the size).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _common

PATCH = (16, 64, 64)
BLOCK = (24, 128, 128)
PLANE = (128, 128)


def _settings(iterations: int) -> dict:
    return {
        "model": {"base_width": 2, "depth": 2},
        "data": {"patch_size": list(PATCH), "validation_fraction": 0.0},
        "train": {
            "iterations": iterations,
            "batch_size": 1,
            "device": "cpu",
            "validate_every": 10_000,
        },
    }


def _train_model(path: Path, iterations: int) -> Path:
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.checkpoint import save_checkpoint
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import train

    image, semantic, _ = make_sample(shape=(32, 64, 64), seed=0)
    cfg = Config.from_dict(_settings(iterations)).validate()
    save_checkpoint(train(image[None], sparsify(semantic, 0.3, seed=0), cfg), path)
    return path


def _make_volume(path: Path, depth: int) -> Path:
    """A ``(1, depth, 256, 256)`` uint8 zarr volume tiled from the sample (compressible)."""
    import zarr

    from napari_unetseg.core.sample import make_sample

    tile = (make_sample(shape=(64, 128, 128), seed=1)[0] * 150).clip(0, 255).astype(np.uint8)
    tile = np.tile(tile, (1, max(1, PLANE[0] // 128), max(1, PLANE[1] // 128)))
    arr = zarr.create_array(
        str(path), shape=(1, depth, *PLANE), chunks=(1, *BLOCK), dtype="u1", overwrite=True
    )
    for z in range(0, depth, 64):
        n = min(64, depth - z)
        arr[0, z : z + n] = tile[:n]
    return path


def _memory_worker(args: dict) -> dict:
    """In a fresh interpreter: blockwise prediction of one volume; seconds."""
    import torch

    from napari_unetseg.core.blockwise import predict_blockwise
    from napari_unetseg.core.events import run_to_completion

    torch.set_num_threads(int(args["threads"]))
    t0 = time.perf_counter()
    run_to_completion(
        predict_blockwise(args["model"], args["image"], args["out"], block=BLOCK, overwrite=True)
    )
    return {"seconds": time.perf_counter() - t0}


def _dask_seconds(model: Path, image: Path, out: Path, workers: int) -> float:
    from napari_unetseg.core.distributed import connect, predict_blockwise_distributed
    from napari_unetseg.core.events import run_to_completion

    client = connect(workers=workers)
    try:
        client.run(lambda: None)  # workers up before the clock starts
        t0 = time.perf_counter()
        run_to_completion(
            predict_blockwise_distributed(
                model, image, out, client=client, block=BLOCK, overwrite=True
            )
        )
        return time.perf_counter() - t0
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def _agreement(model: Path, shape: tuple[int, ...]) -> dict:
    from napari_unetseg.core.blockwise import predict_blockwise
    from napari_unetseg.core.checkpoint import load_checkpoint
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.inference import predict_volume
    from napari_unetseg.core.sample import make_sample

    ckpt = load_checkpoint(model)
    image = make_sample(shape=shape, seed=4)[0][None]
    whole = predict_volume(ckpt, image, keep_probabilities=False).labels
    out = np.zeros(shape, np.uint8)
    block = tuple(max(p, s // 2) for p, s in zip(PATCH, shape))
    done = run_to_completion(predict_blockwise(ckpt, image, out, block=block))
    return {
        "shape": shape,
        "blocks": done.result.blocks,
        "agreement": float((out == whole).mean()),
    }


def _instances(shape: tuple[int, ...], seed: int) -> dict:
    import torch
    from skimage.segmentation import find_boundaries

    from napari_unetseg.core.blockwise import predict_blockwise
    from napari_unetseg.core.checkpoint import Checkpoint
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.metrics import instance_metrics
    from napari_unetseg.core.postprocess import instance_labels
    from napari_unetseg.core.sample import make_sample

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x.clamp_min(1e-4))

    class Oracle(Checkpoint):
        def build_model(self, device="cpu"):
            return Log().eval()

    truth = make_sample(shape=shape, seed=seed)[2]
    edge = find_boundaries(truth, mode="inner") & (truth > 0)
    probs = 0.9 * np.stack([truth == 0, (truth > 0) & ~edge, edge]).astype(np.float32) + 0.1 / 3
    cfg = Config()
    cfg.model.in_channels, cfg.model.num_classes = 3, 3
    cfg.data.patch_size = (16, 32, 32)
    cfg.infer.device = "cpu"
    ckpt = Oracle(config=cfg, state_dict={}, normalizer=None, task="instances")
    whole = instance_labels(probs, interior_threshold=cfg.infer.interior_threshold)
    ids = np.zeros(shape, np.int32)
    block = tuple(s // 3 for s in shape)
    done = run_to_completion(
        predict_blockwise(ckpt, probs, np.zeros(shape, np.uint8), instances=ids, block=block)
    )
    scores = instance_metrics(ids, whole)
    return {
        "shape": shape,
        "blocks": done.result.blocks,
        "objects": int(whole.max()),
        "f1": scores["f1"],
        "mean_matched_iou": scores["mean_matched_iou"],
    }


def run(args) -> dict[str, Any]:
    import torch

    sizes = [float(s) for s in args.sizes.split(",")]
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="unetseg-scale-") as tmp:
        tmp = Path(tmp)
        model = _train_model(tmp / "model.safetensors", 2 if args.smoke else 20)
        memory = []
        for size in sizes:
            depth = max(PATCH[0], round(size * 1e6 / (PLANE[0] * PLANE[1])))
            image = _make_volume(tmp / f"in{depth}.zarr", depth)
            res = _common.run_worker(
                "benchmarks.scale",
                {
                    "model": str(model),
                    "image": str(image),
                    "out": str(tmp / "out.ome.zarr"),
                    "threads": threads,
                },
            )
            voxels = depth * PLANE[0] * PLANE[1]
            memory.append(
                {
                    "shape": (depth, *PLANE),
                    "voxels": voxels,
                    "input_mib": voxels / 2**20,
                    "seconds": res["seconds"],
                    "voxels_per_second": voxels / res["seconds"],
                    "peak_rss_mib": _common.mib(res["peak_rss_bytes"]),
                }
            )
        depth = 64
        image = _make_volume(tmp / "dask.zarr", depth)
        dask = {}
        for workers in (1, 2):
            dask[workers] = _dask_seconds(model, image, tmp / f"dask{workers}.ome.zarr", workers)
        agreement = _agreement(model, (48, 96, 96) if args.smoke else (64, 192, 192))
        instances = [
            _instances((48, 96, 96) if args.smoke else (64, 160, 160), s)
            for s in ((3,) if args.smoke else (3, 11))
        ]
    return {
        "benchmark": "scale",
        "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
        "smoke": bool(args.smoke),
        "environment": _common.environment(),
        "model": _settings(0)["model"] | {"patch_size": PATCH, "block": BLOCK},
        "memory": memory,
        "dask": {
            "shape": (depth, *PLANE),
            "seconds_1_worker": dask[1],
            "seconds_2_workers": dask[2],
            "speedup": dask[1] / dask[2],
        },
        "agreement": agreement,
        "instances": instances,
    }


def print_table(data: dict) -> None:
    print(_common.describe_env(data["environment"]))
    print(
        _common.table(
            data["memory"],
            [
                ("shape", "volume (Z, Y, X)", ""),
                ("voxels", "voxels", ",d"),
                ("input_mib", "input MiB (uint8)", ".0f"),
                ("seconds", "seconds", ".1f"),
                ("voxels_per_second", "voxels/s", ",.0f"),
                ("peak_rss_mib", "peak RSS MiB", ".0f"),
            ],
        )
    )
    d = data["dask"]
    print(
        f"dask on {d['shape']}: 1 worker {d['seconds_1_worker']:.1f} s, 2 workers "
        f"{d['seconds_2_workers']:.1f} s, speed-up {d['speedup']:.2f}x"
    )
    a = data["agreement"]
    print(
        f"blockwise vs whole volume on {a['shape']} ({a['blocks']} blocks): "
        f"{a['agreement']:.5%} of voxels agree"
    )
    for r in data["instances"]:
        print(
            f"stitched instances on {r['shape']} ({r['blocks']} blocks, {r['objects']} "
            f"objects): F1 {r['f1']:.4f}, mean matched IoU {r['mean_matched_iou']:.4f}"
        )


def main(argv=None) -> int:
    parser = _common.arg_parser("scale", __doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--sizes", default="0.8,1.6,3.2", help="millions of voxels per volume")
    parser.add_argument("--out", help="JSON file (default results/scale.json)")
    args = parser.parse_args(argv)
    if args.smoke and args.sizes == "0.8,1.6,3.2":
        args.sizes = "0.4,0.8"
    return _common.report("scale", args, run, print_table)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _common.worker_entry(_memory_worker)
    else:
        sys.exit(main())
