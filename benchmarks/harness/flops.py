"""Model FLOPs per image (``torch.utils.flop_counter``) and a GPU's peak, for the model
FLOPs utilisation (MFU): achieved model FLOP/s divided by the hardware's peak."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Dense tensor-core peak in FLOP/s for 16-bit mixed precision (bf16, or fp16 where the GPU
# has no bf16), from the vendors' data sheets; matched against torch's device name.
GPU_PEAK_16BIT = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def flops_per_image(forward: Callable[[torch.Tensor], torch.Tensor],
                    loss_of: Callable[[torch.Tensor], torch.Tensor],
                    images: torch.Tensor) -> dict:
    """Forward (inference) and forward + backward (training) FLOPs per image, counted on
    one batch ``images`` (multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(images)
    inference = counter.get_total_flops() / len(images)
    with FlopCounterMode(display=False) as counter:
        loss_of(images).backward()
    training = counter.get_total_flops() / len(images)
    return {"inference_flops_per_image": inference, "train_flops_per_image": training}


def gpu_peak_flops() -> tuple[str, float | None]:
    """The CUDA device's name and its 16-bit dense peak (``None`` when unknown or no GPU)."""
    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    for key, peak in GPU_PEAK_16BIT.items():
        if key in name:
            return name, peak
    return name, None
