"""LightningDataModule for image classification: source -> split -> datasets -> loaders."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import albumentations as A
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import SPLITS
from medrepro.datamodules.cache.image_cache import ImageCache
from medrepro.datamodules.image_dataset import ImageDataset, reseed_augmentation_in_worker
from medrepro.datamodules.splitting.split import make_split, split_counts
from medrepro.datamodules.transforms.enhancement import ENHANCEMENTS, LocalPhaseEnhancement

log = logging.getLogger(__name__)


class ClassificationDataModule(pl.LightningDataModule):
    """Binary or multi-class image classification from a data source on disk.

    Args:
        root: the data set's folder (``data.root``).
        source: callable ``source(root=...)`` returning an object with ``prepare()`` and
            ``records()`` (a Hydra ``_partial_`` of a source class).
        class_names: classes in label order; ``None`` takes the folders found, sorted.
        positive_class: for binary tasks, the class that is label 1 (``None``: the second
            class name). The other class is label 0.
        channels: 1 (grayscale) or 3 (RGB) input channels.
        image_size: side of the square images the model sees.
        split: ``mode``, ``counts``, ``ratios``, ``group_by_patient``, ``seed`` (see
            :mod:`medrepro.datamodules.splitting.split`).
        preprocess: deterministic albumentations transforms (resize, crops, ...).
        augment: random albumentations pipeline for training images only.
        batch_size, num_workers, pin_memory, persistent_workers: DataLoader settings;
            ``"auto"`` picks workers from the CPU count and pinning when CUDA is present.
        variant: which version of the data set's images (covid3: ``cxr`` or ``enh``),
            recorded in results.json.
        allow_leakage, skip_unreadable: let training go on despite cross-split leakage or
            unreadable files (see :mod:`medrepro.datamodules.audit.preflight`).
        enhance: ``none`` or ``enh``: append the local-phase enhancement (study 5's ENH
            input, :mod:`medrepro.datamodules.transforms.enhancement`) to the pre-processing; images are read
            as grayscale and the model gets the three ENH channels.
        enh: the enhancement's parameters (``medrepro.datamodules.transforms.local_phase.EnhParams`` fields).
        cache: pre-process every image of the manifest once into a memory-mapped uint8
            array in ``cache_dir`` (see :mod:`medrepro.datamodules.cache.image_cache`), built when the first
            data loader is asked for; ``False`` reads and pre-processes the files each time.
    """

    def __init__(
        self,
        root: str,
        source: Callable[..., object],
        class_names: Sequence[str] | None = None,
        positive_class: str | None = None,
        channels: int = 1,
        image_size: int = 224,
        split: Mapping | None = None,
        preprocess: Sequence[Callable] | None = None,
        augment: Callable | None = None,
        batch_size: int = 32,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        name: str | None = None,
        cache: bool = False,
        cache_dir: str | None = None,
        variant: str | None = None,
        allow_leakage: bool = False,
        skip_unreadable: bool = False,
        enhance: str = "none",
        enh: Mapping | None = None,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3, not {channels}.")
        if int(batch_size) < 1:
            raise ConfigError(f"trainer.batch_size must be a positive integer, not {batch_size}.")
        self.name = name
        self.variant = variant
        self.root = root
        # checked by medrepro.datamodules.audit.preflight before training; its findings go to results.json
        self.allow_leakage = bool(allow_leakage)
        self.skip_unreadable = bool(skip_unreadable)
        self.data_checks: dict = {}
        self.source = source(root=root)
        self.requested_class_names = list(class_names) if class_names else None
        self.positive_class = positive_class
        self.channels = channels
        self.image_size = image_size
        self.split_settings = dict(split or {})
        if enhance not in ENHANCEMENTS:
            raise ConfigError(f"data.enhance must be one of {', '.join(ENHANCEMENTS)}, not '{enhance}'.")
        if enhance == "enh" and channels != 1:
            raise ConfigError(
                "data.enhance=enh computes its three channels from the grayscale X-ray; "
                "set data.channels=1 (the model then gets 3 channels)."
            )
        self.enhance = enhance
        steps = list(preprocess or [])
        if enhance == "enh":
            steps.append(LocalPhaseEnhancement(**dict(enh or {})))
        self.preprocess = A.Compose(steps) if steps else None
        self.augment = augment
        self.batch_size = int(batch_size)
        self.num_workers = _auto_workers() if num_workers == "auto" else int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        if cache and not cache_dir:
            raise ConfigError("data.cache=true needs data.cache_dir (a folder for the cache).")
        self.use_cache = bool(cache)
        self.cache_dir = cache_dir
        self.image_cache: ImageCache | None = None
        self.class_names: list[str] = []
        self.manifest: pd.DataFrame | None = None
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def model_channels(self) -> int:
        """Channels of the images the model sees (3 with the ENH enhancement)."""
        return 3 if self.enhance == "enh" else self.channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.manifest is not None:
            return
        records = self.source.records()
        self.class_names = self._ordered_class_names(sorted({r.label for r in records}))
        records = [r for r in records if r.label in self.class_names]
        self.manifest = make_split(records, self.class_names, **self.split_settings)
        self._build_datasets()
        log.info("classes (label order): %s", ", ".join(self.class_names))
        log.info("images per split and class:\n%s", split_counts(self.manifest).to_string())

    def exclude(self, paths: Sequence[str]) -> None:
        """Leave ``paths`` out of the manifest and the datasets (unreadable files that
        ``data.skip_unreadable=true`` lets training go on without)."""
        self.manifest = self.manifest[~self.manifest["path"].isin(set(paths))]
        self.manifest = self.manifest.reset_index(drop=True)
        self._build_datasets()

    def _build_datasets(self) -> None:
        index = {name: i for i, name in enumerate(self.class_names)}
        for split in SPLITS:
            rows = self.manifest[self.manifest["split"] == split]
            if rows.empty:
                raise DataError(
                    f"The {split} split is empty; check data.split (mode, counts or ratios) "
                    "and that every class has enough images."
                )
            self.datasets[split] = ImageDataset(
                rows["path"].tolist(),
                rows["label"].map(index).tolist(),
                self.channels,
                preprocess=self.preprocess,
                augment=self.augment if split == "train" else None,
                cache=self.image_cache,
            )

    def _ordered_class_names(self, found: list[str]) -> list[str]:
        names = self.requested_class_names or found
        if len(names) < 2:
            raise DataError(f"Found only the class(es) {', '.join(names)}; at least two are needed.")
        if self.positive_class is None:
            return names
        if len(names) != 2:
            raise ConfigError(
                "data.positive_class only applies to binary tasks; this data set has "
                f"{len(names)} classes ({', '.join(names)}): set data.positive_class=null."
            )
        if self.positive_class not in names:
            raise ConfigError(
                f"data.positive_class '{self.positive_class}' is not one of the classes "
                f"{', '.join(names)}."
            )
        negative = next(n for n in names if n != self.positive_class)
        return [negative, self.positive_class]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def build_cache(self, progress: bool | None = None) -> ImageCache:
        """Open (or build once) the cache of every image in the manifest and let the
        datasets read from it. Call after :meth:`setup`."""
        if self.image_cache is None:
            self.image_cache = ImageCache.open_or_build(
                self.manifest["path"].tolist(), self.channels, self.preprocess, self.cache_dir,
                num_workers=self.num_workers, progress=progress,
            )
            for dataset in self.datasets.values():
                dataset.cache = self.image_cache
        return self.image_cache

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.use_cache:
            self.build_cache()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            worker_init_fn=reseed_augmentation_in_worker if self.num_workers else None,
        )


def _auto_workers() -> int:
    """Leave two cores to the training process; none on small machines."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) - 2))
