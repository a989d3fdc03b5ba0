"""Device choice: `device: cuda` without a GPU is an error, never a silent CPU run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

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


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_workflow_with_device_cuda_fails_clearly_without_a_gpu(repo_root, tmp_path):
    """device: cuda on a CPU-only machine stops the training job with the reason,
    instead of silently training on the CPU."""
    overlay = tmp_path / "cuda.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "results_dir": str(tmp_path / "results"),
                "device": "cuda",
                "sem": {"setups": ["FOU"], "n_draws": 1, "draws_per_job": 1, "n_per_env": 50,
                        "irmv1": {"reg_grid": [0.0], "steps": 5}},
                "minimal": {"enabled": False},
                "cmnist": {"enabled": False},
                "report": {"enabled": False},
            }
        )
    )  # fmt: skip
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(tmp_path), "--cores", "1",
        "--configfile", str(repo_root / "config/smoke.yaml"), str(overlay),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode != 0
    log = (tmp_path / "results/logs/sem_fit_FOU_0.log").read_text()
    assert "config key 'device' is 'cuda' but no CUDA device is visible" in log + done.stderr
    assert not (tmp_path / "results/sem/draws/FOU_chunk0.csv").exists()
