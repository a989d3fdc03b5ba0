"""Device choice: `device: cuda` without a GPU is an error, never a silent CPU run."""

from __future__ import annotations

import pytest
import torch

from irm_bench.devices import DeviceError, resolve_device


def test_cuda_without_gpu_fails_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as err:
        resolve_device("cuda")
    message = str(err.value)
    # Names the config key and value, says why, and what to do instead.
    assert "'device'" in message
    assert "'cuda'" in message
    assert "no CUDA device" in message
    assert "device: auto or cpu" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_on_this_cpu_only_machine_fails():
    """No mocking: the real torch of a CPU-only machine (CI) must refuse `cuda`."""
    with pytest.raises(DeviceError, match="no CUDA device is visible"):
        resolve_device("cuda")


@pytest.mark.parametrize(("available", "expected"), [(False, "cpu"), (True, "cuda")])
def test_auto_follows_cuda_availability(monkeypatch, available, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device("auto") == torch.device(expected)


def test_cpu_is_always_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_device_names_key():
    with pytest.raises(ValueError, match=r"config key 'device'.*'tpu'"):
        resolve_device("tpu")
