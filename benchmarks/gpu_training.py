"""Training throughput under mixed precision on one device: ours against a plain loop.

Both sides train the SAME network (:class:`napari_unetseg.core.model.UNet`, the planned
configuration for the sample) on the same patch and batch size:

* ``ours``: :class:`napari_unetseg.core.training.Trainer` with the default settings
  (``precision: auto`` = bfloat16 autocast on GPUs that support it, channels-last, ...);
* ``reference``: a plain PyTorch loop (Adam, ``CrossEntropyLoss(ignore_index=-1)``,
  random crops, ``torch.autocast`` with the same dtype).

Reported: steps/s after warm-up, the ratio, and the peak device memory of each side
(``torch.cuda.max_memory_allocated``; on the CPU the peak RSS). Called by
``benchmarks/gpu.sh``; runs on the CPU too (``--smoke`` for a seconds-long check).

Usage::

    python -m benchmarks.gpu_training [--device cuda] [--steps 60] [--smoke] [--out FILE]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import _common as C


def _setup(smoke: bool, device: str):
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.sample import make_sample

    shape = (16, 32, 32) if smoke else (64, 128, 128)
    image, truth, _ = make_sample(shape=shape, seed=0)
    ann = sparsify(truth, 0.1, seed=0)
    cfg = Config()
    cfg.train.device = cfg.infer.device = device
    cfg.class_names = ["bright", "textured"]
    cfg.train.validate_every = 10**9
    cfg.data.validation_fraction = 0.0
    if smoke:
        cfg.model.base_width, cfg.model.depth = 4, 2
        cfg.data.patch_size = (8, 16, 16)
    return image, ann, cfg


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(torch, device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return C.mib(C.peak_rss_bytes())


def ours(image, ann, cfg, warmup: int, steps: int) -> dict:
    import torch

    from napari_unetseg.core.events import CancelToken, Done, Step
    from napari_unetseg.core.training import Trainer

    cfg.train.iterations = warmup + steps
    cancel = CancelToken()
    trainer = Trainer(image[None], ann, cfg, cancel=cancel)
    device = trainer.device
    t0 = None
    for ev in trainer.run():
        if isinstance(ev, Step):
            if ev.iteration == warmup:
                _sync(torch, device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                t0 = time.perf_counter()
            if ev.iteration == warmup + steps:
                _sync(torch, device)
                elapsed = time.perf_counter() - t0
                cancel.cancel()
        elif isinstance(ev, Done):
            break
    return {
        "seconds": elapsed,
        "steps_per_second": steps / elapsed,
        "peak_mib": _peak(torch, device),
        "dtype": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32",
        "patch_size": list(trainer.patch_size),
        "batch_size": trainer.config.train.batch_size,
        "config": trainer.config.to_dict(),
    }


def reference(image, ann, cfg_dict, dtype_name: str, warmup: int, steps: int, device) -> dict:
    import torch

    from napari_unetseg.core.config import Config
    from napari_unetseg.core.model import UNet

    cfg = Config.from_dict(cfg_dict)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    device = torch.device(device)
    model = UNet(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), cfg.train.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
    x = ((image - image.mean()) / image.std()).astype(np.float32)
    t = ann.astype(np.int64) - 1
    patch, batch = tuple(cfg.data.patch_size), cfg.train.batch_size
    dtype = getattr(torch, dtype_name) if dtype_name != "float32" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(torch, device)
            t0 = time.perf_counter()
        xs, ts = [], []
        for _ in range(batch):
            o = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(x.shape, patch)]
            sl = tuple(slice(a, a + p) for a, p in zip(o, patch))
            xs.append(x[sl][None])
            ts.append(t[sl])
        xb = torch.from_numpy(np.stack(xs)).to(device)
        tb = torch.from_numpy(np.stack(ts)).to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model(xb).float(), tb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(torch, device)
    elapsed = time.perf_counter() - t0
    peak = _peak(torch, device)
    return {"seconds": elapsed, "steps_per_second": steps / elapsed, "peak_mib": peak}


def run(args) -> dict:
    env = C.environment()
    warmup, steps = (2, 3) if args.smoke else (args.warmup, args.steps)
    image, ann, cfg = _setup(args.smoke, args.device)
    load0 = C.load_average()
    o = ours(image, ann, cfg, warmup, steps)
    r = reference(image, ann, o.pop("config"), o["dtype"], warmup, steps, args.device)
    return {
        "benchmark": "gpu_training",
        "command": "python -m benchmarks.gpu_training " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "device": args.device,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "load_average": [load0, C.load_average()],
        "results": [
            {"variant": "reference", "dtype": o["dtype"], **r, "ratio": 1.0},
            {"variant": "ours", **o, "ratio": o["steps_per_second"] / r["steps_per_second"]},
        ],
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    cols = [
        ("variant", "variant", ""),
        ("dtype", "dtype", ""),
        ("steps_per_second", "steps/s", ".2f"),
        ("ratio", "x reference", ".2f"),
        ("peak_mib", "peak MiB", ".0f"),
    ]
    print(C.table(data["results"], cols))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("gpu_training", __doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.argv = argv
    return C.report("gpu_training", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
