"""Training on a dataset: peak memory with the memory-mapped cache vs in memory, and the
time per step with one case vs three.

Memory: ``--cases`` synthetic cases of ``--shape`` (C x Z x Y x X, float32, default 8
cases of 4x155x240x240, a BraTS-like set of 1.1 GiB) are written as ``.npy`` files; a
fresh interpreter then builds a Trainer and runs ``--steps`` steps, once with the images
given memory-mapped and ``data.cache_dir`` set (the normalised images are read back
memory-mapped), once with the images loaded into memory (no cache). Reported per path:
the peak resident set size (``VmHWM``, which also counts file pages mapped while read) and
the peak anonymous resident memory (``RssAnon``, sampled every 10 ms: the memory that
cannot be given back to the page cache), and the ratios in-memory / memmap.

Steps: the same network and patch trained on 1 case and on 3 cases (same shape), repeats
interleaved; the median seconds per step (first steps left out) should be equal.

    python -m benchmarks.dataset_memory               # prints one JSON line
    python -m benchmarks.dataset_memory --smoke       # tiny sizes
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import _common


def _anon_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _write_cases(folder: Path, n: int, shape: tuple[int, ...], seed: int = 0) -> None:
    """``n`` cases as ``img<i>.npy`` (float32 (C, Z, Y, X)) and ``ann<i>.npy`` (uint8
    (Z, Y, X): every tenth z-slice painted, background 1 and two box classes)."""
    rng = np.random.default_rng(seed)
    c, z, y, x = shape
    for i in range(n):
        img = np.lib.format.open_memmap(folder / f"img{i}.npy", "w+", np.float32, shape)
        for ch in range(c):
            img[ch] = rng.standard_normal((z, y, x), dtype=np.float32) * (1 + ch) + 10 * i
        ann = np.zeros((z, y, x), np.uint8)
        ann[::10] = 1
        ann[::10, y // 4 : y // 2, x // 4 : x // 2] = 2
        ann[::10, y // 2 : 3 * y // 4, x // 2 : 3 * x // 4] = 3
        img[:, ann == 2] += 2.0
        img.flush()
        del img
        np.save(folder / f"ann{i}.npy", ann)


def _config(steps: int, patch: tuple[int, ...], cache_dir: str | None):
    from napari_unetseg.core.config import Config

    cfg = Config()
    cfg.model.base_width = 4
    cfg.model.depth = 3
    cfg.data.patch_size = patch
    cfg.data.validation_fraction = 0.0
    cfg.data.cache_dir = cache_dir
    cfg.train.iterations = steps
    cfg.train.batch_size = 2
    cfg.train.validate_every = 10**6
    cfg.train.device = "cpu"
    return cfg


def _memory_worker(args: dict) -> dict:
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.events import run_to_completion
    from napari_unetseg.core.training import Trainer

    folder = Path(args["folder"])
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _anon_rss())
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    mmap = args["mode"] == "memmap"
    cases = []
    for i in range(args["cases"]):
        image = np.load(folder / f"img{i}.npy", mmap_mode="r" if mmap else None)
        ann = np.load(folder / f"ann{i}.npy", mmap_mode="r" if mmap else None)
        cases.append(Case(name=f"case{i}", image=image, annotation=ann))
    cache = tempfile.mkdtemp(dir=folder) if mmap else None
    cfg = _config(args["steps"], tuple(args["patch"]), cache)
    t0 = time.perf_counter()
    trainer = Trainer(config=cfg, cases=cases)
    t_build = time.perf_counter() - t0
    run_to_completion(trainer.run())
    on_disk = trainer.data.store.on_disk
    trainer.close()
    stop.set()
    thread.join()
    peak[0] = max(peak[0], _anon_rss())
    return {
        "mode": args["mode"],
        "cache_used": on_disk,
        "prepare_seconds": t_build,
        "train_seconds": time.perf_counter() - t0 - t_build,
        "peak_anon_rss_bytes": peak[0],
    }


def _step_seconds(n_cases: int, steps: int, shape: tuple[int, ...], patch) -> float:
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.events import Step
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import Trainer

    cases = []
    for i in range(n_cases):
        image, truth, _ = make_sample(shape=shape, seed=i)
        cases.append(Case(f"s{i}", image[None], sparsify(truth, 0.1, seed=i)))
    cfg = _config(steps, patch, None)
    cfg.model.base_width = 8
    times = [e.seconds for e in Trainer(config=cfg, cases=cases).run() if isinstance(e, Step)]
    return float(np.median(np.diff(times)[3:]))


def main(argv: list[str] | None = None) -> int:
    parser = _common.arg_parser("dataset_memory", __doc__)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", default="4x155x240x240", help="C x Z x Y x X per case")
    parser.add_argument("--steps", type=int, default=5, help="training steps per memory run")
    parser.add_argument("--step-repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    patch, sample, step_steps = (32, 64, 64), (32, 96, 96), 25
    if args.smoke:
        args.cases, shape, args.steps, args.step_repeats = 2, (2, 12, 40, 40), 2, 1
        patch, sample, step_steps = (8, 16, 16), (16, 32, 32), 6
    result: dict = {"cases": args.cases, "shape": list(shape), "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="unetseg-bench-") as tmp:
        _write_cases(Path(tmp), args.cases, shape)
        for mode in ("memmap", "memory"):
            worker_args = {
                "mode": mode,
                "folder": tmp,
                "cases": args.cases,
                "steps": args.steps,
                "patch": patch,
            }
            out = _common.run_worker("benchmarks.dataset_memory", worker_args)
            result[mode] = out
    result["dataset_bytes"] = int(args.cases * np.prod(shape) * 4)
    result["peak_rss_ratio"] = result["memory"]["peak_rss_bytes"] / max(
        1, result["memmap"]["peak_rss_bytes"]
    )
    result["peak_anon_rss_ratio"] = result["memory"]["peak_anon_rss_bytes"] / max(
        1, result["memmap"]["peak_anon_rss_bytes"]
    )
    steps: dict[str, list[float]] = {"1": [], "3": []}
    for _ in range(args.step_repeats):
        for n in (1, 3):
            steps[str(n)].append(_step_seconds(n, step_steps, sample, patch))
    result["step_seconds_1_case"] = _common.median(steps["1"])
    result["step_seconds_3_cases"] = _common.median(steps["3"])
    result["step_time_ratio_3_vs_1"] = result["step_seconds_3_cases"] / max(
        1e-9, result["step_seconds_1_case"]
    )
    result["load_average"] = _common.load_average()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _common.worker_entry(_memory_worker)
    else:
        sys.exit(main())
