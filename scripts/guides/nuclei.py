"""Guide: nuclei in 2D and 3D, boundaries and watershed instances (docs/guides/nuclei.md).

Data: StarDist's example images (``pip install --no-deps stardist`` installs them:
``img2d.tif``/``mask2d.tif``, a crop of the DSB2018 nuclei, and ``img3d.tif``/
``mask3d.tif``). Each image is cut in two halves along its longest axis: the first half
is annotated (2D: every nucleus; 3D: 30 % of the slices along Z), an instance model
learns from it, and the second half, never seen, is segmented and scored (instance F1
at IoU 0.5).

    python scripts/guides/nuclei.py --out guide_nuclei [--iterations 200]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_line, unetseg


def stardist_image(name: str) -> np.ndarray:
    import tifffile

    try:
        path = importlib.metadata.distribution("stardist").locate_file(
            f"stardist/data/images/{name}.tif"
        )
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            "install StarDist's example images: pip install --no-deps stardist"
        ) from None
    return tifffile.imread(str(path))


def halves(array: np.ndarray):
    axis = int(np.argmax(array.shape))
    half = array.shape[axis] // 2
    return np.take(array, range(half), axis), np.take(array, range(half, array.shape[axis]), axis)


def main(argv=None) -> int:
    import tifffile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("guide_nuclei"))
    p.add_argument("--iterations", type=int, default=200)
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_line()}")
    for dims in ("2d", "3d"):
        print(f"\n== {dims.upper()} ==")
        img_a, img_b = halves(stardist_image(f"img{dims}"))
        mask_a, mask_b = halves(stardist_image(f"mask{dims}"))
        for name, arr in (("train", img_a), ("test", img_b)):
            tifffile.imwrite(out / f"{dims}_{name}.tif", arr)
        tifffile.imwrite(out / f"{dims}_train_mask.tif", mask_a.astype(np.uint16))
        tifffile.imwrite(out / f"{dims}_test_truth.tif", mask_b.astype(np.uint16))
        ann = out / f"{dims}_annotation.tif"
        if dims == "2d":
            # every nucleus of the training half: 1 background, k + 1 object k
            tifffile.imwrite(ann, np.where(mask_a > 0, mask_a.astype(np.int32) + 1, 1))
        else:
            unetseg(
                "sparsify",
                "--labels",
                str(out / "3d_train_mask.tif"),
                "--out",
                str(ann),
                "--fraction",
                "0.3",
                "--axes",
                "z",
                "--overwrite",
            )
        model = out / f"nuclei_{dims}.safetensors"
        unetseg(
            "train",
            "--image",
            str(out / f"{dims}_train.tif"),
            "--labels",
            str(ann),
            "--task",
            "instances",
            "--class-names",
            "nucleus",
            "--iterations",
            str(args.iterations),
            "--out",
            str(model),
            "--overwrite",
        )
        unetseg(
            "predict",
            "--model",
            str(model),
            "--image",
            str(out / f"{dims}_test.tif"),
            "--out",
            str(out / f"{dims}_semantic.tif"),
            "--boundaries",
            str(out / f"{dims}_boundaries.tif"),
            "--instances",
            str(out / f"{dims}_instances.tif"),
            "--overwrite",
        )
        unetseg(
            "evaluate",
            "--pred",
            str(out / f"{dims}_instances.tif"),
            "--truth",
            str(out / f"{dims}_test_truth.tif"),
            "--instances",
            "--json",
            str(out / f"{dims}_metrics.json"),
            "--overwrite",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
