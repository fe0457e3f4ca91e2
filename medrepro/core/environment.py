"""Describe the software and hardware a run used, for results.json."""

from __future__ import annotations

import platform
import socket
from importlib import metadata

import torch

PACKAGES = (
    "medrepro", "torch", "torchvision", "pytorch-lightning", "hydra-core", "timm",
    "torchmetrics", "albumentations", "scikit-learn", "numpy", "pandas", "pillow",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(accelerator: str) -> dict[str, object]:
    """The device actually used (``accelerator`` is what Lightning picked: 'cpu', 'cuda', ...)."""
    info: dict[str, object] = {
        "accelerator": accelerator,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if accelerator in ("cuda", "gpu") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info
