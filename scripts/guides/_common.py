"""Shared helpers of the guide scripts: run the ``unetseg`` command and print it, write
volumes with their voxel spacing, read the figures ``unetseg evaluate --json`` wrote."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def machine_line() -> str:
    """CPU, core count and torch build, for the figures a guide quotes."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    bf16 = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(ln for ln in info.splitlines() if ln.startswith("model name")).split(":")[1]
        bf16 = " with native bf16" if "avx512_bf16" in info or "amx_bf16" in info else ""
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} vCPU {cpu.strip()}{bf16}, {gpu}, torch {torch.__version__}"


def unetseg(*args: str) -> float:
    """Run ``unetseg ARGS`` (this interpreter's copy), print the command; seconds taken."""
    print("$ unetseg " + " ".join(shlex.quote(a) for a in args), flush=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "napari_unetseg.cli", *args, "--quiet"]
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    print(f"  ({seconds:.0f} s)", flush=True)
    return seconds


def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Write a (Z, Y, X) array as NIfTI with the voxel spacing in mm (Z, Y, X order)."""
    import nibabel as nib

    # NIfTI stores (X, Y, Z): transpose and put the spacing on the diagonal
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), path)
    return path


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
