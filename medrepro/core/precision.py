"""Choose the Lightning ``precision`` for the hardware a run lands on, and say why."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medrepro.core.cpu_features import native_bf16_instructions

AUTO = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to give ``pl.Trainer`` and one sentence saying why (for results.json)."""

    precision: str | int
    reason: str


def choose_precision(precision: str | int | None, accelerator: str | None = AUTO) -> PrecisionChoice:
    """``"auto"`` (or ``None``) picks ``bf16-mixed`` on CUDA GPUs that support bfloat16,
    ``16-mixed`` on other CUDA GPUs, ``bf16-mixed`` on CPUs with native bfloat16 instructions
    (AVX512-BF16 or AMX-BF16, see :mod:`medrepro.core.cpu_features`) and ``32-true``
    everywhere else (other CPUs, where bfloat16 is emulated and slower than float32; MPS).
    Any other value is the user's explicit choice and is kept unchanged.

    ``accelerator`` is ``trainer.accelerator`` (``auto`` picks as Lightning does: a CUDA
    GPU, else MPS, else the CPU) or the accelerator Lightning picked (``cuda``, ``mps``,
    ``cpu``).
    """
    if precision not in (None, AUTO):
        return PrecisionChoice(precision, f"trainer.precision={precision} in the configuration")
    accelerator = str(accelerator or AUTO).lower()
    if accelerator in (AUTO, "gpu", "cuda") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16-mixed", "trainer.precision=auto: the GPU supports bfloat16")
        return PrecisionChoice("16-mixed", "trainer.precision=auto: the GPU does not support "
                                           "bfloat16, so float16 with loss scaling")
    if accelerator in ("gpu", "cuda"):
        return PrecisionChoice("32-true", "trainer.precision=auto: no CUDA GPU is available")
    if accelerator == "mps" or (accelerator == AUTO and torch.backends.mps.is_available()):
        return PrecisionChoice("32-true", "trainer.precision=auto: float32 on Apple's MPS")
    if accelerator not in (AUTO, "cpu"):
        return PrecisionChoice("32-true", f"trainer.precision=auto: float32 on {accelerator}")
    instructions = native_bf16_instructions()
    if instructions is not None:
        return PrecisionChoice("bf16-mixed", "trainer.precision=auto: the CPU has native "
                                             f"bfloat16 instructions ({instructions})")
    return PrecisionChoice("32-true", "trainer.precision=auto: the CPU has no native bfloat16 "
                                      "instructions (AVX512-BF16 or AMX-BF16), so bfloat16 "
                                      "would be emulated, slower than float32")


def resolve_precision(precision: str | int | None, accelerator: str | None = AUTO) -> str | int:
    """The precision to give ``pl.Trainer`` (see :func:`choose_precision`)."""
    return choose_precision(precision, accelerator).precision
