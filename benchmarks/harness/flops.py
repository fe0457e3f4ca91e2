"""Model FLOPs per image and a GPU's 16-bit peak, for the model FLOPs utilisation (MFU):
achieved model FLOP/s divided by the hardware's peak.

Lightning does both: ``measure_flops`` (torch's ``FlopCounterMode``; multiply-add = 2 FLOPs)
and ``get_available_flops`` (a table of data-sheet peaks). This module adds what it does not
do: the count per image for inference and for a training step, and the peaks of the GPUs
whose name, as torch reports it, Lightning's table misses or gives another number for.
``measure_flops`` gives exactly the numbers of the ``FlopCounterMode`` code it replaced
(checked: inception_v3 at 96 px, 675,157,568 inference / 2,024,200,320 training FLOPs per
image; test_resnet at 96 px, 72,437,952 / 216,650,304).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from lightning_fabric.utilities.throughput import get_available_flops
from pytorch_lightning.utilities import measure_flops

# Dense tensor-core peaks in FLOP/s for 16-bit mixed precision (bf16, or fp16 where the GPU
# has no bf16), from the vendors' data sheets, where Lightning's table differs; the first
# pattern found in torch's device name wins, and None means no known peak (no MFU). Every
# other GPU: Lightning's number.
PEAK_16BIT_NOT_FROM_LIGHTNING: dict[str, float | None] = {
    # torch says "NVIDIA H200" (or "GH200"); Lightning knows only names with "SXM1"/"NVL1",
    # and gives the rate with sparsity (2e15)
    r"H200": 989e12,
    # Lightning: 1978.8e12, the rate with sparsity
    r"H100 NVL": 989e12,
    # Lightning finds "l4" in "l40s" / "l40" and returns the L4's 121e12
    r"L40S": 362e12,
    r"\bL40\b": 181e12,
    # Lightning: the A10's 125e12
    r"A10G": 70e12,
    # not in Lightning's table
    r"\bA10\b": 125e12,
    # Lightning's GeForce and workstation entries are the rates without tensor cores (RTX 4090:
    # 82.6e12, RTX 3090: 35.6e12, RTX A6000: 38.7e12, ...)
    r"RTX 4090": 165e12,
    r"RTX 3090": 71e12,
    r"GeForce|RTX A6000|\bA40\b|Quadro|TITAN": None,
}
_UNLISTED = object()


def flops_per_image(model: torch.nn.Module,
                    forward: Callable[[torch.Tensor], torch.Tensor],
                    loss_of_logits: Callable[[torch.Tensor], torch.Tensor],
                    images: torch.Tensor) -> dict:
    """Forward (inference) and forward + backward (training) FLOPs of ``model`` per image,
    counted by Lightning's ``measure_flops`` on one batch ``images``."""
    inference = measure_flops(model, lambda: forward(images))
    training = measure_flops(model, lambda: forward(images), loss_of_logits)
    model.zero_grad(set_to_none=True)
    return {"inference_flops_per_image": inference / len(images),
            "train_flops_per_image": training / len(images)}


def _listed_peak(device_name: str):
    """The :data:`PEAK_16BIT_NOT_FROM_LIGHTNING` entry for ``device_name``, or ``_UNLISTED``."""
    for pattern, peak in PEAK_16BIT_NOT_FROM_LIGHTNING.items():
        if re.search(pattern, device_name):
            return peak
    return _UNLISTED


def gpu_peak_flops() -> tuple[str, float | None]:
    """The CUDA device's name and its 16-bit dense peak (``None`` when unknown or no GPU)."""
    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    peak = _listed_peak(name)
    if peak is _UNLISTED:
        # bf16 where the GPU computes it natively (Ampere and later), fp16 before
        native_bf16 = torch.cuda.get_device_capability() >= (8, 0)
        peak = get_available_flops(torch.device("cuda"), torch.bfloat16 if native_bf16 else torch.float16)
    return name, None if peak is None else float(peak)
