"""Choice of compute device."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The requested device is not available on this machine."""


def resolve_device(requested: str) -> torch.device:
    """Map the config's ``device`` value to a ``torch.device``.

    ``auto`` picks CUDA when ``torch.cuda.is_available()``, else the CPU; ``cpu``
    always works; ``cuda`` raises :class:`DeviceError` when no CUDA device is visible,
    rather than silently running on the CPU. Any other value raises ``ValueError``.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "config key 'device' is 'cuda' but no CUDA device is visible to torch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                "use device: auto or cpu, or run on a GPU node"
            )
        return torch.device("cuda")
    raise ValueError(f"config key 'device': expected one of auto, cpu, cuda, found {requested!r}")
