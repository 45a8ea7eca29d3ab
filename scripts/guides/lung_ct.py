"""Guide: lung CT with 30 % of the axial slices annotated (docs/guides/lung-ct.md).

Part 1 trains on one scan and segments the same scan; part 2 trains on two scans,
validates on a third and tests on a fourth that was never annotated. Every step is a
``unetseg`` command, printed before it runs.

Data: ``--msd DIR`` takes the first four cases of the Medical Segmentation Decathlon's
Task06_Lung (``imagesTr/lung_*.nii.gz``, ``labelsTr/``: 1 = tumour); without it the
script makes four synthetic CT phantoms in Hounsfield units (body, two lungs with
vessels, a spine, a nodule in most scans; labels 1 = lung, 2 = nodule).

    python scripts/guides/lung_ct.py --out guide_lung [--iterations 150] [--msd Task06_Lung]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_line, unetseg, write_nifti

SPACING = (2.5, 1.2, 1.2)  # mm, (Z, Y, X)


def ct_phantom(shape=(40, 96, 96), seed: int = 0):
    """A synthetic chest CT (Z, Y, X) in HU and its labels (0 other, 1 lung, 2 nodule)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    wob = ndi.gaussian_filter(rng.normal(size=shape), 4) * 6
    body = (y / 0.75) ** 2 + (x / 0.95) ** 2 < 1 + 0.05 * wob
    fat = body & ((y / 0.68) ** 2 + (x / 0.88) ** 2 > 1)
    labels = np.zeros(shape, np.uint8)
    taper = 1 - 0.35 * (z + 1) ** 2 / 4  # lungs narrow towards the apex
    for side in (-1, 1):
        cx = side * rng.uniform(0.38, 0.45)
        lung = ((x - cx) / (0.3 * taper)) ** 2 + ((y + 0.05) / (0.5 * taper)) ** 2 + (
            (z + 0.1) / 1.0
        ) ** 2 < 1 + 0.1 * wob
        labels[lung & body] = 1
    ct = np.where(body, 40.0, -1000.0)
    ct[fat] = -100.0
    spine = (y - 0.55) ** 2 / 0.02 + x**2 / 0.02 < 1
    ct[spine & body] = 700.0
    lung = labels == 1
    ct[lung] = -850.0
    # vessels: thin bright tubes inside the lungs (part of the lung label)
    field = ndi.gaussian_filter(rng.normal(size=shape), 1.5)
    vessels = lung & (np.abs(field) < 0.012)
    ct[vessels] = -50.0
    if seed % 4 != 1:  # one training scan has no nodule
        inside = np.argwhere(ndi.binary_erosion(lung, iterations=5))
        c = inside[rng.integers(len(inside))]
        r = rng.uniform(4.5, 6.5)
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        d = ((zz - c[0]) * SPACING[0] / SPACING[1]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        nodule = d < r**2
        labels[nodule] = 2
        ct[nodule] = 20.0
    ct += rng.normal(0, 25, size=shape)
    return ct.astype(np.float32), labels


def make_cases(out: Path, msd: Path | None) -> list[tuple[Path, Path]]:
    cases = []
    if msd is not None:
        images = sorted((msd / "imagesTr").glob("lung_*.nii.gz"))[:4]
        if len(images) < 4:
            raise SystemExit(f"{msd}/imagesTr has fewer than 4 lung_*.nii.gz scans")
        return [(p, msd / "labelsTr" / p.name) for p in images]
    for k in range(4):
        ct, labels = ct_phantom(seed=k)
        img = write_nifti(out / f"ct_{k}.nii.gz", ct, SPACING)
        ref = write_nifti(out / f"ct_{k}_truth.nii.gz", labels, SPACING)
        cases.append((img, ref))
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("guide_lung"))
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--msd", type=Path, default=None, help="Task06_Lung folder")
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_line()}")
    cases = make_cases(out, args.msd)
    names = "nodule" if args.msd else "lung nodule"
    it = str(args.iterations)
    common = ["--normalization", "ct", "--ct-window", "-1000", "400", "--iterations", it]
    sparse = []
    for k, (_, ref) in enumerate(cases[:3]):
        s = out / f"ct_{k}_sparse.nii.gz"
        unetseg(
            "sparsify",
            "--labels",
            str(ref),
            "--out",
            str(s),
            "--fraction",
            "0.3",
            "--axes",
            "z",
            "--seed",
            str(k),
            "--overwrite",
        )
        sparse.append(s)

    print("\n== part 1: one scan, 30 % of its axial slices annotated ==")
    img0, ref0 = cases[0]
    unetseg(
        "train",
        "--image",
        str(img0),
        "--labels",
        str(sparse[0]),
        "--out",
        str(out / "one_scan.safetensors"),
        "--class-names",
        *names.split(),
        *common,
        "--overwrite",
    )
    unetseg(
        "predict",
        "--model",
        str(out / "one_scan.safetensors"),
        "--image",
        str(img0),
        "--out",
        str(out / "ct_0_pred.nii.gz"),
        "--overwrite",
    )
    unetseg(
        "evaluate",
        "--pred",
        str(out / "ct_0_pred.nii.gz"),
        "--truth",
        str(ref0),
        "--json",
        str(out / "one_scan.json"),
        "--overwrite",
    )

    print("\n== part 2: train on scans 0-1, validate on scan 2, test on scan 3 ==")
    ds = out / "Dataset001_LungGuide"
    pairs = []
    for (img, _), s in zip(cases[:3], sparse):
        pairs += ["--image", str(img), "--labels", str(s)]
    unetseg(
        "export-dataset",
        *pairs,
        "--class-names",
        *names.split(),
        "--channel-names",
        "CT",
        "--prefix",
        "lung",
        "--out",
        str(ds),
        "--overwrite",
    )
    unetseg(
        "train",
        "--dataset",
        str(ds),
        "--validation-cases",
        "lung_002",
        "--out",
        str(out / "across.safetensors"),
        *common,
        "--overwrite",
    )
    img3, ref3 = cases[3]
    unetseg(
        "predict",
        "--model",
        str(out / "across.safetensors"),
        "--image",
        str(img3),
        "--out",
        str(out / "ct_3_pred.nii.gz"),
        "--overwrite",
    )
    unetseg(
        "evaluate",
        "--pred",
        str(out / "ct_3_pred.nii.gz"),
        "--truth",
        str(ref3),
        "--json",
        str(out / "across.json"),
        "--overwrite",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
