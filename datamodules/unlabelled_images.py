"""Images without labels, for prediction: each file read and pre-processed as the model's
training did; a file that cannot be read is reported with its reason, never fatal."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from medrepro.core.errors import DataError
from medrepro.datamodules.image_dataset import as_tensor, preprocess_image


class UnlabelledImages(Dataset):
    """Items are ``{"image": float32 [C, H, W] in [0, 1] or None, "path": str, "error":
    None or why the file cannot be read}``; batch them with :func:`collate_readable`."""

    def __init__(self, paths: Sequence[str], channels: int, preprocess: Callable | None,
                 max_pixels: int | None = None) -> None:
        self.paths = list(paths)
        self.channels = channels
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image = preprocess_image(path, self.channels, self.preprocess, self.max_pixels)
        except (DataError, OSError, ValueError) as error:
            return {"image": None, "path": path, "error": _reason(error)}
        return {"image": as_tensor(image), "path": path, "error": None}


def collate_readable(items: list[dict]) -> dict:
    """``{"image": [B, C, H, W] of the readable files (B may be 0), "path": their paths,
    "unreadable": [(path, reason), ...]}``."""
    readable = [item for item in items if item["error"] is None]
    images = torch.stack([item["image"] for item in readable]) if readable else torch.empty(0)
    return {"image": images, "path": [item["path"] for item in readable],
            "unreadable": [(item["path"], item["error"]) for item in items if item["error"] is not None]}


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error).strip().splitlines()[0] if str(reason or error).strip() else type(error).__name__
