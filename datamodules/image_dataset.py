"""Torch dataset over a split of the manifest: read, pre-process, augment, to tensor."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from medrepro.datamodules.transforms.image_reader import read_image

Transform = Callable[..., dict]


class ImageDataset(Dataset):
    """Items are ``{"image": float32 [C, H, W] in [0, 1], "label": int, "path": str}``.

    ``preprocess`` (deterministic) and ``augment`` (random) are albumentations-style
    callables: ``transform(image=array)["image"]`` on ``float32 [H, W, C]`` arrays.
    With a ``cache`` (:class:`medrepro.datamodules.cache.image_cache.ImageCache` holding these paths), the
    pre-processed image comes from the cache and only ``augment`` runs per item.
    ``max_pixels`` is the reader's limit for images (``data.checks.max_image_pixels``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        channels: int,
        preprocess: Transform | None = None,
        augment: Transform | None = None,
        cache=None,
        max_pixels: int | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = [int(x) for x in labels]
        self.channels = channels
        self.preprocess = preprocess
        self.augment = augment
        self.cache = cache
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        if self.cache is not None:
            image = self.cache.image(path)
        else:
            image = preprocess_image(path, self.channels, self.preprocess, self.max_pixels)
        if self.augment is not None:
            image = np.clip(self.augment(image=image)["image"], 0.0, 1.0)
        return {"image": as_tensor(image), "label": self.labels[index], "path": self.paths[index]}


def preprocess_image(path: str, channels: int, preprocess: Transform | None,
                     max_pixels: int | None = None) -> np.ndarray:
    """The deterministic part of an item (what the image cache stores): read the file
    with ``channels`` channels (refusing images of more than ``max_pixels`` pixels), then
    apply ``preprocess``; ``float32 [H, W, C]``."""
    image = read_image(path, channels, max_pixels)
    if preprocess is not None:
        image = preprocess(image=image)["image"]
    return image[:, :, None] if image.ndim == 2 else image


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """A ``float32 [H, W, C]`` (or ``[H, W]``) image as the model's ``float32 [C, H, W]``."""
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def reseed_augmentation_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker (and each epoch) its own
    augmentation stream, derived from the seeded torch worker seed."""
    info = get_worker_info()
    augment = getattr(info.dataset, "augment", None) if info else None
    if augment is not None and hasattr(augment, "set_random_seed"):
        augment.set_random_seed(torch.initial_seed() % 2**32)
