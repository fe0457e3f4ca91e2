"""Data path: file on disk -> model-ready tensor, on one CPU core.

Three pipelines over the same image files:

* ``naive``: torchvision ``ImageFolder`` with PIL transforms (grayscale, resize, to
  tensor), decoding and resizing every image every time;
* ``medrepro``: medrepro's data module with ``data.cache.enabled=false`` (read, convert, resize);
* ``medrepro_cached``: medrepro's data module from its decoded-image cache (the build,
  which decodes each image once, is timed separately);
* ``medrepro_cached_augment``: the cache plus the default random augmentation
  (``augment=basic``), i.e. what a training epoch costs per image.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PIPELINES = ("naive", "medrepro", "medrepro_cached", "medrepro_cached_augment")


def use_one_core() -> None:
    """Keep a measurement on one core: torch, OpenCV and BLAS single-threaded."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def compose_benchmark_config(overrides: list[str]):
    """The real config tree composed as ``python train.py`` would (no run folder)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import medrepro.core.config_tree  # noqa: F401  (registers the config's resolvers)
    from benchmarks.harness.paths import REPOSITORY_ROOT

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPOSITORY_ROOT / "conf")):
        return compose("train", overrides=overrides)


def medrepro_datamodule(root: str, size: int, cache_dir: str | None, augment: str = "none",
                        batch_size: int = 32, channels: int = 1, num_workers: int = 0):
    """medrepro's data module on a class-per-folder ``root``, set up (not yet cached)."""
    import hydra

    cfg = compose_benchmark_config([
        "data=folder", f"data.root={root}", f"data.image_size={size}", f"data.channels={channels}",
        f"data.loader.num_workers={num_workers}", f"data.cache.workers={num_workers}",
        f"data.cache.enabled={cache_dir is not None}",
        f"data.cache.dir={cache_dir or 'unused'}", f"trainer.batch_size={batch_size}",
        f"augment={augment}",
    ])
    augmentation = hydra.utils.instantiate(cfg.augment) if cfg.get("augment") else None
    datamodule = hydra.utils.instantiate(cfg.data, augment=augmentation, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def naive_dataset(root: str, size: int):
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.Grayscale(1), transforms.Resize((size, size)), transforms.ToTensor()])
    return datasets.ImageFolder(root, transform=transform)


def items_per_second(dataset, seconds: float, minimum: int = 8) -> tuple[float, int]:
    """Fetch items in order (cycling) for at least ``seconds`` and ``minimum`` items."""
    dataset[0]  # warm up: imports, first allocation
    count, start = 0, time.perf_counter()
    while count < minimum or time.perf_counter() - start < seconds:
        dataset[count % len(dataset)]
        count += 1
    return count / (time.perf_counter() - start), count


def measure_data_path(pipeline: str, root: str, sizes: list[int], seconds: float,
                      cache_dir: str) -> dict:
    """Images per second on one core for ``pipeline`` at each size."""
    from torch.utils.data import ConcatDataset

    use_one_core()
    result = {"pipeline": pipeline, "sizes": {}}
    for size in sizes:
        entry = {}
        if pipeline == "naive":
            dataset = naive_dataset(root, size)
        else:
            cached = pipeline.startswith("medrepro_cached")
            augment = "basic" if pipeline.endswith("augment") else "none"
            datamodule = medrepro_datamodule(root, size, os.path.join(cache_dir, str(size))
                                             if cached else None, augment=augment)
            if cached:
                start = time.perf_counter()
                cache = datamodule.build_cache(progress=False)
                entry["cache_build_images_per_s"] = len(cache) / (time.perf_counter() - start)
            # the training split carries the augmentation; val and test add more images
            dataset = ConcatDataset([datamodule.datasets[s] for s in ("train", "val", "test")])
            if augment != "none":
                dataset = datamodule.datasets["train"]
        entry["images_per_s"], entry["images"] = items_per_second(dataset, seconds)
        result["sizes"][str(size)] = entry
    return result


def measure_cache_memory(root: str, size: int, cache_dir: str, batch_size: int) -> dict:
    """Set up a data module over ``root``, open (or build) its cache and run one epoch of
    every split through the DataLoaders; the caller reads this process's peak memory."""
    use_one_core()
    datamodule = medrepro_datamodule(root, size, cache_dir, batch_size=batch_size)
    start = time.perf_counter()
    built = not any(Path(cache_dir).glob("*.json"))
    cache = datamodule.build_cache(progress=False)
    opened = time.perf_counter() - start
    images, start = 0, time.perf_counter()
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(),
                   datamodule.test_dataloader()):
        for batch in loader:
            images += len(batch["label"])
    return {
        "cached_images": len(cache),
        "image_shape": list(cache.array.shape[1:]),
        "cache_mb": round(cache.array.nbytes / 2**20, 1),
        "built": built,
        "open_or_build_s": round(opened, 2),
        "epoch_images": images,
        "epoch_images_per_s": images / (time.perf_counter() - start),
    }
