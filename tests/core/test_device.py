"""Device selection, precision choice, threads and memory queries."""

import pytest
import torch

from napari_unetseg.core import device as dev
from napari_unetseg.core.device import (
    DeviceError,
    autocast_dtype,
    available_memory,
    configure_threads,
    physical_cores,
    select_device,
)


def test_cpu_is_always_available():
    d, text = select_device("cpu")
    assert d.type == "cpu"
    assert text.startswith("CPU (")
    assert "thread" in text
    d2, _ = select_device(" CPU ")
    assert d2.type == "cpu"


def test_auto_picks_an_available_device():
    d, text = select_device("auto")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert d.type == "cuda"
    else:
        assert d.type in ("cpu", "mps")
    assert text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_missing_cuda_says_what_to_do(spec):
    with pytest.raises(DeviceError, match=r"no CUDA GPU is available.*'cpu' or 'auto'"):
        select_device(spec)


def test_missing_mps_says_what_to_do(monkeypatch):
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    with pytest.raises(DeviceError, match=r"MPS.*'cpu' or 'auto'"):
        select_device("mps")


def test_gpu_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"1 CUDA GPU.*cuda:0 \.\. cuda:0"):
        select_device("cuda:3")
    with pytest.raises(DeviceError, match="must be a number"):
        select_device("cuda:first")


@pytest.mark.parametrize("spec", ["gpu", "tpu", "cuda0", ""])
def test_unknown_device_lists_the_choices(spec):
    if spec == "":  # empty means auto
        assert select_device(spec)[0].type in ("cpu", "cuda", "mps")
        return
    with pytest.raises(DeviceError, match="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        select_device(spec)


def test_device_error_is_a_value_error():
    assert issubclass(DeviceError, ValueError)


def test_cpu_precision_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("cpu") is None
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("cpu") is torch.bfloat16
    assert autocast_dtype("cpu", "float32") is None
    assert autocast_dtype(torch.device("cpu"), "bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("cpu", "half")


def test_native_bf16_detection_reads_cpu_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    real_path = dev.Path
    monkeypatch.setattr(dev, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert dev.cpu_has_native_bf16() is False
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert dev.cpu_has_native_bf16() is True
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AMX")
    fake.write_text("flags\t\t: fpu\n")
    assert dev.cpu_has_native_bf16() is True


def test_configure_threads_sets_and_returns():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        n = configure_threads()
        assert n == physical_cores() >= 1
        assert torch.get_num_threads() == n
        with pytest.raises(ValueError, match="at least 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_available_memory_is_positive():
    assert available_memory("cpu") > 2**20
