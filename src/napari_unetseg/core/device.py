"""Device choice, CPU threads, mixed precision and free memory.

``select_device("auto")`` takes a CUDA GPU when there is one, then Apple's MPS, then the
CPU. Asking for a device that is not there is an error whose message says what to use
instead; the engine never silently trains on something other than what was asked for.

Mixed precision (``precision="auto"``) is used only where it is fast: bfloat16 on GPUs
that support it (float16 with loss scaling otherwise), and bfloat16 on CPUs with native
bfloat16 arithmetic (AVX-512 BF16 or AMX). On other CPUs bfloat16 is emulated and slower
than float32, so training stays in float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import PRECISIONS


class DeviceError(ValueError):
    """The requested device is unknown or not available; the message says what to use."""


def _cuda_description(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    gib = props.total_memory / 2**30
    return f"CUDA:{index} {props.name} ({gib:.0f} GB)"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(spec: str = "auto") -> tuple[torch.device, str]:
    """Resolve a device setting to ``(torch.device, human-readable description)``.

    Args:
        spec: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
            or ``"mps"`` (case and surrounding spaces ignored).

    Raises:
        DeviceError: the device is unknown or not available on this machine.
    """
    s = str(spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():
            s = "cuda"
        elif _mps_available():
            s = "mps"
        else:
            s = "cpu"
    if s == "cpu":
        return torch.device("cpu"), f"CPU ({torch.get_num_threads()} threads)"
    if s == "mps":
        if not _mps_available():
            raise DeviceError(
                "MPS (Apple GPU) was requested but is not available on this machine; "
                "use device 'cpu' or 'auto'"
            )
        return torch.device("mps"), "MPS (Apple GPU)"
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no CUDA GPU is available (or this PyTorch build has "
                "no CUDA support); use device 'cpu' or 'auto'"
            )
        index_text = s.partition(":")[2]
        if index_text:
            if not index_text.isdigit():
                raise DeviceError(f"device {spec!r}: the GPU index must be a number, e.g. cuda:0")
            index = int(index_text)
            count = torch.cuda.device_count()
            if index >= count:
                raise DeviceError(
                    f"device {spec!r} does not exist: this machine has {count} CUDA GPU(s) "
                    f"(cuda:0 .. cuda:{count - 1})"
                )
        else:
            index = torch.cuda.current_device()
        device = torch.device("cuda", index)
        return device, _cuda_description(device)
    raise DeviceError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def list_devices() -> list[tuple[str, str]]:
    """The device settings usable on this machine, as ``(spec, description)`` pairs:
    ``"auto"`` first, then every CUDA GPU (``"cuda:N"``), MPS when present, and ``"cpu"``.
    """
    out = [("auto", "auto: " + select_device("auto")[1])]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i}", _cuda_description(torch.device("cuda", i))))
    if _mps_available():
        out.append(("mps", "MPS (Apple GPU)"))
    out.append(("cpu", select_device("cpu")[1]))
    return out


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (AVX-512 BF16 or AMX)."""
    try:
        capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    except Exception:  # older torch without the query
        capability = ""
    if "bf16" in capability or "amx" in capability:
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype to use on ``device``, or ``None`` for plain float32.

    ``precision``: ``"auto"`` (fast mixed precision where the hardware supports it),
    ``"float32"`` (never autocast), ``"bfloat16"`` or ``"float16"`` (forced).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    device = torch.device(device)
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "float16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None  # MPS: float32 is the safe choice


def physical_cores() -> int:
    """Physical CPU cores usable by this process (hyper-threads not counted)."""
    try:
        usable = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        usable = set(range(os.cpu_count() or 1))
    siblings: set[tuple[str, str]] = set()
    topo = Path("/sys/devices/system/cpu")
    for cpu in usable:
        base = topo / f"cpu{cpu}" / "topology"
        try:
            core = (base / "core_id").read_text().strip()
            package = (base / "physical_package_id").read_text().strip()
        except OSError:
            return max(1, len(usable))
        siblings.add((package, core))
    return max(1, len(siblings) or len(usable))


def configure_threads(n: int | None = None) -> int:
    """Set PyTorch's intra-op CPU threads to ``n`` (default: the physical cores); returns it."""
    n = physical_cores() if n is None else int(n)
    if n < 1:
        raise ValueError("the number of threads must be at least 1")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def available_memory(device: torch.device | str) -> int:
    """Bytes of memory free for tensors on ``device`` (CUDA: free GPU memory; CPU and MPS:
    the system's available memory)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30  # a conservative guess when the system does not say
