"""The data module's setting groups, one small typed object per group of ``conf/data/``.

``data.preprocess``, ``data.checks``, ``data.cache`` and ``data.loader`` arrive from Hydra
as mappings; :func:`settings_from` turns each into its dataclass, whose checks stop a
wrong value with one sentence (a :class:`~medrepro.core.errors.ConfigError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

import albumentations as A
import torch

from medrepro.core.errors import ConfigError
from medrepro.datamodules.transforms.enhancement import ENHANCEMENTS, LocalPhaseEnhancement
from medrepro.datamodules.transforms.image_reader import DEFAULT_MAX_IMAGE_PIXELS
from medrepro.datamodules.transforms.local_phase import EnhParams

Settings = TypeVar("Settings")


def settings_from(kind: type[Settings], value: Settings | Mapping | None, group: str) -> Settings:
    """``value`` (a mapping from the config, an instance, or ``None`` for the defaults) as
    a ``kind``; a key ``kind`` does not have is a :class:`ConfigError` naming ``group``."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    names = [f.name for f in fields(kind)]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ConfigError(
            f"{group} has no setting {', '.join(unknown)}; its settings are {', '.join(names)}."
        )
    return kind(**value)


@dataclass(frozen=True)
class PreprocessSettings:
    """``data.preprocess``: the deterministic pre-processing of every split.

    steps: albumentations transforms (resize, brain crop, ...), applied in order.
    enhance: ``none`` or ``enh``: append the local-phase enhancement (study 5's ENH input,
        :mod:`medrepro.datamodules.transforms.enhancement`); images are then read as
        grayscale and the model gets the three ENH channels.
    enh: overrides of the enhancement's parameters (fields of
        :class:`~medrepro.datamodules.transforms.local_phase.EnhParams`, which holds the
        defaults); ``None`` keeps the default.
    """

    steps: Sequence[Callable] = ()
    enhance: str = "none"
    enh: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.enhance not in ENHANCEMENTS:
            raise ConfigError(
                f"data.preprocess.enhance must be one of {', '.join(ENHANCEMENTS)}, "
                f"not '{self.enhance}'."
            )
        known = [f.name for f in fields(EnhParams)]
        unknown = sorted(set(self.enh) - set(known))
        if unknown:
            raise ConfigError(
                f"data.preprocess.enh has no parameter {', '.join(unknown)}; "
                f"its parameters are {', '.join(known)}."
            )

    def pipeline(self, channels: int) -> A.Compose | None:
        """The steps (plus the enhancement) as one transform for images with ``channels``
        channels; ``None`` when there is nothing to do."""
        if self.enhance == "enh" and channels != 1:
            raise ConfigError(
                "data.preprocess.enhance=enh computes its three channels from the grayscale "
                "X-ray; set data.channels=1 (the model then gets 3 channels)."
            )
        steps = list(self.steps)
        if self.enhance == "enh":
            overrides = {k: v for k, v in self.enh.items() if v is not None}
            steps.append(LocalPhaseEnhancement(**overrides))
        return A.Compose(steps) if steps else None

    def model_channels(self, channels: int) -> int:
        """Channels of the images the model sees (3 with the ENH enhancement)."""
        return 3 if self.enhance == "enh" else channels


@dataclass(frozen=True)
class CheckSettings:
    """``data.checks``: let training go on despite what the checks before fitting find
    (:mod:`medrepro.datamodules.audit.preflight`); results.json lists what was allowed.

    allow_leakage: train despite identical files in two splits, identical files under
        two labels, or (with patient grouping) a patient in two splits.
    skip_unreadable: train without the files that cannot be read or decoded.
    max_image_pixels: the largest image (width x height) read; a larger one is refused
        as a possible decompression bomb. ``None``: :data:`DEFAULT_MAX_IMAGE_PIXELS`.
    """

    allow_leakage: bool = False
    skip_unreadable: bool = False
    max_image_pixels: int | None = None

    def __post_init__(self) -> None:
        limit = self.max_image_pixels
        if limit is not None and (not _is_count(limit) or limit < 1):
            raise ConfigError(
                "data.checks.max_image_pixels must be a positive whole number of pixels (or "
                f"null for {DEFAULT_MAX_IMAGE_PIXELS}), not {limit}."
            )

    @property
    def pixel_limit(self) -> int:
        """``max_image_pixels``, with ``None`` resolved to the default."""
        return int(self.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)


@dataclass(frozen=True)
class DuplicateSettings:
    """``data.duplicates``: which images count as copies of one another
    (:mod:`medrepro.datamodules.audit.duplicate_relation`), kept in one split by
    ``data.split.group_duplicates``.

    candidate_distance: perceptual hashes at most this many of 64 bits apart are compared
        pixel by pixel (0 to 32).
    min_similarity: the structural similarity (after alignment) from which a candidate is
        a confirmed near duplicate (0 to 1; see ``image_similarity.py`` for how 0.85 was
        chosen).
    exclude_conflicting_labels: leave copies filed under different classes out of
        training and evaluation (listed in results.json); ``False`` keeps them, and the
        checks before training then stop unless ``data.checks.allow_leakage=true``.
    """

    candidate_distance: int = 8
    min_similarity: float = 0.85
    exclude_conflicting_labels: bool = True

    def __post_init__(self) -> None:
        distance = self.candidate_distance
        if not _is_count(distance) or not 0 <= int(distance) <= 32:
            raise ConfigError(
                f"data.duplicates.candidate_distance must be a whole number of bits from 0 to "
                f"32, not {distance}."
            )
        similarity = self.min_similarity
        if isinstance(similarity, bool) or not isinstance(similarity, (int, float)) or \
                not 0 < float(similarity) <= 1:
            raise ConfigError(
                f"data.duplicates.min_similarity must be a number above 0 and at most 1, "
                f"not {similarity}."
            )


@dataclass(frozen=True)
class CacheSettings:
    """``data.cache``: pre-process every image once into a memory-mapped uint8 array in
    ``dir`` (:mod:`medrepro.datamodules.cache.image_cache`); ``enabled=False`` reads and
    pre-processes the files each time. ``dir`` also keeps the checks' file facts (when it
    can be written; with ``enabled=True`` it must be). ``workers``: the worker processes
    that build it (``auto``: one per core, see
    :func:`~medrepro.datamodules.cache.image_cache.build_workers`)."""

    enabled: bool = False
    dir: str | None = None
    workers: int | str = "auto"

    def __post_init__(self) -> None:
        if self.enabled and not self.dir:
            raise ConfigError(
                "data.cache.enabled=true needs data.cache.dir (a folder for the cache)."
            )
        if self.workers != "auto" and not _is_count(self.workers):
            raise ConfigError(
                "data.cache.workers must be auto or a number of worker processes "
                f"(0 or more), not {self.workers}."
            )


@dataclass(frozen=True)
class LoaderSettings:
    """``data.loader``: the DataLoader settings. ``auto`` picks the worker processes from
    the CPU count and pinned memory when CUDA is present (:meth:`resolved`)."""

    batch_size: int = 32
    num_workers: int | str = "auto"
    pin_memory: bool | str = "auto"
    persistent_workers: bool = True

    def __post_init__(self) -> None:
        if not _is_count(self.batch_size) or int(self.batch_size) < 1:
            raise ConfigError(
                f"trainer.batch_size must be a positive integer, not {self.batch_size}."
            )
        if self.num_workers != "auto" and not _is_count(self.num_workers):
            raise ConfigError(
                "data.loader.num_workers must be auto or a number of worker processes "
                f"(0 or more), not {self.num_workers}."
            )
        if self.pin_memory != "auto" and not isinstance(self.pin_memory, bool):
            raise ConfigError(
                f"data.loader.pin_memory must be auto, true or false, not {self.pin_memory}."
            )

    def resolved(self) -> LoaderSettings:
        """These settings with ``auto`` replaced by this machine's values (and persistent
        workers only when there are workers)."""
        workers = _auto_workers() if self.num_workers == "auto" else int(self.num_workers)
        return replace(
            self,
            batch_size=int(self.batch_size),
            num_workers=workers,
            pin_memory=torch.cuda.is_available() if self.pin_memory == "auto" else self.pin_memory,
            persistent_workers=bool(self.persistent_workers) and workers > 0,
        )


def _is_count(value) -> bool:
    """A whole number of 0 or more (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _auto_workers() -> int:
    """Leave two cores to the training process; none on small machines."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) - 2))
