"""Choose the Lightning ``precision`` for the hardware a run lands on."""

from __future__ import annotations

import torch

AUTO = "auto"


def resolve_precision(precision: str | int | None, accelerator: str | None = "auto") -> str | int:
    """Return the precision to give ``pl.Trainer``.

    ``"auto"`` (or ``None``) picks ``bf16-mixed`` on CUDA GPUs that support bfloat16,
    ``16-mixed`` on other CUDA GPUs and ``32-true`` everywhere else (CPU, MPS). Any other
    value is the user's explicit choice and is returned unchanged.
    """
    if precision not in (None, AUTO):
        return precision
    wants_cuda = str(accelerator) in ("auto", "gpu", "cuda")
    if wants_cuda and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"
