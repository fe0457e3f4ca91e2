"""LightningDataModule for image classification: source -> split -> datasets -> loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from filelock import FileLock
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from medrepro.core.distributed import is_distributed
from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import SPLITS
from medrepro.core.worker_processes import worker_start_context
from medrepro.datamodules.audit.data_audit import inspect_manifest
from medrepro.datamodules.audit.duplicate_relation import (
    DuplicateRelation,
    conflicting_groups,
    find_duplicates,
)
from medrepro.datamodules.audit.file_facts_store import FILENAME, FileFactsStore
from medrepro.datamodules.audit.preflight import SKIP_SETTING, as_problems, unreadable_sentence
from medrepro.datamodules.cache.image_cache import ImageCache, ensure_writable_folder
from medrepro.datamodules.data_settings import (
    CacheSettings,
    CheckSettings,
    DuplicateSettings,
    LoaderSettings,
    PreprocessSettings,
    settings_from,
)
from medrepro.datamodules.image_dataset import (
    ImageDataset,
    as_tensor,
    preprocess_image,
    reseed_augmentation_in_worker,
)
from medrepro.datamodules.splitting.kfold import KFOLD, check_fold_settings
from medrepro.datamodules.splitting.split import MANIFEST_COLUMNS, make_split, split_counts

log = logging.getLogger(__name__)


class ClassificationDataModule(pl.LightningDataModule):
    """Binary or multi-class image classification from a data source on disk.

    The arguments mirror ``conf/data/``: the keys that describe the data set and the task,
    then one group per concern (see :mod:`medrepro.datamodules.data_settings`).

    Args:
        root: the data set's folder (``data.root``).
        source: callable ``source(root=...)`` returning an object with ``prepare()`` and
            ``records()`` (a Hydra ``_partial_`` of a source class).
        class_names: classes in label order; ``None`` takes the folders found, sorted.
        positive_class: for binary tasks, the class that is label 1 (``None``: the second
            class name). The other class is label 0.
        channels: 1 (grayscale) or 3 (RGB) input channels.
        image_size: side of the square images the model sees.
        name: the data set's name, recorded in results.json.
        variant: which version of the data set's images (covid3: ``cxr`` or ``enh``),
            recorded in results.json.
        split: ``mode``, ``counts``, ``ratios``, ``group_by_patient``,
            ``group_duplicates``, ``seed``, and with ``mode=kfold`` ``folds`` and ``fold``
            (see :mod:`medrepro.datamodules.splitting.split`; the folds are checked here).
        duplicates: ``candidate_distance``, ``min_similarity``,
            ``exclude_conflicting_labels``: which images are copies of one another
            (:class:`DuplicateSettings`); every file is inspected before splitting, so
            that copies are kept in one split.
        preprocess: ``steps`` (deterministic albumentations transforms), ``enhance``
            (``none`` or ``enh``) and ``enh`` (:class:`PreprocessSettings`).
        checks: ``allow_leakage``, ``skip_unreadable``: let training go on despite
            leakage or unreadable files; ``max_image_pixels``: the largest image read
            (:class:`CheckSettings`).
        cache: ``enabled``, ``dir``, ``workers``: the decoded-image cache, built by the
            checks before training or when the first data loader is asked for
            (:class:`CacheSettings`); :meth:`prepare_data` checks that ``dir`` can be written.
        loader: ``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``
            (:class:`LoaderSettings`). ``batch_size`` is per process: a job on N devices
            (DDP) trains on N batches of that size per step.
        augment: random albumentations pipeline for training images only (the ``augment``
            config group, passed by the jobs).
    """

    def __init__(
        self,
        root: str,
        source: Callable[..., object],
        class_names: Sequence[str] | None = None,
        positive_class: str | None = None,
        channels: int = 1,
        image_size: int = 224,
        name: str | None = None,
        variant: str | None = None,
        split: Mapping | None = None,
        preprocess: PreprocessSettings | Mapping | None = None,
        checks: CheckSettings | Mapping | None = None,
        duplicates: DuplicateSettings | Mapping | None = None,
        cache: CacheSettings | Mapping | None = None,
        loader: LoaderSettings | Mapping | None = None,
        augment: Callable | None = None,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3, not {channels}.")
        self.loader = settings_from(LoaderSettings, loader, "data.loader").resolved()
        self.name = name
        self.variant = variant
        self.root = root
        # checked by medrepro.datamodules.audit.preflight before training; its findings go to results.json
        self.checks = settings_from(CheckSettings, checks, "data.checks")
        self.data_checks: dict = {}
        self.duplicate_settings = settings_from(DuplicateSettings, duplicates, "data.duplicates")
        # set by setup: every file's facts (before splitting), the copies among them, and
        # the copies left out for carrying two labels
        self.file_table: pd.DataFrame | None = None
        self.duplicates = DuplicateRelation()
        self.conflicting_labels: list[list[dict]] = []
        self.split_outcome: dict = {}
        self.source = source(root=root)
        self.requested_class_names = list(class_names) if class_names else None
        self.positive_class = positive_class
        self.channels = channels
        self.image_size = image_size
        self.split_settings = dict(split or {})
        check_fold_settings(self.split_mode, self.split_settings.get("folds", 5),
                            self.split_settings.get("fold"))
        self.preprocess = settings_from(PreprocessSettings, preprocess, "data.preprocess")
        self.pipeline = self.preprocess.pipeline(channels)
        self.augment = augment
        self.cache = settings_from(CacheSettings, cache, "data.cache")
        self.image_cache: ImageCache | None = None
        self.class_names: list[str] = []
        self._records: list | None = None
        self.manifest: pd.DataFrame | None = None
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def batch_size(self) -> int:
        """Images per batch (``data.loader.batch_size``, i.e. ``trainer.batch_size``)."""
        return self.loader.batch_size

    @property
    def model_channels(self) -> int:
        """Channels of the images the model sees (3 with the ENH enhancement)."""
        return self.preprocess.model_channels(self.channels)

    @property
    def split_mode(self) -> str:
        """``data.split.mode``."""
        return self.split_settings.get("mode", "ratios")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Check that the cache folder can be written (when the cache is on), then let the
        source prepare its files (the demo data sets are generated here, once)."""
        if self.cache.enabled:
            ensure_writable_folder(self.cache.dir)
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Find the records, inspect every file once (remembered in the cache folder),
        find the copies among them, leave out copies with two labels, then split, keeping
        each patient's images and each image's copies in one split."""
        if self.manifest is not None:
            return
        self.find_classes()
        records = self._records
        make_split(records, self.class_names, **self.split_settings)  # its mistakes first
        self._find_duplicates(records)
        left_out = {f["path"] for group in self.conflicting_labels for f in group}
        kept = [r for r in records if r.path not in left_out]
        self.manifest = make_split(kept, self.class_names, **self.split_settings,
                                   links=self.duplicates.links())
        self.split_outcome = dict(self.manifest.attrs)  # shortfall, files moved
        self._build_datasets()
        log.info("classes (label order): %s", ", ".join(self.class_names))
        log.info("images per split and class:\n%s", split_counts(self.manifest).to_string())

    def setup_for_evaluation(self, split: str) -> None:
        """Prepare only the data a trained model is evaluated on: ``test``, the test split
        that :meth:`setup` makes (the data set's own, or the split of its settings), or
        ``all``, every image (an external data set without a split of its own), as the
        test split."""
        if split == "test":
            self.setup()
            return
        if split != "all":
            raise ConfigError(f"eval.split must be test or all, not {split}.")
        self.find_classes()
        self.manifest = pd.DataFrame(
            [(r.path, r.label, r.patient_id, "test") for r in self._records], columns=MANIFEST_COLUMNS
        )
        self._build_datasets(splits=("test",))
        log.info("images per class:\n%s", split_counts(self.manifest).to_string())

    def find_classes(self) -> list[str]:
        """The classes in label order, from the source's records (file names only: no
        image is read, so a job can build its model before :meth:`setup` inspects every
        file)."""
        if self._records is None:
            records = self.source.records()
            self.class_names = self._ordered_class_names(sorted({r.label for r in records}))
            self._records = [r for r in records if r.label in self.class_names]
        return self.class_names

    def facts_store(self) -> FileFactsStore | None:
        """The store of file facts in the cache folder (``None`` without one)."""
        return FileFactsStore(self.cache.dir) if self.cache.dir else None

    def _find_duplicates(self, records) -> None:
        # one process at a time (the processes of a DDP job, the jobs of a sweep): the next
        # one reads what the first stored instead of inspecting every file again
        with _store_lock(self.cache.dir):
            self._find_duplicates_unlocked(records)

    def _find_duplicates_unlocked(self, records) -> None:
        frame = pd.DataFrame(
            [(r.path, r.label, r.patient_id, None) for r in records], columns=MANIFEST_COLUMNS
        )
        store = self.facts_store()
        self.file_table = inspect_manifest(frame, quick=False, store=store,
                                           max_pixels=self.checks.pixel_limit)
        settings = self.duplicate_settings
        self.duplicates = find_duplicates(
            self.file_table, store, candidate_distance=int(settings.candidate_distance),
            min_similarity=float(settings.min_similarity), max_pixels=self.checks.pixel_limit,
        )
        labels = dict(zip(frame["path"], frame["label"]))
        groups = self.duplicates.groups(frame["path"].tolist())
        conflicts = conflicting_groups(groups, labels)
        if conflicts and settings.exclude_conflicting_labels:
            files = sum(len(g) for g in conflicts)
            log.warning("Left out %d file(s) in %d group(s) of copies filed under different "
                        "classes (data.duplicates.exclude_conflicting_labels=true); "
                        "results.json lists them under data.conflicting_labels.",
                        files, len(conflicts))
            self.conflicting_labels = [[{"path": p, "label": labels[p]} for p in g]
                                       for g in conflicts]

    def exclude(self, paths: Sequence[str]) -> None:
        """Leave ``paths`` out of the manifest and the datasets (unreadable files that
        ``data.checks.skip_unreadable=true`` lets training go on without)."""
        self.manifest = self.manifest[~self.manifest["path"].isin(set(paths))]
        self.manifest = self.manifest.reset_index(drop=True)
        self._build_datasets(splits=list(self.datasets) or SPLITS)

    def _build_datasets(self, splits: Sequence[str] = SPLITS) -> None:
        index = {name: i for i, name in enumerate(self.class_names)}
        for split in splits:
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
                preprocess=self.pipeline,
                augment=self.augment if split == "train" else None,
                cache=self.image_cache,
                max_pixels=self.checks.pixel_limit,
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

    def model_input(self, path: str) -> torch.Tensor:
        """One file as the model sees it in evaluation: read with the data set's channels,
        pre-processed (no augmentation), ``float32 [C, H, W]`` in ``[0, 1]``. Raises
        :class:`DataError` (one sentence) for a file that cannot be read."""
        return as_tensor(preprocess_image(path, self.channels, self.pipeline, self.checks.pixel_limit))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def open_cache(self, progress: bool | None = None) -> ImageCache:
        """Open (or build once) the cache of every image in the manifest and let the
        datasets read from it; the files it could not decode are in its ``unreadable``.
        Call after :meth:`setup`."""
        if self.image_cache is None:
            self.image_cache = ImageCache.open_or_build(
                self.manifest["path"].tolist(), self.channels, self.pipeline, self.cache.dir,
                num_workers=self.cache.workers, progress=progress,
                max_pixels=self.checks.pixel_limit,
            )
            for dataset in self.datasets.values():
                dataset.cache = self.image_cache
        return self.image_cache

    def build_cache(self, progress: bool | None = None) -> ImageCache:
        """:meth:`open_cache`, then deal with the train/val/test files it could not
        decode (the checks before training have left them out already): left out with
        ``data.checks.skip_unreadable=true``, else a :class:`DataError` naming the first."""
        cache = self.open_cache(progress)
        used = self.manifest[self.manifest["split"].isin(SPLITS)]
        unreadable = as_problems(used, cache.unreadable)
        if unreadable:
            if not self.checks.skip_unreadable:
                raise DataError(unreadable_sentence(unreadable, self.checks.pixel_limit))
            log.warning("Skipped %d file(s) that cannot be decoded (%s).", len(unreadable),
                        SKIP_SETTING)
            self.exclude([problem["path"] for problem in unreadable])
            self.data_checks.setdefault("skipped_unreadable", []).extend(unreadable)
        return cache

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.cache.enabled:
            self.build_cache()
        dataset = self.datasets[split]
        # evaluation in a multi-process (DDP) job: each image once, in one process (Lightning
        # would pad the last processes' shares with repeated images, counted twice); the
        # training data get Lightning's own DistributedSampler
        sampler = None if shuffle else _unrepeated_sampler(dataset, split)
        return DataLoader(
            dataset,
            batch_size=self.loader.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            persistent_workers=self.loader.persistent_workers,
            multiprocessing_context=worker_start_context() if self.loader.num_workers else None,
            worker_init_fn=reseed_augmentation_in_worker if self.loader.num_workers else None,
        )

    def grouping_facts(self) -> dict:
        """What the split kept together and left out: groups of copies and patients with
        images in train/val/test, the shortfall against the split's targets, files moved
        from their given split, and copies left out for carrying two labels."""
        used = self.manifest[self.manifest["split"].isin(SPLITS)]
        paths = used["path"].tolist()
        groups = self.duplicates.groups(paths)
        patients = used["patient_id"].dropna().value_counts()
        return {
            "group_duplicates": bool(self.split_settings.get("group_duplicates", True)),
            "duplicate_groups": len(groups),
            "files_in_duplicate_groups": sum(len(g) for g in groups),
            "near_duplicate_pairs_confirmed": len(self.duplicates.confirmed),
            "near_duplicate_candidates_rejected": len(self.duplicates.rejected),
            "patients_with_several_images": int((patients > 1).sum()),
            "split_shortfall": list(self.split_outcome.get("shortfall", [])),
            "moved_from_given_split": list(self.split_outcome.get("moved", [])),
            "conflicting_labels": self.conflicting_labels,
        }

    def data_facts(self) -> dict:
        """What results.json records about the data (``data``): the data set, classes,
        channels, split and its counts, and the findings of the checks before training;
        empty before :meth:`setup`."""
        if self.manifest is None:
            return {}
        grouped = bool(self.split_settings.get("group_by_patient", False))
        mode = self.split_mode
        kfold = mode == KFOLD
        classes = list(self.class_names)
        return {
            "name": self.name,
            "root": str(self.root),
            "classes": classes,
            "positive_class": classes[1] if len(classes) == 2 else None,
            "channels": self.channels,
            "enhance": self.preprocess.enhance,
            "model_channels": self.model_channels,
            "image_size": self.image_size,
            "split_mode": mode,
            # k-fold cross-validation: the fold validated on (0-based) and the number of folds
            "fold": self.split_settings.get("fold") if kfold else None,
            "folds": self.split_settings.get("folds") if kfold else None,
            "group_by_patient": grouped,
            "patient_leakage_possible": None if mode == "given" else not grouped,
            "split_counts": split_counts(self.manifest).to_dict(orient="index"),
            "variant": self.variant,
            **self.grouping_facts(),
            # the pre-training data checks (datamodules/audit/preflight.py) measure leakage instead
            **self.data_checks,
        }


def _unrepeated_sampler(dataset, split: str) -> UnrepeatedDistributedSampler | None:
    """Each of ``dataset``'s items in exactly one process of a DDP job, in order within each
    process (``None`` in a single-process job). A DistributedSampler, so Lightning keeps it
    (``use_distributed_sampler`` replaces only samplers that are not)."""
    if not is_distributed():
        return None
    processes = dist.get_world_size()
    if len(dataset) < processes:  # a process without a batch would wait for the others forever
        raise DataError(
            f"The {split} split has {len(dataset)} image(s), fewer than the {processes} "
            "processes of this job; use fewer devices (trainer.devices) or a larger split."
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=processes, rank=dist.get_rank(),
                                        shuffle=False)


@contextmanager
def _store_lock(folder):
    """An exclusive lock on the file-facts store in ``folder`` (none without a folder, or
    where the lock file cannot be created: the store is written atomically anyway)."""
    if not folder:
        yield
        return
    lock = FileLock(str(Path(folder).expanduser() / f"{FILENAME}.lock"))
    try:
        lock.acquire()
    except OSError:  # a read-only folder
        yield
        return
    try:
        yield
    finally:
        lock.release()
