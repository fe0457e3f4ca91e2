"""Torch dataset over a split of the manifest: read, pre-process, augment, to tensor."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from datamodules.image_reader import read_image

Transform = Callable[..., dict]


class ImageDataset(Dataset):
    """Items are ``{"image": float32 [C, H, W] in [0, 1], "label": int, "path": str}``.

    ``preprocess`` (deterministic) and ``augment`` (random) are albumentations-style
    callables: ``transform(image=array)["image"]`` on ``float32 [H, W, C]`` arrays.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        channels: int,
        preprocess: Transform | None = None,
        augment: Transform | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = [int(x) for x in labels]
        self.channels = channels
        self.preprocess = preprocess
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image = read_image(self.paths[index], self.channels)
        if self.preprocess is not None:
            image = self.preprocess(image=image)["image"]
        if self.augment is not None:
            image = np.clip(self.augment(image=image)["image"], 0.0, 1.0)
        if image.ndim == 2:
            image = image[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        return {"image": tensor, "label": self.labels[index], "path": self.paths[index]}


def reseed_augmentation_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker (and each epoch) its own
    augmentation stream, derived from the seeded torch worker seed."""
    info = get_worker_info()
    augment = getattr(info.dataset, "augment", None) if info else None
    if augment is not None and hasattr(augment, "set_random_seed"):
        augment.set_random_seed(torch.initial_seed() % 2**32)
