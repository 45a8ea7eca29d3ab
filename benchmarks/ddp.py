"""Data-parallel training: steps per second of 2 gloo processes against 1 process.

The same run (a small U-Net, ``batch_size`` patches per step) trains in one process with
all threads, and in ``--ranks`` processes joined in a gloo group (torch.multiprocessing,
a free local port) with the threads shared out (:func:`napari_unetseg.core.ddp.threads_for_rank`),
each rank drawing its share of the batch; gradients are averaged across the ranks. The
time of the steps after ``--warmup`` steps is taken on rank 0 (the ranks step together).
A third variant, one process with one thread, shows what a single thread does on the same
machine at the same time: on a machine shared with other work, threads of one process
that wait for each other at every operation can lose more than a second process does.
Repeats are interleaved (1 process, 1 process 1 thread, N processes, ...); medians are
reported.

Usage::

    python -m benchmarks.ddp [--ranks 2] [--steps 12] [--repeats 2] [--smoke]
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _common

PATCH = (32, 64, 64)


def _settings(iterations: int, batch: int) -> dict:
    return {
        "model": {"base_width": 8, "depth": 3},
        "data": {"patch_size": list(PATCH), "validation_fraction": 0.0},
        "train": {
            "iterations": iterations,
            "batch_size": batch,
            "device": "cpu",
            "validate_every": 100_000,
        },
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(r: int, world: int, port: int, args: dict, out: str) -> None:
    """One rank (or the single process when ``world`` is 1): train, write step times."""
    import json

    if world > 1:
        os.environ.update(
            RANK=str(r),
            LOCAL_RANK=str(r),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    from napari_unetseg.core import ddp
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import Step
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import Trainer

    image, semantic, _ = make_sample(shape=(48, 96, 96), seed=0)
    total = args["warmup"] + args["steps"]
    cfg = Config.from_dict(_settings(total, args["batch"]))
    cfg.train.threads = args.get("threads")
    with ddp.session():
        trainer = Trainer(image[None], sparsify(semantic, 0.3, seed=0), cfg)
        times = [e.seconds for e in trainer.run() if isinstance(e, Step)]
        trainer.close()
        ddp.barrier()
    if r == 0:
        span = times[-1] - times[args["warmup"] - 1]
        Path(out).write_text(json.dumps({"steps_per_second": args["steps"] / span}))


def _measure(world: int, args: dict) -> dict:
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="unetseg-ddp-") as tmp:
        out = str(Path(tmp) / "rank0.json")
        if world == 1:
            ctx = mp.get_context("spawn")
            proc = ctx.Process(target=_rank, args=(0, 1, 0, args, out))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"the single-process run failed (exit {proc.exitcode})")
        else:
            mp.spawn(_rank, args=(world, _free_port(), args, out), nprocs=world, join=True)
        res = json.loads(Path(out).read_text())
    res["patches_per_second"] = res["steps_per_second"] * args["batch"]
    return res


def run(args) -> dict[str, Any]:
    cfg = {
        "warmup": 2 if args.smoke else 3,
        "steps": 2 if args.smoke else args.steps,
        "batch": args.ranks,
    }
    runs = _common.interleave(
        {
            "1 process": lambda: _measure(1, cfg),
            "1 process, 1 thread": lambda: _measure(1, cfg | {"threads": 1}),
            f"{args.ranks} processes": lambda: _measure(args.ranks, cfg),
        },
        1 if args.smoke else args.repeats,
    )
    one = _common.median([r["steps_per_second"] for r in runs["1 process"]])
    single = _common.median([r["steps_per_second"] for r in runs["1 process, 1 thread"]])
    many = _common.median([r["steps_per_second"] for r in runs[f"{args.ranks} processes"]])
    return {
        "benchmark": "ddp",
        "command": "python -m benchmarks.ddp " + " ".join(sys.argv[1:]),
        "smoke": bool(args.smoke),
        "environment": _common.environment(),
        "model": _settings(0, cfg["batch"])["model"] | {"patch_size": PATCH},
        "batch_size": cfg["batch"],
        "ranks": args.ranks,
        "runs": runs,
        "steps_per_second_1": one,
        "steps_per_second_n": many,
        "steps_per_second_1_thread": single,
        "ratio": many / one,
        "load_average": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def print_table(data: dict) -> None:
    print(_common.describe_env(data["environment"]))
    n = data["ranks"]
    print(
        f"batch {data['batch_size']} patches of {data['model']['patch_size']}: 1 process "
        f"{data['steps_per_second_1']:.2f} steps/s (1 thread: "
        f"{data['steps_per_second_1_thread']:.2f}), {n} gloo processes "
        f"{data['steps_per_second_n']:.2f} steps/s, ratio {data['ratio']:.2f}x "
        f"(load average at the end {data['load_average'][0]:.1f})"
    )


def main(argv=None) -> int:
    parser = _common.arg_parser("ddp", __doc__)
    parser.add_argument("--smoke", action="store_true", help="two steps, for the tests")
    parser.add_argument("--ranks", type=int, default=2, help="processes of the parallel run")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant")
    parser.add_argument("--out", help="JSON file (default results/ddp.json)")
    args = parser.parse_args(argv)
    return _common.report("ddp", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
