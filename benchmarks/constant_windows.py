"""Windows of constant input computed once: seconds and agreement, on and off.

A scan usually sits in empty surroundings (the zeros around a skull-stripped or
registered MRI, the padding of a stitched microscopy volume). Every window that sees only
that one value gives the same logits, so :class:`~napari_unetseg.core.inference.engine._Engine`
computes it once. This measures ``sliding_window`` with that reuse on and off (repeats
interleaved, same process, same model) on

* ``mni``: the MNI152 2009 T1 template shipped inside nilearn (1 mm, 189x233x197 as
  (Z, Y, X), 78 % zeros around the head; package BSD-3-Clause, template (C) McConnell
  Brain Imaging Centre);
* ``sample``: ``make_sample((64, 128, 128))``: noise everywhere, no constant window (the
  cost of the check).

Network: ``UNet`` width 8, depth 4, 3 outputs, random weights (seed 0; the outputs are
compared with each other, not with a truth), window 48^3, overlap 0.25, 4 windows per
pass, bfloat16 autocast where the CPU has native bfloat16.

Usage::

    python -m benchmarks.constant_windows [--repeats 2] [--smoke] [--out FILE]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import _common as C


def _volumes(smoke: bool) -> dict[str, np.ndarray]:
    from napari_unetseg.core.sample import make_sample

    out = {}
    try:
        from nilearn import datasets

        t1 = datasets.load_mni152_template(resolution=6 if smoke else 1)
        out["mni"] = np.asarray(t1.get_fdata(), np.float32).transpose(2, 1, 0)
    except ImportError:  # pragma: no cover - nilearn is optional
        print("mni skipped: nilearn is not installed", file=sys.stderr)
    out["sample"] = make_sample(shape=(16, 32, 32) if smoke else (64, 128, 128), seed=1)[0]
    return out


def run(args) -> dict:
    import torch

    from napari_unetseg.core.config import InferConfig, ModelConfig
    from napari_unetseg.core.device import autocast_dtype, configure_threads
    from napari_unetseg.core.events import Done
    from napari_unetseg.core.inference import engine, sliding_window
    from napari_unetseg.core.model import UNet

    env = C.environment()
    configure_threads(None)
    torch.manual_seed(0)
    width, depth, win = (4, 2, (8, 16, 16)) if args.smoke else (8, 4, (48, 48, 48))
    model = UNet(
        ModelConfig(spatial_dims=3, in_channels=1, num_classes=3, base_width=width, depth=depth)
    ).eval()
    dtype = autocast_dtype(torch.device("cpu"), "auto")
    cfg = InferConfig(window_batch=4)
    rows = []
    for name, vol in _volumes(args.smoke).items():
        img = ((vol - vol.mean()) / vol.std()).astype(np.float32)[None]
        timings: dict[bool, list[float]] = {True: [], False: []}
        probs, computed = {}, {}
        forward = engine._Engine._forward
        crop = tuple(slice(0, min(n, w + w // 2)) for n, w in zip(img.shape[1:], win))
        list(sliding_window(model, img[(slice(None), *crop)], win, cfg, dtype=dtype))  # warm-up

        for _ in range(args.repeats):
            for reuse in (False, True):
                engine._Engine.reuse_constant = reuse
                counter = [0]

                def counting(self, x, counter=counter, forward=forward):
                    counter[0] += int(x.shape[0])
                    return forward(self, x)

                engine._Engine._forward = counting
                t0 = time.perf_counter()
                events = list(sliding_window(model, img, win, cfg, dtype=dtype))
                timings[reuse].append(time.perf_counter() - t0)
                engine._Engine._forward = forward
                assert isinstance(events[-1], Done)
                probs[reuse], computed[reuse] = events[-1].result, counter[0]
        engine._Engine.reuse_constant = True
        off, on = C.median(timings[False]), C.median(timings[True])
        rows.append(
            {
                "volume": name,
                "shape": list(vol.shape),
                "constant_voxels_pct": 100.0 * float((vol == vol.flat[0]).mean()),
                "windows_off": computed[False],
                "windows_on": computed[True],
                "seconds_off": off,
                "seconds_on": on,
                "seconds_all": {"off": timings[False], "on": timings[True]},
                "speedup": off / on,
                "max_abs_diff": float(np.abs(probs[True] - probs[False]).max()),
                "argmax_agreement": float(
                    (probs[True].argmax(0) == probs[False].argmax(0)).mean()
                ),
            }
        )
    return {
        "benchmark": "constant_windows",
        "command": "python -m benchmarks.constant_windows " + " ".join(args.argv),
        "smoke": bool(args.smoke),
        "environment": env,
        "dtype": "float32" if dtype is None else str(dtype).replace("torch.", ""),
        "window": list(win),
        "load_average_at_end": C.load_average(),
        "results": rows,
    }


def print_table(data: dict) -> None:
    print(C.describe_env(data["environment"]))
    cols = [
        ("volume", "volume", ""),
        ("constant_voxels_pct", "constant %", ".1f"),
        ("windows_off", "windows off", "d"),
        ("windows_on", "windows on", "d"),
        ("seconds_off", "s off", ".2f"),
        ("seconds_on", "s on", ".2f"),
        ("speedup", "speed-up", ".2f"),
        ("max_abs_diff", "max |dp|", ".1e"),
        ("argmax_agreement", "agreement", ".6f"),
    ]
    print(C.table(data["results"], cols))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = C.arg_parser("constant_windows", __doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.argv = argv
    return C.report("constant_windows", args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
