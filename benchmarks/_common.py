"""Shared pieces of the benchmarks: environment record, interleaved repeats, subprocess
measurements with peak memory, JSON output and plain-text tables.

Every benchmark measures a RATIO against a reference measured in the same run, with the
repeats interleaved (reference, ours, reference, ours, ...) so that a slow spell of the
machine hurts both sides alike; medians are reported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux) or platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The vector-instruction flags that matter for convolutions (avx2, avx512*, amx*)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx", "fma")))
    except OSError:
        pass
    return []


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine slows every figure."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


#: Environment variables that cap the instruction set torch's kernels use.
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def environment() -> dict[str, Any]:
    """Device, library versions, threads and CPU of this run."""
    import torch

    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        # set to run a CPU's kernels as an older one's (e.g. AVX2 on an AVX-512 host)
        "isa_limits": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "load_average_at_start": load_average(),
    }
    try:
        import monai

        env["monai"] = monai.__version__
    except ImportError:
        env["monai"] = None
    try:
        from napari_unetseg import __version__

        env["napari_unetseg"] = __version__
    except ImportError:
        env["napari_unetseg"] = None
    return env


# --------------------------------------------------------------------------- measuring


def median(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if v is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def interleave(variants: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run every variant ``repeats`` times in the order v1, v2, ..., v1, v2, ...

    Returns ``{name: [result of each repeat]}``; each callable returns a dict.
    """
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            res = fn()
            print(
                f"  [{r + 1}/{repeats}] {name}: {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            runs[name].append(res)
    return runs


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set size.

    Linux: ``VmHWM`` from /proc/self/status, which starts afresh with the new address
    space of an exec'd interpreter. ``ru_maxrss`` is kept across exec, so a worker started
    by a driver that once held a large volume would report the driver's peak instead.
    Elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_worker(module: str, args: dict[str, Any], timeout: float = 3600) -> dict:
    """Run ``python -m <module> --worker <json>`` in a fresh interpreter and return the
    dict the worker printed as its last line of stdout.

    A fresh process per measurement gives a clean peak-RSS reading (torch's CPU
    allocator is invisible to tracemalloc) and keeps thread settings of one variant
    from leaking into the next.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(args, fh)
        arg_path = fh.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--worker", arg_path],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        os.unlink(arg_path)
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark worker {module} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"benchmark worker {module} printed nothing:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def worker_entry(fn: Callable[[dict], dict]) -> None:
    """The ``--worker ARGS.json`` side of :func:`run_worker`: print ``fn(args)`` as JSON."""
    args = json.loads(Path(sys.argv[sys.argv.index("--worker") + 1]).read_text())
    result = fn(args)
    result["peak_rss_bytes"] = peak_rss_bytes()
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- output


def arg_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.<name>``, its help from ``doc``."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def report(name: str, args, run: Callable, print_table: Callable[[dict], None]) -> int:
    """Run a benchmark, write its JSON (``--out`` or ``results/<name>[_smoke].json``),
    print its table and say where the JSON went."""
    out = args.out or str(RESULTS_DIR / f"{name}{'_smoke' if args.smoke else ''}.json")
    data = run(args)
    write_json(data, out)
    print_table(data)
    print(f"wrote {out}")
    return 0


def write_json(data: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table. ``columns`` = [(key, header, format spec), ...]."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            v = row.get(key)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                line.append("-")
            elif spec:
                line.append(format(v, spec))
            else:
                line.append(str(v))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = []
    for n, line in enumerate(cells):
        out.append("  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(line, widths)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def describe_env(env: dict) -> str:
    limits = env.get("isa_limits") or {}
    capped = (
        (" | kernels capped: " + " ".join(f"{k}={v}" for k, v in limits.items())) if limits else ""
    )
    return (
        f"device {env['device']} | CPU {env['cpu_model']} ({env['logical_cpus']} logical, "
        f"{' '.join(env['cpu_flags']) or 'no AVX2'}) | torch {env['torch']} "
        f"({env['torch_threads']} threads) | monai {env.get('monai')}{capped}"
    )


def mib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else float(n_bytes) / 2**20
