"""Where a stage computes: ``auto`` picks CUDA when present, so one config runs on a laptop and on a
GPU node alike; an explicit CUDA device without CUDA is an error naming the fix."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device: cpu or auto")
    return torch.device(name)
