"""Guide: a BraTS-style dataset (docs/guides/brats.md): four MRI sequences per case,
nested tumour labels scored as the regions WT, TC and ET, one row per case.

Data: ``core.sample.make_brats_like`` cases (T1, T1c, T2, FLAIR; 1 necrosis, 2 oedema,
3 enhancing tumour), written as NIfTI files named as BraTS 2021 names them
(``CASE_t1.nii.gz`` ..., ``CASE_seg.nii.gz`` with labels 1/2/4); ``--brats DIR`` takes
the first cases of a real BraTS 2021 training folder instead (label 4 becomes 3).
Three cases get sparse annotations (10 % of the slices along each axis) and train one
model (one of them held out for validation); the others are segmented in batch and
scored per case.

    python scripts/guides/brats.py --out guide_brats [--cases 5] [--iterations 150]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_line, unetseg, write_nifti

SEQUENCES = ("t1", "t1ce", "t2", "flair")


def synthetic_cases(out: Path, n: int, shape) -> list[Path]:
    from napari_unetseg.core.sample import make_brats_like

    folders = []
    for k in range(n):
        image, labels = make_brats_like(shape=shape, seed=k)
        case = out / "raw" / f"Synth_{k:05d}"
        case.mkdir(parents=True, exist_ok=True)
        for c, seq in enumerate(SEQUENCES):
            write_nifti(case / f"{case.name}_{seq}.nii.gz", image[c])
        seg = np.where(labels == 3, 4, labels).astype(np.uint8)  # BraTS stores ET as 4
        write_nifti(case / f"{case.name}_seg.nii.gz", seg)
        folders.append(case)
    return folders


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("guide_brats"))
    p.add_argument("--cases", type=int, default=5)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--shape", type=int, nargs=3, default=(48, 64, 64))
    p.add_argument("--brats", type=Path, default=None, help="BraTS 2021 training folder")
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_line()}")
    if args.brats is not None:
        folders = sorted(d for d in args.brats.iterdir() if d.is_dir())[: args.cases]
    else:
        folders = synthetic_cases(out, args.cases, tuple(args.shape))
    import nibabel as nib

    # labels 1/2/4 -> 1/2/3 (the project's labels are consecutive)
    truths = out / "truths"
    truths.mkdir(exist_ok=True)
    for case in folders:
        seg = nib.load(case / f"{case.name}_seg.nii.gz")
        data = np.asarray(seg.dataobj).astype(np.uint8)
        data[data == 4] = 3
        nib.save(nib.Nifti1Image(data, seg.affine), truths / f"{case.name}.nii.gz")

    train, test = folders[:3], folders[3:]
    pairs = []
    for k, case in enumerate(train):
        sparse = out / f"{case.name}_sparse.nii.gz"
        unetseg(
            "sparsify",
            "--labels",
            str(truths / f"{case.name}.nii.gz"),
            "--out",
            str(sparse),
            "--fraction",
            "0.1",
            "--axes",
            "zyx",
            "--seed",
            str(k),
            "--overwrite",
        )
        images = ",".join(str(case / f"{case.name}_{s}.nii.gz") for s in SEQUENCES)
        pairs += ["--image", images, "--labels", str(sparse)]
    ds = out / "Dataset002_BraTSGuide"
    unetseg(
        "export-dataset",
        *pairs,
        "--class-names",
        "necrosis",
        "oedema",
        "enhancing",
        "--channel-names",
        "T1",
        "T1c",
        "T2",
        "FLAIR",
        "--prefix",
        "brats",
        "--out",
        str(ds),
        "--overwrite",
    )
    unetseg(
        "train",
        "--dataset",
        str(ds),
        "--iterations",
        str(args.iterations),
        "--out",
        str(out / "brats.safetensors"),
        "--overwrite",
    )

    # the unseen cases as a batch folder: CASE_0000 ... CASE_0003 in the dataset's order
    new = out / "new_scans"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    test_truths = out / "test_truths"
    shutil.rmtree(test_truths, ignore_errors=True)
    test_truths.mkdir()
    for case in test:
        for c, s in enumerate(SEQUENCES):
            shutil.copy(case / f"{case.name}_{s}.nii.gz", new / f"{case.name}_{c:04d}.nii.gz")
        shutil.copy(truths / f"{case.name}.nii.gz", test_truths / f"{case.name}.nii.gz")
    unetseg(
        "predict",
        "--model",
        str(out / "brats.safetensors"),
        "--input",
        str(new),
        "--out",
        str(out / "predictions"),
        "--overwrite",
    )
    unetseg(
        "evaluate",
        "--pred",
        str(out / "predictions"),
        "--truth",
        str(test_truths),
        "--regions",
        "WT=1,2,3;TC=1,3;ET=3",
        "--csv",
        str(out / "per_case.csv"),
        "--json",
        str(out / "summary.json"),
        "--overwrite",
    )
    print((out / "per_case.csv").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
